"""The video U-Net (VDM 3D U-Net with factorized space-time attention), Flax NNX.

Layout per level: ``num_res_blocks`` blocks of [residual block (GroupNorm, SiLU, 1x3x3 convs,
FiLM from the conditioning vector) -> spatial self-attention + text cross-attention (at
``attention_resolutions``) -> temporal self-attention (every level)], then a 2x down-sample.
A middle stage, and the mirrored up path with skip connections.  The last conv is zero-initialized.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from vdm_jax.config import DType, ModelConfig, RematPolicy, TextEncoderKind
from vdm_jax.models.attention import (
    CrossAttention,
    SpaceTimeAttention,
    SpatialAttention,
    TemporalAttention,
    heads_for,
)
from vdm_jax.models.frames import ConditionalLayout, PositionEmbedding, TemporalConv, frame_index_embedding
from vdm_jax.models.layers import SPATIAL_AXES, Conv3x3, Dense, GroupNorm, param, sinusoidal_embedding
from vdm_jax.models.stage import StageConditioning, is_stage
from vdm_jax.models.text import TextConditioning
from vdm_jax.sharding.logical import Rules, constrain


@flax.struct.dataclass
class ModelOutput:
    prediction: jax.Array  # float32, same shape as the input video


def compute_dtype(cfg: ModelConfig):
    return jnp.bfloat16 if cfg.dtype == DType.BFLOAT16 else jnp.float32


def remat_policy(name: RematPolicy):
    """None (no remat) or a ``jax.checkpoint`` policy."""
    policies = jax.checkpoint_policies
    return {RematPolicy.NONE: None,
            RematPolicy.FULL: policies.nothing_saveable,
            RematPolicy.DOTS: policies.checkpoint_dots,
            RematPolicy.DOTS_NO_BATCH: policies.dots_with_no_batch_dims_saveable}[name]


def attention_levels(cfg: ModelConfig) -> tuple[bool, ...]:
    """Which U-Net levels (0 = full resolution) have spatial + cross attention."""
    sizes = [cfg.resolution // 2**i for i in range(len(cfg.channel_mults))]
    for r in cfg.attention_resolutions:
        if r not in sizes:
            raise ValueError(f"model.attention_resolutions: {r} is not a feature size of a "
                             f"{cfg.resolution}px input; allowed: {sorted(set(sizes))}")
    return tuple(s in cfg.attention_resolutions for s in sizes)


@dataclasses.dataclass(frozen=True)
class _Ctx:
    """Per-model construction settings shared by all blocks."""

    cfg: ModelConfig
    dtype: object
    rules: Rules


class ResBlock(nnx.Module):
    def __init__(self, in_ch: int, out_ch: int, ctx: _Ctx, *, rngs: nnx.Rngs):
        cfg, dt = ctx.cfg, ctx.dtype
        conv = dict(dtype=dt, rngs=rngs, rules=ctx.rules, fast_cpu_grad=cfg.fast_cpu_conv_grad)
        self.norm1, self.conv1 = GroupNorm(in_ch, dtype=dt), Conv3x3(in_ch, out_ch, **conv)
        self.film = Dense(cfg.cond_dim, 2 * out_ch, ("embed", "mlp"), dtype=dt, rngs=rngs)
        self.norm2, self.conv2 = GroupNorm(out_ch, dtype=dt), Conv3x3(out_ch, out_ch, **conv)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs) if cfg.dropout > 0 else None
        self.skip = Dense(in_ch, out_ch, ("embed", "mlp"), dtype=dt, rngs=rngs) if in_ch != out_ch else None
        self.temporal_conv = (TemporalConv(out_ch, dtype=dt, rngs=rngs, rules=ctx.rules)
                              if cfg.temporal_conv else None)
        self.rules = ctx.rules

    def __call__(self, x: jax.Array, cond: jax.Array, frame_mask: jax.Array,
                 deterministic: bool) -> jax.Array:
        """x (B, T, H, W, C); cond (B, T, cond_dim): one conditioning vector per frame."""
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        scale, shift = jnp.split(self.film(jax.nn.silu(cond))[:, :, None, None, :], 2, axis=-1)
        h = jax.nn.silu(self.norm2(h) * (1 + scale) + shift)
        if self.dropout is not None:
            h = self.dropout(h, deterministic=deterministic)
        h = self.conv2(h)
        # Pin the skip projection to the spatial layout: without it, jax 0.10.2's SPMD partitioner
        # computes wrong weight gradients for this einsum under data x context meshes.
        skip = x if self.skip is None else constrain(self.skip(x), SPATIAL_AXES, self.rules)
        h = skip + h
        return h if self.temporal_conv is None else self.temporal_conv(h, frame_mask)


class UNetBlock(nnx.Module):
    """Residual block -> [spatial attention -> text cross-attention] -> temporal attention.

    ``joint=True`` replaces the spatial and temporal attention by one space-time attention.
    """

    def __init__(self, in_ch: int, out_ch: int, ctx: _Ctx, *, attention: bool, rngs: nnx.Rngs,
                 joint: bool = False):
        cfg, dt = ctx.cfg, ctx.dtype
        heads = heads_for(out_ch, cfg.head_dim, cfg.num_heads)
        self.res = ResBlock(in_ch, out_ch, ctx, rngs=rngs)
        self.joint = (SpaceTimeAttention(out_ch, heads, dtype=dt, rngs=rngs, rules=ctx.rules)
                      if joint else None)
        self.spatial = SpatialAttention(out_ch, heads, backend=cfg.attention_backend,
                                        min_seq_len=cfg.cudnn_min_seq_len, dtype=dt, rngs=rngs,
                                        rules=ctx.rules) if attention and not joint else None
        use_text = attention and cfg.cross_attention and cfg.text_encoder != TextEncoderKind.NONE
        self.cross = CrossAttention(out_ch, cfg.text_dim, heads, dtype=dt, rngs=rngs,
                                    rules=ctx.rules) if use_text else None
        self.temporal = TemporalAttention(
            out_ch, heads, num_buckets=cfg.temporal_rel_pos_buckets,
            max_distance=cfg.temporal_rel_pos_max_distance, dtype=dt, rngs=rngs,
            rules=ctx.rules, abs_pos=cfg.temporal_abs_pos) if cfg.temporal_attention and not joint else None
        self.policy_name = cfg.remat

    def forward(self, x, cond, text, text_mask, frame_mask, deterministic: bool):
        x = self.res(x, cond, frame_mask, deterministic)
        if self.joint is not None:
            x = self.joint(x, frame_mask)
        if self.spatial is not None:
            x = self.spatial(x)
        if self.cross is not None:
            x = self.cross(x, text, text_mask)
        if self.temporal is not None:
            x = self.temporal(x, frame_mask)
        return x

    def __call__(self, x, cond, text, text_mask, frame_mask, deterministic: bool):
        policy = remat_policy(self.policy_name)
        if self.policy_name == RematPolicy.NONE:
            return self.forward(x, cond, text, text_mask, frame_mask, deterministic)
        fn = nnx.remat(lambda m, *a: m.forward(*a, deterministic), policy=policy)
        return fn(self, x, cond, text, text_mask, frame_mask)


class Resample(nnx.Module):
    """2x average-pool down or nearest up-sampling (per frame), followed by a 3x3 conv."""

    def __init__(self, ch: int, ctx: _Ctx, *, up: bool, rngs: nnx.Rngs):
        self.conv = Conv3x3(ch, ch, dtype=ctx.dtype, rngs=rngs, rules=ctx.rules,
                            fast_cpu_grad=ctx.cfg.fast_cpu_conv_grad)
        self.up = up

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        if self.up:
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        else:
            x = x.reshape(b, t, h // 2, 2, w // 2, 2, c).mean(axis=(3, 5))
        return self.conv(x)


class VideoUNet(nnx.Module):
    """``model(x, logsnr, *, tokens, token_mask, text_embeddings, drop_text, frame_mask,
    deterministic) -> ModelOutput``; x is (B, T, H, W, C)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, sharding_rules: Rules = ()):
        with nnx.use_eager_sharding(False):  # shardings are applied by the caller (jit out_shardings)
            self._build(cfg, rngs, tuple(tuple(r) for r in sharding_rules))

    def _build(self, cfg: ModelConfig, rngs: nnx.Rngs, rules: Rules) -> None:
        self.cfg, self.rules = cfg, rules
        ctx = _Ctx(cfg, compute_dtype(cfg), rules)
        dt, base = ctx.dtype, cfg.base_channels
        self.has_text = cfg.text_encoder != TextEncoderKind.NONE
        self.text = TextConditioning(cfg, dtype=dt, rngs=rngs) if self.has_text else None
        self.text_to_cond = Dense(cfg.text_dim, cfg.cond_dim, dtype=dt, rngs=rngs) if self.has_text else None
        # Word conditioning: each token id owns a vector in conditioning space (summed, not
        # averaged), so a rare but decisive word (a motion direction) moves the FiLM of every block
        # and the layout head at the optimizer's full per-parameter rate instead of through a shared
        # projection of the pooled text. Random init (std ``model.word_init_std``): every word acts
        # from the first step, so the readouts can learn to use it; a zero table gets no gradient
        # through a zero-initialised layout head and stays near zero (BUILD_NOTES, "Word conditioning").
        use_words = cfg.word_conditioning and cfg.text_encoder == TextEncoderKind.TRANSFORMER
        self.word_cond = param(rngs, nnx.initializers.normal(cfg.word_init_std),
                               (cfg.vocab_size, cfg.cond_dim), ("vocab", "embed")) if use_words else None
        self.time1 = Dense(base, cfg.cond_dim, dtype=dt, rngs=rngs)
        self.time2 = Dense(cfg.cond_dim, cfg.cond_dim, ("mlp", "embed"), dtype=dt, rngs=rngs)
        # A cascade stage reads its conditioning video concatenated with z on channels.
        self.stage = StageConditioning(cfg, dtype=dt, rngs=rngs) if is_stage(cfg) else None
        self.conv_in = Conv3x3(cfg.in_channels * (2 if is_stage(cfg) else 1), base, dtype=dt, rngs=rngs,
                               rules=rules, fast_cpu_grad=cfg.fast_cpu_conv_grad)
        pos_init = nnx.initializers.zeros if cfg.position_zero_init else None
        self.frame_cond = Dense(base, cfg.cond_dim, dtype=dt, rngs=rngs, kernel_init=pos_init,
                                use_bias=False) if cfg.frame_conditioning else None
        # Caption x frame product (random init): an explicit interaction term in the conditioning
        # input, so that a word can act differently on each frame from the first step on.
        product = cfg.frame_text_product and self.has_text
        self.product_words = Dense(cfg.text_dim, cfg.cond_dim, dtype=dt, rngs=rngs) if product else None
        self.product_frames = Dense(base, cfg.cond_dim, dtype=dt, rngs=rngs) if product else None
        use_pos = cfg.frame_embedding or cfg.pixel_embedding
        self.position = PositionEmbedding(
            base, frames=cfg.frame_embedding, pixels=cfg.pixel_embedding, dtype=dt, rngs=rngs,
            zero_init=cfg.position_zero_init) if use_pos else None
        attn = attention_levels(cfg)
        levels = len(cfg.channel_mults)
        down, skips, ch = [], [base], base
        for i, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                down.append(UNetBlock(ch, base * mult, ctx, attention=attn[i], rngs=rngs))
                ch = base * mult
                skips.append(ch)
            if i < levels - 1:
                down.append(Resample(ch, ctx, up=False, rngs=rngs))
                skips.append(ch)
        self.down = nnx.List(down)
        joint_mid = cfg.mid_space_time_attention
        self.mid = nnx.List([UNetBlock(ch, ch, ctx, attention=True, rngs=rngs, joint=joint_mid),
                             UNetBlock(ch, ch, ctx, attention=False, rngs=rngs)])
        up = []
        for i, mult in reversed(list(enumerate(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                up.append(UNetBlock(ch + skips.pop(), base * mult, ctx, attention=attn[i], rngs=rngs))
                ch = base * mult
            if i > 0:
                up.append(Resample(ch, ctx, up=True, rngs=rngs))
        self.up = nnx.List(up)
        self.norm_out = GroupNorm(ch, dtype=dt)
        self.conv_out = Conv3x3(ch, cfg.in_channels, dtype=dt, rngs=rngs, rules=rules,
                                fast_cpu_grad=cfg.fast_cpu_conv_grad, zero_init=True)
        self.layout = ConditionalLayout(cfg.cond_dim, cfg.in_channels, cfg.layout_grid, dtype=dt,
                                        rngs=rngs) if cfg.layout_grid else None

    def _check(self, x: jax.Array, logsnr: jax.Array) -> None:
        cfg = self.cfg
        if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"x must be (B, T, H, W, {cfg.in_channels}) (model.in_channels), got {x.shape}")
        factor = 2 ** (len(cfg.channel_mults) - 1)
        if x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"x height/width {x.shape[2:4]} must be divisible by {factor} "
                             f"(model.channel_mults={cfg.channel_mults})")
        if logsnr.shape != (x.shape[0],):
            raise ValueError(f"logsnr must have shape ({x.shape[0]},), got {logsnr.shape}")

    def _conditioning(self, frame_mask, logsnr, tokens, token_mask, text_embeddings, drop_text):
        """(per-frame conditioning (B, T, cond_dim), text features, text mask).

        The conditioning vector is the MLP of noise-level + pooled-text embedding (+ with
        ``model.frame_conditioning`` a zero-initialised frame-index term, so that the FiLM of every
        residual block can depend on caption x frame position; image frames get none).
        """
        batch, frames = frame_mask.shape
        cond = self.time1(sinusoidal_embedding(logsnr, self.cfg.base_channels, max_period=1000.0))
        text = text_mask = None
        if self.has_text:
            text, text_mask, pooled = self.text(batch, tokens, token_mask, text_embeddings, drop_text,
                                                frame_mask)
            text_cond = self.text_to_cond(pooled)  # (B, D), or (B, T, D) with frame_text_pooling
            cond = cond[:, None, :] + (text_cond if text_cond.ndim == 3 else text_cond[:, None, :])
            if self.word_cond is not None and tokens is not None:
                cond = cond + self._words(tokens, token_mask, drop_text)[:, None, :]
            if self.product_words is not None:
                per_frame = self.product_frames(frame_index_embedding(frames, self.cfg.base_channels))
                words = self.product_words(pooled)
                product = (words if words.ndim == 3 else words[:, None]) * per_frame[None]  # (B, T, D)
                cond = cond + product * frame_mask[..., None].astype(product.dtype)
        cond = jnp.broadcast_to(cond if cond.ndim == 3 else cond[:, None, :], (batch, frames, cond.shape[-1]))
        if self.frame_cond is not None:
            per_frame = self.frame_cond(frame_index_embedding(frames, self.cfg.base_channels))  # (T, D)
            cond = cond + per_frame[None] * frame_mask[..., None].astype(per_frame.dtype)
        return self.time2(jax.nn.silu(cond)), text, text_mask

    def _words(self, tokens, token_mask, drop_text):
        """(B, cond_dim): the sum of the caption tokens' word vectors (zero for a dropped caption)."""
        keep = token_mask.astype(bool) if token_mask is not None else tokens > 0
        if drop_text is not None:
            keep = keep & ~drop_text.astype(bool)[:, None]
        return jnp.einsum("bl,bld->bd", keep.astype(self.word_cond.dtype), self.word_cond[...][tokens])

    def __call__(self, x, logsnr, *, tokens=None, token_mask=None, text_embeddings=None, drop_text=None,
                 frame_mask=None, deterministic: bool = True, low_res=None, aug_logsnr=None) -> ModelOutput:
        """``low_res`` / ``aug_logsnr``: a cascade stage's (noised) conditioning video and its
        augmentation log-SNR (B,) (``vdm_jax.models.stage``); ignored by a base model."""
        self._check(x, logsnr)
        b, t = x.shape[:2]
        frame_mask = jnp.ones((b, t), bool) if frame_mask is None else frame_mask.astype(bool)
        cond, text, text_mask = self._conditioning(frame_mask, logsnr, tokens, token_mask, text_embeddings,
                                                   drop_text)
        x_in = x
        if self.stage is not None:
            self.stage.check(x, low_res, aug_logsnr)
            cond = cond + self.stage.embed(aug_logsnr)[:, None, :].astype(cond.dtype)
            x_in = self.stage.input(x, low_res)
        args = (cond, text, text_mask, frame_mask, deterministic)
        h = self.conv_in(constrain(x_in, SPATIAL_AXES, self.rules))
        if self.position is not None:
            h = self.position(h, frame_mask)
        hs = [h]
        for layer in self.down:
            h = layer(h) if isinstance(layer, Resample) else layer(h, *args)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, *args)
        for layer in self.up:
            if isinstance(layer, Resample):
                h = layer(h)
            else:
                h = layer(jnp.concatenate([h, hs.pop()], axis=-1), *args)
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        if self.layout is not None:
            out = self.layout(out, cond)
        return ModelOutput(prediction=out.astype(jnp.float32))


def abstract_model(cfg: ModelConfig, sharding_rules: Rules = ()) -> VideoUNet:
    """The model with ``ShapeDtypeStruct`` parameters (no allocation)."""
    return nnx.eval_shape(lambda: VideoUNet(cfg, rngs=nnx.Rngs(0), sharding_rules=sharding_rules))


def param_count(cfg: ModelConfig) -> int:
    """Number of parameters, computed abstractly (no allocation)."""
    state = nnx.state(abstract_model(cfg), nnx.Param)
    return int(sum(x.size for x in jax.tree.leaves(state)))
