"""launch.sweep: --dry_run, the local runner, --emit=slurm|k8s and --collect."""

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from launch import sweep, sweeping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_CONFIG = "tests/sweep_example_config.py"


def _cli(*args, check=True, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "launch.sweep", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_dry_run_default_config_lists_runs_with_overrides(tmp_path):
    out = _cli("--config=configs/moving_digits.py", f"--workdir_root={tmp_path}", "--dry_run").stdout
    runs = [line for line in out.splitlines() if line[:3].isdigit()]
    assert len(runs) >= 2, out
    assert all("=" in line.split("\t", 1)[1] for line in runs), out
    assert "--config.optimizer.learning_rate=" in out and f"--workdir={tmp_path}/000-" in out
    assert not any(tmp_path.iterdir()), "--dry_run must not write anything"


def test_dry_run_bad_config_is_one_line_error(tmp_path):
    proc = _cli("--config=configs/nope.py", f"--workdir_root={tmp_path}", "--dry_run", check=False)
    assert proc.returncode != 0 and "configs/nope.py" in proc.stderr and "Traceback" not in proc.stderr


def _stub_train(config, workdir, run, python=sys.executable):
    """Stand-in for launch.train: writes a metrics.jsonl whose loss depends on the run's flags."""
    code = ("import json,sys,os; w=sys.argv[1]; lr=[a for a in sys.argv[2:] if 'learning_rate' in a][0];"
            "v=float(lr.split('=')[1]); f=open(os.path.join(w,'metrics.jsonl'),'w');"
            "[f.write(json.dumps({'step':s,'loss':v*10+s,'learning_rate':v})+'\\n') for s in (1,2)];"
            "f.write('{\"step\": 3, \"lo')")  # a torn last line, as after a crash
    return [python, "-c", code, workdir, *run.flags]


def test_local_runner_parallel_then_collect(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sweep, "train_command", _stub_train)
    runs = sweeping.make_runs(TEST_CONFIG)
    codes = sweep.run_local(TEST_CONFIG, str(tmp_path), runs, parallel=2)
    assert codes == {r.name: 0 for r in runs}
    csv_path, md_path, rows = sweep.collect(str(tmp_path), runs)
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert [row["run"] for row in table] == [r.name for r in runs]
    for row, r in zip(table, runs):
        assert row["status"] == "ok" and int(row["step"]) == 2
        assert float(row["loss"]) == pytest.approx(r.overrides["optimizer.learning_rate"] * 10 + 2)
        assert row["model.base_channels"] == str(r.overrides["model.base_channels"])
    md = open(md_path).read().splitlines()
    assert md[0].startswith("| run |") and len(md) == 2 + len(runs)


def test_collect_merges_last_train_and_eval_records_and_marks_missing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    runs = sweeping.make_runs(TEST_CONFIG)
    os.makedirs(tmp_path / runs[0].name)
    records = [{"step": 4, "loss": 0.7}, {"step": 4, "kind": "eval", "eval_loss": 0.9},
               {"step": 5, "loss": 0.5}, {"step": 5, "kind": "eval"}]  # an empty eval record last
    (tmp_path / runs[0].name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    _, _, rows = sweep.collect(str(tmp_path), runs)
    assert rows[0]["status"] == "ok" and rows[0]["loss"] == 0.5 and rows[0]["step"] == 5
    assert rows[0]["eval_loss"] == 0.9 and rows[0]["eval_step"] == 4
    assert [r["status"] for r in rows[1:]] == ["missing"] * 3


def test_emit_slurm_array_parses_and_names_runs(tmp_path):
    _cli(f"--config={TEST_CONFIG}", f"--workdir_root={tmp_path}", "--emit=slurm", "--nodes=1",
         "--devices_per_node=8", "--parallel=2")
    path = tmp_path / "sweep_slurm.sbatch"
    text = path.read_text()
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert "#SBATCH --array=0-3%2" in text and "#SBATCH --gpus-per-node=8" in text
    assert "--config.model.base_channels=16" in text
    # the array's bash selects run i's name and flags
    script = text.split("i=\"${SLURM_ARRAY_TASK_ID", 1)[0] + (
        'i=1; eval "ARGS=(${RUN_ARGS[$i]})"; echo "${RUN_NAMES[$i]}"; printf "%s\\n" "${ARGS[@]}"')
    out = subprocess.run(["bash", "-c", script.split("set -euo pipefail", 1)[1]], capture_output=True,
                         text=True).stdout.splitlines()
    runs = sweeping.make_runs(os.path.join(REPO, TEST_CONFIG))
    assert out[0] == runs[1].name and tuple(out[1:]) == runs[1].flags


def test_emit_k8s_one_jobset_per_run(tmp_path):
    root = tmp_path / "sweeps"
    _cli(f"--config={TEST_CONFIG}", f"--workdir_root={root}", "--emit=k8s", "--nodes=2",
         "--devices_per_node=4", "--image=reg/vdm:1", f"--mount_path={tmp_path}")
    runs = sweeping.make_runs(os.path.join(REPO, TEST_CONFIG))
    files = sorted((root / "k8s").iterdir())
    assert [f.stem for f in files] == [r.name for r in runs]
    docs = [yaml.safe_load(f.read_text()) for f in files]
    assert len({d["metadata"]["name"] for d in docs}) == len(runs)
    for d, r in zip(docs, runs):
        job = d["spec"]["replicatedJobs"][0]["template"]["spec"]
        assert job["parallelism"] == 2
        container = job["template"]["spec"]["containers"][0]
        assert container["image"] == "reg/vdm:1"
        assert container["args"][1] == f"--workdir={root}/{r.name}" and set(r.flags) <= set(container["args"])


def _training_ready() -> bool:
    try:
        import vdm_jax.training.loop as loop
    except Exception:  # noqa: BLE001 - not importable yet (being written)
        return False
    return hasattr(loop, "train_and_evaluate")


@pytest.mark.slow
@pytest.mark.skipif(not _training_ready(), reason="vdm_jax.training.loop is not importable yet")
def test_local_sweep_of_two_smoke_runs_trains_and_collects(tmp_path):
    env_flags = ["--config.training.eval_every=1000", "--config.training.eval_batches=0",
                 "--config.training.sample_every=0"]
    _cli(f"--config={TEST_CONFIG}:two", f"--workdir_root={tmp_path}", "--parallel=1", *env_flags,
         timeout=1200)
    out = _cli(f"--config={TEST_CONFIG}:two", f"--workdir_root={tmp_path}", "--collect", *env_flags).stdout
    with open(tmp_path / "sweep_results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(r["status"] == "ok" and int(r["step"]) == 2 for r in rows), out
    assert all(float(r["loss"]) > 0 for r in rows)
