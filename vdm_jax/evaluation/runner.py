"""The evaluation job: one checkpoint (``evaluate``) or every new one of a training run (``follow``).

Per evaluated step it writes, under ``DIR/eval/step_N/``:
  ``metrics.json``    eval loss at fixed log-SNRs, FVD with its protocol, text alignment per
                      attribute with chance levels (moving_digits), prediction PSNR/SSIM/LPIPS,
                      throughput (clips/s) and wall times; standard JSON (a metric with nothing
                      to score is null); written last and atomically, so its presence marks the
                      step as done (a restarted follower skips it);
  ``samples.gif``     captioned grid of text-to-video samples;
  ``prediction.gif``  real clips next to their predictions from the first k frames;
  ``image_to_video.gif``, ``interpolation.gif``  the same for the other given-frame tasks
                      (:mod:`vdm_jax.evaluation.given_frame_tasks`, ``i2v_*`` / ``interp_*``);
A cascade stage (``model.conditioning``) gets the eval loss and, in place of the generation tasks,
super-resolution of the first ``evaluation.num_prediction_clips`` eval clips from their
downsampled versions (``sr_*`` PSNR/SSIM/LPIPS next to model-free baselines and, with
``evaluation.sr_guidance_workdir``, reconstruction guidance of a single-resolution model;
:mod:`vdm_jax.evaluation.stage_tasks`) and ``super_resolution.gif``; with
``evaluation.cascade_base_workdir`` also the full cascade from the eval captions (``cascade_fvd``,
``cascade_align_*`` next to the base model's ``cascade_base_align_*``) and ``cascade.gif``;
then appends one line to ``DIR/eval/log.jsonl`` and refreshes ``DIR/eval/summary.{csv,md,png}``.
FVD reference features are cached under ``DIR/eval/cache``. The training workdir's checkpoints are
only read (read-only orbax manager): the job never deletes, locks or writes there, so it never
blocks training. A checkpoint removed by training's retention before it was evaluated is skipped.

The job runs the model through a train program (``vdm_jax.training.program.TrainProgram``) built
by its caller (``launch.evaluate``) for the config on the evaluation's own mesh
(:func:`vdm_jax.evaluation.loading.inference_mesh`): the eval losses are training's own.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from data_pipelines.video_io import default_file_mode, make_grid, save_video
from vdm_jax import checkpointing as ckpt
from vdm_jax.config import to_dict
from vdm_jax.evaluation import cascade, given_frame_tasks, loading, stage_tasks, summary, tasks
from vdm_jax.evaluation.fvd import make_extractor
from vdm_jax.evaluation.generation import Generator
from vdm_jax.evaluation.lpips import make_lpips

EVAL_DIR = "eval"
LOG_NAME = "log.jsonl"


def eval_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), EVAL_DIR)


def step_dir(workdir: str, step: int) -> str:
    return os.path.join(eval_dir(workdir), f"step_{step}")


def metrics_path(workdir: str, step: int) -> str:
    return os.path.join(step_dir(workdir, step), "metrics.json")


def is_evaluated(workdir: str, step: int) -> bool:
    return os.path.isfile(metrics_path(workdir, step))


def evaluated_steps(workdir: str) -> list[int]:
    root = eval_dir(workdir)
    if not os.path.isdir(root):
        return []
    steps = [int(d[5:]) for d in os.listdir(root) if d.startswith("step_") and d[5:].isdigit()]
    return sorted(s for s in steps if is_evaluated(workdir, s))


def json_safe(obj: Any) -> Any:
    """Non-finite floats (e.g. an accuracy with nothing scored) -> None: standard JSON (null)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _write_json_atomic(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".json.tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, allow_nan=False)
    os.chmod(tmp, default_file_mode())  # mkstemp makes 0600
    os.replace(tmp, path)


class Evaluator:
    """Holds the compiled programs, the eval data and the feature networks across steps.

    ``program``: the ``TrainProgram`` of the config on the evaluation's mesh."""

    def __init__(self, program: Any, workdir: str):
        self.program, self.config, self.mesh = program, program.config, program.mesh
        self.workdir = workdir
        self.generator = Generator(program.model)
        self._data: tasks.EvalData | None = None
        self._extractor = None
        self._lpips = None

    def _restore(self, step: int) -> tuple[Any, Any]:
        manager = ckpt.open_read_only(self.workdir)
        try:
            loading.check_config_matches(loading.saved_config(manager, step), self.config, step)
            tokenizer = loading.saved_tokenizer(manager, step)
            loading.check_text_encoder(manager, step, self.config)
            params = ckpt.restore_ema_params(manager, step, self.program.model.abstract_params)
        finally:
            manager.close()
        return params, tokenizer

    def _feature_nets(self) -> None:
        e = self.config.evaluation
        wants_fvd = self.config.model.conditioning.value == "none" or e.cascade_base_workdir
        if e.fvd and self._extractor is None and wants_fvd:
            self._extractor = make_extractor(e)
            c = self.config.data  # compile now, so the clips/s of the first step excludes compilation
            self._extractor(np.zeros((1, c.num_frames, c.resolution, c.resolution, 3), np.uint8))
        if e.lpips and self._lpips is None:
            self._lpips = make_lpips(True, e.lpips_net)

    def evaluate_step(self, step: int) -> dict[str, Any]:
        """Evaluate one checkpoint; write its metrics, sample videos and the refreshed summary."""
        start = time.time()
        params, tokenizer = self._restore(step)
        self._feature_nets()
        if self._data is None:
            self._data = tasks.load_eval_data(self.config, tokenizer, self.mesh)
        metrics = self._compute(params, tokenizer, self._data, step)
        metrics["eval_seconds"] = time.time() - start
        metrics = json_safe(_ordered(metrics))
        if jax.process_index() == 0:
            _write_json_atomic(metrics_path(self.workdir, step), metrics)  # last: marks the step done
            with open(os.path.join(eval_dir(self.workdir), LOG_NAME), "a") as f:
                entry = {"step": step, "time": time.time(), "seconds": metrics["eval_seconds"]}
                f.write(json.dumps(entry) + "\n")
            refresh_summary(self.workdir)
        logging.info("evaluated step %d in %.1fs: %s", step, metrics["eval_seconds"], headline(metrics))
        return metrics

    def _compute(self, params: Any, tokenizer: Any, data: tasks.EvalData, step: int) -> dict[str, Any]:
        c, e = self.config, self.config.evaluation
        out: dict[str, Any] = {"step": step, "sampler": to_dict(c.sampling), "seconds": {}}
        timer = _Timer(out["seconds"])
        if c.model.conditioning.value != "none":
            return self._compute_stage(params, tokenizer, data, step, out, timer)
        n_t2v = min(len(data.videos), max(e.num_fvd_clips if e.fvd else 0, e.batch_size,
                                          e.num_alignment_clips if data.attributes else 0))
        with jax.set_mesh(self.mesh):  # the model's programs; the feature networks use their own devices
            with timer("eval_loss"):
                out.update(tasks.eval_loss(self.program, params, tokenizer))
            if e.num_probe_clips:
                with timer("temporal_probe"):
                    out.update(tasks.probe(self.program, params, tokenizer, data))
            with timer("text_to_video"):
                generated, rate = tasks.text_to_video(self.generator, params, data, n_t2v, c)
            predicted = None
            if e.num_prediction_clips:
                with timer("prediction"):
                    predicted = tasks.predict_clips(self.generator, params, data, c)
            given = {}
            for task in given_frame_tasks.TASKS:
                if given_frame_tasks.num_clips(task, c):
                    with timer(task):
                        given[task] = given_frame_tasks.generate(task, self.generator, params, data.videos,
                                                                 data.cond, c)
        out["sample_clips_per_sec"] = rate
        if predicted is not None:
            with timer("prediction_scores"):
                out.update(tasks.prediction_scores(predicted, data, c, self._lpips))
        for task, clips in given.items():
            with timer(f"{task}_scores"):
                out.update(given_frame_tasks.scores(task, clips, data.videos, c, self._lpips))
        if e.fvd:
            with timer("fvd"):
                out.update(tasks.fvd_metrics(self._extractor, generated[:e.num_fvd_clips], data,
                                             os.path.join(eval_dir(self.workdir), "cache")))
        if data.attributes is not None:
            with timer("alignment"):
                out.update(tasks.alignment_metrics(generated, data, c))
        if jax.process_index() == 0:
            d = step_dir(self.workdir, step)
            n = min(tasks.MAX_GRID_CLIPS, len(generated))
            save_video(os.path.join(d, "samples.gif"), make_grid(list(generated[:n]), data.captions[:n]))
            if predicted is not None:
                clips, labels = tasks.prediction_grid(data.videos, predicted, data.captions,
                                                      e.prediction_context_frames)
                save_video(os.path.join(d, "prediction.gif"), make_grid(clips, labels, ncols=2))
            for task, generated_clips in given.items():
                clips, labels = given_frame_tasks.grid(task, data.videos, generated_clips, data.captions, c)
                save_video(os.path.join(d, f"{task}.gif"), make_grid(clips, labels, ncols=2))
        return out


    def _compute_stage(self, params: Any, tokenizer: Any, data: tasks.EvalData, step: int,
                       out: dict[str, Any], timer: Any) -> dict[str, Any]:
        """A cascade stage: eval loss and super-resolution of real clips (see the module doc)."""
        c, e = self.config, self.config.evaluation
        n = min(e.num_prediction_clips, len(data.videos))
        real = data.videos[:n]
        # the reference models first: a wrong workdir fails before any sampling
        guide = stage_tasks.load_guidance_model(c) if e.sr_guidance_workdir else None
        base = stage_tasks.load_cascade_base(c) if e.cascade_base_workdir else None
        with jax.set_mesh(self.mesh):
            with timer("eval_loss"):
                out.update(tasks.eval_loss(self.program, params, tokenizer))
            with timer("super_resolution"):
                cond = {k: v[:n] for k, v in data.cond.items()}
                generated = stage_tasks.super_resolve_clips(self.generator, params, real, cond, c)
        with timer("super_resolution_scores"):
            out.update(stage_tasks.stage_scores(generated, real, c, self._lpips))
        if guide is not None:
            with timer("guided_super_resolution"):
                guided = stage_tasks.guided_clips(guide, real, data.captions[:n], c)
                out.update(stage_tasks.guided_scores(guided, real, c, self._lpips))
                out["sr_protocol"]["guidance_model"] = f"{guide.workdir} step {guide.step}"
        cascade_out = None
        if base is not None:
            n_cascade = min(len(data.videos), max(e.num_fvd_clips if e.fvd else 0, e.num_alignment_clips))
            with timer("cascade"):
                base_out, cascade_out = stage_tasks.cascade_clips(
                    base, self.generator, params, data.captions[:n_cascade], data.cond, self.mesh, c)
            out["cascade_protocol"] = {"base_model": f"{base.workdir} step {base.step}",
                                       "num_clips": n_cascade}
            if e.fvd:
                with timer("cascade_fvd"):
                    scores = tasks.fvd_metrics(self._extractor, cascade_out[:e.num_fvd_clips], data,
                                               os.path.join(eval_dir(self.workdir), "cache"))
                out.update({f"cascade_{k}": v for k, v in scores.items()})
            if data.attributes is not None:
                out.update(stage_tasks.cascade_alignment(base_out, cascade_out, data.attributes, c))
        if jax.process_index() == 0:
            clips, labels = stage_tasks.stage_grid(real, generated, c, data.captions)
            save_video(os.path.join(step_dir(self.workdir, step), "super_resolution.gif"),
                       make_grid(clips, labels, ncols=3))
            if cascade_out is not None:
                rows = min(tasks.MAX_GRID_CLIPS // 2, len(cascade_out))
                grid, names = cascade.side_by_side([base_out[:rows], cascade_out[:rows]], ["base", "cascade"])
                names = [f"{name}: {data.captions[i // 2]}" for i, name in enumerate(names)]
                save_video(os.path.join(step_dir(self.workdir, step), "cascade.gif"),
                           make_grid(grid, names, ncols=2))
        return out


_ORDER = ("step", "eval_loss", "fvd", "align_", "pred_", "i2v_", "interp_", "sr_", "cascade_", "probe_",
          "sample_clips_per_sec",
          "i3d_clips_per_sec",
          "eval_seconds")


def _ordered(metrics: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers first (the order of the summary's columns), nested records last."""
    def rank(key: str) -> tuple[int, int]:  # a stable sort: insertion order within a group
        pos = next((i for i, p in enumerate(_ORDER) if key.startswith(p)), len(_ORDER))
        return int(isinstance(metrics[key], dict)), pos

    return dict(sorted(metrics.items(), key=lambda kv: rank(kv[0])))


class _Timer:
    """``with timer("name"):`` records wall seconds into a dict."""

    def __init__(self, into: dict[str, float]):
        self.into = into

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                logging.info("eval: %s ...", name)  # progress for a person watching the job
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.into[name] = time.perf_counter() - self.t0
                logging.info("eval: %s done in %.1fs", name, timer.into[name])

        return _Ctx()


HEADLINE = ("eval_loss", "fvd", "align_color_acc", "align_motion_acc", "pred_psnr", "pred_ssim", "pred_lpips",
            "sr_psnr", "sr_ssim", "sr_lpips", "sr_bilinear_ssim", "sr_bilinear_lpips",
            "sr_bilinear_consistent_ssim",
            "sample_clips_per_sec", "i3d_clips_per_sec")


def headline(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={metrics[k]:.4g}" for k in HEADLINE if isinstance(metrics.get(k), (int, float)))


def refresh_summary(workdir: str) -> dict[str, str]:
    """Rewrite ``DIR/eval/summary.{csv,md,png}`` from every evaluated step."""
    rows, bad = summary.load_step_metrics(workdir)
    for b in bad:
        logging.warning("summary: skipping unreadable %s", b)
    return summary.write_summary(rows, eval_dir(workdir)) if rows else {}


def evaluate(program: Any, workdir: str, step: int | str | None = "latest",
             evaluator: Evaluator | None = None) -> dict[str, Any]:
    """Evaluate one checkpoint of ``workdir`` (an int step, or 'latest') with ``program`` (the
    config's ``TrainProgram`` on the evaluation's mesh). Re-evaluates if done before."""
    resolved = loading.resolve_step(workdir, step)
    return (evaluator or Evaluator(program, workdir)).evaluate_step(resolved)


def follow(program: Any, workdir: str, *, until_step: int = 0, max_idle_seconds: float = 0.0,
           poll_seconds: float | None = None) -> list[int]:
    """Evaluate every checkpoint of ``workdir`` once, in step order, as training writes them.

    Steps already evaluated (``metrics.json`` present, e.g. before a restart) are skipped. Returns
    when a step >= ``until_step`` (default: ``training.num_train_steps``) has been evaluated, or
    after ``max_idle_seconds`` (> 0) without a new checkpoint. Returns the steps evaluated now.
    """
    config = program.config
    until = until_step or config.training.num_train_steps
    poll = config.evaluation.follow_poll_seconds if poll_seconds is None else poll_seconds
    evaluator: Evaluator | None = None
    done_now: list[int] = []
    last_activity = time.monotonic()
    while True:
        steps = loading.available_steps(workdir)
        for step in [s for s in steps if not is_evaluated(workdir, s)]:
            evaluator = evaluator or Evaluator(program, workdir)
            if _evaluate_if_present(evaluator, workdir, step):
                done_now.append(step)
            last_activity = time.monotonic()
        finished = evaluated_steps(workdir)
        if finished and finished[-1] >= until:
            logging.info("follow: step %d >= %d evaluated, exiting", finished[-1], until)
            return done_now
        if max_idle_seconds > 0 and time.monotonic() - last_activity > max_idle_seconds:
            logging.info("follow: no new checkpoint for %.0fs, exiting", max_idle_seconds)
            return done_now
        time.sleep(poll)


def _evaluate_if_present(evaluator: Evaluator, workdir: str, step: int) -> bool:
    """Evaluate ``step``; False when training's retention deleted it first (skipped, with a warning)."""
    try:
        evaluator.evaluate_step(step)
        return True
    except loading.EvalInputError:
        raise
    except Exception:
        if step in loading.available_steps(workdir):
            raise
        logging.warning("checkpoint step %d was deleted by training before it was evaluated: skipped", step)
        return False
