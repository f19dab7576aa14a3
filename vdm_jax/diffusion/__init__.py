"""Continuous-time Gaussian diffusion (model-agnostic): schedules, targets, losses, samplers.

Never imports vdm_jax.models: everything takes a denoiser function.
"""

from vdm_jax.diffusion.conditioning import (
    DownsampleObservation,
    FrameObservation,
    conditional_sample,
    extend_video,
    interpolation_observation,
    make_window_sampler,
    prediction_observation,
    super_resolution_observation,
)
from vdm_jax.diffusion.guidance import Denoised, dynamic_threshold, guided_prediction, make_x0_eps_fn
from vdm_jax.diffusion.losses import LossOutput, diffusion_loss, loss_weight, sample_logsnr, sample_times
from vdm_jax.diffusion.parameterization import convert, q_sample, to_x0_eps, v_target
from vdm_jax.diffusion.samplers import logsnr_grid, run_sampler, sample
from vdm_jax.diffusion.schedules import Schedule, alpha_sigma

__all__ = [
    "Denoised", "DownsampleObservation", "FrameObservation", "LossOutput", "Schedule", "alpha_sigma",
    "conditional_sample", "convert", "diffusion_loss", "dynamic_threshold",
    "extend_video", "guided_prediction", "interpolation_observation", "logsnr_grid", "loss_weight",
    "make_window_sampler", "make_x0_eps_fn", "prediction_observation", "q_sample", "run_sampler", "sample",
    "sample_logsnr", "sample_times", "super_resolution_observation", "to_x0_eps", "v_target",
]
