"""Text-to-video generation from params, and the periodic captioned GIF grid written in training."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from vdm_jax.config import Config, SamplerConfig, TextEncoderKind
from vdm_jax.diffusion.samplers import sample
from vdm_jax.diffusion.schedules import Schedule
from vdm_jax.training.state import ModelBundle


def make_generate_fn(config: Config, bundle: ModelBundle, sampler_cfg: SamplerConfig | None = None,
                     *, num_frames: int | None = None):
    """A jitted ``(params, cond, rng) -> videos in [-1, 1]`` for a batch of prompts.

    ``cond`` holds the text inputs (``tokens``/``token_mask`` or ``text_embeddings``/``token_mask``)
    with a leading batch dimension; the whole sampler is one compiled program.
    """
    sampler_cfg = sampler_cfg or config.sampling
    schedule = Schedule.from_config(config.diffusion, config.data.resolution)
    frames = num_frames or config.data.num_frames
    res = config.data.resolution
    text_kind = config.model.text_encoder

    @jax.jit
    def generate(params: Any, cond: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
        batch = jax.tree.leaves(cond)[0].shape[0] if cond else 1

        def denoise(z, logsnr, c, drop):
            kwargs = dict(c) if c else {}
            if text_kind == TextEncoderKind.NONE:
                kwargs = {}
            return bundle.apply(params, z, logsnr, drop_text=drop if kwargs else None,
                                deterministic=True, **kwargs).prediction

        shape = (batch, frames, res, res, config.model.in_channels)
        return sample(denoise, shape=shape, rng=rng, schedule=schedule, diffusion_cfg=config.diffusion,
                      sampler_cfg=sampler_cfg, cond=cond if (cond and text_kind != TextEncoderKind.NONE)
                      else None)

    return generate


def to_uint8(videos: jax.Array | np.ndarray) -> np.ndarray:
    v = np.asarray(jax.device_get(videos), np.float32)
    return np.clip(np.round((v + 1.0) * 127.5), 0, 255).astype(np.uint8)


class PeriodicSampler:
    """Every ``training.sample_every`` steps: EMA params, fixed test-split prompts -> GIF grid."""

    def __init__(self, config: Config, bundle: ModelBundle, data: Any, workdir: str, mesh: Any,
                 *, enabled: bool = True):
        self.enabled = enabled and config.training.sample_every > 0
        self.config = config
        self.dir = os.path.join(workdir, "samples")
        self._generate = None
        self.bundle = bundle
        self.data = data
        self.mesh = mesh

    def run(self, ema_params: Any, step: int) -> str | None:
        if not self.enabled:
            return None
        from vdm_jax.evaluation.video_io import make_grid, save_video

        if self._generate is None:
            self._generate = make_generate_fn(self.config, self.bundle)
            self.captions, self.cond = self.data.sample_prompts(self.config.training.num_sample_prompts,
                                                                self.mesh)
        cond = {k: jnp.asarray(v) for k, v in self.cond.items()}
        videos = to_uint8(self._generate(ema_params, cond, jax.random.PRNGKey(step)))
        if jax.process_index() != 0:
            return None
        os.makedirs(self.dir, exist_ok=True)
        path = os.path.join(self.dir, f"step_{step:07d}.gif")
        save_video(path, make_grid(list(videos), captions=self.captions))
        logging.info("wrote samples %s", path)
        return path
