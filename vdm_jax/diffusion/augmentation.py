"""Noise-conditioning augmentation of a cascade stage's conditioning video (Imagen Video).

The lower stage's video is corrupted with the forward process before the stage sees it:
``aug(y) = alpha(l) y + sigma(l) noise`` at an augmentation log-SNR ``l``, drawn uniformly from
``[lo, hi]`` per example in training and fixed at sampling. The stage is told ``l``, so at sampling a
moderate level makes it robust to the lower stage's artifacts without losing the content.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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
