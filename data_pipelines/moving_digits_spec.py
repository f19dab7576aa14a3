"""The moving-digits world: palette, objects, motions, rendering and captions (pure numpy).

This module is the single source of truth for what a ``moving_digits`` clip shows. The tfds
builder stores clips made here, and evaluation uses the same constants to score whether a
generated clip follows its caption. The constants below are a stable contract: their order
defines the integer codes stored in the dataset.

Attribute schema (one clip, fixed-size arrays, ``MAX_OBJECTS`` slots, unused slots hold -1):

=============  =========  =================  ================================================
key            dtype      shape              meaning
=============  =========  =================  ================================================
num_objects    int32      ()                 1..MAX_OBJECTS
color          int32      (MAX_OBJECTS,)     index into ``COLOR_NAMES`` / ``PALETTE``
kind           int32      (MAX_OBJECTS,)     index into ``KIND_NAMES`` (0-9 digits, 10+ shapes)
motion         int32      (MAX_OBJECTS,)     index into ``MOTION_NAMES``
speed          int32      (MAX_OBJECTS,)     index into ``SPEED_NAMES``
size           int32      (MAX_OBJECTS,)     index into ``SIZE_NAMES``
x0, y0         float32    (MAX_OBJECTS,)     start of the object's box in [0, 1]: 0 = at the
                                             left/top wall, 1 = at the right/bottom wall
=============  =========  =================  ================================================

Geometry at resolution ``R`` (pixels): an object is a box of side ``size_px(size, R)``; its
top-left corner moves in ``[0, R - side]`` by ``speed_px(speed, R)`` pixels per frame. "moves"
motions stop at the wall; "bounces" motions reflect off it and start towards the nearer wall,
so a bounce reverses within 8 frames at the default 32x32. ``object_track`` gives the exact
per-frame positions, so a detector can compare against them.
"""

from __future__ import annotations

import numpy as np

MAX_OBJECTS = 2

COLOR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")
PALETTE = np.array(
    [
        (255, 0, 0),  # red
        (0, 255, 0),  # green
        (0, 0, 255),  # blue
        (255, 255, 0),  # yellow
        (255, 0, 255),  # magenta
        (0, 255, 255),  # cyan
        (255, 255, 255),  # white
        (255, 128, 0),  # orange
    ],
    dtype=np.uint8,
)

DIGIT_KINDS = tuple(str(d) for d in range(10))
SHAPE_KINDS = ("square", "circle", "triangle")
KIND_NAMES = DIGIT_KINDS + SHAPE_KINDS  # kind index 0-9 = that digit

MOTION_NAMES = (
    "moves left",
    "moves right",
    "moves up",
    "moves down",
    "bounces left and right",
    "bounces up and down",
)
# (dx, dy) unit direction at frame 0 for "moves"; bounces are horizontal (4) or vertical (5).
MOTION_AXIS = (0, 0, 1, 1, 0, 1)  # 0 = horizontal (x), 1 = vertical (y)
MOTION_SIGN = (-1, 1, -1, 1, 0, 0)  # 0 = bounce: starts towards the nearer wall
MOTION_BOUNCES = (False, False, False, False, True, True)

SPEED_NAMES = ("slow", "fast")
SPEED_WORDS = ("slowly", "fast")
SPEED_PX_AT_32 = (2.0, 3.0)  # pixels per frame at resolution 32; scales linearly with R

SIZE_NAMES = ("small", "big")
SIZE_FRACTION = (0.3125, 0.4375)  # box side / resolution (10 and 14 px at 32x32)

ATTRIBUTE_KEYS = ("num_objects", "color", "kind", "motion", "speed", "size", "x0", "y0")

# 3x5 bitmap font: bold strokes (1/5 of the box height) that stay legible at 10 px.
_FONT_3X5 = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "010", "010", "010"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}
_SUPERSAMPLE = 4


def attribute_spec() -> dict[str, tuple[tuple[int, ...], type]]:
    """Shape and dtype of every attribute array (what the tfds builder declares)."""
    spec = {k: ((MAX_OBJECTS,), np.int32) for k in ("color", "kind", "motion", "speed", "size")}
    spec.update(num_objects=((), np.int32), x0=((MAX_OBJECTS,), np.float32),
                y0=((MAX_OBJECTS,), np.float32))
    return {k: spec[k] for k in ATTRIBUTE_KEYS}


def size_px(size: int, resolution: int) -> int:
    """Side of an object's box in pixels."""
    return max(3, int(round(SIZE_FRACTION[size] * resolution)))


def speed_px(speed: int, resolution: int) -> float:
    """Pixels per frame."""
    return SPEED_PX_AT_32[speed] * resolution / 32.0


# --------------------------------------------------------------------------------------------
# Sampling and captions
# --------------------------------------------------------------------------------------------


def sample_attributes(rng: np.random.Generator, max_objects: int = MAX_OBJECTS) -> dict[str, np.ndarray]:
    """Draw one clip's attributes: 1..max_objects objects with distinct colours."""
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must be in [1, {MAX_OBJECTS}], got {max_objects}")
    n = int(rng.integers(1, max_objects + 1))
    attrs = {k: np.full(shape, -1, dtype) for k, (shape, dtype) in attribute_spec().items()}
    attrs["num_objects"] = np.asarray(n, np.int32)
    attrs["color"][:n] = rng.choice(len(COLOR_NAMES), size=n, replace=False)
    for i in range(n):
        attrs["kind"][i] = rng.integers(len(KIND_NAMES))
        motion = int(rng.integers(len(MOTION_NAMES)))
        attrs["motion"][i] = motion
        attrs["speed"][i] = rng.integers(len(SPEED_NAMES))
        attrs["size"][i] = rng.integers(len(SIZE_NAMES))
        along, across = _start_fractions(rng, motion, slot=i, n=n)
        if MOTION_AXIS[motion] == 0:
            attrs["x0"][i], attrs["y0"][i] = along, across
        else:
            attrs["y0"][i], attrs["x0"][i] = along, across
    return attrs


def _start_fractions(rng: np.random.Generator, motion: int, slot: int, n: int) -> tuple[float, float]:
    """Start position along and across the motion axis, as fractions of the free room."""
    sign = MOTION_SIGN[motion]
    if sign < 0:  # moving towards 0: start near the far wall
        along = rng.uniform(0.8, 1.0)
    elif sign > 0:
        along = rng.uniform(0.0, 0.2)
    else:  # bounce: anywhere but dead centre, so the first direction is well defined
        along = rng.choice([rng.uniform(0.0, 0.4), rng.uniform(0.6, 1.0)])
    # With two objects, put them in different halves across their axes to limit overlap.
    across = rng.uniform(0.0, 1.0) if n == 1 else rng.uniform(0.0, 0.3) + 0.7 * slot
    return float(along), float(across)


def object_phrase(attrs: dict[str, np.ndarray], i: int, with_motion: bool = True) -> str:
    """E.g. 'a big red 7 moves left fast'."""
    words = ["a", SIZE_NAMES[attrs["size"][i]], COLOR_NAMES[attrs["color"][i]], KIND_NAMES[attrs["kind"][i]]]
    if with_motion:
        words += [MOTION_NAMES[attrs["motion"][i]], SPEED_WORDS[attrs["speed"][i]]]
    return " ".join(words)


def caption(attrs: dict[str, np.ndarray], with_motion: bool = True) -> str:
    """E.g. 'a big red 7 moves left fast and a small blue square bounces up and down slowly'.

    ``with_motion=False`` gives the caption of a single still frame ('a big red 7 and ...').
    """
    n = int(attrs["num_objects"])
    return " and ".join(object_phrase(attrs, i, with_motion) for i in range(n))


# --------------------------------------------------------------------------------------------
# Geometry and rendering
# --------------------------------------------------------------------------------------------


def _reflect(p: np.ndarray, room: float) -> np.ndarray:
    """Fold unbounded positions into [0, room] (a ball bouncing between two walls)."""
    if room <= 0:
        return np.zeros_like(p)
    period = 2.0 * room
    q = np.mod(p, period)
    return np.where(q > room, period - q, q)


def object_track(attrs: dict[str, np.ndarray], i: int, num_frames: int, resolution: int) -> np.ndarray:
    """Top-left corner (x, y) in pixels of object ``i`` at each frame: float32 (T, 2)."""
    side = size_px(int(attrs["size"][i]), resolution)
    room = float(resolution - side)
    motion = int(attrs["motion"][i])
    start = np.array([attrs["x0"][i], attrs["y0"][i]], np.float64) * room
    axis = MOTION_AXIS[motion]
    v = speed_px(int(attrs["speed"][i]), resolution)
    t = np.arange(num_frames, dtype=np.float64)
    track = np.tile(start, (num_frames, 1))
    if MOTION_BOUNCES[motion]:
        sign = -1.0 if start[axis] < room / 2 else 1.0  # towards the nearer wall
        track[:, axis] = _reflect(start[axis] + sign * v * t, room)
    else:
        track[:, axis] = np.clip(start[axis] + MOTION_SIGN[motion] * v * t, 0.0, room)
    return track.astype(np.float32)


def _shape_mask(kind: int, side: int) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of one object in its (side, side) box."""
    s = side * _SUPERSAMPLE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    name = KIND_NAMES[kind]
    if name == "square":
        inset = 0.1 * s
        hi = np.ones((s, s), bool) & (xx > inset) & (xx < s - inset) & (yy > inset) & (yy < s - inset)
    elif name == "circle":
        hi = (xx - s / 2) ** 2 + (yy - s / 2) ** 2 <= (0.48 * s) ** 2
    elif name == "triangle":  # apex up, base at the bottom
        half_width = 0.5 * s * (yy / s)
        hi = (np.abs(xx - s / 2) <= half_width) & (yy >= 0.05 * s) & (yy <= 0.95 * s)
    else:
        hi = _digit_hi(name, s)
    return hi.reshape(side, _SUPERSAMPLE, side, _SUPERSAMPLE).mean(axis=(1, 3)).astype(np.float32)


def _digit_hi(digit: str, s: int) -> np.ndarray:
    """Supersampled digit glyph: 3x5 font, centred, glyph width 70% of the box."""
    glyph = np.array([[c == "1" for c in row] for row in _FONT_3X5[digit]], bool)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    width = 0.7 * s
    left = (s - width) / 2
    col = np.floor((xx - left) / width * 3).astype(int)
    row = np.floor(yy / s * 5).astype(int)
    inside = (col >= 0) & (col < 3)
    return inside & glyph[np.clip(row, 0, 4), np.clip(col, 0, 2)]


def render_clip(attrs: dict[str, np.ndarray], num_frames: int, resolution: int) -> np.ndarray:
    """Render the clip: uint8 (num_frames, resolution, resolution, 3) on a black background."""
    canvas = np.zeros((num_frames, resolution, resolution, 3), np.float32)
    for i in range(int(attrs["num_objects"])):
        side = size_px(int(attrs["size"][i]), resolution)
        mask = _shape_mask(int(attrs["kind"][i]), side)[..., None]
        color = PALETTE[int(attrs["color"][i])].astype(np.float32)
        for t, (x, y) in enumerate(np.rint(object_track(attrs, i, num_frames, resolution)).astype(int)):
            patch = canvas[t, y:y + side, x:x + side]
            patch[...] = patch * (1.0 - mask) + color * mask
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def generate_example(index: int, seed: int, frames: int, res: int, max_objects: int = MAX_OBJECTS) -> dict:
    """Clip number ``index`` of the dataset with ``seed``: deterministic, independent of order.

    Returns ``{"video": uint8 (T,H,W,3), "caption": str, **attributes}``.
    """
    rng = np.random.default_rng([int(seed), int(index)])
    attrs = sample_attributes(rng, max_objects)
    return {"video": render_clip(attrs, frames, res), "caption": caption(attrs), **attrs}


def generate_image_example(index: int, seed: int, frames: int, res: int,
                           max_objects: int = MAX_OBJECTS) -> dict:
    """A single captioned still frame (the ``image`` split): one random frame of a clip.

    Returns ``{"image": uint8 (H,W,3), "caption": str (no motion words), **attributes}``.
    The stream is independent of the video splits' (different seed derivation).
    """
    rng = np.random.default_rng([int(seed), int(index), 1])
    attrs = sample_attributes(rng, max_objects)
    t = int(rng.integers(frames))
    clip = render_clip(attrs, frames, res)
    return {"image": clip[t], "caption": caption(attrs, with_motion=False), **attrs}


def max_caption_bytes(max_objects: int = MAX_OBJECTS) -> int:
    """Length in bytes of the longest possible caption (for choosing max_text_len)."""
    longest = {k: max(range(len(v)), key=lambda j, v=v: len(v[j])) for k, v in
               (("color", COLOR_NAMES), ("kind", KIND_NAMES), ("motion", MOTION_NAMES),
                ("speed", SPEED_WORDS), ("size", SIZE_NAMES))}
    attrs = {k: np.full(MAX_OBJECTS, v, np.int32) for k, v in longest.items()}
    attrs["num_objects"] = np.asarray(max_objects)
    return len(caption(attrs).encode())
