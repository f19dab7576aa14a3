"""The on-disk record schema shared by every prepared dataset (tfds ArrayRecord, no TensorFlow).

Every record has
- ``video``: uint8 (T, H, W, 3) with T >= 1 (image records have T = 1),
- ``caption``: UTF-8 text (read back as ``bytes``),
and ``moving_digits`` records also carry the attribute arrays of
:func:`data_pipelines.moving_digits_spec.attribute_spec`.

Prepared datasets are tfds dataset directories (``dataset_info.json``, ``features.json`` and
``{name}-{split}.array_record-XXXXX-of-YYYYY`` shards), so ``tfds.builder_from_directory(dir)
.as_data_source(split)`` reads all of them the same way.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import moving_digits_spec as spec

VIDEO_KEY = "video"
CAPTION_KEY = "caption"
IMAGE_SPLIT = "image"
REPORT_FILENAME = "prepare_report.json"


def video_features(resolution: int, with_attributes: bool = False) -> tfds.features.FeaturesDict:
    feats = {
        # Raw bytes: decoding is ~25x faster than tfds' default int64-list encoding (ArrayRecord
        # compresses the shards anyway).
        VIDEO_KEY: tfds.features.Tensor(shape=(None, resolution, resolution, 3), dtype=np.uint8,
                                        encoding=tfds.features.Encoding.BYTES),
        CAPTION_KEY: tfds.features.Text(),
    }
    if with_attributes:
        for key, (shape, dtype) in spec.attribute_spec().items():
            feats[key] = tfds.features.Tensor(shape=shape, dtype=dtype)
    return tfds.features.FeaturesDict(feats)


def caption_text(value) -> str:
    """Caption from a decoded record (bytes, str or 0-d array)."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
