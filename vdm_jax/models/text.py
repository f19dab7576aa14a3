"""Text conditioning: a small transformer over token ids (or precomputed embeddings), the
learned null embedding used for classifier-free guidance, and attention pooling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vdm_jax.config import ModelConfig, TextEncoderKind
from vdm_jax.models.frames import frame_index_embedding
from vdm_jax.models.layers import MLP, Dense, LayerNorm, param


class TransformerLayer(nnx.Module):
    """Pre-LN transformer layer with a key padding mask."""

    def __init__(self, dim: int, heads: int, *, dtype, rngs: nnx.Rngs):
        self.ln1, self.ln2 = LayerNorm(dim, dtype=dtype), LayerNorm(dim, dtype=dtype)
        qkv = [Dense(dim, dim, ("embed", "heads"), dtype=dtype, rngs=rngs) for _ in range(3)]
        self.q, self.k, self.v = qkv
        self.o = Dense(dim, dim, ("heads", "embed"), dtype=dtype, rngs=rngs)
        self.mlp = MLP(dim, 4 * dim, dtype=dtype, rngs=rngs)
        self.heads = heads

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        b, n, d = x.shape
        y = self.ln1(x)
        q, k, v = (f(y).reshape(b, n, self.heads, d // self.heads) for f in (self.q, self.k, self.v))
        att = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], implementation="xla")
        x = x + self.o(att.reshape(b, n, d))
        return x + self.mlp(self.ln2(x))


class TextEncoder(nnx.Module):
    """Token ids (B, L) + mask -> features (B, L, text_dim), or projects precomputed embeddings."""

    def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
        self.kind, self.dtype, self.max_len = cfg.text_encoder, dtype, cfg.max_text_len
        d = cfg.text_dim
        if self.kind == TextEncoderKind.PRECOMPUTED:
            self.proj = Dense(cfg.precomputed_text_dim, d, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        else:
            self.embed = param(rngs, nnx.initializers.normal(0.02), (cfg.vocab_size, d), ("vocab", "embed"))
            self.pos = param(rngs, nnx.initializers.normal(0.02), (cfg.max_text_len, d), (None, "embed"))
            self.layers = nnx.List([TransformerLayer(d, cfg.text_heads, dtype=dtype, rngs=rngs)
                                    for _ in range(cfg.text_layers)])
        self.ln = LayerNorm(d, dtype=dtype)

    def __call__(self, tokens: jax.Array | None, mask: jax.Array,
                 embeddings: jax.Array | None = None) -> jax.Array:
        if self.kind == TextEncoderKind.PRECOMPUTED:
            if embeddings is None:
                raise ValueError("model.text_encoder='precomputed' needs `text_embeddings` (B, L, D)")
            return self.ln(self.proj(embeddings))
        if tokens is None:
            raise ValueError("model.text_encoder='transformer' needs `tokens` (B, L)")
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"tokens have length {length} > model.max_text_len={self.max_len}")
        x = (self.embed[...][tokens] + self.pos[...][:length]).astype(self.dtype)
        for layer in self.layers:
            x = layer(x, mask)
        return self.ln(x)


class AttentionPool(nnx.Module):
    """A learned query attends over the (masked) token features -> one vector (B, text_dim).

    With ``queries`` (B, Q, text_dim) added to the learned query, it returns (B, Q, text_dim): one
    pooled vector per query (e.g. per frame, so that each frame can weigh the words differently).
    """

    def __init__(self, dim: int, heads: int, *, dtype, rngs: nnx.Rngs):
        self.query = param(rngs, nnx.initializers.normal(0.02), (1, dim), (None, "embed"))
        self.k = Dense(dim, dim, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.v = Dense(dim, dim, ("embed", "heads"), dtype=dtype, rngs=rngs)
        self.o = Dense(dim, dim, ("heads", "embed"), dtype=dtype, rngs=rngs)
        self.heads, self.dtype = heads, dtype

    def __call__(self, x: jax.Array, mask: jax.Array, queries: jax.Array | None = None) -> jax.Array:
        b, n, d = x.shape
        q = jnp.broadcast_to(self.query[...].astype(self.dtype), (b, 1, d))
        if queries is not None:
            q = q + queries.astype(self.dtype)
        nq = q.shape[1]
        q = q.reshape(b, nq, self.heads, -1)
        k, v = (f(x).reshape(b, n, self.heads, -1) for f in (self.k, self.v))
        att = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], implementation="xla")
        out = self.o(att.reshape(b, nq, d))
        return out if queries is not None else out[:, 0]


class TextConditioning(nnx.Module):
    """Encodes the text, swaps in the learned null text where ``drop_text``, pools it.

    Returns (token features (B, L, text_dim), their mask (B, L), pooled vector (B, text_dim)).
    A dropped (or absent) text becomes the null embedding at position 0 with every other position
    masked out, so the output does not depend on the tokens at all.
    """

    def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
        self.encoder = TextEncoder(cfg, dtype=dtype, rngs=rngs)
        self.null = param(rngs, nnx.initializers.normal(0.02), (1, cfg.text_dim), (None, "embed"))
        self.pool = AttentionPool(cfg.text_dim, cfg.text_heads, dtype=dtype, rngs=rngs)
        # Per-frame pooling: a frame-index term added to the pooling query (fan-in init), so each
        # frame weighs the words differently from the first step on.
        self.frame_query = Dense(cfg.text_dim, cfg.text_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs,
                                 use_bias=False) if cfg.frame_text_pooling else None
        # Bag of words: the mean of a second, directly learned embedding of the token ids, added to
        # the pooled vector. Each word keeps its own O(1) vector, however the encoder's features
        # evolve, so rare-but-decisive words (e.g. motion directions) stay distinguishable.
        use_bow = cfg.text_bag_of_words and cfg.text_encoder == TextEncoderKind.TRANSFORMER
        self.bow = param(rngs, nnx.initializers.normal(1.0), (cfg.vocab_size, cfg.text_dim),
                         ("vocab", "embed")) if use_bow else None
        self.text_dim, self.dtype, self.max_len = cfg.text_dim, dtype, cfg.max_text_len

    def _bag_of_words(self, tokens, mask, drop):
        w = (mask & ~drop[:, None]).astype(jnp.float32)
        bow = jnp.einsum("bl,bld->bd", w, self.bow[...][tokens]) / jnp.maximum(w.sum(1, keepdims=True), 1.0)
        return bow.astype(self.dtype)

    def __call__(self, batch: int, tokens, token_mask, embeddings, drop_text, frame_mask=None):
        """Returns (features, mask, pooled); pooled is (B, T, text_dim) per frame with
        ``model.frame_text_pooling`` (``frame_mask`` (B, T) gives T; image frames pool without the
        frame term), else (B, text_dim)."""
        if tokens is None and embeddings is None:  # no text at all: the null text everywhere
            length = 1
            feats = jnp.zeros((batch, 1, self.text_dim), self.dtype)
            mask = jnp.ones((batch, 1), bool)
            drop = jnp.ones((batch,), bool)
        else:
            length = (tokens if tokens is not None else embeddings).shape[1]
            mask = token_mask.astype(bool) if token_mask is not None else (
                tokens > 0 if tokens is not None else jnp.ones((batch, length), bool))
            feats = self.encoder(tokens, mask, embeddings)
            drop = jnp.zeros((batch,), bool) if drop_text is None else drop_text.astype(bool)
        first = jnp.arange(length) == 0
        null = jnp.broadcast_to(self.null[...].astype(feats.dtype), feats.shape)
        feats = jnp.where(drop[:, None, None], null, feats)
        mask = jnp.where(drop[:, None], first[None, :], mask)
        mask = mask | ~mask.any(axis=1, keepdims=True) & first[None, :]  # never an all-masked row
        bow = None
        if self.bow is not None and tokens is not None:
            word_mask = token_mask.astype(bool) if token_mask is not None else tokens > 0
            bow = self._bag_of_words(tokens, word_mask, drop)
        if self.frame_query is None or frame_mask is None:
            pooled = self.pool(feats, mask)
            return feats, mask, pooled if bow is None else pooled + bow
        t = frame_mask.shape[1]
        frames = self.frame_query(frame_index_embedding(t, self.text_dim))
        queries = frames[None] * frame_mask[..., None].astype(frames.dtype)  # (B, T, text_dim)
        pooled = self.pool(feats, mask, queries)
        return feats, mask, pooled if bow is None else pooled + bow[:, None]
