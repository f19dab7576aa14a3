"""The NNX T5 / umT5 encoder against golden values of Hugging Face transformers' encoders.

Fixtures (tests/fixtures/tiny_t5, tiny_umt5) come from scripts/make_t5_fixture.py; these tests need
neither torch nor transformers.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models import t5

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TINY_T5 = os.path.join(FIXTURES, "tiny_t5")
TINY_UMT5 = os.path.join(FIXTURES, "tiny_umt5")


@pytest.mark.parametrize("directory", [TINY_T5, TINY_UMT5], ids=["t5", "umt5"])
def test_matches_transformers_golden(directory):
    golden = np.load(os.path.join(directory, "golden.npz"))
    model = t5.load_t5(directory)
    assert model.cfg.per_layer_position_bias == (directory == TINY_UMT5)
    tok = t5.load_tokenizer(directory)
    ids, mask = tok.encode_batch([str(p) for p in golden["prompts"]], golden["input_ids"].shape[1])
    np.testing.assert_array_equal(ids, golden["input_ids"])
    np.testing.assert_array_equal(mask, golden["attention_mask"].astype(bool))
    out = jax.jit(lambda m, i, k: m(i, k))(model, jnp.asarray(ids), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out), golden["last_hidden_state"], atol=1e-5, rtol=1e-5)


def test_bfloat16_compute_close():
    golden = np.load(os.path.join(TINY_T5, "golden.npz"))
    model = t5.load_t5(TINY_T5, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    out = model(jnp.asarray(golden["input_ids"]), jnp.asarray(golden["attention_mask"]))
    assert out.dtype == jnp.bfloat16
    ref = golden["last_hidden_state"]
    assert np.abs(np.asarray(out, np.float32) - ref).max() < 0.05 * np.abs(ref).max()


def test_sharded_index_and_mesh_placement(tmp_path, devices8):
    from safetensors.numpy import load_file, save_file

    d = tmp_path / "t5"
    d.mkdir()
    for name in ("config.json", "spiece.model"):
        shutil.copy(os.path.join(TINY_T5, name), d / name)
    tensors = load_file(os.path.join(TINY_T5, "model.safetensors"))
    names = sorted(tensors)
    weight_map = {}
    for j, part in enumerate((names[::2], names[1::2])):
        fname = f"model-0000{j + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(d / fname))
        weight_map.update({k: fname for k in part})
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    mesh = jax.make_mesh((2, 4), ("fsdp", "tensor"), devices=devices8,
                         axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"))
    model = t5.load_t5(str(d), mesh=mesh, rules=rules)
    wi = model.blocks[0].ff.wi_0[...]
    assert wi.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    q = model.blocks[1].attn.q[...]
    assert q.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor", None)
    golden = np.load(os.path.join(TINY_T5, "golden.npz"))
    out = model(jnp.asarray(golden["input_ids"]), jnp.asarray(golden["attention_mask"]))
    np.testing.assert_allclose(np.asarray(out), golden["last_hidden_state"], atol=1e-5, rtol=1e-5)


def _copy(tmp_path, skip=()):
    d = tmp_path / "enc"
    d.mkdir()
    for name in os.listdir(TINY_T5):
        if name not in skip:
            shutil.copy(os.path.join(TINY_T5, name), d / name)
    return str(d)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "spiece.model"])
def test_missing_file_is_one_line_error_naming_it(tmp_path, missing):
    d = _copy(tmp_path, skip=(missing,))
    with pytest.raises(t5.T5LoadError) as e:
        t5.check_directory(d)
        t5.load_t5(d)
        t5.load_tokenizer(d)
    msg = str(e.value)
    assert missing in msg and "\n" not in msg


def test_mismatched_config_is_one_line_error(tmp_path):
    d = _copy(tmp_path)
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["d_ff"] = 48
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(t5.T5LoadError, match=r"model\.safetensors: tensor .*wi_0.* has shape") as e:
        t5.load_t5(d)
    assert "\n" not in str(e.value)
    cfg["num_layers"] = 3
    cfg["d_ff"] = 64
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(t5.T5LoadError, match=r"encoder\.block\.2.* not found"):
        t5.load_t5(d)


def test_relative_position_bucket_reference():
    """Against a direct numpy transcription of the reference bucket function."""
    import math

    def ref(rel, num_buckets, max_distance):
        nb = num_buckets // 2
        out = (rel > 0).astype(np.int64) * nb
        n = np.abs(rel)
        max_exact = nb // 2
        with np.errstate(divide="ignore", invalid="ignore"):
            large = max_exact + (np.log(n.astype(np.float32) / max_exact) / math.log(max_distance / max_exact)
                                 * (nb - max_exact)).astype(np.int64)
        large = np.minimum(large, nb - 1)
        return out + np.where(n < max_exact, n, large)

    rel = np.arange(-300, 301)[None, :]
    for nb, md in ((32, 128), (8, 16)):
        np.testing.assert_array_equal(np.asarray(t5.relative_position_bucket(jnp.asarray(rel), nb, md)),
                                      ref(rel, nb, md))


def test_parameters_carry_logical_axes():
    from flax import nnx

    cfg = t5.read_config(TINY_T5)
    model = nnx.eval_shape(lambda: t5.T5Encoder(cfg))
    names = {"/".join(map(str, p)): v.get_metadata().get("out_sharding")
             for p, v in nnx.to_flat_state(nnx.state(model))}
    assert names["embed"] == ("vocab", "embed")
    assert names["blocks/0/attn/q"] == ("embed", "heads", "kv")
    assert names["blocks/0/attn/o"] == ("heads", "kv", "embed")
    assert names["blocks/0/ff/wi_0"] == ("embed", "mlp")
    assert names["blocks/0/ff/wo"] == ("mlp", "embed")
    assert names["blocks/0/attn/rel_bias"] == ("rel_pos", "heads")
    assert "blocks/1/attn/rel_bias" not in names  # T5 v1.1: layer 0 only


def test_frozen_encoder_under_a_mesh_caches_prompts(devices8):
    golden = np.load(os.path.join(TINY_T5, "golden.npz"))
    prompts = [str(p) for p in golden["prompts"]]
    mesh = jax.make_mesh((8,), ("data",), devices=devices8, axis_types=(jax.sharding.AxisType.Auto,))
    with jax.set_mesh(mesh):  # as inside the training loop
        enc = t5.FrozenTextEncoder(TINY_T5, golden["input_ids"].shape[1], batch_size=3, cache_size=8)
        emb, mask = enc(prompts)
        again, _ = enc(prompts[::-1])
    np.testing.assert_array_equal(mask, golden["attention_mask"].astype(bool))
    ref = np.where(mask[..., None], golden["last_hidden_state"], 0.0)
    np.testing.assert_allclose(emb, ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(again, emb[::-1])
    assert len(enc._cache) == len(prompts)
