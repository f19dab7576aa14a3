"""The sample CLI's library side (``launch.sample``): text to video, prediction and extension from
a checkpoint alone.

The model, diffusion and sampler settings come from the config saved with the checkpoint (no
``--config``); the tokenizer from the checkpoint's tokenizer item, or for a model trained on
stored frozen-encoder embeddings the same frozen T5 encoder (``data.text_encoder_dir``, checked
against the encoder identity saved with the checkpoint). ``negative_prompt`` replaces the learned
null text in the unconditional branch of classifier-free guidance. Several prompts give a captioned
grid. ``cond_video``: its LAST k frames (``context_frames``) are given and the model continues them
(prediction with reconstruction guidance, ``sampling.conditioning_method``); ``num_frames`` above
the trained length extends autoregressively in windows of the trained length, each conditioned on
the last k frames generated so far.

Conditioning tasks and cascades (:func:`run_task`): ``cond_image`` (image-to-video: frame 0 given),
``interpolate_stride`` k with ``cond_video`` (its frames placed at 0, k, 2k, ... and the rest
generated), ``low_res_video`` (super-resolution: by a cascade stage's checkpoint, or by
reconstruction guidance of a single-resolution model with ``sr_factor``) and ``cascade`` (the
base ``workdir`` then each stage's workdir in order, :mod:`vdm_jax.evaluation.cascade`;
``stages_out`` writes every model's output side by side).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any

import jax
import numpy as np

from data_pipelines.video_io import VIDEO_SUFFIXES, make_grid, read_frames, save_video, to_uint8, to_unit
from vdm_jax import checkpointing as ckpt
from vdm_jax.config import Config, ConfigError, StageKind, TextEncoderKind, replace
from vdm_jax.diffusion.guidance import NEGATIVE_KEY
from vdm_jax.evaluation import cascade, loading
from vdm_jax.evaluation.generation import Generator
from vdm_jax.evaluation.loading import EvalInputError
from vdm_jax.models import prompts

_FLAG_OF_FIELD = {"sampling.name": "--sampler", "sampling.steps": "--steps",
                  "sampling.guidance_weight": "--guidance"}


@dataclasses.dataclass(frozen=True)
class SampleRequest:
    workdir: str
    prompts: tuple[str, ...]
    out: str
    step: int | str | None = "latest"
    sampler: str | None = None  # None: the checkpoint config's sampling.* values
    steps: int | None = None
    guidance: float | None = None
    seed: int = 0
    num_frames: int = 0  # 0: the trained number of frames
    cond_video: str = ""
    context_frames: int = 0  # 0: evaluation.prediction_context_frames of the checkpoint's config
    fps: float = 8.0
    negative_prompt: str = ""  # CFG's unconditional branch; '' -> the learned null text embedding
    text_encoder_dir: str = ""  # '' -> the checkpoint config's data.text_encoder_dir
    cascade: tuple[str, ...] = ()  # stage workdirs run after the base `workdir`, in order
    stages_out: str = ""  # with `cascade`: also write every model's output side by side here
    cond_image: str = ""  # image-to-video: this image is frame 0
    interpolate_stride: int = 0  # with `cond_video`: its frames are given at 0, k, 2k, ...
    low_res_video: str = ""  # super-resolution of this video (a stage, or guidance with sr_factor)
    sr_factor: int = 0  # reconstruction-guidance super-resolution by a single-resolution model


def load_prompts(prompts: list[str] | None, prompts_file: str | None) -> list[str]:
    """``--prompt`` values then the non-empty lines of ``--prompts_file``."""
    out = [p for p in (prompts or []) if p.strip()]
    if prompts_file:
        try:
            with open(prompts_file, encoding="utf-8") as f:
                out += [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise EvalInputError(f"cannot read --prompts_file {prompts_file}: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise EvalInputError(f"cannot read --prompts_file {prompts_file}: not UTF-8 text (byte "
                                 f"{e.start}: {e.reason})") from None
    if not out:
        raise EvalInputError("give at least one --prompt or a --prompts_file with one prompt per line")
    return out


def warn_truncated(config: Config, tokenizer: Any, texts: list[str]) -> list[str]:
    """Warn (stderr) about each prompt longer than ``model.max_text_len`` tokens, which the model
    reads cut short; returns the warnings. (Frozen-encoder models tokenize inside the encoder.)"""
    if config.model.text_encoder != TextEncoderKind.TRANSFORMER:
        return []
    limit, out = config.model.max_text_len, []
    for text in texts:
        count = int(np.sum(tokenizer.encode(text, len(text.encode()) * 4 + 8)[1]))  # with BOS and EOS
        if count > limit:
            out.append(f"warning: prompt {text[:60]!r}{'...' if len(text) > 60 else ''} has {count} tokens "
                       f"(with BOS/EOS) but the model reads {limit} (model.max_text_len): it is truncated")
            print(out[-1], file=sys.stderr, flush=True)
    return out


def read_video(path: str, resolution: int) -> np.ndarray:
    """All frames of a video (or one image) as uint8 (T, resolution, resolution, 3): short side
    resized to ``resolution``, centre crop. Any failure names the file."""
    if not os.path.isfile(path):
        raise EvalInputError(f"cannot read conditioning video {path}: no such file")
    try:
        frames = read_frames(path, resolution)
    except Exception as e:  # PyAV/Pillow raise many types for corrupt or foreign files
        raise EvalInputError(f"cannot read conditioning video {path}: {type(e).__name__}: {e}") from None
    if not len(frames):
        raise EvalInputError(f"cannot read conditioning video {path}: no frames decoded")
    return frames


def with_negative(config: Config, tokenizer: Any, cond: dict[str, np.ndarray],
                  negative_prompt: str | None, mesh: Any = None) -> dict[str, Any]:
    """``cond`` plus the negative prompt's inputs (one row per prompt) under ``negative`` (what
    ``vdm_jax.diffusion.guidance`` reads as the unconditional branch); unchanged when
    ``negative_prompt`` is empty or None (the learned null embedding is used)."""
    if not negative_prompt:
        return cond
    n = len(next(iter(cond.values())))
    return {**cond, NEGATIVE_KEY: prompts.encode_prompts(config, tokenizer, [negative_prompt] * n, mesh)}


def sampler_config(config: Config, req: SampleRequest) -> Config:
    """The checkpoint config with the CLI's sampler overrides, validated (errors name the flag)."""
    over: dict[str, Any] = {}
    if req.sampler is not None:
        over["name"] = req.sampler
    if req.steps is not None:
        over["steps"] = req.steps
    if req.guidance is not None:
        over["guidance_weight"] = req.guidance
    if req.text_encoder_dir:
        config = replace(config, data={"text_encoder_dir": req.text_encoder_dir})
    try:
        return replace(config, sampling=over) if over else config
    except ConfigError as e:
        flag = _FLAG_OF_FIELD.get(e.field, e.field)
        raise EvalInputError(f"{flag}: {str(e).split(': ', 1)[-1]}") from None


def _check_request(req: SampleRequest, config: Config) -> tuple[int, int]:
    """(num_frames, context_frames) after defaults, validated against the trained length."""
    window = config.data.num_frames
    frames = req.num_frames or window
    k = req.context_frames or min(config.evaluation.prediction_context_frames, window - 1)
    if frames < 1:
        raise EvalInputError(f"--num_frames must be >= 1, got {req.num_frames}")
    limit = min(window, frames) - 1
    if (req.cond_video or frames > window) and not 1 <= k <= limit:
        raise EvalInputError(f"--context_frames must be in [1, {limit}] (the model was trained on {window} "
                             f"frames; {frames} asked for), got {k}")
    return frames, k


def run_sample(req: SampleRequest) -> dict[str, Any]:
    """Generate and write ``req.out``; returns what was done (path, step, sampler, seconds) and the
    generated ``videos`` (uint8 (B, T, H, W, 3), before the grid)."""
    if os.path.splitext(req.out)[1].lower() not in VIDEO_SUFFIXES:
        raise EvalInputError(f"--out must end in one of {VIDEO_SUFFIXES}, got {req.out!r}")
    if not req.fps > 0:
        raise EvalInputError(f"--fps must be > 0, got {req.fps}")
    if task_of(req) is not None:
        return run_task(req)
    start = time.time()
    step = loading.resolve_step(req.workdir, req.step)
    manager = ckpt.open_read_only(req.workdir)
    try:
        config = sampler_config(loading.saved_config(manager, step), req)
        if config.model.conditioning != StageKind.NONE:
            kind = config.model.conditioning.value
            raise EvalInputError(f"--workdir={req.workdir} holds a {kind} stage: give it --low_res_video, or "
                                 "run it as --cascade after a base model's --workdir")
        frames, k = _check_request(req, config)
        context = _context(req, config, k)
        tokenizer, mesh, plan, params = loading.restore_for_inference(manager, step, config)
    finally:
        manager.close()
    generator = Generator(plan)
    warn_truncated(config, tokenizer, [*req.prompts, *([req.negative_prompt] if req.negative_prompt else [])])
    try:
        cond = prompts.encode_prompts(config, tokenizer, list(req.prompts), mesh)
        cond = with_negative(config, tokenizer, cond, req.negative_prompt, mesh)
    except ConfigError as e:
        raise EvalInputError(f"the checkpoint's text encoder: {e}") from None
    rng = jax.random.PRNGKey(req.seed)
    with jax.set_mesh(mesh):
        videos = _generate(generator, params, cond, rng, frames, k, context, len(req.prompts))
    videos = to_uint8(videos)
    save_video(req.out, make_grid(list(videos), captions=list(req.prompts)), fps=req.fps)
    return {"path": req.out, "step": step, "videos": videos, "seconds": time.time() - start,
            "sampler": config.sampling.name.value, "steps": config.sampling.steps,
            "guidance": config.sampling.guidance_weight}


def _context(req: SampleRequest, config: Config, k: int) -> np.ndarray | None:
    if not req.cond_video:
        return None
    video = read_video(req.cond_video, config.data.resolution)
    if video.shape[0] < k:
        raise EvalInputError(f"conditioning video {req.cond_video} has {video.shape[0]} frame(s), fewer than "
                             f"--context_frames={k}")
    return to_unit(video[-k:])


def _generate(generator: Generator, params: Any, cond: dict, rng: jax.Array, frames: int, k: int,
              context: np.ndarray | None, batch: int) -> jax.Array:
    window = generator.frames
    ctx = None if context is None else np.broadcast_to(context, (batch, *context.shape))
    if frames > window:
        return generator.extend(params, cond, rng, frames, overlap=k, context=ctx)
    if ctx is None:
        return generator.text_to_video(params, cond, rng, num_frames=frames)
    return generator.predict(params, cond, ctx, rng, num_frames=frames)


# ----------------------------------------------------------------------------------------------
# Conditioning tasks and cascades
# ----------------------------------------------------------------------------------------------


def task_of(req: SampleRequest) -> str | None:
    """Which of the conditioning tasks / cascade ``req`` asks for (None: text to video, prediction
    or extension); conflicting flags are refused."""
    tasks = {"cascade": bool(req.cascade), "image_to_video": bool(req.cond_image),
             "interpolation": req.interpolate_stride > 0, "super_resolution": bool(req.low_res_video)}
    chosen = [t for t, on in tasks.items() if on]
    flags = {"cascade": "--cascade", "image_to_video": "--cond_image",
             "interpolation": "--interpolate_stride", "super_resolution": "--low_res_video"}
    if len(chosen) > 1:
        raise EvalInputError(f"{flags[chosen[0]]} and {flags[chosen[1]]} cannot be combined")
    if req.interpolate_stride < 0:
        raise EvalInputError(f"--interpolate_stride must be >= 1, got {req.interpolate_stride}")
    if req.stages_out and not req.cascade:
        raise EvalInputError("--stages_out needs --cascade")
    if req.sr_factor and not req.low_res_video:
        raise EvalInputError("--sr_factor needs --low_res_video")
    task = chosen[0] if chosen else None
    if req.cond_video and task not in (None, "interpolation"):
        raise EvalInputError(f"--cond_video and {flags[task]} cannot be combined")
    if task == "interpolation" and not req.cond_video:
        raise EvalInputError("--interpolate_stride needs --cond_video (the frames to interpolate between)")
    if task is not None and req.num_frames:
        raise EvalInputError(f"--num_frames is for text to video, prediction and extension, "
                             f"not {flags[task]}")
    return task


def _encoder(req: SampleRequest) -> Any:
    def encode(model: cascade.LoadedModel) -> dict[str, Any]:
        try:
            cond = prompts.encode_prompts(model.config, model.tokenizer, list(req.prompts), model.mesh)
            return with_negative(model.config, model.tokenizer, cond, req.negative_prompt, model.mesh)
        except ConfigError as e:
            raise EvalInputError(f"the text encoder of {model.name}: {e}") from None
    return encode


def _given(video: np.ndarray, batch: int) -> np.ndarray:
    return np.broadcast_to(to_unit(video), (batch, *video.shape))


def run_task(req: SampleRequest) -> dict[str, Any]:
    """A conditioning task or a cascade (see the module doc); writes ``req.out`` (and
    ``req.stages_out``). Returns what :func:`run_sample` returns."""
    task = task_of(req)
    start = time.time()
    adjust = lambda c: sampler_config(c, req)  # noqa: E731
    model = cascade.load_model(req.workdir, req.step, f"--workdir={req.workdir}", adjust)
    encode, rng, batch = _encoder(req), jax.random.PRNGKey(req.seed), len(req.prompts)
    if task == "cascade":
        models = [model] + [cascade.load_model(d, "latest", f"--cascade stage {i} ({d})", adjust)
                            for i, d in enumerate(req.cascade, 1)]
        cascade.check_chain(models)
        outputs = cascade.run_cascade(models, encode, rng)
        videos = to_uint8(outputs[-1])
        if req.stages_out:
            labels = [f"{i}: {m.describe()}" for i, m in enumerate(models)]
            clips, names = cascade.side_by_side([to_uint8(o) for o in outputs], labels)
            save_video(req.stages_out, make_grid(clips, captions=names, ncols=len(models)), fps=req.fps)
    else:
        videos = to_uint8(_conditioned(req, task, model, encode(model), rng, batch))
    save_video(req.out, make_grid(list(videos), captions=list(req.prompts)), fps=req.fps)
    c = model.config.sampling
    return {"path": req.out, "step": model.step, "videos": videos, "seconds": time.time() - start,
            "sampler": c.name.value, "steps": c.steps, "guidance": c.guidance_weight, "task": task}


def _conditioned(req: SampleRequest, task: str, model: cascade.LoadedModel, cond: dict[str, Any],
                 rng: jax.Array, batch: int) -> jax.Array:
    generator, res, frames = Generator(model.plan), model.resolution, model.frames
    stage = model.kind != StageKind.NONE
    if stage and task != "super_resolution":
        raise EvalInputError(f"--workdir={req.workdir} holds a {model.kind.value} stage: it takes "
                             "--low_res_video (or --cascade after a base model), not other conditioning")
    with jax.set_mesh(model.mesh):
        if task == "image_to_video":
            image = read_video(req.cond_image, res)[:1]
            return generator.given_frames(model.params, cond, _given(image, batch), (0,), rng)
        if task == "interpolation":
            k = req.interpolate_stride
            indices = tuple(range(0, frames, k))
            video = read_video(req.cond_video, res)
            if len(video) < len(indices):
                raise EvalInputError(f"--cond_video {req.cond_video} has {len(video)} frame(s); "
                                     f"interpolating at stride {k} to {frames} frames needs {len(indices)}")
            given = _given(video[:len(indices)], batch)
            return generator.given_frames(model.params, cond, given, indices, rng)
        if stage:
            if req.sr_factor:
                raise EvalInputError(f"--sr_factor is for a single-resolution model; --workdir={req.workdir} "
                                     f"is a {model.kind.value} stage with its own factor")
            want_frames, want_res = cascade.stage_input(model)
            low = _low_res(req.low_res_video, want_res, want_frames)
            return generator.super_resolve(model.params, cond, _given(low, batch), rng)
        if req.sr_factor < 2 or res % req.sr_factor:
            raise EvalInputError(f"--sr_factor must be >= 2 and divide the model's resolution {res} "
                                 f"(super-resolution by reconstruction guidance), got {req.sr_factor}")
        low = _low_res(req.low_res_video, res // req.sr_factor, frames)
        return generator.guided_super_resolution(model.params, cond, _given(low, batch), req.sr_factor, rng)


def _low_res(path: str, resolution: int, frames: int) -> np.ndarray:
    video = read_video(path, resolution)
    if len(video) < frames:
        raise EvalInputError(f"--low_res_video {path} has {len(video)} frame(s), fewer than the {frames} "
                             "the model super-resolves")
    return video[:frames]
