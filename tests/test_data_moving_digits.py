"""moving_digits: the procedural world (spec) and its tfds ArrayRecord builder."""

import os

import numpy as np
import pytest

from data_pipelines import moving_digits as md
from data_pipelines import moving_digits_spec as spec


def _single(kind=7, color=0, motion=0, speed=1, size=1, x0=0.9, y0=0.5):
    attrs = {k: np.full(shape, -1, dtype) for k, (shape, dtype) in spec.attribute_spec().items()}
    attrs["num_objects"] = np.asarray(1, np.int32)
    values = dict(kind=kind, color=color, motion=motion, speed=speed, size=size, x0=x0, y0=y0)
    for key, value in values.items():
        attrs[key][0] = value
    return attrs


def _centroids(video, rgb):
    mask = np.all(np.abs(video.astype(int) - np.asarray(rgb)) < 40, axis=-1)  # (T,H,W)
    ys, xs = np.mgrid[: video.shape[1], : video.shape[2]]
    counts = mask.sum(axis=(1, 2))
    assert np.all(counts > 0), counts
    return np.stack([(mask * xs).sum((1, 2)) / counts, (mask * ys).sum((1, 2)) / counts], -1), counts


def test_generate_example_is_deterministic_and_varied():
    a = spec.generate_example(5, seed=3, frames=8, res=32)
    b = spec.generate_example(5, seed=3, frames=8, res=32)
    c = spec.generate_example(6, seed=3, frames=8, res=32)
    assert a["caption"] == b["caption"] and np.array_equal(a["video"], b["video"])
    assert not np.array_equal(a["video"], c["video"])
    assert a["video"].shape == (8, 32, 32, 3) and a["video"].dtype == np.uint8
    for key, (shape, dtype) in spec.attribute_spec().items():
        assert a[key].shape == shape and a[key].dtype == dtype, key
    captions = {spec.generate_example(i, 0, 8, 32)["caption"] for i in range(50)}
    assert len(captions) > 40


@pytest.mark.parametrize("motion,axis,sign", [(0, 0, -1), (1, 0, 1), (2, 1, -1), (3, 1, 1)])
def test_moves_are_visible_in_eight_frames(motion, axis, sign):
    x0, y0 = (0.9 if sign < 0 else 0.1,) * 2
    attrs = _single(motion=motion, speed=0, size=0, x0=x0, y0=y0, kind=10)
    video = spec.render_clip(attrs, 8, 32)
    cent, counts = _centroids(video, spec.PALETTE[0])
    step = np.diff(cent[:, axis])
    assert np.all(sign * step >= 1.5), step  # ~2 px/frame, slow speed at 32x32
    assert np.allclose(cent[:, 1 - axis], cent[0, 1 - axis])
    assert counts.min() >= 60  # a 10x10 square is large enough to learn at 32x32


@pytest.mark.parametrize("motion,axis", [(4, 0), (5, 1)])
def test_bounces_reverse_within_eight_frames(motion, axis):
    for start in (0.1, 0.45, 0.55, 0.9):
        attrs = _single(motion=motion, speed=0, x0=start, y0=start, kind=11, color=3)
        cent, _ = _centroids(spec.render_clip(attrs, 8, 32), spec.PALETTE[3])
        signs = {np.sign(d) for d in np.diff(cent[:, axis]) if abs(d) > 0.5}
        assert signs == {-1.0, 1.0}, (start, cent[:, axis])


def test_digits_are_distinct_glyphs():
    masks = [spec._shape_mask(k, 10) for k in range(len(spec.KIND_NAMES))]
    for i in range(len(masks)):
        for j in range(i):
            assert np.abs(masks[i] - masks[j]).sum() > 3, (spec.KIND_NAMES[i], spec.KIND_NAMES[j])


def test_caption_states_every_attribute():
    ex = spec.generate_example(0, 0, 8, 32)
    for i in range(int(ex["num_objects"])):
        for names, key in ((spec.COLOR_NAMES, "color"), (spec.KIND_NAMES, "kind"),
                           (spec.MOTION_NAMES, "motion"), (spec.SPEED_WORDS, "speed"),
                           (spec.SIZE_NAMES, "size")):
            assert names[ex[key][i]] in ex["caption"]
    assert spec.caption(_single(color=1, kind=3, motion=5, speed=0, size=0)) == \
        "a small green 3 bounces up and down slowly"
    assert spec.caption(_single(color=1, kind=3), with_motion=False) == "a big green 3"
    assert len(spec.caption(_single()).encode()) <= spec.max_caption_bytes(1)


def test_object_colours_come_from_the_palette():
    ex = spec.generate_example(11, 0, 8, 32, max_objects=1)
    color = spec.PALETTE[ex["color"][0]]
    pixels = ex["video"].reshape(-1, 3)
    lit = pixels[pixels.max(-1) > 200]
    assert len(lit) > 0 and np.all(np.abs(lit.astype(int) - color).max(-1) < 90)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("md")
    cfg = md.make_config(num_frames=4, resolution=16, num_train=12, num_test=5, num_images=6, seed=7)
    return md.build(root, cfg), cfg, root


def test_builder_writes_array_record_readable_without_tensorflow(built):
    import sys

    import tensorflow_datasets as tfds

    path, cfg, root = built
    assert path == md.dataset_dir(root, cfg) and os.path.isdir(path)
    assert any(".array_record-" in f for f in os.listdir(path))
    builder = tfds.builder_from_directory(path)
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == \
        {"train": 12, "test": 5, "image": 6}
    train = builder.as_data_source("train")
    expected = {spec.generate_example(i, cfg.seed * 3, 4, 16)["caption"] for i in range(12)}
    got = {rec["caption"].decode() for rec in (train[i] for i in range(len(train)))}
    assert got == expected
    rec = train[0]
    assert rec["video"].shape == (4, 16, 16, 3) and rec["video"].dtype == np.uint8
    assert rec["x0"].dtype == np.float32 and rec["color"].shape == (2,)
    image = builder.as_data_source("image")[0]
    assert image["video"].shape == (1, 16, 16, 3)
    assert not any(w in image["caption"].decode() for w in ("moves", "bounces"))
    assert "tensorflow" not in sys.modules


def test_builder_is_idempotent_and_configs_do_not_collide(built):
    path, cfg, root = built
    mtime = os.path.getmtime(os.path.join(path, "dataset_info.json"))
    assert md.build(root, cfg) == path
    assert os.path.getmtime(os.path.join(path, "dataset_info.json")) == mtime
    other = md.make_config(num_frames=4, resolution=16, num_train=12, num_test=5, num_images=6, seed=8)
    assert md.dataset_dir(root, other) != path
    with pytest.raises(ValueError, match="resolution"):
        md.make_config(resolution=4)
