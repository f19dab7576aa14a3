"""Expand and run a config sweep defined by the config file's ``get_hyper(h)``.

    python -m launch.sweep --config=configs/moving_digits.py --workdir_root=/tmp/s --dry_run
    python -m launch.sweep --config=configs/moving_digits.py:smoke --workdir_root=/tmp/s --parallel=2
    python -m launch.sweep --config=configs/moving_digits.py --workdir_root=/shared/s --emit=slurm
    python -m launch.sweep --config=configs/moving_digits.py --workdir_root=/tmp/s --collect

Run ``i`` trains in ``WORKDIR_ROOT/<run_name>`` (deterministic, filesystem-safe names such as
``001-learning_rate=0.0003-base_channels=48``) with ``python -m launch.train --config=CONFIG
--workdir=... --config.KEY=VALUE ...``. Runs resume when started again (launch.train resumes from its
workdir). ``--config.KEY=VALUE`` adds an override to every run. Every run's config is validated
before anything starts.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from absl import app, flags

from launch import cli, render_recipe, sweeping

FLAGS = flags.FLAGS


def train_command(config: str, workdir: str, run: sweeping.SweepRun,
                  python: str = sys.executable) -> list[str]:
    return [python, "-m", "launch.train", f"--config={config}", f"--workdir={workdir}", *run.flags]


def print_dry_run(config: str, root: str, runs: Sequence[sweeping.SweepRun]) -> None:
    print(f"{len(runs)} runs of {config} under {root}")
    for r in runs:
        shown = " ".join(f"{k}={sweeping.format_value(v)}" for k, v in r.overrides.items())
        print(f"{r.name}\t{shown}")
        print(f"    {' '.join(train_command(config, os.path.join(root, r.name), r, 'python'))}")


def run_local(config: str, root: str, runs: Sequence[sweeping.SweepRun], parallel: int = 1,
              env: dict | None = None) -> dict[str, int]:
    """Run the runs as subprocesses, at most ``parallel`` at a time; returns {name: exit code}.

    Each run's output goes to ``ROOT/<name>/sweep.log``.
    """
    pending = list(runs)
    active: dict[str, tuple[subprocess.Popen, object]] = {}
    codes: dict[str, int] = {}
    while pending or active:
        while pending and len(active) < max(1, parallel):
            r = pending.pop(0)
            workdir = os.path.join(root, r.name)
            os.makedirs(workdir, exist_ok=True)
            log = open(os.path.join(workdir, "sweep.log"), "a")
            proc = subprocess.Popen(train_command(config, workdir, r), stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
            active[r.name] = (proc, log)
            print(f"started {r.name} (pid {proc.pid})", flush=True)
        for name, (proc, log) in list(active.items()):
            if proc.poll() is not None:
                log.close()
                codes[name] = proc.returncode
                del active[name]
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                print(f"{status}: {name} (log: {os.path.join(root, name, 'sweep.log')})", flush=True)
        time.sleep(0.2)
    return codes


def emit_slurm(config: str, root: str, runs: Sequence[sweeping.SweepRun], cluster, parallel: int) -> str:
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, "sweep_slurm.sbatch")
    with open(path, "w") as f:
        f.write(render_recipe.render_slurm_array(config, root, runs, cluster, parallel))
    os.chmod(path, 0o755)
    return path


def emit_k8s(config: str, root: str, runs: Sequence[sweeping.SweepRun], cluster) -> list[str]:
    """One JobSet manifest per run in ``ROOT/k8s/<run>.yaml``; apply with ``kubectl apply -f ROOT/k8s``."""
    out_dir = os.path.join(root, "k8s")
    os.makedirs(out_dir, exist_ok=True)
    base = render_recipe.job_name(sweeping.load_configdict(config).name)
    paths = []
    for r in runs:
        name = render_recipe.job_name(base, f"-{r.index:03d}")
        text = render_recipe.render("k8s", config, os.path.join(root, r.name), cluster, r.flags, name=name)
        path = os.path.join(out_dir, f"{r.name}.yaml")
        with open(path, "w") as f:
            f.write(text)
        paths.append(path)
    return paths


def final_metrics(path: str) -> dict | None:
    """Final metrics of a run's metrics.jsonl: its last training record plus its last eval record.

    Training records carry ``loss``; eval records (``"kind": "eval"``) are merged in with ``step``
    renamed ``eval_step``. A torn last line (a crash mid-write) is skipped. None if there is nothing.
    """
    if not os.path.exists(path):
        return None
    train, evaluation = None, None
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            if rec.get("kind", "train") == "eval":
                if set(rec) - {"step", "kind"}:
                    evaluation = rec
            elif "loss" in rec:
                train = rec
    if train is None and evaluation is None:
        return None
    out = dict(train or {})
    if evaluation:
        out.update({("eval_step" if k == "step" else k): v for k, v in evaluation.items() if k != "kind"})
    return out


def collect(root: str, runs: Sequence[sweeping.SweepRun]) -> tuple[str, str, list[dict]]:
    """Write ``ROOT/sweep_results.csv`` and ``.md``: one row per run with its final metrics."""
    rows = []
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    for r in runs:
        rec = final_metrics(os.path.join(root, r.name, "metrics.jsonl"))
        row = {"run": r.name, **{k: sweeping.format_value(v) for k, v in r.overrides.items()}}
        row["status"] = "missing" if rec is None else "ok"
        for k, v in (rec or {}).items():
            if isinstance(v, (int, float, str)) and not isinstance(v, bool):
                row[k] = v
        rows.append(row)
    metric_keys = list(dict.fromkeys(k for row in rows for k in row if k not in keys and k not in
                                     ("run", "status")))
    metric_keys.sort(key=lambda k: (k not in ("step", "loss"), k != "step", k))
    columns = ["run", *keys, "status", *metric_keys]
    os.makedirs(root, exist_ok=True)
    csv_path = os.path.join(root, "sweep_results.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    md_path = os.path.join(root, "sweep_results.md")
    with open(md_path, "w") as f:
        f.write("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n")
        for row in rows:
            f.write("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |\n")
    return csv_path, md_path, rows


def _cell(v: object) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config, root = cli.config_spec(), FLAGS.workdir_root
    if not root.strip():
        sys.exit("error: --workdir_root must name a directory")
    try:
        runs = sweeping.make_runs(config, cli.config_overrides())
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if FLAGS.collect:
        csv_path, md_path, rows = collect(root, runs)
        with open(md_path) as f:
            print(f.read(), end="")
        print(f"wrote {csv_path} and {md_path} ({sum(r['status'] == 'ok' for r in rows)}/{len(rows)} runs)")
        return
    if FLAGS.dry_run:
        print_dry_run(config, root, runs)
        return
    try:
        if FLAGS.emit == "slurm":
            path = emit_slurm(config, root, runs, render_recipe.cluster_from_flags(), FLAGS.parallel)
            print(f"wrote {path} ({len(runs)} array tasks); submit with sbatch")
            return
        if FLAGS.emit == "k8s":
            paths = emit_k8s(config, root, runs, render_recipe.cluster_from_flags())
            print(f"wrote {len(paths)} JobSets under {os.path.dirname(paths[0])}; kubectl apply -f that dir")
            return
    except (ValueError, KeyError) as e:
        sys.exit(f"error: {e}")
    codes = run_local(config, root, runs, FLAGS.parallel)
    failed = [n for n, c in codes.items() if c]
    if failed:
        sys.exit(f"error: {len(failed)}/{len(codes)} runs failed: {', '.join(failed)}")
    print(f"all {len(codes)} runs finished; tabulate with --collect")


def define_flags() -> None:
    cli.define_config_flag(what=" (with get_hyper(h))")
    flags.DEFINE_string("workdir_root", None, "Each run trains in WORKDIR_ROOT/<run_name>.")
    flags.DEFINE_bool("dry_run", False, "Print each run's name, overrides and command; run nothing.")
    flags.DEFINE_integer("parallel", 1, "Local runs at once (with --emit=slurm: max array tasks at once).")
    flags.DEFINE_enum("emit", None, ["slurm", "k8s"], "Write a SLURM job array / one JobSet per run instead.")
    flags.DEFINE_bool("collect", False, "Tabulate each run's last metrics.jsonl record (CSV + markdown).")
    render_recipe.define_cluster_flags()
    flags.mark_flags_as_required(["workdir_root"])


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=cli.parse_flags)
