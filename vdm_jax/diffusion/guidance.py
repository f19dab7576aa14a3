"""Classifier-free guidance and x0 post-processing (clipping, dynamic thresholding).

Guidance convention (VDM, Ho et al. 2022): eps~ = (1 + w) eps(z, c) - w eps(z), so w = 0 is the
conditional model and w = -1 the unconditional one.  The conditional and unconditional predictions
come from ONE forward of batch 2B: inputs [z, z], cond [c, c], drop_cond [False]*B + [True]*B.
The combination is done on the raw prediction; since eps, v and x0 are affine functions of the
prediction with coefficients that depend only on (z, logsnr), this is exactly the eps-space rule
for every target, while each conversion keeps its numerically stable form.

Negative prompts: when ``cond`` is a dict with the key ``negative`` (the same text inputs for a
negative prompt, one row per example), the unconditional half of the batch gets the negative
prompt's inputs instead of the learned null text (drop_cond all False); otherwise the
unconditional half is the null text (drop_cond True).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vdm_jax.config import SamplerConfig, Target
from vdm_jax.diffusion.parameterization import bcast, to_x0_eps
from vdm_jax.diffusion.schedules import alpha_sigma

SamplerDenoiseFn = Callable[[jax.Array, jax.Array, Any, jax.Array], jax.Array]
X0EpsFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


class Denoised(NamedTuple):
    x0: jax.Array
    eps: jax.Array


NEGATIVE_KEY = "negative"


def _tile(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a], axis=0), tree)


def split_negative(cond: Any) -> tuple[Any, Any]:
    """(cond without the negative prompt, the negative prompt's inputs or None)."""
    if isinstance(cond, dict) and NEGATIVE_KEY in cond:
        return {k: v for k, v in cond.items() if k != NEGATIVE_KEY}, cond[NEGATIVE_KEY]
    return cond, None


def guided_prediction(denoise_fn: SamplerDenoiseFn, z: jax.Array, logsnr: jax.Array, cond: Any,
                      guidance_weight: float, *, use_cfg: bool) -> jax.Array:
    """Raw prediction (in the model's target) with CFG, one batched forward when `use_cfg`."""
    batch = z.shape[0]
    cond, negative = split_negative(cond)
    if not use_cfg:
        return denoise_fn(z, logsnr, cond, jnp.zeros((batch,), bool))
    if negative is None:
        drop = jnp.concatenate([jnp.zeros((batch,), bool), jnp.ones((batch,), bool)])
        both_cond = _tile(cond)
    else:
        drop = jnp.zeros((2 * batch,), bool)
        if isinstance(cond, dict) and isinstance(negative, dict):  # inputs the prompt lacks (a stage's
            negative = {**cond, **negative}                          # video) are the conditional half's
        both_cond = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=0), cond, negative)
    both = denoise_fn(jnp.concatenate([z, z], 0), jnp.concatenate([logsnr, logsnr], 0), both_cond, drop)
    pred_c, pred_u = both[:batch], both[batch:]
    w = guidance_weight
    return (1.0 + w) * pred_c - w * pred_u


def make_x0_eps_fn(denoise_fn: SamplerDenoiseFn, target: Target, sampler_cfg: SamplerConfig, cond: Any,
                   *, force_cfg: bool = False) -> X0EpsFn:
    """(z, logsnr (B,)) -> (x0, eps), guided, before any clipping.

    CFG is used when `cond` is given and the guidance weight is non-zero (or `force_cfg`).
    """
    use_cfg = cond is not None and (sampler_cfg.guidance_weight != 0.0 or force_cfg)

    def fn(z: jax.Array, logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
        pred = guided_prediction(denoise_fn, z, logsnr, cond, sampler_cfg.guidance_weight, use_cfg=use_cfg)
        return to_x0_eps(pred.astype(jnp.float32), z, logsnr, target)

    return fn


def dynamic_threshold(x0: jax.Array, percentile: float) -> jax.Array:
    """Imagen: s = max(1, quantile_p |x0| per example); x0 <- clip(x0, -s, s) / s."""
    flat = jnp.abs(x0.reshape(x0.shape[0], -1))
    s = jnp.maximum(jnp.quantile(flat, percentile, axis=1), 1.0)
    s = bcast(s, x0)
    return jnp.clip(x0, -s, s) / s


def replace_x0(d: Denoised, new_x0: jax.Array, z: jax.Array, logsnr: jax.Array) -> Denoised:
    """``d`` with its x0 replaced and eps made consistent with z = alpha x0 + sigma eps."""
    a, s = alpha_sigma(logsnr)
    return Denoised(new_x0, d.eps + bcast(a / s, z) * (d.x0 - new_x0))


def postprocess(x0: jax.Array, eps: jax.Array, z: jax.Array, logsnr: jax.Array,
                sampler_cfg: SamplerConfig) -> Denoised:
    """Apply dynamic thresholding / clipping to x0 and make eps consistent with z = alpha x0 + sigma eps."""
    if sampler_cfg.dynamic_threshold <= 0.0 and not sampler_cfg.clip_x0:
        return Denoised(x0, eps)
    new = x0
    if sampler_cfg.dynamic_threshold > 0.0:
        new = dynamic_threshold(new, sampler_cfg.dynamic_threshold)
    if sampler_cfg.clip_x0:
        new = jnp.clip(new, -1.0, 1.0)
    a, s = alpha_sigma(logsnr)
    eps = eps + bcast(a / s, z) * (x0 - new)  # exact when nothing was clipped
    return Denoised(new, eps)
