"""Frozen T5 v1.1 / umT5 text encoders in Flax NNX, loaded from a local Hugging Face directory.

The encoder matches ``transformers``' ``T5EncoderModel`` / ``UMT5EncoderModel``: token
embedding, ``num_layers`` pre-norm blocks (RMSNorm -> self-attention with a bucketed
relative-position bias and no 1/sqrt(d) scaling -> residual; RMSNorm -> gated-GELU (tanh) or ReLU
feed-forward -> residual), a final RMSNorm; no biases anywhere. T5 v1.1 learns one
relative-position bias in block 0 and reuses it in every block; umT5 learns one per block.

A model directory holds ``config.json``, ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``) and ``spiece.model``; nothing is downloaded. Parameters are
stored in ``param_dtype`` (float32, or bfloat16 to halve the memory of an XXL encoder) and carry
logical axis names (``vocab``/``embed``/``heads``/``kv``/``mlp``/``rel_pos``/``norm``) so the
sharding rules place them like the U-Net's (:func:`load_t5` with a mesh puts each array directly
on its devices). Compute runs in ``dtype``; RMSNorm statistics and the softmax are float32.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from safetensors import safe_open

from vdm_jax.sharding.logical import state_shardings

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SPIECE_FILE = "spiece.model"
PAD_ID = 0


class T5LoadError(ValueError):
    """A T5 directory is incomplete or does not match its config (message names the file)."""


@dataclasses.dataclass(frozen=True)
class T5Config:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "gated-gelu"  # gated-gelu (T5 v1.1, umT5) | relu (T5 v1.0) | gated-silu ...
    per_layer_position_bias: bool = False  # umT5: a relative-position bias in every block
    eos_token_id: int = 1

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        act = self.feed_forward_proj.split("-")[-1]
        return "gelu_tanh" if self.feed_forward_proj == "gated-gelu" else act

    @classmethod
    def from_hf(cls, d: dict, path: str = CONFIG_FILE) -> T5Config:
        required = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
        missing = [k for k in required if k not in d]
        if missing:
            raise T5LoadError(f"{path}: missing keys {missing}")
        proj = d.get("feed_forward_proj", "relu")
        if proj.split("-")[-1] not in ("gelu", "relu", "silu") or proj.count("-") > 1:
            raise T5LoadError(f"{path}: unsupported feed_forward_proj {proj!r}")
        return cls(vocab_size=int(d["vocab_size"]), d_model=int(d["d_model"]), d_kv=int(d["d_kv"]),
                   d_ff=int(d["d_ff"]), num_layers=int(d["num_layers"]), num_heads=int(d["num_heads"]),
                   relative_attention_num_buckets=int(d.get("relative_attention_num_buckets", 32)),
                   relative_attention_max_distance=int(d.get("relative_attention_max_distance", 128)),
                   layer_norm_epsilon=float(d.get("layer_norm_epsilon", 1e-6)), feed_forward_proj=proj,
                   per_layer_position_bias=d.get("model_type") == "umt5",
                   eos_token_id=int(d.get("eos_token_id", 1)))


def _param(shape: Sequence[int], names: Sequence[str | None], dtype, init=None, key=None) -> nnx.Param:
    if init is None:
        value = jnp.zeros(tuple(shape), dtype)
    else:
        value = init(key, tuple(shape), dtype)
    return nnx.Param(value, out_sharding=tuple(names))


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, *, param_dtype, dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), out_sharding=("norm",))
        self.eps, self.dtype = eps, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        xf = x.astype(jnp.float32)
        y = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + self.eps)
        return (y * self.weight[...].astype(jnp.float32)).astype(self.dtype)


def relative_position_bucket(relative_position: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
    """Bidirectional T5 bucket of ``key_pos - query_pos``: half the buckets for each sign, exact
    below ``num_buckets // 4``, logarithmic up to ``max_distance``."""
    num_buckets //= 2
    buckets = (relative_position > 0).astype(jnp.int32) * num_buckets
    n = jnp.abs(relative_position)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact)
                         / math.log(max_distance / max_exact) * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(is_small, n, large)


class T5Attention(nnx.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, *, param_dtype, dtype, rngs: nnx.Rngs | None):
        d, h, k = cfg.d_model, cfg.num_heads, cfg.d_kv
        init = nnx.initializers.normal(d ** -0.5) if rngs is not None else None
        key = (lambda: rngs.params()) if rngs is not None else (lambda: None)
        self.q = _param((d, h, k), ("embed", "heads", "kv"), param_dtype, init, key())
        self.k = _param((d, h, k), ("embed", "heads", "kv"), param_dtype, init, key())
        self.v = _param((d, h, k), ("embed", "heads", "kv"), param_dtype, init, key())
        self.o = _param((h, k, d), ("heads", "kv", "embed"), param_dtype, init, key())
        self.rel_bias = (_param((cfg.relative_attention_num_buckets, h), ("rel_pos", "heads"), param_dtype,
                                nnx.initializers.normal(1.0) if rngs is not None else None, key())
                         if has_bias else None)
        self.cfg, self.dtype = cfg, dtype

    def position_bias(self, length: int) -> jax.Array:
        """(heads, L, L) float32 bias from this layer's table."""
        pos = jnp.arange(length)
        c = self.cfg
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], c.relative_attention_num_buckets,
                                           c.relative_attention_max_distance)
        return jnp.transpose(self.rel_bias[...].astype(jnp.float32)[buckets], (2, 0, 1))

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        dt = self.dtype
        q, k, v = (jnp.einsum("bld,dhk->blhk", x, w[...].astype(dt)) for w in (self.q, self.k, self.v))
        scores = jnp.einsum("bqhk,bshk->bhqs", q, k, preferred_element_type=jnp.float32) + bias
        probs = jax.nn.softmax(scores, axis=-1).astype(dt)
        att = jnp.einsum("bhqs,bshk->bqhk", probs, v)
        return jnp.einsum("bqhk,hkd->bqd", att, self.o[...].astype(dt))


class T5FeedForward(nnx.Module):
    def __init__(self, cfg: T5Config, *, param_dtype, dtype, rngs: nnx.Rngs | None):
        init_in = nnx.initializers.normal(cfg.d_model ** -0.5) if rngs is not None else None
        init_out = nnx.initializers.normal(cfg.d_ff ** -0.5) if rngs is not None else None
        key = (lambda: rngs.params()) if rngs is not None else (lambda: None)
        self.wi_0 = _param((cfg.d_model, cfg.d_ff), ("embed", "mlp"), param_dtype, init_in, key())
        self.wi_1 = (_param((cfg.d_model, cfg.d_ff), ("embed", "mlp"), param_dtype, init_in, key())
                     if cfg.gated else None)
        self.wo = _param((cfg.d_ff, cfg.d_model), ("mlp", "embed"), param_dtype, init_out, key())
        self.act, self.dtype = cfg.activation, dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        h = x @ self.wi_0[...].astype(dt)
        if self.act == "gelu_tanh":
            h = jax.nn.gelu(h, approximate=True)
        elif self.act == "gelu":
            h = jax.nn.gelu(h, approximate=False)
        elif self.act == "silu":
            h = jax.nn.silu(h)
        else:
            h = jax.nn.relu(h)
        if self.wi_1 is not None:
            h = h * (x @ self.wi_1[...].astype(dt))
        return h @ self.wo[...].astype(dt)


class T5Block(nnx.Module):
    def __init__(self, cfg: T5Config, has_bias: bool, *, param_dtype, dtype, rngs: nnx.Rngs | None):
        kw = dict(param_dtype=param_dtype, dtype=dtype)
        self.attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, **kw)
        self.attn = T5Attention(cfg, has_bias, rngs=rngs, **kw)
        self.ff_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, **kw)
        self.ff = T5FeedForward(cfg, rngs=rngs, **kw)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        x = x + self.attn(self.attn_norm(x), bias)
        return x + self.ff(self.ff_norm(x))


class T5Encoder(nnx.Module):
    """Token ids (B, L) + mask (B, L) -> last hidden states (B, L, d_model) in ``dtype``.

    ``rngs=None`` builds zero/one-filled parameters (to be overwritten by :func:`load_t5`).
    """

    def __init__(self, cfg: T5Config, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        with nnx.use_eager_sharding(False):  # logical names; placement comes from load_t5 / the caller
            self._build(cfg, dtype, param_dtype, rngs)

    def _build(self, cfg: T5Config, dtype, param_dtype, rngs: nnx.Rngs | None) -> None:
        self.cfg, self.dtype = cfg, dtype
        init = nnx.initializers.normal(1.0) if rngs is not None else None
        self.embed = _param((cfg.vocab_size, cfg.d_model), ("vocab", "embed"), param_dtype, init,
                            rngs.params() if rngs is not None else None)
        self.blocks = nnx.List([T5Block(cfg, cfg.per_layer_position_bias or i == 0, param_dtype=param_dtype,
                                        dtype=dtype, rngs=rngs) for i in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, param_dtype=param_dtype, dtype=dtype)

    def __call__(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
        length = tokens.shape[1]
        x = self.embed[...][tokens].astype(self.dtype)
        key_mask = jnp.where(mask.astype(bool), 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
        shared = None
        for block in self.blocks:
            if block.attn.rel_bias is not None:
                shared = block.attn.position_bias(length)[None]
            x = block(x, shared + key_mask)
        return self.final_norm(x)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class T5Tokenizer:
    """``spiece.model`` pieces + EOS, truncated to ``max_len`` (EOS kept), padded with 0."""

    def __init__(self, path: str, eos_id: int = 1):
        if not os.path.isfile(path):
            raise T5LoadError(f"{path}: sentencepiece model not found")
        with open(path, "rb") as f:
            self._model_bytes = f.read()
        self._sp = spm.SentencePieceProcessor(model_proto=self._model_bytes)
        self.vocab_size = int(self._sp.get_piece_size())
        self.eos_id = eos_id

    def __reduce__(self):
        return (_tokenizer_from_bytes, (self._model_bytes, self.eos_id))

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        ids = list(self._sp.encode(str(text)))[: max_len - 1] + [self.eos_id]
        tokens = np.full(max_len, PAD_ID, np.int32)
        tokens[: len(ids)] = ids
        mask = np.zeros(max_len, bool)
        mask[: len(ids)] = True
        return tokens, mask

    def encode_batch(self, texts: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        toks, masks = zip(*(self.encode(t, max_len) for t in texts)) if texts else ((), ())
        return (np.stack(toks) if toks else np.zeros((0, max_len), np.int32),
                np.stack(masks) if masks else np.zeros((0, max_len), bool))


def _tokenizer_from_bytes(model: bytes, eos_id: int) -> T5Tokenizer:
    tok = T5Tokenizer.__new__(T5Tokenizer)
    tok._model_bytes, tok.eos_id = model, eos_id
    tok._sp = spm.SentencePieceProcessor(model_proto=model)
    tok.vocab_size = int(tok._sp.get_piece_size())
    return tok


# --------------------------------------------------------------------------------------------
# Loading a Hugging Face directory
# --------------------------------------------------------------------------------------------


def read_config(directory: str) -> T5Config:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isdir(directory):
        raise T5LoadError(f"{directory}: T5 directory not found")
    if not os.path.isfile(path):
        raise T5LoadError(f"{path}: not found (a Hugging Face T5 directory needs config.json)")
    try:
        with open(path) as f:
            return T5Config.from_hf(json.load(f), path)
    except json.JSONDecodeError as e:
        raise T5LoadError(f"{path}: not valid JSON ({e})") from None


def weight_files(directory: str) -> dict[str, str]:
    """Tensor name -> the safetensors file holding it (single file or sharded index)."""
    single, index = os.path.join(directory, WEIGHTS_FILE), os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not isinstance(weight_map, dict):
            raise T5LoadError(f"{index}: has no weight_map")
        out = {}
        for name, fname in weight_map.items():
            path = os.path.join(directory, fname)
            if not os.path.isfile(path):
                raise T5LoadError(f"{path}: listed in {INDEX_FILE} but not found")
            out[name] = path
        return out
    if os.path.isfile(single):
        with safe_open(single, framework="numpy") as f:
            return {name: single for name in f.keys()}
    raise T5LoadError(f"{single}: not found (nor {INDEX_FILE})")


def _hf_names(cfg: T5Config) -> dict[tuple, tuple[str, str]]:
    """Our parameter path -> (HF tensor name, layout) with layout 'copy', 'linear_in', 'linear_out' or
    'linear'."""
    names: dict[tuple, tuple[str, str]] = {("embed",): ("encoder.embed_tokens.weight", "copy")}
    for i in range(cfg.num_layers):
        pre = f"encoder.block.{i}.layer"
        b = ("blocks", i)
        names[b + ("attn_norm", "weight")] = (f"{pre}.0.layer_norm.weight", "copy")
        for w in ("q", "k", "v"):
            names[b + ("attn", w)] = (f"{pre}.0.SelfAttention.{w}.weight", "linear_in")
        names[b + ("attn", "o")] = (f"{pre}.0.SelfAttention.o.weight", "linear_out")
        if cfg.per_layer_position_bias or i == 0:
            rel = f"{pre}.0.SelfAttention.relative_attention_bias.weight"
            names[b + ("attn", "rel_bias")] = (rel, "copy")
        names[b + ("ff_norm", "weight")] = (f"{pre}.1.layer_norm.weight", "copy")
        if cfg.gated:
            names[b + ("ff", "wi_0")] = (f"{pre}.1.DenseReluDense.wi_0.weight", "linear")
            names[b + ("ff", "wi_1")] = (f"{pre}.1.DenseReluDense.wi_1.weight", "linear")
        else:
            names[b + ("ff", "wi_0")] = (f"{pre}.1.DenseReluDense.wi.weight", "linear")
        names[b + ("ff", "wo")] = (f"{pre}.1.DenseReluDense.wo.weight", "linear")
    names[("final_norm", "weight")] = ("encoder.final_layer_norm.weight", "copy")
    return names


def _convert(arr: np.ndarray, layout: str, cfg: T5Config) -> np.ndarray:
    """HF torch layouts (Linear weight = (out, in)) -> ours."""
    h, k, d = cfg.num_heads, cfg.d_kv, cfg.d_model
    if layout == "linear_in":  # (h*k, d) -> (d, h, k)
        return arr.T.reshape(d, h, k) if arr.shape == (h * k, d) else arr
    if layout == "linear_out":  # (d, h*k) -> (h, k, d)
        return arr.T.reshape(h, k, d) if arr.shape == (d, h * k) else arr
    if layout == "linear":
        return arr.T
    return arr


def _load_tensor(files: dict[str, str], name: str, directory: str) -> np.ndarray:
    if name not in files:
        if name == "encoder.embed_tokens.weight" and "shared.weight" in files:
            name = "shared.weight"  # tied embedding stored once
        else:
            raise T5LoadError(f"{directory}: tensor {name!r} not found in the safetensors weights")
    with safe_open(files[name], framework="numpy") as f:
        return f.get_tensor(name)


def _abstract_encoder(cfg, dtype, param_dtype):
    """(graphdef, state of ShapeDtypeStructs) of the encoder; nothing is allocated.

    jax.eval_shape, not nnx.eval_shape: under an active mesh (e.g. inside the training loop) the
    latter would apply the parameters' logical names as mesh axes.
    """
    box = {}

    def abstract():
        graphdef, state = nnx.split(T5Encoder(cfg, dtype=dtype, param_dtype=param_dtype))
        box["graphdef"] = graphdef
        return state

    state = jax.eval_shape(abstract)
    return box["graphdef"], state


def load_t5(directory: str, *, dtype=jnp.float32, param_dtype=jnp.float32, mesh=None,
            rules: Sequence[tuple[str, Any]] = ()) -> T5Encoder:
    """The encoder with the weights of the Hugging Face directory ``directory``.

    With ``mesh`` (and ``rules``, logical name -> mesh axis) every parameter is placed directly
    with its ``NamedSharding``, one host array at a time. A missing file, a missing tensor or a
    tensor whose shape does not match ``config.json`` raises :class:`T5LoadError` naming it.
    """
    directory = os.path.abspath(os.path.expanduser(directory))
    cfg = read_config(directory)
    files = weight_files(directory)
    graphdef, state = _abstract_encoder(cfg, dtype, param_dtype)
    flat = dict(nnx.to_flat_state(state))
    names = _hf_names(cfg)
    shardings = None
    if mesh is not None:
        shardings = dict(nnx.to_flat_state(state_shardings(state, mesh, rules)))
    values = {}
    for path, var in flat.items():
        key = path[:-1] if path[-1] in ("value", "raw_value") else path
        if key not in names:
            raise T5LoadError(f"{directory}: internal error, no HF name for parameter {key}")
        hf_name, layout = names[key]
        arr = _convert(_load_tensor(files, hf_name, directory), layout, cfg)
        shape = tuple(var.get_value().shape) if isinstance(var, nnx.Variable) else tuple(var.shape)
        if tuple(arr.shape) != shape:
            raise T5LoadError(f"{files.get(hf_name, directory)}: tensor {hf_name!r} has shape "
                              f"{tuple(arr.shape)}, config.json implies {shape}")
        arr = np.asarray(arr).astype(np.dtype(param_dtype))
        if shardings is not None:
            sh = shardings[path]
            sh = sh.get_value() if isinstance(sh, nnx.Variable) else sh
            values[path] = jax.device_put(arr, sh)
        else:
            values[path] = jnp.asarray(arr)
    state = nnx.from_flat_state({p: (v.replace(values[p]) if isinstance(v, nnx.Variable) else values[p])
                                 for p, v in flat.items()})
    return nnx.merge(graphdef, state)


def load_tokenizer(directory: str) -> T5Tokenizer:
    cfg = read_config(directory)
    return T5Tokenizer(os.path.join(directory, SPIECE_FILE), eos_id=cfg.eos_token_id)


def check_directory(directory: str) -> T5Config:
    """Every file the encoder needs is there (cheap: reads config, the index/headers)."""
    cfg = read_config(directory)
    weight_files(directory)
    spiece = os.path.join(directory, SPIECE_FILE)
    if not os.path.isfile(spiece):
        raise T5LoadError(f"{spiece}: not found (the T5 sentencepiece model)")
    return cfg


# --------------------------------------------------------------------------------------------
# Frozen prompt encoder: loaded once, jitted, cached per prompt
# --------------------------------------------------------------------------------------------


class FrozenTextEncoder:
    """Text -> (embeddings (B, max_len, d_model) float32 numpy, mask (B, max_len) bool).

    The weights are loaded once; one jitted forward of shape (``batch_size``, ``max_len``) runs
    every batch (a short last batch is padded with empty prompts); results are cached per prompt
    (LRU, ``cache_size`` prompts; 0 disables the cache). Positions past the mask are zero.
    """

    def __init__(self, directory: str, max_len: int, *, batch_size: int = 1, dtype=jnp.float32,
                 param_dtype=jnp.float32, cache_size: int = 1024, mesh=None, rules=()):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self.cfg = check_directory(self.directory)
        self.tokenizer = load_tokenizer(self.directory)
        self.model = load_t5(self.directory, dtype=dtype, param_dtype=param_dtype, mesh=mesh, rules=rules)
        self.max_len, self.batch_size, self.cache_size = int(max_len), int(batch_size), int(cache_size)
        self.d_model = self.cfg.d_model
        graphdef, state = nnx.split(self.model)
        self._forward = jax.jit(lambda s, t, m: nnx.merge(graphdef, s)(t, m).astype(jnp.float32))
        self._state = state
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()

    def _run(self, texts: list[str]) -> list[np.ndarray]:
        out = []
        for i in range(0, len(texts), self.batch_size):
            part = texts[i:i + self.batch_size]
            padded = part + [""] * (self.batch_size - len(part))
            tokens, mask = self.tokenizer.encode_batch(padded, self.max_len)
            emb = self._forward(self._state, jnp.asarray(tokens), jnp.asarray(mask))
            emb = np.asarray(jax.device_get(emb))
            out.extend(emb[j, : int(mask[j].sum())].copy() for j in range(len(part)))
        return out

    def encode_valid(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Per text its (n, d_model) float32 embedding (n valid tokens, EOS included)."""
        texts = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t) for t in texts]
        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh = dict(zip(todo, self._run(todo))) if todo else {}
        out = []
        for t in texts:
            if t in fresh:
                out.append(fresh[t])
                if self.cache_size > 0:
                    self._cache[t] = fresh[t]
            else:
                self._cache.move_to_end(t)
                out.append(self._cache[t])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return out

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        valid = self.encode_valid(texts)
        emb = np.zeros((len(valid), self.max_len, self.d_model), np.float32)
        mask = np.zeros((len(valid), self.max_len), bool)
        for j, e in enumerate(valid):
            emb[j, : e.shape[0]] = e
            mask[j, : e.shape[0]] = True
        return emb, mask


# Published encoder shapes (config.json values), for planning without the weights.
PRESETS = {
    "t5-v1_1-xxl": T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64),
    "t5-v1_1-xl": T5Config(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32),
    "umt5-xxl": T5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                         per_layer_position_bias=True),
}


def config_from(name_or_dir: str) -> T5Config:
    """A preset name (:data:`PRESETS`) or a Hugging Face directory's config.json."""
    if name_or_dir in PRESETS:
        return PRESETS[name_or_dir]
    return read_config(name_or_dir)


def param_count(cfg: T5Config) -> int:
    inner = cfg.num_heads * cfg.d_kv
    tables = cfg.num_layers if cfg.per_layer_position_bias else 1
    per_layer = 4 * cfg.d_model * inner + (3 if cfg.gated else 2) * cfg.d_model * cfg.d_ff + 2 * cfg.d_model
    return (cfg.vocab_size * cfg.d_model + tables * cfg.relative_attention_num_buckets * cfg.num_heads
            + cfg.num_layers * per_layer + cfg.d_model)


def forward_flops(cfg: T5Config, batch: int, length: int) -> float:
    """Matmul FLOPs of one encoder forward over ``batch`` x ``length`` tokens (padding included)."""
    inner = cfg.num_heads * cfg.d_kv
    per_token = 2 * (4 * cfg.d_model * inner + (3 if cfg.gated else 2) * cfg.d_model * cfg.d_ff)
    attention = 2 * 2 * length * inner  # scores and the weighted sum, per token
    return float(batch * length * cfg.num_layers * (per_token + attention))


def lower_sharded(cfg: T5Config, mesh, rules, batch: int, length: int, *, dtype=jnp.bfloat16,
                  param_dtype=jnp.bfloat16):
    """The encoder forward lowered for ``mesh`` with abstract, sharded parameters (nothing is
    allocated): ``.compile().memory_analysis()`` says what one device needs."""
    graphdef, state = _abstract_encoder(cfg, dtype, param_dtype)
    shardings = state_shardings(state, mesh, rules)
    batch_sh = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    fn = jax.jit(lambda s, t, m: nnx.merge(graphdef, s)(t, m), in_shardings=(shardings, batch_sh, batch_sh))
    abstract_state = jax.tree.map(lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
                                  state, shardings)
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32, sharding=batch_sh)
    mask = jax.ShapeDtypeStruct((batch, length), jnp.bool_, sharding=batch_sh)
    return fn.lower(abstract_state, tokens, mask)
