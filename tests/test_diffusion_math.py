"""Schedules, parameterizations and the loss, checked against closed-form mathematics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.config import DiffusionConfig, ScheduleKind, Target
from vdm_jax.diffusion import (
    Schedule,
    alpha_sigma,
    convert,
    diffusion_loss,
    q_sample,
    sample_times,
    to_x0_eps,
)
from vdm_jax.diffusion.gaussian_toy import GaussianToy

KINDS = [k.value for k in ScheduleKind]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_schedule_endpoints_monotone_and_inverse(kind, resolution):
    cfg = DiffusionConfig(schedule=kind, logsnr_min=-15.0, logsnr_max=12.0)
    sch = Schedule.from_config(cfg, resolution)
    np.testing.assert_allclose(float(sch.logsnr(0.0)), 12.0, atol=2e-3)
    np.testing.assert_allclose(float(sch.logsnr(1.0)), -15.0, atol=2e-3)
    t = jnp.linspace(0.0, 1.0, 1001)
    lam = np.asarray(sch.logsnr(t))
    assert np.all(np.diff(lam) < 0), "log-SNR must strictly decrease in t"
    assert lam.min() >= -15.0 - 2e-3 and lam.max() <= 12.0 + 2e-3
    np.testing.assert_allclose(np.asarray(sch.t_of_logsnr(lam)), np.asarray(t), atol=2e-4)
    a, s = sch.alpha_sigma(t)
    np.testing.assert_allclose(np.asarray(a**2 + s**2), 1.0, atol=1e-6)


def test_cosine_matches_textbook_formula_and_shift():
    cos = Schedule.from_config(DiffusionConfig(), 64)
    t = jnp.linspace(0.1, 0.9, 9)
    np.testing.assert_allclose(np.asarray(cos.logsnr(t)), -2 * np.log(np.tan(np.pi * np.asarray(t) / 2)),
                               atol=1e-3)
    shifted = Schedule.from_config(DiffusionConfig(schedule="shifted_cosine", shift_base_resolution=64), 256)
    # interior: cosine + 2 log(64/256)
    np.testing.assert_allclose(np.asarray(shifted.logsnr(t) - cos.logsnr(t)), 2 * math.log(64 / 256),
                               atol=2e-3)
    same = Schedule.from_config(DiffusionConfig(schedule="shifted_cosine"), 64)
    np.testing.assert_allclose(np.asarray(same.logsnr(t)), np.asarray(cos.logsnr(t)), atol=1e-6)
    lin = Schedule.from_config(DiffusionConfig(schedule="linear"), 64)
    np.testing.assert_allclose(float(lin.logsnr(0.25)), 20 - 0.25 * 40, atol=1e-5)


def test_alpha_sigma_extremes_are_finite():
    a, s = alpha_sigma(jnp.array([-40.0, -20.0, 0.0, 20.0, 40.0]))
    assert np.all(np.isfinite(np.asarray(a))) and np.all(np.isfinite(np.asarray(s)))
    np.testing.assert_allclose(float(a[2]), math.sqrt(0.5), rtol=1e-6)
    np.testing.assert_allclose(float(s[3]), math.sqrt(1 / (1 + math.exp(20))), rtol=1e-4)
    np.testing.assert_allclose(float(a[1]), math.sqrt(1 / (1 + math.exp(20))), rtol=1e-4)


@pytest.mark.parametrize("source", ["eps", "v", "x0"])
@pytest.mark.parametrize("dest", ["eps", "v", "x0"])
def test_conversions_round_trip_and_are_exact(source, dest):
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (6, 3, 4))
    eps = jax.random.normal(k2, (6, 3, 4))
    logsnr = jnp.array([-6.0, -2.0, 0.0, 1.5, 4.0, 7.0])
    z = q_sample(x, logsnr, eps)
    a, s = alpha_sigma(logsnr)
    v = a[:, None, None] * eps - s[:, None, None] * x
    truth = {"eps": eps, "v": v, "x0": x}
    out = convert(truth[source], z, logsnr, source, dest)
    np.testing.assert_allclose(np.asarray(out), np.asarray(truth[dest]), atol=2e-3)
    back = convert(out, z, logsnr, dest, source)
    np.testing.assert_allclose(np.asarray(back), np.asarray(truth[source]), atol=2e-3)
    x_hat, eps_hat = to_x0_eps(truth[source], z, logsnr, Target(source))
    np.testing.assert_allclose(np.asarray(x_hat), np.asarray(x), atol=2e-3)
    np.testing.assert_allclose(np.asarray(eps_hat), np.asarray(eps), atol=2e-3)


def test_low_discrepancy_times_are_stratified():
    t = np.sort(np.asarray(sample_times(jax.random.key(3), 64, "low_discrepancy")))
    assert np.all((t >= 0) & (t < 1))
    np.testing.assert_allclose(np.diff(t), 1 / 64, atol=1e-5)  # one point per stratum
    u = np.asarray(sample_times(jax.random.key(3), 64, "uniform"))
    assert np.all((u >= 0) & (u < 1)) and np.std(np.diff(np.sort(u))) > 1e-3


def _analytic_mse(target: str, logsnr: float, std: np.ndarray) -> float:
    """E over data and noise of the per-dim MSE of the exact denoiser, averaged over dims."""
    a2, s2 = 1 / (1 + math.exp(-logsnr)), 1 / (1 + math.exp(logsnr))
    var = std**2
    denom = a2 * var + s2
    per_dim = {"eps": a2 * var / denom, "v": var / denom, "x0": var * s2 / denom}[target]
    return float(np.mean(per_dim))


@pytest.mark.parametrize("target", ["eps", "v", "x0"])
@pytest.mark.parametrize("weighting", ["none", "min_snr"])
def test_loss_equals_analytic_expectation_at_fixed_logsnr(target, weighting):
    toy = GaussianToy.diagonal([0.2, -0.4, 0.0, 0.1], [0.3, 0.6, 1.0, 0.8])
    cfg = DiffusionConfig(target=target, loss_weighting=weighting, min_snr_gamma=5.0)
    sch = Schedule.from_config(cfg, 64)
    x0 = toy.sample(jax.random.key(1), 40000)
    fn = jax.jit(lambda lam, key: diffusion_loss(lambda z, ls: toy.denoise(z, ls, target), x0, key, cfg, sch,
                                                 logsnr=lam))
    for lam in (-3.0, 0.0, 3.0):
        out = fn(lam, jax.random.key(2))
        snr = math.exp(lam)
        weight = 1.0 if weighting == "none" else {
            "eps": min(snr, 5.0) / snr, "v": min(snr, 5.0) / (snr + 1), "x0": min(snr, 5.0)}[target]
        expected = weight * _analytic_mse(target, lam, np.sqrt(np.diag(toy.cov)))
        se = float(jnp.std(out.per_example)) / math.sqrt(x0.shape[0])
        assert out.per_example.shape == (x0.shape[0],)
        np.testing.assert_allclose(np.asarray(out.logsnr), lam)
        assert abs(float(out.loss) - expected) < 4 * se + 1e-6, (lam, float(out.loss), expected, se)


def test_training_loss_matches_integral_over_time():
    """Random (low-discrepancy) times: the loss estimates E_t[analytic MSE(logsnr(t))]."""
    toy = GaussianToy.diagonal([0.0, 0.5], [0.5, 0.9])
    cfg = DiffusionConfig(target="v")
    sch = Schedule.from_config(cfg, 64)
    x0 = toy.sample(jax.random.key(4), 32768)
    out = jax.jit(lambda key: diffusion_loss(lambda z, ls: toy.denoise(z, ls, "v"), x0, key, cfg, sch))(
        jax.random.key(5))
    ts = (np.arange(20000) + 0.5) / 20000
    expected = np.mean([_analytic_mse("v", float(sch.logsnr(t)), np.array([0.5, 0.9])) for t in ts[::50]])
    se = float(jnp.std(out.per_example)) / math.sqrt(x0.shape[0])
    assert abs(float(out.loss) - expected) < 4 * se + 2e-3, (float(out.loss), expected)


def test_frame_weights_mask_frames():
    cfg = DiffusionConfig(target="x0")
    sch = Schedule.from_config(cfg, 64)
    x0 = jnp.zeros((2, 3, 2, 2, 1))
    # a "denoiser" that is exact on frame 0 and wrong by 1 on frames 1, 2
    bad = lambda z, ls: jnp.zeros_like(z).at[:, 1:].set(1.0)
    full = diffusion_loss(bad, x0, jax.random.key(0), cfg, sch, logsnr=0.0)
    np.testing.assert_allclose(np.asarray(full.per_example), 2 / 3, rtol=1e-6)
    only0 = diffusion_loss(bad, x0, jax.random.key(0), cfg, sch, logsnr=0.0,
                           frame_weights=jnp.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(np.asarray(only0.per_example), 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="shape"):
        diffusion_loss(lambda z, ls: z[:, :1], x0, jax.random.key(0), cfg, sch)
