"""The one diffusion loss, used by training (random noise levels) and evaluation (fixed levels).

per_example[b] = w(logsnr_b) * mean_{non-batch dims} (pred - target)^2, target in cfg.target
(eps, v or x0); loss = mean_b per_example.  Weighting w:
  none:     w = 1 (plain MSE on the target);
  min_snr:  min-SNR-gamma (Hang et al. 2023), i.e. the x0-MSE weight min(snr, gamma) re-expressed
            for the target: eps -> min(snr, gamma)/snr, v -> min(snr, gamma)/(snr + 1), x0 -> min(snr, gamma).
Times: uniform t_b ~ U[0,1) i.i.d., or low-discrepancy t_b = (u + b/B) mod 1 with one u ~ U[0,1)
(Kingma et al. 2021), mapped through the schedule to logsnr.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vdm_jax.config import DiffusionConfig, LossWeighting, Target, TimeSampling
from vdm_jax.diffusion.parameterization import q_sample, v_target
from vdm_jax.diffusion.schedules import Schedule


class LossOutput(NamedTuple):
    loss: jax.Array  # scalar: mean over the batch of per_example
    per_example: jax.Array  # (B,) weighted loss of each example
    logsnr: jax.Array  # (B,) noise level used for each example


def sample_times(rng: jax.Array, batch: int, kind: TimeSampling) -> jax.Array:
    """(B,) times in [0, 1): i.i.d. uniform or low-discrepancy (stratified with one shared offset)."""
    if kind == TimeSampling.UNIFORM:
        return jax.random.uniform(rng, (batch,))
    u = jax.random.uniform(rng, ())
    return jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)


def sample_logsnr(rng: jax.Array | None, batch: int, cfg: DiffusionConfig, schedule: Schedule,
                  logsnr: jax.Array | float | None = None) -> jax.Array:
    """(B,) noise levels: ``logsnr`` broadcast when given, else times drawn from ``rng`` per
    ``cfg.time_sampling`` and mapped through the schedule."""
    if logsnr is not None:
        return jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), (batch,))
    drawn = schedule.logsnr(sample_times(rng, batch, cfg.time_sampling))
    if not cfg.train_mix_fraction or not cfg.train_mix_shift:
        return drawn
    return jnp.clip(drawn + cfg.train_mix_shift * mix_mask(batch, cfg.train_mix_fraction),
                    cfg.logsnr_min, cfg.logsnr_max)


def mix_mask(batch: int, fraction: float) -> jax.Array:
    """(B,) 0/1: which examples get ``diffusion.train_mix_shift``; round(fraction * B) of them, spread
    over the batch by the golden-ratio sequence (so they are not one contiguous run of the
    low-discrepancy times, and each microbatch gets its share)."""
    order = jnp.argsort(jnp.mod((jnp.arange(batch) + 0.5) * 0.6180339887498949, 1.0))
    return (jnp.argsort(order) < round(fraction * batch)).astype(jnp.float32)


def loss_weight(logsnr: jax.Array, cfg: DiffusionConfig) -> jax.Array:
    """Per-example weight for the chosen target and weighting."""
    weighting, target = cfg.loss_weighting, cfg.target
    if weighting is LossWeighting.NONE:
        return jnp.ones_like(logsnr)
    gamma = cfg.min_snr_gamma
    clipped = jnp.minimum(jnp.exp(logsnr), gamma)  # min(snr, gamma)
    if target is Target.EPS:
        return jnp.minimum(1.0, gamma * jnp.exp(-logsnr))  # min(snr, gamma) / snr
    if target is Target.V:
        return clipped * jax.nn.sigmoid(-logsnr)  # / (snr + 1)
    return clipped


def _per_example_mse(err2: jax.Array, frame_weights: jax.Array | None) -> jax.Array:
    if frame_weights is None:
        return jnp.mean(err2.reshape(err2.shape[0], -1), axis=1)
    if err2.ndim < 3:
        raise ValueError(f"frame_weights needs inputs (B, T, ...), got shape {err2.shape}")
    b, t = err2.shape[:2]
    w = jnp.broadcast_to(jnp.asarray(frame_weights, jnp.float32), (b, t))
    per_frame = jnp.mean(err2.reshape(b, t, -1), axis=2)
    return jnp.sum(w * per_frame, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-8)


def diffusion_loss(
    denoise_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x0: jax.Array,
    rng: jax.Array | None,
    cfg: DiffusionConfig,
    schedule: Schedule,
    *,
    logsnr: jax.Array | float | None = None,
    noise: jax.Array | None = None,
    frame_weights: jax.Array | None = None,
) -> LossOutput:
    """Loss of `denoise_fn(z, logsnr) -> prediction in cfg.target` on clean data x0 (B, ...).

    `logsnr` (scalar or (B,)) fixes the noise levels (evaluation); otherwise times are drawn from
    `rng` per cfg.time_sampling; `noise` (x0's shape) fixes the Gaussian noise (the train step draws
    both for the whole batch, so that gradient accumulation over microbatches is exact; `rng` may
    then be None). `frame_weights` ((T,) or (B, T)) weights frames (axis 1) in the per-example mean (e.g. 0 on
    conditioning frames).
    """
    if rng is None and (logsnr is None or noise is None):
        raise ValueError("diffusion_loss needs an rng unless both logsnr and noise are given")
    t_rng, n_rng = jax.random.split(rng) if rng is not None else (None, None)
    logsnr = sample_logsnr(t_rng, x0.shape[0], cfg, schedule, logsnr)
    if noise is None:
        noise = jax.random.normal(n_rng, x0.shape, jnp.float32)
    elif noise.shape != x0.shape:
        raise ValueError(f"noise has shape {noise.shape}, expected x0's shape {x0.shape}")
    noise = noise.astype(jnp.float32)
    z = q_sample(x0.astype(jnp.float32), logsnr, noise).astype(x0.dtype)
    pred = denoise_fn(z, logsnr).astype(jnp.float32)
    target = cfg.target
    if target is Target.EPS:
        goal = noise
    elif target is Target.V:
        goal = v_target(x0.astype(jnp.float32), noise, logsnr)
    else:
        goal = x0.astype(jnp.float32)
    if pred.shape != goal.shape:
        raise ValueError(f"denoise_fn returned shape {pred.shape}, expected {goal.shape}")
    per_example = loss_weight(logsnr, cfg) * _per_example_mse(jnp.square(pred - goal), frame_weights)
    return LossOutput(jnp.mean(per_example), per_example, logsnr)
