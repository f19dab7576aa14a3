"""Operator faults on the smoke config, in this process on one CPU device:

* resuming with a config that changes the run is refused before anything is written, naming every
  differing field; a safe change (more steps) is allowed, recorded and keeps the config history;
* the workdir lock refuses a second training, recovers a dead process's lock, ``force_unlock``;
* a damaged latest checkpoint is named, kept, and training continues bit for bit from the older one
  (``strict_resume`` refuses instead);
* a failed save stops the run at once naming the path and errno, and a signal during a wait on a
  save stops it within seconds; the metrics say where the last good checkpoint is.

One 4-step base run (checkpoints 2 and 4) is shared and copied; the compilation cache is the one
of tests/test_training_loop.py (the same programs), so only the first training run compiles.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import jax
import numpy as np
import pytest
import training_support as ts

STEPS = 4
BASE = {
    "training.num_train_steps": STEPS, "training.log_every": 1, "training.eval_batches": 0,
    "training.sample_every": 0, "training.checkpoint_every": 2, "training.async_checkpointing": True,
    "optimizer.warmup_steps": 0, "optimizer.lr_schedule": "constant",
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return ts.prepared_data_dir(tmp_path_factory)


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory, devices8):
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(ts.compilation_cache_dir(tmp_path_factory,
                                                                                 "jax_cache_8dev")))
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


def _config(data_dir, **extra):
    return ts.smoke_config(data_dir, {**BASE, **extra})


def _train(config, workdir, **kw):
    from vdm_jax.training.loop import train_and_evaluate

    return train_and_evaluate(config, str(workdir), devices=jax.devices()[:1], **kw)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, data_dir):
    """A STEPS-step run with checkpoints at 2 and 4 (once per session)."""
    root = ts.shared_dir(tmp_path_factory, "operations_runs")
    return ts.run_once(root / "base", lambda workdir: _train(_config(data_dir), workdir))


@pytest.fixture
def copy_of(base_run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(base_run, target)
    return target


def _records(workdir, kind):
    return ts.metric_records(workdir, kind)


# ---------------------------------------------------------------------------------------------
# 1. Config drift on resume
# ---------------------------------------------------------------------------------------------


def test_resume_with_a_changed_model_is_refused_before_anything_is_written(copy_of, data_dir):
    from vdm_jax.config_drift import ConfigDriftError

    before = {p: p.read_bytes() for p in (copy_of / "config.json", copy_of / "metrics.jsonl")}
    config = _config(data_dir, **{"model.base_channels": 16, "diffusion.target": "eps"})
    with pytest.raises(ConfigDriftError) as err:
        _train(config, copy_of)
    message = str(err.value)
    assert "\n" not in message
    assert "model.base_channels is 16 here but 8 in the checkpoint" in message
    assert "diffusion.target is 'eps' here but 'v' in the checkpoint" in message
    assert f"checkpoint step {STEPS}" in message
    assert {p: p.read_bytes() for p in before} == before, "config.json or metrics.jsonl was written"
    assert not list(copy_of.glob("config.*.json")) and not (copy_of / "train.lock").exists()


def test_safe_change_is_allowed_recorded_and_keeps_the_config_history(copy_of, data_dir):
    old_config = json.loads((copy_of / "config.json").read_text())
    _train(_config(data_dir, **{"training.num_train_steps": 6, "training.log_every": 2}), copy_of)
    assert json.loads((copy_of / "config.1.json").read_text()) == old_config
    assert json.loads((copy_of / "config.json").read_text())["training"]["num_train_steps"] == 6
    (change,) = _records(copy_of, "config_change")
    assert change["step"] == STEPS and change["previous_config"] == "config.1.json"
    assert change["changes"] == {"training.num_train_steps": {"from": 4, "to": 6},
                                 "training.log_every": {"from": 1, "to": 2}}
    assert change["learning_rate"]["from"] == change["learning_rate"]["to"]  # constant schedule
    assert [r["step"] for r in _records(copy_of, "train")] == [1, 2, 3, 4, 6]
    assert ts.checkpoint_steps(copy_of)[-1] == 6


# ---------------------------------------------------------------------------------------------
# 2. Workdir lock
# ---------------------------------------------------------------------------------------------


def _write_lock(workdir, pid, host=None):
    from vdm_jax.workdir_lock import TRAIN_LOCK

    os.makedirs(workdir, exist_ok=True)
    holder = {"host": host or socket.gethostname(), "pid": pid, "started": "2024-01-01T00:00:00+00:00"}
    (workdir / TRAIN_LOCK).write_text(json.dumps(holder))
    return holder


def test_a_second_training_in_a_locked_workdir_is_refused(tmp_path, data_dir):
    from vdm_jax.workdir_lock import WorkdirLockedError

    other = subprocess.Popen(["sleep", "60"])  # a live process holds the lock
    try:
        holder = _write_lock(tmp_path, other.pid)
        with pytest.raises(WorkdirLockedError, match=rf"in use by pid {other.pid} on host .*--force_unlock"):
            _train(_config(data_dir), tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["train.lock"], "the refused run wrote files"
        assert json.loads((tmp_path / "train.lock").read_text()) == holder, "the holder's lock was touched"
    finally:
        other.kill()
        other.wait()


def test_stale_lock_is_recovered_and_force_unlock_takes_over(tmp_path):
    from vdm_jax.workdir_lock import TRAIN_LOCK, WorkdirLock, WorkdirLockedError

    dead = subprocess.Popen(["true"])
    dead.wait()
    _write_lock(tmp_path, dead.pid)  # a run on this host that died without releasing the lock
    with WorkdirLock(str(tmp_path)) as lock:
        mine = json.loads((tmp_path / TRAIN_LOCK).read_text())
        assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname() and mine["started"]
        assert mine == lock.record
    assert not (tmp_path / TRAIN_LOCK).exists(), "the lock is released on exit"

    _write_lock(tmp_path, 1, host="another-host.invalid")  # cannot be checked from here
    with pytest.raises(WorkdirLockedError, match="another-host.invalid"):
        WorkdirLock(str(tmp_path)).acquire()
    with WorkdirLock(str(tmp_path), force=True):
        assert json.loads((tmp_path / TRAIN_LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / TRAIN_LOCK).exists()


def test_training_releases_its_lock(base_run):
    assert not (base_run / "train.lock").exists()


# ---------------------------------------------------------------------------------------------
# 3. Damaged latest checkpoint
# ---------------------------------------------------------------------------------------------


def _damage(workdir, step):
    path = workdir / "checkpoints" / str(step) / "state" / "_METADATA"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    return path


def test_damaged_latest_checkpoint_strict_resume_refuses(copy_of, data_dir):
    from vdm_jax.training.resume import CheckpointRestoreError

    bad = _damage(copy_of, STEPS)
    with pytest.raises(CheckpointRestoreError, match=rf"checkpoint step {STEPS} cannot be restored: file "
                                                     rf"{bad}: .*--strict_resume"):
        _train(_config(data_dir), copy_of, strict_resume=True)
    assert ts.checkpoint_steps(copy_of) == [2, STEPS], "strict resume moved or deleted a checkpoint"


def test_damaged_latest_checkpoint_falls_back_and_continues_exactly(copy_of, base_run, data_dir):
    bad = _damage(copy_of, STEPS)
    damaged_bytes = bad.read_bytes()
    n_before = len(_records(copy_of, "train"))
    _train(_config(data_dir), copy_of)
    kept = copy_of / "damaged_checkpoints" / str(STEPS) / "state" / "_METADATA"
    assert kept.read_bytes() == damaged_bytes, "the damaged checkpoint was not kept as it was"
    (marker,) = _records(copy_of, "resume")
    assert marker["step"] == 2 and marker["damaged_skipped"] == [STEPS]
    assert marker["superseded_steps"] == [3, STEPS], "the records the resumed run repeats are not marked"
    new = _records(copy_of, "train")[n_before:]
    reference = ts.losses(base_run)
    assert [r["step"] for r in new] == [3, 4]
    assert [r["loss"] for r in new] == [reference[3], reference[4]]
    got, want = ts.restore_numpy(copy_of, STEPS), ts.restore_numpy(base_run, STEPS)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# 4. Failed saves and signals during a wait on a save
# ---------------------------------------------------------------------------------------------


def test_a_failed_save_stops_at_once_naming_path_and_errno(tmp_path, data_dir, monkeypatch):
    import errno

    from vdm_jax.training.stopping import CheckpointSaveError

    real_mkdir, failed_at = os.mkdir, []

    def mkdir(path, *args, **kwargs):  # the filesystem refuses the step-4 checkpoint (quota, permissions)
        if f"checkpoints{os.sep}{STEPS}" in os.fspath(path):
            failed_at.append(time.time())
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(CheckpointSaveError) as err:
        _train(_config(data_dir), tmp_path)
    assert failed_at and time.time() - failed_at[0] < 10
    message = str(err.value)
    assert "\n" not in message and f"checkpoint step {STEPS} could not be saved" in message
    assert "[Errno 13] Permission denied" in message and str(tmp_path / "checkpoints") in message
    (stopped,) = _records(tmp_path, "stopped")
    assert stopped["step"] == STEPS and stopped["last_good_checkpoint"] == 2
    assert ts.checkpoint_steps(tmp_path) == [2]
    assert not (tmp_path / "train.lock").exists()


def test_sigterm_during_a_hanging_save_stops_within_seconds(tmp_path, data_dir, monkeypatch):
    from vdm_jax import checkpointing as ckpt
    from vdm_jax.training import stopping
    from vdm_jax.training.stopping import RunInterrupted

    monkeypatch.setattr(stopping, "SAVE_WAIT_GRACE_S", 1.0)  # the grace a healthy save would get

    real_save, hanging = ckpt.save, threading.Event()

    def save(manager, step, *args, **kwargs):  # the save of step 4 never completes
        if step == STEPS:
            manager.wait_until_finished()  # step 2 is complete
            hanging.set()
            threading.Event().wait()
        return real_save(manager, step, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save", save)
    sent, previous_handler = [], signal.getsignal(signal.SIGTERM)

    def terminate():
        hanging.wait(600)
        time.sleep(0.5)
        sent.append(time.time())
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate, daemon=True).start()
    with pytest.raises(RunInterrupted, match="SIGTERM"):
        _train(_config(data_dir), tmp_path)
    assert sent and time.time() - sent[0] < 1.0 + 5
    assert signal.getsignal(signal.SIGTERM) == previous_handler, "the run's signal handler was left installed"
    (stopped,) = _records(tmp_path, "stopped")
    assert stopped["last_good_checkpoint"] == 2 and "SIGTERM" in stopped["error"]
