"""Frozen T5 end to end on moving_digits:smoke with the tiny encoder fixture: precompute the caption
embeddings -> train with ``model.text_encoder=precomputed`` -> sample (with a negative prompt) ->
evaluate; exact resume over the stored embeddings; another encoder is refused."""

from __future__ import annotations

import os
import shutil

import jax
import numpy as np
import pytest
import training_support as ts

from launch import encode_text
from vdm_jax.config import ConfigError

TINY_T5 = os.path.join(os.path.dirname(__file__), "fixtures", "tiny_t5")
TINY_UMT5 = os.path.join(os.path.dirname(__file__), "fixtures", "tiny_umt5")
STEPS = 4
OVERRIDES = {
    "model.text_encoder": "precomputed", "model.precomputed_text_dim": 32,
    "data.text_encoder_dir": TINY_T5, "training.num_train_steps": STEPS, "training.checkpoint_every": 2,
    "training.eval_every": STEPS, "training.eval_batches": 1, "training.sample_every": STEPS,
    "training.num_sample_prompts": 2, "training.async_checkpointing": False,
}


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    cache = ts.compilation_cache_dir(tmp_path_factory, "jax_cache_t5")
    jax.config.update("jax_compilation_cache_dir", str(cache))
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The smoke dataset with its captions encoded by the tiny T5 (own copy: the sidecar is added)."""
    from data_pipelines import sources

    data_dir = tmp_path_factory.mktemp("t5_data")
    path = sources.ensure_prepared(ts.smoke_config(data_dir).data)
    summary = encode_text.run(path, TINY_T5, max_len=ts.smoke_config(data_dir).model.max_text_len,
                              splits=("train", "test"), batch_size=16, log=lambda s: None)
    assert summary["records"] == 64 + 16
    return data_dir


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    """(workdir, final state as numpy) of an uninterrupted STEPS-step run on one device."""
    from vdm_jax.training.loop import train_and_evaluate

    workdir = tmp_path_factory.mktemp("t5_run") / "run"
    train_and_evaluate(ts.smoke_config(data_dir, OVERRIDES), str(workdir), devices=jax.devices()[:1])
    return workdir, ts.restore_numpy(workdir, STEPS)


def test_trains_on_stored_embeddings_with_samples_and_encoder_identity(trained):
    import json

    workdir, _ = trained
    losses = ts.losses(workdir)
    assert sorted(losses) == list(range(1, STEPS + 1)) and all(np.isfinite(list(losses.values())))
    assert (workdir / "samples" / f"step_{STEPS:07d}.gif").exists()
    spec = json.loads((workdir / "checkpoints" / str(STEPS) / "tokenizer" / "metadata").read_text())
    assert spec["text_encoder"]["path"] == os.path.abspath(TINY_T5)


def test_resume_over_stored_embeddings_is_exact(trained, tmp_path, data_dir):
    from vdm_jax.training.loop import train_and_evaluate

    workdir, final = trained
    copy = tmp_path / "resumed"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / "checkpoints" / str(STEPS))  # as if stopped after the step-2 checkpoint
    train_and_evaluate(ts.smoke_config(data_dir, OVERRIDES), str(copy), devices=jax.devices()[:1])
    got = ts.restore_numpy(copy, STEPS)
    assert got.keys() == final.keys()
    for key in final:
        np.testing.assert_array_equal(got[key], final[key], err_msg=key)
    assert ts.losses(copy) == ts.losses(workdir)


def test_sample_with_negative_prompt_and_evaluate(trained, tmp_path, data_dir):
    from vdm_jax.evaluation import runner
    from vdm_jax.evaluation import sample_cli as sampling

    workdir, _ = trained

    def sample(**kw):
        req = sampling.SampleRequest(workdir=str(workdir), prompts=("a big red 7 moves left fast",),
                                     out=str(tmp_path / "s.gif"), steps=2, seed=1, **kw)
        return sampling.run_sample(req)["videos"]

    null = sample(guidance=2.0)
    negative = sample(guidance=2.0, negative_prompt="a small white circle bounces up and down slowly")
    assert null.shape == negative.shape == (1, 4, 16, 16, 3)
    assert not np.array_equal(null, negative)  # the unconditional branch changed

    config = ts.smoke_config(data_dir, {**OVERRIDES, "evaluation.fvd": False, "evaluation.lpips": False,
                                        "evaluation.num_prediction_clips": 1})
    metrics = runner.evaluate(ts.eval_program(config), str(workdir), "latest")
    assert metrics["step"] == STEPS and np.isfinite(metrics["eval_loss"])
    assert "align_color_acc" in metrics


def test_another_encoder_is_refused(trained, tmp_path, data_dir):
    from vdm_jax.evaluation import sample_cli as sampling
    from vdm_jax.evaluation.loading import EvalInputError
    from vdm_jax.training.loop import train_and_evaluate

    config = ts.smoke_config(data_dir, {**OVERRIDES, "data.text_encoder_dir": TINY_UMT5,
                                        "model.precomputed_text_dim": 16})
    with pytest.raises(ConfigError, match="was not encoded with text encoder") as e:
        train_and_evaluate(config, str(tmp_path / "w"), devices=jax.devices()[:1])
    assert "\n" not in str(e.value) and "data.text_encoder_dir" in str(e.value)
    with pytest.raises(ConfigError, match="precomputed_text_dim.*width 32"):
        train_and_evaluate(ts.smoke_config(data_dir, {**OVERRIDES, "model.precomputed_text_dim": 24}),
                           str(tmp_path / "w2"), devices=jax.devices()[:1])
    with pytest.raises(ConfigError, match="only used with model.text_encoder='precomputed'"):
        train_and_evaluate(ts.smoke_config(data_dir, {"data.text_encoder_dir": TINY_T5}),
                           str(tmp_path / "w3"), devices=jax.devices()[:1])
    req = sampling.SampleRequest(workdir=str(trained[0]), prompts=("a red 7",), out=str(tmp_path / "x.gif"),
                                 text_encoder_dir=TINY_UMT5)
    with pytest.raises(EvalInputError, match="was trained on embeddings of the text encoder"):
        sampling.run_sample(req)
