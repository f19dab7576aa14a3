"""PSNR and SSIM on frames, jitted.

Inputs are frames (..., H, W, C), uint8 in [0, 255] or float in [-1, 1]; both are mapped to [0, 1]
(data range 1).  SSIM follows Wang et al. 2004 as in ``tf.image.ssim``: an 11x11 Gaussian window with
sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering, per channel, averaged over the map and channels.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.video_io import to_unit


def to_zero_one(x: np.ndarray | jax.Array) -> jax.Array:
    """[0, 1] (data range 1) from uint8 or [-1, 1] float frames."""
    return (jnp.clip(to_unit(x), -1.0, 1.0) + 1.0) / 2.0


def _check(a, b) -> None:
    if a.shape != b.shape or a.ndim < 3:
        raise ValueError(f"frames must have equal shapes (..., H, W, C), got {a.shape} and {b.shape}")


@jax.jit
def _psnr(a: jax.Array, b: jax.Array) -> jax.Array:
    mse = jnp.mean((to_zero_one(a) - to_zero_one(b)) ** 2, axis=(-3, -2, -1))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def psnr(a, b) -> jax.Array:
    """PSNR in dB per frame (shape ``a.shape[:-3]``); identical frames give 100 dB (mse floored at 1e-10)."""
    _check(a, b)
    return _psnr(jnp.asarray(a), jnp.asarray(b))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _filter(x: jax.Array, g: jax.Array) -> jax.Array:
    """Separable 'valid' Gaussian filter of (N, H, W, C) per channel."""
    c = x.shape[-1]
    k = len(g)
    kh = jnp.tile(g.reshape(k, 1, 1, 1), (1, 1, 1, c))
    kw = jnp.tile(g.reshape(1, k, 1, 1), (1, 1, 1, c))
    dn = ("NHWC", "HWIO", "NHWC")
    x = jax.lax.conv_general_dilated(x, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)
    return jax.lax.conv_general_dilated(x, kw, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)


@functools.partial(jax.jit, static_argnames=("size", "sigma"))
def _ssim(a: jax.Array, b: jax.Array, size: int, sigma: float) -> jax.Array:
    lead = a.shape[:-3]
    x = to_zero_one(a).reshape((-1, *a.shape[-3:]))
    y = to_zero_one(b).reshape((-1, *b.shape[-3:]))
    g = jnp.asarray(gaussian_window(size, sigma))
    c1, c2 = 0.01**2, 0.03**2
    mx, my = _filter(x, g), _filter(y, g)
    sxx = _filter(x * x, g) - mx**2
    syy = _filter(y * y, g) - my**2
    sxy = _filter(x * y, g) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return jnp.mean(ssim_map, axis=(-3, -2, -1)).reshape(lead)


def ssim(a, b, window: int = 11, sigma: float = 1.5) -> jax.Array:
    """SSIM per frame (shape ``a.shape[:-3]``), in [-1, 1]; 1 for identical frames."""
    _check(a, b)
    if min(a.shape[-3:-1]) < window:
        raise ValueError(f"frames of size {a.shape[-3:-1]} are smaller than the SSIM window {window}")
    return _ssim(jnp.asarray(a), jnp.asarray(b), window, sigma)


def prediction_metrics(generated, target, context_frames: int, lpips_fn=None) -> dict[str, float]:
    """PSNR/SSIM (and LPIPS when ``lpips_fn`` is given) on the generated frames of a prediction task.

    ``generated`` and ``target`` are clips (B, T, H, W, 3); the first ``context_frames`` frames were
    given to the model and are excluded.  Returns means over clips and generated frames.
    """
    generated, target = np.asarray(generated), np.asarray(target)
    if generated.shape != target.shape or generated.ndim != 5:
        raise ValueError(f"generated and target must be equal (B, T, H, W, 3), got {generated.shape}, "
                         f"{target.shape}")
    if not 0 <= context_frames < generated.shape[1]:
        raise ValueError(f"context_frames must be in [0, {generated.shape[1]}), got {context_frames}")
    g, t = generated[:, context_frames:], target[:, context_frames:]
    out = {"psnr": float(jnp.mean(psnr(g, t))), "ssim": float(jnp.mean(ssim(g, t)))}
    if lpips_fn is not None:
        out["lpips"] = float(jnp.mean(lpips_fn(g, t)))
    return out
