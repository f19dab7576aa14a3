"""Model-free baselines for the prediction task, scored like the model's predictions.

Given the first k frames of a clip (uint8 (B, T, H, W, C)):
* ``copy_last``: every later frame is the last given frame (what a model that ignores motion does);
* ``constant_velocity``: the last given frame translated by the brightness-weighted centroid's
  per-frame displacement between the last two given frames, times the number of frames ahead
  (integer pixel shifts, zero fill); equals ``copy_last`` when k = 1.
A prediction that does not beat both does not extrapolate motion.
"""

from __future__ import annotations

import numpy as np


def _centroid(frame: np.ndarray) -> np.ndarray:
    """(x, y) of the brightness-weighted centroid of one (H, W, C) frame; image centre if black."""
    w = frame.astype(np.float64).max(axis=-1)
    total = w.sum()
    h, wd = w.shape
    if total <= 0:
        return np.array([(wd - 1) / 2, (h - 1) / 2])
    ys, xs = np.mgrid[0:h, 0:wd]
    return np.array([(w * xs).sum() / total, (w * ys).sum() / total])


def _shift(frame: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a (H, W, C) frame by whole pixels, filling with zeros."""
    h, w = frame.shape[:2]
    out = np.zeros_like(frame)
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    if abs(dx) < w and abs(dy) < h:
        out[yd, xd] = frame[ys, xs]
    return out


def copy_last(clips: np.ndarray, context_frames: int) -> np.ndarray:
    out = np.array(clips, copy=True)
    out[:, context_frames:] = clips[:, context_frames - 1:context_frames]
    return out


def constant_velocity(clips: np.ndarray, context_frames: int) -> np.ndarray:
    out = copy_last(clips, context_frames)
    if context_frames < 2:
        return out
    for b, clip in enumerate(clips):
        last = clip[context_frames - 1]
        v = _centroid(last) - _centroid(clip[context_frames - 2])
        for t in range(context_frames, clip.shape[0]):
            ahead = t - context_frames + 1
            out[b, t] = _shift(last, int(round(v[0] * ahead)), int(round(v[1] * ahead)))
    return out


BASELINES = {"copy_last": copy_last, "constant_velocity": constant_velocity}
