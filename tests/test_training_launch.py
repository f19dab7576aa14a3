"""``python -m launch.train`` on the smoke config in real subprocesses (one CPU device each).

* The Quickstart contract: ``config.json``, ``metrics.jsonl`` with a falling loss, checkpoints and a
  sample GIF.
* Exact resume: a run stopped by SIGTERM saves at the next step boundary and exits cleanly; resumed
  in the same workdir it reproduces an uninterrupted run bit for bit (every loss after the resume,
  the final params, EMA, optimizer state, RNG and data-iterator position).
* A run killed with SIGKILL while an async save is in flight resumes from the last complete
  checkpoint, again bit for bit.

All runs share one prepared dataset and a persistent compilation cache, so only the first run
compiles; the uninterrupted reference run is made once per session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import training_support as ts

STEPS = 24
OVERRIDES = {
    "training.num_train_steps": STEPS, "training.log_every": 1, "training.checkpoint_every": 8,
    "training.eval_every": 8, "training.sample_every": STEPS,
    "evaluation.train_probe_clips": 4,  # the temporal probe in the eval records (launch.train's hook)
}
TIMEOUT = 900


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(data_dir, compilation cache dir, shared root)."""
    data_dir = ts.prepared_data_dir(tmp_path_factory)
    cache = ts.compilation_cache_dir(tmp_path_factory, "jax_cache_1dev")
    return data_dir, cache, ts.shared_dir(tmp_path_factory, "launch_runs")


def _env(cache_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "VDM_", "TPU_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(ts.REPO), PYTHONUNBUFFERED="1",
               JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


def _start(setup, workdir: Path, tag: str) -> tuple[subprocess.Popen, Path]:
    data_dir, cache_dir, _ = setup
    log = workdir.parent / f"{workdir.name}.{tag}.log"
    cmd = [sys.executable, "-m", "launch.train", f"--config={ts.SMOKE}", f"--workdir={workdir}",
           f"--config.data.data_dir={data_dir}", *ts.as_flags(OVERRIDES)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ts.REPO, env=_env(cache_dir), stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def _finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, f"launch.train exited {proc.returncode}:\n{text[-5000:]}"
    return text


def _wait_for(condition, proc: subprocess.Popen, what: str, poll: float = 0.005) -> None:
    deadline = time.time() + TIMEOUT
    while not condition():
        assert proc.poll() is None, f"launch.train exited ({proc.returncode}) before {what}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def _has_trained(workdir: Path) -> bool:
    path = workdir / "metrics.jsonl"
    return path.exists() and '"loss"' in path.read_text()


@pytest.fixture(scope="module")
def reference(setup):
    """An uninterrupted STEPS-step run (made once per session)."""
    def build(workdir):
        _finish(*_start(setup, workdir, "run"))

    return ts.run_once(setup[2] / "uninterrupted", build)


def test_train_cli_writes_config_metrics_checkpoints_and_samples(reference):
    from PIL import Image

    config = json.loads((reference / "config.json").read_text())
    assert config["name"] == "moving_digits_smoke" and config["training"]["num_train_steps"] == STEPS
    records = ts.metric_records(reference)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for r in records:
        for key in ("loss", "learning_rate", "grad_norm", "steps_per_sec", "clips_per_sec"):
            assert np.isfinite(r[key]), (key, r)
    loss = [r["loss"] for r in records]
    assert np.mean(loss[:3]) - np.mean(loss[-3:]) > 0.05, f"loss did not fall: {loss}"
    evals = ts.metric_records(reference, kind="eval")
    assert [r["step"] for r in evals] == [8, 16, 24] and all(np.isfinite(r["eval_loss"]) for r in evals)
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"], evals
    for r in evals:  # the temporal probe: every variant at every probe log-SNR, from the same noise
        for variant in ("real", "reversed", "swapped", "shuffled"):
            assert np.isfinite(r[f"probe_loss_{variant}_logsnr_-4"]), (variant, r)
        assert r["probe_num_clips"] == 4 and r["probe_delta_reversed_logsnr_-4"] != 0, r

    assert STEPS in ts.checkpoint_steps(reference)
    assert len(ts.checkpoint_steps(reference)) <= 3, "keep_checkpoints=2 plus keep_best=1"
    final = reference / "checkpoints" / str(STEPS)
    assert {p.name for p in final.iterdir()} >= {"state", "data", "config", "tokenizer"}
    with Image.open(reference / "samples" / f"step_{STEPS:07d}.gif") as gif:
        assert gif.n_frames > 1 and min(gif.size) >= 16
    assert any((reference / "tensorboard").iterdir()), "no TensorBoard events"


def _assert_continues_exactly(workdir: Path, reference: Path, first_record: int, resumed_from: int) -> None:
    """The records written from ``first_record`` on continue at ``resumed_from + 1`` and match the
    reference bit for bit, and so does the final checkpoint."""
    ref = ts.losses(reference)
    new = ts.metric_records(workdir)[first_record:]
    assert [r["step"] for r in new] == list(range(resumed_from + 1, STEPS + 1))
    assert [r["loss"] for r in new] == [ref[r["step"]] for r in new]
    assert ts.metric_records(workdir, "eval")[-1] == ts.metric_records(reference, "eval")[-1]
    got, want = ts.restore_numpy(workdir, STEPS), ts.restore_numpy(reference, STEPS)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    data_state = [json.loads((d / "checkpoints" / str(STEPS) / "data" / "process_0-of-1.json").read_text())
                  for d in (workdir, reference)]
    assert data_state[0] == data_state[1], "the data iterator is not where the uninterrupted run left it"


def test_sigterm_saves_and_the_resumed_run_is_exact(setup, reference, tmp_path):
    workdir = tmp_path / "preempted"
    proc, log = _start(setup, workdir, "first")
    _wait_for(lambda: _has_trained(workdir), proc, "the first logged step")
    proc.send_signal(signal.SIGTERM)
    _finish(proc, log)  # exit status 0: a clean, early stop
    stopped = ts.metric_records(workdir)[-1]["step"]
    assert 1 <= stopped < STEPS and ts.checkpoint_steps(workdir)[-1] == stopped, (
        stopped, ts.checkpoint_steps(workdir))
    first_record = len(ts.metric_records(workdir))
    _finish(*_start(setup, workdir, "resumed"))
    _assert_continues_exactly(workdir, reference, first_record, stopped)
    for step, loss in ts.losses(workdir).items():  # the steps before the signal match as well
        assert loss == ts.losses(reference)[step], step


def test_sigkill_during_an_async_save_resumes_from_the_last_complete_checkpoint(setup, reference, tmp_path):
    workdir = tmp_path / "killed"
    ckpt_dir = workdir / "checkpoints"
    proc, log = _start(setup, workdir, "first")

    def saving_16() -> bool:  # orbax writes <step>.orbax-checkpoint-tmp* and renames it when complete
        return ckpt_dir.is_dir() and any(p.name.startswith("16") for p in ckpt_dir.iterdir())

    _wait_for(saving_16, proc, "the save of step 16", poll=0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    if (ckpt_dir / "16").exists():  # the save finished before we saw it: make it an interrupted one
        tmp = ckpt_dir / "16.orbax-checkpoint-tmp"
        shutil.move(ckpt_dir / "16", tmp)
        for marker in [*tmp.rglob("commit_success.txt"), *tmp.glob("_CHECKPOINT_METADATA")]:
            marker.unlink()
    assert [p.name for p in ckpt_dir.iterdir() if p.name.startswith("16")], "no interrupted save left"
    assert ts.checkpoint_steps(workdir) == [8]
    first_record = len(ts.metric_records(workdir))
    _finish(*_start(setup, workdir, "resumed"))
    _assert_continues_exactly(workdir, reference, first_record, 8)
    assert STEPS in ts.checkpoint_steps(workdir)
