"""Helpers shared by tests/test_training_*.py: the smoke config, work shared across pytest-xdist
workers (one prepared dataset, one compilation cache, runs done once), metrics and checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SMOKE = "configs/moving_digits.py:smoke"


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A directory of this pytest session that every xdist worker sees (their common parent)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def compilation_cache_dir(tmp_path_factory, name: str) -> Path:
    """Where the training tests keep JAX's persistent compilation cache: this session's tmp dir, or
    ``$VDM_TEST_COMPILATION_CACHE/name`` to reuse compiles across sessions (opt-in, for reruns)."""
    root = os.environ.get("VDM_TEST_COMPILATION_CACHE")
    if not root:
        return shared_dir(tmp_path_factory, name)
    path = Path(root) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_once(directory: Path, build: Callable[[Path], None]) -> Path:
    """``build(directory)`` once per session, whichever xdist worker asks first; the others wait."""
    from data_pipelines.sources import file_lock

    with file_lock(str(directory.parent / f".{directory.name}.lock")):
        done = directory.parent / f".{directory.name}.done"
        if not done.exists():
            shutil.rmtree(directory, ignore_errors=True)  # a failed earlier attempt
            directory.mkdir(parents=True)
            build(directory)
            done.touch()
    return directory


def smoke_configdict(data_dir: Path | str, overrides: dict[str, Any] | None = None):
    """The smoke ConfigDict with ``{"training.num_train_steps": 4, ...}`` applied."""
    from configs import moving_digits

    c = moving_digits.get_config("smoke")
    c.data.data_dir = str(data_dir)
    for dotted, value in (overrides or {}).items():
        *parents, leaf = dotted.split(".")
        node = c
        for p in parents:
            node = node[p]
        assert leaf in node, f"unknown config field {dotted}"
        node[leaf] = value
    return c


def smoke_config(data_dir: Path | str, overrides: dict[str, Any] | None = None):
    from vdm_jax.config import from_configdict

    return from_configdict(smoke_configdict(data_dir, overrides))


def eval_program(config):
    """The train program the evaluation job runs for ``config`` (as ``launch.evaluate`` builds it)."""
    from vdm_jax.evaluation.loading import inference_mesh
    from vdm_jax.training.program import TrainProgram

    return TrainProgram.create(config, inference_mesh(config))


def as_flags(overrides: dict[str, Any]) -> list[str]:
    return [f"--config.{k}={v}" for k, v in overrides.items()]


def prepared_data_dir(tmp_path_factory) -> Path:
    """The smoke dataset, prepared once for the session (``ensure_prepared`` locks and is idempotent)."""
    from data_pipelines import sources

    data_dir = shared_dir(tmp_path_factory, "training_data")
    sources.ensure_prepared(smoke_config(data_dir).data)
    return data_dir


def metric_records(workdir: Path | str, kind: str = "train") -> list[dict]:
    """Records of ``metrics.jsonl`` in file order (``kind`` "train" or "eval")."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("kind", "train") == kind]


def losses(workdir: Path | str) -> dict[int, float]:
    """step -> loss (the last record of a step wins: a resumed run logs its steps again)."""
    return {r["step"]: r["loss"] for r in metric_records(workdir)}


def checkpoint_steps(workdir: Path | str) -> list[int]:
    """Complete checkpoints (orbax renames a step's temporary directory to ``<step>`` when done)."""
    ckpt_dir = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit()) if ckpt_dir.is_dir() else []


def restore_numpy(workdir: Path | str, step: int) -> dict[str, np.ndarray]:
    """The ``state`` item of checkpoint ``step`` as host arrays, keyed by :func:`path_key` (any mesh)."""
    import jax
    import orbax.checkpoint as ocp

    path = Path(workdir) / "checkpoints" / str(step) / "state"
    with ocp.PyTreeCheckpointer() as ckptr:
        tree = dict(ckptr.metadata(path).item_metadata)
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
    return {path_key(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(state)}


def path_key(path) -> str:
    """``params/down/0/res/conv1/kernel``: the same for a TrainState and its checkpoint's dict tree."""
    return "/".join(str(getattr(e, "key", getattr(e, "name", getattr(e, "idx", e)))) for e in path)
