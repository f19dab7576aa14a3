"""``train_and_evaluate(config, workdir)``: the main job.

Order of business: mesh (validates the device count) -> data (prepared if absent) -> the train
program (``vdm_jax.training.program``) and its state, abstract-first and sharded -> resume (own
workdir > ``training.resume_from`` > ``training.init_weights_from`` > scratch) -> the loop: the
program's jitted step with donated state; metrics read one step late so the host never waits on
the step in flight; periodic eval, samples and checkpoints; SIGTERM / JAX preemption save; NaN/Inf
guard; profiler trace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from absl import logging

from vdm_jax import checkpointing as ckpt
from vdm_jax import config_drift
from vdm_jax.config import Config, ConfigError, from_configdict, to_dict
from vdm_jax.sharding.mesh import describe, make_mesh
from vdm_jax.training import resume, stopping
from vdm_jax.training.data import TrainData
from vdm_jax.training.metrics_writer import MetricsWriter, Progress
from vdm_jax.training.optimizer import learning_rate_schedule
from vdm_jax.training.periodic_samples import PeriodicSampler
from vdm_jax.training.program import TrainProgram
from vdm_jax.workdir_lock import TRAIN_LOCK, WorkdirLock


class NonFiniteLossError(FloatingPointError):
    pass


# ``(program, tokenizer, ema_params) -> metrics`` merged into every periodic eval record (the
# launcher passes the evaluation package's temporal probe here; training does not import it).
EvalHook = Callable[[TrainProgram, Any, Any], dict[str, float]]


def train_and_evaluate(config: Config, workdir: str, *, devices: list | None = None,
                       force_unlock: bool = False, strict_resume: bool = False,
                       eval_hooks: tuple[EvalHook, ...] = ()) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if possible). Returns the last logged metrics.

    ``devices`` (default: all of ``jax.devices()``) are the devices the mesh is built from.
    ``eval_hooks`` add metrics to every periodic eval record.
    The workdir is locked for the run (``force_unlock`` takes over a lock held by another host or a
    live process); resuming checks the new config against the checkpoint's before anything is
    written and falls back to an older checkpoint when the latest is damaged (``strict_resume``:
    refuse instead).
    """
    mesh = make_mesh(config.mesh, devices)
    data_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.training.global_batch_size % (data_shards * config.training.microbatches):
        raise ConfigError("training.global_batch_size",
                          f"{config.training.global_batch_size} must be divisible by data*fsdp="
                          f"{data_shards} times microbatches={config.training.microbatches}")
    primary = jax.process_index() == 0
    logging.info("mesh: %s", describe(mesh))
    _check_workdir_path(workdir)
    lock = WorkdirLock(workdir, TRAIN_LOCK, force=force_unlock)
    if primary:
        lock.acquire()
    try:
        return _train(config, workdir, mesh, primary, strict_resume, eval_hooks)
    finally:
        lock.release()


def _check_workdir_path(workdir: str) -> None:
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError("--workdir", f"{workdir} exists and is not a directory")


def _train(config: Config, workdir: str, mesh, primary: bool, strict_resume: bool,
           eval_hooks: tuple[EvalHook, ...]) -> dict[str, Any]:
    # Before anything is written: the config against the one the checkpoints were trained with.
    saved = resume.saved_config(workdir)
    changes = config_drift.check_resume(saved[1], config, step=saved[0], workdir=workdir) if saved else []
    archived = resume.write_config(config, workdir)
    ckpt_dir = ckpt.checkpoint_dir(workdir)
    if primary:
        stopping.check_writable(ckpt_dir)

    data = TrainData.create(config)
    program = TrainProgram.create(config, mesh)
    logging.info("model: %.2fM parameters", program.model.num_params / 1e6)
    state = program.init_state()

    train_iter = data.train_iterator()
    state, train_iter, resumed = _resume(config, workdir, state, program.abstract_state, train_iter,
                                         strict=strict_resume)
    manager = ckpt.make_manager(ckpt_dir, config.training)  # after a damaged checkpoint was moved aside
    start_step = int(state.step)

    superseded = resume.metrics_superseded(workdir, start_step) if resumed is not None else []
    writer = MetricsWriter(workdir, enabled=primary, total_steps=config.training.num_train_steps)
    if resumed is not None:
        writer.write(start_step, {"checkpoint": resumed[0], "source": resumed[1],
                                  "damaged_skipped": resumed[2], "superseded_steps": superseded},
                     kind="resume")
    if changes:
        _record_config_change(writer, config, saved[1], changes, start_step, archived)
    progress = Progress(config.training.num_train_steps, start_step, enabled=primary)
    sampler = PeriodicSampler(program, data, workdir)
    signals = stopping.StopSignals()
    profiler = _Profiler(config.training.profile_steps, workdir)
    signals.install()
    tokenizer_spec = data.tokenizer_spec()
    cfg_dict = to_dict(config)
    last: dict[str, Any] = {}
    pending = None  # (step, metrics on device) of the step in flight
    t_last, steps_since = time.time(), 0
    step = start_step
    last_good_ckpt = manager.latest_step()
    abandon = False  # a failed save or a signal during a wait: do not wait on orbax again
    try:
        with jax.set_mesh(mesh):
            while step < config.training.num_train_steps:
                profiler.at_step(step)
                batch = program.place_batch(next(train_iter))
                state, metrics = program.train_step(state, batch)
                step += 1
                steps_since += 1
                if pending is not None:  # read the previous step's metrics: no sync on this one
                    _check_finite(pending, last_good_ckpt)
                pending = (step, metrics)
                if step % config.training.log_every == 0 or step == config.training.num_train_steps:
                    vals = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    _check_finite((step, vals), last_good_ckpt)
                    dt = time.time() - t_last
                    sps = steps_since / dt if dt > 0 else 0.0
                    vals.update(steps_per_sec=sps, clips_per_sec=sps * config.training.global_batch_size)
                    if program.peak_flops:
                        vals["mfu"] = program.mfu(sps)
                    writer.write(step, vals)
                    progress.report(step, vals)
                    last = {"step": step, **vals}
                    t_last, steps_since = time.time(), 0
                eval_metrics = None
                if step % config.training.eval_every == 0 or step == config.training.num_train_steps:
                    eval_metrics = program.eval_loss(state.ema_params,
                                                     data.eval_batches(config.training.eval_batches)) or None
                    for hook in eval_hooks:
                        extra = hook(program, data.tokenizer, state.ema_params)
                        eval_metrics = {**(eval_metrics or {}), **extra}
                    if eval_metrics:
                        writer.write(step, eval_metrics, kind="eval")
                        last.update(eval_metrics)
                if config.training.sample_every and (step % config.training.sample_every == 0 or
                                                     step == config.training.num_train_steps):
                    sampler.run(state.ema_params, step)
                stop = signals.requested.is_set()
                force = stop or step == config.training.num_train_steps
                if manager.should_save(step) or force:
                    _check_finite((step, metrics), last_good_ckpt)  # never checkpoint a NaN/Inf state
                    _save(manager, signals, ckpt_dir, primary, step, state, train_iter, cfg_dict,
                          tokenizer_spec, eval_metrics, force)
                    last_good_ckpt = step
                if stop:
                    logging.warning("SIGTERM received: saved step %d, exiting", step)
                    break
            if pending is not None:
                _check_finite(pending, last_good_ckpt)
            _finish_saves(manager, signals, ckpt_dir, last_good_ckpt)
    except (stopping.CheckpointSaveError, stopping.RunInterrupted) as e:
        abandon = True
        good = _last_complete(ckpt_dir)
        writer.write(step, {"error": str(e), "last_good_checkpoint": good}, kind="stopped")
        logging.error("%s; the last complete checkpoint is step %s: steps after it are lost", e, good)
        raise
    finally:
        try:
            if not abandon:  # an in-flight save of a good state completes (interruptible)
                with signals.waiting():
                    manager.wait_until_finished()
                    manager.close()
        finally:
            writer.close()
            signals.uninstall()
            profiler.stop()
    logging.info("done at step %d", step)
    return last


def _save(manager, signals, ckpt_dir, primary, step, state, train_iter, cfg_dict, tokenizer_spec,
          eval_metrics, force) -> None:
    """One checkpoint; a failure is a :class:`stopping.CheckpointSaveError` at once."""
    if primary:
        stopping.check_writable(ckpt_dir)
    try:
        with signals.waiting():  # orbax waits here for the previous async save
            manager.check_for_errors()
            ckpt.save(manager, step, state, train_iter, cfg_dict, tokenizer_spec,
                      metrics={ckpt.EVAL_METRIC: eval_metrics["eval_loss"]} if eval_metrics else None,
                      force=force)
    except (stopping.RunInterrupted, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - whatever orbax raised: one line with the path
        raise stopping.save_error(step, ckpt_dir, e) from e


def _finish_saves(manager, signals, ckpt_dir, step) -> None:
    """Wait for the last async save and surface its error (interruptible)."""
    try:
        with signals.waiting():
            manager.wait_until_finished()
            manager.check_for_errors()
    except (stopping.RunInterrupted, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001
        raise stopping.save_error(step, ckpt_dir, e) from e


def _last_complete(ckpt_dir: str) -> int | None:
    steps = [int(p) for p in os.listdir(ckpt_dir) if p.isdigit()] if os.path.isdir(ckpt_dir) else []
    return max(steps) if steps else None


def _record_config_change(writer, config: Config, saved: dict, changes, step: int,
                          archived: str | None) -> None:
    """A ``config_change`` record: every changed field (from, to) and the learning rate at ``step``
    under the old and the new schedule (the documented rule: the new schedule as a function of the
    step, from the resumed step on)."""
    record: dict[str, Any] = {"changes": {f: {"from": a, "to": b} for f, a, b in changes},
                              "previous_config": archived}
    if any(f in config_drift.LR_FIELDS for f, _, _ in changes):
        try:
            old = from_configdict(saved)
            before = float(learning_rate_schedule(old.optimizer, old.training.num_train_steps)(step))
        except (ConfigError, TypeError, ValueError):
            before = None
        after = float(learning_rate_schedule(config.optimizer, config.training.num_train_steps)(step))
        record["learning_rate"] = {"from": before, "to": after}
    for f, a, b in changes:
        logging.warning("config change on resume at step %d: %s %r -> %r", step, f, a, b)
    writer.write(step, record, kind="config_change")


def _check_finite(pending: tuple[int, Any], last_good: int | None) -> None:
    step, metrics = pending
    # A finite loss with a NaN/Inf gradient still poisons the params: check both.
    bad = {k: float(metrics[k]) for k in ("loss", "grad_norm") if k in metrics}
    bad = {k: v for k, v in bad.items() if not np.isfinite(v)}
    if bad:
        what = ", ".join(f"{k} became {v}" for k, v in bad.items())
        raise NonFiniteLossError(
            f"{what} between step {step - 1} and step {step}; training stopped. "
            f"The last good checkpoint (step {last_good}) is kept; lower optimizer.learning_rate "
            "or check the data, then resume.")


class _Profiler:
    """Captures a jax.profiler trace between ``training.profile_steps = (start, stop)``."""

    def __init__(self, steps: tuple[int, ...], workdir: str):
        self.steps, self.workdir, self.active = steps, workdir, False

    def at_step(self, step: int) -> None:
        if not self.steps:
            return
        if step == self.steps[0] and not self.active:
            jax.profiler.start_trace(os.path.join(self.workdir, "profile"))
            self.active = True
        elif step == self.steps[1] and self.active:
            self.stop()

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False


def _resume(config: Config, workdir: str, state, target, train_iter, *, strict: bool):
    """Own workdir (the newest checkpoint that works) > explicit resume path > weights-only init >
    scratch (``target``: the abstract state with this mesh's shardings). The third value is
    (step, source, damaged steps skipped) when training resumes, else None."""
    own = resume.restore_latest_working(workdir, config.training, target, train_iter, strict=strict)
    if own is not None:
        restored, it, step, damaged = own
        logging.info("resuming from own workdir, step %d", step)
        return restored, it, (step, "workdir", damaged)
    for path, weights_only in ((config.training.resume_from, False),
                               (config.training.init_weights_from, True)):
        if not path:
            continue
        other = ckpt.make_manager(path, config.training, read_only=True)
        step = other.latest_step()
        if step is None:
            field = "training.init_weights_from" if weights_only else "training.resume_from"
            raise ConfigError(field, f"no checkpoint found in {path}")
        restored, it = ckpt.restore(other, step, target, None if weights_only else train_iter)
        other.close()
        if weights_only:
            logging.info("weights-only init from %s step %d", path, step)
            return state.replace(params=restored.params, ema_params=restored.ema_params), train_iter, None
        logging.info("resuming from %s step %d", path, step)
        return restored, it, (step, path, [])
    return state, train_iter, None
