"""The U-Net's motion options: identity at init, frame awareness, joint image-video masking,
and exactness under a data x context mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests.test_model_unet import TINY, inputs
from vdm_jax.config import DEFAULT_RULES, MeshConfig
from vdm_jax.models import VideoUNet
from vdm_jax.models.frames import TemporalConv
from vdm_jax.sharding.logical import state_shardings
from vdm_jax.sharding.mesh import make_mesh

ZERO_INIT = {"temporal_conv": True, "frame_conditioning": True, "frame_embedding": True,
             "pixel_embedding": True, "layout_grid": 4}
OPTION_PARAMS = {"temporal_conv", "frame_cond", "position", "layout", "word_cond"}
ALL = {**ZERO_INIT, "mid_space_time_attention": True, "word_conditioning": True}


def _randomize(model, names, seed=7):
    """Give the named (zero-initialised) parameters random values, so that they matter."""
    key = jax.random.key(seed)
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param) and any(str(p) in names for p in path):
            key, sub = jax.random.split(key)
            var[...] = 0.2 * jax.random.normal(sub, var.shape)
    return model


def _forward(model, x, logsnr, tokens, frame_mask=None):
    return model(x, logsnr, tokens=tokens, token_mask=tokens > 0, frame_mask=frame_mask).prediction


@pytest.mark.parametrize("option", sorted(ZERO_INIT))
def test_option_is_identity_at_init(option):
    """The base model's weights copied into a model with the option give the same output."""
    base = VideoUNet(TINY, rngs=nnx.Rngs(0))
    model = VideoUNet(dataclasses.replace(TINY, **{option: ZERO_INIT[option]}), rngs=nnx.Rngs(0))
    _randomize(base, {"conv_out"})
    nnx.update(model, nnx.state(base, nnx.Param))
    x, logsnr, tokens = inputs()
    np.testing.assert_allclose(_forward(model, x, logsnr, tokens), _forward(base, x, logsnr, tokens),
                               rtol=1e-6, atol=1e-6)
    _randomize(model, OPTION_PARAMS)  # trained: the option now acts
    assert float(jnp.abs(_forward(model, x, logsnr, tokens) - _forward(base, x, logsnr, tokens)).max()) > 1e-3


@pytest.mark.parametrize("option", ["frame_conditioning", "frame_embedding"])
def test_frame_index_options_tell_identical_frames_apart(option):
    """A clip of identical frames: every frame's output differs once the frame index is used
    (without it only the clip ends differ, through the temporal attention's relative bias)."""
    model = _randomize(VideoUNet(dataclasses.replace(TINY, **{option: True}), rngs=nnx.Rngs(0)),
                       {"conv_out", "frame_cond", "position"})
    x, logsnr, tokens = inputs(t=5)
    x = jnp.broadcast_to(x[:, :1], x.shape)
    out = _forward(model, x, logsnr, tokens)
    inner = out[:, 1:-1]
    assert float(jnp.abs(inner[:, 1:] - inner[:, :-1]).max(axis=(2, 3, 4)).min()) > 1e-4


def test_layout_head_adds_a_per_frame_map_that_depends_on_text_not_on_the_input():
    """With frame conditioning, the layout head's term differs per frame and per caption, and is the
    same for any input clip (it is the input-independent part of the prediction)."""
    cfg = dataclasses.replace(TINY, frame_conditioning=True, layout_grid=4)
    model = _randomize(VideoUNet(cfg, rngs=nnx.Rngs(0)), {"conv_out", "frame_cond", "layout"})
    base = VideoUNet(dataclasses.replace(cfg, layout_grid=0), rngs=nnx.Rngs(0))
    nnx.update(base, nnx.state(model, nnx.Param).filter(lambda path, _: "layout" not in path))
    x, logsnr, tokens = inputs(t=4)

    def head_term(x, tokens):
        return _forward(model, x, logsnr, tokens) - _forward(base, x, logsnr, tokens)

    term = head_term(x, tokens)
    np.testing.assert_allclose(head_term(jax.random.normal(jax.random.key(9), x.shape), tokens), term,
                               atol=1e-5)
    assert float(jnp.abs(term[:, 1:] - term[:, :-1]).max(axis=(2, 3, 4)).min()) > 1e-4  # per frame
    blocks = term.reshape(*term.shape[:2], 4, 2, 4, 2, 3)  # grid 4 on 8x8: constant 2x2 blocks
    np.testing.assert_allclose(blocks, jnp.broadcast_to(blocks[:, :, :, :1, :, :1], blocks.shape), atol=1e-6)
    other_tokens = inputs(seed=5)[2]
    other_text = head_term(x, other_tokens)
    assert float(jnp.abs(other_text - term).max(axis=(1, 2, 3, 4)).min()) > 1e-4


def test_word_conditioning_is_the_sum_of_the_kept_tokens_word_vectors():
    """The word term is order-free, ignores padded positions, vanishes for a dropped caption, and
    changes the output for a one-word change from the first step (random init)."""
    model = VideoUNet(dataclasses.replace(TINY, word_conditioning=True), rngs=nnx.Rngs(0))
    table = model.word_cond[...]
    assert float(table.std()) > 0.1  # random init: every word acts at once
    _, _, tokens = inputs()
    mask = tokens > 0
    words = model._words(tokens, mask, None)
    np.testing.assert_allclose(words, jnp.einsum("bl,bld->bd", mask.astype(jnp.float32), table[tokens]),
                               rtol=1e-6)
    reversed_words = model._words(tokens[:, ::-1], mask[:, ::-1], None)
    np.testing.assert_allclose(reversed_words, words, rtol=1e-5, atol=1e-5)
    padded = jnp.where(mask, tokens, 7)  # other ids under the mask's padding: no effect
    np.testing.assert_allclose(model._words(padded, mask, None), words, rtol=1e-6)
    dropped = model._words(tokens, mask, jnp.array([True, False]))
    np.testing.assert_allclose(dropped[0], 0.0)
    np.testing.assert_allclose(dropped[1], words[1], rtol=1e-6)
    x, logsnr, _ = inputs()
    model = _randomize(model, {"conv_out"})
    changed = tokens.at[:, 0].set(tokens[:, 0] % (TINY.vocab_size - 1) + 1)
    without = VideoUNet(TINY, rngs=nnx.Rngs(0))
    nnx.update(without, nnx.state(model, nnx.Param).filter(lambda path, _: "word_cond" not in path))
    gap = jnp.abs(_forward(model, x, logsnr, changed) - _forward(model, x, logsnr, tokens)).mean()
    gap_without = jnp.abs(_forward(without, x, logsnr, changed) - _forward(without, x, logsnr, tokens)).mean()
    assert float(gap) > 2 * float(gap_without)


def test_layout_grid_must_divide_the_frame_size():
    from configs import moving_digits
    from vdm_jax.config import ConfigError, from_configdict

    cd = moving_digits.get_config("smoke")
    cd.model.layout_grid = 3
    with pytest.raises(ConfigError, match="model.layout_grid"):
        from_configdict(cd)


def test_temporal_conv_mixes_neighbours_only_between_video_frames():
    with nnx.use_eager_sharding(False):  # logical axis names, no mesh: as inside VideoUNet
        layer = TemporalConv(4, dtype=jnp.float32, rngs=nnx.Rngs(0))
    layer.kernel[...] = jax.random.normal(jax.random.key(1), layer.kernel.shape)
    x = jax.random.normal(jax.random.key(2), (1, 6, 2, 2, 4))
    frame_mask = jnp.array([[True, True, True, True, False, False]])  # 4 video frames + 2 images
    y = layer(x, frame_mask)
    bump = jax.random.normal(jax.random.key(3), x.shape[2:])  # not constant: GroupNorm removes that

    def bumped_at(t):
        return layer(x.at[:, t].add(bump), frame_mask)

    bumped = bumped_at(1)
    changed = np.abs(np.asarray(bumped - y)).max(axis=(0, 2, 3, 4)) > 1e-6
    np.testing.assert_array_equal(changed, [True, True, True, False, False, False])  # frames 0-2 only
    image = bumped_at(3)  # the last video frame: images never see it
    assert np.abs(np.asarray(image - y))[:, 4:].max() == 0.0
    assert np.abs(np.asarray(bumped_at(4) - y))[:, 5].max() == 0.0


def test_all_options_keep_image_frames_independent():
    """Joint image-video training: an image frame's output depends on nothing but itself (and text)."""
    model = _randomize(VideoUNet(dataclasses.replace(TINY, **ALL), rngs=nnx.Rngs(0)),
                       {"conv_out", *OPTION_PARAMS})
    x, logsnr, tokens = inputs(t=5)
    frame_mask = jnp.array([[True, True, True, False, False]] * 2)
    out = _forward(model, x, logsnr, tokens, frame_mask)
    for changed_frame in (0, 2, 4):
        bump = jax.random.normal(jax.random.key(changed_frame), x.shape[2:])
        other = _forward(model, x.at[:, changed_frame].add(bump), logsnr, tokens, frame_mask)
        untouched = [f for f in (3, 4) if f != changed_frame]
        np.testing.assert_allclose(other[:, untouched], out[:, untouched], atol=1e-5)
        video = [f for f in range(3) if f != changed_frame]
        if changed_frame < 3:  # video frames do see each other
            assert float(jnp.abs(other[:, video] - out[:, video]).max()) > 1e-4


@pytest.mark.parametrize("axes", [{"data": 2, "fsdp": 1, "tensor": 1, "context": 4},
                                  {"data": 2, "fsdp": 2, "tensor": 2, "context": 1}])
def test_motion_options_exact_under_mesh(devices8, axes):
    """Forward and gradients of a model with every option: sharded == single device."""
    rules = DEFAULT_RULES
    cfg = dataclasses.replace(TINY, **ALL, channel_mults=(1,), attention_resolutions=(8,))
    model = _randomize(VideoUNet(cfg, rngs=nnx.Rngs(0), sharding_rules=rules),
                       {"conv_out", *OPTION_PARAMS})
    graphdef, state = nnx.split(model)
    x, logsnr, tokens = inputs(b=4, t=4)
    frame_mask = jnp.array([[True, True, True, False]] * 4)

    def loss(st, x, logsnr, tokens, frame_mask):
        pred = _forward(nnx.merge(graphdef, st), x, logsnr, tokens, frame_mask)
        return jnp.mean(pred * x), pred

    fn = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (ref_loss, ref_pred), ref_grads = fn(state, x, logsnr, tokens, frame_mask)
    mesh = make_mesh(MeshConfig(**axes, rules=rules))
    sharded = jax.device_put(state, state_shardings(state, mesh, rules))
    batch = jax.device_put((x, logsnr, tokens, frame_mask), NamedSharding(mesh, P(("data", "fsdp"))))
    with jax.set_mesh(mesh):
        (loss_s, pred), grads = fn(sharded, *batch)
    np.testing.assert_allclose(loss_s, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred, ref_pred, rtol=1e-4, atol=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * float(jnp.abs(r).max()) + 1e-8)
