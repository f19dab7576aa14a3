"""Default XLA flags for NVIDIA GPUs, set before JAX initialises its backends.

``set_default_gpu_flags()`` appends the flags of :data:`DEFAULT_GPU_FLAGS` to ``XLA_FLAGS``:

* only when a GPU looks present (``nvidia-smi`` on the PATH or ``/proc/driver/nvidia`` exists),
  unless ``JAX_PLATFORMS`` names platforms without ``cuda``/``gpu``;
* only the flags whose name is not already in ``XLA_FLAGS`` (the user's value wins);
* never when ``VDM_DEFAULT_XLA_FLAGS=0`` (an escape hatch: XLA aborts the process on a flag name it
  does not know, so a jaxlib that dropped one of these needs a way out).

It must run before the first JAX computation (JAX reads ``XLA_FLAGS`` once, when it creates its
backends); importing ``jax`` first is fine. The flags are all ``xla_gpu_*``: the CPU backend
parses and ignores them (tested), so a false GPU detection costs nothing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import MutableMapping

# Each is documented in the JAX GPU performance tips / NVIDIA JAX-Toolbox pages and exists in
# jaxlib 0.10.2 (checked: XLA aborts on an unknown flag, and these pass).
DEFAULT_GPU_FLAGS: tuple[str, ...] = (
    # Overlap collectives (data/fsdp gradient reductions, all-gathers) with compute.
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    # Fewer, larger collectives for the many small parameter tensors of a U-Net (multi-GPU only).
    "--xla_gpu_all_reduce_combine_threshold_bytes=134217728",
    "--xla_gpu_all_gather_combine_threshold_bytes=134217728",
    "--xla_gpu_reduce_scatter_combine_threshold_bytes=67108864",
)

OPT_OUT_ENV = "VDM_DEFAULT_XLA_FLAGS"


def gpu_present(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether an NVIDIA GPU is likely usable, decided without initialising JAX."""
    env = os.environ if environ is None else environ
    platforms = env.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu")):
        return False
    if env.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia/version")


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0].strip()


def merge_flags(existing: str, defaults: tuple[str, ...]) -> tuple[str, list[str]]:
    """``existing`` plus each default whose name it does not already set: (new value, added)."""
    present = {_flag_name(f) for f in existing.split()}
    added = [f for f in defaults if _flag_name(f) not in present]
    return " ".join([*existing.split(), *added]), added


def set_default_gpu_flags(environ: MutableMapping[str, str] | None = None, *,
                          force: bool = False) -> list[str]:
    """Add the missing :data:`DEFAULT_GPU_FLAGS` to ``XLA_FLAGS`` when a GPU is present.

    Returns the flags added (empty when none). ``force`` skips the GPU detection (tests).
    """
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return []
    if not force and not gpu_present(env):
        return []
    value, added = merge_flags(env.get("XLA_FLAGS", ""), DEFAULT_GPU_FLAGS)
    if added:
        env["XLA_FLAGS"] = value
    return added
