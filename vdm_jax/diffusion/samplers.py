"""Samplers: ancestral (VDM), DDIM(eta), DPM-Solver++(2M), Langevin predictor-corrector.

Each sampler is ONE `lax.scan` over `steps` steps (call it under `jax.jit`; everything per step
stays on device, randomness is `fold_in(rng, step)`, so a seed gives the same samples).

Grid: t_i = 1 - i/N, lam_i = logsnr(t_i), i = 0..N.  Step i goes from lam_t = lam_i (noisier) to
lam_s = lam_{i+1}.  z starts at N(0, I) (t = 1).  The last step (to t = 0) returns the denoised x0
estimate of the last model call (first order, no noise: "lower order final").
With c = -expm1(lam_t - lam_s) = 1 - SNR_t/SNR_s:
  ancestral:  z_s = (alpha_s/alpha_t) e^{lam_t - lam_s} z_t + alpha_s c x0  +  std * noise,
              std^2 = c * exp(gamma log sigma_t^2 + (1 - gamma) log sigma_s^2)
              (gamma = 0: posterior variance c sigma_s^2; gamma = 1: forward variance c sigma_t^2).
  DDIM:       z_s = alpha_s x0 + sqrt(sigma_s^2 - sd^2) eps + sd * noise,  sd^2 = eta^2 c sigma_s^2.
  DPM-Solver++(2M) (Lu et al. 2022, data prediction, h = (lam_s - lam_t)/2 in half-log-SNR):
              z_s = (sigma_s/sigma_t) z_t - alpha_s expm1(-h) D,  D = x0 on the first step, else
              D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev with r = h_prev / h.
  Langevin PC (VDM): ancestral predictor, then `langevin_steps` corrector steps at lam_s:
              z <- z - (delta/2) sigma_s eps(z) + sqrt(delta) sigma_s noise  (skipped on the last step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vdm_jax.config import DiffusionConfig, SamplerConfig, SamplerKind
from vdm_jax.diffusion.guidance import Denoised, SamplerDenoiseFn, make_x0_eps_fn, postprocess, replace_x0
from vdm_jax.diffusion.schedules import Schedule, alpha_sigma

Predictor = Callable[[jax.Array, jax.Array, jax.Array], Denoised]  # (z, logsnr (B,), key) -> Denoised
Prepare = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (z, logsnr (B,), key) -> z


def logsnr_grid(schedule: Schedule, steps: int, grid_shift: float = 0.0) -> jax.Array:
    """(steps + 1,) log-SNRs from t = 1 (noise) to t = 0 (data), uniform in t of ``schedule``
    shifted by a further ``grid_shift`` (``sampling.grid_shift``; the endpoints stay)."""
    if grid_shift:
        schedule = dataclasses.replace(schedule, shift=schedule.shift + float(grid_shift))
    return schedule.logsnr(jnp.linspace(1.0, 0.0, steps + 1))


def _coefs(lam_t, lam_s):
    a_t, s_t = alpha_sigma(lam_t)
    a_s, s_s = alpha_sigma(lam_s)
    c = -jnp.expm1(lam_t - lam_s)
    return a_t, s_t, a_s, s_s, c


def ancestral_update(z, d: Denoised, lam_t, lam_s, gamma: float, noise):
    a_t, s_t, a_s, s_s, c = _coefs(lam_t, lam_s)
    # (alpha_s / alpha_t) * exp(lam_t - lam_s), in log space for stability at very low SNR.
    coef_z = jnp.exp(lam_t - lam_s + 0.5 * (jax.nn.log_sigmoid(lam_s) - jax.nn.log_sigmoid(lam_t)))
    log_var = jnp.log(c) + gamma * jnp.log(s_t**2) + (1.0 - gamma) * jnp.log(s_s**2)
    return coef_z * z + a_s * c * d.x0 + jnp.exp(0.5 * log_var) * noise


def ddim_update(z, d: Denoised, lam_t, lam_s, eta: float, noise):
    del z
    _, _, a_s, s_s, c = _coefs(lam_t, lam_s)
    var = (eta**2) * c * s_s**2
    out = a_s * d.x0 + jnp.sqrt(jnp.maximum(s_s**2 - var, 0.0)) * d.eps
    return out if noise is None else out + jnp.sqrt(var) * noise


def dpm_pp_2m_update(z, d: Denoised, lam_t, lam_s, x0_prev, h_prev, first):
    _, s_t, a_s, s_s, _ = _coefs(lam_t, lam_s)
    h = 0.5 * (lam_s - lam_t)
    half_inv_r = 0.5 * h / jnp.where(first, 1.0, h_prev)
    big_d = jnp.where(first, d.x0, (1.0 + half_inv_r) * d.x0 - half_inv_r * x0_prev)
    return (s_s / s_t) * z - a_s * jnp.expm1(-h) * big_d, h


def _langevin(predict: Predictor, prepare: Prepare, z, lam_s, key, cfg: SamplerConfig):
    _, s_s = alpha_sigma(lam_s[0])
    for j in range(cfg.langevin_steps):
        kp, kd, kn = jax.random.split(jax.random.fold_in(key, j), 3)
        z = prepare(z, lam_s, kp)
        eps = predict(z, lam_s, kd).eps
        noise = jax.random.normal(kn, z.shape, z.dtype)
        z = z - 0.5 * cfg.langevin_delta * s_s * eps + jnp.sqrt(cfg.langevin_delta) * s_s * noise
    return z


def run_sampler(predict: Predictor, *, z_init: jax.Array, rng: jax.Array, schedule: Schedule,
                sampler_cfg: SamplerConfig, prepare: Prepare | None = None) -> jax.Array:
    """The sampling loop (one lax.scan). Returns the x0 estimate of the last step."""
    kind = sampler_cfg.name
    prepare = prepare or (lambda z, lam, key: z)
    steps, batch = sampler_cfg.steps, z_init.shape[0]
    grid = logsnr_grid(schedule, steps, sampler_cfg.grid_shift)
    noisy = kind in (SamplerKind.ANCESTRAL, SamplerKind.LANGEVIN_PC) or (
        kind is SamplerKind.DDIM and sampler_cfg.ddim_eta > 0)
    z_init = z_init.astype(jnp.float32)

    def body(carry, i):
        z, x0_prev, h_prev = carry
        lam_t, lam_s = grid[i], grid[i + 1]
        lam_vec = jnp.full((batch,), lam_t)
        k_prep, k_pred, k_noise, k_corr = jax.random.split(jax.random.fold_in(rng, i), 4)
        z = prepare(z, lam_vec, k_prep)
        d = predict(z, lam_vec, k_pred)
        noise = jax.random.normal(k_noise, z.shape, z.dtype) if noisy else None
        h = h_prev
        if kind is SamplerKind.DDIM:
            z_next = ddim_update(z, d, lam_t, lam_s, sampler_cfg.ddim_eta, noise)
        elif kind is SamplerKind.DPM_SOLVER_PP:
            z_next, h = dpm_pp_2m_update(z, d, lam_t, lam_s, x0_prev, h_prev, i == 0)
        else:
            z_next = ancestral_update(z, d, lam_t, lam_s, sampler_cfg.ancestral_gamma, noise)
        if kind is SamplerKind.LANGEVIN_PC and sampler_cfg.langevin_steps > 0:
            lam_s_vec = jnp.full((batch,), lam_s)
            z_next = jax.lax.cond(
                i < steps - 1,
                lambda zz: _langevin(predict, prepare, zz, lam_s_vec, k_corr, sampler_cfg),
                lambda zz: zz, z_next)
        return (z_next, d.x0, h), None

    init = (z_init, jnp.zeros_like(z_init), jnp.ones((), jnp.float32))
    (_, x0, _), _ = jax.lax.scan(body, init, jnp.arange(steps))
    return x0


def init_noise(rng: jax.Array, shape: tuple[int, ...], x_init: jax.Array | None) -> jax.Array:
    if x_init is None:
        return jax.random.normal(rng, shape, jnp.float32)
    if tuple(x_init.shape) != tuple(shape):
        raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected shape {tuple(shape)}")
    return x_init.astype(jnp.float32)


def sample(denoise_fn: SamplerDenoiseFn, *, shape: tuple[int, ...], rng: jax.Array, schedule: Schedule,
           diffusion_cfg: DiffusionConfig, sampler_cfg: SamplerConfig, cond: Any = None,
           x_init: jax.Array | None = None, force_cfg: bool = False,
           project_x0: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    """Draw x0 samples of `shape` with `denoise_fn(z, logsnr, cond, drop_cond) -> prediction`.

    `cond`: pytree with leading batch dim (None: unconditional; guidance is then ignored).
    `x_init`: the starting noise z at t = 1 (default N(0, I) from `rng`).
    `force_cfg`: use the batched 2B CFG forward even when guidance_weight == 0.
    `project_x0`: applied to every denoised estimate after clipping (eps kept consistent with z),
    e.g. the projection onto the videos consistent with a cascade stage's input.
    Call under jax.jit (shape, configs and schedule are static) for one compiled program.
    """
    if len(shape) < 1 or shape[0] < 1:
        raise ValueError(f"shape must start with a batch dim >= 1, got {shape}")
    init_rng, loop_rng = jax.random.split(rng)
    z_init = init_noise(init_rng, shape, x_init)
    x0_eps = make_x0_eps_fn(denoise_fn, diffusion_cfg.target, sampler_cfg, cond, force_cfg=force_cfg)

    def predict(z, lam, key):
        del key
        d = postprocess(*x0_eps(z, lam), z, lam, sampler_cfg)
        return d if project_x0 is None else replace_x0(d, project_x0(d.x0), z, lam)

    return run_sampler(predict, z_init=z_init, rng=loop_rng, schedule=schedule, sampler_cfg=sampler_cfg)
