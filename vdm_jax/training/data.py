"""The data side of training: prepared dataset, tokenizer, train/eval iterators, global batches."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from data_pipelines import pipeline, sources
from vdm_jax.config import Config, ConfigError, TokenizerKind


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
        return cls(config, path, tokenizer)

    def train_iterator(self):
        c = self.config
        return pipeline.make_train_iterator(
            c.data, global_batch_size=c.training.global_batch_size, process_index=jax.process_index(),
            process_count=jax.process_count(), seed=c.data.shuffle_seed, tokenizer=self.tokenizer,
            max_text_len=c.model.max_text_len)

    def eval_batches(self, num_batches: int) -> Iterator[dict[str, np.ndarray]]:
        c = self.config
        if num_batches <= 0:
            return iter(())
        return pipeline.make_eval_iterator(
            c.data, global_batch_size=c.training.global_batch_size, process_index=jax.process_index(),
            process_count=jax.process_count(), tokenizer=self.tokenizer,
            max_text_len=c.model.max_text_len, num_batches=num_batches)

    def sample_prompts(self, num: int) -> tuple[list[str], dict[str, np.ndarray]]:
        """Fixed prompts: the first ``num`` captions of the eval split, tokenized."""
        captions = [r["caption"] for r in pipeline.eval_records(self.config.data, num)]
        return captions, self.encode(captions)

    def encode(self, captions: list[str]) -> dict[str, np.ndarray]:
        toks, masks = zip(*(self.tokenizer.encode(c, self.config.model.max_text_len) for c in captions))
        return {"tokens": np.stack(toks).astype(np.int32), "token_mask": np.stack(masks).astype(bool)}

    @staticmethod
    def to_global(batch: dict[str, np.ndarray], sharding: Any) -> dict[str, jax.Array]:
        return pipeline.to_global_batch(batch, sharding)

    def tokenizer_spec(self) -> dict[str, Any]:
        """Enough to rebuild the tokenizer from a checkpoint alone (sentencepiece: the model bytes)."""
        kind = self.config.data.tokenizer
        spec: dict[str, Any] = {"kind": kind.value, "vocab_size": int(self.tokenizer.vocab_size),
                                "max_text_len": self.config.model.max_text_len}
        if kind == TokenizerKind.SENTENCEPIECE:
            path = sources.ensure_sentencepiece(self.dataset_dir, self.config.data.sentencepiece_vocab_size)
            with open(path, "rb") as f:
                spec["model_b64"] = base64.b64encode(f.read()).decode()
        return spec
