r"""Training throughput: clips/s, step time, analytic MFU, compile time and memory of the real train step.

    python -m benchmarks.train_throughput --config=configs/vdm_ucf101.py --batch=8 [--steps=10]
    python -m benchmarks.train_throughput --config=configs/parity.py --batch=8
    python -m benchmarks.train_throughput --config=configs/moving_digits.py:smoke --devices=1
    python -m benchmarks.train_throughput --config=configs/vdm_ucf101.py --batch=16 --find_max_batch
    python -m benchmarks.train_throughput --config=... --config.model.remat=none --profile_dir=/tmp/trace

The state is created abstract-first and sharded over the mesh of ``--devices`` local devices, and
the step is the train program's (``vdm_jax.training.program.TrainProgram``: explicit shardings,
state donated), exactly what the training loop runs. Batches
are synthetic (the batch contract's shapes and dtypes; no data pipeline, no host-to-device copy
inside the timing: see ``benchmarks.loader`` for the pipeline). ``--warmup`` steps, then the
median of ``--steps`` individually waited-for steps.

MFU = 3 x analytic forward FLOPs (``vdm_jax.models.flops``) x batch / (step time x peak x devices),
with the dense bf16 peak of the device (H100/H200 989, TPU v5e 197, v5p 459, v6e 918 TFLOP/s); not
reported on CPU. ``--find_max_batch`` compiles the step at doubling batch sizes (fast compiles, no
autotuning) and reads XLA's memory analysis until the step no longer fits the device's memory,
bisects, then runs the largest predicted batch for real to confirm it. The last line printed is
one JSON object.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from benchmarks import common
from vdm_jax import config as vconfig
from vdm_jax import hardware, xla_flags
from vdm_jax.sharding.mesh import describe, make_mesh
from vdm_jax.training.program import TrainProgram

# Compile options for memory probes: skip GEMM/conv autotuning (it only picks faster kernels).
_FAST_COMPILE = {"xla_gpu_autotune_level": 0}


def with_batch(config: vconfig.Config, batch: int) -> vconfig.Config:
    return vconfig.replace(config, training={"global_batch_size": batch})


def make_program(config: vconfig.Config, batch: int, devices: list) -> TrainProgram:
    """The train program of ``config`` at global batch ``batch`` on a mesh of ``devices``."""
    config = with_batch(config, batch)
    mesh = make_mesh(config.mesh, devices)
    shards = mesh.shape["data"] * mesh.shape["fsdp"] * config.training.microbatches
    if batch % shards:
        raise ValueError(f"--batch={batch} must be divisible by data*fsdp*microbatches={shards} "
                         f"(mesh {describe(mesh)})")
    return TrainProgram.create(config, mesh)


class _Stepper:
    """Calls the compiled step on its own (donated) state: ``stepper() -> (state, metrics)``."""

    def __init__(self, compiled, state, data):
        self.compiled, self.state, self.data, self.metrics = compiled, state, data, None

    def __call__(self):
        self.state, self.metrics = self.compiled(self.state, self.data)
        return self.state, self.metrics


def _profile(stepper: _Stepper, profile_dir: str, steps: int) -> str | None:
    """Trace ``steps`` steps into ``profile_dir``; a profiler failure is returned, never raised."""
    try:
        jax.profiler.start_trace(profile_dir)
        try:
            for _ in range(steps):
                jax.block_until_ready(stepper())
        finally:
            jax.profiler.stop_trace()
    except Exception as e:  # noqa: BLE001 - e.g. CUPTI missing: the timings above still stand
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def run(config: vconfig.Config, batch: int, *, steps: int = 10, warmup: int = 3, devices: list | None = None,
        profile_dir: str = "", profile_steps: int = 3, xla_flags_added: tuple[str, ...] = ()
        ) -> dict[str, Any]:
    """Create the sharded state, compile the step, time it. Returns the result dict (JSON-friendly)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}")
    devices = devices or jax.local_devices()
    program = make_program(config, batch, devices)
    config = program.config
    t0 = time.perf_counter()
    state = jax.block_until_ready(program.init_state())
    init_s = time.perf_counter() - t0
    data = program.place_batch(common.synthetic_batch(config, batch))
    t0 = time.perf_counter()
    compiled = program.compile_train_step()
    compile_s = time.perf_counter() - t0
    with jax.set_mesh(program.mesh):
        stepper = _Stepper(compiled, state, data)
        del state  # donated: the stepper owns the only reference
        times = common.time_steps(stepper, steps, warmup)
        profile_error = _profile(stepper, profile_dir, profile_steps) if profile_dir else None
    metrics = {k: float(v) for k, v in jax.device_get(stepper.metrics).items()}
    del stepper  # free the device memory before a next run in this process
    summary = common.summarize_times(times)
    flops, dt, m = program.step_flops, summary["step_time_s"], config.model
    mem = hardware.xla_memory(compiled)
    result = {
        "benchmark": "train_throughput", "config": config.name, "platform": devices[0].platform,
        "device_kind": devices[0].device_kind, "num_devices": len(devices), "mesh": describe(program.mesh),
        "batch": batch, "frames": config.data.clip_frames,
        "resolution": config.data.resolution, "dtype": m.dtype.value, "remat": m.remat.value,
        "attention_backend": m.attention_backend.value, "param_count": program.model.num_params,
        "steps": steps, "warmup": warmup, **summary,
        "clips_per_s": batch / dt, "flops_per_step": flops,
        "tflops_per_s_per_device": flops / dt / len(devices) / 1e12,
        "peak_flops_per_device": program.peak_flops, "mfu": program.mfu(1.0 / dt),
        "compile_s": compile_s, "init_s": init_s, **common.memory_stats(devices),
        "xla_argument_bytes": mem["argument"], "xla_temp_bytes": mem["temp"], "xla_peak_bytes": mem["peak"],
        "loss": metrics.get("loss"), "grad_norm": metrics.get("grad_norm"),
        "xla_flags_added": list(xla_flags_added),
    }
    if profile_dir:
        result.update(profile_dir=profile_dir, profile_error=profile_error)
    return result


def probe_peak_bytes(config: vconfig.Config, batch: int, devices: list) -> int:
    """XLA's per-device peak for the step at ``batch``: a compile only, nothing allocated."""
    options = _FAST_COMPILE if devices[0].platform == "gpu" else None
    compiled = make_program(config, batch, devices).compile_train_step(compiler_options=options)
    return hardware.xla_memory(compiled)["peak"]


def _linear_fit(probes: dict[int, int]) -> tuple[float, float] | None:
    """bytes = fixed + per_clip * batch through the smallest and largest probe."""
    if len(probes) < 2:
        return None
    lo, hi = min(probes), max(probes)
    per_clip = (probes[hi] - probes[lo]) / (hi - lo)
    return probes[lo] - per_clip * lo, per_clip


def search_max_batch(probe, start: int, granule: int, budget: float, limit: int, max_probes: int) -> dict:
    """Largest batch with ``probe(batch) <= budget``: doubling up (or halving down) from ``start``, then
    bisection in multiples of ``granule``; at most ``max_probes`` calls of ``probe(batch) -> bytes``."""
    probes: dict[int, int] = {}

    def fits(b: int) -> bool:
        if b not in probes:
            probes[b] = probe(b)
        return probes[b] <= budget

    lo = hi = None
    b = start
    if fits(b):
        lo = b
        while len(probes) < max_probes and 2 * b <= limit:
            b *= 2
            if not fits(b):
                hi = b
                break
            lo = b
    else:
        hi = b
        while len(probes) < max_probes and b // 2 // granule * granule >= granule:
            b = b // 2 // granule * granule
            if fits(b):
                lo = b
                break
            hi = b
    while lo is not None and hi is not None and len(probes) < max_probes:
        mid = (lo + hi) // 2 // granule * granule
        if mid <= lo:
            break
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"max_batch_predicted": lo, "first_over_budget": hi,
            "probes": {str(k): v for k, v in sorted(probes.items())}, "fit": _linear_fit(probes)}


def find_max_batch(config: vconfig.Config, devices: list, start: int, budget: float, *, limit: int,
                   max_probes: int, estimate_budget: float) -> dict[str, Any]:
    """Predict the largest batch from XLA memory analysis, then confirm it by running it."""
    mesh = make_mesh(config.mesh, devices)
    granule = mesh.shape["data"] * mesh.shape["fsdp"] * config.training.microbatches
    found = search_max_batch(lambda b: probe_peak_bytes(config, b, devices), start, granule, budget,
                             limit, max_probes)
    fit = found.pop("fit")
    out: dict[str, Any] = {"memory_budget_bytes": budget, **found, "max_batch": None, "max_batch_run": None}
    if fit is not None and fit[1] > 0:
        fixed, per_clip = fit
        out.update(fixed_bytes=fixed, bytes_per_clip=per_clip, estimate_budget_bytes=estimate_budget,
                   max_batch_estimate=int((estimate_budget - fixed) // per_clip // granule * granule))
    candidate = found["max_batch_predicted"]
    for _ in range(2):  # confirm by running; one step down on an out-of-memory error
        if not candidate:
            break
        try:
            res = run(config, candidate, steps=3, warmup=1, devices=devices)
        except Exception as e:  # noqa: BLE001 - only OOM is expected; anything else is re-raised
            if not common.is_oom(e):
                raise
            gc.collect()  # drop the failed attempt's buffers before the next one
            candidate = max(0, candidate - max(granule, candidate // 8) // granule * granule)
            continue
        out.update(max_batch=candidate, max_batch_run={k: res[k] for k in (
            "batch", "step_time_s", "clips_per_s", "mfu", "peak_memory_bytes", "compile_s")})
        break
    return out


def _print_summary(r: dict[str, Any]) -> None:
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no peak for this device)"
    mem = f"{r['peak_memory_bytes'] / 1e9:.2f} GB" if r["peak_memory_bytes"] else "n/a"
    print(f"{r['config']}: {r['param_count'] / 1e6:.1f}M params, batch {r['batch']} of {r['frames']}x"
          f"{r['resolution']}x{r['resolution']}, {r['dtype']}, remat {r['remat']}, "
          f"{r['num_devices']} x {r['device_kind']} ({r['mesh']})")
    print(f"  step {1e3 * r['step_time_s']:.1f} ms (median of {r['steps']}), {r['clips_per_s']:.2f} clips/s, "
          f"{r['tflops_per_s_per_device']:.1f} TFLOP/s per device, MFU {mfu}")
    print(f"  compile {r['compile_s']:.1f} s, peak memory {mem} "
          f"(XLA peak {r['xla_peak_bytes'] / 1e9:.2f} GB), loss {r['loss']:.4f}")


def _define_flags() -> None:
    """Command-line flags (defined only when run as a program, so importing this module is free)."""
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/vdm_ucf101.py[:ARG].",
                                    lock_config=True)
    flags.DEFINE_integer("batch", 0, "Global batch size (0: the config's training.global_batch_size).")
    flags.DEFINE_integer("steps", 10, "Timed steps (median reported); 0: none (with --find_max_batch).")
    flags.DEFINE_integer("warmup", 3, "Steps run before timing (after the compile).")
    flags.DEFINE_integer("devices", 0, "Local devices in the mesh (0: all).")
    flags.DEFINE_boolean("find_max_batch", False, "Also find the largest batch that fits.")
    flags.DEFINE_integer("max_batch_limit", 4096, "--find_max_batch never tries more than this.")
    flags.DEFINE_integer("max_batch_probes", 6, "--find_max_batch: at most this many compiles.")
    flags.DEFINE_float("memory_budget_gb", 0.0, "Per-device memory budget (1e9 bytes) for --find_max_batch "
                       "(default: the allocator's limit on the device).")
    flags.DEFINE_float("estimate_budget_gb", 76.0, "Also estimate the largest batch for this per-device "
                       "budget (default ~ an 80 GB H100's usable memory).")
    flags.DEFINE_string("profile_dir", "", "Capture a jax.profiler trace of a few steps here.")
    flags.DEFINE_integer("profile_steps", 3, "Steps in the --profile_dir trace.")


def _max_batch(config: vconfig.Config, devices: list, batch: int, limit_bytes: int | None) -> dict[str, Any]:
    F = flags.FLAGS
    budget = F.memory_budget_gb * 1e9 or limit_bytes
    if not budget:
        raise ValueError("--find_max_batch needs a memory limit: this device reports none; "
                         "pass --memory_budget_gb")
    found = find_max_batch(config, devices, batch, float(budget), limit=F.max_batch_limit,
                           max_probes=F.max_batch_probes, estimate_budget=F.estimate_budget_gb * 1e9)
    print(f"  largest batch that fits: {found['max_batch']} (predicted {found['max_batch_predicted']}, "
          f"budget {budget / 1e9:.1f} GB); estimate for {F.estimate_budget_gb:.0f} GB: "
          f"{found.get('max_batch_estimate')}")
    return found


def main(argv):
    F = flags.FLAGS
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if F.config is None:
        raise app.UsageError("--config is required, e.g. --config=configs/vdm_ucf101.py")
    if F.steps == 0 and not F.find_max_batch:
        raise app.UsageError("--steps=0 (no timed run) only makes sense with --find_max_batch")
    added = xla_flags.set_default_gpu_flags()  # before JAX creates its backends
    try:
        config = vconfig.from_configdict(F.config)
        devices = common.select_devices(F.devices)
        batch = F.batch or config.training.global_batch_size
        if F.steps:
            result = run(config, batch, steps=F.steps, warmup=F.warmup, devices=devices,
                         profile_dir=F.profile_dir, profile_steps=F.profile_steps,
                         xla_flags_added=tuple(added))
            _print_summary(result)
        else:
            result = {"benchmark": "train_throughput", "config": config.name, "platform": devices[0].platform,
                      "device_kind": devices[0].device_kind, "num_devices": len(devices), "batch": batch,
                      **common.memory_stats(devices)}
        if F.find_max_batch:
            result["find_max_batch"] = _max_batch(config, devices, batch, result["memory_limit_bytes"])
    except (vconfig.ConfigError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(result, default=_json_default))


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
