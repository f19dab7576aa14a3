"""Render a cluster recipe (SLURM sbatch, Cloud TPU VM script, Kubernetes JobSet) for one run.

    python -m launch.render_recipe --kind=slurm --config=configs/vdm_ucf101.py \
        --workdir=/shared/runs/ucf --nodes=4 --devices_per_node=8 --out=ucf.sbatch

The templates live next to this file (``slurm/train.sbatch``, ``tpu/create_and_run.sh``,
``k8s/jobset.yaml``) with ``__NAME__`` placeholders. Values come from the flags and from the config:
the job name is the config's ``name``, and the device count (nodes x devices per node, or the TPU
slice's chips) is checked against the config's mesh and global batch size before anything is written.
``--config.a.b=value`` overrides are checked too and appended to the train command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import sys
from collections.abc import Sequence

from absl import app, flags

from launch import cli, sweeping
from vdm_jax.config import from_configdict

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = {
    "slurm": "slurm/train.sbatch",
    "slurm_array": "slurm/sweep_array.sbatch",
    "tpu": "tpu/create_and_run.sh",
    "k8s": "k8s/jobset.yaml",
}
_PLACEHOLDER = re.compile(r"__[A-Z][A-Z_]*[A-Z]__")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where a run goes. ``devices_per_node``: GPUs (SLURM / k8s GPU) or TPU chips per host (k8s TPU)."""

    nodes: int = 1
    devices_per_node: int = 8
    per: str = "gpu"  # slurm: one task per "gpu" or per "node"
    accelerator: str = "gpu"  # k8s node pool: gpu | tpu
    gpu_type: str = "nvidia-h100-80gb"  # k8s: cloud.google.com/gke-accelerator
    tpu_type: str = "v5litepod-16"  # TPU VM accelerator type (tpu kind)
    gke_tpu_accelerator: str = "tpu-v5-lite-podslice"  # k8s TPU node selector
    gke_tpu_topology: str = "4x4"
    zone: str = "us-west4-a"
    project: str = "my-project"
    runtime_version: str = "v2-alpha-tpuv5-lite"
    image: str = "vdm-jax:latest"
    pvc: str = "vdm-workdir"
    mount_path: str = "/workdir"
    time: str = "24:00:00"
    cpus_per_task: int = 8
    port: int = 1234
    max_restarts: int = 0


def fill(template: str, values: dict[str, object], source: str = "template") -> str:
    """Replace every ``__KEY__``; refuse unknown or missing placeholders."""
    def sub(m: re.Match) -> str:
        key = m.group(0)[2:-2]
        if key not in values:
            raise KeyError(f"{source}: no value for placeholder {m.group(0)}")
        return str(values[key])

    return _PLACEHOLDER.sub(sub, template)


def read_template(kind: str) -> str:
    with open(os.path.join(HERE, TEMPLATES[kind])) as f:
        return f.read()


def tpu_chips(tpu_type: str) -> int:
    """JAX devices in a TPU VM slice: v4/v5p names count TensorCores (2 per chip), v5e/v6e chips."""
    m = re.fullmatch(r"(v\d+[a-z]*|v5litepod)-(\d+)", tpu_type)
    if not m:
        raise ValueError(f"--tpu_type: expected e.g. v5litepod-16, v6e-64 or v4-32, got {tpu_type!r}")
    family, n = m.group(1), int(m.group(2))
    return n // 2 if family in ("v4", "v5p", "v3", "v2") else n


def check_topology(cd, num_devices: int) -> dict[str, int]:
    """The mesh the config gets on ``num_devices`` devices; a clear error if it does not fit."""
    config = from_configdict(cd)
    sizes = config.mesh.axis_sizes(num_devices)
    shards = sizes["data"] * sizes["fsdp"]
    batch = config.training.global_batch_size
    if batch % (shards * config.training.microbatches):
        raise ValueError(f"config field 'training.global_batch_size': {batch} is not divisible by "
                         f"data*fsdp={shards} x microbatches={config.training.microbatches} "
                         f"on {num_devices} devices")
    return sizes


def job_name(name: str, suffix: str = "") -> str:
    """DNS-1123 label (k8s, also fine for SLURM): lowercase alphanumerics and '-', <= 40 chars."""
    base = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "vdm"
    base = base[: 40 - len(suffix)].strip("-")
    return f"{base}{suffix}"


def _dq_escape(text: str) -> str:
    return re.sub(r'(["$`\\])', r"\\\1", text)


def num_devices(kind: str, cluster: Cluster) -> int:
    if kind == "tpu":
        return tpu_chips(cluster.tpu_type)
    return cluster.nodes * cluster.devices_per_node


def values_for(kind: str, config: str, workdir: str, cluster: Cluster, extra_flags: Sequence[str],
               name: str) -> dict[str, object]:
    c = cluster
    common = dict(JOB_NAME=name, CONFIG=config, WORKDIR=workdir, NODES=c.nodes,
                  DEVICES_PER_NODE=c.devices_per_node, TIME=c.time, CPUS_PER_TASK=c.cpus_per_task)
    if kind in ("slurm", "slurm_array"):
        if c.per not in ("gpu", "node"):
            raise ValueError(f"--per must be gpu or node, got {c.per!r}")
        tasks = c.devices_per_node if c.per == "gpu" else 1
        return {**common, "TASKS_PER_NODE": tasks, "EXTRA_ARGS": shlex.join(extra_flags)}
    if kind == "tpu":
        return {**common, "PROJECT": c.project, "ZONE": c.zone, "TPU_NAME": name, "TPU_TYPE": c.tpu_type,
                "RUNTIME_VERSION": c.runtime_version, "EXTRA_ARGS": _dq_escape(shlex.join(extra_flags))}
    if kind == "k8s":
        if not (workdir.startswith(c.mount_path.rstrip("/") + "/") or workdir.startswith("gs://")):
            raise ValueError(f"--workdir {workdir!r} must be under --mount_path={c.mount_path} (the shared "
                             "volume) or a gs:// path")
        if c.accelerator == "gpu":
            selector = {"cloud.google.com/gke-accelerator": c.gpu_type}
            limits = {"nvidia.com/gpu": c.devices_per_node}
        elif c.accelerator == "tpu":
            selector = {"cloud.google.com/gke-tpu-accelerator": c.gke_tpu_accelerator,
                        "cloud.google.com/gke-tpu-topology": c.gke_tpu_topology}
            limits = {"google.com/tpu": c.devices_per_node}
        else:
            raise ValueError(f"--accelerator must be gpu or tpu, got {c.accelerator!r}")
        args = [f"--config={config}", f"--workdir={workdir}", *extra_flags]
        return {**common, "IMAGE": c.image, "ARGS": json.dumps(args), "NODE_SELECTOR": json.dumps(selector),
                "RESOURCE_LIMITS": json.dumps(limits), "PORT": c.port, "PVC": c.pvc,
                "MOUNT_PATH": c.mount_path, "MAX_RESTARTS": c.max_restarts}
    raise ValueError(f"--kind must be one of slurm, tpu, k8s; got {kind!r}")


def render(kind: str, config: str, workdir: str, cluster: Cluster = Cluster(),
           extra_flags: Sequence[str] = (), name: str | None = None, check: bool = True) -> str:
    """Text of the recipe ``kind`` for config spec ``config`` (``path[:arg]``) and ``workdir``;
    ``extra_flags`` (``--config.a.b=value``) are applied to the checked config and passed on."""
    cd = sweeping.load_configdict(config)
    if extra_flags:
        cd = sweeping.apply_overrides(cd, sweeping.parse_override_flags(extra_flags))
    if check:
        check_topology(cd, num_devices(kind, cluster))
    values = values_for(kind, config, workdir, cluster, extra_flags, name or job_name(cd.name))
    return fill(read_template(kind), values, TEMPLATES[kind])


def render_slurm_array(config: str, workdir_root: str, runs: Sequence[sweeping.SweepRun],
                       cluster: Cluster = Cluster(), max_parallel: int = 0) -> str:
    """One SLURM job array for a sweep: array task i trains ``runs[i]`` in WORKDIR_ROOT/<name>."""
    cd = sweeping.load_configdict(config)
    values = values_for("slurm_array", config, "", cluster, (), job_name(cd.name, "-sweep"))
    values.update(LAST_INDEX=len(runs) - 1, MAX_PARALLEL=max_parallel or len(runs),
                  WORKDIR_ROOT=workdir_root,
                  RUN_NAMES=" ".join(shlex.quote(r.name) for r in runs),
                  RUN_ARGS=" ".join(shlex.quote(shlex.join(r.flags)) for r in runs))
    return fill(read_template("slurm_array"), values, TEMPLATES["slurm_array"])


FLAGS = flags.FLAGS


def define_cluster_flags() -> None:
    for f in dataclasses.fields(Cluster):
        help_ = f"Cluster setting {f.name} (default {f.default!r})."
        if f.type == "int":
            flags.DEFINE_integer(f.name, f.default, help_)
        else:
            flags.DEFINE_string(f.name, f.default, help_)


def cluster_from_flags() -> Cluster:
    return Cluster(**{f.name: FLAGS[f.name].value for f in dataclasses.fields(Cluster)})


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    extra = sweeping.override_flags(cli.config_overrides())
    try:
        text = render(FLAGS.kind, cli.config_spec(), FLAGS.workdir, cluster_from_flags(), extra, FLAGS.name)
    except (ValueError, KeyError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            f.write(text)
        if FLAGS.kind != "k8s":
            os.chmod(FLAGS.out, 0o755)
        print(f"wrote {FLAGS.out} ({FLAGS.kind}, {num_devices(FLAGS.kind, cluster_from_flags())} devices)")
    else:
        print(text, end="")


if __name__ == "__main__":
    flags.DEFINE_enum("kind", None, ["slurm", "tpu", "k8s"], "Recipe to render.")
    cli.define_config_flag()
    flags.DEFINE_string("workdir", None, "Run directory on storage every node sees.")
    flags.DEFINE_string("name", None, "Job name (default: the config's name).")
    flags.DEFINE_string("out", "", "Write here instead of stdout.")
    define_cluster_flags()
    flags.mark_flags_as_required(["kind", "workdir"])
    app.run(main, flags_parser=cli.parse_flags)
