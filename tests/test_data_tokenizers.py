"""Tokenizers (byte, sentencepiece) and the prepare CLI."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from data_pipelines import moving_digits_spec as spec
from data_pipelines import tokenizers as tk


def test_byte_tokenizer_roundtrip_mask_and_truncation():
    t = tk.ByteTokenizer()
    assert t.vocab_size == 260
    tokens, mask = t.encode("a red 7 é", 16)
    assert tokens.dtype == np.int32 and mask.dtype == bool and tokens.shape == mask.shape == (16,)
    assert tokens[0] == tk.BOS_ID and tokens[mask.sum() - 1] == tk.EOS_ID
    assert np.array_equal(mask, tokens != tk.PAD_ID) and mask[: mask.sum()].all()
    assert t.decode(tokens) == "a red 7 é"
    assert tokens.max() < t.vocab_size
    long_tokens, long_mask = t.encode("x" * 100, 8)
    assert long_mask.all() and long_tokens[-1] == tk.EOS_ID and t.decode(long_tokens) == "x" * 6
    assert t.encode(b"abc", 8)[0].tolist() == t.encode("abc", 8)[0].tolist()


def test_sentencepiece_trained_on_captions(tmp_path):
    captions = [spec.generate_example(i, 0, 2, 16)["caption"] for i in range(300)]
    path = tk.train_sentencepiece(captions, 512, tmp_path / "sp.model")
    t = tk.SentencePieceTokenizer(path)
    assert 8 < t.vocab_size <= 512
    tokens, mask = t.encode(captions[0], 48)
    assert t.decode(tokens) == captions[0]
    assert tokens[0] == tk.BOS_ID and tokens[mask.sum() - 1] == tk.EOS_ID and tokens.max() < t.vocab_size
    # word-level pieces: far shorter than bytes
    assert mask.sum() < len(captions[0]) // 2
    clone = pickle.loads(pickle.dumps(t))
    assert np.array_equal(clone.encode(captions[1], 48)[0], t.encode(captions[1], 48)[0])
    with pytest.raises(FileNotFoundError, match="prepare"):
        tk.load_tokenizer("sentencepiece", tmp_path, 512)  # not at the standard name yet
    os.replace(path, tk.sentencepiece_path(tmp_path, 512))
    assert tk.load_tokenizer("sentencepiece", tmp_path, 512).vocab_size == t.vocab_size
    with pytest.raises(ValueError, match="unknown tokenizer"):
        tk.load_tokenizer("tiktoken")


def test_prepare_cli_moving_digits_with_sentencepiece(tmp_path):
    cmd = [sys.executable, "-m", "data_pipelines.prepare", "--dataset=moving_digits",
           f"--data_dir={tmp_path}",
           "--num_frames=2", "--resolution=16", "--num_train=40", "--num_test=4", "--num_images=4",
           "--tokenizer=sentencepiece", "--sentencepiece_vocab_size=128"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    path = result["path"]
    assert path.startswith(str(tmp_path)) and "f2_r16_tr40_te4_im4" in path
    assert os.path.isfile(os.path.join(path, "dataset_info.json"))
    t = tk.load_tokenizer("sentencepiece", path, 128)
    assert t.vocab_size <= 128
    bad = subprocess.run([sys.executable, "-m", "data_pipelines.prepare", "--dataset=video_folder",
                          f"--data_dir={tmp_path}"], capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert bad.returncode != 0 and "--source_dir" in bad.stderr
