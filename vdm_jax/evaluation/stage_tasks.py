"""Evaluation of a cascade stage (``model.conditioning``): super-resolution of real clips.

The ground truth is the eval split's first clips at the stage's output shape; the stage is given
them downsampled exactly as in training (``data_pipelines.stage_inputs``: area in space, every
f-th frame in time) and its samples are scored with PSNR / SSIM / LPIPS next to model-free
baselines on the same clips: bilinear upsampling (spatial_sr; the same resize the stage's input
uses) and that upsampling projected onto the videos consistent with the input (the step
``sampling.stage_consistency`` applies to the stage's samples); frame repetition and linear
blending of the given frames (temporal_sr). A temporal stage is scored on the frames it generated
(the given frames excluded), a spatial stage on every frame.

Two optional references, each loaded from its own workdir (saved config, tokenizer, EMA params):
  ``evaluation.sr_guidance_workdir``  a single-resolution model at the stage's output shape, made to
      do the stage's job by reconstruction guidance (VDM section 3.1): spatial_sr through the same
      area downsampling, temporal_sr by interpolation (the given frames placed at 0, f, 2f, ...).
      Scored on the same clips and frames as ``sr_guided_*``.
  ``evaluation.cascade_base_workdir``  the lower model of the cascade: its text-to-video samples for
      the eval captions, upsampled by the stage, give ``cascade_fvd`` against the real clips at the
      stage's output shape, and (moving_digits) text alignment of the cascade's output
      (``cascade_align_*``) next to the base model's own (``cascade_base_align_*``) on the same
      captions.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from data_pipelines.stage_inputs import downsample
from data_pipelines.video_io import to_uint8, to_unit
from vdm_jax.config import Config, StageKind
from vdm_jax.diffusion.conditioning import stage_observation
from vdm_jax.evaluation import cascade
from vdm_jax.evaluation.alignment import score_alignment
from vdm_jax.evaluation.generation import Generator, generate_in_batches, pad_rows
from vdm_jax.evaluation.image_metrics import prediction_metrics
from vdm_jax.evaluation.loading import EvalInputError
from vdm_jax.models import prompts
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
        up = upsample_bilinear(low, f)
        # the same upsampling made consistent with its input, as sampling.stage_consistency does
        # for the stage: the nearest video in [-1, 1] whose blocks have the input's means
        consistent = stage_observation(m.conditioning, f, low).project(up, (-1.0, 1.0))
        return {"bilinear": to_uint8(up), "bilinear_consistent": to_uint8(consistent)}
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


# -- references loaded from other workdirs ---------------------------------------------------


def _shape(config: Config) -> tuple[int, int]:
    return config.data.num_frames, config.data.resolution


def load_guidance_model(config: Config) -> cascade.LoadedModel:
    """``evaluation.sr_guidance_workdir``'s latest checkpoint, checked to be a single-resolution
    model at the stage's output shape."""
    workdir = config.evaluation.sr_guidance_workdir
    model = cascade.load_model(workdir, "latest", f"evaluation.sr_guidance_workdir ({workdir})")
    if model.kind != StageKind.NONE:
        raise EvalInputError(f"{model.name} is a {model.kind.value} stage; the guidance baseline needs a "
                             "single-resolution model (model.conditioning='none')")
    if _shape(model.config) != _shape(config):
        raise EvalInputError(f"{model.name} makes {model.frames} frames of {model.resolution}x"
                             f"{model.resolution}, but the stage makes {config.data.num_frames} frames of "
                             f"{config.data.resolution}x{config.data.resolution}")
    return model


def guided_clips(model: cascade.LoadedModel, real: np.ndarray, captions: list[str], config: Config
                 ) -> np.ndarray:
    """uint8: ``model`` doing the stage's job on the real clips' downsampled versions by
    reconstruction guidance (the stage's own evaluation seed)."""
    m, e = config.model, config.evaluation
    generator = Generator(model.plan)
    key = jax.random.fold_in(jax.random.PRNGKey(e.seed), 21_000)
    low = low_res_of(real, config)
    f = m.conditioning_factor
    inputs = {"low_res": low, **prompts.encode_prompts(model.config, model.tokenizer, captions, model.mesh)}

    def run(chunk, i):
        text = {k: v for k, v in chunk.items() if k != "low_res"}
        rng = jax.random.fold_in(key, i)
        if m.conditioning == StageKind.SPATIAL_SR:
            return generator.guided_super_resolution(model.params, text, chunk["low_res"], f, rng)
        return generator.given_frames(model.params, text, chunk["low_res"],
                                      tuple(range(0, config.data.num_frames, f)), rng)

    with jax.set_mesh(model.mesh):
        return generate_in_batches(run, inputs, e.batch_size)[0]


def guided_scores(guided: np.ndarray, real: np.ndarray, config: Config, lpips: Any) -> dict[str, Any]:
    idx = scored_frames(config, real.shape[1])
    scores = prediction_metrics(guided[:, idx], real[:, idx], 0, lpips_fn=lpips)
    return {f"sr_guided_{k}": v for k, v in scores.items()}


def load_cascade_base(config: Config) -> cascade.LoadedModel:
    """``evaluation.cascade_base_workdir``'s latest checkpoint, checked to feed the stage."""
    workdir = config.evaluation.cascade_base_workdir
    base = cascade.load_model(workdir, "latest", f"evaluation.cascade_base_workdir ({workdir})")
    if base.kind != StageKind.NONE:
        raise EvalInputError(f"{base.name} is a {base.kind.value} stage; the cascade needs a base model "
                             "(model.conditioning='none')")
    m = config.model
    f = m.conditioning_factor
    frames, res = _shape(config)
    want = (frames, res // f) if m.conditioning == StageKind.SPATIAL_SR else (frames // f, res)
    if _shape(base.config) != want or base.config.model.in_channels != m.in_channels:
        raise EvalInputError(f"{base.name} makes {base.frames} frames of {base.resolution}x"
                             f"{base.resolution}, but this {m.conditioning.value} stage reads "
                             f"{want[0]} frames of {want[1]}x{want[1]}")
    return base


def cascade_clips(base: cascade.LoadedModel, stage: Generator, stage_params: Any, captions: list[str],
                  stage_cond: dict[str, np.ndarray], stage_mesh: Any, config: Config
                  ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 base outputs and the stage's upsampled outputs for ``captions`` (each model with its
    own text inputs and mesh; batches of ``evaluation.batch_size``, the last one padded)."""
    e = config.evaluation
    key = jax.random.fold_in(jax.random.PRNGKey(e.seed), 22_000)
    base_gen = Generator(base.plan)
    base_cond = prompts.encode_prompts(base.config, base.tokenizer, captions, base.mesh)
    n, lows, highs = len(captions), [], []
    for i, start in enumerate(range(0, n, e.batch_size)):
        stop = min(n, start + e.batch_size)

        def rows(d, start=start, stop=stop):
            return {k: pad_rows(np.asarray(v[start:stop]), e.batch_size) for k, v in d.items()}

        with jax.set_mesh(base.mesh):
            low = np.asarray(jax.device_get(base_gen.text_to_video(base.params, rows(base_cond),
                                                                   jax.random.fold_in(key, 2 * i))))
        with jax.set_mesh(stage_mesh):
            high = stage.super_resolve(stage_params, rows(stage_cond), low,
                                       jax.random.fold_in(key, 2 * i + 1))
        lows.append(to_uint8(low)[:stop - start])
        highs.append(to_uint8(high)[:stop - start])
    return np.concatenate(lows), np.concatenate(highs)


def cascade_alignment(base_out: np.ndarray, final: np.ndarray, attributes: list[dict], config: Config
                      ) -> dict[str, Any]:
    """Text alignment of the base model's and the cascade's outputs on the same captions."""
    n = min(len(final), config.evaluation.num_alignment_clips)
    out: dict[str, Any] = {}
    for prefix, clips in (("cascade_base_", base_out), ("cascade_", final)):
        scores = score_alignment(list(clips[:n]), attributes[:n], max_objects=config.data.max_objects)
        out.update({prefix + k: v for k, v in scores.items()})
    return out
