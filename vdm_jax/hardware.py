"""Accelerator facts used for MFU and memory budgets: one table for the whole project."""

from __future__ import annotations

# bf16 dense peak FLOP/s and HBM bytes per device, keyed by a substring of device_kind (lower case).
# First match wins, so "v5 lite" precedes "v5".
DEVICE_SPECS: dict[str, tuple[float, float]] = {
    "h200": (989e12, 141e9), "h100": (989e12, 80e9), "a100": (312e12, 80e9),
    "v6 lite": (918e12, 32e9), "v6e": (918e12, 32e9), "v5 lite": (197e12, 16e9), "v5e": (197e12, 16e9),
    "v5p": (459e12, 95e9), "v5": (459e12, 95e9), "v4": (275e12, 32e9),
}


def device_spec(kind: str) -> tuple[float | None, float | None]:
    """(peak bf16 FLOP/s, HBM bytes) for a ``device_kind`` string, or (None, None) when unknown."""
    kind = kind.lower()
    for key, spec in DEVICE_SPECS.items():
        if key in kind:
            return spec
    return None, None
