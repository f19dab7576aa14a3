r"""Prepare a dataset: ``python -m data_pipelines.prepare --dataset=NAME --data_dir=DIR [...]``.

Examples::

  python -m data_pipelines.prepare --dataset=moving_digits --data_dir=/data --num_frames=16 \
      --resolution=64 --tokenizer=sentencepiece
  python -m data_pipelines.prepare --dataset=video_folder --data_dir=/data --source_dir=~/clips \
      --captions=captions.jsonl --num_frames=16 --resolution=64 --fps=8 --stride=8 --num_workers=8
  python -m data_pipelines.prepare --config=configs/moving_digits.py:smoke   # the config's data
  python -m data_pipelines.prepare --config=configs/moving_digits.py --config.data.num_frames=16

``--config=FILE[:ARG]`` with ``--config.a.b=value`` overrides, as every CLI of the project takes it.
The dataset flags that are given override the config's ``data`` section (or ``DataConfig``
defaults). The
last line printed is JSON with the prepared ``path`` (pass it as ``--config.data.dataset=PATH``
when non-default video_folder options such as --test_fraction or --name were used).
Preparing tfds *catalog* video datasets needs TensorFlow and internet (``tfds build NAME
--file_format=array_record`` elsewhere); copy the result under ``--data_dir`` to use it here.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import typing

from absl import app, flags
from ml_collections import config_flags

from data_pipelines import sources, video_folder
from vdm_jax.config import DataConfig, TokenizerKind, from_configdict

_DATASET = flags.DEFINE_enum("dataset", None, ["moving_digits", "video_folder"], "Dataset to prepare.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Optional config file (configs/NAME.py[:ARGS]); uses its data section.", lock_config=True)

# flag -> (DataConfig field, help); each flag has its field's type and overrides it when given.
_DATA_FLAGS = {
    "data_dir": ("data_dir", "Root of prepared datasets (default $VDM_DATA_DIR or ~/.cache/...)."),
    "source_dir": ("source_dir", "video_folder: directory with the videos/images."),
    "captions": ("captions_file", "video_folder: captions JSONL/CSV (default source_dir/captions.*)."),
    "num_frames": ("num_frames", "Frames per clip."),
    "resolution": ("resolution", "Frame height and width."),
    "fps": ("fps", "video_folder: target frame rate."),
    "stride": ("clip_stride", "video_folder: frames between clip starts (0 = num_frames)."),
    "tokenizer": ("tokenizer", "Train and store a sentencepiece model too."),
    "sentencepiece_vocab_size": ("sentencepiece_vocab_size", "sentencepiece vocabulary size (upper bound)."),
    "num_train": ("num_train_clips", "moving_digits: train clips."),
    "num_test": ("num_test_clips", "moving_digits: test clips."),
    "num_images": ("num_images", "moving_digits: captioned still frames (image split)."),
    "seed": ("generation_seed", "moving_digits: generation seed."),
    "max_objects": ("max_objects", "moving_digits: 1 or 2 objects per clip."),
}


def _define_data_flags() -> None:
    hints = typing.get_type_hints(DataConfig)
    define = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float}
    for name, (field, help_) in _DATA_FLAGS.items():
        kind = hints[field]
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            flags.DEFINE_enum(name, None, [e.value for e in kind], help_)
        else:
            define[kind](name, None, help_)


_define_data_flags()
_WORKERS = flags.DEFINE_integer("num_workers", 4, "video_folder: parallel shard writers (0 = in-process).")
_MAX_CLIPS = flags.DEFINE_integer("max_clips_per_video", 0, "video_folder: 0 = all clips.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "video_folder: share of videos in the test split.")
_ON_MISSING = flags.DEFINE_enum("on_missing", "error", ["error", "skip"],
                                "video_folder: what to do when captions name missing files.")
_VIDEOS_PER_SHARD = flags.DEFINE_integer("videos_per_shard", 64, "video_folder: files per shard.")
_NAME = flags.DEFINE_string("name", "", "video_folder: dataset name (default derived from the options).")


def data_config_from_flags() -> DataConfig:
    """The config's data section (or the defaults) with the dataset flags that were given."""
    base = from_configdict(_CONFIG.value).data if _CONFIG.value is not None else DataConfig()
    updates = {field: flags.FLAGS[name].value for name, (field, _) in _DATA_FLAGS.items()
               if flags.FLAGS[name].value is not None}
    if _DATASET.value:
        updates["dataset"] = _DATASET.value
    return dataclasses.replace(base, **updates)


def prepare(cfg: DataConfig) -> str:
    if cfg.dataset == "video_folder":
        if not cfg.source_dir:
            raise app.UsageError("--source_dir is required for --dataset=video_folder")
        opts = dataclasses.replace(video_folder.options_from_config(cfg),
                                   max_clips_per_video=_MAX_CLIPS.value, test_fraction=_TEST_FRACTION.value,
                                   on_missing=_ON_MISSING.value,
                                   videos_per_shard=_VIDEOS_PER_SHARD.value, name=_NAME.value)
        path = video_folder.prepare(opts, sources.resolve_data_dir(cfg), num_workers=_WORKERS.value)
        if cfg.tokenizer == TokenizerKind.SENTENCEPIECE:
            sources.ensure_sentencepiece(path, cfg.sentencepiece_vocab_size)
        return path
    if cfg.dataset != "moving_digits":
        raise app.UsageError(f"--dataset={cfg.dataset!r}: only moving_digits and video_folder are prepared "
                             "here; catalog datasets need `tfds build NAME --file_format=array_record` "
                             "(TensorFlow, internet)")
    return sources.ensure_prepared(cfg, progress=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not (_DATASET.value or _CONFIG.value is not None):
        raise app.UsageError("pass --dataset=moving_digits|video_folder or --config=...")
    cfg = data_config_from_flags()
    path = prepare(cfg)
    out = {"dataset": cfg.dataset, "path": path}
    if cfg.dataset == "video_folder":
        report = video_folder.load_report(path)
        out.update({k: report[k] for k in ("videos_total", "videos_ok", "unreadable", "too_short", "missing",
                                           "unknown_type", "images_ok", "records")})
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
