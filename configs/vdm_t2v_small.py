"""VDM paper recipe: text-to-video "small", 16x64x64 (Ho et al. 2022, App. A).

128 channels, mults 1,2,4,8, 2 res blocks, head dim 64, attention at 8/16/32, eps target,
lr 3e-4, batch 128, EMA 0.9999, no dropout. The paper conditions on BERT-large embeddings; here
the default is the trainable text transformer, or ``model.text_encoder=precomputed`` with
frozen-encoder embeddings precomputed into the data. Joint image-video training with
``images=K`` extra images per video (paper Table 4: 0/4/8 -> FVD 202/68/58).

``motion`` adds the motion recipe of the ``moving_digits`` Quickstart where it does not depend on
the resolution: a learned vector per caption token and the frame index in every block's
conditioning, three quarters of each batch at log-SNR shifted by -3 and a quarter unshifted, the
sampler on the unshifted grid (measured on ``moving_digits`` only; the paper recipe stays the
default).
"""

from configs import common


def get_config(arg: str | None = None):
    a = common.parse_arg(arg, batch=0, images=0, motion=False)
    c = common.base_config()
    c.name = "vdm_t2v_small"
    c.data.dataset = "video_folder"
    c.data.num_frames = 16
    c.data.resolution = 64
    c.data.tokenizer = "sentencepiece"
    c.data.sentencepiece_vocab_size = 8000
    c.data.images_per_video = a.images
    c.model.vocab_size = 8000
    c.model.max_text_len = 64
    c.model.base_channels = 128
    c.model.channel_mults = (1, 2, 4, 8)
    c.model.num_res_blocks = 2
    c.model.attention_resolutions = (8, 16, 32)
    c.model.head_dim = 64
    c.model.cond_dim = 1024
    c.model.text_dim = 512
    c.model.text_layers = 4
    c.model.text_heads = 8
    c.model.dropout = 0.0
    c.model.dtype = "bfloat16"
    c.model.remat = "dots"
    c.diffusion.target = "eps"
    c.sampling.name = "ddim"
    c.sampling.steps = 128
    c.sampling.guidance_weight = 2.0
    c.optimizer.learning_rate = 3e-4
    c.optimizer.warmup_steps = 1000
    c.training.global_batch_size = a.batch or 128
    c.training.num_train_steps = 200_000
    c.training.ema_decay = 0.9999
    c.training.text_drop_prob = 0.1
    c.training.log_every = 100
    c.training.checkpoint_every = 5000
    c.training.eval_every = 5000
    c.training.sample_every = 10000
    c.evaluation.num_fvd_clips = 2048
    if a.motion:
        common.apply_motion_recipe(c)
    return c
