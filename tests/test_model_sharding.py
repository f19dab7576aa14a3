"""VideoUNet on 8 fake CPU devices: sharded params + batch give the single-device result."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vdm_jax.config import DEFAULT_RULES, MeshConfig, ModelConfig
from vdm_jax.models import VideoUNet
from vdm_jax.sharding.logical import logical_to_spec, state_shardings, variable_logical_names
from vdm_jax.sharding.mesh import make_mesh

RULES = DEFAULT_RULES
CFG = ModelConfig(base_channels=16, channel_mults=(1,), attention_resolutions=(8,), resolution=8, head_dim=4,
                  cond_dim=16, text_dim=16, text_heads=2, text_layers=1, max_text_len=6,
                  temporal_rel_pos_buckets=8, attention_backend="xla")


def _model():
    model = VideoUNet(CFG, rngs=nnx.Rngs(0), sharding_rules=RULES)
    k = model.conv_out.kernel
    k[...] = 0.1 * jax.random.normal(jax.random.key(1), k.shape)
    return model


def _batch(b=4, t=4):
    ks = jax.random.split(jax.random.key(2), 3)
    x = jax.random.normal(ks[0], (b, t, 8, 8, 3))
    logsnr = jax.random.uniform(ks[1], (b,), minval=-4, maxval=4)
    tokens = jax.random.randint(ks[2], (b, 6), 0, 200)
    frame_mask = jnp.array([[True] * (t - 1) + [False]] * b)
    return x, logsnr, tokens, frame_mask


def _loss_and_grad(graphdef):
    def loss(state, x, logsnr, tokens, frame_mask):
        model = nnx.merge(graphdef, state)
        out = model(x, logsnr, tokens=tokens, token_mask=tokens > 0, frame_mask=frame_mask)
        return jnp.mean(out.prediction * x), out.prediction

    return jax.jit(jax.value_and_grad(loss, has_aux=True))


@pytest.mark.parametrize("axes", [
    {"data": 2, "fsdp": 2, "tensor": 2, "context": 1},
    pytest.param({"data": 1, "fsdp": 2, "tensor": 2, "context": 2}, marks=pytest.mark.slow),
])
def test_sharded_forward_and_grad_match_single_device(devices8, axes):
    graphdef, state = nnx.split(_model())
    batch = _batch()
    (ref_loss, ref_pred), ref_grads = _loss_and_grad(graphdef)(state, *batch)

    mesh = make_mesh(MeshConfig(**axes, rules=RULES))
    shardings = state_shardings(state, mesh, RULES)
    sharded = jax.device_put(state, shardings)
    batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
    sharded_batch = jax.device_put(batch, batch_sharding)
    with jax.set_mesh(mesh):
        (loss, pred), grads = _loss_and_grad(graphdef)(sharded, *sharded_batch)

    # Parameters really are sharded as the rules say.
    sizes = dict(mesh.shape)
    leaves = jax.tree.leaves(sharded, is_leaf=lambda v: isinstance(v, nnx.Variable))
    for v in leaves:
        names = variable_logical_names(v) or (None,) * v.get_value().ndim
        expected = logical_to_spec(names, RULES, shape=v.get_value().shape, axis_sizes=sizes)
        assert v.get_value().sharding.spec == expected
    conv = sharded["down"][0]["res"]["conv2"]["kernel"].get_value()
    assert conv.sharding.spec == P(None, None, "fsdp", "tensor")
    assert conv.addressable_shards[0].data.shape == (3, 3, 8, 8)
    q = sharded["down"][0]["spatial"]["proj"]["q"]["kernel"].get_value()
    assert q.sharding.spec == P("fsdp", "tensor")
    assert sharded["norm_out"]["scale"].get_value().sharding.is_fully_replicated

    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred, ref_pred, rtol=1e-4, atol=1e-5)
    for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-4 * float(jnp.abs(r).max()) + 1e-8)
