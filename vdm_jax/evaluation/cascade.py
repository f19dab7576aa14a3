"""Cascaded sampling: a base model, then super-resolution stages, each from its own checkpoint.

Every model is loaded from its workdir alone (its saved config, tokenizer and EMA params). The
chain is checked before any compute: the first model must be a base model
(``model.conditioning='none'``), every later one a stage whose input is exactly the previous
model's output (a spatial_sr stage from R/f to R px at the same frame count, a temporal_sr stage
from T/f to T frames at the same size); a mismatch names the stage and both shapes. Each stage
encodes the prompts with its own tokenizer and samples with its own sampler settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from vdm_jax import checkpointing as ckpt
from vdm_jax.config import Config, StageKind
from vdm_jax.evaluation import loading
from vdm_jax.evaluation.generation import Generator
from vdm_jax.evaluation.loading import EvalInputError
from vdm_jax.models.plan import ModelPlan


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    """One checkpoint ready to sample: its config (with the CLI's sampler overrides), plan and params."""

    name: str  # how errors name it: "--workdir=DIR" or "--cascade stage i (DIR)"
    workdir: str
    step: int
    config: Config
    tokenizer: Any
    mesh: Any
    plan: ModelPlan
    params: Any

    @property
    def kind(self) -> StageKind:
        return self.config.model.conditioning

    @property
    def frames(self) -> int:
        return self.config.data.num_frames

    @property
    def resolution(self) -> int:
        return self.config.data.resolution

    def describe(self) -> str:
        return f"{self.kind.value} {self.frames}x{self.resolution}x{self.resolution}"


def load_model(workdir: str, step: int | str | None, name: str,
               adjust: Callable[[Config], Config] = lambda c: c) -> LoadedModel:
    """A checkpoint of ``workdir`` with its saved config passed through ``adjust`` (the CLI's
    sampler overrides)."""
    resolved = loading.resolve_step(workdir, step)
    manager = ckpt.open_read_only(workdir)
    try:
        config = adjust(loading.saved_config(manager, resolved))
        tokenizer, mesh, plan, params = loading.restore_for_inference(manager, resolved, config)
    finally:
        manager.close()
    return LoadedModel(name, workdir, resolved, config, tokenizer, mesh, plan, params)


def stage_input(model: LoadedModel) -> tuple[int, int]:
    """(frames, resolution) of the video a stage reads."""
    f = model.config.model.conditioning_factor
    if model.kind == StageKind.SPATIAL_SR:
        return model.frames, model.resolution // f
    return model.frames // f, model.resolution


def check_chain(models: list[LoadedModel]) -> None:
    """Refuse a cascade whose models do not fit together (one line naming the stage)."""
    base = models[0]
    if base.kind != StageKind.NONE:
        raise EvalInputError(f"{base.name} is a {base.kind.value} stage (model.conditioning="
                             f"{base.kind.value!r}); the first model of a cascade must be a base model "
                             "(model.conditioning='none')")
    frames, res, channels = base.frames, base.resolution, base.config.model.in_channels
    for model in models[1:]:
        if model.kind == StageKind.NONE:
            raise EvalInputError(f"{model.name} is a base model (model.conditioning='none'), not a "
                                 "super-resolution stage")
        want = stage_input(model)
        if (frames, res) != want or model.config.model.in_channels != channels:
            raise EvalInputError(
                f"{model.name}: a {model.kind.value} stage reads {want[0]} frames of {want[1]}x{want[1]} "
                f"({model.describe()} out), but the previous model writes {frames} frames of {res}x{res}")
        frames, res = model.frames, model.resolution


def run_cascade(models: list[LoadedModel], encode: Callable[[LoadedModel], dict[str, Any]],
                rng: jax.Array) -> list[np.ndarray]:
    """Each model's output in order, float in [-1, 1]: text to video from the base, then every
    stage from the previous output. ``encode(model)``: the prompts' inputs for that model."""
    outputs: list[np.ndarray] = []
    video = None
    for i, model in enumerate(models):
        generator = Generator(model.plan)
        cond = encode(model)
        key = jax.random.fold_in(rng, i)
        with jax.set_mesh(model.mesh):
            if video is None:
                video = generator.text_to_video(model.params, cond, key)
            else:
                video = generator.super_resolve(model.params, cond, video, key)
            video = np.asarray(jax.device_get(video))
        outputs.append(video)
    return outputs


def side_by_side(outputs: list[np.ndarray], labels: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Clips for a grid with one column per model: every output brought to the last one's size
    (nearest-neighbour upscaling) and frame count (each frame held), row after row (one per prompt)."""
    final = outputs[-1]
    t, h = final.shape[1], final.shape[2]
    clips, names = [], []
    for row in range(final.shape[0]):
        for out, label in zip(outputs, labels):
            clip = out[row]
            clip = np.repeat(np.repeat(clip, h // clip.shape[1], axis=1), h // clip.shape[1], axis=2) \
                if clip.shape[1] != h else clip
            clip = np.repeat(clip, t // clip.shape[0], axis=0) if clip.shape[0] != t else clip
            clips.append(clip)
            names.append(label)
    return clips, names
