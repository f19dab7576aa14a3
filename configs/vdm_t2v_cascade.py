"""Paper-scale cascade stages next to ``configs/vdm_t2v_small.py`` (the 16x64x64 base).

``ssr`` (default): spatial super-resolution 16x64x64 -> 16x128x128 (Imagen Video's SSR stages
in spirit: no spatial attention at the high-resolution levels, temporal attention everywhere,
noise-conditioning augmentation). ``tsr``: temporal super-resolution 8 -> 16 frames at 64x64, for a
base trained with ``--config.data.num_frames=8``. Both read the base recipe's text encoder,
tokenizer and data settings; ``batch=N`` overrides the global batch.

    python -m launch.train --config=configs/vdm_t2v_cascade.py:ssr --workdir=/runs/ssr \\
        --config.data.dataset=/data/video_folder/NAME/1.0.0
    python -m launch.sample --workdir=/runs/t2v --cascade=/runs/ssr --prompt="..." --out=out.mp4
"""

from configs import vdm_t2v_small
from configs.common import parse_arg


def get_config(arg: str | None = None):
    a = parse_arg(arg, ssr=False, tsr=False, batch=0)
    if a.ssr and a.tsr:
        raise ValueError("choose one stage: ssr or tsr")
    c = vdm_t2v_small.get_config(f"batch={a.batch}" if a.batch else None)
    c.model.noise_aug_logsnr_min = 0.0
    c.model.noise_aug_logsnr_max = 12.0
    c.sampling.noise_aug_logsnr = 5.0
    if a.tsr:
        c.name = "vdm_t2v_tsr"
        c.model.conditioning = "temporal_sr"
        c.model.conditioning_factor = 2
        c.data.num_frames = 16
        c.data.resolution = 64
    else:
        c.name = "vdm_t2v_ssr"
        c.model.conditioning = "spatial_sr"
        c.model.conditioning_factor = 2
        c.data.resolution = 128
        c.model.channel_mults = (1, 2, 4, 8, 8)  # 128, 64, 32, 16, 8 px levels
        c.model.attention_resolutions = (8, 16, 32)
        c.training.global_batch_size = a.batch or 64
    return c
