"""Spatial, temporal and cross attention for the video U-Net.

* Spatial self-attention attends within each frame; it uses ``jax.nn.dot_product_attention``
  with the backend from ``model.attention_backend`` (cuDNN on GPU / splash on TPU when asked).
* Temporal self-attention attends over frames at each spatial position with a learned T5-style
  relative-position bias (log-spaced buckets, so longer clips than trained on still work) and
  the joint image-video mask. It stays on plain XLA einsums (faster than cuDNN at T=16).
* Cross-attention attends from every video position to the text token features (XLA; the
  text is short).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from vdm_jax.config import AttentionBackend
from vdm_jax.models.frames import frame_index_embedding
from vdm_jax.models.layers import SPATIAL_AXES, TEMPORAL_AXES, Dense, GroupNorm, param
from vdm_jax.sharding.logical import Rules, constrain

HEAD_AXES = ("act_batch", None, "act_heads", None)


def heads_for(channels: int, head_dim: int, num_heads: int) -> int:
    heads = num_heads if num_heads > 0 else max(1, channels // head_dim)
    if channels % heads:
        raise ValueError(f"model.head_dim/num_heads: {channels} channels not divisible into {heads} heads")
    return heads


def resolve_backend(backend: AttentionBackend, seq_len: int, min_seq_len: int, dtype) -> str:
    """Pick the spatial attention implementation: 'xla', 'cudnn' or 'splash'."""
    platform = jax.default_backend()
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if backend == AttentionBackend.AUTO:
        return "cudnn" if platform == "gpu" and half and seq_len >= min_seq_len else "xla"
    if backend == AttentionBackend.CUDNN:
        if platform != "gpu":
            raise ValueError(f"model.attention_backend='cudnn' needs a GPU, but JAX runs on '{platform}'; "
                             "use 'auto' or 'xla'")
        if not half:
            raise ValueError("model.attention_backend='cudnn' needs model.dtype='bfloat16', got float32")
        return "cudnn"
    if backend == AttentionBackend.SPLASH:
        if platform != "tpu":
            raise ValueError(f"model.attention_backend='splash' needs a TPU, but JAX runs on '{platform}'; "
                             "use 'auto' or 'xla'")
        return "splash"
    return "xla"


def _splash_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Full (unmasked) TPU splash attention; q, k, v (B, S, N, D)."""
    # Imported here, the one import inside a function: the TPU kernel's import takes seconds and
    # only attention_backend='splash' on a TPU needs it.
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    _, s, n, d = q.shape
    mask = sm.MultiHeadMask([sm.FullMask((s, s)) for _ in range(n)])
    kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1)
    q = q * (1.0 / math.sqrt(d))
    out = jax.vmap(kernel)(q.swapaxes(1, 2), k.swapaxes(1, 2), v.swapaxes(1, 2))
    return out.swapaxes(1, 2)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, impl: str, mask: jax.Array | None = None) -> jax.Array:
    """Multi-head attention on (B, S, N, D) arrays with the resolved implementation."""
    if impl == "splash":
        return _splash_attention(q, k, v)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)


class _QKVO(nnx.Module):
    def __init__(self, channels: int, kv_features: int, heads: int, *, dtype, rngs: nnx.Rngs):
        self.heads, self.head_dim = heads, channels // heads
        self.q = Dense(channels, channels, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.k = Dense(kv_features, channels, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.v = Dense(kv_features, channels, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.o = Dense(channels, channels, ("heads", "embed"), dtype=dtype, rngs=rngs)

    def split(self, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-1], self.heads, self.head_dim)


class SpatialAttention(nnx.Module):
    """Self-attention within each frame (frames folded into the batch)."""

    def __init__(self, channels: int, heads: int, *, backend: AttentionBackend, min_seq_len: int,
                 dtype, rngs: nnx.Rngs, rules: Rules = ()):
        self.norm = GroupNorm(channels, dtype=dtype)
        self.proj = _QKVO(channels, channels, heads, dtype=dtype, rngs=rngs)
        self.backend, self.min_seq_len, self.dtype, self.rules = backend, min_seq_len, dtype, tuple(rules)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        x = constrain(x, SPATIAL_AXES, self.rules)
        y = self.norm(x).reshape(b * t, h * w, c)
        q, k, v = (constrain(self.proj.split(f(y)), HEAD_AXES, self.rules)
                   for f in (self.proj.q, self.proj.k, self.proj.v))
        impl = resolve_backend(self.backend, h * w, self.min_seq_len, self.dtype)
        out = attend(q, k, v, impl).reshape(b, t, h, w, c)
        return constrain(x + self.proj.o(out), SPATIAL_AXES, self.rules)


class CrossAttention(nnx.Module):
    """Every video position attends to the text token features (padding masked)."""

    def __init__(self, channels: int, text_dim: int, heads: int, *, dtype, rngs: nnx.Rngs, rules: Rules = ()):
        self.norm = GroupNorm(channels, dtype=dtype)
        self.proj = _QKVO(channels, text_dim, heads, dtype=dtype, rngs=rngs)
        self.rules = tuple(rules)

    def __call__(self, x: jax.Array, text: jax.Array, text_mask: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        x = constrain(x, SPATIAL_AXES, self.rules)
        q = self.proj.split(self.proj.q(self.norm(x).reshape(b, t * h * w, c)))
        k, v = self.proj.split(self.proj.k(text)), self.proj.split(self.proj.v(text))
        k, v = k.astype(q.dtype), v.astype(q.dtype)
        out = attend(q, k, v, "xla", mask=text_mask[:, None, None, :]).reshape(b, t, h, w, c)
        return constrain(x + self.proj.o(out), SPATIAL_AXES, self.rules)


def relative_position_bucket(rel: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
    """T5 bidirectional buckets of ``rel = key_pos - query_pos``: exact near 0, log-spaced far."""
    half = num_buckets // 2
    bucket = jnp.where(rel > 0, half, 0)
    n = jnp.abs(rel)
    max_exact = max(half // 2, 1)
    log_range = math.log(max(max_distance / max_exact, 2.0))
    ratio = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / log_range
    large = max_exact + (ratio * (half - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, half - 1)
    return bucket + jnp.where(n < max_exact, n, large)


def temporal_mask(frame_mask: jax.Array) -> jax.Array:
    """(B, T) bool (True = video frame) -> (B, T, T) allowed[q, k].

    Image frames (False) attend only to themselves; video frames attend to all video frames.
    """
    t = frame_mask.shape[1]
    both_video = frame_mask[:, :, None] & frame_mask[:, None, :]
    return both_video | jnp.eye(t, dtype=bool)[None]


class TemporalAttention(nnx.Module):
    """Self-attention over frames at each spatial position, relative-position bias, masking."""

    def __init__(self, channels: int, heads: int, *, num_buckets: int, max_distance: int, dtype,
                 rngs: nnx.Rngs, rules: Rules = (), abs_pos: bool = False):
        self.norm = GroupNorm(channels, dtype=dtype)
        self.proj = _QKVO(channels, channels, heads, dtype=dtype, rngs=rngs)
        # Optional absolute frame index: sinusoid -> zero-initialised projection, added to q/k/v input.
        self.abs_pos = Dense(channels, channels, ("embed", "heads"), dtype=dtype, rngs=rngs,
                             kernel_init=nnx.initializers.zeros) if abs_pos else None
        self.rel_bias = param(rngs, nnx.initializers.normal(0.02), (num_buckets, heads), ("rel_pos", "heads"))
        self.num_buckets, self.max_distance, self.rules = num_buckets, max_distance, tuple(rules)

    def bias(self, t: int) -> jax.Array:
        pos = jnp.arange(t)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.rel_bias[...][buckets].transpose(2, 0, 1)  # (N, Tq, Tk)

    def __call__(self, x: jax.Array, frame_mask: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        x = constrain(x, TEMPORAL_AXES, self.rules)
        y = self.norm(x)
        if self.abs_pos is not None:
            pos = self.abs_pos(frame_index_embedding(t, c))  # (T, C)
            y = y + pos[:, None, None, :].astype(y.dtype)
        q, k, v = (self.proj.split(f(y)) for f in (self.proj.q, self.proj.k, self.proj.v))
        logits = jnp.einsum("bthwnd,bshwnd->bhwnts", q, k, preferred_element_type=jnp.float32)
        logits = logits / math.sqrt(self.proj.head_dim) + self.bias(t)
        allowed = temporal_mask(frame_mask)[:, None, None, None]  # (B, 1, 1, 1, T, T)
        logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhwnts,bshwnd->bthwnd", probs, v).reshape(b, t, h, w, c)
        return constrain(x + self.proj.o(out), TEMPORAL_AXES, self.rules)


def space_time_mask(frame_mask: jax.Array, tokens_per_frame: int) -> jax.Array:
    """(B, T) bool -> (B, 1, T*S, T*S) allowed[q, k] for joint space-time attention.

    Video frames' tokens attend to every video token; an image frame's tokens only to their own
    frame (the joint image-video rule of :func:`temporal_mask`, extended to all pixels).
    """
    allowed = jnp.repeat(temporal_mask(frame_mask), tokens_per_frame, axis=1)
    allowed = jnp.repeat(allowed, tokens_per_frame, axis=2)
    return allowed[:, None]


class SpaceTimeAttention(nnx.Module):
    """Joint self-attention over all frames and pixels of a clip (for low-resolution levels).

    Replaces the factorized spatial + temporal pair where ``model.mid_space_time_attention`` asks
    for it: a token sees every other position in every frame, so large motions need no chain of
    spatial and temporal hops. Cost grows with (T*H*W)^2, so it is meant for the middle block.
    """

    def __init__(self, channels: int, heads: int, *, dtype, rngs: nnx.Rngs, rules: Rules = ()):
        self.norm = GroupNorm(channels, dtype=dtype)
        self.proj = _QKVO(channels, channels, heads, dtype=dtype, rngs=rngs)
        self.frame_pos = Dense(channels, channels, ("embed", "heads"), dtype=dtype, rngs=rngs,
                               kernel_init=nnx.initializers.zeros)
        self.rules = tuple(rules)

    def __call__(self, x: jax.Array, frame_mask: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        x = constrain(x, SPATIAL_AXES, self.rules)
        # Frame index (zero-initialised projection) so that tokens know their time.
        y = self.norm(x) + self.frame_pos(frame_index_embedding(t, c)
                                          )[None, :, None, None, :].astype(x.dtype)
        y = y.reshape(b, t * h * w, c)
        q, k, v = (self.proj.split(f(y)) for f in (self.proj.q, self.proj.k, self.proj.v))
        out = attend(q, k, v, "xla", mask=space_time_mask(frame_mask, h * w)).reshape(b, t, h, w, c)
        return constrain(x + self.proj.o(out), SPATIAL_AXES, self.rules)
