"""Video U-Net (Flax NNX) and its analytic FLOP counter (``vdm_jax.models.flops``)."""

from vdm_jax.models.unet import (ModelOutput, VideoUNet, abstract_model, attention_levels,  # noqa: I001
                                 compute_dtype, param_count, remat_policy)

__all__ = ["ModelOutput", "VideoUNet", "abstract_model", "attention_levels", "compute_dtype", "param_count",
           "remat_policy"]
