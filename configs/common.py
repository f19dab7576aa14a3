"""Shared pieces of the config files: the defaults and the ``FILE:ARG`` parser.

``base_config()`` is every field of ``vdm_jax.config.Config`` with its default, taken from the
dataclasses (the one place defaults are written), as a ConfigDict: any field can be overridden
from the command line (``--config.a.b=value``) while a misspelled one fails (the ConfigDict is
locked).
"""

from __future__ import annotations

import ml_collections

from vdm_jax.config import Config, to_dict


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
    """The defaults of ``vdm_jax.config.Config`` (enums as their values, sequences as tuples)."""
    return ml_collections.ConfigDict(to_dict(Config(), sequence=tuple))


def apply_motion_recipe(c: ml_collections.ConfigDict) -> None:
    """The resolution-independent part of the ``moving_digits`` Quickstart's motion recipe
    (BUILD_NOTES, "Shift -3 with the mix at batch 8"): a learned vector per caption token and the
    frame index in every block's conditioning; three quarters of every batch at log-SNR shifted by
    -3 (more noise) and a quarter back on the unshifted schedule, for the fine detail; the sampler
    on the unshifted grid (``grid_shift`` undoes the training shift)."""
    c.model.word_conditioning = True
    c.model.frame_conditioning = True
    c.diffusion.logsnr_shift = -3.0
    c.diffusion.train_mix_fraction = 0.25
    c.diffusion.train_mix_shift = 3.0
    c.sampling.grid_shift = 3.0
