"""A summary across evaluated steps: CSV, markdown table and a PNG plot of each metric vs step.

Input: per-step metrics dicts (as in ``DIR/eval/step_N/metrics.json``), each with a ``step`` key.
Nested dicts (e.g. ``fvd_protocol``) are flattened with dotted keys and kept in the CSV only; the
markdown table and the plot show the top-level numbers (counts ``*_n`` and chance levels are drawn
as dashed lines on their ``*_acc`` panels rather than plotted).
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

_STEP_DIR = re.compile(r"step_(\d+)$")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        elif isinstance(v, (list, tuple)):
            out[key] = "x".join(str(x) for x in v)
        else:
            out[key] = v
    return out


def load_step_metrics(workdir: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Metrics of every ``workdir/eval/step_N/metrics.json``, sorted by step, and unreadable files."""
    rows, bad = [], []
    for path in glob.glob(os.path.join(workdir, "eval", "step_*", "metrics.json")):
        match = _STEP_DIR.search(os.path.basename(os.path.dirname(path)))
        if not match:
            continue
        try:
            with open(path) as f:
                row = json.load(f)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            bad.append(f"{path}: {e}")
            continue
        row.setdefault("step", int(match.group(1)))
        rows.append(row)
    return sorted(rows, key=lambda r: int(r["step"])), bad


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    cols: list[str] = ["step"]
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def plot_metrics(rows: list[dict[str, Any]], path: str) -> list[str]:
    """One panel per numeric metric vs step; ``X_chance`` is drawn as a dashed line on ``X_acc``."""
    cols = [c for c in _columns(rows)[1:] if any(_is_number(r.get(c)) for r in rows)  # nested (dotted):
            and not c.endswith(("_chance", "_n")) and c != "align_num_clips" and "." not in c]  # CSV only
    if not cols:
        return []
    ncols = min(3, len(cols))
    nrows = -(-len(cols) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows))  # no pyplot: no GUI backend, no global state
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, col in zip(axes.flat, cols):
        pts = [(int(r["step"]), r[col]) for r in rows if _is_number(r.get(col))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
        chance = col.replace("_acc", "_chance") if col.endswith("_acc") else None
        levels = [r[chance] for r in rows if chance and _is_number(r.get(chance))]
        if levels:
            ax.axhline(levels[-1], linestyle="--", color="gray", label="chance")
            ax.legend(fontsize=7)
        ax.set_title(col, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return cols


def write_summary(rows: Sequence[dict[str, Any]], out_dir: str, name: str = "summary") -> dict[str, str]:
    """Write ``name.csv``, ``name.md`` and ``name.png`` into ``out_dir``; returns their paths."""
    flat = []
    for i, r in enumerate(rows):
        if "step" not in r:
            raise ValueError(f"metrics row {i} has no 'step' key: {sorted(r)[:8]}")
        flat.append(flatten(r))
    flat.sort(key=lambda r: int(r["step"]))
    os.makedirs(out_dir, exist_ok=True)
    cols = _columns(flat)
    paths = {k: os.path.join(out_dir, f"{name}.{k}") for k in ("csv", "md", "png")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(flat)
    md_cols = [c for c in cols if not c.endswith("_n") and "." not in c]  # protocols stay in the CSV
    lines = ["| " + " | ".join(md_cols) + " |", "|" + "---|" * len(md_cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in md_cols) + " |" for r in flat]
    with open(paths["md"], "w") as f:
        f.write("\n".join(lines) + "\n")
    if not plot_metrics(flat, paths["png"]):
        del paths["png"]
    return paths
