"""The captioned GIF grid training writes every ``training.sample_every`` steps
(``WORKDIR/samples/step_N.gif``): EMA params, the first captions of the eval split, the config's
sampler, one jitted sampling program. A cascade stage (``model.conditioning``) super-resolves the
first eval clips' downsampled versions instead: each row is the stage's input (enlarged), its
output and the real clip."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from data_pipelines import pipeline
from data_pipelines.stage_inputs import downsample
from data_pipelines.video_io import make_grid, save_video, to_uint8, to_unit
from vdm_jax.config import TextEncoderKind
from vdm_jax.diffusion.augmentation import sample_stage
from vdm_jax.diffusion.conditioning import stage_observation
from vdm_jax.diffusion.samplers import sample
from vdm_jax.models import prompts
from vdm_jax.models.stage import is_stage, residual_base, to_output_shape
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
        self.real = None
        if is_stage(c.model):  # the stage's inputs: the eval clips downsampled as in training
            self.real = np.stack([r["video"] for r in pipeline.eval_records(c.data, len(self.captions))])
            low_res = jnp.asarray(downsample(to_unit(self.real), c.model.conditioning,
                                             c.model.conditioning_factor))
            self.cond = {**(self.cond if text else {}), "low_res": low_res}
            sampler_cfg = c.sampling if text else dataclasses.replace(c.sampling, guidance_weight=0.0)

            def generate(params, cond, rng):
                text = {k: v for k, v in cond.items() if k != "low_res"}
                low, m = cond["low_res"], c.model
                return sample_stage(sample, plan.denoiser(params), sampler_cfg, low, text,
                                    rng, residual=residual_base(m, low), shape=shape,
                                    observation=stage_observation(m.conditioning, m.conditioning_factor, low),
                                    schedule=self.program.schedule, diffusion_cfg=c.diffusion)

            self._generate = jax.jit(generate)
            return
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
        if self.real is None:
            save_video(path, make_grid(list(videos), captions=self.captions))
        else:
            m = self.program.config.model
            given = to_uint8(to_output_shape(m, self.cond["low_res"]))
            clips = [clip for row in zip(given, videos, self.real) for clip in row]
            labels = [label for cap in self.captions for label in (f"input: {cap}", "stage output", "real")]
            save_video(path, make_grid(clips, captions=labels, ncols=3))
        logging.info("wrote samples %s", path)
        return path
