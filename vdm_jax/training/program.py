"""The train program: what one ``(Config, mesh)`` compiles to, built once.

``TrainProgram.create(config, mesh)`` holds the model plan (``vdm_jax.models.plan.ModelPlan``),
the optimizer, the train state's and the batch's shardings, and the jitted steps:

  ``train_step``        (state, batch) -> (state, metrics): one optimizer step, state donated;
  ``eval_step``         (params, batch, rng) -> (K,) losses at ``evaluation.eval_logsnrs``;
  ``eval_step_at(ls)``  the same at other log-SNRs (the evaluation job's temporal probe);
  ``eval_loss``         mean eval losses over batches, batch i with ``PRNGKey(1000 + i)``: the same
                        noise at every step, in training and in the evaluation job;
  ``step_flops``        analytic FLOPs of one train step (3 x forward, ``vdm_jax.models.flops``);
  ``compile_train_step`` lowered against the abstract state and batch: nothing is allocated, so it
                        also compiles for a topology without devices (``launch.compile_check``).

The training loop, the evaluation job, ``launch.compile_check`` and
``benchmarks.train_throughput`` all run these; none builds a step of its own. One loss function
(``vdm_jax.diffusion.diffusion_loss``) serves training and evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vdm_jax import hardware
from vdm_jax.config import Config, TextEncoderKind
from vdm_jax.diffusion.augmentation import augment, draw_aug_logsnr
from vdm_jax.diffusion.losses import diffusion_loss, sample_logsnr
from vdm_jax.diffusion.schedules import Schedule
from vdm_jax.models.flops import forward_flops
from vdm_jax.models.plan import ModelPlan
from vdm_jax.models.stage import is_stage, low_res_shape, residual_base
from vdm_jax.sharding import logical
from vdm_jax.training.optimizer import make_optimizer

EVAL_SEED = 1000  # eval batch i draws its noise from PRNGKey(EVAL_SEED + i)


@struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar
    params: Any  # pure dict of float32 arrays
    ema_params: Any
    opt_state: Any
    rng: jax.Array  # uint32[2] raw key (checkpoint friendly)


@dataclasses.dataclass(frozen=True, eq=False)  # compared and hashed by identity
class TrainProgram:
    config: Config
    mesh: Mesh
    model: ModelPlan
    tx: optax.GradientTransformation
    lr_schedule: optax.Schedule
    schedule: Schedule
    state_shardings: TrainState
    abstract_state: TrainState  # ShapeDtypeStructs carrying ``state_shardings``: the restore target

    @classmethod
    def create(cls, config: Config, mesh: Mesh) -> TrainProgram:
        model = ModelPlan.create(config, mesh)
        tx, lr_schedule = make_optimizer(config.optimizer, config.training.num_train_steps)
        replicated = NamedSharding(mesh, PartitionSpec())
        shapes = jax.eval_shape(functools.partial(_init_state, model, tx), jax.random.PRNGKey(0))
        opt_sh = optax.tree_map_params(tx, lambda _, s: s, shapes.opt_state, model.param_shardings,
                                       transform_non_params=lambda _: replicated)
        state_sh = TrainState(step=replicated, params=model.param_shardings, ema_params=model.param_shardings,
                              opt_state=opt_sh, rng=replicated)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes,
                                state_sh)
        schedule = Schedule.from_config(config.diffusion, config.data.resolution)
        return cls(config, mesh, model, tx, lr_schedule, schedule, state_sh, abstract)

    # -- state and batches ---------------------------------------------------------------------

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def init_state(self) -> TrainState:
        """The state, created directly sharded on the mesh from ``training.seed``."""
        init = jax.jit(functools.partial(_init_state, self.model, self.tx),
                       out_shardings=self.state_shardings, compiler_options=_init_compiler_options(self.mesh))
        return init(jax.random.PRNGKey(self.config.training.seed))

    def batch_sharding(self, batch_size: int) -> NamedSharding:
        """The batch axis over the mesh axes of the ``act_batch`` rule that divide it (the rest
        replicated): ``(data, fsdp)`` for a training batch."""
        spec = logical.logical_to_spec(("act_batch",), self.config.mesh.rules, shape=(batch_size,),
                                       axis_sizes=dict(self.mesh.shape))
        return NamedSharding(self.mesh, spec)

    def place_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's rows of a batch -> global arrays sharded along the batch axis."""
        rows = len(next(iter(batch.values()))) * jax.process_count()
        sharding = self.batch_sharding(rows)
        return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """One global training batch as ShapeDtypeStructs (the batch contract of
        ``data_pipelines.pipeline``), sharded like :meth:`place_batch` places it."""
        b, d, m = self.config.training.global_batch_size, self.config.data, self.config.model
        spec = {"video": ((b, d.clip_frames, d.resolution, d.resolution, m.in_channels), jnp.float32),
                "frame_mask": ((b, d.clip_frames), jnp.bool_)}
        if m.text_encoder == TextEncoderKind.TRANSFORMER:
            spec["tokens"] = ((b, m.max_text_len), jnp.int32)
        if m.text_encoder == TextEncoderKind.PRECOMPUTED:
            spec["text_embeddings"] = ((b, m.max_text_len, m.precomputed_text_dim), jnp.float32)
        if m.text_encoder != TextEncoderKind.NONE:
            spec["token_mask"] = ((b, m.max_text_len), jnp.bool_)
        if is_stage(m):
            spec["low_res"] = (low_res_shape(m, spec["video"][0]), jnp.float32)
        sharding = self.batch_sharding(b)
        return {k: jax.ShapeDtypeStruct(s, t, sharding=sharding) for k, (s, t) in spec.items()}

    # -- steps ---------------------------------------------------------------------------------

    @functools.cached_property
    def train_step(self):
        """Jitted ``(state, batch) -> (state, metrics)``; the state is donated."""
        batch_sh = self.batch_sharding(self.config.training.global_batch_size)
        return jax.jit(functools.partial(train_step, program=self),
                       in_shardings=(self.state_shardings, batch_sh),
                       out_shardings=(self.state_shardings, self.replicated), donate_argnums=(0,))

    @functools.cache  # noqa: B019 - one compiled step per log-SNR tuple for the program's lifetime
    def eval_step_at(self, logsnrs: tuple[float, ...]):
        """Jitted ``(params, batch, rng) -> (K,)``: the loss at each of ``logsnrs``."""
        return jax.jit(functools.partial(losses_at, program=self, logsnrs=tuple(float(x) for x in logsnrs)),
                       out_shardings=self.replicated)

    @property
    def eval_step(self):
        """:meth:`eval_step_at` the fixed ``evaluation.eval_logsnrs`` (comparable across steps)."""
        return self.eval_step_at(self.config.evaluation.eval_logsnrs)

    def eval_loss(self, params: Any, batches: Iterable[dict[str, np.ndarray]]) -> dict[str, float]:
        """Mean loss per ``evaluation.eval_logsnrs`` level over ``batches`` (this process's rows),
        batch i with the noise of ``PRNGKey(EVAL_SEED + i)``; {} when there is no batch."""
        totals, n, rows = None, 0, 0
        for i, batch in enumerate(batches):
            placed = self.place_batch(batch)
            losses = self.eval_step(params, placed, jax.random.PRNGKey(EVAL_SEED + i))
            totals = losses if totals is None else totals + losses
            n, rows = n + 1, rows + placed["video"].shape[0]
        if n == 0:
            return {}
        per_level = np.asarray(jax.device_get(totals), np.float64) / n
        out = {"eval_loss": float(per_level.mean())}
        out.update({f"eval_loss_logsnr_{lv:g}": float(v)
                    for lv, v in zip(self.config.evaluation.eval_logsnrs, per_level)})
        out["eval_loss_n"] = rows
        return out

    # -- cost ----------------------------------------------------------------------------------

    @property
    def step_flops(self) -> float:
        """Analytic FLOPs of one train step on the global batch, all devices (3 x forward)."""
        d = self.config.data
        return 3.0 * forward_flops(self.config.model, self.config.training.global_batch_size, d.clip_frames,
                                   d.resolution, d.resolution)

    @property
    def peak_flops(self) -> float | None:
        """Dense bf16 peak FLOP/s per device of the mesh (None on CPU or an unknown device)."""
        return hardware.peak_flops(self.mesh.devices.flat[0])

    def mfu(self, steps_per_sec: float) -> float | None:
        """Model FLOPs utilisation at ``steps_per_sec`` (None where the peak is unknown)."""
        peak = self.peak_flops
        return steps_per_sec * self.step_flops / (peak * self.mesh.size) if peak else None

    def compile_train_step(self, compiler_options: dict[str, Any] | None = None):
        """The train step lowered against the abstract state and batch, compiled (nothing
        allocated); ``hardware.xla_memory`` reads its memory."""
        with jax.set_mesh(self.mesh):
            lowered = self.train_step.lower(self.abstract_state, self.abstract_batch())
            return lowered.compile(compiler_options=compiler_options)


def _init_state(model: ModelPlan, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    params = model.init_params(key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, ema_params=params,
                      opt_state=tx.init(params), rng=jax.random.fold_in(key, 2))


def _init_compiler_options(mesh: Mesh) -> dict[str, Any] | None:
    """The init program (hundreds of random initializers) runs once. On CPU, XLA's backend
    optimizations of it cost more than half of its compile time (smoke model: 20 s -> 9 s, sharded
    over 8 devices 27 s -> 11 s) and save nothing worth having."""
    if mesh.devices.flat[0].platform == "cpu":
        return {"xla_backend_optimization_level": 0}
    return None


# ----------------------------------------------------------------------------------------------
# The step functions (pure; jitted by TrainProgram)
# ----------------------------------------------------------------------------------------------


def draw_noise(rng: jax.Array, batch: dict[str, jax.Array], *, config: Config, schedule: Schedule,
               train: bool, logsnr: float | None = None) -> dict[str, jax.Array]:
    """The random inputs of the loss for a whole batch: per-example log-SNR, Gaussian noise,
    (training) the classifier-free-guidance text-drop flags and, for a cascade stage, the
    augmentation log-SNR and noise of the conditioning video (drawn in ``[noise_aug_logsnr_min,
    noise_aug_logsnr_max]`` in training, at ``sampling.noise_aug_logsnr`` in evaluation).

    Drawn once per optimizer step for the global batch, then split with the batch into
    microbatches: accumulating over microbatches gives the same update as one big batch.
    """
    t_rng, n_rng, d_rng = jax.random.split(rng, 3)
    video = batch["video"]
    b = video.shape[0]
    draws = {"logsnr": sample_logsnr(t_rng, b, config.diffusion, schedule, logsnr),
             "noise": jax.random.normal(n_rng, video.shape, jnp.float32)}
    if train and config.training.text_drop_prob > 0 and config.model.text_encoder != TextEncoderKind.NONE:
        draws["drop_text"] = jax.random.bernoulli(d_rng, config.training.text_drop_prob, (b,))
    if is_stage(config.model):  # augmentation of the conditioning video (own keys: base draws unchanged)
        m = config.model
        a_rng, an_rng = jax.random.split(jax.random.fold_in(rng, 3))
        lo, hi = ((m.noise_aug_logsnr_min, m.noise_aug_logsnr_max) if train else
                  (config.sampling.noise_aug_logsnr,) * 2)
        draws["aug_logsnr"] = draw_aug_logsnr(a_rng, b, lo, hi)
        draws["aug_noise"] = jax.random.normal(an_rng, batch["low_res"].shape, jnp.float32)
    return draws


def model_inputs(batch: dict[str, jax.Array], draws: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The batch as the model reads it: a stage's conditioning video replaced by its noised version
    and the augmentation level added (a base model's batch unchanged)."""
    if "aug_logsnr" not in draws:
        return batch
    return {**batch, "low_res": augment(batch["low_res"], draws["aug_logsnr"], draws["aug_noise"]),
            "aug_logsnr": draws["aug_logsnr"]}


def _model_loss(params: Any, batch: dict[str, jax.Array], draws: dict[str, jax.Array],
                dropout_rng: jax.Array | None, *, program: TrainProgram, train: bool
                ) -> tuple[jax.Array, Any]:
    denoiser = program.model.denoiser(params, frame_mask=batch.get("frame_mask"), train=train,
                                      dropout_rng=dropout_rng)
    inputs = model_inputs(batch, draws)
    target = batch["video"]
    if program.config.model.stage_residual:  # the clean conditioning video, resized, is subtracted
        target = target - residual_base(program.config.model, batch["low_res"])
    out = diffusion_loss(lambda z, lsnr: denoiser(z, lsnr, inputs, draws.get("drop_text")), target,
                         None, program.config.diffusion, program.schedule, logsnr=draws["logsnr"],
                         noise=draws["noise"])
    return out.loss, out


def ema_decay(config: Config, step: jax.Array) -> jax.Array:
    decay = jnp.asarray(config.training.ema_decay, jnp.float32)
    if config.training.ema_warmup:
        s = step.astype(jnp.float32)
        decay = jnp.minimum(decay, (1.0 + s) / (10.0 + s))
    return decay


def train_step(state: TrainState, batch: dict[str, jax.Array], *, program: TrainProgram
               ) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step, with exact gradient accumulation over ``training.microbatches`` (the noise
    is drawn for the whole batch first, so m microbatches give the update of one batch)."""
    config = program.config
    noise_rng, dropout_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    m = config.training.microbatches
    grad_fn = jax.value_and_grad(functools.partial(_model_loss, program=program, train=True), has_aux=True)
    draws = draw_noise(noise_rng, batch, config=config, schedule=program.schedule, train=True)

    if m == 1:
        (loss, _), grads = grad_fn(state.params, batch, draws, dropout_rng)
    else:
        micro = jax.tree.map(lambda x: x.reshape(m, x.shape[0] // m, *x.shape[1:]), (batch, draws))

        def accumulate(carry, inputs):
            g_acc, l_acc = carry
            (mb, mb_draws), i = inputs
            (mb_loss, _), g = grad_fn(state.params, mb, mb_draws, jax.random.fold_in(dropout_rng, i))
            return (jax.tree.map(jnp.add, g_acc, g), l_acc + mb_loss), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grads, loss), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)),
                                        (micro, jnp.arange(m)))
        grads = jax.tree.map(lambda g: g / m, grads)
        loss = loss / m

    grad_norm = optax.global_norm(grads)
    updates, opt_state = program.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay(config, state.step)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": program.lr_schedule(state.step)}
    return new_state, metrics


def losses_at(params: Any, batch: dict[str, jax.Array], rng: jax.Array, *, program: TrainProgram,
              logsnrs: tuple[float, ...]) -> jax.Array:
    """Loss at each fixed log-SNR of ``logsnrs`` with the noise of ``fold_in(rng, i)``: (K,)."""
    losses = []
    for i, lsnr in enumerate(logsnrs):
        draws = draw_noise(jax.random.fold_in(rng, i), batch, config=program.config,
                           schedule=program.schedule, train=False, logsnr=lsnr)
        loss, _ = _model_loss(params, batch, draws, None, program=program, train=False)
        losses.append(loss)
    return jnp.stack(losses)
