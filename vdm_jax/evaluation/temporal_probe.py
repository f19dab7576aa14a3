"""Temporal probe: does a model use frame order and the caption's motion words?

Loss at fixed log-SNRs (``evaluation.probe_logsnrs``, default -8..0, where motion is decided) on
the same test clips, with the same noise, under four inputs:

  real      the clips and their captions;
  reversed  the clips played backwards (captions unchanged);
  swapped   the captions with direction words exchanged (left <-> right, up <-> down);
  shuffled  the frames in a fixed random order.

``probe_delta_<variant>_logsnr_<l>`` = loss(variant) - loss(real). A model that uses the
direction words has delta_swapped > 0 at low log-SNR; one that knows which way time runs has
delta_reversed > 0; delta_shuffled > 0 means it uses frame-to-frame continuity. Inputs and noise
are paired, so the deltas have far less variance than the losses themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from data_pipelines.video_io import to_unit

VARIANTS = ("real", "reversed", "swapped", "shuffled")
_SWAP = {"left": "right", "right": "left", "up": "down", "down": "up"}
_SWAP_RE = re.compile(r"\b(left|right|up|down)\b")


def swap_direction_words(caption: str) -> str:
    """'a big red 3 moves left fast' -> 'a big red 3 moves right fast' (all four words exchanged)."""
    return _SWAP_RE.sub(lambda m: _SWAP[m.group(1)], caption)


def shuffle_order(num_frames: int, seed: int = 0) -> np.ndarray:
    """A fixed permutation of the frames that moves every frame (a derangement), for T >= 2."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(num_frames)
        if num_frames < 2 or not np.any(order == np.arange(num_frames)):
            return order


def variant_inputs(videos: np.ndarray, captions: Sequence[str], variant: str
                   ) -> tuple[np.ndarray, list[str]]:
    """The (videos uint8 (N, T, H, W, C), captions) of one probe variant."""
    if variant == "real":
        return videos, list(captions)
    if variant == "reversed":
        return videos[:, ::-1], list(captions)
    if variant == "swapped":
        return videos, [swap_direction_words(c) for c in captions]
    if variant == "shuffled":
        return videos[:, shuffle_order(videos.shape[1])], list(captions)
    raise ValueError(f"unknown probe variant {variant!r}; allowed: {VARIANTS}")


LossFn = Callable[[Any, dict[str, Any], jax.Array], jax.Array]  # (params, batch, rng) -> (K,) losses
EncodeFn = Callable[[list[str]], dict[str, np.ndarray]]  # captions -> model text inputs


def temporal_probe(loss_fn: LossFn, params: Any, videos: np.ndarray, captions: Sequence[str],
                   encode: EncodeFn, logsnrs: Sequence[float], *, batch_size: int, seed: int = 0,
                   to_device: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b) -> dict[str, float]:
    """Mean loss per variant and log-SNR over ``videos`` (whole batches only), and the deltas.

    ``loss_fn`` must return the loss at each of ``logsnrs`` for a batch with keys ``video``
    (float in [-1, 1]) and the text inputs; batch ``i`` of every variant uses ``fold_in(seed, i)``,
    so all variants see the same noise.
    """
    n = (len(videos) // batch_size) * batch_size
    if n == 0:
        raise ValueError(f"temporal probe needs at least batch_size={batch_size} clips, got {len(videos)}")
    key = jax.random.PRNGKey(seed)
    means: dict[str, np.ndarray] = {}
    has_direction = any(_SWAP_RE.search(c) for c in captions[:n])
    for variant in VARIANTS:
        if variant == "swapped" and not has_direction:
            continue  # no direction words to exchange: the variant equals 'real'
        vids, caps = variant_inputs(videos[:n], captions[:n], variant)
        cond = encode(caps)
        total = None
        for i in range(n // batch_size):
            sl = slice(i * batch_size, (i + 1) * batch_size)
            batch = {"video": to_unit(vids[sl]),
                     **{k: v[sl] for k, v in cond.items()}}
            losses = np.asarray(jax.device_get(loss_fn(params, to_device(batch), jax.random.fold_in(key, i))))
            total = losses if total is None else total + losses
        means[variant] = total / (n // batch_size)
    out: dict[str, float] = {"probe_num_clips": float(n)}
    for variant, per_level in means.items():
        for lv, value, real in zip(logsnrs, per_level, means["real"]):
            out[f"probe_loss_{variant}_logsnr_{lv:g}"] = float(value)
            if variant != "real":
                out[f"probe_delta_{variant}_logsnr_{lv:g}"] = float(value - real)
    return out
