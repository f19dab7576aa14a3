"""Analytic forward FLOPs of :class:`VideoUNet` (2 x multiply-accumulates).

Counts every matmul-like op: 3x3 convs (in-bounds taps only: the zero padding of a 'SAME' conv
is not work, which is also how XLA's ``cost_analysis`` counts), dense layers (projections, FiLM,
skips, text encoder, MLPs) and the two attention matmuls (QK^T and PV).  Element-wise work
(norms, activations, softmax, residual adds, pooling) is not counted, the usual convention for
MFU (training step FLOPs = 3 x forward).  It mirrors the layer plan of ``unet.py``.
"""

from __future__ import annotations

from vdm_jax.config import ModelConfig, TextEncoderKind
from vdm_jax.models.unet import attention_levels


def _conv(b: int, t: int, h: int, w: int, cin: int, cout: int) -> float:
    """3x3 'SAME' conv: only in-bounds taps count ((3H-2) x (3W-2) of the 9 H W, as XLA does)."""
    return 2.0 * (3 * h - 2) * (3 * w - 2) * cin * cout * b * t


def _res_block(b, t, h, w, cin, cout, cond_dim) -> float:
    flops = _conv(b, t, h, w, cin, cout) + _conv(b, t, h, w, cout, cout)
    flops += 2.0 * cond_dim * 2 * cout * b  # FiLM
    if cin != cout:
        flops += 2.0 * cin * cout * b * t * h * w  # 1x1 skip
    return flops


def _block(cfg: ModelConfig, b, t, h, w, cin, cout, attention: bool, text_len: int) -> float:
    n = b * t * h * w
    flops = _res_block(b, t, h, w, cin, cout, cfg.cond_dim)
    if attention:
        flops += 4 * 2.0 * cout * cout * n + 4.0 * b * t * (h * w) ** 2 * cout  # spatial
        if cfg.cross_attention and cfg.text_encoder != TextEncoderKind.NONE:
            flops += 2 * 2.0 * cout * cout * n + 2 * 2.0 * cfg.text_dim * cout * b * text_len
            flops += 4.0 * n * text_len * cout
    if cfg.temporal_attention:
        flops += 4 * 2.0 * cout * cout * n + 4.0 * b * h * w * t * t * cout
    return flops


def _text_flops(cfg: ModelConfig, b: int, length: int) -> float:
    if cfg.text_encoder == TextEncoderKind.NONE:
        return 0.0
    d, tokens = cfg.text_dim, b * length
    if cfg.text_encoder == TextEncoderKind.PRECOMPUTED:
        flops = 2.0 * cfg.precomputed_text_dim * d * tokens
    else:
        per_layer = 4 * 2.0 * d * d * tokens + 4.0 * b * length * length * d + 2 * 2.0 * d * 4 * d * tokens
        flops = cfg.text_layers * per_layer
    flops += 2 * 2.0 * d * d * tokens + 4.0 * b * length * d + 2.0 * d * d * b  # attention pooling
    return flops + 2.0 * d * cfg.cond_dim * b  # pooled text -> conditioning


def forward_flops(cfg: ModelConfig, batch: int, frames: int, height: int, width: int,
                  text_len: int | None = None) -> float:
    """FLOPs of one forward pass on a (batch, frames, height, width, C) input.

    ``text_len`` defaults to ``cfg.max_text_len`` (the padded token length).
    """
    b, t, base = batch, frames, cfg.base_channels
    length = cfg.max_text_len if text_len is None else text_len
    attn = attention_levels(cfg)
    flops = 2.0 * base * cfg.cond_dim * b + 2.0 * cfg.cond_dim * cfg.cond_dim * b
    flops += _text_flops(cfg, b, length)
    flops += _conv(b, t, height, width, cfg.in_channels, base)
    h, w, ch, skips = height, width, base, [base]
    levels = len(cfg.channel_mults)
    for i, mult in enumerate(cfg.channel_mults):
        for _ in range(cfg.num_res_blocks):
            flops += _block(cfg, b, t, h, w, ch, base * mult, attn[i], length)
            ch = base * mult
            skips.append(ch)
        if i < levels - 1:
            h, w = h // 2, w // 2
            flops += _conv(b, t, h, w, ch, ch)
            skips.append(ch)
    flops += _block(cfg, b, t, h, w, ch, ch, True, length) + _block(cfg, b, t, h, w, ch, ch, False, length)
    for i, mult in reversed(list(enumerate(cfg.channel_mults))):
        for _ in range(cfg.num_res_blocks + 1):
            flops += _block(cfg, b, t, h, w, ch + skips.pop(), base * mult, attn[i], length)
            ch = base * mult
        if i > 0:
            h, w = h * 2, w * 2
            flops += _conv(b, t, h, w, ch, ch)
    return flops + _conv(b, t, height, width, ch, cfg.in_channels)
