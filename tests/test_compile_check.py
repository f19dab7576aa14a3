"""launch.compile_check: AOT-compile the smoke train step on 8 fake CPU devices, memory and FLOPs."""

import dataclasses
import os
import subprocess
import sys

import pytest

from launch import compile_check, sweeping

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "configs/moving_digits.py:smoke"


def _config(spec, sets=None):
    from vdm_jax.config import from_configdict

    return from_configdict(sweeping.apply_overrides(sweeping.load_configdict(os.path.join(REPO, spec)),
                                                    sets or {}))


@pytest.fixture(scope="module")
def smoke_report():
    import jax

    return compile_check.compile_step(_config(SMOKE), jax.devices(), "cpu:8")


def test_smoke_report_memory_and_flops(smoke_report, devices8):
    r = smoke_report
    from vdm_jax.models.flops import forward_flops

    cfg = _config(SMOKE)
    assert r.num_devices == 8 and "data=8" in r.mesh
    assert r.argument_bytes > 0 and r.output_bytes > 0 and r.temp_bytes > 0
    assert r.peak_bytes >= r.temp_bytes
    expected = 3 * forward_flops(cfg.model, cfg.training.global_batch_size, cfg.data.num_frames,
                                 cfg.data.resolution, cfg.data.resolution)
    assert r.step_flops == pytest.approx(expected)
    assert r.step_time(0.5) is None
    r2 = dataclasses.replace(r, peak_flops_per_device=1e12)
    assert r2.step_time(0.5) == pytest.approx(r.step_flops / (0.5 * 1e12 * 8))
    assert r2.step_time(0.25) == pytest.approx(2 * r2.step_time(0.5))
    text = compile_check.format_report(r2, [0.5], 1e9)
    assert "arguments" in text and "temporaries" in text and "50% MFU" in text


def test_budget_verdict(smoke_report):
    assert compile_check.verdict(smoke_report, None)[0]
    assert compile_check.verdict(smoke_report, smoke_report.peak_bytes)[0]
    fits, msg = compile_check.verdict(smoke_report, smoke_report.peak_bytes - 1)
    assert not fits and msg.startswith("DOES NOT FIT")


@pytest.mark.slow
def test_bigger_batch_needs_more_memory(smoke_report, devices8):
    import jax

    big = compile_check.compile_step(_config(SMOKE, {"training.global_batch_size": 64}), jax.devices())
    assert big.temp_bytes > smoke_report.temp_bytes
    assert big.step_flops == pytest.approx(8 * smoke_report.step_flops)


def test_device_table():
    from vdm_jax.hardware import device_spec

    assert device_spec("NVIDIA H100 80GB HBM3")[0] == pytest.approx(989e12)
    assert device_spec("TPU v5 lite")[1] == pytest.approx(16e9)
    assert device_spec("cpu") == (None, None)


def test_unknown_tpu_topology_is_a_clear_error():
    with pytest.raises(ValueError, match="--topology=v9x:1x1"):
        compile_check.topology_devices("v9x:1x1")


@pytest.mark.slow
def test_cli_fits_and_budget_too_small_exits_nonzero():
    cmd = [sys.executable, "-m", "launch.compile_check", f"--config={SMOKE}", "--topology=cpu:8",
           "--peak_tflops=1"]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    ok = subprocess.run(cmd + ["--memory_budget_gb=100"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "temporaries" in ok.stdout and "step FLOPs" in ok.stdout and "ms/step" in ok.stdout
    bad = subprocess.run(cmd + ["--memory_budget_gb=0.000001"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert bad.returncode == 1 and "DOES NOT FIT" in bad.stderr


def test_text_encoder_report_compiles_the_sharded_frozen_encoder(devices8):
    """--text_encoder: the train step uses its stored embeddings; the encoder's bfloat16 weights
    are sharded by the mesh rules (fsdp=2 x tensor=4 here) and its forward compiled."""
    import jax

    from vdm_jax.models import t5

    tiny = os.path.join(REPO, "tests", "fixtures", "tiny_t5")
    cfg = compile_check.with_text_encoder(
        _config(SMOKE, {"mesh.data": 1, "mesh.fsdp": 2, "mesh.tensor": 4}), tiny)
    assert cfg.model.text_encoder.value == "precomputed" and cfg.model.precomputed_text_dim == 32
    r = compile_check.compile_text_encoder(cfg, jax.devices(), tiny)
    total = 2 * r.params
    assert r.params == t5.param_count(t5.read_config(tiny)) == 24256
    # the embedding (vocab, embed) is split 2 ways, the attention/FFN weights 8 ways: < 1/2 of the bytes
    assert 0 < r.argument_bytes < total / 2
    assert r.peak_bytes >= r.temp_bytes > 0
    assert r.forward_flops == t5.forward_flops(t5.read_config(tiny), 8, cfg.model.max_text_len)
    text = compile_check.format_encoder_report(r, 8, cfg.model.max_text_len)
    assert "frozen text encoder" in text and "temporaries" in text
    assert t5.param_count(t5.PRESETS["t5-v1_1-xxl"]) == 4_762_310_656
