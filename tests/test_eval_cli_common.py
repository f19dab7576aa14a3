"""Shared helpers (no tests) for the evaluate/sample CLI tests: one real smoke training run per session.

``test_eval_cli.py`` trains in a subprocess with the evaluator following it; ``test_sample_cli.py``
reuses that workdir when it already exists in this pytest session, else trains on its own.
"""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/moving_digits.py:smoke"
TIMEOUT = 600
TRAIN_DEVICES = 2  # training's mesh; the evaluator uses 1 device, in-process tests 8
# No periodic samples and no in-training eval (eval_batches=0): the evaluation job does both here.
TRAIN_OVERRIDES = ["--config.training.sample_every=0", "--config.training.eval_batches=0"]
EVAL_OVERRIDES = ["--config.evaluation.fvd=False"]  # I3D at 224x224 is slow on CPU (see the slow test)
CHECKPOINT_STEPS = [3, 6]  # smoke: checkpoint_every=3, num_train_steps=6


def env(devices: int, cache_dir=None) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "VDM_", "TPU_"))}
    e.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    if cache_dir is not None:  # JAX's persistent compilation cache: later evaluator runs reuse programs
        e.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return e


def start(module: str, args: list[str], devices: int, log_path, cache_dir=None) -> subprocess.Popen:
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env(devices, cache_dir),
                            stdout=log, stderr=subprocess.STDOUT)


def run(module: str, args: list[str], devices: int = 1, timeout: int = TIMEOUT,
        cache_dir=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env(devices, cache_dir),
                          text=True, capture_output=True, timeout=timeout)


def wait(proc: subprocess.Popen, log_path, name: str) -> str:
    try:
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = open(log_path).read()
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{log[-5000:]}"
    return log


def _base(workdir, data_dir) -> list[str]:
    return [f"--config={SMOKE}", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}"]


def train_args(workdir, data_dir) -> list[str]:
    return [*_base(workdir, data_dir), *TRAIN_OVERRIDES]


def eval_args(workdir, data_dir, *extra) -> list[str]:
    return [*_base(workdir, data_dir), *EVAL_OVERRIDES, *extra]


def shared_dirs(tmp_path_factory):
    """(root, workdir, data_dir) shared by the CLI test modules of one pytest session."""
    root = tmp_path_factory.getbasetemp() / "eval_cli_run"
    return root, root / "work", root / "data"


def ensure_trained(tmp_path_factory):
    """A finished smoke training run (checkpoints 3 and 6); trains only if this session has none."""
    root, workdir, data_dir = shared_dirs(tmp_path_factory)
    done = root / "trained.ok"
    if not done.exists():
        root.mkdir(parents=True, exist_ok=True)
        proc = start("launch.train", train_args(workdir, data_dir), TRAIN_DEVICES, root / "train.log")
        wait(proc, root / "train.log", "training")
        done.write_text("ok")
    return workdir, data_dir
