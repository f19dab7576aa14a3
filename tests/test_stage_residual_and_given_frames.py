"""Residual cascade stages (`model.stage_residual`) and the evaluation job's given-frame tasks
(image-to-video, interpolation) and their model-free baselines."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.config import ConfigError, DiffusionConfig, ModelConfig, SamplerConfig, from_configdict
from vdm_jax.diffusion.augmentation import sample_stage
from vdm_jax.diffusion.schedules import Schedule
from vdm_jax.evaluation import given_frame_tasks as gft
from vdm_jax.models.stage import residual_base, upsample_bilinear
from vdm_jax.training.program import _model_loss

SSR = dict(resolution=16, conditioning="spatial_sr", conditioning_factor=2)


def _loss(stage_residual: bool, predict) -> float:
    """The training loss of a stand-in x0-predicting model (``predict(batch) -> x0``)."""
    model_cfg = ModelConfig(**SSR, stage_residual=stage_residual)
    diffusion = DiffusionConfig(target="x0")
    config = types.SimpleNamespace(model=model_cfg, diffusion=diffusion)
    rng = np.random.default_rng(0)
    batch = {"video": jnp.asarray(rng.uniform(-1, 1, (2, 2, 16, 16, 3)), jnp.float32),
             "low_res": jnp.asarray(rng.uniform(-1, 1, (2, 2, 8, 8, 3)), jnp.float32)}
    draws = {"logsnr": jnp.array([-2.0, 3.0]), "noise": jnp.asarray(rng.normal(size=(2, 2, 16, 16, 3)),
                                                                    jnp.float32)}
    plan = types.SimpleNamespace(denoiser=lambda params, **kw: lambda z, lsnr, inputs, drop: predict(batch))
    program = types.SimpleNamespace(model=plan, config=config, schedule=Schedule.from_config(diffusion, 16))
    loss, _ = _model_loss(None, batch, draws, None, program=program, train=True)
    return float(loss)


def test_residual_stage_learns_the_clip_minus_the_upsampled_input():
    residual = lambda b: b["video"] - upsample_bilinear(b["low_res"], 2)  # noqa: E731
    assert _loss(True, residual) == pytest.approx(0.0, abs=1e-10)
    assert _loss(False, residual) > 0.01  # a plain stage's target is the clip itself
    assert _loss(False, lambda b: b["video"]) == pytest.approx(0.0, abs=1e-10)
    assert _loss(True, lambda b: b["video"]) > 0.01


def test_residual_stage_samples_add_the_clean_upsampled_input_back():
    low = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 2, 8, 8, 3)), jnp.float32)
    seen = {}

    def fake_sample(denoiser, *, rng, sampler_cfg, cond, shape):
        seen.update(cond)
        return jnp.zeros(shape)

    for residual, want in ((True, upsample_bilinear(low, 2)), (False, jnp.zeros((2, 2, 16, 16, 3)))):
        cfg = ModelConfig(**SSR, stage_residual=residual)
        out = sample_stage(fake_sample, None, SamplerConfig(noise_aug_logsnr=4.0), low, {},
                           jax.random.PRNGKey(0), residual=residual_base(cfg, low), shape=(2, 2, 16, 16, 3))
        np.testing.assert_allclose(out, want, atol=1e-6)
        # the model still reads the noised input and its level, not the clean one
        assert float(jnp.abs(seen["low_res"] - low).mean()) > 0.05
        np.testing.assert_array_equal(seen["aug_logsnr"], [4.0, 4.0])
    assert residual_base(ModelConfig(**SSR), low) == 0.0


def test_stage_residual_needs_a_stage():
    with pytest.raises(ConfigError, match="model.stage_residual.*needs a cascade stage"):
        ModelConfig(stage_residual=True)


def test_given_frame_task_config_is_validated():
    with pytest.raises(ConfigError, match="evaluation.interpolation_stride.*>= 2"):
        from_configdict({"evaluation": {"interpolation_stride": 1}})
    with pytest.raises(ConfigError, match="evaluation.interpolation_stride.*data.num_frames=8"):
        from_configdict({"data": {"num_frames": 8}, "evaluation": {"interpolation_stride": 8}})
    with pytest.raises(ConfigError, match="evaluation.num_image_to_video_clips"):
        from_configdict({"evaluation": {"num_image_to_video_clips": -1}})
    from_configdict({"data": {"num_frames": 8}, "evaluation": {"interpolation_stride": 8,
                                                              "num_interpolation_clips": 0}})


def test_given_indices_and_baselines():
    assert gft.given_indices("image_to_video", 8, 2) == (0,)
    assert gft.given_indices("interpolation", 8, 3) == (0, 3, 6)
    clips = np.zeros((1, 8, 2, 2, 3), np.uint8)
    clips[0, :, 0, 0, 0] = np.arange(8) * 30  # a pixel that brightens linearly
    hold = gft.hold_given(clips, (0, 3, 6))
    assert list(hold[0, :, 0, 0, 0]) == [0, 0, 0, 90, 90, 90, 180, 180]
    blend = gft.blend_given(clips, (0, 3, 6))
    assert list(blend[0, :, 0, 0, 0]) == [0, 30, 60, 90, 120, 150, 180, 180]  # exact between given frames
    assert set(gft.baselines("image_to_video", clips, (0,))) == {"copy_first"}
    with pytest.raises(ValueError, match="unknown task"):
        gft.given_indices("outpainting", 8, 2)


def test_scores_use_only_the_generated_frames():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (2, 4, 16, 16, 3), dtype=np.uint8)
    config = from_configdict({"data": {"num_frames": 4, "resolution": 16}})
    wrong_given = real.copy()
    wrong_given[:, [0, 2]] = 0  # the given frames are not scored: a perfect interpolation scores perfectly
    out = gft.scores("interpolation", wrong_given, real, config, None)
    assert out["interp_psnr"] > 90 and out["interp_ssim"] == pytest.approx(1.0)
    assert out["interp_protocol"]["frames_scored"] == [1, 3]
    assert out["interp_repeat_psnr"] < 40 and "interp_blend_ssim" in out
    i2v = gft.scores("image_to_video", real, real, config, None)
    assert i2v["i2v_protocol"]["frames_scored"] == [1, 2, 3] and i2v["i2v_copy_first_psnr"] < 40
