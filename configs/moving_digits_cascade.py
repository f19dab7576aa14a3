"""Cascade stages on `moving_digits` (CPU sized): spatial super-resolution 16 -> 32 px and temporal
super-resolution 4 -> 8 frames, next to the base model of ``configs/moving_digits.py``.

    python -m launch.train --config=configs/moving_digits_cascade.py:ssr --workdir=/tmp/md_ssr
    python -m launch.train --config=configs/moving_digits_cascade.py:tsr --workdir=/tmp/md_tsr
    python -m launch.sample --workdir=/tmp/md --cascade=/tmp/md_ssr --prompt="a big red 7 moves left" \\
        --out=red7_32px.gif

Arguments (comma separated): ``ssr`` (default) or ``tsr``; ``smoke`` (tiny, for tests);
``steps=N``, ``batch=N``. A stage is the base U-Net with ``model.conditioning`` set: the lower
stage's video (made on the fly from the high-resolution clip in the data pipeline) is concatenated
with z, with noise-conditioning augmentation (``model.noise_aug_logsnr_*``, ``sampling.noise_aug_logsnr``).
"""

from configs import moving_digits
from configs.common import parse_arg


def get_config(arg: str | None = None):
    a = parse_arg(arg, ssr=False, tsr=False, smoke=False, steps=0, batch=0)
    if a.ssr and a.tsr:
        raise ValueError("choose one stage: ssr or tsr")
    c = moving_digits.get_config("smoke" if a.smoke else None)
    # The stages read the motion from their conditioning video: none of the base model's motion
    # options, and the plain cosine schedule and DDIM grid the stages were measured with.
    c.model.word_conditioning = False
    c.model.frame_conditioning = False
    c.model.position_zero_init = True
    c.model.layout_grid = 0
    c.diffusion.logsnr_shift = 0.0
    c.diffusion.train_mix_fraction = 0.0
    c.diffusion.train_mix_shift = 0.0
    c.sampling.name = "ddim"
    c.sampling.grid_shift = 0.0
    c.model.noise_aug_logsnr_min = 3.0
    c.model.noise_aug_logsnr_max = 12.0
    c.sampling.noise_aug_logsnr = 6.0
    c.sampling.guidance_weight = 1.0
    # The full cascade's text alignment (evaluation.cascade_base_workdir) on 64 captions: every clip
    # runs through both stages.
    c.evaluation.num_alignment_clips = 4 if a.smoke else 64
    if a.tsr:
        # 8 frames of 16x16 given every other frame (the 4-frame base: configs/moving_digits.py
        # with --config.data.num_frames=4).
        c.name = "moving_digits_tsr"
        c.model.conditioning = "temporal_sr"
        c.model.conditioning_factor = 2
        c.data.num_frames = 8
    else:
        # 8 frames of 32x32 given the 16x16 clip: a small U-Net (32, 16, 8 px levels, attention at 8).
        c.name = "moving_digits_ssr"
        c.model.conditioning = "spatial_sr"
        c.model.conditioning_factor = 2
        c.data.resolution = 32
        c.model.base_channels = 16
        c.model.channel_mults = (1, 2, 2)
        c.model.attention_resolutions = (8,)
        c.model.head_dim = 16
        # Residual stage: it generates the clip minus the bilinear upsampling of its input, which
        # is zero on the black background (a plain stage leaves grey noise there after 500 steps).
        c.model.stage_residual = True
        c.sampling.name = "ancestral"
        c.sampling.ancestral_gamma = 0.1
        c.sampling.grid_shift = 2.0
        # Augmentation levels from log-SNR 6 (sigma <= 0.05) up: the stage trusts its input more
        # (with [3, 12] and 450 steps: PSNR 25.7, SSIM 0.638, LPIPS 0.0092; with [6, 12] and 700
        # steps: 28.1 / 0.681 / 0.0056; BUILD_NOTES, "Cascade stages").
        c.model.noise_aug_logsnr_min = 6.0
        # ~2x the base model's cost per clip: batch 8 and 700 steps keep the stage within 15
        # minutes on the 2-core CPU (14:04 measured; see README).
        c.training.global_batch_size = 8
        c.training.num_train_steps = 700
        c.optimizer.warmup_steps = 50  # the stage's own schedule, not the base model's batch-8 one
        c.training.ema_decay = 0.99
        # Every denoised estimate is projected onto the 32x32 clips in [-1, 1] whose 2x2 block
        # means are the input: SSIM 0.681 -> 0.985 on the same checkpoint (bilinear 0.935; the
        # black background comes out black). BUILD_NOTES, "Consistency projection".
        c.sampling.stage_consistency = True
        c.training.checkpoint_every = 350
        c.training.eval_every = 350
        c.training.sample_every = 350
    if a.smoke:  # after the smoke base model (4 frames of 16x16): SSR to 32x32, TSR from 2 frames
        c.name += "_smoke"
        c.data.num_frames = 4
        c.data.resolution = 16 if a.tsr else 32
        c.model.base_channels = 8
        c.model.channel_mults = (1, 2)
        c.model.attention_resolutions = (8,) if a.tsr else (16,)
        c.model.head_dim = 8
        c.training.num_train_steps = 4
        c.training.checkpoint_every = 2
        c.training.eval_every = 2
        c.training.sample_every = 4
    if a.steps:
        c.training.num_train_steps = a.steps
    if a.batch:
        c.training.global_batch_size = a.batch
    return c
