"""Sampling speed: s/clip and ms/step with classifier-free guidance, vs one model forward.

    python -m benchmarks.sampler_speed --config=configs/moving_digits.py:smoke [--steps=25,50 --batch=4]

The overhead ratio is (time of one sampler step) / (time of one model forward at batch 2B), both
compiled, each the fastest of --repeats interleaved runs.  "marginal" ms/step is
(t[max steps] - t[min steps]) / (max - min): fixed costs removed.
Prints a table, then one JSON line (the last line of stdout).
"""

from __future__ import annotations

import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vdm_jax import config as vconfig
from vdm_jax.diffusion import Schedule, sample
from vdm_jax.models.plan import ModelPlan
from vdm_jax.sharding.mesh import make_mesh

_CONFIG = config_flags.DEFINE_config_file("config", "configs/moving_digits.py:smoke", "Config file.",
                                          lock_config=True)
_STEPS = flags.DEFINE_list("steps", ["25", "50"], "Sampler step counts to time.")
_BATCH = flags.DEFINE_integer("batch", 4, "Clips per sampling batch (the model sees 2x with CFG).")
_SAMPLER = flags.DEFINE_string("sampler", "", "Sampler name (default: the config's sampling.name).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed repetitions, interleaved (the fastest is reported).")


def _time_interleaved(calls: dict, repeats: int) -> dict:
    """Fastest wall time of each zero-argument call; calls are interleaved so load hits all alike."""
    for call in calls.values():
        jax.block_until_ready(call())  # compile + warm up
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, call in calls.items():
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.min(v)) for k, v in times.items()}  # the least-disturbed run


def run(cfg: vconfig.Config, steps_list: list[int], batch: int, sampler: str, repeats: int) -> dict:
    scfg = dataclasses.replace(cfg.sampling, name=sampler) if sampler else cfg.sampling
    plan = ModelPlan.create(cfg, make_mesh(cfg.mesh, jax.devices()[:1]))
    state = jax.jit(plan.init_params)(jax.random.PRNGKey(0))
    denoise = lambda params, z, logsnr, cond, drop: plan.denoiser(params)(z, logsnr, cond, drop)
    shape = plan.video_shape(batch)
    text = cfg.model.text_encoder != vconfig.TextEncoderKind.NONE
    length = cfg.model.max_text_len
    cond = {"tokens": jax.random.randint(jax.random.key(1), (batch, length), 1, cfg.model.vocab_size),
            "token_mask": jnp.ones((batch, length), bool)} if text else None
    use_cfg = text and scfg.guidance_weight != 0.0
    schedule = Schedule.from_config(cfg.diffusion, cfg.data.resolution)

    fb = 2 * batch if use_cfg else batch
    fwd = jax.jit(denoise)
    tile = (lambda a: jnp.concatenate([a, a], 0)) if use_cfg else (lambda a: a)
    f_args = (state, jnp.ones((fb, *shape[1:])), jnp.zeros((fb,)), jax.tree_util.tree_map(tile, cond),
              jnp.arange(fb) >= batch)
    calls = {"forward": lambda: fwd(*f_args)}
    for steps in steps_list:
        s_cfg = dataclasses.replace(scfg, steps=steps)
        fn = jax.jit(lambda st, key, c, s_cfg=s_cfg: sample(
            lambda z, lam, cc, d: denoise(st, z, lam, cc, d), shape=shape, rng=key, schedule=schedule,
            diffusion_cfg=cfg.diffusion, sampler_cfg=s_cfg, cond=c))
        calls[steps] = lambda fn=fn: fn(state, jax.random.key(0), cond)
    timed = _time_interleaved(calls, repeats)
    forward_ms = 1e3 * timed["forward"]
    rows = {}
    for steps in steps_list:
        total = timed[steps]
        rows[steps] = {"s_per_clip": total / batch, "ms_per_step": 1e3 * total / steps,
                       "step_over_forward": 1e3 * total / steps / forward_ms}
    lo, hi = min(steps_list), max(steps_list)
    spread = (rows[hi]["s_per_clip"] - rows[lo]["s_per_clip"]) * batch if hi > lo else 0.0
    marginal = 1e3 * spread / (hi - lo) if hi > lo else None
    return {"config": cfg.name, "sampler": scfg.name.value, "guidance_weight": scfg.guidance_weight,
            "cfg": use_cfg,
            "batch": batch, "forward_batch": fb, "shape": list(shape), "device": jax.devices()[0].platform,
            "forward_ms": forward_ms, "steps": {str(k): v for k, v in rows.items()},
            "marginal_ms_per_step": marginal,
            "marginal_step_over_forward": None if marginal is None else marginal / forward_ms}


def main(argv):
    del argv
    cfg = vconfig.from_configdict(_CONFIG.value)
    steps = [int(s) for s in _STEPS.value]
    if any(s < 1 for s in steps):
        raise app.UsageError(f"--steps: every value must be >= 1, got {steps}")
    res = run(cfg, steps, _BATCH.value, _SAMPLER.value, _REPEATS.value)
    print(f"forward (batch {res['forward_batch']}): {res['forward_ms']:.2f} ms")
    for k, r in res["steps"].items():
        print(f"{k:>4} steps: {r['s_per_clip']:.3f} s/clip  {r['ms_per_step']:.2f} ms/step  "
              f"step/forward {r['step_over_forward']:.3f}")
    if res["marginal_ms_per_step"] is not None:
        print(f"marginal: {res['marginal_ms_per_step']:.2f} ms/step  step/forward "
              f"{res['marginal_step_over_forward']:.3f}")
    print(json.dumps(res))


if __name__ == "__main__":
    app.run(main)
