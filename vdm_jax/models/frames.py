"""Layers that tell frames and positions apart, for learning motion.

The factorized U-Net's spatial layers (1x3x3 convs, per-frame GroupNorm, spatial attention) treat
every frame alike, and temporal attention only knows relative frame offsets. These optional layers
(each a ``model.*`` flag, each an identity at initialisation because its last projection is zero)
give the network what text-driven motion needs: where a frame is in the clip, where a pixel is in
the frame, and local frame-to-frame structure.

* :class:`TemporalConv`: a (3, 1, 1) convolution over frames (Make-A-Video / ModelScope style),
  residual, zero-initialised; image frames of joint image-video batches see only themselves.
* :func:`frame_index_embedding`: sinusoidal embedding of the frame index (0 for image frames' slot
  is replaced by zeros by the caller's mask).
* :class:`PositionEmbedding`: zero-initialised projection of a sinusoidal embedding of the frame
  index and/or the 2-D pixel position, added to the feature map.
* :class:`ConditionalLayout`: a spatial map per frame, linear in that frame's conditioning vector
  (a BigGAN-style conditional projection to a grid), added to the prediction: the direct path from
  "caption x frame index" to "where things are in this frame".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vdm_jax.models.layers import TEMPORAL_AXES, Dense, GroupNorm, param, sinusoidal_embedding
from vdm_jax.sharding.logical import Rules, constrain


def frame_index_embedding(num_frames: int, dim: int) -> jax.Array:
    """(T, dim) sinusoidal features of the frame index 0..T-1."""
    return sinusoidal_embedding(jnp.arange(num_frames), dim, max_period=100.0)


def pixel_position_embedding(height: int, width: int, dim: int) -> jax.Array:
    """(H, W, dim) sinusoidal features of the pixel centre (y, x) in [0, 1] (half the dims each)."""
    half = dim // 2
    ys = sinusoidal_embedding(jnp.linspace(0.0, 1.0, height) * 8.0, half, max_period=64.0)
    xs = sinusoidal_embedding(jnp.linspace(0.0, 1.0, width) * 8.0, dim - half, max_period=64.0)
    return jnp.concatenate([jnp.broadcast_to(ys[:, None], (height, width, half)),
                            jnp.broadcast_to(xs[None, :], (height, width, dim - half))], axis=-1)


class PositionEmbedding(nnx.Module):
    """x + proj(embedding): frame index (per frame) and/or pixel position (per pixel).

    With ``zero_init`` the projections start at zero, so the layer is an identity at init;
    otherwise they start random (fan-in), so position is present from the first step. Image frames
    (``frame_mask`` False) get no frame-index term.
    """

    def __init__(self, channels: int, *, frames: bool, pixels: bool, dtype, rngs: nnx.Rngs,
                 zero_init: bool = True):
        init = nnx.initializers.zeros if zero_init else None  # None: Dense's fan-in default
        self.frame_proj = Dense(channels, channels, ("embed", "mlp"), dtype=dtype, rngs=rngs,
                                kernel_init=init, use_bias=False) if frames else None
        self.pixel_proj = Dense(channels, channels, ("embed", "mlp"), dtype=dtype, rngs=rngs,
                                kernel_init=init, use_bias=False) if pixels else None

    def __call__(self, x: jax.Array, frame_mask: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        if self.frame_proj is not None:
            emb = self.frame_proj(frame_index_embedding(t, c))  # (T, C)
            x = x + (emb[None] * frame_mask[..., None].astype(emb.dtype))[:, :, None, None, :].astype(x.dtype)
        if self.pixel_proj is not None:
            x = x + self.pixel_proj(pixel_position_embedding(h, w, c))[None, None].astype(x.dtype)
        return x


class TemporalConv(nnx.Module):
    """x + W * silu(GroupNorm(x)) with W a (3, 1, 1) conv over frames, zero-initialised.

    Each output frame mixes itself and its two neighbours at the same pixel. A neighbour
    contributes only when both frames are video frames (``frame_mask``), so image frames of joint
    image-video batches and clip ends see zero padding. Activations use the temporal layout (frames
    unsharded, height over ``context``), so the conv is exact under a ``data x context`` mesh.
    """

    def __init__(self, channels: int, *, dtype, rngs: nnx.Rngs, rules: Rules = ()):
        self.norm = GroupNorm(channels, dtype=dtype)
        self.kernel = param(rngs, nnx.initializers.zeros, (3, channels, channels),
                            (None, "conv_in", "conv_out"))
        self.bias = param(None, nnx.initializers.zeros, (channels,), ("conv_out",))
        self.dtype, self.rules = dtype, tuple(rules)

    def __call__(self, x: jax.Array, frame_mask: jax.Array) -> jax.Array:
        x = constrain(x, TEMPORAL_AXES, self.rules)
        y = jax.nn.silu(self.norm(x)).astype(self.dtype)
        video = frame_mask.astype(bool)
        prev_ok = jnp.pad(video[:, 1:] & video[:, :-1], ((0, 0), (1, 0)))  # frame t-1 usable at t
        next_ok = jnp.pad(video[:, :-1] & video[:, 1:], ((0, 0), (0, 1)))  # frame t+1 usable at t
        prev = jnp.pad(y[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0), (0, 0)))
        nxt = jnp.pad(y[:, 1:], ((0, 0), (0, 1), (0, 0), (0, 0), (0, 0)))
        prev = prev * prev_ok[:, :, None, None, None].astype(y.dtype)
        nxt = nxt * next_ok[:, :, None, None, None].astype(y.dtype)
        k = self.kernel[...].astype(self.dtype)
        out = (jnp.einsum("bthwc,cd->bthwd", prev, k[0]) + jnp.einsum("bthwc,cd->bthwd", y, k[1])
               + jnp.einsum("bthwc,cd->bthwd", nxt, k[2]) + self.bias[...].astype(self.dtype))
        return constrain(x + out.astype(x.dtype), TEMPORAL_AXES, self.rules)


class ConditionalLayout(nnx.Module):
    """x + Dense(silu(cond)) reshaped to a (grid, grid, C) map per frame (repeated up to H x W).

    At high noise the best prediction ignores the (almost pure noise) input: it is the mean clip
    given the caption, whose layout for a motion caption changes from frame to frame ("moves
    left": right at frame 0, left at the end). Through the U-Net that mean has to be built from
    FiLM vectors that scale whole channels and from position cues of the zero padding, which
    takes thousands of steps. Added to the prediction, this projection turns the per-frame
    conditioning vector (noise level + text + frame index with ``model.frame_conditioning``)
    into that layout in one linear step, a regression Adam solves quickly; the U-Net adds what the
    input reveals. Zero-initialised: an identity at initialisation.
    """

    def __init__(self, cond_dim: int, channels: int, grid: int, *, dtype, rngs: nnx.Rngs):
        self.grid = grid
        self.proj = Dense(cond_dim, grid * grid * channels, ("embed", "mlp"), dtype=dtype, rngs=rngs,
                          kernel_init=nnx.initializers.zeros)

    def __call__(self, x: jax.Array, cond: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        g = self.grid
        if h % g or w % g:
            raise ValueError(f"model.layout_grid={g} must divide the frame size {h}x{w}")
        m = self.proj(jax.nn.silu(cond)).reshape(b, t, g, g, c)
        m = jnp.repeat(jnp.repeat(m, h // g, axis=2), w // g, axis=3)
        return x + m.astype(x.dtype)
