"""optax AdamW with warm-up, constant or cosine decay, and global-norm clipping."""

from __future__ import annotations

import jax
import optax

from vdm_jax.config import LRSchedule, OptimizerConfig


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    warmup = min(cfg.warmup_steps, max(total_steps - 1, 0))
    if cfg.lr_schedule == LRSchedule.COSINE:
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=cfg.learning_rate * cfg.min_lr_ratio)
    if warmup == 0:
        return optax.constant_schedule(cfg.learning_rate)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.learning_rate, warmup), optax.constant_schedule(cfg.learning_rate)],
        [warmup])


def make_optimizer(cfg: OptimizerConfig, total_steps: int) -> tuple[optax.GradientTransformation,
                                                                    optax.Schedule]:
    schedule = learning_rate_schedule(cfg, total_steps)
    chain = []
    if cfg.grad_clip_norm > 0:
        chain.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    chain.append(optax.adamw(schedule, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
                             weight_decay=cfg.weight_decay, mask=_decay_mask))
    return optax.chain(*chain), schedule


def _decay_mask(params):
    """Weight decay on matrices/kernels only, never on biases, norms or embeddings' scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)
