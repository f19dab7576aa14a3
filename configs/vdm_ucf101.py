"""VDM paper recipe: unconditional UCF101, 16x64x64 (Ho et al. 2022, App. A).

256 channels, mults 1,2,4,8, 2 res blocks, head dim 64, attention at 8/16/32, conditioning
embedding 1024, eps target, lr 3e-4, batch 128, EMA 0.9999, dropout 0.1. Paper hardware: 64-256
TPU-v4 chips. Data: a UCF101 video folder prepared with
``python -m data_pipelines.prepare --dataset=video_folder --source_dir=... --data_dir=...``.
Argument ``batch=N`` overrides the global batch.
"""

from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, batch=0)
    c = common.base_config()
    c.name = "vdm_ucf101"
    c.data.dataset = "video_folder"
    c.data.num_frames = 16
    c.data.resolution = 64
    c.model.base_channels = 256
    c.model.channel_mults = (1, 2, 4, 8)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (8, 16, 32)
    c.model.head_dim = 64
    c.model.cond_dim = 1024
    c.model.dropout = 0.1
    c.model.text_encoder = "none"  # unconditional (class-free) generation
    c.model.cross_attention = False
    c.model.dtype = "bfloat16"
    c.model.remat = "dots"
    c.diffusion.target = "eps"
    c.sampling.name = "ancestral"
    c.sampling.steps = 256
    c.sampling.guidance_weight = 0.0
    c.optimizer.learning_rate = 3e-4
    c.optimizer.warmup_steps = 1000
    c.training.global_batch_size = a.batch or 128
    c.training.num_train_steps = 500_000
    c.training.ema_decay = 0.9999
    c.training.text_drop_prob = 0.0
    c.training.log_every = 100
    c.training.checkpoint_every = 5000
    c.training.eval_every = 5000
    c.training.sample_every = 10000
    c.evaluation.num_fvd_clips = 2048
    return c
