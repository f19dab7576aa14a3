"""Grain pipelines: tokenised text-video batches, sharded per process, resumable.

Training stream (per process)::

    source (ArrayRecord via tfds) -> shuffle(seed) -> repeat (reshuffled each epoch)
      -> slice[process_index::process_count]           # disjoint, covering shards
      -> random_map(crop window, optional flip, tokenise)
      -> [append k image frames per clip]              # joint image-video training
      -> batch(global_batch // process_count) -> float32 [-1, 1] + frame_mask
      -> to_iter_dataset -> mp_prefetch(worker_count)

Batches follow the contract: ``video`` float32 (B, T+k, H, W, 3) in [-1, 1], ``tokens`` int32
(B, L), ``token_mask`` bool (B, L), ``frame_mask`` bool (B, T+k). With ``data.text_encoder_dir``
set, the captions' stored frozen-encoder embeddings replace the tokens: ``text_embeddings``
(B, L, D) in their stored dtype (bfloat16/float16), read from the sidecar files of
:mod:`data_pipelines.text_embeddings` (no encoder runs in the pipeline).

Worker processes (``data.worker_count > 0``): grain starts them with multiprocessing (spawn),
so the program that iterates must keep its entry point behind ``if __name__ == "__main__":``,
and grain reads absl flags: run under ``absl.app.run`` (otherwise the flags are marked parsed
with their defaults when the iterator is built). ``worker_count`` changes the element order
only through how work is split; it is fixed per run and part of the checkpointed state.

Iterator state: ``it.get_state()/it.set_state(s)``, or with orbax
``ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it))`` and the item handler
``grain.checkpoint.CheckpointHandler()`` (see :func:`save_iterator`/:func:`restore_iterator`).
"""

from __future__ import annotations

import os

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import flags

from data_pipelines import records, sources, text_embeddings, transforms
from data_pipelines.shuffle import shuffle
from data_pipelines.stage_inputs import LowResInput
from data_pipelines.tokenizers import load_tokenizer
from vdm_jax.config import DataConfig, TokenizerKind

_IMAGE_SEED_OFFSET = 7919
_KEYS = (records.VIDEO_KEY, records.CAPTION_KEY)  # what batches need (attributes are skipped)


def tokenizer_for(data_cfg: DataConfig):
    """The tokenizer that ``data_cfg`` asks for (sentencepiece: trained/stored at prepare time)."""
    kind = data_cfg.tokenizer
    path = sources.ensure_prepared(data_cfg) if kind == TokenizerKind.SENTENCEPIECE else None
    return load_tokenizer(kind, path, data_cfg.sentencepiece_vocab_size)


def embedding_store(data_cfg: DataConfig, splits: tuple[str, ...] = ()) -> tuple[str, dict] | None:
    """(store directory, metadata) of ``data.text_encoder_dir``'s embeddings of this dataset, or None
    when ``data.text_encoder_dir`` is empty. Raises ``TextEmbeddingsError`` (one line) when the
    dataset was not (completely) encoded with that encoder."""
    if not data_cfg.text_encoder_dir:
        return None
    path = sources.ensure_prepared(data_cfg) if data_cfg.dataset in sources.BUILTIN \
        else sources.prepared_path(data_cfg)
    if path is None:
        raise text_embeddings.TextEmbeddingsError(
            f"data.dataset={data_cfg.dataset!r}: stored text embeddings need a prepared dataset directory "
            "(pass its path as data.dataset)")
    return text_embeddings.find_store(path, data_cfg.text_encoder_dir, splits)


def _open_split(data_cfg: DataConfig, split: str, keys: tuple[str, ...]):
    """The split's records; with ``data.text_encoder_dir`` each also carries its stored embedding."""
    source = sources.open_split(data_cfg, split, keys)
    found = embedding_store(data_cfg, (split,))
    if found is None:
        return source
    return text_embeddings.EmbeddedSource(source, found[0], split)


def _process_rows(global_batch_size: int, process_index: int | None, process_count: int | None
                  ) -> tuple[int, int, int]:
    """(rows per process, process index, process count); None: this JAX process and the count."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(f"global_batch_size={global_batch_size} must be a positive multiple of "
                         f"process_count={process_count}")
    return global_batch_size // process_count, process_index, process_count


def _read_options(data_cfg: DataConfig) -> grain.ReadOptions:
    threads = max(1, min(4, os.cpu_count() or 1))
    return grain.ReadOptions(num_threads=threads, prefetch_buffer_size=max(1, data_cfg.worker_buffer_size))


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside ``absl.app.run`` mark them parsed
    (keeping defaults) instead of crashing in the worker."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _to_iter(ds: grain.MapDataset, data_cfg: DataConfig) -> grain.IterDataset:
    it_ds = ds.to_iter_dataset(_read_options(data_cfg))
    if data_cfg.worker_count > 0:
        _ensure_absl_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=data_cfg.worker_count, per_worker_buffer_size=max(1, data_cfg.worker_buffer_size)))
    return it_ds


def train_dataset(data_cfg: DataConfig, *, global_batch_size: int, process_index: int | None = None,
                  process_count: int | None = None, seed: int | None = None, tokenizer=None,
                  max_text_len: int = 48, low_res: LowResInput | None = None) -> grain.MapDataset:
    """The infinite, process-local training MapDataset of finished batches (default: this JAX
    process's rows). ``low_res``: a cascade stage's conditioning input, added to every batch
    (:mod:`data_pipelines.stage_inputs`)."""
    per_process, process_index, process_count = _process_rows(global_batch_size, process_index,
                                                               process_count)
    seed = data_cfg.shuffle_seed if seed is None else seed
    tokenizer = tokenizer or tokenizer_for(data_cfg)
    source = _open_split(data_cfg, data_cfg.train_split, _KEYS)
    if len(source) < process_count:
        raise ValueError(f"split {data_cfg.train_split!r} has {len(source)} records, fewer than "
                         f"{process_count} processes")
    ds = shuffle(grain.MapDataset.source(source), seed).repeat(None)[process_index::process_count]
    clip = transforms.ClipTransform(data_cfg.num_frames, data_cfg.resolution, tokenizer, max_text_len,
                                    random_crop=True, random_flip=data_cfg.random_flip)
    ds = ds.random_map(clip, seed=seed)
    if data_cfg.images_per_video:
        images = image_dataset(data_cfg, seed=seed + _IMAGE_SEED_OFFSET, process_index=process_index,
                               process_count=process_count)
        ds = ds.map_with_index(transforms.AppendImages(images, data_cfg.images_per_video,
                                                       data_cfg.resolution, data_cfg.random_flip))
    ds = ds.batch(per_process, drop_remainder=True).map(_Finalize(data_cfg.num_frames))
    return ds if low_res is None else ds.map(low_res)


def image_dataset(data_cfg: DataConfig, *, seed: int, process_index: int, process_count: int):
    """Process-local infinite stream of image records (the ``image`` split, else train frames)."""
    split = records.IMAGE_SPLIT if sources.has_split(data_cfg, records.IMAGE_SPLIT) else data_cfg.train_split
    source = sources.open_split(data_cfg, split, _KEYS)
    return shuffle(grain.MapDataset.source(source), seed).repeat(None)[process_index::process_count]


class _Finalize:
    def __init__(self, num_frames: int):
        self.num_frames = num_frames

    def __call__(self, batch: dict) -> dict:
        return transforms.finalize_batch(batch, self.num_frames)


def make_train_iterator(data_cfg: DataConfig, *, global_batch_size: int,
                        process_index: int | None = None, process_count: int | None = None,
                        seed: int | None = None, tokenizer=None, max_text_len: int = 48,
                        low_res: LowResInput | None = None) -> grain.DatasetIterator:
    """Infinite iterator of process-local training batches (``global_batch_size // process_count``)."""
    ds = train_dataset(data_cfg, global_batch_size=global_batch_size, process_index=process_index,
                       process_count=process_count, seed=seed, tokenizer=tokenizer, max_text_len=max_text_len,
                       low_res=low_res)
    return iter(_to_iter(ds, data_cfg))


def eval_dataset(data_cfg: DataConfig, *, global_batch_size: int, process_index: int | None = None,
                 process_count: int | None = None, tokenizer=None, max_text_len: int = 48,
                 num_batches: int | None = None, split: str | None = None,
                 low_res: LowResInput | None = None) -> grain.MapDataset:
    """Finite, deterministic eval batches: no shuffle, no flip, the first window of each clip.

    The split is truncated to a whole number of global batches so that every process gets the
    same number of batches.
    """
    per_process, process_index, process_count = _process_rows(global_batch_size, process_index,
                                                               process_count)
    tokenizer = tokenizer or tokenizer_for(data_cfg)
    split = split or data_cfg.eval_split
    source = _open_split(data_cfg, split, _KEYS)
    total = (len(source) // global_batch_size) * global_batch_size
    if num_batches is not None:
        total = min(total, num_batches * global_batch_size)
    if total == 0:
        raise ValueError(f"split {split!r} has {len(source)} records, fewer than one global batch "
                         f"of {global_batch_size}")
    ds = grain.MapDataset.source(source)[:total][process_index::process_count]
    clip = transforms.ClipTransform(data_cfg.num_frames, data_cfg.resolution, tokenizer, max_text_len,
                                    random_crop=False, random_flip=False)
    ds = ds.map(clip).batch(per_process, drop_remainder=True).map(_Finalize(data_cfg.num_frames))
    return ds if low_res is None else ds.map(low_res)


def make_eval_iterator(data_cfg: DataConfig, *, global_batch_size: int,
                       process_index: int | None = None, process_count: int | None = None, tokenizer=None,
                       max_text_len: int = 48, num_batches: int | None = None, split: str | None = None,
                       low_res: LowResInput | None = None):
    """A finite iterator of process-local eval batches (same batches every call)."""
    ds = eval_dataset(data_cfg, global_batch_size=global_batch_size, process_index=process_index,
                      process_count=process_count, tokenizer=tokenizer, max_text_len=max_text_len,
                      num_batches=num_batches, split=split, low_res=low_res)
    return iter(ds.to_iter_dataset(_read_options(data_cfg)))


def eval_records(data_cfg: DataConfig, num: int, split: str | None = None) -> list[dict]:
    """The first ``num`` records of the eval split, raw: ``video`` uint8 (T,H,W,3) (first window,
    at ``data.resolution``), ``caption`` str, and any stored attributes (moving_digits) as numpy.

    Same order as :func:`make_eval_iterator` with one process.
    """
    source = sources.open_split(data_cfg, split or data_cfg.eval_split)
    out = []
    for i in range(min(num, len(source))):
        rec = dict(source[i])
        video = transforms.temporal_window(np.asarray(rec[records.VIDEO_KEY]), data_cfg.num_frames, None)
        rec[records.VIDEO_KEY] = transforms.fit_resolution(video, data_cfg.resolution)
        rec[records.CAPTION_KEY] = records.caption_text(rec[records.CAPTION_KEY])
        out.append({k: (v if isinstance(v, str) else np.asarray(v)) for k, v in rec.items()})
    return out


def save_iterator(iterator, directory: str) -> None:
    """Save the iterator state with orbax through grain's checkpoint handler."""
    with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as ckptr:
        ckptr.save(os.path.abspath(directory), args=grain.checkpoint.CheckpointSave(iterator))


def restore_iterator(iterator, directory: str):
    """Restore a freshly built iterator (same config) to the state saved in ``directory``."""
    with ocp.Checkpointer(grain.checkpoint.CheckpointHandler()) as ckptr:
        return ckptr.restore(os.path.abspath(directory), args=grain.checkpoint.CheckpointRestore(iterator))
