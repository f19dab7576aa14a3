"""Text alignment on ``moving_digits``: a deterministic detector and a per-attribute scorer.

The detector recovers, from a clip (T, H, W, 3) in uint8 or [-1, 1] float, each object's colour
(nearest palette colour of the brightness-normalised foreground pixels), its per-frame centroid, its
motion (axis, direction, bounce), speed, and kind/size (template match against glyphs rendered by
the dataset spec).  Objects are matched to the caption's objects by colour (colours are distinct
within a clip).  Every number comes with the chance level of a clip that ignores its caption but
follows the dataset's attribute distribution.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from data_pipelines import moving_digits_spec as spec
from data_pipelines.video_io import to_uint8

_FG_LEVEL = 0.5  # a pixel is foreground when its brightest channel is at least half of 255
_PRESENT_FRACTION = 0.01  # a colour is present when it covers >= 1% of the frame on average
_UNOCCLUDED = 0.8  # centroids only from frames where the object shows >= 80% of its max pixels
# An object is one blob: in the median frame, the largest 8-connected component of a colour must
# hold at least this fraction of its pixels. Scattered pixels (noise, an untrained model's output)
# therefore do not count as an object of every colour.
_COMPACT = 0.5


@dataclasses.dataclass
class DetectedObject:
    color: int  # index into spec.COLOR_NAMES
    mean_pixels: float
    track: np.ndarray  # (T, 2) centroid (x, y) in pixels, NaN where the object is absent/occluded
    motion: int = -1  # index into spec.MOTION_NAMES, -1 = static/undecided
    speed: int = -1
    kind: int = -1
    size: int = -1


def _clip_uint8(clip: np.ndarray) -> np.ndarray:
    clip = np.asarray(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"clip must be (T, H, W, 3), got shape {clip.shape}")
    return to_uint8(clip)


def _color_labels(clip: np.ndarray) -> np.ndarray:
    """Per-pixel palette index (T, H, W), -1 for background."""
    x = clip.astype(np.float32) / 255.0
    bright = x.max(axis=-1)
    direction = x / np.maximum(bright, 1e-6)[..., None]
    palette = spec.PALETTE.astype(np.float32) / 255.0
    dist = ((direction[..., None, :] - palette) ** 2).sum(-1)
    labels = dist.argmin(-1)
    return np.where(bright >= _FG_LEVEL, labels, -1)


@functools.lru_cache(maxsize=8)
def _templates(resolution: int) -> tuple[tuple[int, int, np.ndarray], ...]:
    """Binary masks (cropped to their bounding box) of every (kind, size) rendered by the spec."""
    out = []
    for kind in range(len(spec.KIND_NAMES)):
        for size in range(len(spec.SIZE_NAMES)):
            attrs = {k: np.full(shape, 0, dtype) for k, (shape, dtype) in spec.attribute_spec().items()}
            attrs.update(num_objects=np.asarray(1, np.int32), color=np.array([6, -1], np.int32),
                         kind=np.array([kind, -1], np.int32), size=np.array([size, -1], np.int32))
            frame = spec.render_clip(attrs, 1, resolution)[0]
            out.append((kind, size, _crop(frame.max(-1) >= 255 * _FG_LEVEL)))
    return tuple(out)


def _crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return mask[:0, :0]
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _match_template(mask: np.ndarray, resolution: int) -> tuple[int, int]:
    """(kind, size) whose glyph best overlaps ``mask`` (IoU over small shifts); (-1, -1) if none."""
    obj = _crop(mask)
    best, best_iou = (-1, -1), 0.0
    for kind, size, tmpl in _templates(resolution):
        h, w = max(obj.shape[0], tmpl.shape[0]) + 2, max(obj.shape[1], tmpl.shape[1]) + 2
        a = np.zeros((h, w), bool)
        a[1:1 + obj.shape[0], 1:1 + obj.shape[1]] = obj
        for dy in range(3):
            for dx in range(3):
                b = np.zeros((h, w), bool)
                hh, ww = min(tmpl.shape[0], h - dy), min(tmpl.shape[1], w - dx)
                b[dy:dy + hh, dx:dx + ww] = tmpl[:hh, :ww]
                iou = (a & b).sum() / max((a | b).sum(), 1)
                if iou > best_iou:
                    best, best_iou = (kind, size), iou
    return best


def _classify_motion(track: np.ndarray, resolution: int) -> tuple[int, int]:
    """(motion, speed) from a centroid track; (-1, -1) when the object does not move."""
    valid = np.nonzero(~np.isnan(track[:, 0]))[0]
    if valid.size < 2:
        return -1, -1
    pts = track[valid]
    steps = np.diff(pts, axis=0)
    axis = int(np.argmax(np.abs(steps).sum(0)))
    d = steps[:, axis]
    scale = resolution / 32.0
    thr = 0.75 * scale
    if np.abs(d).sum() < 1.5 * scale:
        return -1, -1
    consecutive = np.diff(valid) == 1
    fastest = np.abs(d[consecutive]).max() if consecutive.any() else np.abs(d).max() / np.diff(valid).min()
    speed = int(fastest >= np.mean(spec.SPEED_PX_AT_32) * scale)
    if (d > thr).any() and (d < -thr).any():
        motion = [m for m in range(len(spec.MOTION_NAMES)) if spec.MOTION_BOUNCES[m] and
                  spec.MOTION_AXIS[m] == axis][0]
    else:
        sign = 1 if d.sum() > 0 else -1
        motion = [m for m in range(len(spec.MOTION_NAMES)) if not spec.MOTION_BOUNCES[m] and
                  spec.MOTION_AXIS[m] == axis and spec.MOTION_SIGN[m] == sign][0]
    return motion, speed


def _compactness(masks: np.ndarray, counts: np.ndarray) -> float:
    """Median over frames with pixels of (largest 8-connected component) / (all pixels of the colour)."""
    fractions = []
    for mask, count in zip(masks, counts):
        if count:
            labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
            fractions.append(np.bincount(labels.ravel())[1:].max() / count)
    return float(np.median(fractions)) if fractions else 0.0


def detect_objects(clip: np.ndarray) -> list[DetectedObject]:
    """Objects in a clip (T, H, W, 3), uint8 or [-1, 1] float, largest first."""
    clip = _clip_uint8(clip)
    t, h, w, _ = clip.shape
    labels = _color_labels(clip)
    objects = []
    for color in range(len(spec.COLOR_NAMES)):
        masks = labels == color
        counts = masks.sum(axis=(1, 2))
        if counts.mean() < _PRESENT_FRACTION * h * w or _compactness(masks, counts) < _COMPACT:
            continue
        track = np.full((t, 2), np.nan, np.float32)
        for i in np.nonzero(counts >= _UNOCCLUDED * counts.max())[0]:
            ys, xs = np.nonzero(masks[i])
            track[i] = xs.mean(), ys.mean()
        obj = DetectedObject(color=color, mean_pixels=float(counts.mean()), track=track)
        obj.motion, obj.speed = _classify_motion(track, h)
        obj.kind, obj.size = _match_template(masks[int(counts.argmax())], h)
        objects.append(obj)
    return sorted(objects, key=lambda o: -o.mean_pixels)


# ----------------------------------------------------------------------------------------------
# Captions and scoring
# ----------------------------------------------------------------------------------------------


def _alternation(names: Sequence[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


_PHRASE = re.compile(
    rf"\ba ({_alternation(spec.SIZE_NAMES)}) ({_alternation(spec.COLOR_NAMES)}) "
    rf"({_alternation(spec.KIND_NAMES)})(?: ({_alternation(spec.MOTION_NAMES)}) "
    rf"({_alternation(spec.SPEED_WORDS)}))?")


def parse_caption(text: str) -> dict[str, np.ndarray]:
    """Attributes (the spec's schema, without x0/y0) of a moving_digits caption."""
    found = list(_PHRASE.finditer(text.strip().lower()))[: spec.MAX_OBJECTS]
    if not found:
        raise ValueError(f"caption {text!r} names no moving_digits object "
                         "(e.g. 'a big red 7 moves left fast')")
    attrs = {k: np.full(spec.MAX_OBJECTS, -1, np.int32) for k in ("color", "kind", "motion", "speed", "size")}
    attrs["num_objects"] = np.asarray(len(found), np.int32)
    for i, m in enumerate(found):
        attrs["size"][i] = spec.SIZE_NAMES.index(m[1])
        attrs["color"][i] = spec.COLOR_NAMES.index(m[2])
        attrs["kind"][i] = spec.KIND_NAMES.index(m[3])
        if m[4]:
            attrs["motion"][i] = spec.MOTION_NAMES.index(m[4])
            attrs["speed"][i] = spec.SPEED_WORDS.index(m[5])
    return attrs


ATTRIBUTES = ("color", "count", "motion", "kind", "size", "speed", "color_and_motion")


def chance_levels(max_objects: int = spec.MAX_OBJECTS) -> dict[str, float]:
    """Accuracy of a clip that ignores its caption but follows the dataset's attribute distribution.

    colour: the caption's colour is among the ~E[n] distinct colours of an unrelated clip;
    motion/kind/size/speed are scored given the colour was found (uniform classes);
    count: P(two independent clips have the same number of objects).
    """
    mean_n = (max_objects + 1) / 2
    color = mean_n / len(spec.COLOR_NAMES)
    return {"color": color, "count": 1.0 / max_objects, "motion": 1.0 / len(spec.MOTION_NAMES),
            "kind": 1.0 / len(spec.KIND_NAMES), "size": 1.0 / len(spec.SIZE_NAMES),
            "speed": 1.0 / len(spec.SPEED_NAMES), "color_and_motion": color / len(spec.MOTION_NAMES)}


def _score_clip(objects: list[DetectedObject], attrs: dict) -> dict[str, list[bool]]:
    by_color = {o.color: o for o in objects}
    n = int(attrs["num_objects"])
    hits: dict[str, list[bool]] = {k: [] for k in ATTRIBUTES}
    hits["count"].append(len(objects) == n)
    for i in range(n):
        obj = by_color.get(int(attrs["color"][i]))
        hits["color"].append(obj is not None)
        motion_ok = obj is not None and obj.motion == int(attrs["motion"][i])
        hits["color_and_motion"].append(motion_ok)
        if obj is None:
            continue  # motion/kind/size/speed are scored given the colour was found
        if int(attrs["motion"][i]) >= 0:
            hits["motion"].append(motion_ok)
            hits["speed"].append(obj.speed == int(attrs["speed"][i]))
        hits["kind"].append(obj.kind == int(attrs["kind"][i]))
        hits["size"].append(obj.size == int(attrs["size"][i]))
    return hits


def net_displacement(track: np.ndarray) -> np.ndarray:
    """(dx, dy) from the first to the last frame where the object is seen; (nan, nan) if < 2 frames."""
    valid = np.nonzero(~np.isnan(track[:, 0]))[0]
    if valid.size < 2:
        return np.full(2, np.nan, np.float32)
    return (track[valid[-1]] - track[valid[0]]).astype(np.float32)


def motion_diagnostics(clips: Sequence[np.ndarray] | np.ndarray, captions: Sequence[str | dict]
                       ) -> dict[str, object]:
    """How motion goes wrong, beyond the accuracy (objects found by colour, as in the scorer):

    ``align_static_rate``: fraction of captioned-motion objects detected as not moving;
    ``align_direction_sign_acc``: for "moves <dir>" captions, fraction whose net displacement along
    the captioned axis has the captioned sign (threshold-free, chance 50%);
    ``align_motion_confusion``: {captioned motion: {detected motion or 'static': count}}.
    """
    static, sign_ok = [], []
    confusion: dict[str, dict[str, int]] = {}
    for clip, cap in zip(clips, captions):
        attrs = parse_caption(cap) if isinstance(cap, str) else cap
        by_color = {o.color: o for o in detect_objects(clip)}
        for i in range(int(attrs["num_objects"])):
            motion, obj = int(attrs["motion"][i]), by_color.get(int(attrs["color"][i]))
            if motion < 0 or obj is None:
                continue
            static.append(obj.motion < 0)
            row = confusion.setdefault(spec.MOTION_NAMES[motion], {})
            name = spec.MOTION_NAMES[obj.motion] if obj.motion >= 0 else "static"
            row[name] = row.get(name, 0) + 1
            if not spec.MOTION_BOUNCES[motion]:
                d = net_displacement(obj.track)[spec.MOTION_AXIS[motion]]
                sign_ok.append(bool(np.isfinite(d) and np.sign(d) == spec.MOTION_SIGN[motion]))
    return {"align_static_rate": float(np.mean(static)) if static else float("nan"),
            "align_direction_sign_acc": float(np.mean(sign_ok)) if sign_ok else float("nan"),
            "align_direction_sign_chance": 0.5,
            "align_motion_confusion": confusion}


def score_alignment(clips: Sequence[np.ndarray] | np.ndarray, captions: Sequence[str | dict],
                    max_objects: int = spec.MAX_OBJECTS) -> dict[str, float]:
    """Per-attribute accuracy of clips against their captions (text or attribute dicts).

    Returns ``{"align_<attr>_acc", "align_<attr>_chance", "align_<attr>_n"}`` for each attribute
    in :data:`ATTRIBUTES` plus ``align_num_clips``.  Accuracies with no scored item are NaN.
    """
    if len(clips) != len(captions):
        raise ValueError(f"got {len(clips)} clips but {len(captions)} captions")
    totals: dict[str, list[bool]] = {k: [] for k in ATTRIBUTES}
    for clip, cap in zip(clips, captions):
        attrs = parse_caption(cap) if isinstance(cap, str) else cap
        for k, v in _score_clip(detect_objects(clip), attrs).items():
            totals[k].extend(v)
    chance = chance_levels(max_objects)
    out: dict[str, float] = {"align_num_clips": float(len(clips))}
    for k in ATTRIBUTES:
        out[f"align_{k}_acc"] = float(np.mean(totals[k])) if totals[k] else float("nan")
        out[f"align_{k}_chance"] = chance[k]
        out[f"align_{k}_n"] = float(len(totals[k]))
    return out
