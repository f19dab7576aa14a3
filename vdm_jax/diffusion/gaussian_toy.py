"""Gaussian data with an exact denoiser: the analytic reference the samplers are tested against.

x ~ N(mu, Sigma) over the flattened per-example vector; with z = alpha x + sigma eps,
  E[x | z]   = mu + alpha Sigma (alpha^2 Sigma + sigma^2 I)^{-1} (z - alpha mu),
  E[eps | z] = sigma (alpha^2 Sigma + sigma^2 I)^{-1} (z - alpha mu),
computed in Sigma's eigenbasis.  The probability-flow ODE maps the noise z_1 to
  x = mu + Sigma^{1/2} (alpha_1^2 Sigma + sigma_1^2 I)^{-1/2} (z_1 - alpha_1 mu).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax.config import Target
from vdm_jax.diffusion.schedules import alpha_sigma


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianToy:
    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D)
    shape: tuple[int, ...]  # per-example shape, prod = D

    @classmethod
    def diagonal(cls, mean, std, shape=None) -> GaussianToy:
        mean, std = np.asarray(mean, np.float64).ravel(), np.asarray(std, np.float64).ravel()
        return cls(mean, np.diag(std**2), tuple(shape or mean.shape))

    @classmethod
    def correlated_frames(cls, frames: int, frame_shape: tuple[int, ...], rho: float, std: float = 0.5,
                          mean: float = 0.0) -> GaussianToy:
        """AR(1) over frames (corr rho^|i-j|), independent pixels; video shape (T, *frame_shape)."""
        idx = np.arange(frames)
        cov_t = std**2 * rho ** np.abs(idx[:, None] - idx[None, :])
        d = int(np.prod(frame_shape))
        cov = np.kron(cov_t, np.eye(d))
        return cls(np.full(frames * d, mean), cov, (frames, *frame_shape))

    @property
    def dim(self) -> int:
        return self.mean.size

    def _eig(self):
        lam, u = np.linalg.eigh(self.cov)
        return jnp.asarray(np.maximum(lam, 0.0), jnp.float32), jnp.asarray(u, jnp.float32)

    def sample(self, rng: jax.Array, batch: int) -> jax.Array:
        lam, u = self._eig()
        g = jax.random.normal(rng, (batch, self.dim))
        x = jnp.asarray(self.mean, jnp.float32) + (g * jnp.sqrt(lam)) @ u.T
        return x.reshape((batch, *self.shape))

    def x0_eps(self, z: jax.Array, logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
        lam, u = self._eig()
        a, s = alpha_sigma(logsnr)
        a, s = a[:, None], s[:, None]
        zf = z.reshape(z.shape[0], -1) - a * jnp.asarray(self.mean, jnp.float32)
        proj = zf @ u
        denom = a**2 * lam + s**2
        x = jnp.asarray(self.mean, jnp.float32) + (proj * (a * lam / denom)) @ u.T
        eps = (proj * (s / denom)) @ u.T
        return x.reshape(z.shape), eps.reshape(z.shape)

    def denoise(self, z: jax.Array, logsnr: jax.Array, target: Target) -> jax.Array:
        x, eps = self.x0_eps(z, logsnr)
        target = Target(target)
        if target is Target.EPS:
            return eps
        if target is Target.X0:
            return x
        a, s = alpha_sigma(logsnr)
        return a.reshape((-1,) + (1,) * (z.ndim - 1)) * eps - s.reshape((-1,) + (1,) * (z.ndim - 1)) * x

    def ode_map(self, z1: jax.Array, logsnr1: float) -> jax.Array:
        """Exact probability-flow ODE solution from noise z_1 (at logsnr1) to data."""
        lam, u = self._eig()
        a, s = alpha_sigma(jnp.float32(logsnr1))
        proj = (z1.reshape(z1.shape[0], -1) - a * jnp.asarray(self.mean, jnp.float32)) @ u
        x = jnp.asarray(self.mean, jnp.float32) + (proj * jnp.sqrt(lam / (a**2 * lam + s**2))) @ u.T
        return x.reshape(z1.shape)
