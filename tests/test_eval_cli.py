"""launch.evaluate on real smoke checkpoints: --follow next to a training process, --step, bad input.

One training run (subprocess, 2 devices) and one follower (subprocess, 1 device, started before
any checkpoint exists) run side by side; the follower must evaluate each checkpoint once.
"""

import json
import math
import shutil

import numpy as np
import pytest
import training_support as ts
from PIL import Image

from tests import test_eval_cli_common as common
from vdm_jax.evaluation import alignment, loading, runner

EXPECTED_KEYS = {"step", "eval_loss", "eval_loss_logsnr_-4", "eval_loss_logsnr_0", "eval_loss_logsnr_4",
                 "align_color_acc", "align_color_chance", "align_motion_acc", "align_motion_chance",
                 "align_count_acc", "pred_psnr", "pred_ssim", "pred_lpips", "pred_protocol", "eval_loss_n",
                 "i2v_psnr", "i2v_ssim", "i2v_lpips", "i2v_copy_first_psnr", "i2v_protocol",
                 "interp_psnr", "interp_ssim", "interp_lpips", "interp_repeat_psnr", "interp_blend_ssim",
                 "interp_protocol",
                 "sample_clips_per_sec", "eval_seconds", "sampler", "seconds"}


@pytest.fixture(scope="module")
def followed(tmp_path_factory):
    """Train (subprocess) while ``launch.evaluate --follow`` (subprocess) evaluates each checkpoint."""
    root, workdir, data_dir = common.shared_dirs(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    assert not (workdir / "checkpoints").exists()
    args = common.eval_args(workdir, data_dir, "--follow", "--poll_seconds=0.5", "--max_idle_seconds=400")
    follower = common.start("launch.evaluate", args, 1, root / "follow.log", cache_dir=root / "jax_cache")
    trainer = common.start("launch.train", common.train_args(workdir, data_dir), common.TRAIN_DEVICES,
                           root / "train.log")
    common.wait(trainer, root / "train.log", "training")
    (root / "trained.ok").write_text("ok")
    log = common.wait(follower, root / "follow.log", "evaluate --follow")
    return workdir, data_dir, log


def test_follow_evaluates_each_new_checkpoint_once(followed):
    workdir, _, log = followed
    assert loading.available_steps(str(workdir)) == common.CHECKPOINT_STEPS
    entries = [json.loads(line) for line in (workdir / "eval" / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in entries] == common.CHECKPOINT_STEPS, entries
    assert "evaluated steps [3, 6]" in log
    for step in common.CHECKPOINT_STEPS:
        metrics = json.loads((workdir / "eval" / f"step_{step}" / "metrics.json").read_text())
        assert EXPECTED_KEYS <= set(metrics), sorted(EXPECTED_KEYS - set(metrics))
        assert metrics["step"] == step and metrics["pred_protocol"]["context_frames"] == 1
        assert metrics["i2v_protocol"]["frames_scored"] == [1, 2, 3]
        assert metrics["interp_protocol"]["frames_given"] == [0, 2]
        assert metrics["interp_protocol"]["frames_scored"] == [1, 3]
        assert math.isfinite(metrics["i2v_psnr"]) and math.isfinite(metrics["interp_lpips"])
        assert metrics["eval_loss_n"] == 16  # the whole smoke test split
        assert 0 < metrics["eval_loss"] < 10 and math.isfinite(metrics["pred_psnr"])
        assert 0 <= metrics["align_color_acc"] <= 1 and 0 < metrics["align_color_chance"] < 1
        # motion is scored only where the caption's colour was found: null when nothing was scored
        assert (metrics["align_motion_n"] == 0) == (metrics["align_motion_acc"] is None)
        gif = Image.open(workdir / "eval" / f"step_{step}" / "samples.gif")
        assert gif.n_frames == 4  # smoke: 4-frame clips
        for task in ("image_to_video", "interpolation"):
            assert Image.open(workdir / "eval" / f"step_{step}" / f"{task}.gif").n_frames == 4
    # The summary covers both steps.
    csv_rows = (workdir / "eval" / "summary.csv").read_text().splitlines()
    assert len(csv_rows) == 3 and csv_rows[0].startswith("step,eval_loss,")
    assert (workdir / "eval" / "summary.md").read_text().startswith("| step | eval_loss |")
    assert (workdir / "eval" / "summary.png").stat().st_size > 1000


def test_restarted_follower_does_not_reevaluate(followed):
    workdir, data_dir, _ = followed
    config = _config(data_dir)
    assert runner.follow(ts.eval_program(config), str(workdir), max_idle_seconds=0.1, poll_seconds=0.05) == []
    lines = (workdir / "eval" / "log.jsonl").read_text().splitlines()
    assert len(lines) == len(common.CHECKPOINT_STEPS)


def test_evaluate_step_writes_metrics_reproducibly(followed, tmp_path):
    """``--step=3`` on a copy of the checkpoints: metrics.json with the expected keys, and the same
    fixed-noise numbers as the follower got (compiled programs come from the follower's JAX cache)."""
    workdir, data_dir, _ = followed
    copy = tmp_path / "work"
    shutil.copytree(workdir / "checkpoints", copy / "checkpoints")
    r = common.run("launch.evaluate", common.eval_args(copy, data_dir, "--step=3"),
                   cache_dir=workdir.parent / "jax_cache")
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"wrote {copy}/eval/step_3/metrics.json" in r.stdout
    metrics = json.loads((copy / "eval" / "step_3" / "metrics.json").read_text())
    before = json.loads((workdir / "eval" / "step_3" / "metrics.json").read_text())
    assert EXPECTED_KEYS <= set(metrics)
    for key in ("eval_loss", "pred_psnr", "pred_ssim", "pred_lpips"):
        assert metrics[key] == pytest.approx(before[key], rel=1e-4), key
    assert not (copy / "eval" / "step_6").exists()  # only the asked step


def test_missing_step_names_existing_steps(followed):
    workdir, data_dir, _ = followed
    r = common.run("launch.evaluate", common.eval_args(workdir, data_dir, "--step=5"))
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert lines == [f"error: no checkpoint for step 5 in {workdir}/checkpoints; existing steps: [3, 6]"]


def test_config_mismatch_names_the_field(followed):
    workdir, data_dir, _ = followed
    r = common.run("launch.evaluate", common.eval_args(workdir, data_dir, "--config.model.base_channels=16"))
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1, r.stderr
    assert "model.base_channels is 16 in --config but 8 in the checkpoint" in err[0]


# ---------------------------------------------------------------------------------------------
# Units (no checkpoint needed)
# ---------------------------------------------------------------------------------------------


def _config(data_dir, **sections):
    from configs import moving_digits
    from vdm_jax.config import from_configdict, replace

    cfg = from_configdict(moving_digits.get_config("smoke"))
    return replace(cfg, data={"data_dir": str(data_dir)}, evaluation={"fvd": False}, **sections)


def test_config_mismatches_ignore_runtime_fields(tmp_path):
    cfg = _config(tmp_path)
    from vdm_jax.config import replace

    runtime = replace(cfg, model={"remat": "full", "attention_backend": "xla"}, training={"seed": 3})
    assert loading.config_mismatches(cfg, runtime) == []
    other_target = "eps" if cfg.diffusion.target.value == "v" else "v"
    changed = replace(cfg, model={"channel_mults": (1, 1)}, diffusion={"target": other_target})
    assert [f for f, _, _ in loading.config_mismatches(cfg, changed)] == ["model.channel_mults",
                                                                          "diffusion.target"]
    with pytest.raises(loading.EvalInputError, match=r"channel_mults .*\(and 1 more: diffusion.target\)"):
        loading.check_config_matches(cfg, changed, 7)


def test_resolve_step_without_checkpoints(tmp_path):
    with pytest.raises(loading.EvalInputError, match="no checkpoints in"):
        loading.resolve_step(str(tmp_path), "latest")


def test_generate_in_batches_pads_trims_and_times_without_compilation():
    from vdm_jax.evaluation.generation import generate_in_batches

    calls = []

    def fn(chunk, i):
        calls.append((i, chunk["x"][:, 0].tolist()))
        return np.broadcast_to(chunk["x"][:, None, None, None, :] / 10.0, (len(chunk["x"]), 2, 4, 4, 3))

    x = np.arange(5, dtype=np.float32)[:, None].repeat(3, 1)
    clips, rate = generate_in_batches(fn, {"x": x}, batch_size=2)
    assert clips.shape == (5, 2, 4, 4, 3) and clips.dtype == np.uint8
    assert [c[1] for c in calls] == [[0, 1], [2, 3], [4, 4]]  # the last batch padded, then trimmed
    assert rate > 0
    calls.clear()
    generate_in_batches(fn, {"x": x[:2]}, batch_size=4, cold=True)
    assert len(calls) == 2  # a lone cold batch: one compile run, one timed run
    calls.clear()
    generate_in_batches(fn, {"x": x[:2]}, batch_size=4, cold=False)
    assert len(calls) == 1


def test_scattered_noise_is_not_an_object():
    """An untrained model's noise must not score the colour attribute (every colour is 'present')."""
    noise = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    assert alignment.detect_objects(noise) == []


@pytest.mark.slow
def test_fvd_with_protocol_and_cached_reference(followed, tmp_path):
    """FVD through real I3D weights: protocol recorded, reference features cached once, and held-out
    real clips are much closer to the reference than an untrained model's samples."""
    from data_pipelines import pipeline
    from vdm_jax.config import replace
    from vdm_jax.evaluation import fvd

    workdir, data_dir, _ = followed
    copy = tmp_path / "work"
    shutil.copytree(workdir / "checkpoints", copy / "checkpoints")
    cfg = replace(_config(data_dir), evaluation={"fvd": True, "lpips": False, "num_prediction_clips": 0})
    evaluator = runner.Evaluator(ts.eval_program(cfg), str(copy))
    m3 = evaluator.evaluate_step(3)
    protocol = m3["fvd_protocol"]
    assert protocol["num_clips"] == 8 and protocol["num_reference_clips"] == 8
    assert (protocol["source_frames"], protocol["source_resolution"]) == (4, [16, 16])
    assert (protocol["resolution"], protocol["i3d_frames"], protocol["feature_layer"]) == (224, 16, "logits")
    assert protocol["reference"].startswith("moving_digits/") and protocol["reference"].endswith("/test")
    cache = list((copy / "eval" / "cache").glob("fvd_ref_*.npz"))
    assert len(cache) == 1
    mtime = cache[0].stat().st_mtime_ns
    m6 = evaluator.evaluate_step(6)
    assert cache[0].stat().st_mtime_ns == mtime  # reused, not recomputed
    assert m3["i3d_clips_per_sec"] > 0 and m6["fvd"] > 0
    # num_prediction_clips=0 skips the prediction task (scores and grid)
    assert not any(k.startswith("pred_") for k in m6) and "prediction" not in m6["seconds"]
    assert not (copy / "eval" / "step_6" / "prediction.gif").exists()
    assert (copy / "eval" / "step_6" / "samples.gif").exists()
    held_out = np.stack([r["video"] for r in pipeline.eval_records(cfg.data, 16)[8:]])
    mu, sigma, ref = fvd.reference_stats(evaluator._extractor, evaluator._data.videos[:8],
                                         str(copy / "eval" / "cache"), protocol["reference"])
    real = fvd.compute_fvd(evaluator._extractor, held_out, mu, sigma, ref)["fvd"]
    assert real < 0.5 * min(m3["fvd"], m6["fvd"]), (real, m3["fvd"], m6["fvd"])
    print(f"FVD real={real:.1f} step3={m3['fvd']:.1f} step6={m6['fvd']:.1f}; "
          f"I3D {m6['i3d_clips_per_sec']:.2f} clips/s on CPU")
