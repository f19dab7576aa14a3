"""vdm_jax/xla_flags.py: default GPU flags, merged without overriding the user's, ignored on CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from vdm_jax import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_adds_missing_flags_and_keeps_the_users_value():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 "
                        "--xla_gpu_enable_latency_hiding_scheduler=false"}
    added = xla_flags.set_default_gpu_flags(env, force=True)
    flags = env["XLA_FLAGS"].split()
    assert "--xla_force_host_platform_device_count=8" in flags
    assert "--xla_gpu_enable_latency_hiding_scheduler=false" in flags  # the user's value wins
    assert "--xla_gpu_enable_latency_hiding_scheduler=true" not in flags
    assert added == [f for f in xla_flags.DEFAULT_GPU_FLAGS if "latency_hiding" not in f]
    assert all(f in flags for f in added)
    assert xla_flags.set_default_gpu_flags(env, force=True) == []  # idempotent
    assert env["XLA_FLAGS"].split() == flags


def test_no_gpu_or_opt_out_changes_nothing():
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--a=1"}
    assert not xla_flags.gpu_present(env)
    assert xla_flags.set_default_gpu_flags(env) == [] and env["XLA_FLAGS"] == "--a=1"
    env = {"VDM_DEFAULT_XLA_FLAGS": "0"}
    assert xla_flags.set_default_gpu_flags(env, force=True) == [] and "XLA_FLAGS" not in env
    assert not xla_flags.gpu_present({"CUDA_VISIBLE_DEVICES": ""})


def test_cpu_backend_accepts_and_ignores_the_gpu_flags():
    """XLA aborts on an unknown flag name; the CPU backend must parse these and compute the same."""
    code = "import jax.numpy as jnp; x = jnp.arange(12.0).reshape(3, 4); print(float((x @ x.T).sum()))"
    x = np.arange(12.0).reshape(3, 4)
    expected = str(float((x @ x.T).sum()))
    base = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    base["JAX_PLATFORMS"] = "cpu"
    runs = {}
    cases = {"default": " ".join(xla_flags.DEFAULT_GPU_FLAGS), "bogus": "--xla_gpu_no_such_flag=1"}
    for name, flags in cases.items():
        runs[name] = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                    timeout=300, env={**base, "XLA_FLAGS": flags})
    assert runs["default"].returncode == 0, runs["default"].stderr[-2000:]
    assert runs["default"].stdout.strip() == expected
    assert runs["bogus"].returncode != 0  # the check above is meaningful: XLA does validate names
