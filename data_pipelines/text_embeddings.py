"""Frozen-encoder text embeddings stored next to a prepared dataset (sidecar ArrayRecord files).

A prepared dataset's records are never rewritten: the embeddings of their captions go into
sidecar ArrayRecord files aligned record-for-record with each split::

    {dataset_dir}/text_embeddings/{encoder_id}/
        metadata.json                        # encoder identity, width, max length, dtype, counts
        train-000000000.array_record         # records [0, chunk_records) of split 'train'
        train-000004096.array_record         # records [4096, 8192) ...
        test-000000000.array_record

Record ``i`` of a split's files (in start order) holds the embedding of record ``i``'s caption:
a little-endian uint32 ``n`` (valid tokens, EOS included) followed by the ``(n, d_model)`` array in
the stored dtype (bfloat16 or float16). Only the valid tokens are stored; the token mask is the
first ``n`` positions (T5 masks are prefixes), and readers pad to their length with zeros.

``encoder_id`` is the first 16 hex digits of the encoder's fingerprint: SHA-256 over its
``config.json``, ``spiece.model``, and for each safetensors file its name, size, header (tensor
names, dtypes, shapes, offsets) and first and last MiB of data. ``metadata.json`` records the
encoder's path, the SHA-256 of its ``config.json`` and the fingerprint; training looks the store
up by the fingerprint of ``data.text_encoder_dir`` and refuses a dataset that has none.

Writing is resumable: each chunk file is written under a temporary name and renamed when
complete, a rerun skips the chunks that exist, and ``metadata.json`` says ``complete: true``
only after every split is done. The encoder itself is passed in as a function (this package does
not import the model code); ``python -m launch.encode_text`` wires the NNX T5 encoder in.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Callable, Sequence

import ml_dtypes
import numpy as np
from array_record.python import array_record_module
from array_record.python.array_record_data_source import ArrayRecordDataSource

STORE_DIRNAME = "text_embeddings"
METADATA_FILENAME = "metadata.json"
FORMAT_VERSION = 1
DTYPES = ("bfloat16", "float16")
_EDGE_BYTES = 1 << 20


class TextEmbeddingsError(ValueError):
    """A store is missing, incomplete or was written by another encoder (one-line message)."""


# --------------------------------------------------------------------------------------------
# Encoder identity
# --------------------------------------------------------------------------------------------


def _weight_files(encoder_dir: str) -> list[str]:
    index = os.path.join(encoder_dir, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            names = sorted(set(json.load(f).get("weight_map", {}).values()))
        return [os.path.join(encoder_dir, n) for n in names]
    single = os.path.join(encoder_dir, "model.safetensors")
    if os.path.isfile(single):
        return [single]
    raise TextEmbeddingsError(f"{single}: not found (nor model.safetensors.index.json)")


def encoder_identity(encoder_dir: str) -> dict:
    """``{"path", "config_sha256", "fingerprint"}`` of a Hugging Face encoder directory."""
    encoder_dir = os.path.abspath(os.path.expanduser(encoder_dir))
    h = hashlib.sha256()
    config_path = os.path.join(encoder_dir, "config.json")
    parts = {}
    for name in ("config.json", "spiece.model"):
        path = os.path.join(encoder_dir, name)
        if not os.path.isfile(path):
            raise TextEmbeddingsError(f"{path}: not found")
        with open(path, "rb") as f:
            parts[name] = f.read()
        h.update(name.encode() + b"\0" + parts[name])
    for path in _weight_files(encoder_dir):
        if not os.path.isfile(path):
            raise TextEmbeddingsError(f"{path}: not found")
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head_len = struct.unpack("<Q", f.read(8))[0]
            header = f.read(head_len)
            first = f.read(_EDGE_BYTES)
            f.seek(max(8 + head_len, size - _EDGE_BYTES))
            last = f.read(_EDGE_BYTES)
        h.update(os.path.basename(path).encode() + b"\0" + str(size).encode() + b"\0")
        h.update(header + first + last)
    return {"path": encoder_dir, "config_sha256": hashlib.sha256(parts["config.json"]).hexdigest(),
            "fingerprint": h.hexdigest(), "config_path": config_path}


def store_dir(dataset_dir: str, identity: dict) -> str:
    return os.path.join(dataset_dir, STORE_DIRNAME, identity["fingerprint"][:16])


def read_metadata(store: str) -> dict | None:
    path = os.path.join(store, METADATA_FILENAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_metadata(store: str, meta: dict) -> None:
    tmp = os.path.join(store, f".{METADATA_FILENAME}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, os.path.join(store, METADATA_FILENAME))


def list_stores(dataset_dir: str) -> list[dict]:
    root = os.path.join(dataset_dir, STORE_DIRNAME)
    out = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            meta = read_metadata(os.path.join(root, name))
            if meta is not None:
                out.append(meta)
    return out


def find_store(dataset_dir: str, encoder_dir: str, splits: Sequence[str] = ()) -> tuple[str, dict]:
    """The complete store of ``encoder_dir``'s embeddings in ``dataset_dir`` and its metadata.

    Raises :class:`TextEmbeddingsError` (one line) when the dataset has no embeddings of this
    encoder (naming the encoders it has), when they are incomplete, or lack one of ``splits``.
    """
    identity = encoder_identity(encoder_dir)
    store = store_dir(dataset_dir, identity)
    meta = read_metadata(store)
    fix = (f"run `python -m launch.encode_text --dataset_dir={dataset_dir} "
           f"--text_encoder={identity['path']}`")
    if meta is None:
        others = [f"{m['encoder']['path']} (config sha256 {m['encoder']['config_sha256'][:12]})"
                  for m in list_stores(dataset_dir)]
        had = f"it was encoded with {', '.join(others)}" if others else "it has no text embeddings"
        raise TextEmbeddingsError(
            f"dataset {dataset_dir} was not encoded with text encoder {identity['path']} (fingerprint "
            f"{identity['fingerprint'][:16]}): {had}; {fix}, or set data.text_encoder_dir to the encoder "
            "it was encoded with")
    if not meta.get("complete"):
        raise TextEmbeddingsError(f"text embeddings in {store} are incomplete: {fix} to finish them")
    missing = [s for s in splits if s not in meta["splits"]]
    if missing:
        raise TextEmbeddingsError(f"text embeddings in {store} lack split(s) {missing} "
                                  f"(have {sorted(meta['splits'])}): {fix} --splits=...")
    return store, meta


# --------------------------------------------------------------------------------------------
# Record encoding
# --------------------------------------------------------------------------------------------


def _np_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        return np.dtype(ml_dtypes.bfloat16)
    if name == "float16":
        return np.dtype(np.float16)
    raise TextEmbeddingsError(f"unknown embedding dtype {name!r}; allowed: {list(DTYPES)}")


def pack(embedding: np.ndarray, n: int, dtype: np.dtype) -> bytes:
    return struct.pack("<I", n) + np.ascontiguousarray(embedding[:n], dtype=dtype).tobytes()


def unpack(data: bytes, d_model: int, dtype: np.dtype) -> np.ndarray:
    n = struct.unpack("<I", data[:4])[0]
    return np.frombuffer(data, dtype=dtype, offset=4, count=n * d_model).reshape(n, d_model)


def pad(embedding: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) -> ((length, D) zero-padded, mask (length,)); n > length is an error."""
    n = embedding.shape[0]
    if n > length:
        raise TextEmbeddingsError(f"a stored text embedding has {n} tokens > model.max_text_len={length}")
    out = np.zeros((length, embedding.shape[1]), embedding.dtype)
    out[:n] = embedding
    mask = np.zeros(length, bool)
    mask[:n] = True
    return out, mask


def _chunk_path(store: str, split: str, start: int) -> str:
    return os.path.join(store, f"{split}-{start:09d}.array_record")


def chunk_paths(store: str, split: str, num_records: int, chunk_records: int) -> list[str]:
    return [_chunk_path(store, split, s) for s in range(0, num_records, chunk_records)]


EncodeFn = Callable[[list[str]], tuple[np.ndarray, np.ndarray]]


def encode_dataset(dataset_dir: str, encoder_dir: str, encode_fn: EncodeFn, *, d_model: int, max_len: int,
                   captions: dict[str, Sequence[str]], dtype: str = "bfloat16", batch_size: int = 64,
                   chunk_records: int = 4096, extra_metadata: dict | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[str, dict]:
    """Encode every caption of ``captions`` (split -> captions in record order) into the store.

    ``encode_fn(texts)`` returns ``(embeddings (B, max_len, d_model) float, mask (B, max_len)
    bool)`` for up to ``batch_size`` texts. Chunks that exist are kept (resumable); returns the
    store directory and its final metadata.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    np_dtype = _np_dtype(dtype)
    identity = encoder_identity(encoder_dir)
    store = store_dir(dataset_dir, identity)
    os.makedirs(store, exist_ok=True)
    settings = {"d_model": int(d_model), "max_len": int(max_len), "dtype": dtype,
                "chunk_records": int(chunk_records)}
    meta = read_metadata(store)
    if meta is not None:
        old = {k: meta.get(k) for k in settings}
        if old != settings:
            raise TextEmbeddingsError(f"{store} was written with {old}, not {settings}: pass the same "
                                      "settings to resume, or delete it to re-encode")
    splits = {s: {"records": len(c)} for s, c in captions.items()}
    if meta is not None:
        splits = {**meta.get("splits", {}), **splits}
    encoder = {k: identity[k] for k in ("path", "config_sha256", "fingerprint")}
    meta = {"format": FORMAT_VERSION, "encoder": encoder,
            **settings, "splits": splits, "complete": False, **(extra_metadata or {})}
    _write_metadata(store, meta)
    total = sum(len(c) for c in captions.values())
    done_records, t0, encoded, payload = 0, time.time(), 0, 0
    for split, texts in captions.items():
        texts = list(texts)
        for start in range(0, len(texts), chunk_records):
            path = _chunk_path(store, split, start)
            part = texts[start:start + chunk_records]
            if os.path.exists(path):
                done_records += len(part)
                continue
            tmp = f"{path}.tmp{os.getpid()}"
            writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
            for b in range(0, len(part), batch_size):
                batch = part[b:b + batch_size]
                emb, mask = encode_fn(batch)
                emb, mask = np.asarray(emb), np.asarray(mask, bool)
                for j in range(len(batch)):
                    n = int(mask[j].sum())
                    if not mask[j, :n].all():
                        raise TextEmbeddingsError("the encoder's token mask is not a prefix mask")
                    data = pack(emb[j], n, np_dtype)
                    payload += len(data)
                    writer.write(data)
                encoded += len(batch)
            writer.close()
            os.replace(tmp, path)
            done_records += len(part)
            rate = encoded / max(time.time() - t0, 1e-9)
            eta = (total - done_records) / rate if rate > 0 else 0.0
            log(f"text embeddings: {split} {start + len(part)}/{len(texts)} records, {done_records}/{total} "
                f"total, {rate:.1f} captions/s, ETA {eta:.0f} s")
    meta["complete"] = True
    meta["encode_seconds"] = round(time.time() - t0, 3)
    meta["captions_per_second"] = round(encoded / max(time.time() - t0, 1e-9), 2) if encoded else None
    meta["payload_bytes_per_clip"] = round(payload / encoded, 1) if encoded else None
    _write_metadata(store, meta)
    return store, meta


# --------------------------------------------------------------------------------------------
# Reading (the grain pipeline)
# --------------------------------------------------------------------------------------------


EMBEDDING_KEY = "text_embedding"  # per record: (n, d_model) in the stored dtype


class EmbeddedSource:
    """A split's records with ``text_embedding`` (n, d_model) added from the store (picklable)."""

    def __init__(self, base, store: str, split: str):
        meta = read_metadata(store)
        if meta is None or split not in meta["splits"]:
            raise TextEmbeddingsError(f"{store}: no text embeddings for split {split!r}")
        self._args = (base, store, split)
        self._base = base
        n = meta["splits"][split]["records"]
        if n != len(base):
            raise TextEmbeddingsError(f"{store}: split {split!r} has {n} embeddings but the dataset has "
                                      f"{len(base)} records (re-encode)")
        self._emb = ArrayRecordDataSource(chunk_paths(store, split, n, meta["chunk_records"]))
        self._d, self._dtype = int(meta["d_model"]), _np_dtype(meta["dtype"])

    def __reduce__(self):
        return (EmbeddedSource, self._args)

    def __len__(self) -> int:
        return len(self._base)

    def __getitem__(self, index: int) -> dict:
        rec = dict(self._base[index])
        rec[EMBEDDING_KEY] = unpack(self._emb[index], self._d, self._dtype)
        return rec


def disk_bytes(store: str) -> int:
    files = [f for f in os.listdir(store) if f.endswith(".array_record")]
    return sum(os.path.getsize(os.path.join(store, f)) for f in files)
