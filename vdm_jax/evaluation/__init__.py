"""Evaluation metrics: FVD (I3D), PSNR/SSIM/LPIPS, moving_digits text alignment, summaries, video IO.

Heavy pieces (I3D, LPIPS) are imported from their submodules on demand, e.g.
``from vdm_jax.evaluation.fvd import I3DFeatureExtractor``.
"""
