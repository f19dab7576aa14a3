"""Metrics: WORKDIR/metrics.jsonl, TensorBoard events, and a console progress line with ETA.

Only the primary process writes (see ``launch.distributed``); the others get a no-op writer.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any

from tensorboardX import SummaryWriter


class MetricsWriter:
    def __init__(self, workdir: str, *, enabled: bool = True, total_steps: int = 0):
        self.enabled = enabled
        self.total_steps = total_steps
        self._jsonl = None
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.jsonl")
            torn = os.path.exists(path) and os.path.getsize(path) > 0 and not _ends_with_newline(path)
            self._jsonl = open(path, "a", buffering=1)
            if torn:  # a killed run's last line is cut short: start on a fresh line
                self._jsonl.write("\n")
            try:
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except Exception as e:  # TensorBoard is a convenience, never a reason to stop training.
                print(f"warning: TensorBoard disabled: {e}", file=sys.stderr)

    def write(self, step: int, metrics: dict[str, Any], *, kind: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        if kind != "train":
            record["kind"] = kind
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _plain(v: Any) -> Any:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if isinstance(v, int) else f


class Progress:
    """One console line per log step: step/total, loss, steps/s, clips/s, ETA."""

    def __init__(self, total_steps: int, start_step: int, *, enabled: bool = True):
        self.total = total_steps
        self.start_step = start_step
        self.enabled = enabled
        self.t0 = time.time()

    def report(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        done = step - self.start_step
        elapsed = time.time() - self.t0
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        pct = 100.0 * step / max(self.total, 1)
        extras = " ".join(f"{k}={_fmt(metrics[k])}" for k in ("loss", "grad_norm", "learning_rate",
                                                            "clips_per_sec", "mfu") if k in metrics)
        print(f"[{pct:5.1f}%] step {step}/{self.total} {extras} | {rate:.2f} steps/s | "
              f"ETA {_fmt_time(eta)}", flush=True)


def _fmt(v: Any) -> str:
    v = float(v)
    return f"{v:.3e}" if (abs(v) < 1e-2 and v != 0) else f"{v:.4g}"


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
