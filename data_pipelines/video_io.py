"""Decoding videos and images into fixed-size uint8 frames (PyAV / Pillow), and cutting clips."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import numpy as np

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".gif", ".mov", ".mkv", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
    from PIL import Image

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
    import av

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
    from PIL import Image

    with Image.open(path) as image:
        return resize_center_crop(np.asarray(image.convert("RGB")), resolution)
