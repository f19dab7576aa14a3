"""Image-to-video and interpolation on real test clips, scored like the prediction task.

Both give the model some frames of an eval clip and generate the rest by the configured
conditioning method (``sampling.conditioning_method``, through ``Generator.given_frames``):
  image_to_video  frame 0 given (``evaluation.num_image_to_video_clips``);
  interpolation   frames 0, k, 2k, ... given (``evaluation.num_interpolation_clips``,
                  ``evaluation.interpolation_stride`` k), the frames between generated (the last
                  ones, past the last given frame, are extrapolated).
PSNR / SSIM / LPIPS are computed on the generated frames only (``{i2v,interp}_{psnr,ssim,lpips}``)
next to model-free baselines on the same clips and frames: holding the given image
(``i2v_copy_first_*``); holding each given frame (``interp_repeat_*``) and blending linearly
between consecutive given frames (``interp_blend_*``; the frames after the last given one hold it).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from data_pipelines.video_io import to_unit
from vdm_jax.config import Config
from vdm_jax.evaluation.generation import Generator, generate_in_batches
from vdm_jax.evaluation.image_metrics import prediction_metrics

TASKS = ("image_to_video", "interpolation")
PREFIX = {"image_to_video": "i2v", "interpolation": "interp"}
_SALT = {"image_to_video": 30_000, "interpolation": 40_000}


def given_indices(task: str, num_frames: int, stride: int) -> tuple[int, ...]:
    """The frames a task gives the model."""
    if task == "image_to_video":
        return (0,)
    if task == "interpolation":
        return tuple(range(0, num_frames, stride))
    raise ValueError(f"unknown task {task!r}; allowed: {list(TASKS)}")


def num_clips(task: str, config: Config) -> int:
    e = config.evaluation
    return e.num_image_to_video_clips if task == "image_to_video" else e.num_interpolation_clips


def hold_given(clips: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    """Every frame is the latest given frame at or before it."""
    t = clips.shape[1]
    source = np.array([max(i for i in indices if i <= f) for f in range(t)])
    return clips[:, source]


def blend_given(clips: np.ndarray, indices: tuple[int, ...]) -> np.ndarray:
    """Linear blend between consecutive given frames; frames after the last given one hold it."""
    x = clips.astype(np.float32)
    out = np.array(x, copy=True)
    for a, b in zip(indices[:-1], indices[1:]):
        for f in range(a + 1, b):
            w = (f - a) / (b - a)
            out[:, f] = (1 - w) * x[:, a] + w * x[:, b]
    out[:, indices[-1] + 1:] = x[:, indices[-1]:indices[-1] + 1]
    return np.clip(np.rint(out), 0, 255).astype(clips.dtype)


def baselines(task: str, clips: np.ndarray, indices: tuple[int, ...]) -> dict[str, np.ndarray]:
    if task == "image_to_video":
        return {"copy_first": hold_given(clips, indices)}
    return {"repeat": hold_given(clips, indices), "blend": blend_given(clips, indices)}


def generate(task: str, generator: Generator, params: Any, videos: np.ndarray,
             cond: dict[str, np.ndarray], config: Config) -> np.ndarray:
    """uint8 clips whose given frames come from ``videos`` (uint8 eval clips), the rest generated
    (a fixed seed per batch, different from the other tasks')."""
    e = config.evaluation
    n = min(num_clips(task, config), len(videos))
    indices = given_indices(task, videos.shape[1], e.interpolation_stride)
    key = jax.random.fold_in(jax.random.PRNGKey(e.seed), _SALT[task])
    inputs = {"given": to_unit(videos[:n][:, list(indices)]), **{k: v[:n] for k, v in cond.items()}}

    def run(chunk, i):
        text = {k: chunk[k] for k in cond}
        return generator.given_frames(params, text, chunk["given"], indices, jax.random.fold_in(key, i),
                                      num_frames=videos.shape[1])

    return generate_in_batches(run, inputs, e.batch_size)[0]


def scores(task: str, generated: np.ndarray, real: np.ndarray, config: Config, lpips: Any
           ) -> dict[str, Any]:
    """Metrics of the generated frames and of each baseline (uint8 clips, ``real`` >= as many)."""
    e, prefix = config.evaluation, PREFIX[task]
    real = real[:len(generated)]
    indices = given_indices(task, real.shape[1], e.interpolation_stride)
    scored = [f for f in range(real.shape[1]) if f not in indices]

    def metrics(clips):
        return prediction_metrics(clips[:, scored], real[:, scored], 0, lpips_fn=lpips)

    out: dict[str, Any] = {f"{prefix}_{k}": v for k, v in metrics(generated).items()}
    for name, clips in baselines(task, real, indices).items():
        out.update({f"{prefix}_{name}_{k}": v for k, v in metrics(clips).items()})
    out[f"{prefix}_protocol"] = {"frames_given": list(indices), "frames_scored": scored,
                                 "num_clips": len(generated), "method": config.sampling.conditioning_method,
                                 "reconstruction_weight": config.sampling.reconstruction_weight}
    return out


def grid(task: str, real: np.ndarray, generated: np.ndarray, captions: list[str], config: Config,
         rows: int = 4) -> tuple[list, list]:
    """Clips and captions for a grid: each real clip next to the task's output."""
    indices = given_indices(task, real.shape[1], config.evaluation.interpolation_stride)
    clips, labels = [], []
    for i in range(min(rows, len(generated))):
        clips += [real[i], generated[i]]
        labels += [f"real: {captions[i]}", f"{task.replace('_', ' ')}: frames {list(indices)} given"]
    return clips, labels

