"""Train a video diffusion model.

    python -m launch.train --config=configs/moving_digits.py --workdir=/tmp/md [--config.a.b=v]

Resumes from WORKDIR if it holds a checkpoint. Multi-host: pass --coordinator_address,
--num_processes and --process_id, or let `launch.distributed` auto-detect SLURM / TPU pods /
Kubernetes from the environment. This entry point is thin: flags, distributed init, logging,
then `vdm_jax.training.loop.train_and_evaluate(config, workdir)`.
"""

from __future__ import annotations

import os
import sys

import jax
from absl import app, flags, logging

from launch import cli, distributed
from vdm_jax import xla_flags
from vdm_jax.config import ConfigError
from vdm_jax.config_drift import ConfigDriftError
from vdm_jax.training.loop import train_and_evaluate
from vdm_jax.training.resume import CheckpointRestoreError
from vdm_jax.training.stopping import CheckpointSaveError, RunInterrupted
from vdm_jax.workdir_lock import WorkdirLockedError

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process runs); default: auto-detect.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of JAX processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
_FORCE_UNLOCK = flags.DEFINE_bool(
    "force_unlock", False, "Take over WORKDIR/train.lock even if another host or a live process holds it.")
_STRICT_RESUME = flags.DEFINE_bool(
    "strict_resume", False, "Refuse to resume when the latest checkpoint cannot be restored (default: "
                            "fall back to the newest older one that can, keeping the damaged one).")
flags.mark_flags_as_required(["workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    xla_flags.set_default_gpu_flags()  # before JAX creates its backends
    # Validate the config before anything touches an accelerator or the workdir.
    config = cli.typed_config(_CONFIG.value)
    distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                           process_id=_PROCESS_ID.value)
    logging.info("process %d/%d, %d local / %d global devices (%s)", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].platform)
    try:
        probe = None
        if config.evaluation.train_probe_clips:  # imports the evaluation package only when asked
            from vdm_jax.evaluation.tasks import training_probe
            probe = training_probe(config)
        train_and_evaluate(config, _WORKDIR.value, force_unlock=_FORCE_UNLOCK.value,
                           strict_resume=_STRICT_RESUME.value, eval_hooks=(probe,) if probe else ())
    except (ConfigError, ConfigDriftError, WorkdirLockedError, CheckpointRestoreError) as e:
        sys.exit(f"error: {e}")
    except (CheckpointSaveError, RunInterrupted) as e:
        # orbax's background threads may still wait on the failed save: do not join them.
        print(f"error: {e}", file=sys.stderr, flush=True)
        logging.flush()
        os._exit(143 if isinstance(e, RunInterrupted) else 1)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
