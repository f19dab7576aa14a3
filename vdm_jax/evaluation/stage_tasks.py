"""Evaluation of a cascade stage (``model.conditioning``): super-resolution of real clips.

The ground truth is the eval split's first clips at the stage's output shape; the stage is given
them downsampled exactly as in training (``data_pipelines.stage_inputs``: area in space, every
f-th frame in time) and its samples are scored with PSNR / SSIM / LPIPS next to model-free
baselines on the same clips: bilinear upsampling (spatial_sr; the same resize the stage's input
uses), frame repetition and linear blending of the given frames (temporal_sr). A temporal stage
is scored on the frames it generated (the given frames excluded), a spatial stage on every frame.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from data_pipelines.stage_inputs import downsample
from data_pipelines.video_io import to_uint8, to_unit
from vdm_jax.config import Config, StageKind
from vdm_jax.evaluation.generation import Generator, generate_in_batches
from vdm_jax.evaluation.image_metrics import prediction_metrics
from vdm_jax.models.stage import upsample_bilinear

GRID_CLIPS = 4


def low_res_of(real: np.ndarray, config: Config) -> np.ndarray:
    """The stage's input for uint8 real clips: float [-1, 1], downsampled as in training."""
    m = config.model
    return downsample(to_unit(real), m.conditioning, m.conditioning_factor)


def super_resolve_clips(generator: Generator, params: Any, real: np.ndarray, cond: dict[str, np.ndarray],
                        config: Config) -> np.ndarray:
    """uint8 stage outputs for the real clips' downsampled versions (fixed seed per batch)."""
    e = config.evaluation
    key = jax.random.fold_in(jax.random.PRNGKey(e.seed), 20_000)
    inputs = {"low_res": low_res_of(real, config), **cond}

    def run(chunk, i):
        text = {name: chunk[name] for name in cond}
        return generator.super_resolve(params, text, chunk["low_res"], jax.random.fold_in(key, i))

    return generate_in_batches(run, inputs, e.batch_size)[0]


def baselines(real: np.ndarray, config: Config) -> dict[str, np.ndarray]:
    """Model-free upsampled clips (uint8) from the same input the stage gets."""
    m, low = config.model, low_res_of(real, config)
    f = m.conditioning_factor
    if m.conditioning == StageKind.SPATIAL_SR:
        return {"bilinear": to_uint8(upsample_bilinear(low, f))}
    repeat = np.repeat(low, f, axis=1)
    nxt = np.concatenate([low[:, 1:], low[:, -1:]], axis=1)  # the next given frame (the last held)
    w = (np.arange(f, dtype=np.float32) / f)[None, None, :, None, None, None]
    blend = ((1 - w) * low[:, :, None] + w * nxt[:, :, None]).reshape(repeat.shape)
    return {"repeat": to_uint8(repeat), "blend": to_uint8(blend)}


def scored_frames(config: Config, num_frames: int) -> np.ndarray:
    """Indices of the frames a stage is scored on (a temporal stage: those it was not given)."""
    m = config.model
    frames = np.arange(num_frames)
    return frames[frames % m.conditioning_factor != 0] if m.conditioning == StageKind.TEMPORAL_SR else frames


def stage_scores(generated: np.ndarray, real: np.ndarray, config: Config, lpips: Any) -> dict[str, Any]:
    """``sr_{psnr,ssim,lpips}`` of the stage and ``sr_<baseline>_*`` of each baseline."""
    idx = scored_frames(config, real.shape[1])
    out: dict[str, Any] = {f"sr_{k}": v for k, v in
                           prediction_metrics(generated[:, idx], real[:, idx], 0, lpips_fn=lpips).items()}
    for name, clips in baselines(real, config).items():
        scores = prediction_metrics(clips[:, idx], real[:, idx], 0, lpips_fn=lpips)
        out.update({f"sr_{name}_{k}": v for k, v in scores.items()})
    m = config.model
    spatial = m.conditioning == StageKind.SPATIAL_SR
    out["sr_protocol"] = {"stage": m.conditioning.value, "factor": m.conditioning_factor,
                          "num_clips": len(real), "downsampling": "area" if spatial else "every f-th frame",
                          "noise_aug_logsnr": config.sampling.noise_aug_logsnr,
                          "frames_scored": [int(i) for i in idx]}
    return out


def stage_grid(real: np.ndarray, generated: np.ndarray, config: Config, captions: list[str]
               ) -> tuple[list, list]:
    """Clips and captions for a grid: per clip the baseline, the stage's output and the real clip."""
    name, base = next(iter(baselines(real[:GRID_CLIPS], config).items()))
    clips, labels = [], []
    for i in range(min(GRID_CLIPS, len(generated))):
        clips += [base[i], generated[i], real[i]]
        labels += [f"{name}: {captions[i]}", "stage output", "real"]
    return clips, labels
