"""A cascade stage's conditioning input from the grain pipeline: equal to the downsampled target,
with image frames, in eval batches, and through an exact resume."""

import dataclasses

import numpy as np
import pytest

from data_pipelines import pipeline, sources
from data_pipelines.stage_inputs import area_downsample, downsample, low_res_input, subsample_frames
from vdm_jax.config import DataConfig, StageKind


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    c = DataConfig(data_dir=str(tmp_path_factory.mktemp("data")), num_frames=4, resolution=16,
                   num_train_clips=12, num_test_clips=8, num_images=8, generation_seed=2)
    sources.ensure_prepared(c)
    return c


def test_area_downsampling_and_frame_subsampling():
    v = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    low = area_downsample(v, 2)
    assert low.shape == (2, 2, 2, 1)
    assert low[0, 0, 0, 0] == np.mean([v[0, 0, 0, 0], v[0, 0, 1, 0], v[0, 1, 0, 0], v[0, 1, 1, 0]])
    clip = np.random.default_rng(0).normal(size=(6, 2, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(subsample_frames(clip, 2), clip[[0, 2, 4]])
    with pytest.raises(ValueError, match="not divisible"):
        area_downsample(np.zeros((1, 5, 5, 3)), 2)
    assert low_res_input(StageKind.NONE, 2) is None


@pytest.mark.parametrize("kind,shape", [("spatial_sr", (4, 6, 8, 8, 3)), ("temporal_sr", (4, 2, 16, 16, 3))])
def test_pipeline_conditioning_input_equals_the_downsampled_target(cfg, kind, shape):
    data = dataclasses.replace(cfg, images_per_video=2) if kind == "spatial_sr" else cfg
    spec = low_res_input(kind, 2)
    batch = next(pipeline.make_train_iterator(data, global_batch_size=4, low_res=spec))
    assert batch["low_res"].shape == shape and batch["low_res"].dtype == np.float32
    np.testing.assert_array_equal(batch["low_res"], downsample(batch["video"], kind, 2))
    if kind == "spatial_sr":  # block means of the target, image frames included
        np.testing.assert_allclose(batch["low_res"][:, :, 1, 2],
                                   batch["video"][:, :, 2:4, 4:6].mean(axis=(2, 3)), atol=1e-6)
    else:
        np.testing.assert_array_equal(batch["low_res"], batch["video"][:, ::2])
    ev = next(pipeline.make_eval_iterator(cfg, global_batch_size=4, low_res=spec))
    np.testing.assert_array_equal(ev["low_res"], downsample(ev["video"], kind, 2))


def test_stage_iterator_resumes_exactly(cfg, tmp_path):
    spec = low_res_input("spatial_sr", 2)
    it = pipeline.make_train_iterator(cfg, global_batch_size=4, low_res=spec)
    next(it)
    pipeline.save_iterator(it, tmp_path / "iter")
    expected = [next(it) for _ in range(4)]  # crosses the epoch boundary (12 clips = 3 batches)
    restored = pipeline.restore_iterator(pipeline.make_train_iterator(cfg, global_batch_size=4, low_res=spec),
                                         tmp_path / "iter")
    for want in expected:
        got = next(restored)
        assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
