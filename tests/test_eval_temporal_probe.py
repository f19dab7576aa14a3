"""The temporal probe's inputs, pairing and deltas, and the prediction baselines."""

import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import moving_digits_spec as spec
from vdm_jax.evaluation import prediction_baselines as pb
from vdm_jax.evaluation.alignment import motion_diagnostics
from vdm_jax.evaluation.temporal_probe import (
    shuffle_order,
    swap_direction_words,
    temporal_probe,
    variant_inputs,
)


def test_swap_direction_words():
    assert swap_direction_words("a big red 3 moves left fast") == "a big red 3 moves right fast"
    assert swap_direction_words("a small blue 1 moves up slowly") == "a small blue 1 moves down slowly"
    assert swap_direction_words("a big red square bounces left and right fast") == \
        "a big red square bounces right and left fast"
    assert swap_direction_words("upright leftover") == "upright leftover"  # whole words only


@pytest.mark.parametrize("t", [2, 3, 8])
def test_shuffle_moves_every_frame(t):
    order = shuffle_order(t)
    assert sorted(order) == list(range(t)) and not np.any(order == np.arange(t))


def test_variants():
    videos = np.arange(2 * 4).reshape(2, 4, 1, 1, 1).astype(np.uint8)
    caps = ["a big red 3 moves left fast", "a small blue 1 moves up slowly"]
    reversed_videos = variant_inputs(videos, caps, "reversed")[0]
    assert np.array_equal(reversed_videos[:, :, 0, 0, 0], videos[:, ::-1, 0, 0, 0])
    assert variant_inputs(videos, caps, "swapped")[1][0].endswith("right fast")
    with pytest.raises(ValueError, match="unknown probe variant"):
        variant_inputs(videos, caps, "upside_down")


def test_probe_deltas_reflect_what_the_loss_uses():
    """A 'model' whose loss is 0 for forward-running clips with the right direction word and grows
    with each violation: the probe reports exactly those gaps, with identical noise keys."""
    def encode(caps):
        return {"tokens": np.array([[1.0 if " left" in c else 0.0] for c in caps])}

    keys = []

    def loss_fn(params, batch, rng):
        keys.append(np.asarray(rng).tolist())
        v = batch["video"][:, :, 0, 0, 0]
        forward = jnp.all(jnp.diff(v, axis=1) > 0, axis=1).astype(jnp.float32)
        word_ok = batch["tokens"][:, 0]
        per_clip = (1 - forward) * 0.5 + (1 - word_ok) * 0.25
        return jnp.stack([jnp.mean(per_clip), 2 * jnp.mean(per_clip)])

    videos = np.tile(np.arange(4, dtype=np.uint8)[None, :, None, None, None] * 10, (4, 1, 2, 2, 3))
    caps = ["a big red 3 moves left fast"] * 4
    out = temporal_probe(loss_fn, None, videos, caps, encode, (-6.0, 0.0), batch_size=2)
    assert out["probe_num_clips"] == 4
    assert out["probe_loss_real_logsnr_-6"] == 0.0
    assert out["probe_delta_reversed_logsnr_-6"] == pytest.approx(0.5)
    assert out["probe_delta_swapped_logsnr_-6"] == pytest.approx(0.25)
    assert out["probe_delta_swapped_logsnr_0"] == pytest.approx(0.5)
    assert out["probe_delta_shuffled_logsnr_-6"] == pytest.approx(0.5)
    assert len({str(k) for k in keys}) == 2  # batch i uses the same key in every variant


def test_prediction_baselines():
    clip = np.zeros((1, 5, 8, 8, 3), np.uint8)
    for t in range(5):
        clip[0, t, 2:4, t:t + 2] = 255  # a block moving right 1 px/frame
    copy = pb.copy_last(clip, 2)
    assert np.array_equal(copy[0, 4], clip[0, 1])
    const = pb.constant_velocity(clip, 2)
    np.testing.assert_array_equal(const, clip)  # constant velocity is exact for constant motion
    np.testing.assert_array_equal(pb.constant_velocity(clip, 1), pb.copy_last(clip, 1))


def test_motion_diagnostics_static_rate_sign_and_confusion():
    attrs = {k: np.full(spec.MAX_OBJECTS, -1, np.int32) for k in ("color", "kind", "motion", "speed", "size")}
    attrs.update(num_objects=np.asarray(1, np.int32), x0=np.array([0.9, 0], np.float32),
                 y0=np.array([0.5, 0], np.float32))
    for key, value in (("color", 0), ("kind", 10), ("motion", 0), ("speed", 1), ("size", 1)):
        attrs[key][0] = value
    moving = spec.render_clip(attrs, 8, 32)  # moves left
    still = np.repeat(moving[:1], 8, axis=0)
    wrong = moving[::-1]  # moves right
    out = motion_diagnostics([moving, still, wrong], [attrs, attrs, attrs])
    assert out["align_static_rate"] == pytest.approx(1 / 3)
    assert out["align_direction_sign_acc"] == pytest.approx(1 / 3)
    assert out["align_motion_confusion"] == {"moves left": {"moves left": 1, "static": 1, "moves right": 1}}
