"""Data pipelines for vdm_jax: tfds ArrayRecord datasets, tokenizers and grain streaming.

Modules (import what you need; this package import is cheap):
- ``moving_digits_spec``: the procedural world (palette, objects, motions, render, captions).
- ``moving_digits``: its tfds builder (ArrayRecord, no TensorFlow).
- ``video_folder``: the user's videos/images + captions -> ArrayRecord shards.
- ``tokenizers``: byte-level and sentencepiece tokenizers.
- ``sources``: data dirs, ``ensure_prepared``, opening splits (prepared dirs, tfds catalog).
- ``pipeline``: grain train/eval iterators, global jax.Arrays, iterator checkpoints.
- ``prepare``: ``python -m data_pipelines.prepare --dataset=NAME --data_dir=DIR [...]``.

See data_pipelines/README.md.
"""

_LAZY = {
    "ensure_prepared": "data_pipelines.sources",
    "make_train_iterator": "data_pipelines.pipeline",
    "make_eval_iterator": "data_pipelines.pipeline",
    "eval_records": "data_pipelines.pipeline",
    "to_global_batch": "data_pipelines.pipeline",
    "tokenizer_for": "data_pipelines.pipeline",
    "load_tokenizer": "data_pipelines.tokenizers",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'data_pipelines' has no attribute {name!r}")
