"""``train_and_evaluate(config, workdir)``: the main job.

Order of business: mesh (validates the device count) -> data (prepared if absent) -> the train
program (``vdm_jax.training.program``) and its state, abstract-first and sharded -> resume (own
workdir > ``training.resume_from`` > ``training.init_weights_from`` > scratch) -> the loop: the
program's jitted step with donated state; metrics read one step late so the host never waits on
the step in flight; periodic eval, samples and checkpoints; SIGTERM / JAX preemption save; NaN/Inf
guard; profiler trace.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from vdm_jax import checkpointing as ckpt
from vdm_jax.config import Config, ConfigError, to_dict
from vdm_jax.sharding.mesh import describe, make_mesh
from vdm_jax.training.data import TrainData
from vdm_jax.training.metrics_writer import MetricsWriter, Progress
from vdm_jax.training.periodic_samples import PeriodicSampler
from vdm_jax.training.program import TrainProgram


class NonFiniteLossError(FloatingPointError):
    pass


class _Preemption:
    """SIGTERM sets a flag; the loop saves at the next step boundary and exits cleanly."""

    def __init__(self):
        self.requested = threading.Event()
        self._previous = None

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self.requested.set())

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def write_config(config: Config, workdir: str) -> None:
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(to_dict(config), f, indent=2)


def train_and_evaluate(config: Config, workdir: str, *, devices: list | None = None) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if possible). Returns the last logged metrics.

    ``devices`` (default: all of ``jax.devices()``) are the devices the mesh is built from.
    """
    mesh = make_mesh(config.mesh, devices)
    data_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.training.global_batch_size % (data_shards * config.training.microbatches):
        raise ConfigError("training.global_batch_size",
                          f"{config.training.global_batch_size} must be divisible by data*fsdp="
                          f"{data_shards} times microbatches={config.training.microbatches}")
    primary = jax.process_index() == 0
    logging.info("mesh: %s", describe(mesh))
    write_config(config, workdir)

    data = TrainData.create(config)
    program = TrainProgram.create(config, mesh)
    logging.info("model: %.2fM parameters", program.model.num_params / 1e6)
    state = program.init_state()

    manager = ckpt.make_manager(ckpt.checkpoint_dir(workdir), config.training)
    train_iter = data.train_iterator()
    state, train_iter = _resume(config, manager, state, program.abstract_state, train_iter)
    start_step = int(state.step)

    writer = MetricsWriter(workdir, enabled=primary, total_steps=config.training.num_train_steps)
    progress = Progress(config.training.num_train_steps, start_step, enabled=primary)
    sampler = PeriodicSampler(program, data, workdir)
    preemption = _Preemption()
    profiler = _Profiler(config.training.profile_steps, workdir)
    preemption.install()
    tokenizer_spec = data.tokenizer_spec()
    cfg_dict = to_dict(config)
    last: dict[str, Any] = {}
    pending = None  # (step, metrics on device) of the step in flight
    t_last, steps_since = time.time(), 0
    step = start_step
    last_good_ckpt = manager.latest_step()
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
                    if eval_metrics:
                        writer.write(step, eval_metrics, kind="eval")
                        last.update(eval_metrics)
                if config.training.sample_every and (step % config.training.sample_every == 0 or
                                                     step == config.training.num_train_steps):
                    sampler.run(state.ema_params, step)
                stop = preemption.requested.is_set()
                force = stop or step == config.training.num_train_steps
                if manager.should_save(step) or force:
                    _check_finite((step, metrics), last_good_ckpt)  # never checkpoint a NaN/Inf state
                    ckpt.save(manager, step, state, train_iter, cfg_dict, tokenizer_spec,
                              metrics={ckpt.EVAL_METRIC: eval_metrics["eval_loss"]} if eval_metrics else None,
                              force=force)
                    last_good_ckpt = step
                if stop:
                    logging.warning("SIGTERM received: saved step %d, exiting", step)
                    break
            if pending is not None:
                _check_finite(pending, last_good_ckpt)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        preemption.uninstall()
        profiler.stop()
    logging.info("done at step %d", step)
    return last


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


def _resume(config: Config, manager, state, target, train_iter):
    """Own workdir > explicit resume path > weights-only init > scratch (``target``: the abstract
    state with this mesh's shardings)."""
    latest = manager.latest_step()
    if latest is not None:
        logging.info("resuming from own workdir, step %d", latest)
        return ckpt.restore(manager, latest, target, train_iter)
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
            return state.replace(params=restored.params, ema_params=restored.ema_params), train_iter
        logging.info("resuming from %s step %d", path, step)
        return restored, it
    return state, train_iter
