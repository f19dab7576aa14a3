r"""Prepare a dataset: ``python -m data_pipelines.prepare --dataset=NAME --data_dir=DIR [...]``.

Examples::

  python -m data_pipelines.prepare --dataset=moving_digits --data_dir=/data --num_frames=16 \
      --resolution=64 --tokenizer=sentencepiece
  python -m data_pipelines.prepare --dataset=video_folder --data_dir=/data --source_dir=~/clips \
      --captions=captions.jsonl --num_frames=16 --resolution=64 --fps=8 --stride=8 --num_workers=8
  python -m data_pipelines.prepare --config=configs/moving_digits.py:smoke   # the config's data

Flags that are given override the config's ``data`` section (or ``DataConfig`` defaults). The
last line printed is JSON with the prepared ``path`` (pass it as ``--config.data.dataset=PATH``
when non-default video_folder options such as --test_fraction or --name were used).
Preparing tfds *catalog* video datasets needs TensorFlow and internet (``tfds build NAME
--file_format=array_record`` elsewhere); copy the result under ``--data_dir`` to use it here.
"""

from __future__ import annotations

import dataclasses
import json

from absl import app, flags

from vdm_jax.config import DataConfig, TokenizerKind

_DATASET = flags.DEFINE_enum("dataset", None, ["moving_digits", "video_folder"], "Dataset to prepare.")
_CONFIG = flags.DEFINE_string("config", None,
                              "Optional config file (configs/NAME.py[:ARGS]); uses its data section.")
flags.DEFINE_string("data_dir", None, "Root of prepared datasets (default $VDM_DATA_DIR or ~/.cache/...).")
flags.DEFINE_string("source_dir", None, "video_folder: directory with the videos/images.")
flags.DEFINE_string("captions", None, "video_folder: captions JSONL/CSV (default source_dir/captions.*).")
flags.DEFINE_integer("num_frames", None, "Frames per clip.")
flags.DEFINE_integer("resolution", None, "Frame height and width.")
flags.DEFINE_float("fps", None, "video_folder: target frame rate.")
flags.DEFINE_integer("stride", None, "video_folder: frames between clip starts (0 = num_frames).")
flags.DEFINE_enum("tokenizer", None, ["byte", "sentencepiece"], "Train and store a sentencepiece model too.")
flags.DEFINE_integer("sentencepiece_vocab_size", None, "sentencepiece vocabulary size (upper bound).")
flags.DEFINE_integer("num_train", None, "moving_digits: train clips.")
flags.DEFINE_integer("num_test", None, "moving_digits: test clips.")
flags.DEFINE_integer("num_images", None, "moving_digits: captioned still frames (image split).")
flags.DEFINE_integer("seed", None, "moving_digits: generation seed.")
flags.DEFINE_integer("max_objects", None, "moving_digits: 1 or 2 objects per clip.")
_WORKERS = flags.DEFINE_integer("num_workers", 4, "video_folder: parallel shard writers (0 = in-process).")
_MAX_CLIPS = flags.DEFINE_integer("max_clips_per_video", 0, "video_folder: 0 = all clips.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "video_folder: share of videos in the test split.")
_ON_MISSING = flags.DEFINE_enum("on_missing", "error", ["error", "skip"],
                                "video_folder: what to do when captions name missing files.")
_VIDEOS_PER_SHARD = flags.DEFINE_integer("videos_per_shard", 64, "video_folder: files per shard.")
_NAME = flags.DEFINE_string("name", "", "video_folder: dataset name (default derived from the options).")

# flag -> DataConfig field
_FIELDS = {"data_dir": "data_dir", "source_dir": "source_dir", "captions": "captions_file",
           "num_frames": "num_frames", "resolution": "resolution", "fps": "fps", "stride": "clip_stride",
           "tokenizer": "tokenizer", "sentencepiece_vocab_size": "sentencepiece_vocab_size",
           "num_train": "num_train_clips", "num_test": "num_test_clips", "num_images": "num_images",
           "seed": "generation_seed", "max_objects": "max_objects"}


def data_config_from_flags() -> DataConfig:
    base = DataConfig()
    if _CONFIG.value:
        from vdm_jax.config import from_configdict

        base = from_configdict(_load_config(_CONFIG.value)).data
    updates = {field: flags.FLAGS[name].value for name, field in _FIELDS.items()
               if flags.FLAGS[name].value is not None}
    if "tokenizer" in updates:
        updates["tokenizer"] = TokenizerKind(updates["tokenizer"])
    if _DATASET.value:
        updates["dataset"] = _DATASET.value
    cfg = dataclasses.replace(base, **updates)
    cfg.validate("data")
    return cfg


def _load_config(spec: str):
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_prepare_config", path)
    if module_spec is None:
        raise app.UsageError(f"--config: cannot load {path!r}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def prepare(cfg: DataConfig) -> str:
    from data_pipelines import sources, video_folder

    if cfg.dataset == "video_folder":
        if not cfg.source_dir:
            raise app.UsageError("--source_dir is required for --dataset=video_folder")
        opts = dataclasses.replace(video_folder.options_from_config(cfg),
                                   max_clips_per_video=_MAX_CLIPS.value, test_fraction=_TEST_FRACTION.value,
                                   on_missing=_ON_MISSING.value,
                                   videos_per_shard=_VIDEOS_PER_SHARD.value, name=_NAME.value)
        path = video_folder.prepare(opts, sources.resolve_data_dir(cfg), num_workers=_WORKERS.value)
        if getattr(cfg.tokenizer, "value", cfg.tokenizer) == "sentencepiece":
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
    if not (_DATASET.value or _CONFIG.value):
        raise app.UsageError("pass --dataset=moving_digits|video_folder or --config=...")
    cfg = data_config_from_flags()
    path = prepare(cfg)
    out = {"dataset": cfg.dataset, "path": path}
    if cfg.dataset == "video_folder":
        from data_pipelines import video_folder

        report = video_folder.load_report(path)
        out.update({k: report[k] for k in ("videos_total", "videos_ok", "unreadable", "too_short", "missing",
                                           "images_ok", "records")})
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
