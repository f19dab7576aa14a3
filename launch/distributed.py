"""Multi-process start-up: one call that wraps ``jax.distributed.initialize``.

    info = distributed.initialize(coordinator_address, num_processes, process_id)
    distributed.setup_logging(info, log_dir=workdir + "/logs")
    if distributed.is_primary(): write metrics / samples / config.json

Where the process topology comes from, first match wins:

1. explicit arguments (the ``--coordinator_address/--num_processes/--process_id`` flags of
   ``launch.train``);
2. environment variables, for Kubernetes/JobSet or any launcher: ``VDM_COORDINATOR_ADDRESS``,
   ``VDM_NUM_PROCESSES``, ``VDM_PROCESS_ID`` (falls back to ``JOB_COMPLETION_INDEX``, which an
   Indexed Job / JobSet sets on every pod);
3. SLURM (``SLURM_NTASKS`` > 1 inside an ``srun`` step): JAX's own SLURM detection picks the
   coordinator (first node of the step), the process id (``SLURM_PROCID``) and, with one task per
   GPU, the local GPU (``SLURM_LOCALID``);
4. a multi-host Cloud TPU VM slice (``TPU_WORKER_HOSTNAMES`` with several hosts, or
   ``MEGASCALE_COORDINATOR_ADDRESS``): ``jax.distributed.initialize()`` without arguments;
5. otherwise one process: nothing to do.

``VDM_DISTRIBUTED=0`` skips steps 2-4 (a single process even inside a SLURM allocation).

It must run before any JAX computation (before the first ``jax.devices()``; importing JAX is
fine): it refuses with a one-line error when the backend is already up.

Every process runs the same program (multi-controller SPMD). Only process 0 writes metrics,
samples, TensorBoard events and ``config.json`` (guard with :func:`is_primary`); every process
joins orbax checkpoint saves and restores (``CheckpointManager.save/restore`` are collective:
skipping them on some processes hangs the job), and every process feeds its own slice of the
global batch.
"""

from __future__ import annotations

import dataclasses
import logging as std_logging
import os
import sys
from collections.abc import Mapping, Sequence

import jax
from absl import logging
from jax._src import xla_bridge

ENV_COORDINATOR = "VDM_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "VDM_NUM_PROCESSES"
ENV_PROCESS_ID = "VDM_PROCESS_ID"
ENV_SWITCH = "VDM_DISTRIBUTED"


@dataclasses.dataclass(frozen=True)
class Plan:
    """How to start: ``method`` in {single, flags, env, slurm, tpu}; ``kwargs`` for JAX."""

    method: str
    kwargs: dict


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    method: str  # single | flags | env | slurm | tpu
    process_index: int
    process_count: int
    local_device_count: int
    device_count: int

    @property
    def is_primary(self) -> bool:
        return self.process_index == 0


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def _check_explicit(coordinator: str | None, num: int | None, pid: int | None, source: str) -> None:
    if num is None or num < 1:
        raise ValueError(f"{source}: num_processes must be >= 1 when a coordinator is given, got {num}")
    if num > 1 and not coordinator:
        raise ValueError(f"{source}: coordinator_address (host:port) is required for num_processes={num}")
    if coordinator and ":" not in coordinator:
        raise ValueError(f"{source}: coordinator_address must be host:port, got {coordinator!r}")
    if pid is None or not 0 <= pid < num:
        raise ValueError(f"{source}: process_id must be in [0, {num}), got {pid}")


def _tpu_host_count(env: Mapping[str, str]) -> int:
    hosts = env.get("TPU_WORKER_HOSTNAMES", "") or env.get("TPU_PROCESS_ADDRESSES", "")
    return len([h for h in hosts.split(",") if h.strip()])


def plan(coordinator_address: str | None = None, num_processes: int | None = None,
         process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
         env: Mapping[str, str] | None = None) -> Plan:
    """Decide how to initialize, without touching JAX (pure: testable with a fake ``env``)."""
    env = os.environ if env is None else env
    extra = {"local_device_ids": list(local_device_ids)} if local_device_ids is not None else {}
    if coordinator_address or (num_processes or 1) > 1 or process_id:
        _check_explicit(coordinator_address, num_processes, process_id or 0, "flags")
        if num_processes == 1:
            return Plan("single", {})
        return Plan("flags", dict(coordinator_address=coordinator_address, num_processes=num_processes,
                                  process_id=process_id or 0, **extra))
    if env.get(ENV_SWITCH, "").lower() in ("0", "false", "off", "no"):
        return Plan("single", {})
    num = _env_int(env, ENV_NUM_PROCESSES)
    if num is not None and num > 1:
        pid = _env_int(env, ENV_PROCESS_ID)
        pid = _env_int(env, "JOB_COMPLETION_INDEX") if pid is None else pid
        coordinator = env.get(ENV_COORDINATOR, "")
        _check_explicit(coordinator, num, pid, f"environment ({ENV_NUM_PROCESSES}={num})")
        return Plan("env", dict(coordinator_address=coordinator, num_processes=num, process_id=pid,
                                **extra))
    if (_env_int(env, "SLURM_NTASKS") or 1) > 1 and "SLURM_STEP_NODELIST" in env:
        return Plan("slurm", dict(cluster_detection_method="slurm", **extra))
    if _tpu_host_count(env) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return Plan("tpu", {})
    return Plan("single", {})


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
               log_dir: str | None = None) -> ProcessInfo:
    """Start JAX's multi-controller runtime if this is one of several processes; see module doc.

    Call once per process, before any JAX computation. ``log_dir``: also log to a per-process
    absl log file there (see :func:`setup_logging`).
    """
    p = plan(coordinator_address, num_processes, process_id, local_device_ids)
    if p.method != "single":
        if jax.distributed.is_initialized():
            logging.warning("jax.distributed is already initialized; not initializing again")
        elif xla_bridge.backends_are_initialized():
            raise RuntimeError("launch.distributed.initialize must be called before any JAX computation "
                               "(the JAX backend is already initialized)")
        else:
            logging.info("jax.distributed.initialize via %s: %s", p.method, p.kwargs)
            jax.distributed.initialize(**p.kwargs)
    info = ProcessInfo(method=p.method, process_index=jax.process_index(),
                       process_count=jax.process_count(), local_device_count=jax.local_device_count(),
                       device_count=jax.device_count())
    setup_logging(info, log_dir)
    logging.info("process %d/%d (%s): %d local / %d global devices", info.process_index,
                 info.process_count, info.method, info.local_device_count, info.device_count)
    return info


class _ProcessPrefix(std_logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: std_logging.LogRecord) -> bool:
        if not getattr(record, "_vdm_prefixed", False):
            record.msg = f"{self.prefix}{record.msg}"
            record._vdm_prefixed = True
        return True


def setup_logging(info: ProcessInfo, log_dir: str | None = None) -> None:
    """Prefix every absl log line with ``[pN]``; with ``log_dir``, also one log file per process.

    Files are ``LOG_DIR/<program>.p<N>.<host>.<user>.log.INFO...`` (absl's naming), so processes
    sharing a filesystem never write the same file. Single-process runs keep absl's defaults.
    """
    if info.process_count <= 1:
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            logging.get_absl_handler().use_absl_log_file(log_dir=log_dir)
        return
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _ProcessPrefix) for f in handler.filters):
        handler.addFilter(_ProcessPrefix(f"[p{info.process_index}] "))
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        program = os.path.basename(sys.argv[0] or "python").removesuffix(".py")
        handler.use_absl_log_file(program_name=f"{program}.p{info.process_index}", log_dir=log_dir)


def is_primary() -> bool:
    """True on process 0: the only process that writes metrics, samples and config files."""
    return jax.process_index() == 0
