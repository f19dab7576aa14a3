"""Parity with lucidrains/video-diffusion-pytorch ``Unet3D(dim=64, dim_mults=(1, 2, 4, 8))``.

The peer (41.8M parameters; 16x64x64 clips, batch 8, bf16 autocast) was measured on an H200 at
34.3 clips/s eager and 57.8 clips/s with torch.compile. This
config is the closest U-Net of this framework, for a same-chip comparison:

    python -m benchmarks.train_throughput --config=configs/parity.py --batch=8

Choices (peer -> here):
* channels 64 x (1, 2, 4, 8), 1x3x3 convs, GroupNorm+SiLU residual blocks with time FiLM -> same;
* 2 ResNet blocks and one spatial + one temporal attention per level on the way down, 2 + 1 + 1 on
  the way up -> ``num_res_blocks=1`` (each U-Net block here is ResBlock + spatial + temporal
  attention; the up path has ``num_res_blocks + 1`` blocks): 3 ResBlocks and 3 attention pairs per
  level. ``num_res_blocks=2`` (``blocks=2``) would give 74.2M parameters, far from the peer's 41.8M;
* attention: 8 heads x 32 dims -> head_dim 32 (heads = channels / 32), temporal attention at every
  level with a learned relative-position bias (peer: relative bias + rotary);
* spatial attention: the peer's is *linear* attention (O(S), cheap) at every level; here it is full
  softmax attention, so it is kept at 32/16/8 and left out at 64x64 (``full_attn`` adds it: +213
  GFLOP per clip for a layer the peer does not compute in that form);
* time embedding 4 x 64 = 256 -> cond_dim 256; unconditional (no text), no dropout, eps target.

Result: 51.2M parameters (``python -c "from configs import parity; ..."``, see BUILD_NOTES.md),
312 GFLOP per clip forward (analytic) against the peer's ~250 (its measured 4.4% MFU at 57.8
clips/s): this config does more work per clip than the peer.

Arguments (comma separated): ``batch=N``, ``full_attn``, ``blocks=N``, ``smoke`` (CPU sized).
"""

from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, batch=0, full_attn=False, blocks=1, smoke=False)
    c = common.base_config()
    c.name = "parity_unet3d"
    c.data.dataset = "moving_digits"  # the benchmark uses synthetic batches; any dataset works
    c.data.num_frames = 16
    c.data.resolution = 64
    c.model.base_channels = 64
    c.model.channel_mults = (1, 2, 4, 8)
    c.model.num_res_blocks = a.blocks
    c.model.attention_resolutions = (64, 32, 16, 8) if a.full_attn else (32, 16, 8)
    c.model.head_dim = 32
    c.model.num_heads = 0
    c.model.cond_dim = 256
    c.model.dropout = 0.0
    c.model.text_encoder = "none"
    c.model.cross_attention = False
    c.model.dtype = "bfloat16"
    c.model.attention_backend = "auto"
    c.model.remat = "none"
    c.diffusion.target = "eps"
    c.sampling.name = "ddim"
    c.sampling.steps = 50
    c.sampling.guidance_weight = 0.0
    c.optimizer.learning_rate = 1e-4
    c.training.global_batch_size = a.batch or 8
    c.training.text_drop_prob = 0.0
    c.training.ema_decay = 0.995
    if a.smoke:
        c.name = "parity_unet3d_smoke"
        c.data.num_frames = 4
        c.data.resolution = 16
        c.model.base_channels = 8
        c.model.channel_mults = (1, 2)
        c.model.attention_resolutions = (8,)
        c.model.head_dim = 8
        c.model.cond_dim = 32
        c.model.dtype = "float32"
    return c
