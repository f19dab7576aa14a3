"""diffusion.logsnr_shift: one sign convention (negative = more noise), every schedule, every sampler."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.config import DiffusionConfig, SamplerConfig
from vdm_jax.diffusion import Schedule, sample
from vdm_jax.diffusion.gaussian_toy import GaussianToy
from vdm_jax.diffusion.samplers import logsnr_grid
from vdm_jax.diffusion.schedules import resolution_shift

TOY = GaussianToy.diagonal([0.3, -0.2], [0.5, 1.0])


@pytest.mark.parametrize("kind", ["cosine", "shifted_cosine", "linear"])
def test_shift_keeps_endpoints_and_inverse(kind):
    base = Schedule.from_config(DiffusionConfig(schedule=kind), 16)
    shifted = Schedule.from_config(DiffusionConfig(schedule=kind, logsnr_shift=-2.0), 16)
    t = jnp.linspace(0.0, 1.0, 101)
    for s in (base, shifted):
        # float32 tan/atan near pi/2 at |log-SNR| = 20: ends exact to ~1e-2
        np.testing.assert_allclose(s.logsnr(jnp.array([0.0, 1.0])), [20.0, -20.0], atol=2e-2)
        np.testing.assert_allclose(s.t_of_logsnr(s.logsnr(t[1:-1])), t[1:-1], atol=2e-5)
    if kind == "linear":  # uniform in log-SNR: a shift changes nothing by construction
        np.testing.assert_allclose(shifted.logsnr(t), base.logsnr(t), atol=1e-6)
    else:  # more noise at every interior t, by ~2 away from the clipped ends
        diff = np.asarray(shifted.logsnr(t) - base.logsnr(t))
        assert np.all(diff[1:-1] < 0)
        np.testing.assert_allclose(diff[20:81], -2.0, atol=0.01)


def test_shifted_cosine_is_cosine_plus_resolution_shift():
    """shifted_cosine == cosine with logsnr_shift = 2 log(base/res); the two shifts add."""
    a = Schedule.from_config(DiffusionConfig(schedule="shifted_cosine", shift_base_resolution=64,
                                             logsnr_shift=-1.0), 16)
    shift = resolution_shift(64, 16) - 1.0
    b = Schedule.from_config(DiffusionConfig(schedule="cosine", logsnr_shift=shift), 16)
    t = jnp.linspace(0.0, 1.0, 33)
    np.testing.assert_allclose(a.logsnr(t), b.logsnr(t), atol=1e-5)
    assert math.isclose(resolution_shift(64, 16), 2 * math.log(4))


@pytest.mark.parametrize("name", ["ancestral", "ddim", "dpm_solver_pp", "langevin_pc"])
def test_shift_moves_every_samplers_grid(name):
    """The log-SNRs a sampler evaluates the denoiser at follow the shifted schedule's grid."""
    steps = 8

    def called_logsnrs(shift):
        dcfg = DiffusionConfig(target="eps", logsnr_shift=shift)
        schedule = Schedule.from_config(dcfg, 16)
        seen = []

        def denoise(z, logsnr, cond, drop):
            jax.debug.callback(lambda v: seen.append(float(np.asarray(v).reshape(-1)[0])), logsnr)
            return TOY.denoise(z, logsnr, "eps")

        out = sample(denoise, shape=(4, TOY.dim), rng=jax.random.key(0), schedule=schedule,
                     diffusion_cfg=dcfg, sampler_cfg=SamplerConfig(name=name, steps=steps))
        jax.block_until_ready(out)
        return np.array(seen), np.asarray(logsnr_grid(schedule, steps))

    base, base_grid = called_logsnrs(0.0)
    shifted, grid = called_logsnrs(-3.0)
    for seen, on in ((base, base_grid), (shifted, grid)):  # every call is at a grid point
        assert np.abs(seen[:, None] - on[None, :]).min(axis=1).max() < 1e-3
    assert np.all(shifted <= base + 1e-3) and np.mean(shifted - base) < -1.5


def test_sampling_grid_shift_moves_only_the_sampler_grid():
    """sampling.grid_shift: a trained-with-shift schedule sampled on the unshifted grid (and back)."""
    steps = 6
    trained = Schedule.from_config(DiffusionConfig(logsnr_shift=-2.0), 16)
    plain = Schedule.from_config(DiffusionConfig(), 16)
    np.testing.assert_allclose(logsnr_grid(trained, steps, 2.0), logsnr_grid(plain, steps), atol=1e-4)
    # grid_shift=0 is the training schedule's own grid, which differs from the unshifted one
    np.testing.assert_allclose(logsnr_grid(trained, steps), trained.logsnr(jnp.linspace(1.0, 0.0, steps + 1)))
    assert np.abs(np.asarray(logsnr_grid(trained, steps) - logsnr_grid(plain, steps))).max() > 1.0
    dcfg = DiffusionConfig(target="eps", logsnr_shift=-2.0)
    seen = []

    def denoise(z, logsnr, cond, drop):
        jax.debug.callback(lambda v: seen.append(float(np.asarray(v).reshape(-1)[0])), logsnr)
        return TOY.denoise(z, logsnr, "eps")

    out = sample(denoise, shape=(4, TOY.dim), rng=jax.random.key(0), schedule=trained, diffusion_cfg=dcfg,
                 sampler_cfg=SamplerConfig(name="ddim", steps=steps, grid_shift=2.0))
    jax.block_until_ready(out)
    np.testing.assert_allclose(seen, np.asarray(logsnr_grid(plain, steps))[:steps], atol=1e-3)
    with pytest.raises(ValueError, match="sampling.grid_shift"):
        SamplerConfig(grid_shift=20.0).validate("sampling")


def test_train_mix_shifts_a_spread_fraction_of_the_batch_only_in_training():
    from vdm_jax.config import ConfigError
    from vdm_jax.diffusion.losses import mix_mask, sample_logsnr

    cfg = DiffusionConfig(logsnr_shift=-3.0, train_mix_fraction=0.5, train_mix_shift=3.0)
    plain = DiffusionConfig(logsnr_shift=-3.0)
    schedule = Schedule.from_config(cfg, 16)
    rng = jax.random.PRNGKey(0)
    mixed, base = sample_logsnr(rng, 16, cfg, schedule), sample_logsnr(rng, 16, plain, schedule)
    mask = np.asarray(mix_mask(16, 0.5))
    assert mask.sum() == 8 and 0 < mask[:8].sum() < 8  # not one contiguous run of the batch
    want = np.clip(np.asarray(base) + 3.0 * mask, cfg.logsnr_min, cfg.logsnr_max)
    np.testing.assert_allclose(mixed, want, atol=1e-5)
    assert np.abs(np.asarray(mixed) - np.asarray(base))[mask == 0].max() == 0
    # the mixed examples follow the unshifted schedule (up to its endpoint adjustment): shift undone
    unshifted = Schedule.from_config(DiffusionConfig(), 16)
    t = schedule.t_of_logsnr(base)
    inner = (mask == 1) & (np.abs(np.asarray(mixed)) < 15)
    np.testing.assert_allclose(np.asarray(mixed)[inner], np.asarray(unshifted.logsnr(t))[inner], atol=1e-2)
    # fixed levels (evaluation, the probe) are untouched
    np.testing.assert_array_equal(sample_logsnr(None, 4, cfg, schedule, logsnr=-2.0), [-2.0] * 4)
    with pytest.raises(ConfigError, match="diffusion.train_mix_fraction"):
        DiffusionConfig(train_mix_fraction=1.5)
    with pytest.raises(ConfigError, match="diffusion.train_mix_shift"):
        DiffusionConfig(train_mix_shift=12.0)
