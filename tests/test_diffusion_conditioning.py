"""Conditional sampling from an unconditional model, on Gaussian toys with correlated frames.

AR(1) frames (corr rho^|i-j|, std 0.5): given frames x^a, the true conditional mean of a later frame
j is rho^(j - k + 1) x_{k-1}, so conditioning carries information we can measure.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.config import DiffusionConfig, SamplerConfig
from vdm_jax.diffusion import (
    DownsampleObservation,
    FrameObservation,
    Schedule,
    conditional_sample,
    extend_video,
    interpolation_observation,
    make_window_sampler,
    prediction_observation,
    sample,
    super_resolution_observation,
)
from vdm_jax.diffusion.gaussian_toy import GaussianToy

RHO, N, T = 0.9, 2048, 4
DCFG = DiffusionConfig()
SCH = Schedule.from_config(DCFG, 64)
TOY = GaussianToy.correlated_frames(T, (2, 2, 1), rho=RHO, std=0.5)
DEN = lambda z, ls, c, d: TOY.denoise(z, ls, "eps")
SHAPE = (N, T, 2, 2, 1)


def _run(obs, method, w_r=9.0, replace_observed=True, steps=48, toy_den=DEN, shape=SHAPE):
    cfg = SamplerConfig(name="ddim", steps=steps, clip_x0=False, reconstruction_weight=w_r)
    if obs is None:
        f = lambda key: sample(toy_den, shape=shape, rng=key, schedule=SCH, diffusion_cfg=DCFG,
                               sampler_cfg=cfg)
    else:
        f = lambda key: conditional_sample(toy_den, obs, shape=shape, rng=key, schedule=SCH,
                                           diffusion_cfg=DCFG, sampler_cfg=cfg, method=method,
                                           replace_observed=replace_observed)
    return np.asarray(jax.jit(f)(jax.random.key(1)))


def test_prediction_reconstruction_beats_replacement_beats_unconditional():
    x = TOY.sample(jax.random.key(7), N)
    k = 2
    obs = prediction_observation(x[:, :k])
    cond_mean = np.stack([RHO ** (j - k + 1) * np.asarray(x[:, k - 1]) for j in range(k, T)], 1)
    err = {}
    for name, o, method in [("uncond", None, None), ("replacement", obs, "replacement"),
                            ("reconstruction", obs, "reconstruction")]:
        out = _run(o, method)
        err[name] = float(np.mean((out[:, k:] - cond_mean) ** 2))
        if o is not None:
            np.testing.assert_allclose(out[:, :k], np.asarray(x[:, :k]), atol=1e-6)  # context pasted
    ideal = 0.25 * np.mean([1 - RHO ** (2 * (j - k + 1)) for j in range(k, T)])  # conditional variance
    assert err["reconstruction"] < err["replacement"] < err["uncond"], err
    assert err["reconstruction"] < 2 * ideal, (err, ideal)


def test_reconstruction_guidance_lowers_error_on_conditioning_frames():
    """Pure guidance (no replacement): the generated conditioning frames are pulled onto x^a."""
    x = TOY.sample(jax.random.key(8), N)
    obs = FrameObservation(x[:, :2], (0, 1))
    uncond = _run(None, None)
    guided = _run(obs, "reconstruction", w_r=1.0, replace_observed=False)
    e_u = float(np.mean((uncond[:, :2] - np.asarray(x[:, :2])) ** 2))
    e_g = float(np.mean((guided[:, :2] - np.asarray(x[:, :2])) ** 2))
    assert e_g < 0.05 * e_u, (e_g, e_u)


def test_interpolation_every_other_frame():
    toy = GaussianToy.correlated_frames(5, (2, 2, 1), rho=RHO, std=0.5)
    den = lambda z, ls, c, d: toy.denoise(z, ls, "eps")
    x = toy.sample(jax.random.key(9), 1024)
    obs = interpolation_observation(x[:, ::2], 5)
    assert obs.frames == (0, 2, 4)
    # AR(1): E[x_1 | x_0, x_2] = rho / (1 + rho^2) (x_0 + x_2)
    cm = RHO / (1 + RHO**2) * np.asarray(x[:, 0] + x[:, 2])
    shape = (1024, 5, 2, 2, 1)
    out = _run(obs, "reconstruction", toy_den=den, shape=shape)
    rep = _run(obs, "replacement", toy_den=den, shape=shape)
    e, e_rep = float(np.mean((out[:, 1] - cm) ** 2)), float(np.mean((rep[:, 1] - cm) ** 2))
    ideal = 0.25 * (1 - RHO**2) / (1 + RHO**2)
    assert e < e_rep and e < 2 * ideal, (e, e_rep, ideal)
    with pytest.raises(ValueError, match="every other frame"):
        interpolation_observation(x[:, :2], 5)


def test_super_resolution_matches_low_res_video():
    toy = GaussianToy.correlated_frames(2, (4, 4, 1), rho=RHO, std=0.5)
    den = lambda z, ls, c, d: toy.denoise(z, ls, "eps")
    x = toy.sample(jax.random.key(10), 512)
    y = DownsampleObservation(None, 2).measure(x)
    obs = super_resolution_observation(y, 2)
    shape = (512, 2, 4, 4, 1)
    e = {}
    for name, o, method in [("uncond", None, None), ("reconstruction", obs, "reconstruction"),
                            ("replacement", obs, "replacement")]:
        out = _run(o, method, toy_den=den, shape=shape, steps=24)
        e[name] = float(jnp.mean((obs.measure(jnp.asarray(out)) - y) ** 2))
    assert e["reconstruction"] < 0.02 * e["uncond"] and e["replacement"] < 0.02 * e["uncond"], e


def test_extension_beyond_window_keeps_temporal_correlation():
    n, window, overlap, total = 512, 4, 2, 10
    seams = [window - 1 + i * (window - overlap) for i in range(3)]  # frame pairs (j, j+1) across windows
    corr = {}
    for method in ("reconstruction", "replacement"):
        cfg = SamplerConfig(name="ddim", steps=24, clip_x0=False, reconstruction_weight=4.0)
        ws = make_window_sampler(DEN, shape=(n, window, 2, 2, 1), schedule=SCH, diffusion_cfg=DCFG,
                                 sampler_cfg=cfg, method=method)
        v = np.asarray(extend_video(ws, rng=jax.random.key(3), total_frames=total, window=window,
                                    overlap=overlap)).reshape(n, total, -1)
        assert v.shape[1] == total
        corr[method] = [float(np.corrcoef(v[:, j].ravel(), v[:, j + 1].ravel())[0, 1]) for j in seams]
    err = {m: np.mean(np.abs(np.array(c) - RHO)) for m, c in corr.items()}
    assert err["reconstruction"] < 0.06 and err["reconstruction"] < err["replacement"], corr


def test_conditioning_shape_errors():
    cfg = SamplerConfig(name="ddim", steps=2)
    kw = dict(shape=SHAPE, rng=jax.random.key(0), schedule=SCH, diffusion_cfg=DCFG, sampler_cfg=cfg)
    with pytest.raises(ValueError, match="conditioning frames have shape"):
        conditional_sample(DEN, FrameObservation(jnp.zeros((N, 2, 3, 2, 1)), (0, 1)), **kw)
    with pytest.raises(ValueError, match="frame indices"):
        conditional_sample(DEN, FrameObservation(jnp.zeros((N, 1, 2, 2, 1)), (7,)), **kw)
    with pytest.raises(ValueError, match="low-resolution"):
        conditional_sample(DEN, DownsampleObservation(jnp.zeros((N, T, 2, 2, 1)), 2), **kw)
    with pytest.raises(ValueError, match="method"):
        conditional_sample(DEN, prediction_observation(jnp.zeros((N, 1, 2, 2, 1))), method="inpaint", **kw)
    with pytest.raises(ValueError, match="overlap"):
        extend_video(lambda c, k: None, rng=jax.random.key(0), total_frames=8, window=4, overlap=4)
