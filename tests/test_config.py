"""Typed config: conversion, validation (valid and invalid cases), CLI errors."""

import dataclasses
import subprocess
import sys

import pytest

from configs import common, moving_digits, vdm_t2v_small, vdm_ucf101
from vdm_jax import config as C


def test_base_config_is_the_dataclass_defaults():
    base = common.base_config()
    assert C.from_configdict(base) == C.Config()
    assert base.mesh.rules == C.DEFAULT_RULES and isinstance(base.model.channel_mults, tuple)


def test_sections_convert_and_validate_at_construction():
    m = C.ModelConfig(attention_backend="xla", channel_mults=[1, 2])
    assert m.attention_backend is C.AttentionBackend.XLA and m.channel_mults == (1, 2)
    with pytest.raises(C.ConfigError, match="sampling.name.*unknown value 'euler'"):
        C.SamplerConfig(name="euler")
    with pytest.raises(C.ConfigError, match="model.dropout"):
        C.ModelConfig(dropout=1.5)
    assert C.DataConfig(num_frames=8, images_per_video=2).clip_frames == 10
    # the model section is validated with the derived model.resolution (= data.resolution)
    cfg = C.from_configdict({"data": {"resolution": 24}, "model": {"channel_mults": (1,), "layout_grid": 3,
                                                                   "attention_resolutions": (24,)}})
    assert cfg.model.resolution == 24 and cfg.model.layout_grid == 3


@pytest.mark.parametrize("module,arg", [(moving_digits, None), (moving_digits, "smoke"),
                                        (moving_digits, "steps=7,batch=4"), (vdm_ucf101, None),
                                        (vdm_t2v_small, "images=4"), (vdm_t2v_small, "motion")])
def test_shipped_configs_validate(module, arg):
    cfg = C.from_configdict(module.get_config(arg))
    assert isinstance(cfg.model.attention_backend, C.AttentionBackend)
    assert isinstance(cfg.model.channel_mults, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.base_channels = 1  # type: ignore[misc]


def test_t2v_motion_variant_carries_the_quickstart_motion_recipe():
    md = C.from_configdict(moving_digits.get_config(None))
    plain = C.from_configdict(vdm_t2v_small.get_config(None))
    motion = C.from_configdict(vdm_t2v_small.get_config("motion"))
    assert not plain.model.word_conditioning and plain.diffusion.logsnr_shift == 0.0
    for section, field in [("model", "word_conditioning"), ("model", "frame_conditioning"),
                           ("diffusion", "logsnr_shift"), ("diffusion", "train_mix_fraction"),
                           ("diffusion", "train_mix_shift"), ("sampling", "grid_shift")]:
        assert getattr(getattr(motion, section), field) == getattr(getattr(md, section), field), field
    assert motion.model.base_channels == plain.model.base_channels  # the paper's network otherwise


def test_config_args_are_typed():
    cfg = C.from_configdict(moving_digits.get_config("steps=7,batch=4"))
    assert cfg.training.num_train_steps == 7 and cfg.training.global_batch_size == 4
    with pytest.raises(ValueError, match="steps"):
        moving_digits.get_config("steps=abc")
    with pytest.raises(ValueError, match="unknown config argument 'nope'"):
        moving_digits.get_config("nope")


@pytest.mark.parametrize("section,field,value,match", [
    ("optimizer", "learning_rate", -1.0, "optimizer.learning_rate"),
    ("optimizer", "learning_rate", 0.0, "optimizer.learning_rate"),
    ("model", "attention_backend", "flash", r"model.attention_backend.*'xla', 'cudnn', 'splash', 'auto'"),
    ("model", "dtype", "float8", "model.dtype"),
    ("model", "dropout", 1.5, "model.dropout"),
    ("diffusion", "target", "score", "diffusion.target"),
    ("sampling", "steps", 0, "sampling.steps"),
    ("sampling", "name", "euler", "sampling.name"),
    ("data", "num_frames", 0, "data.num_frames"),
    ("data", "resolution", 15, "data.resolution"),  # not divisible by 2**(levels-1)
    ("training", "microbatches", 3, "training.microbatches"),
    ("mesh", "fsdp", 0, "mesh.fsdp"),
    ("model", "attention_resolutions", (5,), "model.attention_resolutions"),
])
def test_invalid_values_name_the_field(section, field, value, match):
    d = C.to_dict(C.from_configdict(moving_digits.get_config(None)))
    d[section][field] = value
    with pytest.raises(C.ConfigError, match=match) as info:
        C.from_configdict(d)
    assert "\n" not in str(info.value)


def test_unknown_field_is_refused():
    d = C.to_dict(C.Config())
    d["model"]["no_such_field"] = 1
    with pytest.raises(C.ConfigError, match="model.no_such_field"):
        C.from_configdict(d)


def test_wrong_types_are_refused():
    d = C.to_dict(C.Config())
    d["training"]["num_train_steps"] = "ten"
    with pytest.raises(C.ConfigError, match="training.num_train_steps"):
        C.from_configdict(d)


def test_mesh_sizes_must_multiply_to_device_count():
    mesh = C.MeshConfig(data=-1, fsdp=2, tensor=2)
    assert mesh.axis_sizes(8) == {"data": 2, "fsdp": 2, "tensor": 2, "context": 1}
    with pytest.raises(C.ConfigError, match="mesh"):
        C.MeshConfig(data=2, fsdp=2, tensor=1).axis_sizes(8)
    with pytest.raises(C.ConfigError, match="mesh"):
        C.MeshConfig(data=-1, fsdp=3).axis_sizes(8)
    with pytest.raises(C.ConfigError, match="at most one"):
        C.from_configdict({"mesh": {"data": -1, "fsdp": -1}})


def test_replace_revalidates():
    cfg = C.replace(C.Config(), training={"num_train_steps": 5})
    assert cfg.training.num_train_steps == 5
    with pytest.raises(C.ConfigError, match="training.num_train_steps"):
        C.replace(cfg, training={"num_train_steps": 0})


def _run_train(*extra):
    cmd = [sys.executable, "-m", "launch.train", "--config=configs/moving_digits.py:smoke",
           "--workdir=/tmp/vdm_cfg_test_should_not_exist", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("override,needle", [
    ("--config.no_such_field=1", "no_such_field"),
    ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate"),
    ("--config.model.attention_backend=flashy", "model.attention_backend"),
])
def test_launcher_refuses_bad_config_with_one_line(override, needle):
    proc = _run_train(override)
    assert proc.returncode != 0
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and needle in err_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
