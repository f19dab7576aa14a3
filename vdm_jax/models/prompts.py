"""Prompts -> the model's text inputs, for sampling, evaluation and the periodic training samples:
the one prompt encoder.

- ``model.text_encoder='transformer'``: the training tokenizer -> ``tokens``/``token_mask``.
- ``model.text_encoder='precomputed'``: the frozen T5 encoder of ``data.text_encoder_dir`` (the
  one the dataset's stored embeddings came from) -> ``text_embeddings``/``token_mask``. It is
  loaded once per process and directory, runs one jitted program, and caches each prompt.

A negative prompt (classifier-free guidance's unconditional branch) is encoded the same way.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from vdm_jax.config import Config, ConfigError, DType, TextEncoderKind
from vdm_jax.models import t5


@functools.lru_cache(maxsize=4)
def _frozen(directory: str, max_len: int, bf16: bool, mesh: Any, rules: tuple):
    dt = jnp.bfloat16 if bf16 else jnp.float32
    return t5.FrozenTextEncoder(directory, max_len, batch_size=1, dtype=dt, param_dtype=dt, mesh=mesh,
                                rules=rules)


def frozen_encoder(config: Config, mesh: Any = None):
    """The process-wide frozen encoder of ``data.text_encoder_dir`` (float32 unless the model
    computes in bfloat16). With ``mesh`` its weights are sharded by ``mesh.rules`` like the model's
    (``embed``/``mlp``/``heads``), so an XXL encoder fits next to the model on a pod."""
    if not config.data.text_encoder_dir:
        raise ConfigError("data.text_encoder_dir", "must name the frozen T5 directory when "
                                                   "model.text_encoder='precomputed'")
    directory = os.path.abspath(os.path.expanduser(config.data.text_encoder_dir))
    try:
        rules = config.mesh.rules if mesh is not None else ()
        enc = _frozen(directory, config.model.max_text_len, config.model.dtype == DType.BFLOAT16, mesh, rules)
    except t5.T5LoadError as e:
        raise ConfigError("data.text_encoder_dir", str(e)) from None
    if enc.d_model != config.model.precomputed_text_dim:
        raise ConfigError("model.precomputed_text_dim",
                          f"is {config.model.precomputed_text_dim} but the text encoder {directory} "
                          f"has d_model={enc.d_model}")
    return enc


def encode_prompts(config: Config, tokenizer: Any, prompts: list[str], mesh: Any = None
                   ) -> dict[str, np.ndarray]:
    """The model's text inputs for ``prompts`` (see the module docstring)."""
    if config.model.text_encoder == TextEncoderKind.PRECOMPUTED:
        emb, mask = frozen_encoder(config, mesh)(list(prompts))
        return {"text_embeddings": emb, "token_mask": mask}
    max_len = config.model.max_text_len
    toks, masks = zip(*(tokenizer.encode(p, max_len) for p in prompts))
    return {"tokens": np.stack(toks).astype(np.int32), "token_mask": np.stack(masks).astype(bool)}
