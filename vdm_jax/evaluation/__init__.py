"""The evaluation job and the sample CLI's library side: restoring EMA params read-only, generation
(text to video, prediction, extension), FVD (I3D), PSNR/SSIM/LPIPS, moving_digits text alignment,
the temporal probe and summaries across steps."""
