"""Forward process and exact conversions between the eps, v and x0 parameterizations.

z = alpha x + sigma eps,  v = alpha eps - sigma x  (Salimans & Ho 2022), alpha^2 + sigma^2 = 1, so
  x   = alpha z - sigma v        = (z - sigma eps) / alpha
  eps = sigma z + alpha v        = (z - alpha x) / sigma
  v   = alpha eps - sigma x.
Each conversion uses the division-free formula where one exists. `logsnr` has shape (B,) (or is a
scalar) and is broadcast over the non-batch dims of z.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vdm_jax.config import Target
from vdm_jax.diffusion.schedules import alpha_sigma


def bcast(a: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape a per-example (B,) (or scalar) array so it broadcasts against x (B, ...)."""
    a = jnp.asarray(a, jnp.float32)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def _ab(logsnr: jax.Array, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    a, s = alpha_sigma(logsnr)
    return bcast(a, z), bcast(s, z)


def q_sample(x: jax.Array, logsnr: jax.Array, noise: jax.Array) -> jax.Array:
    """z = alpha x + sigma eps."""
    a, s = _ab(logsnr, x)
    return a * x + s * noise


def v_target(x: jax.Array, noise: jax.Array, logsnr: jax.Array) -> jax.Array:
    a, s = _ab(logsnr, x)
    return a * noise - s * x


def to_x0_eps(pred: jax.Array, z: jax.Array, logsnr: jax.Array,
              target: Target) -> tuple[jax.Array, jax.Array]:
    """(x0, eps) implied by a prediction in parameterization `target` at (z, logsnr)."""
    a, s = _ab(logsnr, z)
    target = Target(target)
    if target is Target.EPS:
        return (z - s * pred) / a, pred
    if target is Target.V:
        return a * z - s * pred, s * z + a * pred
    if target is Target.X0:
        return pred, (z - a * pred) / s
    raise ValueError(f"unknown target {target!r}; allowed: {[t.value for t in Target]}")


def convert(pred: jax.Array, z: jax.Array, logsnr: jax.Array, source: Target, dest: Target) -> jax.Array:
    """Convert a prediction between parameterizations (exact, given z and logsnr)."""
    source, dest = Target(source), Target(dest)
    if source is dest:
        return pred
    a, s = _ab(logsnr, z)
    if source is Target.V and dest is Target.X0:
        return a * z - s * pred
    if source is Target.V and dest is Target.EPS:
        return s * z + a * pred
    x0, eps = to_x0_eps(pred, z, logsnr, source)
    if dest is Target.X0:
        return x0
    if dest is Target.EPS:
        return eps
    return a * eps - s * x0
