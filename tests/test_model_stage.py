"""Cascade stages (model.conditioning): shapes and gradients, what noise augmentation changes,
and exactness of the new inputs under a mesh."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from tests.test_model_unet import TINY, inputs
from vdm_jax.config import DEFAULT_RULES, ConfigError, MeshConfig, ModelConfig, from_configdict
from vdm_jax.diffusion.augmentation import augment
from vdm_jax.models import VideoUNet
from vdm_jax.models.stage import low_res_shape, repeat_frames, upsample_bilinear
from vdm_jax.sharding.logical import state_shardings
from vdm_jax.sharding.mesh import make_mesh

SSR = dataclasses.replace(TINY, conditioning="spatial_sr", conditioning_factor=2)
TSR = dataclasses.replace(TINY, conditioning="temporal_sr", conditioning_factor=2)


def _model(cfg, seed=0):
    model = VideoUNet(cfg, rngs=nnx.Rngs(seed))
    k = model.conv_out.kernel
    k[...] = 0.1 * jax.random.normal(jax.random.key(seed + 100), k.shape)
    return model


def _low_res(cfg, x, seed=1):
    return jax.random.normal(jax.random.key(seed), low_res_shape(cfg, x.shape))


def _forward(model, x, logsnr, tokens, low_res, aug, frame_mask=None):
    return model(x, logsnr, tokens=tokens, token_mask=tokens > 0, low_res=low_res, aug_logsnr=aug,
                 frame_mask=frame_mask).prediction


@pytest.mark.parametrize("cfg", [SSR, TSR], ids=["spatial_sr", "temporal_sr"])
def test_stage_shapes_gradients_and_dependence_on_the_conditioning_video(cfg):
    graphdef, state = nnx.split(_model(cfg))
    x, logsnr, tokens = inputs(b=2, t=4)
    low = _low_res(cfg, x)
    aug = jnp.array([3.0, 8.0])

    @jax.jit
    def run(st, low):
        def loss(st, low):
            out = _forward(nnx.merge(graphdef, st), x, logsnr, tokens, low, aug)
            return jnp.mean(out ** 2), out

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(st, low)
        other = _forward(nnx.merge(graphdef, st), x, logsnr, tokens, low.at[1].add(1.0), aug)
        return out, grads, other

    out, (grads, g_low), other = run(state, low)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(jnp.abs(g_low).max()) > 0  # the output reads the conditioning video
    flat = dict(nnx.to_flat_state(grads))
    for name in ("aug1", "aug2", "conv_in"):
        g = [v for k, v in flat.items() if name in map(str, k)]
        assert g and all(np.isfinite(np.asarray(v[...])).all() for v in g)
        assert max(float(jnp.abs(v[...]).max()) for v in g) > 0, name
    # one example's conditioning video changes only that example's output
    np.testing.assert_allclose(other[0], out[0], atol=1e-6)
    assert float(jnp.abs(other[1] - out[1]).max()) > 1e-4


def test_wrong_conditioning_shape_or_missing_input_fails_clearly():
    model = _model(SSR)
    x, logsnr, tokens = inputs(b=2, t=4)
    with pytest.raises(ValueError, match=r"low_res must be \(2, 4, 4, 4, 3\)"):
        _forward(model, x, logsnr, tokens, jnp.zeros((2, 4, 8, 8, 3)), jnp.zeros((2,)))
    with pytest.raises(ValueError, match="needs low_res and aug_logsnr"):
        _forward(model, x, logsnr, tokens, None, None)


def test_noise_augmentation_changes_only_the_conditioning_path():
    """The augmentation level enters only through its embedding (same video, other level: other
    output); the noise touches only the conditioning video, is exact q_sample, and at a very high
    log-SNR leaves the video as it is."""
    model = _model(SSR)
    x, logsnr, tokens = inputs(b=2, t=4)
    low = _low_res(SSR, x)
    noise = jax.random.normal(jax.random.key(5), low.shape)
    a = _forward(model, x, logsnr, tokens, low, jnp.array([2.0, 2.0]))
    b = _forward(model, x, logsnr, tokens, low, jnp.array([2.0, 9.0]))
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert float(jnp.abs(a[1] - b[1]).max()) > 1e-5
    lvl = jnp.array([0.0, 30.0])
    noised = augment(low, lvl, noise)
    np.testing.assert_allclose(noised[1], low[1], atol=1e-5)  # log-SNR 30: clean
    np.testing.assert_allclose(noised[0], np.sqrt(0.5) * (low[0] + noise[0]), atol=1e-5)
    # a base model is unchanged by the option's existence (same input channels, no stage params)
    base = VideoUNet(TINY, rngs=nnx.Rngs(0))
    assert base.stage is None and base.conv_in.kernel.shape[2] == 3 and model.conv_in.kernel.shape[2] == 6


def test_resizing_to_the_output_shape():
    v = jnp.arange(2 * 2 * 3 * 3 * 1, dtype=jnp.float32).reshape(2, 2, 3, 3, 1)
    rep = repeat_frames(v, 2)
    assert rep.shape == (2, 4, 3, 3, 1)
    np.testing.assert_array_equal(rep[:, 0::2], v)
    np.testing.assert_array_equal(rep[:, 1::2], v)
    up = upsample_bilinear(jnp.ones((1, 1, 4, 4, 3)) * 0.5, 2)
    assert up.shape == (1, 1, 8, 8, 3)
    np.testing.assert_allclose(up, 0.5, atol=1e-6)


def test_stage_config_is_validated():
    with pytest.raises(ConfigError, match="model.conditioning_factor.*divide the frame size"):
        ModelConfig(resolution=16, conditioning="spatial_sr", conditioning_factor=3)
    with pytest.raises(ConfigError, match="model.conditioning'.*allowed"):
        ModelConfig(conditioning="ssr")
    with pytest.raises(ConfigError, match="model.conditioning_factor.*data.num_frames=6"):
        from_configdict({"data": {"num_frames": 6}, "model": {"conditioning": "temporal_sr",
                                                              "conditioning_factor": 4}})
    with pytest.raises(ConfigError, match="data.images_per_video"):
        from_configdict({"data": {"images_per_video": 2}, "model": {"conditioning": "temporal_sr"}})
    from_configdict({"data": {"images_per_video": 2}, "model": {"conditioning": "spatial_sr"}})  # valid


@pytest.mark.parametrize("axes", [{"data": 2, "fsdp": 2, "tensor": 1, "context": 2}])
def test_stage_inputs_exact_under_mesh(devices8, axes):
    """Forward and gradients (also w.r.t. the conditioning video) of a spatial SR stage with
    image frames: sharded == single device."""
    rules = DEFAULT_RULES
    cfg = dataclasses.replace(SSR, channel_mults=(1,), attention_resolutions=(8,))
    state = nnx.state(_model(cfg))
    sharded_model = VideoUNet(cfg, rngs=nnx.Rngs(0), sharding_rules=rules)
    graphdef = nnx.graphdef(sharded_model)
    x, logsnr, tokens = inputs(b=4, t=4)
    low = _low_res(cfg, x)
    aug = jnp.array([1.0, 4.0, 7.0, 10.0])
    frame_mask = jnp.array([[True, True, True, False]] * 4)

    def loss(st, x, logsnr, tokens, low, aug, frame_mask):
        pred = _forward(nnx.merge(graphdef, st), x, logsnr, tokens, low, aug, frame_mask)
        return jnp.mean(pred * x), pred

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 4), has_aux=True))
    (ref_loss, ref_pred), ref_grads = fn(state, x, logsnr, tokens, low, aug, frame_mask)
    mesh = make_mesh(MeshConfig(**axes, rules=rules))
    sharded = jax.device_put(state, state_shardings(state, mesh, rules))
    batch = jax.device_put((x, logsnr, tokens, low, aug, frame_mask),
                           NamedSharding(mesh, P(("data", "fsdp"))))
    with jax.set_mesh(mesh):
        (loss_s, pred), grads = fn(sharded, *batch)
    np.testing.assert_allclose(loss_s, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred, ref_pred, rtol=1e-4, atol=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * float(jnp.abs(r).max()) + 1e-8)


@pytest.mark.parametrize("module, arg, kind, shape", [
    ("moving_digits_cascade", "ssr", "spatial_sr", (8, 32)),
    ("moving_digits_cascade", "tsr", "temporal_sr", (8, 16)),
    ("moving_digits_cascade", "ssr,smoke", "spatial_sr", (4, 32)),
    ("vdm_t2v_cascade", "ssr", "spatial_sr", (16, 128)),
    ("vdm_t2v_cascade", "tsr", "temporal_sr", (16, 64)),
])
def test_cascade_recipes_are_valid_stages(module, arg, kind, shape):
    import importlib

    cfg = from_configdict(importlib.import_module(f"configs.{module}").get_config(arg))
    assert cfg.model.conditioning.value == kind and (cfg.data.num_frames, cfg.data.resolution) == shape
