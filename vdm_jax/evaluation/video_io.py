"""Writing sample videos: ``save_video`` (.gif via Pillow, .mp4 via PyAV) and ``make_grid``.

Frames are uint8 (T, H, W, 3) or float in [-1, 1].  ``make_grid`` tiles clips, upscales small
ones (nearest neighbour, integer factor) so a 32x32 clip is visible, and can write a caption strip
above each clip with Pillow's bundled default font (no downloads).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VIDEO_SUFFIXES = (".gif", ".mp4")


def to_uint8_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 from uint8 or [-1, 1] float frames; a single (H, W, 3) image becomes T=1."""
    x = np.asarray(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be (T, H, W, 3), got shape {np.asarray(frames).shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint((x.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour integer upscaling of (..., H, W, C)."""
    if factor <= 1:
        return frames
    return np.repeat(np.repeat(frames, factor, axis=-3), factor, axis=-2)


def _caption_strip(text: str, width: int, font: ImageFont.ImageFont) -> np.ndarray:
    """A black strip with ``text`` wrapped to ``width`` pixels, white, as uint8 (h, width, 3)."""
    lines: list[str] = []
    for word in text.split():  # greedy wrap on the rendered width (proportional font)
        if lines and font.getlength(f"{lines[-1]} {word}") <= width - 4:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    lines = lines or [""]
    ascent, descent = font.getmetrics()
    line_h = ascent + descent + 2
    img = Image.new("RGB", (width, line_h * len(lines) + 4), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((2, 2 + i * line_h), line, fill=(255, 255, 255), font=font)
    return np.asarray(img)


def make_grid(videos: Sequence[np.ndarray] | np.ndarray, captions: Sequence[str] | None = None,
              ncols: int | None = None, min_size: int = 128, pad: int = 2) -> np.ndarray:
    """Tile clips (each (T, H, W, 3)) into one uint8 clip (T_max, GH, GW, 3).

    Clips shorter than the longest hold their last frame.  Each clip is upscaled by the smallest
    integer factor that makes its height at least ``min_size``.  ``captions`` (one per clip) are
    drawn in a strip above each clip.
    """
    clips = [to_uint8_frames(v) for v in videos]
    if not clips:
        raise ValueError("make_grid needs at least one video")
    if captions is not None and len(captions) != len(clips):
        raise ValueError(f"got {len(captions)} captions for {len(clips)} videos")
    h, w = clips[0].shape[1:3]
    if any(c.shape[1:3] != (h, w) for c in clips):
        raise ValueError(f"all videos must have the same frame size, got {[c.shape[1:3] for c in clips]}")
    factor = max(1, -(-min_size // h))
    t_max = max(c.shape[0] for c in clips)
    clips = [upscale(np.concatenate([c, np.repeat(c[-1:], t_max - c.shape[0], 0)]), factor) for c in clips]
    cell_h, cell_w = h * factor, w * factor
    if captions is not None:
        font = ImageFont.load_default()
        strips = [_caption_strip(str(c), cell_w, font) for c in captions]
        strip_h = max(s.shape[0] for s in strips)
        clips = [np.concatenate([np.broadcast_to(np.pad(s, ((0, strip_h - s.shape[0]), (0, 0), (0, 0))),
                                                 (t_max, strip_h, cell_w, 3)), c], axis=1)
                 for s, c in zip(strips, clips)]
        cell_h += strip_h
    ncols = ncols or min(len(clips), int(np.ceil(np.sqrt(len(clips)))))
    nrows = -(-len(clips) // ncols)
    grid = np.full((t_max, nrows * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad, 3), 64, np.uint8)
    for i, c in enumerate(clips):
        r, col = divmod(i, ncols)
        y, x = pad + r * (cell_h + pad), pad + col * (cell_w + pad)
        grid[:, y:y + cell_h, x:x + cell_w] = c
    return grid


def _write_gif(path: str, frames: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=int(round(1000 / fps)), loop=0)


def _write_mp4(path: str, frames: np.ndarray, fps: float) -> None:
    import av  # PyAV: optional, only needed for .mp4

    frames = np.pad(frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0)))
    with av.open(path, mode="w", format="mp4") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def save_video(path: str, frames: np.ndarray, fps: float = 8.0) -> str:
    """Write frames (T, H, W, 3) (uint8 or [-1, 1] float, e.g. a ``make_grid`` output) to .gif/.mp4.

    The file is written next to ``path`` and renamed into place, so an interrupted write never
    leaves a broken file at ``path``.  Returns ``path``.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ValueError(f"video path {path!r} must end in one of {VIDEO_SUFFIXES}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    frames = to_uint8_frames(frames)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=suffix)
    os.close(fd)
    try:
        (_write_gif if suffix == ".gif" else _write_mp4)(tmp, frames, fps)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
