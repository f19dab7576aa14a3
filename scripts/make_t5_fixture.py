"""Regenerate the tiny T5 / umT5 test fixtures (``tests/fixtures/tiny_t5``, ``tests/fixtures/tiny_umt5``).

Each fixture is a Hugging Face encoder directory as ``vdm_jax.models.t5.load_t5`` reads it:
``config.json``, ``model.safetensors`` (float32, random weights), ``spiece.model`` (a small
sentencepiece unigram model trained here on moving_digits-style captions, T5 special ids
pad=0, eos=1, unk=2) and ``golden.npz`` with the reference encoder's outputs for a few prompts
(``input_ids``, ``attention_mask``, ``last_hidden_state``; padded positions are included).

The reference is Hugging Face ``transformers``' ``T5EncoderModel`` / ``UMT5EncoderModel``
(eager attention, float32). This script needs torch, transformers, safetensors and
sentencepiece; the tests that use the fixtures need none of them::

    python -m venv /tmp/t5ref && /tmp/t5ref/bin/pip install torch transformers safetensors sentencepiece numpy
    /tmp/t5ref/bin/python scripts/make_t5_fixture.py [--out_root=tests/fixtures]

The ``umt5`` fixture has the relative-position bias in every layer (umT5); the ``t5`` one only
in layer 0 (T5 v1.1).
"""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil

import numpy as np
import sentencepiece as spm
import torch
import transformers

COLORS = ("red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange")
KINDS = tuple(str(d) for d in range(10)) + ("square", "circle", "triangle")
MOTIONS = ("moves left", "moves right", "moves up", "moves down", "bounces left and right",
           "bounces up and down")
PROMPTS = ("a big red 7 moves left fast",
           "a small blue square bounces up and down slowly and a big white 3 moves right slowly",
           "",
           "zebra quartz")  # words unknown to the tokenizer (unk pieces)
MAX_LEN = 24


def captions() -> list[str]:
    out = []
    for size, color, kind, motion, speed in itertools.product(("small", "big"), COLORS, KINDS, MOTIONS,
                                                             ("slowly", "fast")):
        out.append(f"a {size} {color} {kind} {motion} {speed}")
    return out


def train_spiece(path: str, vocab_size: int) -> None:
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions()), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="identity",
        character_coverage=1.0, num_threads=1, minloglevel=2, hard_vocab_limit=False)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def tokenize(spiece_path: str, prompts, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """T5 tokenization: sentencepiece pieces + EOS (id 1), truncated to max_len, padded with 0."""
    sp = spm.SentencePieceProcessor(model_file=spiece_path)
    ids = np.zeros((len(prompts), max_len), np.int64)
    mask = np.zeros((len(prompts), max_len), np.int64)
    for i, p in enumerate(prompts):
        toks = list(sp.encode(p))[: max_len - 1] + [1]
        ids[i, :len(toks)] = toks
        mask[i, :len(toks)] = 1
    return ids, mask


def build(out: str, kind: str, *, d_model: int, d_kv: int, heads: int, d_ff: int, layers: int,
          vocab: int, seed: int) -> None:
    os.makedirs(out, exist_ok=True)
    spiece = os.path.join(out, "spiece.model")
    train_spiece(spiece, vocab_size=min(vocab, 100))
    common = dict(vocab_size=vocab, d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=layers, num_heads=heads,
                  relative_attention_num_buckets=8, relative_attention_max_distance=16,
                  feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6,
                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False)
    torch.manual_seed(seed)
    if kind == "t5":
        cfg = transformers.T5Config(**common)
        model = transformers.T5EncoderModel(cfg)
    else:
        cfg = transformers.UMT5Config(**common)
        model = transformers.UMT5EncoderModel(cfg)
    # Random weights of a realistic scale (the default init leaves the FFN output near zero).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "relative_attention_bias" in name:
                p.copy_(torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * (1.0 if "shared" in name or "embed" in name
                                               else p.shape[-1] ** -0.5))
    model.config._attn_implementation = "eager"
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    ids, mask = tokenize(spiece, PROMPTS, MAX_LEN)
    with torch.no_grad():
        hidden = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    np.savez(os.path.join(out, "golden.npz"), input_ids=ids.astype(np.int32),
             attention_mask=mask.astype(np.int32),
             last_hidden_state=hidden.last_hidden_state.numpy().astype(np.float32), prompts=np.array(PROMPTS))
    for extra in os.listdir(out):  # keep only what the loader reads (+ golden values)
        if extra not in ("config.json", "model.safetensors", "spiece.model", "golden.npz"):
            path = os.path.join(out, extra)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_root = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    parser.add_argument("--out_root", default=default_root)
    args = parser.parse_args()
    root = os.path.abspath(args.out_root)
    build(os.path.join(root, "tiny_t5"), "t5", d_model=32, d_kv=8, heads=4, d_ff=64, layers=2, vocab=112,
          seed=0)
    build(os.path.join(root, "tiny_umt5"), "umt5", d_model=16, d_kv=4, heads=4, d_ff=32, layers=2, vocab=112,
          seed=1)
    for name in ("tiny_t5", "tiny_umt5"):
        d = os.path.join(root, name)
        total = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print(f"{d}: {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
