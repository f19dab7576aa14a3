"""Resuming a training workdir safely: the saved config against the new one, the config history,
and restoring the newest checkpoint that works.

* :func:`saved_config` reads the config the newest readable checkpoint was trained with;
  ``vdm_jax.config_drift`` decides which differences are allowed.
* :func:`write_config` keeps ``config.json`` as the config of the latest start and moves a
  different earlier one to ``config.N.json`` (N = 1, 2, ...): the history is never overwritten.
* :func:`restore_latest_working` restores the newest checkpoint; one that cannot be restored is
  named in one line (the failing file when it can be found) and, unless ``strict``, the next older
  one is tried. A damaged checkpoint is never deleted: it is moved to ``WORKDIR/damaged_checkpoints``
  (out of the checkpoint manager's reach, whose keep policy would delete it, and out of the way of
  the step being saved again).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

import jax
from absl import logging

from vdm_jax import checkpointing as ckpt
from vdm_jax.config import Config, to_dict

DAMAGED_DIR = "damaged_checkpoints"


class CheckpointRestoreError(RuntimeError):
    """No checkpoint of the workdir can be restored, or the latest cannot and resuming is strict."""


def saved_config(workdir: str) -> tuple[int, dict] | None:
    """(step, config dict) of the newest checkpoint whose saved config can be read; None if the
    workdir has no checkpoint."""
    steps = ckpt.existing_steps(workdir)
    if not steps:
        return None
    manager = ckpt.open_read_only(workdir)
    try:
        for step in reversed(steps):
            try:
                return step, ckpt.restore_json(manager, step, ckpt.CONFIG)
            except Exception as e:  # noqa: BLE001 - a damaged config item: try an older one
                logging.warning("config of checkpoint step %d unreadable: %s", step, _one_line(e))
    finally:
        manager.close()
    path = os.path.join(workdir, "config.json")  # every checkpoint's config is damaged
    if os.path.isfile(path):
        with open(path) as f:
            return steps[-1], json.load(f)
    return None


def write_config(config: Config, workdir: str) -> str | None:
    """Write ``config.json``; a different existing one moves to ``config.N.json`` first.

    Returns the archived file's name, or None when nothing was archived. Process 0 only.
    """
    if jax.process_index() != 0:
        return None
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    new = to_dict(config)
    archived = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        if old == new:
            return None
        n = 1
        while os.path.exists(os.path.join(workdir, f"config.{n}.json")):
            n += 1
        archived = f"config.{n}.json"
        os.replace(path, os.path.join(workdir, archived))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(new, f, indent=2)
    os.replace(tmp, path)
    return archived


def restore_latest_working(workdir: str, training_cfg, target: Any, data_iter: Any, *, strict: bool
                           ) -> tuple[Any, Any, int, list[int]] | None:
    """Restore the newest checkpoint of ``workdir`` that works: (state, data iterator, step, damaged
    steps moved aside). None when there is no checkpoint."""
    manager = ckpt.make_manager(ckpt.checkpoint_dir(workdir), training_cfg, read_only=True)
    damaged: list[int] = []
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            return None
        for step in steps:
            try:
                state, it = ckpt.restore(manager, step, target, data_iter)
            except Exception as e:  # noqa: BLE001 - any failure to read it: report and fall back
                line = describe_failure(workdir, step, e)
                logging.error("%s", line)
                if strict:
                    raise CheckpointRestoreError(
                        f"{line}; --strict_resume refuses to fall back to an older checkpoint") from None
                damaged.append(step)
                continue
            break
        else:
            raise CheckpointRestoreError(
                f"no checkpoint of {ckpt.checkpoint_dir(workdir)} can be restored (steps {sorted(damaged)}); "
                "see the errors above")
    finally:
        manager.close()
    if damaged:
        moved = [move_aside(workdir, s) for s in damaged]
        banner = "!" * 100
        logging.error("%s", banner)
        logging.error("RESUMING FROM AN OLDER CHECKPOINT: step %d; the newer, damaged checkpoint(s) %s were "
                      "moved to %s (kept, not deleted)", step, damaged, ", ".join(moved))
        logging.error("%s", banner)
    return state, it, step, damaged


def describe_failure(workdir: str, step: int, error: BaseException) -> str:
    """One line: which checkpoint, which file (when it can be told), what went wrong."""
    step_dir = os.path.join(ckpt.checkpoint_dir(workdir), str(step))
    bad = _failing_file(step_dir, error)
    where = f"file {bad}" if bad else f"directory {step_dir}"
    return f"checkpoint step {step} cannot be restored: {where}: {_one_line(error)}"


def _failing_file(step_dir: str, error: BaseException) -> str | None:
    e: BaseException | None = error
    while e is not None:  # a file named by the error itself
        name = getattr(e, "filename", None)
        if name:
            return str(name)
        found = re.search(re.escape(step_dir) + r"[^\s'\",:)\]]*", str(e))
        if found and found.group(0) != step_dir:
            return found.group(0)
        e = e.__cause__ or e.__context__
    for root, _, files in os.walk(step_dir):  # else: a JSON file of the checkpoint that does not parse
        for name in sorted(files):
            if name in ("_METADATA", "_CHECKPOINT_METADATA", "metadata") or name.endswith(".json"):
                path = os.path.join(root, name)
                try:
                    with open(path) as f:
                        json.load(f)
                except (OSError, ValueError):
                    return path
    for item in ("state", "config"):  # or a missing item / item metadata
        for required in ("", "_METADATA"):
            path = os.path.join(step_dir, item, required) if required else os.path.join(step_dir, item)
            if not os.path.exists(path):
                return f"{path} (missing)"
    return None


def move_aside(workdir: str, step: int) -> str:
    """Move checkpoint ``step`` to ``WORKDIR/damaged_checkpoints/<step>[.N]`` (process 0)."""
    src = os.path.join(ckpt.checkpoint_dir(workdir), str(step))
    dst = os.path.join(os.path.abspath(workdir), DAMAGED_DIR, str(step))
    n = 1
    while os.path.exists(dst):
        dst = os.path.join(os.path.abspath(workdir), DAMAGED_DIR, f"{step}.{n}")
        n += 1
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.move(src, dst)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"vdm_jax_damaged_checkpoint_{step}")
    return dst


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def metrics_superseded(workdir: str, step: int) -> list[int]:
    """[first, last] step of the train records in ``metrics.jsonl`` after ``step`` (a resume from
    ``step`` logs them again), or [] if none."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    later = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("kind", "train") == "train" and \
                    isinstance(record.get("step"), int) and record["step"] > step:
                later.append(record["step"])
    return [min(later), max(later)] if later else []
