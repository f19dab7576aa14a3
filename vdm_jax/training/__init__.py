"""Sharded training: the train program (``program``), the loop (``loop.train_and_evaluate``), its
data, metrics and periodic samples.

Nothing is imported here, so that ``vdm_jax.training.program`` stays free of the data pipeline
(the benchmarks import it on machines without grain or tfds).
"""
