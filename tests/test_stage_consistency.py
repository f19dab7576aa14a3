"""Consistency projection of a cascade stage's samples (``sampling.stage_consistency``): every
denoised estimate is projected onto the videos that measure exactly to the conditioning video."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.stage_inputs import downsample
from vdm_jax.config import DiffusionConfig, ModelConfig, SamplerConfig, StageKind
from vdm_jax.diffusion.augmentation import sample_stage
from vdm_jax.diffusion.conditioning import DownsampleObservation, FrameObservation, stage_observation
from vdm_jax.diffusion.guidance import Denoised, replace_x0
from vdm_jax.diffusion.samplers import sample
from vdm_jax.diffusion.schedules import Schedule, alpha_sigma
from vdm_jax.models.stage import residual_base

RNG = np.random.default_rng(0)


def _video(shape):
    return jnp.asarray(RNG.uniform(-1, 1, shape), jnp.float32)


@pytest.mark.parametrize("kind, factor, shape", [("spatial_sr", 2, (2, 3, 8, 8, 3)),
                                                 ("spatial_sr", 4, (1, 2, 8, 8, 3)),
                                                 ("temporal_sr", 2, (2, 6, 4, 4, 3))])
def test_projection_measures_to_the_input_and_is_a_least_squares_projection(kind, factor, shape):
    x, target = _video(shape), np.asarray(_video(shape))
    low = jnp.asarray(downsample(target, StageKind(kind), factor))
    obs = stage_observation(kind, factor, low)
    p = obs.project(x)
    # the pipeline's own downsampling of the projected video is the stage's input
    np.testing.assert_allclose(downsample(np.asarray(p), StageKind(kind), factor), low, atol=1e-6)
    np.testing.assert_allclose(obs.project(p), p, atol=1e-6)  # idempotent
    # orthogonal: the correction is orthogonal to any change that keeps the measurement
    # (here: target - p, both consistent), so p is the consistent video nearest to x
    assert float(jnp.vdot(x - p, jnp.asarray(target) - p)) == pytest.approx(0.0, abs=1e-3)
    assert float(jnp.sum((x - p) ** 2)) < float(jnp.sum((x - jnp.asarray(target)) ** 2))


def test_projection_keeps_what_varies_inside_a_block():
    low = jnp.zeros((1, 1, 2, 2, 1))
    x = jnp.zeros((1, 1, 4, 4, 1)).at[0, 0, 0, 0, 0].set(1.0)  # one bright pixel in block (0, 0)
    p = DownsampleObservation(low, 2, kernel="area").project(x)
    np.testing.assert_allclose(p[0, 0, :2, :2, 0], [[0.75, -0.25], [-0.25, -0.25]], atol=1e-6)
    np.testing.assert_array_equal(p[0, 0, 2:], 0.0)  # other blocks untouched
    frames = FrameObservation(jnp.ones((1, 1, 4, 4, 1)), (0,)).project(jnp.zeros((1, 3, 4, 4, 1)))
    assert float(frames[0, 0].min()) == 1.0 and float(jnp.abs(frames[0, 1:]).max()) == 0.0


def test_bilinear_observation_refuses_projection():
    with pytest.raises(ValueError, match="kernel='area'"):
        DownsampleObservation(jnp.zeros((1, 1, 2, 2, 1)), 2).project(jnp.zeros((1, 1, 4, 4, 1)))
    with pytest.raises(ValueError, match="base model"):
        stage_observation("none", 2, jnp.zeros((1, 1, 2, 2, 1)))


def test_replaced_x0_keeps_eps_consistent_with_z():
    z, x0, lam = _video((2, 4)), _video((2, 4)), jnp.array([-1.0, 2.0])
    a, s = alpha_sigma(lam)
    eps = (z - a[:, None] * x0) / s[:, None]
    d = replace_x0(Denoised(x0, eps), x0 * 0.5, z, lam)
    np.testing.assert_allclose(a[:, None] * d.x0 + s[:, None] * d.eps, z, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("kind, shape", [("spatial_sr", (2, 2, 8, 8, 3)), ("temporal_sr", (2, 4, 4, 4, 3))])
def test_stage_samples_measure_exactly_to_the_input_with_consistency(kind, shape, residual):
    """A stand-in x0 model that ignores its input: only the projection can make the samples
    consistent; without it they are not."""
    cfg = ModelConfig(resolution=shape[2], conditioning=kind, conditioning_factor=2, stage_residual=residual)
    low = jnp.asarray(downsample(np.asarray(_video(shape)), StageKind(kind), 2))
    diffusion = DiffusionConfig(target="x0")
    schedule = Schedule.from_config(diffusion, shape[2])
    wrong = jnp.asarray(RNG.uniform(-0.5, 0.5, shape), jnp.float32)

    def denoiser(z, lsnr, cond, drop):
        return jnp.broadcast_to(wrong, z.shape)

    def run(consistency):
        sampler = SamplerConfig(name="ancestral", steps=4, guidance_weight=0.0,
                                stage_consistency=consistency)
        out = sample_stage(sample, denoiser, sampler, low, {}, jax.random.PRNGKey(0),
                           residual=residual_base(cfg, low), observation=stage_observation(kind, 2, low),
                           shape=shape, schedule=schedule, diffusion_cfg=diffusion)
        return np.asarray(downsample(np.asarray(out), StageKind(kind), 2))

    np.testing.assert_allclose(run(True), low, atol=1e-5)
    assert np.abs(run(False) - np.asarray(low)).max() > 0.1
    with pytest.raises(ValueError, match="stage_consistency needs"):
        sample_stage(sample, denoiser, SamplerConfig(stage_consistency=True), low, {}, jax.random.PRNGKey(0),
                     shape=shape, schedule=schedule, diffusion_cfg=diffusion)


def test_bounded_projection_is_the_nearest_consistent_video_in_range():
    shape = (2, 2, 8, 8, 3)
    target = np.clip(np.asarray(_video(shape)) * 1.5, -1, 1)  # many pixels at the bounds
    target[0, 0, :4, :4] = -1.0  # black blocks
    low = jnp.asarray(downsample(target, StageKind.SPATIAL_SR, 2))
    obs = stage_observation("spatial_sr", 2, low)
    x = _video(shape) * 1.3
    p = obs.project(x, (-1.0, 1.0))
    assert float(p.min()) >= -1.0 and float(p.max()) <= 1.0
    np.testing.assert_allclose(downsample(np.asarray(p), StageKind.SPATIAL_SR, 2), low, atol=1e-5)
    np.testing.assert_allclose(p[0, 0, :4, :4], -1.0, atol=1e-6)  # a black block is black
    # projection onto a convex set: (x - p) . (q - p) <= 0 for every feasible q
    feasible = [jnp.asarray(target)] + [obs.project(_video(shape) * 2, (-1.0, 1.0)) for _ in range(4)]
    for q in feasible:
        assert float(jnp.vdot(x - p, q - p)) <= 1e-3
    assert float(jnp.sum((x - p) ** 2)) <= min(float(jnp.sum((x - q) ** 2)) for q in feasible)
    # the unbounded projection leaves pixels out of range and its clip breaks the measurement
    free = np.clip(np.asarray(obs.project(x)), -1, 1)
    assert np.abs(downsample(free, StageKind.SPATIAL_SR, 2) - np.asarray(low)).max() > 1e-2
