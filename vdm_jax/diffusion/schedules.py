"""Noise schedules in log-SNR.

Conventions (continuous time, Kingma et al. 2021 / Ho et al. 2022):
  t in [0, 1], t = 0 is clean data (logsnr = logsnr_max), t = 1 is noise (logsnr = logsnr_min).
  alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr)  (variance preserving: alpha^2 + sigma^2 = 1),
  z_t = alpha_t x + sigma_t eps.

Schedules (all strictly decreasing in t, exact at both endpoints, with an exact inverse):
  cosine:          logsnr(t) = -2 log tan(a + t (b - a)),  a = atan(exp(-max/2)), b = atan(exp(-min/2)),
                   i.e. the cosine schedule -2 log tan(pi t / 2) with t rescaled so that it is clipped to
                   [logsnr_min, logsnr_max] smoothly (no flat segments).
  shifted_cosine:  cosine with the shift 2 log(shift_base_resolution / resolution) added (Hoogeboom
                   et al. 2023: a resolution-derived shift; see :func:`resolution_shift`).
  linear:          logsnr(t) = logsnr_max + t (logsnr_min - logsnr_max)  (linear in log-SNR, VDM's
                   "linear gamma").

Log-SNR shift (``diffusion.logsnr_shift``, in log-SNR units; NEGATIVE = MORE NOISE): every schedule
becomes logsnr(t) = base'(t) + shift, where base' is the base schedule built on the endpoints
shifted by -shift, so logsnr still spans exactly [logsnr_min, logsnr_max]. For cosine this moves
the whole interior by `shift` (Chen 2023; Open-Sora's time shift by sqrt(T) is a shift of -log T);
the linear schedule is uniform in log-SNR, so a shift leaves it unchanged by construction.
The total shift (``logsnr_shift`` + the shifted_cosine resolution term) is used by the training
loss, evaluation and every sampler, since all of them draw their log-SNRs from this object.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from vdm_jax.config import DiffusionConfig, ScheduleKind


def resolution_shift(base_resolution: int, resolution: int) -> float:
    """The log-SNR shift 2 log(base / resolution) that gives a ``resolution`` model the noise of a
    ``base_resolution`` model (simple diffusion); negative (more noise) when resolution > base."""
    return 2.0 * math.log(base_resolution / resolution)


def alpha_sigma(logsnr: jax.Array) -> tuple[jax.Array, jax.Array]:
    """alpha = sqrt(sigmoid(logsnr)), sigma = sqrt(sigmoid(-logsnr)), computed stably."""
    logsnr = jnp.asarray(logsnr, jnp.float32)
    return jnp.exp(0.5 * jax.nn.log_sigmoid(logsnr)), jnp.exp(0.5 * jax.nn.log_sigmoid(-logsnr))


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A log-SNR schedule. Hashable (safe to close over in jit); methods are jittable."""

    kind: ScheduleKind
    logsnr_min: float
    logsnr_max: float
    shift: float = 0.0  # total log-SNR shift (negative = more noise)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig, resolution: int) -> Schedule:
        if resolution < 1:
            raise ValueError(f"Schedule: resolution must be >= 1, got {resolution}")
        kind = cfg.schedule
        shift = float(cfg.logsnr_shift)
        if kind is ScheduleKind.SHIFTED_COSINE:
            shift += resolution_shift(cfg.shift_base_resolution, resolution)
        return cls(kind, float(cfg.logsnr_min), float(cfg.logsnr_max), shift)

    def _cos_range(self) -> tuple[float, float]:
        lo, hi = self.logsnr_min - self.shift, self.logsnr_max - self.shift
        return math.atan(math.exp(-0.5 * hi)), math.atan(math.exp(-0.5 * lo))

    def logsnr(self, t: jax.Array) -> jax.Array:
        """log-SNR at time t in [0, 1] (decreasing)."""
        t = jnp.asarray(t, jnp.float32)
        if self.kind is ScheduleKind.LINEAR:
            return self.logsnr_max + t * (self.logsnr_min - self.logsnr_max)
        a, b = self._cos_range()
        return -2.0 * jnp.log(jnp.tan(a + t * (b - a))) + self.shift

    def t_of_logsnr(self, logsnr: jax.Array) -> jax.Array:
        """Inverse of :meth:`logsnr`."""
        logsnr = jnp.asarray(logsnr, jnp.float32)
        if self.kind is ScheduleKind.LINEAR:
            return (logsnr - self.logsnr_max) / (self.logsnr_min - self.logsnr_max)
        a, b = self._cos_range()
        return (jnp.arctan(jnp.exp(-0.5 * (logsnr - self.shift))) - a) / (b - a)

    def alpha_sigma(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        return alpha_sigma(self.logsnr(t))
