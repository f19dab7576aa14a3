"""Per-record transforms of the grain pipeline (picklable, so grain worker processes can run them)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from data_pipelines import records, text_embeddings
from data_pipelines.video_io import resize_center_crop, to_unit


def fit_resolution(video: np.ndarray, resolution: int) -> np.ndarray:
    """Centre-crop and resize (T,H,W,3) frames to (T,resolution,resolution,3) when needed."""
    if video.shape[1] == video.shape[2] == resolution:
        return video
    return np.stack([resize_center_crop(f, resolution) for f in video])


def temporal_window(video: np.ndarray, num_frames: int, rng: np.random.Generator | None) -> np.ndarray:
    """A window of ``num_frames`` frames: random start with ``rng``, else the first."""
    total = video.shape[0]
    if total < num_frames:
        raise ValueError(f"stored clips have {total} frames, fewer than data.num_frames={num_frames}: "
                         "prepare the dataset with more frames")
    start = 0 if rng is None or total == num_frames else int(rng.integers(total - num_frames + 1))
    return video[start:start + num_frames]


@dataclasses.dataclass(frozen=True)
class ClipTransform:
    """Record -> {video uint8 (T,H,W,3), tokens, token_mask}: crop, optional flip, tokenise.

    A record with a stored frozen-encoder embedding (``text_embedding`` (n, D), see
    :mod:`data_pipelines.text_embeddings`) gives ``text_embeddings`` (max_text_len, D) and its
    ``token_mask`` instead of tokens.
    """

    num_frames: int
    resolution: int
    tokenizer: Any
    max_text_len: int
    random_crop: bool = True
    random_flip: bool = False

    def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
        video = np.asarray(record[records.VIDEO_KEY])
        video = temporal_window(video, self.num_frames, rng if self.random_crop else None)
        video = fit_resolution(video, self.resolution)
        if self.random_flip and rng is not None and rng.random() < 0.5:
            video = video[:, :, ::-1]
        if text_embeddings.EMBEDDING_KEY in record:
            stored = np.asarray(record[text_embeddings.EMBEDDING_KEY])
            emb, mask = text_embeddings.pad(stored, self.max_text_len)
            return {"video": np.ascontiguousarray(video), "text_embeddings": emb, "token_mask": mask}
        tokens, mask = self.tokenizer.encode(record[records.CAPTION_KEY], self.max_text_len)
        return {"video": np.ascontiguousarray(video), "tokens": tokens, "token_mask": mask}


@dataclasses.dataclass(frozen=True)
class AppendImages:
    """Joint image-video training: append ``k`` independent image frames to each clip.

    Element ``i`` of the (process-local) video stream gets images ``i*k .. i*k+k-1`` of the
    (shuffled, repeated, process-local) image stream ``images``, a MapDataset of records.
    The image frames are not captioned by the video's caption; the model sees them through
    ``frame_mask`` (False on image frames) and treats them as independent frames.
    """

    images: Any
    k: int
    resolution: int
    random_flip: bool = False

    def __call__(self, index: int, element: dict) -> dict:
        frames = []
        for j in range(self.k):
            record = self.images[index * self.k + j]
            frame = fit_resolution(np.asarray(record[records.VIDEO_KEY])[:1], self.resolution)[0]
            if self.random_flip and (index * self.k + j) % 2:
                frame = frame[:, ::-1]
            frames.append(frame)
        video = np.concatenate([element["video"], np.stack(frames)], axis=0)
        return {**element, "video": video}


def finalize_batch(batch: dict, num_video_frames: int) -> dict:
    """uint8 video -> float32 in [-1, 1]; add ``frame_mask`` (True on the video frames).

    Stored text embeddings keep their dtype (bfloat16/float16): the model casts them.
    """
    video = to_unit(batch["video"])
    b, t_total = video.shape[:2]
    frame_mask = np.zeros((b, t_total), bool)
    frame_mask[:, :num_video_frames] = True
    text = ({"text_embeddings": batch["text_embeddings"]} if "text_embeddings" in batch
            else {"tokens": batch["tokens"].astype(np.int32)})
    return {"video": video, **text, "token_mask": batch["token_mask"].astype(bool), "frame_mask": frame_mask}
