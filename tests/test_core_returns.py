"""Tests of mvelab.core.returns (the multi-step target operator)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.core import returns as R

_jit_returns = jax.jit(R.general_off_policy_returns_from_q_and_v,
                       static_argnames="stop_target_gradients")
OPS = {"eager": R.general_off_policy_returns_from_q_and_v, "jit": _jit_returns}


def _f32(*xs):
  return [jnp.asarray(x, jnp.float32) for x in xs]


def _random_window(seed, t):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=t - 1)
  v = rng.normal(size=t)
  r = rng.normal(size=t)
  return rng, q, v, r


@pytest.mark.parametrize("op", OPS)
def test_recursion_by_hand(op):
  r, d, v = [1.0, 2.0, 3.0], [0.9, 0.9, 0.9], [10.0, 20.0, 30.0]
  q, c = [11.0, 18.0], [0.5, 1.0]
  # G2 = 3 + 0.9 * 30 = 30
  # G1 = 2 + 0.9 * (20 - 1.0 * 18 + 1.0 * 30) = 30.8
  # G0 = 1 + 0.9 * (10 - 0.5 * 11 + 0.5 * 30.8) = 18.91
  g = OPS[op](*_f32(q, v, r, d, c))
  assert g.shape == (3,) and g.dtype == jnp.float32
  np.testing.assert_allclose(g, [18.91, 30.8, 30.0], rtol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_single_step_is_one_step_target(op):
  g = OPS[op](*_f32([], [4.0], [2.0], [0.5], []))
  np.testing.assert_allclose(g, [4.0])  # 2 + 0.5 * 4


def test_zero_traces_give_one_step_targets():
  _, q, v, r = _random_window(0, 5)
  d = np.full(5, 0.99)
  g = R.general_off_policy_returns_from_q_and_v(*_f32(q, v, r, d, np.zeros(4)))
  np.testing.assert_allclose(g, r + d * v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("t", [1, 2, 6])
def test_telescoped_closed_form(t):
  _, q, v, r = _random_window(t, t)
  gamma = 0.97
  g0 = R.general_off_policy_returns_from_q_and_v(
      *_f32(q, v, r, np.full(t, gamma), np.ones(t - 1)))[0]
  closed = (sum(gamma**j * r[j] for j in range(t))
            + sum(gamma**(j + 1) * (v[j] - q[j]) for j in range(t - 1))
            + gamma**t * v[t - 1])
  np.testing.assert_allclose(g0, closed, rtol=1e-5, atol=1e-5)


def test_cumulative_discount():
  np.testing.assert_allclose(R.cumulative_discount(0.9, jnp.array([1.0, 1.0, 0.0, 1.0])),
                             [0.9, 0.9, 0.0, 0.0])
  np.testing.assert_allclose(R.cumulative_discount(0.5, jnp.array([True, True, True])),
                             [0.5, 0.5, 0.5])
  assert R.cumulative_discount(0.5, jnp.array([False, True])).dtype == jnp.float32


def test_termination_zeroes_later_terms():
  d = R.cumulative_discount(0.9, jnp.array([1.0, 0.0, 1.0, 1.0]))  # [0.9, 0, 0, 0]
  r, v, q, c = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [5.0, 6.0, 7.0], [1.0] * 3
  g = R.general_off_policy_returns_from_q_and_v(*_f32(q, v, r, d, c))
  # G3 = 4, G2 = 3, G1 = 2 (terminal: reward only), G0 = 1 + 0.9 * (10 - 5 + 2) = 7.3.
  np.testing.assert_allclose(g, [7.3, 2.0, 3.0, 4.0], rtol=1e-6)
  # Whatever comes after the termination cannot change G0.
  rng = np.random.default_rng(0)
  r2 = np.array(r)
  v2 = np.array(v)
  q2 = np.array(q)
  c2 = np.array(c)
  r2[2:] = rng.normal(size=2) * 100
  v2[1:] = rng.normal(size=3) * 100
  q2[1:] = rng.normal(size=2) * 100
  c2[1:] = rng.uniform(size=2)
  g2 = R.general_off_policy_returns_from_q_and_v(*_f32(q2, v2, r2, d, c2))
  np.testing.assert_allclose(g2[:2], g[:2], rtol=1e-6)


def test_truncated_importance_weights_by_hand():
  log_pi = jnp.array([0.0, np.log(0.5), -jnp.inf, 0.0, -jnp.inf])
  log_mu = jnp.array([np.log(0.5), 0.0, 0.0, 0.0, -jnp.inf])
  truncated = jnp.array([False, False, False, True, True])
  c = R.truncated_importance_weights(log_pi, log_mu, 0.9, truncated)
  np.testing.assert_allclose(c, [0.9, 0.45, 0.0, 0.0, 0.0], rtol=1e-6)
  # Float flags work too, and no gradient flows.
  grad = jax.grad(lambda lp: jnp.sum(R.truncated_importance_weights(
      lp, jnp.zeros(2), 1.0, jnp.zeros(2))))(jnp.array([-0.5, -1.0]))
  np.testing.assert_array_equal(grad, [0.0, 0.0])


def test_truncation_cuts_trace_but_bootstraps():
  c = R.truncated_importance_weights(jnp.zeros(3), jnp.zeros(3), 1.0,
                                     jnp.array([0.0, 1.0, 0.0]))  # [1, 0, 1]
  np.testing.assert_allclose(c, [1.0, 0.0, 1.0])
  r, v, d = [1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0], [0.9] * 4
  q = [11.0, 21.0, 31.0]
  g = R.general_off_policy_returns_from_q_and_v(*_f32(q, v, r, d), c)
  # G3 = 4 + 36 = 40; G2 = 3 + 0.9 * (30 - 31 + 40) = 38.1;
  # G1 = 2 + 0.9 * 20 = 20 (cut, bootstraps v1); G0 = 1 + 0.9 * (10 - 11 + 20) = 18.1.
  np.testing.assert_allclose(g, [18.1, 20.0, 38.1, 40.0], rtol=1e-6)


def test_on_policy_deterministic_equals_n_step_return():
  t, gamma = 5, 0.95
  _, _, v, r = _random_window(3, t)
  d = R.cumulative_discount(gamma, jnp.ones(t))
  c = R.truncated_importance_weights(jnp.full(t - 1, -1.3), jnp.full(t - 1, -1.3), 1.0,
                                     jnp.zeros(t - 1))
  g0 = R.general_off_policy_returns_from_q_and_v(*_f32(v[:-1], v, r), d, c)[0]
  expected = sum(gamma**j * r[j] for j in range(t)) + gamma**t * v[-1]
  np.testing.assert_allclose(g0, expected, rtol=1e-5)
  np.testing.assert_allclose(R.n_step_return(jnp.asarray(r, jnp.float32), d, v[-1]),
                             expected, rtol=1e-5)


def test_n_step_return_by_hand():
  g = R.n_step_return(jnp.array([1.0, 2.0]), jnp.array([0.5, 0.25]), jnp.array(8.0))
  np.testing.assert_allclose(g, 3.0)  # 1 + 0.5 * (2 + 0.25 * 8)
  assert g.shape == ()


def test_gradients_and_stop_target_gradients():
  t, gamma = 4, 0.9
  _, q, v, r = _random_window(5, t)
  q, v, r = _f32(q, v, r)
  d, c = jnp.full(t, gamma), jnp.ones(t - 1)

  def g0(v_t, stop):
    return R.general_off_policy_returns_from_q_and_v(q, v_t, r, d, c, stop)[0]

  grad = jax.grad(g0)(v, False)
  # dG0/dv_j = gamma^(j+1) for j < T-1 and gamma^T for j = T-1 (closed form).
  np.testing.assert_allclose(grad, [0.9, 0.81, 0.729, 0.6561], rtol=1e-5)
  np.testing.assert_array_equal(jax.grad(g0)(v, True), np.zeros(t))
  np.testing.assert_array_equal(jax.jit(jax.grad(g0), static_argnums=1)(v, True),
                                np.zeros(t))


def test_vmap_and_jit_match_loop():
  rng = np.random.default_rng(1)
  b, t = 4, 3
  q, c = rng.normal(size=(b, t - 1)), rng.uniform(size=(b, t - 1))
  v, r, d = rng.normal(size=(b, t)), rng.normal(size=(b, t)), rng.uniform(size=(b, t))
  batched = jax.jit(jax.vmap(R.general_off_policy_returns_from_q_and_v))(
      *_f32(q, v, r, d, c))
  assert batched.shape == (b, t)
  for i in range(b):
    np.testing.assert_allclose(
        batched[i], R.general_off_policy_returns_from_q_and_v(
            *_f32(q[i], v[i], r[i], d[i], c[i])), rtol=1e-6)


def test_shape_checks():
  with pytest.raises(AssertionError):  # q must have T-1 entries
    R.general_off_policy_returns_from_q_and_v(*_f32([1.0, 2.0], [1.0, 2.0], [1.0, 2.0],
                                                    [1.0, 1.0], [1.0, 2.0]))
  with pytest.raises(AssertionError):  # unbatched only
    R.general_off_policy_returns_from_q_and_v(*_f32(np.ones((2, 1)), np.ones((2, 2)),
                                                    np.ones((2, 2)), np.ones((2, 2)),
                                                    np.ones((2, 1))))
  with pytest.raises(ValueError):
    R.general_off_policy_returns_from_q_and_v(*_f32([], [], [], [], []))
