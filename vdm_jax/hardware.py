"""Accelerator facts and compiled-program readouts: one place for peak FLOP/s, HBM and XLA memory.

Used for training MFU, ``launch.compile_check`` and the benchmarks.
"""

from __future__ import annotations

from typing import Any

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


def peak_flops(device: Any) -> float | None:
    """Dense bf16 peak FLOP/s of a JAX device (None on CPU or an unknown accelerator): MFU's unit."""
    return None if device.platform == "cpu" else device_spec(device.device_kind)[0]


def xla_memory(compiled: Any) -> dict[str, int]:
    """Per-device bytes from XLA's buffer assignment of a compiled program
    (``jax.jit(f).lower(...).compile()``): arguments, outputs (``alias``: those donated arguments
    reuse), temporaries, and the peak, never less than live arguments + outputs + temporaries."""
    mem = compiled.memory_analysis()
    out = {k: int(getattr(mem, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "alias", "temp")}
    live = out["argument"] + out["output"] - out["alias"] + out["temp"]
    out["peak"] = max(int(getattr(mem, "peak_memory_in_bytes", 0) or 0), live)
    return out
