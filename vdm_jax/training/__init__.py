"""Sharded training: train state, the jitted step, checkpoints, metrics, samples."""

from __future__ import annotations

from typing import Any


def train_and_evaluate(config: Any, workdir: str, *, devices: list | None = None) -> dict[str, Any]:
    """See :func:`vdm_jax.training.loop.train_and_evaluate` (imported lazily: heavy deps)."""
    from vdm_jax.training.loop import train_and_evaluate as _impl

    return _impl(config, workdir, devices=devices)


__all__ = ["train_and_evaluate"]
