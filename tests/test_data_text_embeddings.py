"""Frozen T5 embeddings stored next to a prepared dataset: encode, read through grain, resume,
refuse another encoder."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from data_pipelines import pipeline, records, sources, text_embeddings
from launch import encode_text
from vdm_jax.config import DataConfig
from vdm_jax.models import t5

TINY_T5 = os.path.join(os.path.dirname(__file__), "fixtures", "tiny_t5")
TINY_UMT5 = os.path.join(os.path.dirname(__file__), "fixtures", "tiny_umt5")
MAX_LEN = 24


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    c = DataConfig(data_dir=str(tmp_path_factory.mktemp("data")), num_frames=4, resolution=16,
                   num_train_clips=12, num_test_clips=8, num_images=4, generation_seed=3)
    path = sources.ensure_prepared(c)
    summary = encode_text.run(path, TINY_T5, max_len=MAX_LEN, batch_size=4, chunk_records=5,
                              log=lambda s: None)
    return dataclasses.replace(c, text_encoder_dir=TINY_T5), path, summary


def test_store_metadata_and_disk_cost(encoded):
    cfg, path, summary = encoded
    assert summary["splits"] == {"train": 12, "test": 8}  # the image split is not encoded
    store, meta = text_embeddings.find_store(path, TINY_T5, ("train", "test"))
    assert store == summary["store"] and meta["complete"]
    cfg_json = open(os.path.join(TINY_T5, "config.json"), "rb").read()
    import hashlib

    assert meta["encoder"]["path"] == os.path.abspath(TINY_T5)
    assert meta["encoder"]["config_sha256"] == hashlib.sha256(cfg_json).hexdigest()
    assert (meta["d_model"], meta["max_len"], meta["dtype"]) == (32, MAX_LEN, "bfloat16")
    assert len(os.listdir(store)) == 1 + 3 + 2  # metadata + ceil(12/5) + ceil(8/5) chunk files
    # payload: 4 bytes + n tokens x 32 x 2 bytes
    assert 4 + 2 * 32 * 2 <= summary["payload_bytes_per_clip"] <= 4 + MAX_LEN * 32 * 2


def test_batches_carry_the_encoders_embeddings(encoded):
    cfg, _, _ = encoded
    batch = next(iter(pipeline.make_eval_iterator(cfg, global_batch_size=4, max_text_len=MAX_LEN)))
    assert "tokens" not in batch
    assert batch["text_embeddings"].shape == (4, MAX_LEN, 32)
    assert batch["text_embeddings"].dtype.name == "bfloat16"
    captions = [r["caption"] for r in pipeline.eval_records(cfg, 4)]
    ref, mask = t5.FrozenTextEncoder(TINY_T5, MAX_LEN, batch_size=4)(captions)
    np.testing.assert_array_equal(batch["token_mask"], mask)
    got = batch["text_embeddings"].astype(np.float32)
    np.testing.assert_allclose(got, ref, atol=0.02 * np.abs(ref).max())  # bfloat16 storage
    assert not got[~mask].any()
    # training batches too, and a longer model length pads with zeros
    train = next(pipeline.make_train_iterator(cfg, global_batch_size=4, max_text_len=MAX_LEN + 8))
    assert train["text_embeddings"].shape == (4, MAX_LEN + 8, 32)
    assert not train["token_mask"][:, MAX_LEN:].any()


def test_restored_iterator_continues_exactly(encoded):
    cfg, _, _ = encoded
    it = pipeline.make_train_iterator(cfg, global_batch_size=4, max_text_len=MAX_LEN)
    next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]  # crosses an epoch (12 records)
    fresh = pipeline.make_train_iterator(cfg, global_batch_size=4, max_text_len=MAX_LEN)
    fresh.set_state(state)
    for want in expected:
        got = next(fresh)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_rerun_resumes_and_keeps_finished_chunks(encoded, tmp_path):
    cfg, path, summary = encoded
    copy = tmp_path / "ds"
    shutil.copytree(path, copy)
    store = os.path.join(copy, os.path.relpath(summary["store"], path))
    before = {f: open(os.path.join(store, f), "rb").read() for f in os.listdir(store) if f.endswith("record")}
    os.remove(os.path.join(store, "train-000000005.array_record"))  # an interrupted run
    meta = json.load(open(os.path.join(store, "metadata.json")))
    meta["complete"] = False
    json.dump(meta, open(os.path.join(store, "metadata.json"), "w"))
    with pytest.raises(text_embeddings.TextEmbeddingsError, match="incomplete"):
        text_embeddings.find_store(str(copy), TINY_T5)
    lines = []
    encode_text.run(str(copy), TINY_T5, max_len=MAX_LEN, batch_size=4, chunk_records=5, log=lines.append)
    assert len(lines) == 1 and "train 10/12" in lines[0]  # only the missing chunk was encoded
    after = {f: open(os.path.join(store, f), "rb").read() for f in os.listdir(store) if f.endswith("record")}
    assert after.keys() == before.keys()
    src = text_embeddings.EmbeddedSource(sources.KeysSource(str(copy), "train", (records.CAPTION_KEY,)),
                                         store, "train")
    ref = text_embeddings.EmbeddedSource(sources.KeysSource(path, "train", (records.CAPTION_KEY,)),
                                         summary["store"], "train")
    for i in range(len(src)):
        np.testing.assert_array_equal(src[i]["text_embedding"], ref[i]["text_embedding"])
    with pytest.raises(text_embeddings.TextEmbeddingsError, match="was written with"):
        encode_text.run(str(copy), TINY_T5, max_len=MAX_LEN + 1, batch_size=4, chunk_records=5,
                        log=lambda s: None)


def test_another_encoder_is_refused_with_one_line(encoded):
    cfg, path, _ = encoded
    other = dataclasses.replace(cfg, text_encoder_dir=TINY_UMT5)
    with pytest.raises(text_embeddings.TextEmbeddingsError) as e:
        pipeline.make_train_iterator(other, global_batch_size=4, max_text_len=MAX_LEN)
    msg = str(e.value)
    assert "\n" not in msg and "was not encoded with text encoder" in msg
    assert os.path.abspath(TINY_T5) in msg and "launch.encode_text" in msg
