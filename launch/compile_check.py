"""Compile the train step ahead of time for a target topology: does it fit, and how fast could it be?

    python -m launch.compile_check --config=configs/vdm_ucf101.py --topology=v5e:4x4 --memory_budget_gb=16
    python -m launch.compile_check --config=configs/moving_digits.py:smoke --topology=cpu:8

Nothing is allocated: the train state and the batch are abstract (shapes + shardings on the
target mesh), and the step is the train program's (``vdm_jax.training.program.TrainProgram``),
lowered and compiled exactly as training runs it. Prints
per-device memory from XLA's buffer assignment (arguments, outputs, temporaries, peak), the analytic
FLOPs of one step (``vdm_jax.models.flops.forward_flops`` x 3) and the step time a given MFU would
mean. Exits with status 1 when the peak does not fit ``--memory_budget_gb`` per device.

``--text_encoder=t5-v1_1-xxl`` (a preset of ``vdm_jax.models.t5.PRESETS`` or a Hugging Face T5
directory; only its config.json is read) trains on that encoder's stored embeddings
(``model.text_encoder=precomputed`` with its width) and also compiles the frozen encoder's forward
(bfloat16 weights sharded by the mesh rules, ``global_batch_size`` prompts of ``max_text_len``
tokens: what sampling and the periodic samples run next to the model) and reports its memory.
The verdict covers the train step and, separately, the encoder.

Config overrides: ``--config.a.b=value`` (e.g. ``--config.mesh.fsdp=8``).

``--topology``: ``attached`` (the devices of this machine, default), ``cpu:N`` (N fake CPU devices,
set before JAX starts its backend), or a TPU topology name for
``jax.experimental.topologies.get_topology_desc``
such as ``v5e:4x4`` or ``v4:2x2x2`` (needs libtpu installed; no TPU attached is needed).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence

import jax
from absl import app, flags
from jax.experimental import topologies

from launch import cli
from vdm_jax import hardware
from vdm_jax.config import Config, ConfigError, replace
from vdm_jax.models import t5
from vdm_jax.sharding.mesh import describe, make_mesh
from vdm_jax.training.program import TrainProgram

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Report:
    topology: str
    num_devices: int
    device_kind: str
    mesh: str
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int
    peak_bytes: int  # per device
    step_flops: float  # whole step, all devices
    peak_flops_per_device: float | None

    def step_time(self, mfu: float) -> float | None:
        if not self.peak_flops_per_device:
            return None
        return self.step_flops / (mfu * self.peak_flops_per_device * self.num_devices)


def topology_devices(topology: str, num_slices: int = 1) -> list:
    if topology in ("attached", "") or topology.startswith("cpu:"):
        devices = jax.devices()
        if topology.startswith("cpu:") and len(devices) != int(topology[4:]):
            raise ValueError(f"--topology={topology}: JAX already started with {len(devices)} devices")
        return devices
    kwargs = {"num_slices": num_slices} if num_slices > 1 else {}
    try:
        return list(topologies.get_topology_desc(topology_name=topology, platform="tpu", **kwargs).devices)
    except Exception as e:  # noqa: BLE001 - libtpu missing, unknown name: one clear line
        raise ValueError(f"--topology={topology}: cannot build this TPU topology "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def compile_step(config: Config, devices: Sequence, topology: str = "attached") -> Report:
    """Lower and compile the train step for ``devices``; memory from XLA, FLOPs from the formula."""
    program = TrainProgram.create(config, make_mesh(config.mesh, devices))
    mem = hardware.xla_memory(program.compile_train_step())
    kind = devices[0].device_kind
    return Report(topology=topology, num_devices=len(devices), device_kind=kind, mesh=describe(program.mesh),
                  argument_bytes=mem["argument"], output_bytes=mem["output"], alias_bytes=mem["alias"],
                  temp_bytes=mem["temp"], peak_bytes=mem["peak"], step_flops=program.step_flops,
                  peak_flops_per_device=program.peak_flops)


@dataclasses.dataclass(frozen=True)
class EncoderReport:
    name: str
    params: int
    argument_bytes: int  # per device: the sharded bfloat16 weights and the token batch
    output_bytes: int
    temp_bytes: int
    peak_bytes: int
    forward_flops: float


def with_text_encoder(config: Config, name_or_dir: str) -> Config:
    """``config`` training on ``name_or_dir``'s stored embeddings (precomputed, its d_model)."""
    cfg = t5.config_from(name_or_dir)
    return replace(config, model={"text_encoder": "precomputed", "precomputed_text_dim": cfg.d_model})


def compile_text_encoder(config: Config, devices: Sequence, name_or_dir: str) -> EncoderReport:
    """Compile the frozen T5 forward (bfloat16, sharded by ``mesh.rules``) on the config's mesh."""
    cfg = t5.config_from(name_or_dir)
    mesh = make_mesh(config.mesh, devices)
    b, length = config.training.global_batch_size, config.model.max_text_len
    mem = hardware.xla_memory(t5.lower_sharded(cfg, mesh, config.mesh.rules, b, length).compile())
    return EncoderReport(name=name_or_dir, params=t5.param_count(cfg), argument_bytes=mem["argument"],
                         output_bytes=mem["output"], temp_bytes=mem["temp"], peak_bytes=mem["peak"],
                         forward_flops=t5.forward_flops(cfg, b, length))


def format_encoder_report(r: EncoderReport, batch: int, length: int) -> str:
    return "\n".join([
        f"frozen text encoder {r.name}: {r.params / 1e6:,.1f}M parameters (bfloat16), forward of {batch} x "
        f"{length} tokens = {r.forward_flops:.4g} FLOPs; per-device memory:",
        f"  arguments    {_size(r.argument_bytes)}",
        f"  outputs      {_size(r.output_bytes)}",
        f"  temporaries  {_size(r.temp_bytes)}",
        f"  peak         {_size(r.peak_bytes)}"])


def _size(n: float) -> str:
    return f"{n / GIB:.3f} GiB" if n >= GIB else f"{n / 2**20:.2f} MiB"


def format_report(r: Report, mfus: Sequence[float], budget_bytes: float | None) -> str:
    lines = [f"topology: {r.topology} ({r.num_devices} x {r.device_kind}), mesh {r.mesh}",
             "per-device memory:",
             f"  arguments    {_size(r.argument_bytes)}",
             f"  outputs      {_size(r.output_bytes)} (aliased with donated args: {_size(r.alias_bytes)})",
             f"  temporaries  {_size(r.temp_bytes)}",
             f"  peak         {_size(r.peak_bytes)}"
             + (f" of a {_size(budget_bytes)} budget" if budget_bytes else ""),
             f"step FLOPs (analytic, fwd x 3): {r.step_flops:.4g} "
             f"({r.step_flops / r.num_devices:.4g} per device)"]
    if r.peak_flops_per_device:
        for mfu in mfus:
            t = r.step_time(mfu)
            lines.append(f"  at {mfu:.0%} MFU: {t * 1e3:.1f} ms/step "
                         f"(peak {r.peak_flops_per_device / 1e12:.0f} TFLOP/s per device)")
    else:
        lines.append("  step time: unknown peak FLOP/s for this device (pass --peak_tflops)")
    return "\n".join(lines)


def verdict(report: Report, budget_bytes: float | None) -> tuple[bool, str]:
    """(fits, one line): the step fits when its per-device peak is within the budget."""
    if not budget_bytes:
        return True, "no memory budget given (--memory_budget_gb): not checked"
    if report.peak_bytes > budget_bytes:
        return False, (f"DOES NOT FIT: peak {report.peak_bytes / 1e9:.4g} GB > budget "
                       f"{budget_bytes / 1e9:.4g} GB per device")
    return True, (f"fits: peak {report.peak_bytes / 1e9:.4g} GB <= budget {budget_bytes / 1e9:.4g} GB "
                  "per device")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    F = flags.FLAGS
    if F.topology.startswith("cpu:"):  # before JAX starts its backend (the first jax.devices())
        jax.config.update("jax_platforms", "cpu")
        jax.config.update("jax_num_cpu_devices", int(F.topology[4:]))
    config = cli.typed_config(F.config)
    try:
        if F.text_encoder:
            config = with_text_encoder(config, F.text_encoder)
        devices = topology_devices(F.topology, F.num_slices)
        part = "train step"
        report = compile_step(config, devices, F.topology)
        part = "text encoder"
        encoder = compile_text_encoder(config, devices, F.text_encoder) if F.text_encoder else None
    except (ConfigError, ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    except Exception as e:  # noqa: BLE001 - XLA refuses to compile what cannot fit: one line, exit 1
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        sys.exit(f"DOES NOT FIT ({F.topology}, {part}): {str(e).splitlines()[0]}")
    if F.peak_tflops:
        report = dataclasses.replace(report, peak_flops_per_device=F.peak_tflops * 1e12)
    budget = F.memory_budget_gb * 1e9 if F.memory_budget_gb else hardware.device_spec(report.device_kind)[1]
    print(f"config: {cli.config_spec()} ({config.name})")
    print(format_report(report, F.mfu, budget))
    fits, message = verdict(report, budget)
    print(message, file=sys.stdout if fits else sys.stderr)
    if encoder is not None:
        print(format_encoder_report(encoder, config.training.global_batch_size, config.model.max_text_len))
        enc_fits, enc_message = verdict(dataclasses.replace(report, peak_bytes=encoder.peak_bytes), budget)
        print(f"text encoder: {enc_message}", file=sys.stdout if enc_fits else sys.stderr)
        fits = fits and enc_fits
    if not fits:
        sys.exit(1)


if __name__ == "__main__":
    cli.define_config_flag()
    flags.DEFINE_string("topology", "attached", "attached | cpu:N | a TPU topology name such as v5e:4x4.")
    flags.DEFINE_integer("num_slices", 1, "TPU slices (multi-slice topologies).")
    flags.DEFINE_float("memory_budget_gb", 0.0, "Per-device budget in GB (1e9 bytes); default: the "
                       "device's HBM when known. Exit 1 when the step's peak exceeds it.")
    flags.DEFINE_multi_float("mfu", [0.3, 0.5], "MFUs to turn into step times.")
    flags.DEFINE_float("peak_tflops", 0.0, "Peak dense TFLOP/s per device (default: known device table).")
    flags.DEFINE_string("text_encoder", "", "Frozen T5 preset (t5-v1_1-xxl, t5-v1_1-xl, umt5-xxl) or a "
                        "Hugging Face T5 directory: train on its stored embeddings, compile it too.")
    app.run(main, flags_parser=cli.parse_flags)
