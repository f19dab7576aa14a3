"""benchmarks.train_throughput, benchmarks.common and configs/parity.py on CPU (smoke sizes, no timings)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import common, train_throughput
from vdm_jax import config as vconfig
from vdm_jax.models import param_count
from vdm_jax.models.flops import forward_flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("grain", "tensorflow", "tensorflow_datasets", "array_record", "data_pipelines")


def _config(spec: str) -> vconfig.Config:
    import importlib

    module, _, arg = spec.partition(":")
    return vconfig.from_configdict(importlib.import_module(module).get_config(arg or None))


def test_cli_smoke_run_prints_sane_json_last():
    """The real CLI on the smoke config, sharded over the 8 fake CPU devices (data=8)."""
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--config=configs/moving_digits.py:smoke",
           "--batch=8", "--steps=2", "--warmup=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    cfg = _config("configs.moving_digits:smoke")
    d = cfg.data
    assert res["benchmark"] == "train_throughput" and res["platform"] == "cpu"
    assert res["num_devices"] == 8 and res["mesh"].startswith("data=8")
    assert res["batch"] == 8 and res["frames"] == d.num_frames and res["resolution"] == d.resolution
    assert res["param_count"] == param_count(cfg.model)
    assert res["flops_per_step"] == pytest.approx(3 * forward_flops(cfg.model, 8, d.num_frames, d.resolution,
                                                                    d.resolution))
    assert res["mfu"] is None and res["peak_flops_per_device"] is None  # CPU: MFU not reported
    assert 0 < res["step_time_min_s"] <= res["step_time_s"] <= res["step_time_max_s"]
    assert res["clips_per_s"] == pytest.approx(8 / res["step_time_s"])
    assert res["compile_s"] > 0 and res["xla_peak_bytes"] > res["xla_argument_bytes"] > 0
    assert math.isfinite(res["loss"]) and res["loss"] > 0 and math.isfinite(res["grad_norm"])
    assert res["xla_flags_added"] == []  # no GPU here


def test_cli_refuses_bad_batch_with_one_line():
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--config=configs/moving_digits.py:smoke",
           "--batch=12", "--steps=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "--batch=12 must be divisible by data*fsdp*microbatches=8" in proc.stderr


def test_benchmarks_do_not_import_the_data_pipeline():
    """The GPU image has no grain/tfds: the synthetic benchmarks must not need them."""
    code = ("import sys, benchmarks.train_throughput, benchmarks.model_check, benchmarks.sampler_speed; "
            f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r}])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_importing_train_throughput_defines_no_flags():
    """Flags are defined only when it runs as a program, so other entry points can import it."""
    from absl import flags

    assert "find_max_batch" not in flags.FLAGS and "estimate_budget_gb" not in flags.FLAGS


@pytest.mark.parametrize("spec", ["configs.moving_digits:smoke", "configs.vdm_t2v_small:images=2"])
def test_synthetic_batch_follows_the_batch_contract(spec):
    cfg = _config(spec)
    b = common.synthetic_batch(cfg, 4, seed=1)
    d, m = cfg.data, cfg.model
    frames = d.num_frames + d.images_per_video
    assert b["video"].shape == (4, frames, d.resolution, d.resolution, m.in_channels)
    assert b["video"].dtype == np.float32 and b["video"].min() >= -1 and b["video"].max() <= 1
    assert b["frame_mask"].dtype == bool and b["frame_mask"].shape == (4, frames)
    assert b["frame_mask"][:, :d.num_frames].all() and not b["frame_mask"][:, d.num_frames:].any()
    assert b["tokens"].dtype == np.int32 and b["token_mask"].dtype == bool
    assert ((b["tokens"] == 0) == ~b["token_mask"]).all()  # 0 = pad exactly where the mask is False
    assert b["token_mask"][:, 0].all() and (b["tokens"] < m.vocab_size).all()


def test_synthetic_batch_unconditional_and_precomputed():
    ucf = _config("configs.vdm_ucf101")
    assert set(common.synthetic_batch(ucf, 2)) == {"video", "frame_mask"}
    pre = vconfig.replace(_config("configs.moving_digits:smoke"),
                          model={"text_encoder": "precomputed", "precomputed_text_dim": 12})
    b = common.synthetic_batch(pre, 3)
    assert b["text_embeddings"].shape == (3, pre.model.max_text_len, 12)
    assert b["text_embeddings"].dtype == np.float32


def test_search_max_batch_doubles_then_bisects():
    calls = []

    def probe(b):  # 1 GB fixed + 0.1 GB per clip: 99 clips fit 11 GB
        calls.append(b)
        return int(1e9 + 1e8 * b)

    out = train_throughput.search_max_batch(probe, start=8, granule=8, budget=11e9, limit=4096, max_probes=10)
    assert calls[:5] == [8, 16, 32, 64, 128]  # doubling until the first batch over budget
    assert out["max_batch_predicted"] == 96 and out["first_over_budget"] == 104
    assert all(int(b) % 8 == 0 for b in out["probes"])
    fixed, per_clip = out["fit"]
    assert fixed == pytest.approx(1e9) and per_clip == pytest.approx(1e8)
    capped = train_throughput.search_max_batch(probe, 8, 8, 11e9, limit=4096, max_probes=3)
    assert capped["max_batch_predicted"] == 32 and len(capped["probes"]) == 3
    none_fit = train_throughput.search_max_batch(probe, 8, 8, 1e9, limit=4096, max_probes=3)
    assert none_fit["max_batch_predicted"] is None
    calls.clear()  # a start over budget halves down first: 64 -> 32 (fits 35 clips of 4.5 GB) -> 48 -> 40
    down = train_throughput.search_max_batch(probe, 64, 8, 4.5e9, limit=4096, max_probes=10)
    assert calls == [64, 32, 48, 40] and down["max_batch_predicted"] == 32
    assert down["first_over_budget"] == 40


def test_is_oom():
    assert common.is_oom(RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 3 GB"))
    assert not common.is_oom(ValueError("shapes do not match: room for 3"))


def test_parity_config_matches_the_peer():
    cfg = _config("configs.parity")
    m = cfg.model
    assert (m.base_channels, m.channel_mults) == (64, (1, 2, 4, 8))
    assert (cfg.data.num_frames, cfg.data.resolution, cfg.training.global_batch_size) == (16, 64, 8)
    assert m.text_encoder.value == "none" and m.dtype.value == "bfloat16" and m.head_dim == 32
    n = param_count(m)
    assert abs(n - 41.8e6) / 41.8e6 < 0.25, n  # peer: 41.8M; documented 51.2M
    assert param_count(_config("configs.parity:blocks=2").model) > n
    assert 64 in _config("configs.parity:full_attn").model.attention_resolutions
