"""The data side of training: prepared dataset, tokenizer, train/eval iterators, global batches."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from data_pipelines import pipeline, sources, text_embeddings
from data_pipelines.stage_inputs import low_res_input
from vdm_jax.config import Config, ConfigError, TextEncoderKind, TokenizerKind


@dataclasses.dataclass
class TrainData:
    config: Config
    dataset_dir: str | None
    tokenizer: Any

    @classmethod
    def create(cls, config: Config) -> TrainData:
        path = sources.ensure_prepared(config.data, progress=jax.process_index() == 0)
        tokenizer = pipeline.tokenizer_for(config.data)
        if tokenizer.vocab_size > config.model.vocab_size:
            raise ConfigError("model.vocab_size", f"{config.model.vocab_size} is smaller than the "
                                                  f"tokenizer's vocabulary ({tokenizer.vocab_size})")
        check_text_embeddings(config)
        return cls(config, path, tokenizer)

    def train_iterator(self):
        c = self.config
        return pipeline.make_train_iterator(c.data, global_batch_size=c.training.global_batch_size,
                                            seed=c.data.shuffle_seed, tokenizer=self.tokenizer,
                                            max_text_len=c.model.max_text_len, low_res=self.low_res)

    def eval_batches(self, num_batches: int) -> Iterator[dict[str, np.ndarray]]:
        c = self.config
        if num_batches <= 0:
            return iter(())
        return pipeline.make_eval_iterator(c.data, global_batch_size=c.training.global_batch_size,
                                           tokenizer=self.tokenizer, max_text_len=c.model.max_text_len,
                                           num_batches=num_batches, low_res=self.low_res)

    @property
    def low_res(self):
        """A cascade stage's conditioning-input batch map (None for a base model)."""
        return low_res_input(self.config.model.conditioning, self.config.model.conditioning_factor)

    def eval_captions(self, num: int) -> list[str]:
        """The first ``num`` captions of the eval split (fixed prompts for the periodic samples)."""
        return [r["caption"] for r in pipeline.eval_records(self.config.data, num)]

    def tokenizer_spec(self) -> dict[str, Any]:
        """Enough to rebuild the tokenizer from a checkpoint alone (sentencepiece: the model bytes)."""
        kind = self.config.data.tokenizer
        spec: dict[str, Any] = {"kind": kind.value, "vocab_size": int(self.tokenizer.vocab_size),
                                "max_text_len": self.config.model.max_text_len}
        if kind == TokenizerKind.SENTENCEPIECE:
            path = sources.ensure_sentencepiece(self.dataset_dir, self.config.data.sentencepiece_vocab_size)
            with open(path, "rb") as f:
                spec["model_b64"] = base64.b64encode(f.read()).decode()
        if self.config.model.text_encoder == TextEncoderKind.PRECOMPUTED:
            identity = text_embeddings.encoder_identity(self.config.data.text_encoder_dir)
            spec["text_encoder"] = {k: identity[k] for k in ("path", "config_sha256", "fingerprint")}
        return spec


def check_text_embeddings(config: Config) -> None:
    """``model.text_encoder='precomputed'`` trains on the embeddings stored for
    ``data.text_encoder_dir``: the dataset must have them (complete, for the train and eval
    splits), of width ``model.precomputed_text_dim`` and at most ``model.max_text_len`` tokens.
    Any mismatch is a one-line ``ConfigError``."""
    m, d = config.model, config.data
    if m.text_encoder != TextEncoderKind.PRECOMPUTED:
        if d.text_encoder_dir:
            raise ConfigError("data.text_encoder_dir", "is only used with model.text_encoder='precomputed' "
                                                       f"(it is {m.text_encoder.value!r})")
        return
    if not d.text_encoder_dir:
        raise ConfigError("data.text_encoder_dir", "must name the frozen T5 directory whose stored "
                                                   "embeddings model.text_encoder='precomputed' trains on")
    try:
        _, meta = pipeline.embedding_store(d, tuple(dict.fromkeys((d.train_split, d.eval_split))))
    except text_embeddings.TextEmbeddingsError as e:
        raise ConfigError("data.text_encoder_dir", str(e)) from None
    if meta["d_model"] != m.precomputed_text_dim:
        raise ConfigError("model.precomputed_text_dim", f"is {m.precomputed_text_dim} but the stored "
                                                        f"embeddings have width {meta['d_model']}")
    if meta["max_len"] > m.max_text_len:
        raise ConfigError("model.max_text_len", f"is {m.max_text_len} but the embeddings were stored with up "
                                                f"to {meta['max_len']} tokens")
