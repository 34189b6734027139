"""Tests of mvelab.core.distributions (tanh-squashed Gaussian)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.core import distributions as D
from mvelab.errors import ConfigError


def _np_log_prob(loc, scale, action, stable=False):
  """Hand computation in float64 numpy (no scipy)."""
  loc, scale, action = (np.asarray(x, np.float64) for x in (loc, scale, action))
  u = np.arctanh(action)
  z = (u - loc) / scale
  gaussian = -0.5 * z**2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
  if stable:
    log_det = np.log(1.0 - np.tanh(u)**2)
  else:
    log_det = np.log(1.0 - np.tanh(u)**2 + 1e-6)
  return np.sum(gaussian - log_det)


@pytest.mark.parametrize("stable", [False, True])
def test_log_prob_1d_by_hand(stable):
  # a = 0.6 -> u = arctanh(0.6) = ln 2; 1 - tanh(u)^2 = 0.64.
  u = math.log(2.0)
  z = (u - 0.3) / 0.5
  log_det = math.log(0.64) if stable else math.log(0.64 + 1e-6)
  expected = -0.5 * z * z - math.log(0.5) - 0.5 * math.log(2 * math.pi) - log_det
  got = D.log_prob(jnp.array([0.3]), jnp.array([0.5]), jnp.array([0.6]), stable=stable)
  assert got.shape == ()
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  np.testing.assert_allclose(got, _np_log_prob([0.3], [0.5], [0.6], stable), rtol=1e-5)


@pytest.mark.parametrize("stable", [False, True])
def test_log_prob_2d_by_hand(stable):
  loc, scale, action = [0.0, -1.0], [1.0, 2.0], [0.0, -0.5]
  # Dim 0: u = 0, N(0; 0, 1) and log(1 - 0 + eps).
  dim0 = -0.5 * math.log(2 * math.pi) - (0.0 if stable else math.log(1.0 + 1e-6))
  # Dim 1: u = arctanh(-0.5) = -0.5 ln 3, 1 - tanh^2 = 0.75.
  u1 = -0.5 * math.log(3.0)
  z1 = (u1 + 1.0) / 2.0
  dim1 = (-0.5 * z1 * z1 - math.log(2.0) - 0.5 * math.log(2 * math.pi)
          - (math.log(0.75) if stable else math.log(0.75 + 1e-6)))
  got = D.log_prob(jnp.array(loc), jnp.array(scale), jnp.array(action), stable=stable)
  np.testing.assert_allclose(got, dim0 + dim1, rtol=1e-5)
  np.testing.assert_allclose(got, _np_log_prob(loc, scale, action, stable), rtol=1e-5)


@pytest.mark.parametrize("stable", [False, True])
def test_sample_log_prob_consistent_with_log_prob(stable):
  keys = jax.random.split(jax.random.key(0), 64)
  rng = np.random.default_rng(0)
  loc = jnp.asarray(rng.uniform(-0.5, 0.5, (64, 3)), jnp.float32)
  scale = jnp.asarray(rng.uniform(0.2, 0.6, (64, 3)), jnp.float32)
  action, logp = jax.jit(jax.vmap(
      lambda l, s, k: D.sample_and_log_prob(l, s, k, stable)))(loc, scale, keys)
  assert action.shape == (64, 3) and logp.shape == (64,)
  assert np.all(np.abs(action) < 0.999)  # away from saturation
  again = jax.jit(jax.vmap(lambda l, s, a: D.log_prob(l, s, a, stable)))(
      loc, scale, action)
  np.testing.assert_allclose(again, logp, rtol=1e-4, atol=1e-4)
  ref = [_np_log_prob(l, s, a, stable) for l, s, a in zip(loc, scale, action)]
  np.testing.assert_allclose(logp, ref, rtol=1e-4, atol=1e-4)


def test_sample_is_reparameterised_gaussian():
  loc = jnp.array([0.5, -1.0])
  scale = jnp.array([0.3, 0.1])
  keys = jax.random.split(jax.random.key(1), 4000)
  action, _ = jax.jit(jax.vmap(lambda k: D.sample_and_log_prob(loc, scale, k)))(keys)
  u = np.arctanh(np.asarray(action, np.float64))
  np.testing.assert_allclose(u.mean(0), loc, atol=0.02)
  np.testing.assert_allclose(u.std(0), scale, rtol=0.05)


def test_saturated_stored_action_has_finite_log_prob():
  # tanh(20) == 1.0 in float32; the clip to 1 - 1e-6 keeps log pi finite.
  loc, scale = jnp.array([0.0, 20.0]), jnp.array([1.0, 1.0])
  action = jnp.array([1.0, -1.0])
  for stable in (False, True):
    assert np.isfinite(D.log_prob(loc, scale, action, stable=stable))
  action, logp = D.sample_and_log_prob(loc, jnp.array([0.1, 0.1]), jax.random.key(0))
  assert action[1] == 1.0 and np.isfinite(logp)


def test_stable_and_paper_log_det_agree_away_from_saturation():
  u = jnp.linspace(-3.0, 3.0, 13)
  paper = D.tanh_log_det_jacobian(u, stable=False)
  stable = D.tanh_log_det_jacobian(u, stable=True)
  np.testing.assert_allclose(stable, np.log(1.0 - np.tanh(np.float64(u))**2), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(paper, stable, atol=1e-3)
  # Far in the tail the paper's form is bounded by log(1e-6), the stable one is not.
  np.testing.assert_allclose(D.tanh_log_det_jacobian(jnp.array(20.0)), math.log(1e-6),
                             rtol=1e-4)
  np.testing.assert_allclose(D.tanh_log_det_jacobian(jnp.array(20.0), stable=True),
                             2 * (math.log(2) - 20.0), rtol=1e-5)


def test_scale_from_raw_softplus():
  raw = jnp.array([0.0, 2.0, -30.0])
  expected = [math.log(2.0) + 1e-3, math.log1p(math.exp(2.0)) + 1e-3, 1e-3]
  np.testing.assert_allclose(D.scale_from_raw(raw), expected, rtol=1e-5)
  np.testing.assert_allclose(D.scale_from_raw(raw, "softplus"), expected, rtol=1e-5)


def test_scale_from_raw_log_std():
  raw = jnp.array([0.0, 0.5, 100.0, -100.0])
  log_std = [-1.5, -5.0 + 3.5 * (math.tanh(0.5) + 1.0), 2.0, -5.0]
  np.testing.assert_allclose(D.scale_from_raw(raw, "log_std"), np.exp(log_std), rtol=1e-5)


def test_scale_from_raw_unknown_kind():
  with pytest.raises(ConfigError):
    D.scale_from_raw(jnp.zeros(2), "exp")


def test_gradients_are_finite_and_correct():
  def sample(loc, scale):
    return D.sample_and_log_prob(loc, scale, jax.random.key(3))

  loc, scale = jnp.array([0.2, -0.4]), jnp.array([0.5, 0.3])
  jac = jax.jacobian(lambda l: sample(l, scale)[0])(loc)
  action = sample(loc, scale)[0]
  # d tanh(loc + scale*eps) / d loc = diag(1 - a^2).
  np.testing.assert_allclose(jac, np.diag(1.0 - np.asarray(action)**2), rtol=1e-5,
                             atol=1e-6)
  for l in (loc, jnp.array([20.0, -20.0])):  # also at saturation
    g_loc, g_scale = jax.grad(lambda l, s: sum(jnp.sum(x) for x in sample(l, s)),
                              argnums=(0, 1))(l, scale)
    assert np.all(np.isfinite(g_loc)) and np.all(np.isfinite(g_scale))
  g = jax.grad(lambda l: D.log_prob(l, scale, jnp.array([0.1, 1.0])))(loc)
  assert np.all(np.isfinite(g))


def test_mode_and_struct_wrapper_under_jit():
  loc, scale = jnp.array([0.1, -2.0]), jnp.array([0.4, 0.7])
  np.testing.assert_allclose(D.mode(loc), np.tanh([0.1, -2.0]), rtol=1e-6)
  dist = D.TanhNormal(loc, scale, stable=True)
  key = jax.random.key(7)
  a, lp = jax.jit(lambda d, k: d.sample_and_log_prob(k))(dist, key)
  a2, lp2 = D.sample_and_log_prob(loc, scale, key, stable=True)
  np.testing.assert_allclose(a, a2, rtol=1e-6)
  np.testing.assert_allclose(lp, lp2, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(lambda d: d.log_prob(a))(dist),
                             D.log_prob(loc, scale, a, stable=True), rtol=1e-6)
  np.testing.assert_allclose(dist.mode(), D.mode(loc))


def test_shape_checks():
  with pytest.raises(AssertionError):
    D.log_prob(jnp.zeros(2), jnp.ones(3), jnp.zeros(2))
  with pytest.raises(AssertionError):
    D.sample_and_log_prob(jnp.zeros((2, 2)), jnp.ones((2, 2)), jax.random.key(0))
