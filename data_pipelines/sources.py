"""Where prepared datasets live, preparing them on demand, and opening their data sources.

``data_cfg.dataset`` may be
- ``moving_digits``: generated on first use by :func:`ensure_prepared` into
  ``{data_dir}/moving_digits/{config}/1.0.0`` (the config name encodes frames, resolution,
  split sizes, seed and max_objects, so different configs never collide);
- ``video_folder``: the user's videos in ``data_cfg.source_dir``, prepared into
  ``{data_dir}/video_folder/{name}/1.0.0`` (see :mod:`data_pipelines.video_folder`);
- a path to a prepared tfds dataset directory (one with ``dataset_info.json``);
- a tfds catalog name (e.g. ``ucf101`` or ``name/config:1.0.0``) already prepared in the
  ``array_record`` format under ``data_dir``. Preparing catalog *video* datasets needs
  TensorFlow and internet access (``tfds build NAME --file_format=array_record``) on another
  machine; here they are only read, through ``tfds.data_source``.

``data_dir``: ``data_cfg.data_dir``, else ``$VDM_DATA_DIR``, else ``~/.cache/vdm_jax/datasets``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import manifest, moving_digits, records, tokenizers, video_folder
from vdm_jax.config import DataConfig, TokenizerKind

ENV_DATA_DIR = "VDM_DATA_DIR"
BUILTIN = ("moving_digits", "video_folder")


def resolve_data_dir(data_cfg: DataConfig) -> str:
    default = os.path.join("~", ".cache", "vdm_jax", "datasets")
    d = data_cfg.data_dir or os.environ.get(ENV_DATA_DIR) or default
    return os.path.abspath(os.path.expanduser(d))


def moving_digits_config(data_cfg: DataConfig):
    return moving_digits.make_config(
        num_frames=data_cfg.num_frames, resolution=data_cfg.resolution,
        num_train=data_cfg.num_train_clips, num_test=data_cfg.num_test_clips,
        num_images=data_cfg.num_images, seed=data_cfg.generation_seed, max_objects=data_cfg.max_objects)


def is_prepared(path: str) -> bool:
    """A tfds dataset directory (``dataset_info.json``); the built-in datasets must also be complete
    (:func:`data_pipelines.manifest.problem`)."""
    return os.path.isfile(os.path.join(path, "dataset_info.json"))


def prepared_path(data_cfg: DataConfig) -> str | None:
    """Directory of the prepared dataset for ``data_cfg`` (None for catalog datasets)."""
    root = resolve_data_dir(data_cfg)
    if data_cfg.dataset == "moving_digits":
        return moving_digits.dataset_dir(root, moving_digits_config(data_cfg))
    if data_cfg.dataset == "video_folder":
        return video_folder.dataset_dir(root, video_folder.options_from_config(data_cfg))
    if os.path.isdir(os.path.expanduser(data_cfg.dataset)):
        return os.path.abspath(os.path.expanduser(data_cfg.dataset))
    return None


@contextlib.contextmanager
def file_lock(path: str):
    """Exclusive lock (``flock`` on ``path``) so two local processes never prepare the same dataset
    at once."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_prepared(data_cfg: DataConfig, *, num_workers: int = 0, progress: bool = False) -> str | None:
    """Prepare the dataset if it is not there yet and return its directory.

    Idempotent and safe if interrupted: data is built into a temp directory/temp shard names
    and renamed when complete. Also trains the sentencepiece model when
    ``data_cfg.tokenizer == 'sentencepiece'`` and it is missing. Returns None for catalog
    datasets (read through ``tfds.data_source``).
    """
    path = prepared_path(data_cfg)
    if path is None:
        return None
    if data_cfg.dataset == "moving_digits":
        if manifest.problem(path):
            with file_lock(os.path.join(resolve_data_dir(data_cfg), ".moving_digits.lock")):
                why = manifest.problem(path)
                if why:
                    _build_moving_digits(data_cfg, path, why)
    elif data_cfg.dataset == "video_folder":
        if not data_cfg.source_dir:
            why = manifest.problem(path)
            if why:
                raise FileNotFoundError(
                    f"no complete video_folder dataset at {path} ({why}) and data.source_dir is empty: "
                    "prepare it with `python -m data_pipelines.prepare --dataset=video_folder "
                    "--source_dir=DIR ...`")
        else:
            with file_lock(path + ".lock"):  # reused if complete and its sources unchanged, else rebuilt
                video_folder.prepare(video_folder.options_from_config(data_cfg), resolve_data_dir(data_cfg),
                                     num_workers=num_workers, progress=progress)
    elif not is_prepared(path):
        raise FileNotFoundError(f"data.dataset={data_cfg.dataset!r}: {path} has no dataset_info.json")
    if data_cfg.tokenizer == TokenizerKind.SENTENCEPIECE:
        ensure_sentencepiece(path, data_cfg.sentencepiece_vocab_size)
    return path


def _build_moving_digits(data_cfg: DataConfig, path: str, why: str) -> None:
    """Generate ``moving_digits`` into ``path`` (a pure function of the config: an incomplete
    directory is removed and generated again), then write its manifest."""
    if os.path.exists(path):
        print(f"moving_digits at {path} is incomplete ({why}): generating it again", flush=True)
        shutil.rmtree(path)
    cfg = moving_digits_config(data_cfg)
    moving_digits.build(resolve_data_dir(data_cfg), cfg)
    manifest.write(path, dataset="moving_digits", config=cfg.name)


def ensure_sentencepiece(path: str, vocab_size: int) -> str:
    """Train the sentencepiece model on the train-split captions if it is missing."""
    sp_path = tokenizers.sentencepiece_path(path, vocab_size)
    if os.path.exists(sp_path):
        return sp_path
    with file_lock(sp_path + ".lock"):
        if not os.path.exists(sp_path):
            source = open_split_from_dir(path, "train")
            captions = (records.caption_text(source[i][records.CAPTION_KEY]) for i in range(len(source)))
            tokenizers.train_sentencepiece(captions, vocab_size, sp_path)
    return sp_path


def open_split_from_dir(path: str, split: str):
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
        raise ValueError(f"split {split!r} not in dataset {path}; available: {sorted(builder.info.splits)}")
    return builder.as_data_source(split)


def has_split(data_cfg: DataConfig, split: str) -> bool:
    path = prepared_path(data_cfg)
    if path is not None:
        return split in tfds.builder_from_directory(path).info.splits
    return split in tfds.builder(data_cfg.dataset, data_dir=resolve_data_dir(data_cfg)).info.splits


def open_split(data_cfg: DataConfig, split: str, keys: tuple[str, ...] | None = None):
    """A random-access data source of decoded records (dicts) for one split.

    Prepared datasets come back as-is (only ``keys`` decoded when given: ~5x faster than all
    of moving_digits' attributes); catalog datasets are adapted to the record schema
    (``video`` uint8 (T,H,W,3), ``caption``) via ``data_cfg.video_key/caption_key``.
    """
    path = ensure_prepared(data_cfg) if data_cfg.dataset in BUILTIN else prepared_path(data_cfg)
    if path is None:
        return CatalogSource(data_cfg, split)
    if keys:
        return KeysSource(path, split, tuple(keys))
    return open_split_from_dir(path, split)


class DatasetReadError(OSError):
    """A record of a prepared dataset cannot be read (one line naming the shard file)."""


def _shard_file(builder, split: str, index: int) -> str:
    """The shard file holding record ``index`` of ``split`` (best effort: the split's files)."""
    try:
        info = builder.info.splits[split]
        bounds = np.cumsum(info.shard_lengths)
        return os.fspath(info.filepaths[int(np.searchsorted(bounds, index, side="right"))])
    except Exception:  # noqa: BLE001 - only used to name a file in an error message
        return f"a shard of split {split!r} in {builder.data_dir}"


class KeysSource:
    """Records of a prepared dataset with only ``keys`` decoded (the rest is skipped)."""

    def __init__(self, path: str, split: str, keys: tuple[str, ...]):
        self._args = (path, split, keys)
        builder = self._builder = tfds.builder_from_directory(path)
        if split not in builder.info.splits:
            raise ValueError(f"split {split!r} not in dataset {path}; "
                             f"available: {sorted(builder.info.splits)}")
        features = builder.info.features
        missing = [k for k in keys if k not in features]
        if missing:
            raise KeyError(f"dataset {path} has no feature(s) {missing}; it has {sorted(features)}")
        self._features = tfds.features.FeaturesDict({k: features[k] for k in keys})
        try:
            raw = tfds.decode.DeserializeMethod.RAW_BYTES
            self._raw = builder.as_data_source(split, deserialize_method=raw)
        except Exception as e:  # noqa: BLE001 - a shard that cannot be opened
            raise DatasetReadError(f"cannot open split {split!r} of {path}: {type(e).__name__}: {e}; prepare "
                                   "the dataset again (python -m data_pipelines.prepare ...)") from e

    def __reduce__(self):
        return (KeysSource, self._args)

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: int) -> dict:
        try:
            return self._features.deserialize_example_np(self._raw[index])
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt shard: name the file
            split = self._args[1]
            shard = _shard_file(self._builder, split, index)
            raise DatasetReadError(
                f"record {index} of split {split!r} cannot be read from {shard}: "
                f"{type(e).__name__}: {' '.join(str(e).split())[:200]}; prepare the dataset again "
                "(python -m data_pipelines.prepare ...)") from e


class CatalogSource:
    """A prepared tfds catalog dataset (array_record) with records mapped to our schema."""

    def __init__(self, data_cfg: DataConfig, split: str):
        self._args = (data_cfg, split)
        self._source = tfds.data_source(data_cfg.dataset, split=split, data_dir=resolve_data_dir(data_cfg))
        features = self._source.dataset_info.features
        for key in (data_cfg.video_key, data_cfg.caption_key):
            if key not in features:
                raise KeyError(f"data.video_key/caption_key: feature {key!r} not in {data_cfg.dataset} "
                               f"features {sorted(features)}")
        caption_feature = features[data_cfg.caption_key]
        self._label_names = getattr(caption_feature, "names", None)
        self._video_key, self._caption_key = data_cfg.video_key, data_cfg.caption_key

    def __reduce__(self):
        return (CatalogSource, self._args)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        rec = self._source[index]
        caption = rec[self._caption_key]
        if self._label_names is not None:
            caption = self._label_names[int(caption)]
        video = np.asarray(rec[self._video_key], np.uint8)
        if video.ndim == 3:
            video = video[None]
        return {"video": video, "caption": caption}
