"""The conditioning input of a cascade stage (``model.conditioning``): a spatial or temporal
super-resolution model is the base U-Net plus

  * the lower stage's video, resized to the stage's output shape (bilinear in space, frame
    repetition in time) and concatenated with z on channels (so ``conv_in`` reads 2C channels);
  * the noise-augmentation level of that video (its log-SNR, Imagen Video's noise conditioning
    augmentation), embedded by its own MLP and added to every frame's conditioning vector.

The video arrives already noised (``vdm_jax.diffusion.augmentation``): the model only sees the
noisy video and the level. Shapes: spatial_sr takes (B, T, H/f, W/f, C) for an output (B, T, H, W, C),
temporal_sr takes (B, T/f, H, W, C).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vdm_jax.config import ModelConfig, StageKind
from vdm_jax.models.layers import Dense, sinusoidal_embedding

STAGE_KEYS = ("low_res", "aug_logsnr")  # a stage's extra model inputs (batch / prompt-dict keys)


def is_stage(cfg: ModelConfig) -> bool:
    return cfg.conditioning != StageKind.NONE


def low_res_shape(cfg: ModelConfig, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The conditioning video's shape for an output video of ``shape`` (B, T, H, W, C)."""
    b, t, h, w, c = shape
    f = cfg.conditioning_factor
    if cfg.conditioning == StageKind.SPATIAL_SR:
        return (b, t, h // f, w // f, c)
    if cfg.conditioning == StageKind.TEMPORAL_SR:
        return (b, t // f, h, w, c)
    raise ValueError("model.conditioning='none': a base model has no conditioning video")


def output_shape(cfg: ModelConfig, low_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The stage's output shape (B, T, H, W, C) for a conditioning video of ``low_shape``."""
    b, t, h, w, c = low_shape
    f = cfg.conditioning_factor
    if cfg.conditioning == StageKind.SPATIAL_SR:
        return (b, t, h * f, w * f, c)
    if cfg.conditioning == StageKind.TEMPORAL_SR:
        return (b, t * f, h, w, c)
    raise ValueError("model.conditioning='none': a base model has no conditioning video")


def upsample_bilinear(video: jax.Array, factor: int) -> jax.Array:
    """(B, T, h, w, C) -> (B, T, h*factor, w*factor, C), bilinear (half-pixel centres)."""
    b, t, h, w, c = video.shape
    return jax.image.resize(video, (b, t, h * factor, w * factor, c), "bilinear")


def repeat_frames(video: jax.Array, factor: int) -> jax.Array:
    """(B, t, H, W, C) -> (B, t*factor, H, W, C): each frame repeated ``factor`` times."""
    return jnp.repeat(video, factor, axis=1)


def to_output_shape(cfg: ModelConfig, low_res: jax.Array) -> jax.Array:
    """The conditioning video resized to the stage's output shape."""
    if cfg.conditioning == StageKind.SPATIAL_SR:
        return upsample_bilinear(low_res, cfg.conditioning_factor)
    return repeat_frames(low_res, cfg.conditioning_factor)


def residual_base(cfg: ModelConfig, low_res: jax.Array) -> jax.Array | float:
    """What a residual stage's diffusion variable is measured from: the clean conditioning video
    resized to the output shape (``model.stage_residual``); 0 for any other model."""
    if not cfg.stage_residual:
        return 0.0
    return to_output_shape(cfg, jnp.asarray(low_res, jnp.float32))


class StageConditioning(nnx.Module):
    """Resizes the conditioning video and embeds its augmentation level (see the module doc)."""

    def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
        self.cfg = cfg
        self.aug1 = Dense(cfg.base_channels, cfg.cond_dim, dtype=dtype, rngs=rngs)
        self.aug2 = Dense(cfg.cond_dim, cfg.cond_dim, ("mlp", "embed"), dtype=dtype, rngs=rngs)

    def check(self, x: jax.Array, low_res: jax.Array | None, aug_logsnr: jax.Array | None) -> None:
        kind = self.cfg.conditioning.value
        if low_res is None or aug_logsnr is None:
            raise ValueError(f"a {kind} stage (model.conditioning) needs low_res and aug_logsnr inputs")
        want = low_res_shape(self.cfg, x.shape)
        if tuple(low_res.shape) != want:
            raise ValueError(f"low_res must be {want} for a {kind} stage with model.conditioning_factor="
                             f"{self.cfg.conditioning_factor} and output {tuple(x.shape)}, got "
                             f"{tuple(low_res.shape)}")
        if aug_logsnr.shape != (x.shape[0],):
            raise ValueError(f"aug_logsnr must have shape ({x.shape[0]},), got {aug_logsnr.shape}")

    def input(self, x: jax.Array, low_res: jax.Array) -> jax.Array:
        """z and the resized conditioning video on channels: (B, T, H, W, 2C)."""
        return jnp.concatenate([x, to_output_shape(self.cfg, low_res.astype(x.dtype))], axis=-1)

    def embed(self, aug_logsnr: jax.Array) -> jax.Array:
        """(B,) augmentation log-SNR -> (B, cond_dim), added to every frame's conditioning."""
        emb = sinusoidal_embedding(aug_logsnr, self.cfg.base_channels, max_period=1000.0)
        return self.aug2(jax.nn.silu(self.aug1(emb)))
