"""Train state and its abstract-first, sharded creation.

``jax.eval_shape(init)`` gives the state's shapes without allocating; logical-axis rules turn the
parameters' annotations into ``NamedSharding``s; ``jax.jit(init, out_shardings=...)`` then builds
each array directly on its devices. The model's NNX graph definition (static) lives in
:class:`ModelBundle`; the state itself is a plain pytree of arrays (params as a pure dict), so
optax, orbax and ``jax.jit`` see ordinary arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdm_jax.config import Config
from vdm_jax.models import VideoUNet
from vdm_jax.sharding import logical
from vdm_jax.training.optimizer import make_optimizer


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: Any  # pure dict of float32 arrays
    ema_params: Any
    opt_state: Any
    rng: jax.Array  # uint32[2] raw key (checkpoint friendly)


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """Static pieces needed to run the model from a pure params dict."""

    graphdef: Any
    others: Any  # non-parameter NNX state (e.g. dropout RNG), reseeded every step
    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    param_shardings: Any  # pure dict of NamedSharding, same tree as params

    def apply(self, params: Any, x: jax.Array, logsnr: jax.Array, *, dropout_rng: jax.Array | None = None,
              **kwargs: Any):
        """Run the model with ``params`` (pure dict). ``kwargs`` go to ``VideoUNet.__call__``."""
        state = nnx.State(params)
        model = nnx.merge(self.graphdef, state, self.others, copy=True)
        if dropout_rng is not None:
            nnx.reseed(model, dropout=dropout_rng)
        return model(x, logsnr, **kwargs)


def build_model(config: Config, rng: jax.Array) -> VideoUNet:
    return VideoUNet(config.model, rngs=nnx.Rngs(params=rng, dropout=jax.random.fold_in(rng, 1)),
                     sharding_rules=config.mesh.rules)


def _pure(state: Any) -> Any:
    return nnx.to_pure_dict(state)


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """The model without its values: static graph, abstract parameters and their shardings."""

    graphdef: Any
    abstract_params: Any  # pure dict of ShapeDtypeStructs carrying ``param_shardings``
    abstract_others: Any  # non-parameter NNX state (abstract)
    param_shardings: Any  # pure dict of NamedSharding

    def bundle(self, others: Any, tx: optax.GradientTransformation,
               lr_schedule: optax.Schedule) -> ModelBundle:
        """The static bundle, given the model's non-parameter state (a pure dict, maybe empty)."""
        others = nnx.State(others) if others else self.abstract_others
        return ModelBundle(graphdef=self.graphdef, others=others, tx=tx, lr_schedule=lr_schedule,
                           param_shardings=self.param_shardings)


def plan_model(config: Config, mesh: Mesh) -> ModelPlan:
    """Abstract (``nnx.eval_shape``) model; logical-axis rules give each parameter its sharding."""
    # No mesh context here: the parameters' ``out_sharding`` metadata holds *logical* names, which
    # flax would otherwise try to apply as mesh axes. Placement comes from the shardings returned.
    seed_key = jax.random.PRNGKey(config.training.seed)
    graphdef, abs_params, abs_others = nnx.split(nnx.eval_shape(lambda: build_model(config, seed_key)),
                                                 nnx.Param, ...)
    param_sh = _pure(logical.state_shardings(abs_params, mesh, config.mesh.rules))
    abstract = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                            _pure(abs_params), param_sh)
    return ModelPlan(graphdef=graphdef, abstract_params=abstract, abstract_others=abs_others,
                     param_shardings=param_sh)


def model_others(config: Config, device: jax.Device | None = None) -> Any:
    """The model's small non-parameter state (RNG counters) as a pure dict, built on ``device``
    (default: JAX's default device)."""
    key = jax.random.PRNGKey(config.training.seed)
    build = jax.jit(lambda k: _pure(nnx.split(build_model(config, k), nnx.Param, ...)[2]))
    if device is None:
        return build(key)
    with jax.default_device(device):
        return build(key)


@dataclasses.dataclass(frozen=True)
class TrainStatePlan:
    """The train state without its values: what ``create_train_state`` builds, and what an
    ahead-of-time compile (``launch.compile_check``) lowers against."""

    model: ModelPlan
    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    init: Any  # key -> (TrainState, non-parameter NNX state)
    abstract_state: TrainState  # ShapeDtypeStructs carrying ``state_shardings``
    state_shardings: TrainState


def plan_train_state(config: Config, mesh: Mesh) -> TrainStatePlan:
    model = plan_model(config, mesh)
    tx, lr_schedule = make_optimizer(config.optimizer, config.training.num_train_steps)
    replicated = NamedSharding(mesh, PartitionSpec())

    def init(key: jax.Array) -> tuple[TrainState, Any]:
        _, params, others = nnx.split(build_model(config, key), nnx.Param, ...)
        params = _pure(params)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                          opt_state=tx.init(params), rng=jax.random.fold_in(key, 2)), others

    abs_state, _ = jax.eval_shape(init, jax.random.PRNGKey(config.training.seed))
    opt_sh = optax.tree_map_params(tx, lambda _, s: s, abs_state.opt_state, model.param_shardings,
                                   transform_non_params=lambda _: replicated)
    state_sh = TrainState(step=replicated, params=model.param_shardings, ema_params=model.param_shardings,
                          opt_state=opt_sh, rng=replicated)
    return TrainStatePlan(model=model, tx=tx, lr_schedule=lr_schedule, init=init,
                          abstract_state=abstract_state(state_sh, abs_state), state_shardings=state_sh)


def create_train_state(config: Config, mesh: Mesh) -> tuple[TrainState, ModelBundle, TrainState]:
    """Returns (state, bundle, state_shardings); the state is created sharded on ``mesh``."""
    plan = plan_train_state(config, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    others_sh = jax.tree.map(lambda _: replicated, _pure(plan.model.abstract_others))
    init = jax.jit(lambda k: (lambda s, o: (s, _pure(o)))(*plan.init(k)),
                   out_shardings=(plan.state_shardings, others_sh),
                   compiler_options=_init_compiler_options(mesh))
    state, others = init(jax.random.PRNGKey(config.training.seed))
    return state, plan.model.bundle(others, plan.tx, plan.lr_schedule), plan.state_shardings


def _init_compiler_options(mesh: Mesh) -> dict[str, Any] | None:
    """The init program (hundreds of random initializers) runs once. On CPU, XLA's backend
    optimizations of it cost more than half of its compile time (smoke model: 20 s -> 9 s, sharded
    over 8 devices 27 s -> 11 s) and save nothing worth having."""
    if mesh.devices.flat[0].platform == "cpu":
        return {"xla_backend_optimization_level": 0}
    return None


def abstract_state(state_shardings: TrainState, state: TrainState) -> TrainState:
    """ShapeDtypeStructs with shardings: a restore target on the current mesh."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state,
                        state_shardings)


def count_params(params: Any) -> int:
    return sum(int(x.size) for x in jax.tree.leaves(params))
