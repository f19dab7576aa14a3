"""Independent motion check on a moving_digits checkpoint: does the object move the captioned way?

    python -m benchmarks.motion_check --workdir=workdirs/moving_digits [--per_direction=16 --seed=0]

Samples captions "a <size> <colour> <kind> moves <left|right|up|down> <slowly|fast>" (attributes
drawn with a fixed seed, the same number per direction), generates them with the checkpoint's own
sampler settings, and follows each clip's object by the brightness-weighted centroid of its
foreground pixels (max channel >= 128) in the first and last frame. It does not use the project's
detector (colour matching, templates, track classification): only this centroid. A clip passes when
the centroid moves >= --min_px pixels in the captioned direction. Prints one line per direction,
the overall pass rate, and one JSON line (the last line of stdout); writes the clips as a GIF.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app, flags

from data_pipelines import moving_digits_spec as spec
from vdm_jax.evaluation.loading import EvalInputError
from vdm_jax.evaluation.sample_cli import SampleRequest, run_sample

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir of a moving_digits model.")
_STEP = flags.DEFINE_string("step", "latest", "Checkpoint step: an integer or 'latest'.")
_PER_DIRECTION = flags.DEFINE_integer("per_direction", 16, "Captions per direction.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the captions and of the sampler.")
_MIN_PX = flags.DEFINE_float("min_px", 2.0, "Displacement (pixels) along the captioned direction to pass.")
_OUT = flags.DEFINE_string("out", "", "The generated clips, captioned (default: WORKDIR/motion_check.gif).")
flags.mark_flags_as_required(["workdir"])

DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


def captions(per_direction: int, seed: int) -> list[tuple[str, str]]:
    """(direction, caption) pairs with random size / colour / kind / speed."""
    rng = np.random.default_rng(seed)
    out = []
    for direction in DIRECTIONS:
        for _ in range(per_direction):
            words = ["a", spec.SIZE_NAMES[rng.integers(2)],
                     spec.COLOR_NAMES[rng.integers(len(spec.COLOR_NAMES))],
                     spec.KIND_NAMES[rng.integers(len(spec.KIND_NAMES))], "moves", direction,
                     spec.SPEED_WORDS[rng.integers(2)]]
            out.append((direction, " ".join(words)))
    return out


def centroid(frame: np.ndarray) -> np.ndarray | None:
    """Brightness-weighted centroid (x, y) of the pixels whose brightest channel is >= 128."""
    bright = frame.astype(np.float64).max(axis=-1)
    w = np.where(bright >= 128, bright, 0.0)
    if w.sum() <= 0:
        return None
    ys, xs = np.mgrid[0:w.shape[0], 0:w.shape[1]]
    return np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()


def displacement_along(clip: np.ndarray, direction: str) -> float:
    """Pixels the centroid moved from the first to the last frame along ``direction`` (NaN: no object)."""
    first, last = centroid(clip[0]), centroid(clip[-1])
    if first is None or last is None:
        return float("nan")
    return float(np.dot(last - first, DIRECTIONS[direction]))


def _out() -> str:
    """Where the clips go: --out, or motion_check.gif inside the workdir (not the current directory)."""
    return _OUT.value or os.path.join(_WORKDIR.value, "motion_check.gif")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    pairs = captions(_PER_DIRECTION.value, _SEED.value)
    out = _out()
    try:
        result = run_sample(SampleRequest(workdir=_WORKDIR.value, prompts=tuple(c for _, c in pairs),
                                          out=out, step=_STEP.value, seed=_SEED.value))
    except EvalInputError as e:
        sys.exit(f"error: {e}")
    moved = np.array([displacement_along(clip, d) for clip, (d, _) in zip(result["videos"], pairs)])
    passed = np.nan_to_num(moved, nan=-np.inf) >= _MIN_PX.value
    report = {"step": result["step"], "clips": len(pairs), "min_px": _MIN_PX.value,
              "pass_rate": float(passed.mean()), "per_direction": {}}
    for i, d in enumerate(DIRECTIONS):
        sl = slice(i * _PER_DIRECTION.value, (i + 1) * _PER_DIRECTION.value)
        median = float(np.nanmedian(moved[sl])) if np.isfinite(moved[sl]).any() else float("nan")
        report["per_direction"][d] = {"pass_rate": float(passed[sl].mean()),
                                      "median_px": median if np.isfinite(median) else None}
        print(f"moves {d:<5}  pass {passed[sl].mean():6.1%}  median displacement {median:+.2f} px")
    print(f"all {len(pairs)} clips: {passed.mean():.1%} moved >= {_MIN_PX.value:g} px the captioned way "
          f"(step {result['step']}; clips in {out})")
    print(json.dumps(report))


if __name__ == "__main__":
    app.run(main)
