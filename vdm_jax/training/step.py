"""The jitted train and eval steps. One loss function (``vdm_jax.diffusion.diffusion_loss``) for both."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from vdm_jax.config import Config, TextEncoderKind
from vdm_jax.diffusion.losses import diffusion_loss, sample_logsnr
from vdm_jax.diffusion.schedules import Schedule
from vdm_jax.training.state import ModelBundle, TrainState


def text_kwargs(config: Config, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The model's text inputs for the configured text encoder."""
    kind = config.model.text_encoder
    if kind == TextEncoderKind.NONE:
        return {}
    if kind == TextEncoderKind.PRECOMPUTED:
        return {"text_embeddings": batch["text_embeddings"], "token_mask": batch["token_mask"]}
    return {"tokens": batch["tokens"], "token_mask": batch["token_mask"]}


def draw_noise(rng: jax.Array, batch: dict[str, jax.Array], *, config: Config, schedule: Schedule,
               train: bool, logsnr: float | None = None) -> dict[str, jax.Array]:
    """The random inputs of the loss for a whole batch: per-example log-SNR, Gaussian noise and
    (training) the classifier-free-guidance text-drop flags.

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
    return draws


def _model_loss(params: Any, batch: dict[str, jax.Array], draws: dict[str, jax.Array],
                dropout_rng: jax.Array | None, *, config: Config, bundle: ModelBundle, schedule: Schedule,
                train: bool) -> tuple[jax.Array, Any]:
    kwargs = dict(text_kwargs(config, batch), drop_text=draws.get("drop_text"),
                  frame_mask=batch.get("frame_mask"), deterministic=not train)

    def denoise(z: jax.Array, lsnr: jax.Array) -> jax.Array:
        out = bundle.apply(params, z, lsnr, dropout_rng=dropout_rng if train else None, **kwargs)
        return out.prediction

    out = diffusion_loss(denoise, batch["video"], None, config.diffusion, schedule,
                         logsnr=draws["logsnr"], noise=draws["noise"])
    return out.loss, out


def ema_decay(config: Config, step: jax.Array) -> jax.Array:
    decay = jnp.asarray(config.training.ema_decay, jnp.float32)
    if config.training.ema_warmup:
        s = step.astype(jnp.float32)
        decay = jnp.minimum(decay, (1.0 + s) / (10.0 + s))
    return decay


def train_step(state: TrainState, batch: dict[str, jax.Array], *, config: Config, bundle: ModelBundle,
               schedule: Schedule) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step, with exact gradient accumulation over ``training.microbatches`` (the noise
    is drawn for the whole batch first, so m microbatches give the update of one batch)."""
    noise_rng, dropout_rng = jax.random.split(jax.random.fold_in(state.rng, state.step))
    m = config.training.microbatches
    grad_fn = jax.value_and_grad(_model_loss, has_aux=True)
    kw = dict(config=config, bundle=bundle, schedule=schedule, train=True)
    draws = draw_noise(noise_rng, batch, config=config, schedule=schedule, train=True)

    if m == 1:
        (loss, _), grads = grad_fn(state.params, batch, draws, dropout_rng, **kw)
    else:
        micro = jax.tree.map(lambda x: x.reshape(m, x.shape[0] // m, *x.shape[1:]), (batch, draws))

        def accumulate(carry, inputs):
            g_acc, l_acc = carry
            (mb, mb_draws), i = inputs
            (mb_loss, _), g = grad_fn(state.params, mb, mb_draws, jax.random.fold_in(dropout_rng, i), **kw)
            return (jax.tree.map(jnp.add, g_acc, g), l_acc + mb_loss), None

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        (grads, loss), _ = jax.lax.scan(accumulate, (zeros, jnp.zeros((), jnp.float32)),
                                        (micro, jnp.arange(m)))
        grads = jax.tree.map(lambda g: g / m, grads)
        loss = loss / m

    grad_norm = optax.global_norm(grads)
    updates, opt_state = bundle.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    decay = ema_decay(config, state.step)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": bundle.lr_schedule(state.step)}
    return new_state, metrics


def eval_step(params: Any, batch: dict[str, jax.Array], rng: jax.Array, *, config: Config,
              bundle: ModelBundle, schedule: Schedule) -> jax.Array:
    """Loss at each fixed log-SNR of ``evaluation.eval_logsnrs`` (comparable across steps): (K,)."""
    losses = []
    for i, lsnr in enumerate(config.evaluation.eval_logsnrs):
        draws = draw_noise(jax.random.fold_in(rng, i), batch, config=config, schedule=schedule, train=False,
                           logsnr=float(lsnr))
        loss, _ = _model_loss(params, batch, draws, None, config=config, bundle=bundle, schedule=schedule,
                              train=False)
        losses.append(loss)
    return jnp.stack(losses)
