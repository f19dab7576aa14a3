"""Evaluate saved checkpoints of a training workdir (a separate job next to training).

    python -m launch.evaluate --config=configs/moving_digits.py --workdir=/tmp/md [--step=N|latest]
    python -m launch.evaluate --config=configs/moving_digits.py --workdir=/tmp/md --follow

Writes DIR/eval/step_N/metrics.json (eval loss at fixed log-SNRs, FVD with its protocol, text
alignment per attribute with chance levels, prediction PSNR/SSIM/LPIPS, clips/s), sample GIFs, and
DIR/eval/summary.{csv,md,png}. ``--follow`` evaluates each new checkpoint once as training writes
it (restart-safe: evaluated steps are skipped) and exits after ``--follow_until_step`` (default:
training.num_train_steps) or ``--max_idle_seconds`` without a new checkpoint. It only reads the
checkpoints, on whatever devices this job has. Skip FVD (I3D at 224x224, slow on CPU) with
``--config.evaluation.fvd=False``.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from launch import cli
from vdm_jax.config import ConfigError
from vdm_jax.evaluation import loading, runner
from vdm_jax.training.program import TrainProgram
from vdm_jax.workdir_lock import EVAL_LOCK, WorkdirLock, WorkdirLockedError

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "The training workdir (holds checkpoints/).")
_STEP = flags.DEFINE_string("step", "latest", "Checkpoint step to evaluate: an integer or 'latest'.")
_FOLLOW = flags.DEFINE_bool("follow", False, "Evaluate every new checkpoint as training writes it.")
_UNTIL = flags.DEFINE_integer(
    "follow_until_step", 0, "--follow exits once a step >= this is evaluated (0: training.num_train_steps).")
_MAX_IDLE = flags.DEFINE_float("max_idle_seconds", 0.0,
                               "--follow exits after this long without a new checkpoint (0: never).")
_POLL = flags.DEFINE_float("poll_seconds", None, "Poll interval (default: evaluation.follow_poll_seconds).")
_FORCE_UNLOCK = flags.DEFINE_bool("force_unlock", False, "Take over WORKDIR/eval/eval.lock even if another "
                                                          "host or a live process holds it.")
flags.mark_flags_as_required(["workdir"])


def _lock_outputs(workdir: str) -> WorkdirLock:
    """Before any compute: the outputs' directory is writable and no other evaluation job writes it
    (training and other readers of the checkpoints are never blocked)."""
    if not os.path.isdir(workdir) and not _FOLLOW.value:  # --follow may start before training
        sys.exit(f"error: --workdir={workdir}: no such directory")
    out = runner.eval_dir(workdir)
    try:
        return WorkdirLock(out, EVAL_LOCK, force=_FORCE_UNLOCK.value).acquire()
    except WorkdirLockedError as e:
        sys.exit(f"error: {e}")
    except OSError as e:
        sys.exit(f"error: cannot write the evaluation's outputs to {out}: [Errno {e.errno}] {e.strerror}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = cli.typed_config(_CONFIG.value)
    if _FOLLOW.value and _STEP.value != "latest":
        sys.exit("error: --step and --follow are exclusive (--follow evaluates every step)")
    lock = _lock_outputs(_WORKDIR.value)
    try:
        _evaluate(config)
    finally:
        lock.release()


def _evaluate(config) -> None:
    # The model's programs: training's, for this config on the devices of this job.
    program = TrainProgram.create(config, loading.inference_mesh(config))
    try:
        if _FOLLOW.value:
            steps = runner.follow(program, _WORKDIR.value, until_step=_UNTIL.value,
                                  max_idle_seconds=_MAX_IDLE.value, poll_seconds=_POLL.value)
            print(f"evaluated steps {steps}; summary in {runner.eval_dir(_WORKDIR.value)}")
        else:
            metrics = runner.evaluate(program, _WORKDIR.value, _STEP.value)
            print(f"step {metrics['step']}: {runner.headline(metrics)}")
            print(f"wrote {runner.metrics_path(_WORKDIR.value, metrics['step'])}")
    except (loading.EvalInputError, ConfigError) as e:
        sys.exit(f"error: {e}")
    except FileNotFoundError as e:  # missing dataset or feature-network weights
        logging.debug("evaluation failed", exc_info=True)
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
