"""The evaluation tasks run on one checkpoint's EMA params (see :mod:`vdm_jax.evaluation.runner`).

- eval loss at the fixed log-SNRs of ``evaluation.eval_logsnrs`` on the eval split, through the
  train program's own ``eval_loss`` (one loss function and one noise per batch for train and eval);
- the temporal probe through the program's ``eval_step_at(evaluation.probe_logsnrs)``;
- text to video on the eval split's first captions -> FVD against the same split's clips
  (reference features cached) and, on ``moving_digits``, per-attribute text alignment;
- prediction: the first ``evaluation.prediction_context_frames`` frames of test clips given,
  the rest generated -> PSNR / SSIM / LPIPS on the generated frames.
Inputs are fixed across steps (same clips, same captions, same seeds), so points are comparable.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from data_pipelines import pipeline, sources
from data_pipelines.stage_inputs import low_res_input
from data_pipelines.video_io import to_unit
from vdm_jax.config import Config
from vdm_jax.evaluation import fvd
from vdm_jax.evaluation.alignment import motion_diagnostics, score_alignment
from vdm_jax.evaluation.generation import Generator, generate_in_batches
from vdm_jax.evaluation.image_metrics import prediction_metrics
from vdm_jax.evaluation.prediction_baselines import BASELINES
from vdm_jax.evaluation.temporal_probe import temporal_probe
from vdm_jax.models import prompts

MAX_GRID_CLIPS = 16
PREDICTION_GRID_CLIPS = 4


@dataclasses.dataclass(frozen=True)
class EvalData:
    """The eval split's first records, fixed across steps."""

    videos: np.ndarray  # uint8 (N, T, H, W, 3)
    captions: list[str]
    attributes: list[dict] | None  # moving_digits attribute arrays per clip, else None
    cond: dict[str, np.ndarray]  # tokenized captions
    reference: str  # names the reference set in the FVD protocol


def num_records_needed(config: Config) -> int:
    e = config.evaluation
    return max(e.num_fvd_clips if e.fvd else 0, e.num_alignment_clips, e.num_prediction_clips,
               e.num_probe_clips, e.num_image_to_video_clips, e.num_interpolation_clips)


def load_eval_data(config: Config, tokenizer: Any, mesh: jax.sharding.Mesh | None = None,
                   num_records: int | None = None) -> EvalData:
    """The first ``num_records`` (default: what the evaluation job's tasks need) eval records."""
    want = num_records_needed(config) if num_records is None else num_records
    records = pipeline.eval_records(config.data, want)
    if len(records) < want:
        logging.warning("eval split %r has %d records, fewer than the %d asked for by evaluation.*",
                        config.data.eval_split, len(records), want)
    if len(records) < 2:
        raise ValueError(f"data.eval_split {config.data.eval_split!r} has {len(records)} records; "
                         "evaluation needs at least 2")
    captions = [r["caption"] for r in records]
    has_attrs = config.data.dataset == "moving_digits" and "num_objects" in records[0]
    path = sources.prepared_path(config.data)
    name = os.path.relpath(path, sources.resolve_data_dir(config.data)) if path else config.data.dataset
    return EvalData(videos=np.stack([r["video"] for r in records]), captions=captions,
                    attributes=records if has_attrs else None,
                    cond=prompts.encode_prompts(config, tokenizer, captions, mesh),
                    reference=f"{name}/{config.data.eval_split}")


def eval_loss(program: Any, params: Any, tokenizer: Any) -> dict[str, float]:
    """Mean eval loss per fixed log-SNR over the eval split (``evaluation.loss_batches`` batches of
    ``evaluation.batch_size``) through ``program.eval_loss`` (a ``TrainProgram``)."""
    c, e = program.config, program.config.evaluation
    batches = pipeline.make_eval_iterator(c.data, global_batch_size=e.batch_size, tokenizer=tokenizer,
                                          max_text_len=c.model.max_text_len,
                                          num_batches=e.loss_batches or None,
                                          low_res=low_res_input(c.model.conditioning,
                                                                c.model.conditioning_factor))
    return program.eval_loss(params, batches)


def probe(program: Any, params: Any, tokenizer: Any, data: EvalData, num_clips: int | None = None
          ) -> dict[str, float]:
    """The temporal probe (:mod:`vdm_jax.evaluation.temporal_probe`) through the program's eval step
    at ``evaluation.probe_logsnrs``, on the first ``num_clips`` (default
    ``evaluation.num_probe_clips``) eval clips."""
    c, e = program.config, program.config.evaluation
    n = min(e.num_probe_clips if num_clips is None else num_clips, len(data.videos))
    if n < e.batch_size:
        logging.warning("temporal probe skipped: %d eval clips < evaluation.batch_size=%d", n, e.batch_size)
        return {}
    sharding = program.batch_sharding(e.batch_size)

    def place(batch):  # every process holds the whole (global) batch: each takes its shards
        return {k: jax.make_array_from_callback(np.shape(v), sharding, lambda idx, v=v: np.asarray(v)[idx])
                for k, v in batch.items()}

    return temporal_probe(
        program.eval_step_at(e.probe_logsnrs), params, data.videos[:n], data.captions[:n],
        lambda caps: prompts.encode_prompts(c, tokenizer, caps, program.mesh), e.probe_logsnrs,
        batch_size=e.batch_size, seed=e.seed, to_device=place)


def training_probe(config: Config) -> Any:
    """The training loop's eval hook for ``evaluation.train_probe_clips`` (None when 0): the temporal
    probe on the first eval clips, added to every periodic eval record (``probe_*`` keys)."""
    n = config.evaluation.train_probe_clips
    if not n:
        return None
    cache: dict[str, EvalData] = {}

    def hook(program: Any, tokenizer: Any, params: Any) -> dict[str, float]:
        if "data" not in cache:  # the first n eval clips, loaded once at the first eval
            cache["data"] = load_eval_data(config, tokenizer, program.mesh, num_records=max(n, 2))
        return probe(program, params, tokenizer, cache["data"], num_clips=n)

    return hook


def text_to_video(generator: Generator, params: Any, data: EvalData, n: int, config: Config
                  ) -> tuple[np.ndarray, float]:
    """uint8 clips for the first ``n`` captions (fixed seed per batch) and the clips/s reached."""
    key = jax.random.PRNGKey(config.evaluation.seed)
    cond = {k: v[:n] for k, v in data.cond.items()}
    return generate_in_batches(
        lambda c, i: generator.text_to_video(params, c, jax.random.fold_in(key, i)), cond,
        config.evaluation.batch_size, cold=not generator.compiled())


def fvd_metrics(extractor: Any, generated: np.ndarray, data: EvalData, cache_dir: str) -> dict[str, Any]:
    """FVD of ``generated`` vs the same number of eval-split clips (reference stats cached)."""
    n = len(generated)
    mu, sigma, protocol = fvd.reference_stats(extractor, data.videos[:n], cache_dir, data.reference)
    t0 = time.perf_counter()
    out = fvd.compute_fvd(extractor, generated, mu, sigma, protocol)
    out["i3d_clips_per_sec"] = n / (time.perf_counter() - t0)
    return out


def alignment_metrics(generated: np.ndarray, data: EvalData, config: Config) -> dict[str, Any]:
    n = min(len(generated), config.evaluation.num_alignment_clips)
    out: dict[str, Any] = score_alignment(list(generated[:n]), data.attributes[:n],
                                          max_objects=config.data.max_objects)
    out.update(motion_diagnostics(list(generated[:n]), data.attributes[:n]))
    return out


def predict_clips(generator: Generator, params: Any, data: EvalData, config: Config) -> np.ndarray:
    """uint8 clips whose first k frames are the eval clips' (given), the rest generated."""
    e = config.evaluation
    k, n = e.prediction_context_frames, min(e.num_prediction_clips, len(data.videos))
    key = jax.random.fold_in(jax.random.PRNGKey(e.seed), 10_000)
    inputs = {"context": to_unit(data.videos[:n, :k]),
              **{name: v[:n] for name, v in data.cond.items()}}

    def run(chunk, i):
        cond = {name: chunk[name] for name in data.cond}
        return generator.predict(params, cond, chunk["context"], jax.random.fold_in(key, i))

    return generate_in_batches(run, inputs, e.batch_size)[0]


def prediction_scores(generated: np.ndarray, data: EvalData, config: Config, lpips: Any) -> dict[str, Any]:
    """PSNR / SSIM / LPIPS on the generated frames (the given ones excluded)."""
    k, n = config.evaluation.prediction_context_frames, len(generated)
    metrics = prediction_metrics(generated, data.videos[:n], k, lpips_fn=lpips)
    out: dict[str, Any] = {f"pred_{name}": v for name, v in metrics.items()}
    for baseline, make in BASELINES.items():  # model-free references on the same clips
        scores = prediction_metrics(make(data.videos[:n], k), data.videos[:n], k, lpips_fn=lpips)
        out.update({f"pred_{baseline}_{name}": v for name, v in scores.items()})
    protocol = {"context_frames": k, "num_clips": n, "method": config.sampling.conditioning_method,
                "reconstruction_weight": config.sampling.reconstruction_weight,
                "frames_scored": "generated only"}
    if lpips is not None:
        protocol.update(lpips_net=lpips.net, lpips_input_size=list(lpips.input_size(*generated.shape[2:4])))
    out["pred_protocol"] = protocol
    return out


def prediction_grid(real: np.ndarray, generated: np.ndarray, captions: list[str], k: int
                    ) -> tuple[list, list]:
    """Clips and captions for a grid: each real clip next to its prediction from the first k frames."""
    clips, labels = [], []
    for i in range(min(PREDICTION_GRID_CLIPS, len(generated))):
        clips += [real[i], generated[i]]
        labels += [f"real: {captions[i]}", f"predicted from {k} frame(s)"]
    return clips, labels
