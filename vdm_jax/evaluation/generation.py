"""Generation from restored params: text to video, prediction from given frames, extension.

Every program takes ``params`` as an argument (never baked into the compiled program) and is
jitted once per shape; the model runs through ``ModelPlan.denoiser``:
  text_to_video  ``vdm_jax.diffusion.sample`` (the sampler of training's periodic samples);
  predict        the first k frames given: ``vdm_jax.diffusion.conditional_sample`` with a prediction
                 observation (reconstruction guidance or replacement: ``sampling.conditioning_method``);
  extend         autoregressive extension past the trained length with overlapping windows
                 (``vdm_jax.diffusion.extend_video``), each window predicted from the last k frames.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.video_io import to_uint8
from vdm_jax.config import SamplerConfig, TextEncoderKind
from vdm_jax.diffusion import conditional_sample, extend_video, prediction_observation, sample
from vdm_jax.diffusion.schedules import Schedule
from vdm_jax.models.plan import ModelPlan


class Generator:
    """Jitted samplers for one model (its plan) and one sampler config (default: the model config's)."""

    def __init__(self, plan: ModelPlan, sampler: SamplerConfig | None = None):
        self.plan, self.config = plan, plan.config
        self.sampler = sampler or plan.config.sampling
        self._t2v: dict[int, Any] = {}
        self._pred: dict[tuple[int, int], Any] = {}
        self._schedule = Schedule.from_config(self.config.diffusion, self.config.data.resolution)

    @property
    def frames(self) -> int:
        return self.config.data.num_frames

    def _cond(self, cond: dict[str, Any] | None) -> dict[str, jax.Array] | None:
        if not cond or self.config.model.text_encoder == TextEncoderKind.NONE:
            return None
        return jax.tree.map(jnp.asarray, cond)

    def compiled(self, num_frames: int | None = None) -> bool:
        """Whether text_to_video for ``num_frames`` has been built (and so compiled once called)."""
        return (num_frames or self.frames) in self._t2v

    def text_to_video(self, params: Any, cond: dict[str, Any], rng: jax.Array,
                      num_frames: int | None = None) -> jax.Array:
        """(B, T, H, W, 3) in [-1, 1]; B = the prompts in ``cond``."""
        t = num_frames or self.frames
        if t not in self._t2v:
            self._t2v[t] = jax.jit(self._text_to_video_fn(t))
        return self._t2v[t](params, jax.tree.map(jnp.asarray, cond), rng)

    def _text_to_video_fn(self, num_frames: int):
        text = self.config.model.text_encoder != TextEncoderKind.NONE

        def run(params, cond, rng):  # the prompts' inputs give the batch size, also when not read
            batch = jax.tree.leaves(cond)[0].shape[0] if cond else 1
            return sample(self.plan.denoiser(params), shape=self.plan.video_shape(batch, num_frames), rng=rng,
                          schedule=self._schedule, diffusion_cfg=self.config.diffusion,
                          sampler_cfg=self.sampler, cond=cond if cond and text else None)

        return run

    def predict(self, params: Any, cond: dict[str, Any] | None, context: jax.Array | np.ndarray,
                rng: jax.Array, num_frames: int | None = None) -> jax.Array:
        """Videos of ``num_frames`` whose first k frames are ``context`` (B, k, H, W, 3) in [-1, 1]."""
        t = num_frames or self.frames
        context = jnp.asarray(context, jnp.float32)
        key = (int(context.shape[1]), t)
        if key not in self._pred:
            self._pred[key] = jax.jit(self._predict_fn(t))
        return self._pred[key](params, self._cond(cond), context, rng)

    def _predict_fn(self, num_frames: int):
        cfg = self.config

        def run(params, cond, context, rng):
            b, _, h, w, c = context.shape
            return conditional_sample(self.plan.denoiser(params), prediction_observation(context),
                                      shape=(b, num_frames, h, w, c), rng=rng, schedule=self._schedule,
                                      diffusion_cfg=cfg.diffusion, sampler_cfg=self.sampler, cond=cond)

        return run

    def extend(self, params: Any, cond: dict[str, Any], rng: jax.Array, total_frames: int, overlap: int,
               context: jax.Array | np.ndarray | None = None) -> jax.Array:
        """Autoregressive extension to ``total_frames`` with windows of the trained length.

        ``context`` (B, overlap, H, W, 3): the first window is predicted from it; without it the
        first window is text to video. Each later window is predicted from the last ``overlap``
        frames generated so far.
        """
        window = self.frames

        def window_sampler(ctx, key):
            if ctx is None:
                return self.text_to_video(params, cond, key)
            return self.predict(params, cond, ctx, key)

        ctx = None if context is None else jnp.asarray(context, jnp.float32)
        return extend_video(window_sampler, rng=rng, total_frames=total_frames, window=window,
                            overlap=overlap, context=ctx)


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
    return x if x.shape[0] == n else np.concatenate([x, np.repeat(x[-1:], n - x.shape[0], axis=0)])


def generate_in_batches(fn, inputs: dict[str, np.ndarray], batch_size: int, *, cold: bool = True
                        ) -> tuple[np.ndarray, float]:
    """``fn(batch_inputs, batch_index) -> (b, T, H, W, 3)`` in [-1, 1] over the rows of ``inputs``.

    The last batch is padded to ``batch_size`` (one compiled shape) and trimmed. Returns uint8 clips
    and the clips/s reached without compilation: when ``cold`` (not compiled yet) the first batch is
    not timed, and a lone batch is run once more to time it.
    """
    n = len(next(iter(inputs.values())))
    if cold and n <= batch_size:
        to_uint8(fn({k: _pad_rows(np.asarray(v), batch_size) for k, v in inputs.items()}, 0))  # compile
        cold = False
    out, timed, t_timed = [], 0, 0.0
    for i, start in enumerate(range(0, n, batch_size)):
        stop = min(n, start + batch_size)
        chunk = {k: _pad_rows(np.asarray(v[start:stop]), batch_size) for k, v in inputs.items()}
        t0 = time.perf_counter()
        clips = to_uint8(fn(chunk, i))[: stop - start]  # device_get: waits for the result
        dt = time.perf_counter() - t0
        out.append(clips)
        if i > 0 or not cold:
            timed, t_timed = timed + (stop - start), t_timed + dt
    rate = timed / t_timed if t_timed > 0 else float("nan")
    return np.concatenate(out), rate
