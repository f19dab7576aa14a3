"""A cascade stage's conditioning input, made on the fly from the high-resolution clip.

A spatial super-resolution stage is given the clip area-downsampled by ``factor`` (the mean of
each ``factor x factor`` block, in float [-1, 1]); a temporal one every ``factor``-th frame
(frames 0, f, 2f, ...). Both are deterministic functions of the clip, so the stage trains on the
same prepared dataset as the base model and the iterator's resume state is unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from vdm_jax.config import StageKind

LOW_RES_KEY = "low_res"


def area_downsample(video: np.ndarray, factor: int) -> np.ndarray:
    """(..., H, W, C) -> (..., H/f, W/f, C): the mean of each f x f block (float32)."""
    *lead, h, w, c = video.shape
    if h % factor or w % factor:
        raise ValueError(f"frame size {h}x{w} is not divisible by the downsampling factor {factor}")
    v = np.asarray(video, np.float32).reshape(*lead, h // factor, factor, w // factor, factor, c)
    return v.mean(axis=(-4, -2))


def subsample_frames(video: np.ndarray, factor: int) -> np.ndarray:
    """(..., T, H, W, C) -> (..., T/f, H, W, C): frames 0, f, 2f, ..."""
    t = video.shape[-4]
    if t % factor:
        raise ValueError(f"{t} frames are not divisible by the frame subsampling factor {factor}")
    return np.ascontiguousarray(video[..., ::factor, :, :, :])


def downsample(video: np.ndarray, kind: StageKind, factor: int) -> np.ndarray:
    """The conditioning input of a ``kind`` stage for ``video`` (..., T, H, W, C) in [-1, 1]."""
    kind = StageKind(kind)
    if kind == StageKind.SPATIAL_SR:
        return area_downsample(video, factor)
    if kind == StageKind.TEMPORAL_SR:
        return subsample_frames(np.asarray(video, np.float32), factor)
    raise ValueError("model.conditioning='none': a base model has no conditioning input")


@dataclasses.dataclass(frozen=True)
class LowResInput:
    """Batch map: adds ``low_res`` (the stage's conditioning input) computed from ``video``."""

    kind: StageKind
    factor: int

    def __call__(self, batch: dict) -> dict:
        return {**batch, LOW_RES_KEY: downsample(batch["video"], self.kind, self.factor)}


def low_res_input(kind: StageKind, factor: int) -> LowResInput | None:
    """The batch map of a stage, None for a base model."""
    return None if StageKind(kind) == StageKind.NONE else LowResInput(StageKind(kind), factor)
