"""Noise-conditioning augmentation of a cascade stage's conditioning video (Imagen Video).

The lower stage's video is corrupted with the forward process before the stage sees it:
``aug(y) = alpha(l) y + sigma(l) noise`` at an augmentation log-SNR ``l``, drawn uniformly from
``[lo, hi]`` per example in training and fixed at sampling. The stage is told ``l``, so at sampling a
moderate level makes it robust to the lower stage's artifacts without losing the content.

``sample_stage`` is the one sampling path of a stage (evaluation, the sample CLI's cascade and
training's periodic samples): augment the conditioning video at the fixed level, sample, and for a
residual stage (``model.stage_residual``) add the clean resized conditioning video back (the
caller passes it, as the diffusion package knows no model shapes). With
``sampling.stage_consistency`` every denoised estimate is projected onto the videos whose
measurement (the caller's ``observation`` of the clean conditioning video) equals that video.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vdm_jax.config import SamplerConfig
from vdm_jax.diffusion.conditioning import Observation
from vdm_jax.diffusion.parameterization import q_sample


def draw_aug_logsnr(rng: jax.Array, batch: int, lo: float, hi: float) -> jax.Array:
    """(B,) augmentation log-SNRs, uniform in [lo, hi] (lo == hi: that level)."""
    return jax.random.uniform(rng, (batch,), jnp.float32, lo, hi)


def augment(low_res: jax.Array, aug_logsnr: jax.Array, noise: jax.Array) -> jax.Array:
    """The conditioning video noised to ``aug_logsnr`` (B,) with ``noise`` (its shape)."""
    if noise.shape != low_res.shape:
        raise ValueError(f"augmentation noise has shape {noise.shape}, expected {low_res.shape}")
    return q_sample(low_res.astype(jnp.float32), aug_logsnr, noise.astype(jnp.float32))


def augmented_inputs(low_res: jax.Array, aug_logsnr: jax.Array | float, rng: jax.Array
                     ) -> dict[str, jax.Array]:
    """``{"low_res", "aug_logsnr"}`` for a stage at a fixed level (sampling, evaluation): the video
    noised once with noise from ``rng``."""
    b = low_res.shape[0]
    level = jnp.broadcast_to(jnp.asarray(aug_logsnr, jnp.float32), (b,))
    noise = jax.random.normal(rng, low_res.shape, jnp.float32)
    return {"low_res": augment(low_res, level, noise), "aug_logsnr": level}


def sample_stage(sample_fn, denoiser, sampler_cfg: SamplerConfig, low_res: jax.Array,
                 text: dict[str, jax.Array], rng: jax.Array, *, residual: jax.Array | float = 0.0,
                 observation: Observation | None = None, **sample_kwargs) -> jax.Array:
    """A stage's output for the clean conditioning video ``low_res``: noised once to
    ``sampler_cfg.noise_aug_logsnr``, then ``sample_fn(denoiser, cond=..., rng=..., sampler_cfg=...,
    **sample_kwargs)`` (``vdm_jax.diffusion.sample``) plus ``residual``: what a residual stage's
    variable is measured from (``vdm_jax.models.stage.residual_base``; 0 for any other stage).
    ``observation``: how the output measures to ``low_res`` (``conditioning.stage_observation``),
    used when ``sampler_cfg.stage_consistency`` (required then)."""
    aug_rng, rng = jax.random.split(rng)
    inputs = {**text, **augmented_inputs(low_res, sampler_cfg.noise_aug_logsnr, aug_rng)}
    if sampler_cfg.stage_consistency:
        if observation is None:
            raise ValueError("sampling.stage_consistency needs the stage's observation of its input")
        bounds = (-1.0, 1.0) if sampler_cfg.clip_x0 else None  # the video's range, not the residual's
        sample_kwargs["project_x0"] = lambda x: observation.project(x + residual, bounds) - residual
    out = sample_fn(denoiser, rng=rng, sampler_cfg=sampler_cfg, cond=inputs, **sample_kwargs)
    return out + residual
