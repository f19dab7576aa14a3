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
