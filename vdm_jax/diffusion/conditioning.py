"""Conditional generation from a model trained unconditionally on the frames (VDM section 3.1).

An observation is a linear measurement y = A(x) of the clean video x (B, T, H, W, C):
  FrameObservation:      A(x) = x[:, frames]         (prediction, interpolation, extension);
  DownsampleObservation: A(x) = bilinear downsample  (spatial super-resolution).
``Observation.project(x)`` is the nearest x' with A(x') = y (the given frames pasted in; for area
downsampling each block's mean corrected): a cascade stage's sampler can apply it to every denoised
estimate (``sampling.stage_consistency``; range-null-space decomposition, Wang et al. 2023, DDNM).
Methods, chosen by `method` (default sampler_cfg.conditioning_method):
  replacement:     before every model call, A(z_t) is replaced by an exact sample of q(A z_t | y),
                   y_t = alpha_t y + sigma_t A(noise)  (frames: z^a <- alpha_t x^a + sigma_t eps).
  reconstruction:  reconstruction guidance on the denoised estimate,
                   x~ = x^ - (w_r alpha_t / 2) grad_z || y - A(x^(z_t)) ||^2   (sum over elements),
                   with the gradient applied to the generated part only (frames not observed) and,
                   for frame observations, z^a replaced as above (the paper's combination).
                   `replace_observed=False` gives pure guidance (gradient on every frame).
eps is kept consistent with z: eps~ = eps^ + (alpha/sigma)(x^ - x~).  w_r = sampler_cfg.reconstruction_weight.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from vdm_jax.config import DiffusionConfig, SamplerConfig, StageKind
from vdm_jax.diffusion.guidance import Denoised, SamplerDenoiseFn, make_x0_eps_fn, postprocess
from vdm_jax.diffusion.parameterization import bcast
from vdm_jax.diffusion.samplers import init_noise, run_sampler, sample
from vdm_jax.diffusion.schedules import Schedule, alpha_sigma

METHODS = ("reconstruction", "replacement")


@dataclasses.dataclass(frozen=True)
class FrameObservation:
    """Frames `frames` (indices on axis 1) of the video are given: y = x[:, frames]."""

    y: jax.Array
    frames: tuple[int, ...]

    def check(self, shape: tuple[int, ...]) -> None:
        want = (shape[0], len(self.frames), *shape[2:])
        if len(shape) != 5 or tuple(self.y.shape) != want:
            raise ValueError(f"conditioning frames have shape {tuple(self.y.shape)}, expected {want} "
                             f"for video shape {tuple(shape)} and frames {self.frames}")
        if any(not 0 <= f < shape[1] for f in self.frames) or len(set(self.frames)) != len(self.frames):
            raise ValueError(f"conditioning frame indices {self.frames} must be distinct, "
                             f"in [0, {shape[1]})")

    def measure(self, x: jax.Array) -> jax.Array:
        return x[:, jnp.asarray(self.frames)]

    def inject(self, z: jax.Array, y_t: jax.Array) -> jax.Array:
        return z.at[:, jnp.asarray(self.frames)].set(y_t.astype(z.dtype))

    def free_mask(self, shape: tuple[int, ...]) -> jax.Array:
        mask = jnp.ones((1, shape[1]) + (1,) * (len(shape) - 2), jnp.float32)
        return mask.at[:, jnp.asarray(self.frames)].set(0.0)

    def finalize(self, x: jax.Array) -> jax.Array:
        return self.inject(x, self.y)

    def project(self, x: jax.Array, bounds: tuple[float, float] | None = None) -> jax.Array:
        """The nearest video to ``x`` with A(x) = y (and, with ``bounds``, every pixel inside them;
        y is assumed inside): the given frames set, the others clipped."""
        if bounds is not None:
            x = jnp.clip(x, *bounds)
        return self.inject(x, self.y)


@dataclasses.dataclass(frozen=True)
class DownsampleObservation:
    """A low-resolution video is given: y = downsample(x) by an integer `factor`: bilinear
    (antialiased) or `kernel="area"` (the mean of each factor x factor block, as the data pipeline
    makes a cascade stage's input)."""

    y: jax.Array
    factor: int
    kernel: str = "bilinear"

    def check(self, shape: tuple[int, ...]) -> None:
        b, t, h, w, c = shape if len(shape) == 5 else (None,) * 5
        if len(shape) != 5 or h % self.factor or w % self.factor or \
                tuple(self.y.shape) != (b, t, h // self.factor, w // self.factor, c):
            raise ValueError(f"low-resolution video has shape {tuple(self.y.shape)}; for video shape "
                             f"{tuple(shape)} and factor {self.factor} it must be (B, T, H/f, W/f, C)")

    def _blocks(self, x: jax.Array) -> jax.Array:
        """(B, T, H, W, C) -> (B, T, H/f, f, W/f, f, C): the f x f blocks of the area kernel."""
        b, t, h, w, c = x.shape
        f = self.factor
        return x.reshape(b, t, h // f, f, w // f, f, c)

    def measure(self, x: jax.Array) -> jax.Array:
        if self.kernel == "area":
            return self._blocks(x).mean(axis=(3, 5))
        b, t, h, w, c = x.shape
        f = self.factor
        return jax.image.resize(x, (b, t, h // f, w // f, c), "bilinear", antialias=True)

    def inject(self, z: jax.Array, y_t: jax.Array) -> jax.Array:
        return z + jax.image.resize(y_t - self.measure(z), z.shape, "bilinear")

    def free_mask(self, shape: tuple[int, ...]) -> jax.Array:
        return jnp.ones((1,) * len(shape), jnp.float32)

    def finalize(self, x: jax.Array) -> jax.Array:
        return x

    def project(self, x: jax.Array, bounds: tuple[float, float] | None = None,
                iterations: int = 30) -> jax.Array:
        """The nearest video to ``x`` (least squares) with A(x) = y, for the area kernel. Without
        ``bounds``: the pseudo-inverse of a block mean is block replication, so x - A^+(A(x) - y)
        shifts each f x f block to the given mean and keeps what varies inside it. With
        ``bounds = (lo, hi)`` (y inside them), also every pixel in [lo, hi]: per block
        x_i = clip(x_i + tau, lo, hi) with the one tau that gives the block the given mean (the
        projection's KKT conditions), found by ``iterations`` bisection steps (the mean is
        monotone in tau). A black block (y = lo) then comes out exactly black."""
        if self.kernel != "area":
            raise ValueError(f"projection onto a {self.kernel!r} downsampling has no closed form; "
                             "use kernel='area'")
        y = self.y.astype(x.dtype)
        if bounds is None:
            f = self.factor
            return x - jnp.repeat(jnp.repeat(self.measure(x) - y, f, axis=2), f, axis=3)
        lo, hi = bounds
        y = jnp.clip(y, lo, hi)
        blocks = self._blocks(x)
        t_lo = lo - blocks.max(axis=(3, 5))  # every pixel at lo: mean <= y
        t_hi = hi - blocks.min(axis=(3, 5))  # every pixel at hi: mean >= y

        def shifted(tau):
            return jnp.clip(blocks + tau[:, :, :, None, :, None], lo, hi)

        def bisect(_, interval):
            a, z = interval
            mid = 0.5 * (a + z)
            above = shifted(mid).mean(axis=(3, 5)) > y
            return jnp.where(above, a, mid), jnp.where(above, mid, z)

        a, z = jax.lax.fori_loop(0, iterations, bisect, (t_lo, t_hi))
        return shifted(0.5 * (a + z)).reshape(x.shape)


Observation = FrameObservation | DownsampleObservation


def _reconstruction_predictor(x0_eps, obs: Observation, w_r: float, mask: jax.Array):
    def predict(z, lam):
        def err(zz):
            x, e = x0_eps(zz, lam)
            return jnp.sum(jnp.square(obs.y - obs.measure(x))), (x, e)

        grad, (x, e) = jax.grad(err, has_aux=True)(z)
        a, s = alpha_sigma(lam)
        x_new = x - bcast(0.5 * w_r * a, z) * grad * mask
        return x_new, e + bcast(a / s, z) * (x - x_new)

    return predict


def conditional_sample(denoise_fn: SamplerDenoiseFn, observation: Observation, *, shape: tuple[int, ...],
                       rng: jax.Array, schedule: Schedule, diffusion_cfg: DiffusionConfig,
                       sampler_cfg: SamplerConfig, method: str | None = None, cond: Any = None,
                       x_init: jax.Array | None = None, replace_observed: bool = True) -> jax.Array:
    """Sample x (shape) consistent with `observation`; observed frames are pasted into the output."""
    method = method or sampler_cfg.conditioning_method
    if method not in METHODS:
        raise ValueError(f"conditioning method {method!r} unknown; allowed: {METHODS}")
    observation.check(tuple(shape))
    frames = isinstance(observation, FrameObservation)
    replace = method == "replacement" or (replace_observed and frames)
    guide = method == "reconstruction" and sampler_cfg.reconstruction_weight > 0
    init_rng, loop_rng = jax.random.split(rng)
    z_init = init_noise(init_rng, tuple(shape), x_init)
    x0_eps = make_x0_eps_fn(denoise_fn, diffusion_cfg.target, sampler_cfg, cond)
    if guide:
        mask = observation.free_mask(tuple(shape)) if replace else jnp.ones((1,) * len(shape))
        x0_eps = _reconstruction_predictor(x0_eps, observation, sampler_cfg.reconstruction_weight, mask)

    def predict(z, lam, key) -> Denoised:
        del key
        return postprocess(*x0_eps(z, lam), z, lam, sampler_cfg)

    def prepare(z, lam, key):
        if not replace:
            return z
        a, s = alpha_sigma(lam)
        noise = observation.measure(jax.random.normal(key, z.shape, z.dtype))
        y_t = bcast(a, observation.y) * observation.y + bcast(s, observation.y) * noise
        return observation.inject(z, y_t)

    x = run_sampler(predict, z_init=z_init, rng=loop_rng, schedule=schedule, sampler_cfg=sampler_cfg,
                    prepare=prepare)
    return observation.finalize(x) if replace else x


def prediction_observation(context: jax.Array) -> FrameObservation:
    """Prediction: the first k = context.shape[1] frames are given."""
    return FrameObservation(context, tuple(range(context.shape[1])))


def interpolation_observation(frames: jax.Array, num_frames: int) -> FrameObservation:
    """Interpolation: every other frame (0, 2, 4, ...) of a `num_frames` video is given."""
    idx = tuple(range(0, num_frames, 2))
    if frames.shape[1] != len(idx):
        raise ValueError(f"interpolation: got {frames.shape[1]} given frames, a {num_frames}-frame video "
                         f"needs {len(idx)} (every other frame)")
    return FrameObservation(frames, idx)


def super_resolution_observation(low_res: jax.Array, factor: int, kernel: str = "bilinear"
                                 ) -> DownsampleObservation:
    if factor < 1:
        raise ValueError(f"super-resolution factor must be >= 1, got {factor}")
    if kernel not in ("bilinear", "area"):
        raise ValueError(f"downsampling kernel {kernel!r} unknown; allowed: ['bilinear', 'area']")
    return DownsampleObservation(low_res, factor, kernel)


def stage_observation(kind: StageKind | str, factor: int, low_res: jax.Array) -> Observation:
    """How a cascade stage's output measures to its (clean) conditioning video ``low_res``, exactly
    as the data pipeline makes that video (``data_pipelines.stage_inputs``): the mean of each
    f x f block (``spatial_sr``) or frames 0, f, 2f, ... (``temporal_sr``)."""
    low_res = jnp.asarray(low_res, jnp.float32)
    kind = StageKind(kind)
    if kind == StageKind.SPATIAL_SR:
        return DownsampleObservation(low_res, factor, kernel="area")
    if kind == StageKind.TEMPORAL_SR:
        return FrameObservation(low_res, tuple(range(0, low_res.shape[1] * factor, factor)))
    raise ValueError("model.conditioning='none': a base model has no conditioning video")


def strided_observation(frames: jax.Array, num_frames: int, stride: int) -> FrameObservation:
    """Interpolation by ``stride``: frames 0, stride, 2*stride, ... of a ``num_frames`` video are
    given (``stride=num_frames`` or more: only the first frame, i.e. image-to-video)."""
    if stride < 1:
        raise ValueError(f"frame stride must be >= 1, got {stride}")
    idx = tuple(range(0, num_frames, stride))
    if frames.shape[1] != len(idx):
        raise ValueError(f"{frames.shape[1]} given frame(s); a {num_frames}-frame video at stride {stride} "
                         f"needs {len(idx)} (frames {idx})")
    return FrameObservation(frames, idx)


WindowSampler = Callable[[jax.Array | None, jax.Array], jax.Array]


def extend_video(window_sampler: WindowSampler, *, rng: jax.Array, total_frames: int, window: int,
                 overlap: int, context: jax.Array | None = None) -> jax.Array:
    """Autoregressive extension to `total_frames` with overlapping windows of `window` frames.

    `window_sampler(ctx, rng) -> (B, window, H, W, C)` samples one window whose first `overlap`
    frames are `ctx` (ctx None: unconditional first window); see :func:`make_window_sampler`.
    Each new window is conditioned on the last `overlap` frames generated so far.
    """
    if not 0 < overlap < window:
        raise ValueError(f"extend_video: overlap must be in [1, window={window}), got {overlap}")
    if context is not None and context.shape[1] != overlap:
        raise ValueError(f"extend_video: context has {context.shape[1]} frames, expected overlap={overlap}")
    rng, first = jax.random.split(rng)
    video = window_sampler(context, first)
    i = 0
    while video.shape[1] < total_frames:
        new = window_sampler(video[:, -overlap:], jax.random.fold_in(rng, i))
        video = jnp.concatenate([video, new[:, overlap:]], axis=1)
        i += 1
    return video[:, :total_frames]


def make_window_sampler(denoise_fn: SamplerDenoiseFn, *, shape: tuple[int, ...], schedule: Schedule,
                        diffusion_cfg: DiffusionConfig, sampler_cfg: SamplerConfig,
                        method: str | None = None, cond: Any = None, jit: bool = True) -> WindowSampler:
    """Window sampler for :func:`extend_video` (prediction-conditioned, one compile for all windows)."""

    def conditioned(ctx, key):
        return conditional_sample(denoise_fn, prediction_observation(ctx), shape=shape, rng=key,
                                  schedule=schedule, diffusion_cfg=diffusion_cfg, sampler_cfg=sampler_cfg,
                                  method=method, cond=cond)

    def unconditioned(key):
        return sample(denoise_fn, shape=shape, rng=key, schedule=schedule, diffusion_cfg=diffusion_cfg,
                      sampler_cfg=sampler_cfg, cond=cond)

    cond_fn = jax.jit(conditioned) if jit else conditioned
    uncond_fn = jax.jit(unconditioned) if jit else unconditioned
    return lambda ctx, key: uncond_fn(key) if ctx is None else cond_fn(ctx, key)
