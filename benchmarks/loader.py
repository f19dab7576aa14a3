r"""Loader throughput: clips/s that the grain pipeline delivers (no model, no device transfer).

    python -m benchmarks.loader --config=configs/moving_digits.py:smoke
    python -m benchmarks.loader --config=configs/moving_digits.py \
        --config.data.num_frames=16 --config.data.resolution=64 [--config.data.worker_count=2]
    python -m benchmarks.loader --num_frames=16 --resolution=64 --batch=16   # no config file

Prepares the dataset first if needed (timed separately), then times ``--num_batches`` batches
after ``--warmup`` batches. Only the ``data`` section of the config is validated (so data
overrides need not fit the model). The last line printed is one JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import time

from absl import app, flags
from ml_collections import config_flags

from data_pipelines import pipeline, sources
from vdm_jax.config import DataConfig

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (optional).", lock_config=True)
_NUM_FRAMES = flags.DEFINE_integer("num_frames", None, "Override data.num_frames.")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "Override data.resolution.")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch size (default: training.global_batch_size or 16).")
_WORKERS = flags.DEFINE_integer("worker_count", None, "Override data.worker_count.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Override data.data_dir.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 100, "Batches to time.")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Batches before timing.")


def _data_config() -> tuple[DataConfig, int, int]:
    cd = _CONFIG.value
    data, batch, max_text_len = DataConfig(), 16, 48
    if cd is not None:
        data = DataConfig(**cd.data.to_dict())
        batch, max_text_len = cd.training.global_batch_size, cd.model.max_text_len
    overrides = {"num_frames": _NUM_FRAMES.value, "resolution": _RESOLUTION.value,
                 "worker_count": _WORKERS.value, "data_dir": _DATA_DIR.value}
    data = dataclasses.replace(data, **{k: v for k, v in overrides.items() if v is not None})
    return data, _BATCH.value or batch, max_text_len


def run(data: DataConfig, batch: int, max_text_len: int, num_batches: int, warmup: int) -> dict:
    t0 = time.perf_counter()
    sources.ensure_prepared(data)
    prepare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    it = pipeline.make_train_iterator(data, global_batch_size=batch, max_text_len=max_text_len)
    next(it)
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(num_batches):
        next(it)
    elapsed = time.perf_counter() - t0
    if hasattr(it, "close"):
        it.close()
    return {"benchmark": "loader", "dataset": data.dataset, "num_frames": data.num_frames,
            "resolution": data.resolution, "images_per_video": data.images_per_video, "batch": batch,
            "worker_count": data.worker_count, "num_batches": num_batches,
            "clips_per_s": round(num_batches * batch / elapsed, 1),
            "batches_per_s": round(num_batches / elapsed, 2), "first_batch_s": round(first_s, 3),
            "prepare_s": round(prepare_s, 3)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    data, batch, max_text_len = _data_config()
    result = run(data, batch, max_text_len, _NUM_BATCHES.value, _WARMUP.value)
    print(f"loader: {result['clips_per_s']} clips/s ({data.num_frames}x{data.resolution}x{data.resolution}, "
          f"batch {batch}, {data.worker_count} workers)")
    print(json.dumps(result))


if __name__ == "__main__":
    app.run(main)
