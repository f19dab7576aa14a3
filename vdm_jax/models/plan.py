"""The model as a plan: its static graph, abstract sharded parameters, and how to run it from a
plain params dict. The inference view of a model (no optimizer); training builds on it.

``ModelPlan.create(config, mesh)`` traces the model abstractly (``nnx.eval_shape``: nothing is
allocated) and maps each parameter's logical axes to a ``NamedSharding`` on ``mesh`` with
``mesh.rules``. Parameters are a pure dict of arrays, so optax, orbax and ``jax.jit`` see
ordinary pytrees. The model's only non-parameter state is the dropout RNG stream, which the train
step reseeds every step and which is never read otherwise: its abstract form is all a plan keeps.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
from flax import nnx
from jax.sharding import Mesh

from vdm_jax.config import Config, TextEncoderKind
from vdm_jax.models.stage import STAGE_KEYS, is_stage
from vdm_jax.models.unet import ModelOutput, VideoUNet
from vdm_jax.sharding import logical

# The model's text inputs per text encoder kind (the keys of a batch or of encoded prompts).
TEXT_KEYS = {TextEncoderKind.NONE: (), TextEncoderKind.PRECOMPUTED: ("text_embeddings", "token_mask"),
             TextEncoderKind.TRANSFORMER: ("tokens", "token_mask")}


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity
class ModelPlan:
    config: Config
    graphdef: Any
    abstract_params: Any  # pure dict of ShapeDtypeStructs carrying ``param_shardings``
    param_shardings: Any  # pure dict of NamedSharding (same tree as the params)
    others: Any  # the non-parameter NNX state (dropout RNG), abstract

    @classmethod
    def create(cls, config: Config, mesh: Mesh) -> ModelPlan:
        # No mesh context here: the parameters' ``out_sharding`` metadata holds *logical* names, which
        # flax would otherwise try to apply as mesh axes. Placement comes from the shardings returned.
        key = jax.random.PRNGKey(config.training.seed)
        graphdef, params, others = nnx.split(nnx.eval_shape(lambda: build(config, key)), nnx.Param, ...)
        shardings = nnx.to_pure_dict(logical.state_shardings(params, mesh, config.mesh.rules))
        abstract = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                                nnx.to_pure_dict(params), shardings)
        return cls(config, graphdef, abstract, shardings, others)

    @property
    def num_params(self) -> int:
        return sum(int(x.size) for x in jax.tree.leaves(self.abstract_params))

    def init_params(self, key: jax.Array) -> Any:
        """Freshly initialised parameters (a pure dict) from ``key``; jit it with
        ``out_shardings=param_shardings`` to build them in place."""
        return nnx.to_pure_dict(nnx.state(build(self.config, key), nnx.Param))

    def apply(self, params: Any, x: jax.Array, logsnr: jax.Array, *, dropout_rng: jax.Array | None = None,
              **kwargs: Any) -> ModelOutput:
        """Run the model with ``params`` (pure dict). ``kwargs`` go to ``VideoUNet.__call__``."""
        model = nnx.merge(self.graphdef, nnx.State(params), self.others, copy=True)
        if dropout_rng is not None:
            nnx.reseed(model, dropout=dropout_rng)
        return model(x, logsnr, **kwargs)

    def text_inputs(self, inputs: dict[str, Any] | None) -> dict[str, Any]:
        """The model's text inputs taken from a batch or from encoded prompts ({} when unconditional)."""
        keys = TEXT_KEYS[self.config.model.text_encoder]
        return {k: inputs[k] for k in keys} if inputs and keys else {}

    def stage_inputs(self, inputs: dict[str, Any] | None) -> dict[str, Any]:
        """A cascade stage's conditioning inputs (``low_res``, ``aug_logsnr``) taken from a batch or
        from the prompt inputs ({} for a base model)."""
        if not is_stage(self.config.model):
            return {}
        missing = [k for k in STAGE_KEYS if not inputs or k not in inputs]
        if missing:
            raise ValueError(f"model.conditioning={self.config.model.conditioning.value!r}: the inputs "
                             f"lack {missing} (the lower stage's video and its augmentation level)")
        return {k: inputs[k] for k in STAGE_KEYS}

    def denoiser(self, params: Any, *, frame_mask: jax.Array | None = None, train: bool = False,
                 dropout_rng: jax.Array | None = None):
        """``denoise(z, logsnr, cond=None, drop=None) -> prediction``: the model as the samplers and
        the loss see it. ``cond``: text inputs (a batch or encoded prompts); ``drop``: (B,) bool,
        True where the text is replaced by the learned null embedding (classifier-free guidance).
        A cascade stage also reads ``low_res`` and ``aug_logsnr`` from ``cond`` (never dropped)."""

        def denoise(z: jax.Array, logsnr: jax.Array, cond: Any = None, drop: jax.Array | None = None):
            text = self.text_inputs(cond)
            return self.apply(params, z, logsnr, dropout_rng=dropout_rng if train else None,
                              drop_text=drop if text else None, frame_mask=frame_mask,
                              deterministic=not train, **text, **self.stage_inputs(cond)).prediction

        return denoise

    def video_shape(self, batch: int, num_frames: int | None = None) -> tuple[int, ...]:
        """(B, T, H, W, C) of generated clips: T defaults to the trained ``data.num_frames``."""
        d = self.config.data
        return (batch, num_frames or d.num_frames, d.resolution, d.resolution, self.config.model.in_channels)


def build(config: Config, key: jax.Array) -> VideoUNet:
    """The model with parameters initialised from ``key`` (dropout stream from ``fold_in(key, 1)``)."""
    return VideoUNet(config.model, rngs=nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)),
                     sharding_rules=config.mesh.rules)
