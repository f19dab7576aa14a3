"""Lower bounds on the high-noise loss of moving_digits: how much each caption attribute is worth.

    python -m benchmarks.conditional_bound [--clips=3000 --frames=8 --resolution=16]

At log-SNR -> -inf the noisy input carries no information, so the best x0 prediction is
E[x0 | caption attributes] and the v-loss tends to the variance of x0 around it (sigma -> 1, alpha -> 0).
For groupings of the generated clips by attribute subsets this prints that per-pixel variance,
computed exactly from the clips: the loss a perfect model reaches at log-SNR -8 when it uses those
attributes and nothing else. A model's probe loss at -8 (``probe_loss_real_logsnr_-8`` of the
evaluation job) shows which attributes it uses. Prints a table, then one JSON line.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from data_pipelines import moving_digits_spec as spec
from data_pipelines.video_io import to_unit

_CLIPS = flags.DEFINE_integer("clips", 3000, "Generated clips (seed 0, the train split's generator).")
_FRAMES = flags.DEFINE_integer("frames", 8, "Frames per clip.")
_RES = flags.DEFINE_integer("resolution", 16, "Frame size.")

GROUPINGS = {
    "nothing": (),
    "colour, size": ("color", "size"),
    "colour, size, kind": ("color", "size", "kind"),
    "colour, size, motion": ("color", "size", "motion"),
    "colour, size, motion, speed": ("color", "size", "motion", "speed"),
}


def residual_variance(videos: np.ndarray, attrs: dict[str, np.ndarray], keys: tuple[str, ...]
                      ) -> tuple[float, int]:
    """Per-pixel variance of x0 in [-1, 1] around its per-group, per-frame, per-pixel mean.

    Unbiased within each group (sum of squares / (n - 1)); groups with one clip are left out, so
    fine groupings need enough clips (the table prints the smallest group).
    """
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(zip(*(attrs[k] for k in keys)) if keys else [()] * len(videos)):
        groups.setdefault(key, []).append(i)
    total, count = 0.0, 0
    for idx in groups.values():
        if len(idx) < 2:
            continue
        group = videos[idx]
        total += float(((group - group.mean(axis=0)) ** 2).sum()) * len(idx) / (len(idx) - 1)
        count += group.size
    return total / count, min(len(idx) for idx in groups.values())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    examples = [spec.generate_example(i, 0, _FRAMES.value, _RES.value, 1) for i in range(_CLIPS.value)]
    videos = to_unit(np.stack([e["video"] for e in examples]))
    keys = ("color", "size", "kind", "motion", "speed")
    attrs = {k: np.array([int(e[k][0]) for e in examples]) for k in keys}
    out = {}
    for name, keys in GROUPINGS.items():
        out[name], smallest = residual_variance(videos, attrs, keys)
        print(f"E[x0 | {name:<34}] -> loss at log-SNR -inf {out[name]:.4f}  (smallest group {smallest})")
    print(json.dumps({"benchmark": "conditional_bound", "clips": _CLIPS.value, "frames": _FRAMES.value,
                      "resolution": _RES.value, "bounds": out}))


if __name__ == "__main__":
    app.run(main)
