"""The captioned GIF grid training writes every ``training.sample_every`` steps
(``WORKDIR/samples/step_N.gif``): EMA params, the first captions of the eval split, the config's
sampler, one jitted sampling program."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging

from data_pipelines.video_io import make_grid, save_video, to_uint8
from vdm_jax.config import TextEncoderKind
from vdm_jax.diffusion.samplers import sample
from vdm_jax.models import prompts
from vdm_jax.training.data import TrainData
from vdm_jax.training.program import TrainProgram


class PeriodicSampler:
    def __init__(self, program: TrainProgram, data: TrainData, workdir: str):
        self.program, self.data = program, data
        self.enabled = program.config.training.sample_every > 0
        self.dir = os.path.join(workdir, "samples")
        self._generate = None

    def _build(self) -> None:
        c, plan = self.program.config, self.program.model
        self.captions = self.data.eval_captions(c.training.num_sample_prompts)
        cond = prompts.encode_prompts(c, self.data.tokenizer, self.captions, self.program.mesh)
        self.cond = {k: jnp.asarray(v) for k, v in cond.items()}
        text = c.model.text_encoder != TextEncoderKind.NONE
        shape = plan.video_shape(len(self.captions))
        self._generate = jax.jit(lambda params, cond, rng: sample(
            plan.denoiser(params), shape=shape, rng=rng, schedule=self.program.schedule,
            diffusion_cfg=c.diffusion, sampler_cfg=c.sampling, cond=cond if text else None))

    def run(self, ema_params: Any, step: int) -> str | None:
        if not self.enabled:
            return None
        if self._generate is None:
            self._build()
        videos = to_uint8(self._generate(ema_params, self.cond, jax.random.PRNGKey(step)))
        if jax.process_index() != 0:
            return None
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f"step_{step:07d}.gif")
        save_video(path, make_grid(list(videos), captions=self.captions))
        logging.info("wrote samples %s", path)
        return path
