r"""Encode a prepared dataset's captions with a frozen T5 encoder and store the embeddings.

    python -m launch.encode_text --dataset_dir=DATASET_DIR --text_encoder=T5_DIR [--max_len=64]
    python -m launch.encode_text --config=configs/moving_digits.py:smoke \
        --config.data.text_encoder_dir=T5_DIR [--config.model.max_text_len=32]

``T5_DIR`` is a local Hugging Face directory (``config.json``, ``model.safetensors`` or a sharded
``model.safetensors.index.json``, ``spiece.model``); nothing is downloaded. The per-token
embeddings (``--dtype`` bfloat16 or float16, valid tokens only) go into sidecar ArrayRecord files
``DATASET_DIR/text_embeddings/<encoder id>/`` aligned with the records, with the encoder's
identity (path, config.json SHA-256, fingerprint) in their ``metadata.json`` (format:
``data_pipelines/text_embeddings.py``). Batched (``--batch_size``), with progress on stderr, and
resumable: rerun the same command after an interruption and finished chunks are kept. The last
line printed is JSON (store path, records, bytes per clip, captions/s).

Train on them with ``--config.model.text_encoder=precomputed
--config.model.precomputed_text_dim=<d_model> --config.data.text_encoder_dir=T5_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence

import jax.numpy as jnp
import tensorflow_datasets as tfds
from absl import app, flags

from data_pipelines import records, sources, text_embeddings
from data_pipelines.text_embeddings import TextEmbeddingsError
from launch import cli
from vdm_jax.config import ConfigError
from vdm_jax.models import t5


def run(dataset_dir: str, encoder_dir: str, *, max_len: int, splits: Sequence[str] | None = None,
        dtype: str = "bfloat16", compute_dtype: str = "float32", batch_size: int = 64,
        chunk_records: int = 4096, log=None) -> dict:
    """Encode ``splits`` of ``dataset_dir`` with ``encoder_dir``; returns a summary dict."""
    dataset_dir = os.path.abspath(os.path.expanduser(dataset_dir))
    if not sources.is_prepared(dataset_dir):
        raise text_embeddings.TextEmbeddingsError(
            f"{dataset_dir}: no dataset_info.json (not a prepared dataset)")
    available = sorted(tfds.builder_from_directory(dataset_dir).info.splits)
    splits = list(splits) if splits else [s for s in available if s != records.IMAGE_SPLIT]
    missing = [s for s in splits if s not in available]
    if missing:
        raise text_embeddings.TextEmbeddingsError(f"{dataset_dir}: no split(s) {missing}; it has {available}")
    captions = {}
    for split in splits:
        source = sources.KeysSource(dataset_dir, split, (records.CAPTION_KEY,))
        captions[split] = [records.caption_text(source[i][records.CAPTION_KEY]) for i in range(len(source))]
    dt = jnp.bfloat16 if compute_dtype == "bfloat16" else jnp.float32
    t0 = time.time()
    encoder = t5.FrozenTextEncoder(encoder_dir, max_len, batch_size=batch_size, dtype=dt, param_dtype=dt,
                                   cache_size=0)
    load_seconds = time.time() - t0
    store, meta = text_embeddings.encode_dataset(
        dataset_dir, encoder_dir, encoder, d_model=encoder.d_model, max_len=max_len, captions=captions,
        dtype=dtype, batch_size=batch_size, chunk_records=chunk_records,
        extra_metadata={"compute_dtype": compute_dtype}, log=log)
    n = sum(len(c) for c in captions.values())
    size = text_embeddings.disk_bytes(store)
    return {"store": store, "records": n, "splits": {s: len(c) for s, c in captions.items()},
            "d_model": encoder.d_model, "max_len": max_len, "dtype": dtype, "file_bytes": size,
            "file_bytes_per_clip": round(size / max(n, 1), 1),
            "payload_bytes_per_clip": meta.get("payload_bytes_per_clip"),
            "captions_per_second": meta.get("captions_per_second"),
            "encoder_load_seconds": round(load_seconds, 2), "fingerprint": meta["encoder"]["fingerprint"]}


def _define_flags() -> None:
    cli.define_config_flag(required=False, what=" (optional: its data section selects the dataset and the "
                                                "encoder)")
    flags.DEFINE_string("dataset_dir", None, "A prepared dataset directory (has dataset_info.json).")
    flags.DEFINE_string("text_encoder", None, "Local Hugging Face T5 directory "
                                              "(default: the config's data.text_encoder_dir).")
    flags.DEFINE_integer("max_len", None, "Tokens per caption incl. EOS (default: the config's "
                                          "model.max_text_len, else 64).")
    flags.DEFINE_enum("dtype", "bfloat16", ["bfloat16", "float16"], "Stored embedding dtype.")
    flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"],
                      "Encoder compute (and parameter) dtype.")
    flags.DEFINE_integer("batch_size", 64, "Captions per encoder call.")
    flags.DEFINE_integer("chunk_records", 4096, "Records per sidecar file (the unit of resumption).")
    flags.DEFINE_list("splits", None, "Splits to encode (default: the config's train and eval splits, "
                                      "else every split but 'image').")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    try:
        dataset_dir, encoder_dir, max_len, splits = F.dataset_dir, F.text_encoder, F.max_len, None
        if F.config is not None:
            config = cli.typed_config(F.config)
            dataset_dir = dataset_dir or sources.ensure_prepared(config.data, progress=True)
            encoder_dir = encoder_dir or config.data.text_encoder_dir
            max_len = max_len or config.model.max_text_len
            splits = list(dict.fromkeys((config.data.train_split, config.data.eval_split)))
        if not dataset_dir:
            raise app.UsageError("pass --dataset_dir=DIR or --config=... (a prepared dataset)")
        if not encoder_dir:
            raise app.UsageError("pass --text_encoder=DIR (or --config.data.text_encoder_dir=DIR)")
        summary = run(dataset_dir, encoder_dir, max_len=max_len or 64, splits=F.splits or splits,
                      dtype=F.dtype, compute_dtype=F.compute_dtype, batch_size=F.batch_size,
                      chunk_records=F.chunk_records)
    except (ConfigError, t5.T5LoadError, TextEmbeddingsError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(summary))


if __name__ == "__main__":
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
