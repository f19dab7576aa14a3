"""Shared pieces of the config files: plain ml_collections data, no library imports.

``base_config()`` lists every field of ``vdm_jax.config.Config`` with its default, so that any
field can be overridden from the command line (``--config.a.b=value``) while a misspelled one
fails (the ConfigDict is locked).  ``tests/test_config.py`` checks that it matches the typed
dataclasses exactly.
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, **defaults):
    """Parse ``"smoke,variant=b,steps=10"`` into a typed ConfigDict.

    Each key must appear in ``defaults``; values are converted to the type of the default.
    A bare word ``smoke`` means ``smoke=True``.
    """
    out = ml_collections.ConfigDict(dict(defaults))
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(f"unknown config argument {key!r}; allowed: {sorted(defaults)}")
        kind = type(defaults[key])
        if not _:
            if kind is not bool:
                raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
            out[key] = True
        elif kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"config argument {key!r} must be true/false, got {value!r}")
            out[key] = value.lower() in ("true", "1")
        else:
            try:
                out[key] = kind(value)
            except ValueError:
                raise ValueError(f"config argument {key!r} must be {kind.__name__}, got {value!r}") from None
    return out


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "moving_digits"

    c.model = m = ml_collections.ConfigDict()
    m.in_channels = 3
    m.base_channels = 32
    m.channel_mults = (1, 2, 2)
    m.num_res_blocks = 1
    m.attention_resolutions = (8,)
    m.head_dim = 32
    m.num_heads = 0
    m.dropout = 0.0
    m.cond_dim = 128
    m.temporal_attention = True
    m.temporal_rel_pos_buckets = 32
    m.temporal_rel_pos_max_distance = 64
    m.temporal_abs_pos = False
    m.temporal_conv = False
    m.frame_conditioning = False
    m.frame_embedding = False
    m.pixel_embedding = False
    m.mid_space_time_attention = False
    m.frame_text_pooling = False
    m.text_bag_of_words = False
    m.layout_grid = 0
    m.frame_text_product = False
    m.position_zero_init = True
    m.cross_attention = True
    m.text_encoder = "transformer"
    m.vocab_size = 260
    m.max_text_len = 48
    m.text_dim = 128
    m.text_layers = 2
    m.text_heads = 4
    m.precomputed_text_dim = 0
    m.attention_backend = "auto"
    m.cudnn_min_seq_len = 256
    m.dtype = "float32"
    m.remat = "none"
    m.fast_cpu_conv_grad = False
    m.resolution = 32

    c.diffusion = d = ml_collections.ConfigDict()
    d.schedule = "cosine"
    d.logsnr_min = -20.0
    d.logsnr_max = 20.0
    d.shift_base_resolution = 64
    d.logsnr_shift = 0.0
    d.target = "eps"
    d.loss_weighting = "none"
    d.min_snr_gamma = 5.0
    d.time_sampling = "low_discrepancy"

    c.sampling = s = ml_collections.ConfigDict()
    s.name = "ddim"
    s.steps = 64
    s.guidance_weight = 1.0
    s.ancestral_gamma = 0.3
    s.ddim_eta = 0.0
    s.langevin_delta = 0.1
    s.langevin_steps = 1
    s.dynamic_threshold = 0.0
    s.clip_x0 = True
    s.reconstruction_weight = 9.0
    s.conditioning_method = "reconstruction"

    c.data = dd = ml_collections.ConfigDict()
    dd.dataset = "moving_digits"
    dd.data_dir = ""
    dd.source_dir = ""
    dd.num_frames = 8
    dd.resolution = 32
    dd.train_split = "train"
    dd.eval_split = "test"
    dd.tokenizer = "byte"
    dd.sentencepiece_vocab_size = 512
    dd.shuffle_seed = 0
    dd.worker_count = 0
    dd.worker_buffer_size = 2
    dd.random_flip = False
    dd.images_per_video = 0
    dd.num_train_clips = 4000
    dd.num_test_clips = 256
    dd.num_images = 2000
    dd.generation_seed = 0
    dd.max_objects = 2
    dd.fps = 8.0
    dd.clip_stride = 0
    dd.captions_file = ""
    dd.video_key = "video"
    dd.caption_key = "caption"
    dd.text_encoder_dir = ""

    c.optimizer = o = ml_collections.ConfigDict()
    o.learning_rate = 3e-4
    o.lr_schedule = "constant"
    o.warmup_steps = 100
    o.min_lr_ratio = 0.1
    o.beta1 = 0.9
    o.beta2 = 0.99
    o.eps = 1e-8
    o.weight_decay = 0.0
    o.grad_clip_norm = 1.0

    c.training = t = ml_collections.ConfigDict()
    t.num_train_steps = 1000
    t.global_batch_size = 16
    t.microbatches = 1
    t.seed = 0
    t.text_drop_prob = 0.1
    t.ema_decay = 0.999
    t.ema_warmup = True
    t.log_every = 10
    t.checkpoint_every = 500
    t.keep_checkpoints = 2
    t.keep_best = 1
    t.eval_every = 500
    t.eval_batches = 4
    t.sample_every = 1000
    t.num_sample_prompts = 4
    t.resume_from = ""
    t.init_weights_from = ""
    t.profile_steps = ()
    t.async_checkpointing = True

    c.mesh = me = ml_collections.ConfigDict()
    me.data = -1
    me.fsdp = 1
    me.tensor = 1
    me.context = 1
    me.dcn_data = 1
    me.dcn_fsdp = 1
    me.rules = default_rules()

    c.evaluation = e = ml_collections.ConfigDict()
    e.num_fvd_clips = 64
    e.fvd_batch_size = 16
    e.num_alignment_clips = 64
    e.prediction_context_frames = 2
    e.num_prediction_clips = 16
    e.eval_logsnrs = (-4.0, 0.0, 4.0)
    e.probe_logsnrs = (-8.0, -6.0, -4.0, -2.0, 0.0)
    e.num_probe_clips = 128
    e.batch_size = 16
    e.follow_poll_seconds = 10.0
    e.lpips = True
    e.lpips_net = "alexnet"
    e.fvd_feature_layer = "logits"
    e.fvd_i3d_frames = 16
    e.fvd = True
    e.loss_batches = 0
    e.seed = 0
    return c


def default_rules() -> tuple:
    """Logical axis -> mesh axis rules, first match wins (weights, then activations)."""
    return (
        # weights
        ("embed", "fsdp"),  # input-feature dim of dense/conv kernels: FSDP shards it
        ("mlp", "tensor"),  # hidden dim of MLPs / output channels: tensor parallel
        ("heads", "tensor"),
        ("kv", None),
        ("conv_in", "fsdp"),
        ("conv_out", "tensor"),
        ("norm", None),
        ("vocab", None),
        ("rel_pos", None),
        # activations
        ("act_batch", ("data", "fsdp")),
        ("act_frames", "context"),  # spatial layers shard the frame axis over `context`
        ("act_height", None),
        ("act_time", None),
        ("act_height_t", "context"),  # temporal layers shard the height axis over `context`
        ("act_width", None),
        ("act_embed", None),
        ("act_heads", "tensor"),
        ("act_mlp", "tensor"),
        ("act_tokens", None),
    )
