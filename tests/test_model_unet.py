"""VideoUNet behaviour: shapes, gradients, temporal masking and order, CFG null text, backends."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vdm_jax.config import ModelConfig
from vdm_jax.models import VideoUNet, param_count

TINY = ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                   resolution=8, head_dim=4, cond_dim=16, text_dim=16, text_heads=2, text_layers=1,
                   max_text_len=6, temporal_rel_pos_buckets=8, temporal_rel_pos_max_distance=16,
                   attention_backend="xla")


def make(cfg=TINY, seed=0, randomize_out=True):
    """Model with a random (not zero) last conv so that outputs depend on everything."""
    model = VideoUNet(cfg, rngs=nnx.Rngs(seed))
    if randomize_out:
        k = model.conv_out.kernel
        k[...] = 0.1 * jax.random.normal(jax.random.key(seed + 100), k.shape)
    return model


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(graphdef, deterministic, state, x, logsnr, kw):
    return nnx.merge(graphdef, state)(x, logsnr, deterministic=deterministic, **kw).prediction


def runner(model, deterministic=True):
    """A jitted forward; models of equal config share one compile (graphdef is static)."""
    graphdef, state = nnx.split(model)
    return lambda x, logsnr, **kw: _apply(graphdef, deterministic, state, x, logsnr, kw)


def text_kw(tokens, frame_mask=None, drop=None):
    """Always the same pytree structure, so calls share one compile."""
    b, t = tokens.shape[0], 5
    return {"tokens": tokens, "token_mask": tokens > 0,
            "frame_mask": jnp.ones((b, t), bool) if frame_mask is None else frame_mask,
            "drop_text": jnp.zeros((b,), bool) if drop is None else drop}


def inputs(b=2, t=4, res=8, seed=0, cfg=TINY):
    ks = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(ks[0], (b, t, res, res, cfg.in_channels))
    logsnr = jax.random.uniform(ks[1], (b,), minval=-5, maxval=5)
    tokens = jax.random.randint(ks[2], (b, cfg.max_text_len), 1, cfg.vocab_size)
    tokens = tokens.at[:, -2:].set(0)
    return x, logsnr, tokens


@pytest.mark.parametrize("overrides,text", [
    ({}, "tokens"),
    ({"dtype": "bfloat16", "num_heads": 2, "attention_resolutions": (8, 4), "text_encoder": "precomputed",
      "precomputed_text_dim": 12, "remat": "full", "dropout": 0.1}, "embeddings"),
    ({"text_encoder": "none", "temporal_attention": False, "channel_mults": (1, 2, 2), "num_res_blocks": 2,
      "remat": "dots"}, None),
])
def test_shapes_and_dtypes(overrides, text):
    cfg = dataclasses.replace(TINY, **overrides)
    model = make(cfg)
    x, logsnr, tokens = inputs(b=2, t=3)
    kw = {}
    if text == "tokens":
        kw = {"tokens": tokens, "token_mask": tokens > 0}
    elif text == "embeddings":
        kw = {"text_embeddings": jnp.ones((2, 5, 12)), "token_mask": jnp.ones((2, 5), bool)}
    out = runner(model, deterministic=False)(x, logsnr, **kw)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out)))
    params = nnx.state(model, nnx.Param)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert param_count(cfg) == sum(p.size for p in jax.tree.leaves(params))


def test_last_conv_is_zero_initialized():
    x, logsnr, tokens = inputs(t=5)
    out = runner(make(randomize_out=False))(x, logsnr, **text_kw(tokens))
    assert float(jnp.abs(out).max()) == 0.0


def test_gradients_reach_every_parameter():
    model = make(dataclasses.replace(TINY, attention_resolutions=(8, 4), temporal_abs_pos=True))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x, logsnr, tokens = inputs(b=2, t=3)
    frame_mask = jnp.array([[True, True, False], [True, True, True]])
    drop = jnp.array([False, True])  # the null text must get a gradient too

    @jax.jit
    def grads(params):
        def loss(p):
            m = nnx.merge(graphdef, p, rest)
            out = m(x, logsnr, tokens=tokens, token_mask=tokens > 0, drop_text=drop, frame_mask=frame_mask)
            return jnp.sum(out.prediction * x)
        return jax.grad(loss)(params)

    flat = nnx.to_flat_state(grads(params))
    missing = [".".join(map(str, path)) for path, g in flat if not float(jnp.abs(g[...]).max()) > 0]
    assert not missing, f"parameters without gradient: {missing}"


def test_temporal_mask_isolates_image_frames():
    run = runner(make())
    x, logsnr, tokens = inputs(t=5)
    kw = text_kw(tokens, frame_mask=jnp.array([[1, 1, 1, 0, 0]] * 2, bool))
    base = run(x, logsnr, **kw)
    changed_video = run(x.at[:, 0].add(1.0), logsnr, **kw)
    diff = jnp.abs(changed_video - base).max(axis=(0, 2, 3, 4))
    assert float(diff[3:].max()) < 1e-6, "image frames must not see video frames"
    assert float(diff[1:3].min()) > 1e-4, "video frames must see the other video frames"
    changed_image = run(x.at[:, 4].add(1.0), logsnr, **kw)
    diff = jnp.abs(changed_image - base).max(axis=(0, 2, 3, 4))
    assert float(diff[:4].max()) < 1e-6, "no frame may see an image frame"
    assert float(diff[4]) > 1e-4


def _set_rel_bias(model, scale):
    for _, m in model.iter_modules():
        if hasattr(m, "rel_bias"):
            m.rel_bias[...] = scale * jax.random.normal(jax.random.key(3), m.rel_bias.shape)


@pytest.mark.parametrize("scale,sensitive", [(1.0, True), (0.0, False)])
def test_temporal_attention_is_order_sensitive(scale, sensitive):
    """With a relative-position bias, permuting frames is not just permuting outputs; with the
    bias zeroed the model is permutation-equivariant (which shows the test can tell)."""
    model = make()
    _set_rel_bias(model, scale)
    run = runner(model)
    x, logsnr, tokens = inputs(t=5)
    perm = jnp.array([2, 0, 4, 3, 1])
    out_perm = run(x[:, perm], logsnr, **text_kw(tokens))
    out = run(x, logsnr, **text_kw(tokens))[:, perm]
    gap = float(jnp.abs(out_perm - out).max())
    assert (gap > 1e-3) if sensitive else (gap < 1e-5)


@pytest.mark.parametrize("abs_pos", [False, True])
def test_absolute_frame_position_breaks_frame_symmetry(abs_pos):
    """A clip of identical frames: with relative positions only, every frame sees the same
    values and gets the same output; ``temporal_abs_pos`` tells the frames apart."""
    model = make(dataclasses.replace(TINY, temporal_abs_pos=abs_pos))
    _set_rel_bias(model, 1.0)
    for _, m in model.iter_modules():
        if getattr(m, "abs_pos", None) is not None:  # zero-initialised: give it a value
            m.abs_pos.kernel[...] = 0.3 * jax.random.normal(jax.random.key(5), m.abs_pos.kernel.shape)
    x, logsnr, tokens = inputs(t=5)
    x = jnp.repeat(x[:, :1], 5, axis=1)
    out = runner(model)(x, logsnr, **text_kw(tokens))
    spread = float(jnp.abs(out - out[:, :1]).max())
    assert (spread > 1e-3) if abs_pos else (spread < 1e-5)


def test_runs_on_other_frame_counts():
    """Nothing in the model is tied to a frame count; 20 frames exceed the exact and the
    log-spaced relative-position buckets (max_distance=16)."""
    x, logsnr, tokens = inputs(b=1, t=20)
    out = runner(make())(x, logsnr, tokens=tokens)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))


def test_drop_text_ignores_tokens():
    run = runner(make())
    x, logsnr, tokens = inputs(t=5)
    other = jnp.flip(tokens, axis=1).at[:, 0].set(7)
    drop = jnp.array([True, False])
    a = run(x, logsnr, **text_kw(tokens, drop=drop))
    b = run(x, logsnr, **text_kw(other, drop=drop))
    assert float(jnp.abs(a[0] - b[0]).max()) < 1e-6, "dropped text must not depend on tokens"
    assert float(jnp.abs(a[1] - b[1]).max()) > 1e-4, "kept text must depend on tokens"


@pytest.mark.slow
def test_remat_policies_match():
    x, logsnr, tokens = inputs(b=1, t=2)
    outs = []
    for policy in ("none", "dots_no_batch"):
        model = make(dataclasses.replace(TINY, remat=policy))
        graphdef, params = nnx.split(model)

        def loss(p, graphdef=graphdef):
            return jnp.sum(nnx.merge(graphdef, p)(x, logsnr, tokens=tokens[:1]).prediction ** 2)

        outs.append(jax.jit(jax.value_and_grad(loss))(params))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(outs[0][1]), jax.tree.leaves(outs[1][1])):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.abs(a).max()) + 1e-7)


@pytest.mark.parametrize("backend", ["cudnn", "splash"])
def test_accelerator_backends_refused_on_cpu(backend):
    graphdef, state = nnx.split(make(dataclasses.replace(TINY, attention_backend=backend, dtype="bfloat16")))
    x, logsnr, tokens = inputs(b=1, t=1)
    with pytest.raises(ValueError, match="model.attention_backend"):
        jax.eval_shape(lambda s: nnx.merge(graphdef, s)(x, logsnr, tokens=tokens[:1]), state)


def test_bad_input_errors():
    model = make()
    with pytest.raises(ValueError, match="model.in_channels"):
        model(jnp.ones((1, 2, 8, 8, 4)), jnp.zeros((1,)))
    with pytest.raises(ValueError, match="model.max_text_len"):
        model(jnp.ones((1, 2, 8, 8, 3)), jnp.zeros((1,)), tokens=jnp.ones((1, 9), jnp.int32))
    with pytest.raises(ValueError, match="model.attention_resolutions"):
        VideoUNet(dataclasses.replace(TINY, attention_resolutions=(3,)), rngs=nnx.Rngs(0))


def test_auto_backend_resolution_on_cpu():
    from vdm_jax.models.attention import resolve_backend

    assert resolve_backend("auto", 4096, 256, jnp.bfloat16) == "xla"  # CPU: never cuDNN
    assert resolve_backend("xla", 4096, 256, jnp.bfloat16) == "xla"
    with pytest.raises(ValueError, match="model.attention_backend='cudnn'"):
        resolve_backend("cudnn", 4096, 256, jnp.bfloat16)
