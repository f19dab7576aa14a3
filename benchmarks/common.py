"""Pieces shared by the benchmarks: synthetic batches, device selection, timing, memory.

Light on purpose: nothing here imports the data pipeline (grain, tfds), so the benchmarks run on
machines that only have jax, flax, optax and ml_collections.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from vdm_jax.config import Config, TextEncoderKind


def synthetic_batch(config: Config, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One global batch with the shapes and dtypes of the batch contract (host numpy arrays).

    ``video`` float32 (B, T+k, H, W, C) in [-1, 1]; ``frame_mask`` True on the T video frames;
    ``tokens``/``token_mask`` (random lengths, 0 = pad) when the model reads text; and
    ``text_embeddings`` for a precomputed text encoder.
    """
    rng = np.random.default_rng(seed)
    d, m = config.data, config.model
    frames = d.clip_frames
    out = {"video": rng.uniform(-1, 1, (batch, frames, d.resolution, d.resolution, m.in_channels))
           .astype(np.float32),
           "frame_mask": np.arange(frames)[None, :].repeat(batch, 0) < d.num_frames}
    if m.text_encoder != TextEncoderKind.NONE:
        length = m.max_text_len
        lengths = rng.integers(1, length + 1, (batch, 1))
        mask = np.arange(length)[None, :] < lengths
        out["tokens"] = np.where(mask, rng.integers(1, m.vocab_size, (batch, length)), 0).astype(np.int32)
        out["token_mask"] = mask
        if m.text_encoder == TextEncoderKind.PRECOMPUTED:
            out["text_embeddings"] = rng.standard_normal(
                (batch, length, m.precomputed_text_dim)).astype(np.float32)
    return out


def select_devices(count: int) -> list:
    """The first ``count`` local devices (all when ``count`` is 0)."""
    devices = jax.local_devices()
    if count < 0 or count > len(devices):
        raise ValueError(f"--devices={count}: must be in [0, {len(devices)}] (0 = all local devices)")
    return devices[:count] if count else devices


def memory_stats(devices: Sequence) -> dict[str, int | None]:
    """Peak bytes in use and the allocator's limit (max over devices); None where not reported."""
    peaks, limits = [], []
    for d in devices:
        stats = d.memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            peaks.append(int(stats["peak_bytes_in_use"]))
        if "bytes_limit" in stats:
            limits.append(int(stats["bytes_limit"]))
    return {"peak_memory_bytes": max(peaks) if peaks else None,
            "memory_limit_bytes": max(limits) if limits else None}


def time_steps(step: Callable[[], Any], steps: int, warmup: int) -> list[float]:
    """Wall time of each of ``steps`` calls after ``warmup`` calls; each call is waited for."""
    for _ in range(warmup):
        jax.block_until_ready(step())
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(step())
        times.append(time.perf_counter() - t0)
    return times


def summarize_times(times: Sequence[float]) -> dict[str, float]:
    return {"step_time_s": statistics.median(times), "step_time_min_s": min(times),
            "step_time_max_s": max(times)}


def is_oom(error: BaseException) -> bool:
    """Whether an exception from XLA is an out-of-memory error."""
    text = f"{type(error).__name__} {error}".lower()
    needles = ("resource_exhausted", "resource exhausted", "out of memory", "failed to allocate")
    return any(s in text for s in needles)
