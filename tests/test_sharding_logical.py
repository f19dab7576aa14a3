"""Logical axis rules -> PartitionSpecs, constraints and parameter shardings."""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from vdm_jax.config import DEFAULT_RULES
from vdm_jax.sharding.logical import constrain, logical_to_spec, state_shardings, state_specs

RULES = DEFAULT_RULES


def test_first_match_wins_and_missing_names_replicate():
    rules = (("embed", "fsdp"), ("embed", "tensor"), ("mlp", "tensor"))
    assert logical_to_spec(("embed", "mlp"), rules) == P("fsdp", "tensor")
    assert logical_to_spec(("unknown", None, "mlp"), rules) == P(None, None, "tensor")


def test_mesh_axis_used_once_per_spec():
    rules = (("embed", "fsdp"), ("embed", "tensor"), ("mlp", "tensor"))
    # the second "embed" falls through to its next rule; "mlp" then finds "tensor" taken
    assert logical_to_spec(("embed", "embed", "mlp"), rules) == P("fsdp", "tensor", None)


def test_default_rules():
    assert logical_to_spec(("act_batch", "act_frames", "act_height", "act_width", "act_embed"), RULES) == \
        P(("data", "fsdp"), "context", None, None, None)
    assert logical_to_spec(("act_batch", "act_time", "act_height_t", "act_width", "act_embed"), RULES) == \
        P(("data", "fsdp"), None, "context", None, None)
    assert logical_to_spec((None, None, "conv_in", "conv_out"), RULES) == P(None, None, "fsdp", "tensor")
    assert logical_to_spec(("embed", "heads"), RULES) == P("fsdp", "tensor")


def test_indivisible_dims_drop_axes():
    sizes = {"data": 2, "fsdp": 4, "tensor": 2, "context": 1}
    spec = logical_to_spec(("act_batch", "embed", "mlp"), RULES, shape=(2, 12, 3), axis_sizes=sizes)
    assert spec == P("data", "fsdp", None)


def _mesh():
    return jax.make_mesh((2, 2, 2, 1), ("data", "fsdp", "tensor", "context"), axis_types=(AxisType.Auto,) * 4)


def test_constrain_noop_without_mesh_and_applied_with_mesh(devices8):
    x = jnp.ones((4, 6))
    assert constrain(x, ("act_batch", "act_embed"), RULES) is x
    mesh = _mesh()
    with jax.set_mesh(mesh):
        y = jax.jit(lambda x: constrain(x * 2, ("act_batch", "act_mlp"), RULES))(x)
    assert y.sharding.spec == P(("data", "fsdp"), "tensor")


def test_state_shardings_follow_param_metadata(devices8):
    class M(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.ones((8, 4)), out_sharding=("embed", "mlp"))
            self.b = nnx.Param(jnp.ones((4,)))

    with nnx.use_eager_sharding(False):
        state = nnx.state(M())
    mesh = _mesh()
    specs = state_specs(state, RULES, mesh)
    assert specs["w"].get_value() == P("fsdp", "tensor") and specs["b"].get_value() == P()
    shardings = state_shardings(state, mesh, RULES)
    placed = jax.device_put(state, shardings)
    assert placed["w"].get_value().sharding == NamedSharding(mesh, P("fsdp", "tensor"))
    assert placed["w"].get_value().addressable_shards[0].data.shape == (4, 2)
