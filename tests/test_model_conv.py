"""The CPU fast-gradient conv has exactly the gradients of lax.conv_general_dilated."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models.conv import conv2d, conv2d_auto, conv2d_fast_grad


def _grads(fn, x, w, g):
    return jax.grad(lambda x, w: jnp.sum(fn(x, w) * g), argnums=(0, 1))(x, w)


@pytest.mark.parametrize("shape,k", [((3, 8, 6, 5), 3), ((2, 5, 7, 4), 1), ((2, 9, 9, 3), 5)])
def test_fast_grad_matches_lax_conv(shape, k):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, shape)
    w = jax.random.normal(k2, (k, k, shape[-1], 6))
    g = jax.random.normal(k3, shape[:-1] + (6,))
    ref = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(conv2d_fast_grad(x, w), ref, rtol=1e-6, atol=1e-5)
    dx_ref, dw_ref = jax.jit(lambda x, w: _grads(conv2d, x, w, g))(x, w)
    dx, dw = jax.jit(lambda x, w: _grads(conv2d_fast_grad, x, w, g))(x, w)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-5, atol=1e-4)


def test_fast_grad_second_input_and_bf16():
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, 4), jnp.bfloat16)
    w = jax.random.normal(jax.random.key(2), (3, 3, 4, 4), jnp.bfloat16)
    dx, dw = jax.grad(lambda x, w: jnp.sum(conv2d_fast_grad(x, w).astype(jnp.float32)), (0, 1))(x, w)
    rx, rw = jax.grad(lambda x, w: jnp.sum(conv2d(x, w).astype(jnp.float32)), (0, 1))(x, w)
    assert dx.dtype == x.dtype and dw.dtype == w.dtype
    np.testing.assert_allclose(np.float32(dw), np.float32(rw), rtol=3e-2, atol=3e-1)
    np.testing.assert_allclose(np.float32(dx), np.float32(rx), rtol=3e-2, atol=3e-1)


def test_auto_uses_plain_conv_when_disabled():
    x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 2))
    plain = jax.make_jaxpr(lambda x, w: conv2d_auto(x, w, False))(x, w)
    fast = jax.make_jaxpr(lambda x, w: conv2d_auto(x, w, True))(x, w)
    assert "custom_vjp" not in str(plain) and "custom_vjp" in str(fast)
