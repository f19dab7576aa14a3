"""Video and image IO in one place: pixel conversion, decoding (PyAV / Pillow) into fixed-size
uint8 frames and cutting clips, and writing sample videos (``save_video``: .gif via Pillow, .mp4
via PyAV; ``make_grid``: captioned tiles).

Pixels are uint8 in [0, 255] on disk and in records, float32 in [-1, 1] in the model:
:func:`to_unit` and :func:`to_uint8` are the one conversion each way (numpy or jax arrays).
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".gif", ".mov", ".mkv", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_SUFFIXES = (".gif", ".mp4")  # what save_video writes


def to_unit(pixels):
    """float32 in [-1, 1] from uint8 pixels (numpy or jax arrays, also under ``jax.jit``); float
    input is taken to be in [-1, 1] already and only cast to float32."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return pixels.astype(np.float32)


def to_uint8(pixels) -> np.ndarray:
    """uint8 pixels (a host numpy array) from [-1, 1] floats, rounded and clipped; numpy or jax
    arrays (fetched from the device); uint8 input is returned as it is."""
    x = np.asarray(pixels)
    if x.dtype == np.uint8:
        return x
    return np.clip(np.rint((x.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


def _scaled_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Size whose short side is ``resolution`` (keeping the aspect ratio)."""
    scale = resolution / min(width, height)
    return max(resolution, round(width * scale)), max(resolution, round(height * scale))


def center_crop(frame: np.ndarray, resolution: int) -> np.ndarray:
    h, w = frame.shape[:2]
    top, left = (h - resolution) // 2, (w - resolution) // 2
    return frame[top:top + resolution, left:left + resolution]


def resize_center_crop(frame: np.ndarray, resolution: int) -> np.ndarray:
    """(H,W,3) uint8 -> (resolution, resolution, 3): short side to ``resolution``, centre crop."""
    h, w = frame.shape[:2]
    if (h, w) != (resolution, resolution):
        image = Image.fromarray(np.ascontiguousarray(frame[..., :3]))
        frame = np.asarray(image.resize(_scaled_size(w, h, resolution), Image.Resampling.BICUBIC,
                                        reducing_gap=2.0))
    return np.ascontiguousarray(center_crop(frame, resolution))


def decode_video(path: str, fps: float, resolution: int) -> Iterator[np.ndarray]:
    """Yield (resolution, resolution, 3) uint8 frames resampled to ``fps`` (nearest frame in time).

    Raises whatever PyAV raises on unreadable files (callers count and skip them).
    """
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"no video stream in {path}")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        dt, target, first, prev = 1.0 / fps, 0.0, None, None
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            first = frame.time if first is None else first
            t = frame.time - first
            if prev is not None:
                while target < t:
                    yield prev[1] if target - prev[0] <= t - target else _rgb(frame, resolution)
                    target += dt
            prev = (t, _rgb(frame, resolution))
        if prev is not None:
            while target <= prev[0] + 1e-6:
                yield prev[1]
                target += dt


def _rgb(frame, resolution: int) -> np.ndarray:
    width, height = _scaled_size(frame.width, frame.height, resolution)
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    return np.ascontiguousarray(center_crop(rgb, resolution))


def cut_clips(frames: Iterable[np.ndarray], num_frames: int, stride: int,
              max_clips: int = 0) -> Iterator[np.ndarray]:
    """Fixed-length clips (num_frames, H, W, 3) starting every ``stride`` frames."""
    if num_frames < 1 or stride < 1:
        raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
    buffer: collections.deque = collections.deque()
    next_start, index, emitted = 0, 0, 0
    for frame in frames:
        buffer.append((index, frame))
        index += 1
        while buffer and buffer[0][0] < next_start:
            buffer.popleft()
        if buffer and buffer[0][0] == next_start and len(buffer) >= num_frames:
            yield np.stack([f for _, f in list(buffer)[:num_frames]])
            emitted += 1
            if max_clips and emitted >= max_clips:
                return
            next_start += stride


def decode_image(path: str, resolution: int) -> np.ndarray:
    """One image file -> (resolution, resolution, 3) uint8 (first frame of animated images)."""
    with Image.open(path) as image:
        return resize_center_crop(np.asarray(image.convert("RGB")), resolution)


def read_frames(path: str, resolution: int) -> np.ndarray:
    """Every frame of a video, or an image file as one frame, as uint8 (T, resolution, resolution, 3)
    (short side resized to ``resolution``, centre crop); T may be 0. Raises what PyAV/Pillow raise."""
    if path.lower().endswith(IMAGE_EXTENSIONS):
        return decode_image(path, resolution)[None]
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        frames = [resize_center_crop(f.to_ndarray(format="rgb24"), resolution)
                  for f in container.decode(container.streams.video[0])]
    return np.stack(frames) if frames else np.zeros((0, resolution, resolution, 3), np.uint8)


# ----------------------------------------------------------------------------------------------
# Writing: captioned grids, .gif and .mp4
# ----------------------------------------------------------------------------------------------


def to_uint8_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 from uint8 or [-1, 1] float frames; a single (H, W, 3) image becomes T=1."""
    x = np.asarray(frames)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"frames must be (T, H, W, 3), got shape {np.asarray(frames).shape}")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return to_uint8(x)


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


def default_file_mode() -> int:
    """0666 minus the process umask (what ``open(path, "w")`` would give)."""
    try:
        with open("/proc/self/status") as f:  # Linux: read the umask without changing it
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


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
        os.chmod(tmp, default_file_mode())  # mkstemp makes 0600; a video is a normal file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
