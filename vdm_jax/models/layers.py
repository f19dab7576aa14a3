"""Basic layers with logical-axis annotations on every parameter.

Parameters are float32 and carry their logical axis names in ``out_sharding`` metadata; the
computation runs in ``dtype`` (float32 or bfloat16).  Normalization statistics and softmax are
always float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vdm_jax.models.conv import conv2d_auto
from vdm_jax.sharding.logical import Rules, constrain

SPATIAL_AXES = ("act_batch", "act_frames", "act_height", "act_width", "act_embed")
TEMPORAL_AXES = ("act_batch", "act_time", "act_height_t", "act_width", "act_embed")


def fan_in_init(scale: float = 1.0):
    return nnx.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


def param(rngs: nnx.Rngs | None, init, shape: Sequence[int], names: Sequence[str | None]) -> nnx.Param:
    """A float32 parameter annotated with logical axis names (one per dim)."""
    if len(names) != len(shape):
        raise ValueError(f"logical names {tuple(names)} do not match parameter shape {tuple(shape)}")
    key = rngs.params() if rngs is not None else jax.random.key(0)
    return nnx.Param(init(key, tuple(shape), jnp.float32), out_sharding=tuple(names))


class Dense(nnx.Module):
    """y = x @ W + b over the last axis; W annotated ``names`` (in, out), b (out,)."""

    def __init__(self, in_features: int, out_features: int, names=("embed", "mlp"), *,
                 dtype=jnp.float32, rngs: nnx.Rngs, kernel_init=None, use_bias: bool = True):
        init = kernel_init if kernel_init is not None else fan_in_init()
        self.kernel = param(rngs, init, (in_features, out_features), names)
        self.bias = param(None, nnx.initializers.zeros, (out_features,), names[1:]) if use_bias else None
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...i,io->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Conv3x3(nnx.Module):
    """Space-only (1x3x3) conv on (B, T, H, W, C) video, frames folded into the batch."""

    def __init__(self, in_ch: int, out_ch: int, *, dtype, rngs: nnx.Rngs, rules: Rules = (),
                 fast_cpu_grad: bool = False, zero_init: bool = False):
        init = nnx.initializers.zeros if zero_init else fan_in_init()
        self.kernel = param(rngs, init, (3, 3, in_ch, out_ch), (None, None, "conv_in", "conv_out"))
        self.bias = param(None, nnx.initializers.zeros, (out_ch,), ("conv_out",))
        self.dtype, self.rules, self.fast_cpu_grad = dtype, tuple(rules), fast_cpu_grad

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        x = constrain(x.astype(self.dtype), SPATIAL_AXES, self.rules)
        y = conv2d_auto(x.reshape(b * t, h, w, c), self.kernel[...].astype(self.dtype), self.fast_cpu_grad)
        y = y.reshape(b, t, h, w, -1) + self.bias[...].astype(self.dtype)
        return constrain(y, SPATIAL_AXES, self.rules)


def num_groups(channels: int, max_groups: int = 32) -> int:
    return math.gcd(channels, max_groups)


class GroupNorm(nnx.Module):
    """GroupNorm over (H, W, C/G) of each frame separately (frames never share statistics)."""

    def __init__(self, channels: int, *, dtype, eps: float = 1e-6):
        self.groups = num_groups(channels)
        self.scale = param(None, nnx.initializers.ones, (channels,), ("norm",))
        self.bias = param(None, nnx.initializers.zeros, (channels,), ("norm",))
        self.dtype, self.eps = dtype, eps

    def __call__(self, x: jax.Array) -> jax.Array:
        *lead, h, w, c = x.shape
        xg = x.astype(jnp.float32).reshape(*lead, h, w, self.groups, c // self.groups)
        axes = (-4, -3, -1)
        mean = xg.mean(axis=axes, keepdims=True)
        var = jnp.square(xg - mean).mean(axis=axes, keepdims=True)
        y = ((xg - mean) * jax.lax.rsqrt(var + self.eps)).reshape(x.shape)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, features: int, *, dtype, eps: float = 1e-6):
        self.scale = param(None, nnx.initializers.ones, (features,), ("norm",))
        self.bias = param(None, nnx.initializers.zeros, (features,), ("norm",))
        self.dtype, self.eps = dtype, eps

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        mean = xf.mean(-1, keepdims=True)
        var = jnp.square(xf - mean).mean(-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(self.dtype)


class MLP(nnx.Module):
    """Dense -> GELU -> Dense (transformer feed-forward)."""

    def __init__(self, features: int, hidden: int, *, dtype, rngs: nnx.Rngs):
        self.up = Dense(features, hidden, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.down = Dense(hidden, features, ("mlp", "embed"), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


def sinusoidal_embedding(x: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """(B,) -> (B, dim) sin/cos features of a scalar (here the log-SNR)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
    args = x.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb
