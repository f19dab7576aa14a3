"""vdm_jax: text-to-video diffusion models in JAX/Flax NNX."""

__version__ = "0.1.0"
