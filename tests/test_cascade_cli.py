"""Cascades and conditioning tasks from the sample CLI, and a stage's evaluation, on real smoke
checkpoints: the base smoke model (4 frames of 16x16) and a spatial SR stage to 32x32."""

import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines import moving_digits_spec as spec
from data_pipelines.stage_inputs import area_downsample
from data_pipelines.video_io import save_video, to_uint8, to_unit
from tests import test_eval_cli_common as common
from vdm_jax.evaluation import sample_cli as sampling
from vdm_jax.evaluation.loading import EvalInputError

PROMPTS = ("a big red 7 moves left fast", "a small blue square moves up slowly")
SSR = "configs/moving_digits_cascade.py:ssr,smoke"
SSR_OVERRIDES = ["--config.training.num_train_steps=2", "--config.training.checkpoint_every=2",
                 "--config.training.sample_every=2", "--config.training.eval_batches=1"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    base, data_dir = common.ensure_trained(tmp_path_factory)
    ssr = tmp_path_factory.mktemp("ssr") / "work"
    r = common.run("launch.train", [f"--config={SSR}", f"--workdir={ssr}",
                                    f"--config.data.data_dir={data_dir}", *SSR_OVERRIDES])
    assert r.returncode == 0, r.stderr[-3000:]
    return base, ssr, data_dir


def _request(tmp_path, **kw):
    defaults = {"prompts": PROMPTS[:1], "out": str(tmp_path / "out.gif"), "steps": 2}
    return sampling.SampleRequest(**{**defaults, **kw})


def test_stage_training_writes_input_output_real_samples(stages):
    _, ssr, _ = stages
    gif = Image.open(ssr / "samples" / "step_0000002.gif")
    assert gif.size[0] >= 3 * 128  # input | stage output | real, per row


def test_cascade_writes_the_final_clip_and_every_stage_side_by_side(stages, tmp_path):
    base, ssr, _ = stages
    stages_out = tmp_path / "stages.gif"
    result = sampling.run_sample(_request(tmp_path, workdir=str(base), prompts=PROMPTS, cascade=(str(ssr),),
                                          stages_out=str(stages_out)))
    assert result["videos"].shape == (2, 4, 32, 32, 3) and result["task"] == "cascade"
    assert Image.open(tmp_path / "out.gif").n_frames == 4
    side = Image.open(stages_out)
    assert side.n_frames == 4 and side.size[0] >= 2 * 128 and side.size[1] >= 2 * 128  # 2 stages x 2 prompts


@pytest.mark.parametrize("which, message", [
    (dict(workdir="ssr"), r"holds a spatial_sr stage: give it --low_res_video, or run it as --cascade"),
    (dict(workdir="ssr", cascade=("ssr",)), r"--workdir=.* is a spatial_sr stage .*must be a base model"),
    (dict(workdir="base", cascade=("base",)), r"--cascade stage 1 \(.*\) is a base model"),
    (dict(workdir="base", cascade=("ssr", "ssr")),
     r"--cascade stage 2 \(.*\): a spatial_sr stage reads 4 frames of 16x16 .*previous model writes 4 frames "
     r"of 32x32"),
])
def test_wrong_stage_checkpoints_are_refused(stages, tmp_path, which, message):
    paths = {"base": str(stages[0]), "ssr": str(stages[1])}
    kw = {"workdir": paths[which["workdir"]], "cascade": tuple(paths[c] for c in which.get("cascade", ()))}
    with pytest.raises(EvalInputError, match=message):
        sampling.run_sample(_request(tmp_path, **kw))


@pytest.mark.parametrize("change, message", [
    (dict(cond_image="a.png", low_res_video="b.gif"), "--cond_image and --low_res_video cannot be combined"),
    (dict(stages_out="s.gif"), "--stages_out needs --cascade"),
    (dict(interpolate_stride=2), "--interpolate_stride needs --cond_video"),
    (dict(sr_factor=2), "--sr_factor needs --low_res_video"),
])
def test_conflicting_task_flags_fail_before_loading(tmp_path, change, message):
    with pytest.raises(EvalInputError, match=message):
        sampling.run_sample(_request(tmp_path, workdir=str(tmp_path / "none"), **change))


def test_image_to_video_and_interpolation_keep_the_given_frames(stages, tmp_path):
    base = str(stages[0])
    clip = spec.generate_example(3, 9, 4, 16)["video"]
    image = tmp_path / "first.png"
    Image.fromarray(clip[0]).save(image)
    i2v = sampling.run_sample(_request(tmp_path, workdir=base, cond_image=str(image)))["videos"]
    assert i2v.shape == (1, 4, 16, 16, 3)
    assert np.abs(i2v[0, 0].astype(int) - clip[0].astype(int)).max() <= 1
    low_fps = tmp_path / "low_fps.gif"
    save_video(str(low_fps), clip[::2])  # frames 0 and 2
    given = sampling.read_video(str(low_fps), 16)
    out = sampling.run_sample(_request(tmp_path, workdir=base, cond_video=str(low_fps), interpolate_stride=2))
    video = out["videos"][0]
    assert np.abs(video[[0, 2]].astype(int) - given[:2].astype(int)).max() <= 1
    assert out["task"] == "interpolation"


def test_super_resolution_by_a_stage_and_by_guidance(stages, tmp_path):
    base, ssr, _ = stages
    clip = spec.generate_example(4, 9, 4, 16)["video"]
    low = tmp_path / "low.gif"
    save_video(str(low), clip)
    out = sampling.run_sample(_request(tmp_path, workdir=str(ssr), low_res_video=str(low)))["videos"]
    assert out.shape == (1, 4, 32, 32, 3)
    low8 = tmp_path / "low8.gif"
    save_video(str(low8), to_uint8(area_downsample(to_unit(clip), 2)))
    guided = sampling.run_sample(_request(tmp_path, workdir=str(base), low_res_video=str(low8), sr_factor=2))
    assert guided["videos"].shape == (1, 4, 16, 16, 3) and guided["task"] == "super_resolution"
    with pytest.raises(EvalInputError, match="--sr_factor must be >= 2 and divide the model's resolution 16"):
        sampling.run_sample(_request(tmp_path, workdir=str(base), low_res_video=str(low8), sr_factor=3))


def test_stage_evaluation_scores_super_resolution_next_to_bilinear(stages, tmp_path):
    _, ssr, data_dir = stages
    args = [f"--config={SSR}", f"--workdir={ssr}", f"--config.data.data_dir={data_dir}", *SSR_OVERRIDES,
            "--config.evaluation.fvd=False", "--config.evaluation.lpips=False", "--step=2"]
    r = common.run("launch.evaluate", args)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((ssr / "eval" / "step_2" / "metrics.json").read_text())
    for key in ("eval_loss", "sr_psnr", "sr_ssim", "sr_bilinear_psnr", "sr_bilinear_ssim"):
        assert isinstance(metrics[key], float), key
    assert metrics["sr_protocol"]["stage"] == "spatial_sr" and metrics["sr_protocol"]["num_clips"] == 2
    assert 10 < metrics["sr_bilinear_psnr"] < 60  # the baseline is scored against the real clips
    # projecting onto a convex set that holds the real clip never moves away from it
    assert metrics["sr_bilinear_consistent_psnr"] > metrics["sr_bilinear_psnr"]
    assert "sr_psnr" in (ssr / "eval" / "summary.md").read_text()
    assert (ssr / "eval" / "step_2" / "super_resolution.gif").exists()


@pytest.mark.slow  # ~3 min: a second model trained, guided SR and a full cascade with FVD
def test_stage_evaluation_with_the_guidance_baseline_and_the_full_cascade(stages, tmp_path_factory):
    base, ssr, data_dir = stages
    guide = tmp_path_factory.mktemp("guide") / "work"  # a single-resolution smoke model at 32x32
    r = common.run("launch.train", ["--config=configs/moving_digits.py:smoke", f"--workdir={guide}",
                                    f"--config.data.data_dir={data_dir}", "--config.data.resolution=32",
                                    "--config.model.attention_resolutions=(16,)", *SSR_OVERRIDES])
    assert r.returncode == 0, r.stderr[-3000:]
    args = [f"--config={SSR}", f"--workdir={ssr}", f"--config.data.data_dir={data_dir}", *SSR_OVERRIDES,
            "--config.evaluation.fvd=False", "--config.evaluation.lpips=False", "--step=2",
            f"--config.evaluation.cascade_base_workdir={base}",
            f"--config.evaluation.sr_guidance_workdir={guide}"]
    r = common.run("launch.evaluate", args)
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = json.loads((ssr / "eval" / "step_2" / "metrics.json").read_text())
    assert 5 < metrics["sr_guided_psnr"] < 60 and isinstance(metrics["sr_guided_ssim"], float)
    assert metrics["sr_protocol"]["guidance_model"].startswith(str(guide))
    for key in ("cascade_align_color_acc", "cascade_base_align_color_acc", "cascade_align_motion_chance"):
        assert key in metrics, key
    assert metrics["cascade_protocol"]["num_clips"] == 4  # smoke: num_alignment_clips, no FVD
    assert (ssr / "eval" / "step_2" / "cascade.gif").exists()
    # the two references are checked: a stage is neither a guidance model nor a cascade base
    r = common.run("launch.evaluate", [*args[:-2], f"--config.evaluation.sr_guidance_workdir={ssr}"])
    assert r.returncode != 0 and "evaluation.sr_guidance_workdir" in r.stderr
    assert "needs a single-resolution model" in r.stderr
