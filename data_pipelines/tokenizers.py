"""Text tokenizers with a fixed maximum length and a padding mask.

Both tokenizers share the special ids ``PAD=0, BOS=1, EOS=2, UNK=3`` and return
``(tokens int32 (L,), mask bool (L,))``: ``[BOS] text [EOS] PAD...``, truncated so that EOS
always fits.

- :class:`ByteTokenizer`: UTF-8 bytes shifted by 4; vocabulary 260 (matches the default
  ``ModelConfig.vocab_size``). Needs no training.
- :class:`SentencePieceTokenizer`: a BPE model trained on the captions at prepare time
  (:func:`train_sentencepiece`) and stored next to the data; its ``vocab_size`` must be
  <= ``ModelConfig.vocab_size``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from typing import Protocol

import numpy as np
import sentencepiece as spm

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
NUM_SPECIAL = 4
SENTENCEPIECE_FILENAME = "sentencepiece_{vocab}.model"


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]: ...

    def decode(self, tokens: np.ndarray) -> str: ...


def _pack(ids: list[int], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2 (BOS and EOS), got {max_len}")
    ids = [BOS_ID] + ids[: max_len - 2] + [EOS_ID]
    tokens = np.zeros(max_len, np.int32)
    tokens[: len(ids)] = ids
    return tokens, tokens != PAD_ID


def _as_text(text: str | bytes) -> str:
    return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


def _strip(tokens: np.ndarray) -> list[int]:
    out = []
    for t in np.asarray(tokens).tolist():
        if t == EOS_ID:
            break
        if t >= NUM_SPECIAL:
            out.append(t)
    return out


class ByteTokenizer:
    """UTF-8 bytes -> ids 4..259."""

    vocab_size = 256 + NUM_SPECIAL

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        data = text if isinstance(text, bytes) else str(text).encode("utf-8")
        return _pack([b + NUM_SPECIAL for b in data], max_len)

    def decode(self, tokens: np.ndarray) -> str:
        return bytes(t - NUM_SPECIAL for t in _strip(tokens)).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A trained sentencepiece model (serialized proto bytes or a ``.model`` file)."""

    def __init__(self, model: bytes | str | os.PathLike):
        if not isinstance(model, bytes):
            path = os.fspath(model)
            if not os.path.exists(path):
                raise FileNotFoundError(f"sentencepiece model file not found: {path}")
            with open(path, "rb") as f:
                model = f.read()
        self._model_bytes = model
        self._sp = spm.SentencePieceProcessor(model_proto=model)
        self.vocab_size = int(self._sp.get_piece_size())

    def __reduce__(self):  # picklable for grain worker processes
        return (SentencePieceTokenizer, (self._model_bytes,))

    def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        return _pack(list(self._sp.encode(_as_text(text))), max_len)

    def decode(self, tokens: np.ndarray) -> str:
        return self._sp.decode(_strip(tokens))


def train_sentencepiece(captions: Iterable[str | bytes], vocab_size: int, path: str | os.PathLike) -> str:
    """Train a BPE model on ``captions`` and write it atomically to ``path``.

    ``vocab_size`` is an upper bound (small caption corpora support fewer pieces).
    """
    if vocab_size <= NUM_SPECIAL + 1:
        raise ValueError(f"sentencepiece vocab_size must be > {NUM_SPECIAL + 1}, got {vocab_size}")
    texts = [_as_text(c) for c in captions]
    if not texts:
        raise ValueError("cannot train sentencepiece: no captions")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="bpe",
        pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID, hard_vocab_limit=False,
        character_coverage=1.0, num_threads=1, minloglevel=2)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)
    return path


def sentencepiece_path(dataset_dir: str | os.PathLike, vocab_size: int) -> str:
    return os.path.join(os.fspath(dataset_dir), SENTENCEPIECE_FILENAME.format(vocab=vocab_size))


def load_tokenizer(kind: str, dataset_dir: str | os.PathLike | None = None,
                   sentencepiece_vocab_size: int = 512) -> ByteTokenizer | SentencePieceTokenizer:
    """``kind`` is 'byte' or 'sentencepiece' (the model stored in the prepared ``dataset_dir``)."""
    if kind == "byte":
        return ByteTokenizer()
    if kind == "sentencepiece":
        if dataset_dir is None:
            raise ValueError("tokenizer 'sentencepiece' needs the prepared dataset directory")
        path = sentencepiece_path(dataset_dir, sentencepiece_vocab_size)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no sentencepiece model at {path}: run "
                                    "`python -m data_pipelines.prepare ... --tokenizer=sentencepiece`")
        return SentencePieceTokenizer(path)
    raise ValueError(f"unknown tokenizer {kind!r}; allowed: 'byte', 'sentencepiece'")
