"""Model check: spatial attention backends agree, and one forward+backward is timed per backend.

GPU (the UCF101 recipe at 16x64x64 bf16)::

    python -m benchmarks.model_check --preset=ucf101 --batch=8

CPU (tiny; cudnn is skipped there)::

    python -m benchmarks.model_check --preset=tiny --batch=2 --frames=4 --res=16 --dtype=float32

Prints one JSON line: device, config, parameter count, analytic forward FLOPs, per backend the
median fwd+bwd time (after warm-up) and the achieved TFLOP/s (3 x forward FLOPs / time), and the
xla-vs-cudnn forward difference (relative to the output's max) with a pass/fail against a bf16
tolerance.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from benchmarks import common
from vdm_jax.config import ModelConfig, TextEncoderKind
from vdm_jax.models import VideoUNet, param_count
from vdm_jax.models.flops import forward_flops

PRESETS = {
    # VDM App. A: UCF101 (unconditional), 256 ch, mults 1,2,4,8, 2 blocks, head dim 64.
    "ucf101": ModelConfig(base_channels=256, channel_mults=(1, 2, 4, 8), num_res_blocks=2,
                          attention_resolutions=(8, 16, 32), head_dim=64, cond_dim=1024, dropout=0.1,
                          resolution=64, text_encoder="none", dtype="bfloat16"),
    # VDM App. A: text-to-video small, 128 ch (text via the small trainable transformer).
    "t2v_small": ModelConfig(base_channels=128, channel_mults=(1, 2, 4, 8), num_res_blocks=2,
                             attention_resolutions=(8, 16, 32), head_dim=64, cond_dim=1024, resolution=64,
                             text_dim=512, text_heads=8, text_layers=4, max_text_len=64, dtype="bfloat16"),
    "tiny": ModelConfig(base_channels=16, channel_mults=(1, 2), attention_resolutions=(8,), head_dim=8,
                        cond_dim=32, text_dim=32, text_layers=1, max_text_len=8, resolution=16),
}
BF16_RTOL = 3e-2  # max |xla - cudnn| / max |output| allowed for bf16 (8-bit mantissa, ~0.4% per op)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="ucf101")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--res", type=int, default=0, help="frame size; 0 = the preset's resolution")
    p.add_argument("--channels", type=int, default=0, help="override base_channels")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="")
    p.add_argument("--backends", default="xla,cudnn", help="comma list of spatial attention backends")
    p.add_argument("--remat", default="", help="override model.remat (none/full/dots/dots_no_batch)")
    p.add_argument("--fast_cpu_conv_grad", choices=["true", "false"], default="")
    p.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    return p.parse_args(argv)


def build_config(args) -> ModelConfig:
    cfg = PRESETS[args.preset]
    over = {}
    if args.res:
        over["resolution"] = args.res
        sizes = {args.res // 2**i for i in range(len(cfg.channel_mults))}
        kept = tuple(r for r in cfg.attention_resolutions if r in sizes)
        over["attention_resolutions"] = kept or (min(sizes),)
    if args.channels:
        over["base_channels"] = args.channels
    if args.dtype:
        over["dtype"] = args.dtype
    if args.remat:
        over["remat"] = args.remat
    if args.fast_cpu_conv_grad:
        over["fast_cpu_conv_grad"] = args.fast_cpu_conv_grad == "true"
    return dataclasses.replace(cfg, **over)


def make_inputs(cfg: ModelConfig, b: int, t: int):
    ks = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(ks[0], (b, t, cfg.resolution, cfg.resolution, cfg.in_channels))
    logsnr = jax.random.uniform(ks[1], (b,), minval=-10, maxval=10)
    kw = {}
    if cfg.text_encoder != TextEncoderKind.NONE:
        tokens = jax.random.randint(ks[2], (b, cfg.max_text_len), 1, cfg.vocab_size)
        kw = {"tokens": tokens, "token_mask": tokens > 0}
    return x, logsnr, kw


def time_fwd_bwd(graphdef, state, x, logsnr, kw, steps: int, warmup: int) -> list[float]:
    model = nnx.merge(graphdef, state)

    @nnx.jit
    def step(model, x, logsnr, kw):
        def loss(m):
            out = m(x, logsnr, deterministic=False, **kw).prediction
            return jnp.mean(jnp.square(out - x))
        return nnx.value_and_grad(loss)(model)

    return common.time_steps(lambda: step(model, x, logsnr, kw), steps, warmup)


def main(argv=None) -> dict:
    args = parse_args(argv)
    cfg = build_config(args)
    platform = jax.default_backend()
    backends = [s.strip() for s in args.backends.split(",") if s.strip()]
    model = VideoUNet(dataclasses.replace(cfg, attention_backend="xla"), rngs=nnx.Rngs(0))
    kernel = model.conv_out.kernel  # zero-initialized: randomize so outputs can be compared
    kernel[...] = jax.random.normal(jax.random.key(1), kernel.shape) / (kernel.shape[2] * 9) ** 0.5
    _, state = nnx.split(model)
    x, logsnr, kw = make_inputs(cfg, args.batch, args.frames)
    fwd_flops = forward_flops(cfg, args.batch, args.frames, cfg.resolution, cfg.resolution)
    result = {"device": str(jax.devices()[0].device_kind), "platform": platform, "preset": args.preset,
              "batch": args.batch, "shape": [args.frames, cfg.resolution, cfg.resolution],
              "dtype": cfg.dtype.value, "remat": cfg.remat.value, "params": param_count(cfg),
              "fwd_gflops": fwd_flops / 1e9, "backends": {}}
    outputs = {}
    for name in backends:
        if name == "cudnn" and platform != "gpu":
            result["backends"][name] = {"skipped": f"needs a GPU, running on {platform}"}
            continue
        graphdef = nnx.graphdef(nnx.eval_shape(
            lambda name=name: VideoUNet(dataclasses.replace(cfg, attention_backend=name), rngs=nnx.Rngs(0))))
        fwd = jax.jit(lambda s, x, ls, kw, g=graphdef: nnx.merge(g, s)(x, ls, **kw).prediction)
        outputs[name] = fwd(state, x, logsnr, kw)
        times = time_fwd_bwd(graphdef, state, x, logsnr, kw, args.steps, args.warmup)
        med = statistics.median(times)
        result["backends"][name] = {"fwd_bwd_ms": med * 1e3, "min_ms": min(times) * 1e3,
                                    "clips_per_s": args.batch / med, "tflops": 3 * fwd_flops / med / 1e12}
    if "xla" in outputs and "cudnn" in outputs:
        scale = float(jnp.abs(outputs["xla"]).max())
        diff = float(jnp.abs(outputs["xla"] - outputs["cudnn"]).max())
        result["xla_vs_cudnn"] = {"max_abs_diff": diff, "rel_to_max": diff / scale,
                                  "tolerance": BF16_RTOL, "agree": diff / scale <= BF16_RTOL}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
