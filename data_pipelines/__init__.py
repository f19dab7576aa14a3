"""Data pipelines for vdm_jax: tfds ArrayRecord datasets, tokenizers, grain streaming and video IO.

Modules (import what you need; this package import is cheap):
- ``moving_digits_spec``: the procedural world (palette, objects, motions, render, captions).
- ``moving_digits``: its tfds builder (ArrayRecord, no TensorFlow).
- ``video_folder``: the user's videos/images + captions -> ArrayRecord shards.
- ``video_io``: pixel conversion ([-1, 1] <-> uint8), decoding videos and images, writing samples.
- ``tokenizers``: byte-level and sentencepiece tokenizers.
- ``sources``: data dirs, ``ensure_prepared``, opening splits (prepared dirs, tfds catalog).
- ``pipeline``: grain train/eval iterators, iterator checkpoints.
- ``text_embeddings``: frozen-encoder caption embeddings stored next to a dataset.
- ``prepare``: ``python -m data_pipelines.prepare --dataset=NAME --data_dir=DIR [...]``.

Of ``vdm_jax`` this package imports only ``vdm_jax.config``. See data_pipelines/README.md.
"""
