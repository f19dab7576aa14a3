"""Samplers against the exact denoiser of Gaussian data N(mu, diag(s^2)).

Statistical tolerances (N samples): mean within 5 standard errors s/sqrt(N); variance ratio within
4 standard errors sqrt(2/N) plus an allowance for the sampler's discretization bias at that step
count (deterministic samplers: 2%; stochastic samplers at 512 steps: 3%, their O(1/steps) bias).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.config import DiffusionConfig, SamplerConfig
from vdm_jax.diffusion import Schedule, guided_prediction, sample
from vdm_jax.diffusion.gaussian_toy import GaussianToy

TOY = GaussianToy.diagonal([0.3, -0.2, 0.0, 0.5], [0.3, 0.5, 0.8, 1.0])
N = 16384
STD = np.sqrt(np.diag(TOY.cov))


def _sampler(sampler_cfg, target="eps", n=N, toy=TOY):
    dcfg = DiffusionConfig(target=target)
    sch = Schedule.from_config(dcfg, 64)
    den = lambda z, ls, c, d: toy.denoise(z, ls, target)
    return jax.jit(lambda key, x_init=None: sample(den, shape=(n, toy.dim), rng=key, schedule=sch,
                                                   diffusion_cfg=dcfg, sampler_cfg=sampler_cfg,
                                                   x_init=x_init))


def _moment_errors(x):
    x = np.asarray(x, np.float64)
    mean_z = (x.mean(0) - TOY.mean) / (STD / math.sqrt(len(x)))
    return mean_z, x.var(0) / STD**2


@pytest.mark.parametrize("name,steps,extra,bias", [
    ("ddim", 256, {}, 0.02),
    ("dpm_solver_pp", 64, {}, 0.02),
    ("ddim", 512, {"ddim_eta": 0.5}, 0.03),
    ("ancestral", 512, {"ancestral_gamma": 0.3}, 0.03),
    ("langevin_pc", 512, {"ancestral_gamma": 0.3, "langevin_delta": 0.1}, 0.03),
])
def test_sampler_reproduces_mean_and_variance(name, steps, extra, bias):
    cfg = SamplerConfig(name=name, steps=steps, clip_x0=False, **extra)
    target = "v" if name == "ancestral" else "eps"  # exercise more than one parameterization
    mean_z, var_ratio = _moment_errors(_sampler(cfg, target)(jax.random.key(11)))
    assert np.all(np.abs(mean_z) < 5), mean_z
    assert np.all(np.abs(var_ratio - 1) < 4 * math.sqrt(2 / N) + bias), var_ratio


def test_dpm_solver_beats_ddim_at_20_steps():
    """Both integrate the probability-flow ODE; the exact ODE map from the same noise is known."""
    z1 = jax.random.normal(jax.random.key(5), (4096, TOY.dim))
    exact = np.asarray(TOY.ode_map(z1, -20.0))
    errs = {}
    for name in ("ddim", "dpm_solver_pp"):
        x = _sampler(SamplerConfig(name=name, steps=20, clip_x0=False), n=4096)(jax.random.key(0), z1)
        errs[name] = float(np.sqrt(np.mean((np.asarray(x) - exact) ** 2)))
        errs[name + "_var"] = float(np.max(np.abs(np.asarray(x).var(0) / exact.var(0) - 1)))
    assert errs["dpm_solver_pp"] < 0.5 * errs["ddim"], errs
    assert errs["dpm_solver_pp_var"] < errs["ddim_var"], errs
    # and DPM-Solver++ converges: at 64 steps the pathwise error is small in absolute terms
    x = _sampler(SamplerConfig(name="dpm_solver_pp", steps=64, clip_x0=False), n=4096)(jax.random.key(0), z1)
    assert float(np.sqrt(np.mean((np.asarray(x) - exact) ** 2))) < 0.01


def test_langevin_corrector_does_not_make_it_worse():
    base = dict(steps=64, clip_x0=False, ancestral_gamma=0.0)
    anc = _moment_errors(_sampler(SamplerConfig(name="ancestral", **base))(jax.random.key(2)))[1]
    pc = _moment_errors(_sampler(SamplerConfig(name="langevin_pc", langevin_steps=2, **base))(
        jax.random.key(2)))[1]
    tol = 2 * math.sqrt(2 / N)
    assert np.mean(np.abs(pc - 1)) <= np.mean(np.abs(anc - 1)) + tol, (anc, pc)


def test_ancestral_gamma0_equals_ddim_eta1():
    """Two formulas for the same posterior q(z_s | z_t, x^): VDM ancestral (gamma=0) and DDIM (eta=1)."""
    a = _sampler(SamplerConfig(name="ancestral", steps=16, clip_x0=False, ancestral_gamma=0.0), n=256)
    d = _sampler(SamplerConfig(name="ddim", steps=16, clip_x0=False, ddim_eta=1.0), n=256)
    np.testing.assert_allclose(np.asarray(a(jax.random.key(3))), np.asarray(d(jax.random.key(3))), atol=1e-4)


@pytest.mark.parametrize("name", ["ancestral", "ddim", "dpm_solver_pp", "langevin_pc"])
def test_deterministic_for_a_seed(name):
    f = _sampler(SamplerConfig(name=name, steps=4, ddim_eta=0.3), n=8)
    x1, x2, x3 = f(jax.random.key(1)), f(jax.random.key(1)), f(jax.random.key(2))
    np.testing.assert_array_equal(np.asarray(x1), np.asarray(x2))
    assert not np.allclose(np.asarray(x1), np.asarray(x3))
    assert np.all(np.abs(np.asarray(x1)) <= 1.0)  # clip_x0


def _cond_toy_denoiser(calls):
    """Exact denoiser of N(c, 0.25 I) given class mean c (cond), N(0, 1.25 I) marginal when dropped."""
    cond_toy = GaussianToy.diagonal(np.zeros(3), np.full(3, 0.5))

    def den(z, logsnr, cond, drop):
        calls.append(z.shape[0])
        a = jnp.exp(0.5 * jax.nn.log_sigmoid(logsnr))[:, None]
        mean = jnp.where(drop[:, None], 0.0, cond)
        eps_c = cond_toy.denoise(z - a * mean, logsnr, "eps")
        s2 = jax.nn.sigmoid(-logsnr)[:, None]
        eps_u = jnp.sqrt(s2) * z / (a**2 * 1.25 + s2)
        return jnp.where(drop[:, None], eps_u, eps_c)

    return den


def test_cfg_one_batched_forward_and_w0_equals_conditional():
    calls = []
    den = _cond_toy_denoiser(calls)
    dcfg, sch = DiffusionConfig(), Schedule.from_config(DiffusionConfig(), 64)
    cond = jnp.array([[1.0, -1.0, 0.5]] * 4)

    def run(w, force):
        cfg = SamplerConfig(name="ddim", steps=8, guidance_weight=w, clip_x0=False)
        return sample(den, shape=(cond.shape[0], 3), rng=jax.random.key(0), schedule=sch, diffusion_cfg=dcfg,
                      sampler_cfg=cfg, cond=cond, force_cfg=force)

    calls.clear()
    guided0 = run(0.0, True)
    assert calls == [8], calls  # traced once inside scan, with the 2B batch
    calls.clear()
    plain = run(0.0, False)
    assert calls == [4], calls
    np.testing.assert_allclose(np.asarray(guided0), np.asarray(plain), atol=1e-5)
    # w = -1 is the unconditional model; w > 0 pushes beyond the conditional mean (away from 0)
    z, lam = jnp.ones((4, 3)), jnp.zeros(4)
    p_u = den(z, lam, cond, jnp.ones(4, bool))
    np.testing.assert_allclose(np.asarray(guided_prediction(den, z, lam, cond, -1.0, use_cfg=True)),
                               np.asarray(p_u), atol=1e-6)
    cond = jnp.array([[1.0, -1.0, 0.5]] * 512)
    proj = lambda x: float(np.mean(np.asarray(x) @ np.asarray(cond[0])) / np.linalg.norm(cond[0]))
    p_cond, p_w2 = proj(run(0.0, False)), proj(run(2.0, False))
    assert abs(p_cond - 1.5) < 0.1 and p_w2 > p_cond + 0.2, (p_cond, p_w2)


def test_negative_prompt_is_the_unconditional_branch():
    """cond["negative"]: the second half of the one 2B forward gets the negative prompt's inputs
    with drop_cond False; without it, the same inputs with drop_cond True (the null text)."""
    seen = {}

    def den(z, lam, cond, drop):
        seen.update(cond=cond, drop=drop)
        return z * 0.0 + cond["e"][:, :1] + 10.0 * drop[:, None]

    z, lam = jnp.ones((2, 3)), jnp.zeros(2)
    pos, neg = {"e": jnp.array([[1.0], [2.0]])}, {"e": jnp.array([[5.0], [5.0]])}
    out = guided_prediction(den, z, lam, {**pos, "negative": neg}, 2.0, use_cfg=True)
    assert set(seen["cond"]) == {"e"} and not np.asarray(seen["drop"]).any()
    np.testing.assert_allclose(np.asarray(seen["cond"]["e"])[:, 0], [1.0, 2.0, 5.0, 5.0])
    np.testing.assert_allclose(np.asarray(out)[:, 0], [3 * 1.0 - 2 * 5.0, 3 * 2.0 - 2 * 5.0])
    null = guided_prediction(den, z, lam, pos, 2.0, use_cfg=True)
    np.testing.assert_array_equal(np.asarray(seen["drop"]), [False, False, True, True])
    np.testing.assert_allclose(np.asarray(null)[:, 0], [3 * 1.0 - 2 * 11.0, 3 * 2.0 - 2 * 12.0])
    plain = guided_prediction(den, z, lam, {**pos, "negative": neg}, 2.0, use_cfg=False)
    assert set(seen["cond"]) == {"e"}
    np.testing.assert_allclose(np.asarray(plain)[:, 0], [1.0, 2.0])


def test_dynamic_threshold_bounds_and_preserves_in_range_values():
    from vdm_jax.diffusion import dynamic_threshold
    x = jnp.stack([jnp.linspace(-3.0, 3.0, 101), jnp.linspace(-0.5, 0.5, 101)])
    y = np.asarray(dynamic_threshold(x, 0.9))
    assert np.all(np.abs(y) <= 1.0 + 1e-6)
    np.testing.assert_allclose(y[1], np.asarray(x[1]), atol=1e-6)  # s = max(1, q) = 1: untouched
    assert np.all(np.diff(y[0]) >= 0)  # monotone


@pytest.mark.parametrize("bad,match", [
    (dict(name="euler"), "sampling.name.*unknown value .euler."),
    (dict(steps=0), "steps"),
    (dict(guidance_weight=80.0), "guidance_weight"),
    (dict(guidance_weight=-2.0), "guidance_weight"),
])
def test_clear_errors(bad, match):
    dcfg = DiffusionConfig()
    sch = Schedule.from_config(dcfg, 64)
    with pytest.raises(ValueError, match=match):
        sample(lambda z, ls, c, d: z, shape=(2, 3), rng=jax.random.key(0), schedule=sch,
               diffusion_cfg=dcfg, sampler_cfg=SamplerConfig(**bad))
    with pytest.raises(ValueError, match="x_init"):
        sample(lambda z, ls, c, d: z, shape=(2, 3), rng=jax.random.key(0), schedule=sch,
               diffusion_cfg=dcfg, sampler_cfg=SamplerConfig(), x_init=jnp.zeros((2, 4)))
