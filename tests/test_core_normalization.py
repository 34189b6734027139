"""Tests of mvelab.core.normalization (running observation statistics)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.core import normalization as N

_update = jax.jit(N.update)


def _data(n=300):
  rng = np.random.default_rng(0)
  return (rng.normal([1.0, -2.0, 5.0], [0.5, 2.0, 3.0], (n, 3))).astype(np.float32)


def test_init():
  stats = N.init(3)
  assert stats.count.dtype == jnp.int32 and int(stats.count) == 0
  np.testing.assert_array_equal(stats.mean, np.zeros(3))
  np.testing.assert_array_equal(stats.m2, np.ones(3))
  np.testing.assert_array_equal(N.std(stats), np.ones(3))
  x = jnp.array([0.5, -7.0, 6.0])
  np.testing.assert_allclose(N.normalize(stats, x), [0.5, -5.0, 5.0])


@pytest.mark.parametrize("splits", [[300], [1, 299], [100, 100, 100], [7, 50, 243]])
def test_batch_splits_match_numpy(splits):
  data = _data()
  stats = N.init(3)
  for part in np.split(data, np.cumsum(splits)[:-1]):
    stats = _update(stats, part)
  assert int(stats.count) == 300
  np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-5, atol=1e-5)
  # m2 = 1 + sum of squared deviations = 1 + n * population variance.
  np.testing.assert_allclose((stats.m2 - 1.0) / 300, data.var(0), rtol=1e-5)
  np.testing.assert_allclose(N.variance(stats), (1.0 + 300 * data.var(0)) / 301, rtol=1e-5)


def test_one_row_at_a_time_matches_numpy():
  data = _data(100)
  stats = jax.lax.fori_loop(
      0, 100, lambda i, s: N.update(s, jax.lax.dynamic_slice_in_dim(data, i, 1)),
      N.init(3))
  np.testing.assert_allclose(stats.mean, data.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose((stats.m2 - 1.0) / 100, data.var(0), rtol=1e-5)


def test_normalize_by_hand():
  stats = N.update(N.init(2), jnp.array([[0.0, 10.0], [2.0, 10.0], [4.0, 10.0]]))
  # mean [2, 10]; m2 = 1 + [8, 0] = [9, 1]; var = m2 / (3 + 1) = [2.25, 0.25].
  np.testing.assert_allclose(stats.mean, [2.0, 10.0])
  np.testing.assert_allclose(stats.m2, [9.0, 1.0])
  np.testing.assert_allclose(N.std(stats), [1.5, 0.5])
  np.testing.assert_allclose(N.normalize(stats, jnp.array([5.0, 11.0])), [2.0, 2.0])
  # Clipping at +-5, a custom clip, and broadcasting over leading axes.
  np.testing.assert_allclose(N.normalize(stats, jnp.array([-100.0, 10.5])), [-5.0, 1.0])
  np.testing.assert_allclose(N.normalize(stats, jnp.array([5.0, 9.0]), clip=1.0),
                             [1.0, -1.0])
  batch = jnp.array([[5.0, 11.0], [-100.0, 10.5]])
  np.testing.assert_allclose(N.normalize(stats, batch), [[2.0, 2.0], [-5.0, 1.0]])


def test_variance_clip():
  stats = N.RunningStats(count=jnp.array(10, jnp.int32), mean=jnp.zeros(2),
                         m2=jnp.array([1e-12, 1e12]))
  np.testing.assert_allclose(N.variance(stats), [1e-6, 1e6], rtol=1e-6)
  np.testing.assert_allclose(N.normalize(stats, jnp.array([1e-4, 4e3])), [0.1, 4.0],
                             rtol=1e-5)


def test_jit_and_shape_checks():
  stats = _update(N.init(3), _data(10))
  out = jax.jit(N.normalize, static_argnames="clip")(stats, jnp.ones(3), clip=3.0)
  np.testing.assert_allclose(out, N.normalize(stats, jnp.ones(3), clip=3.0), rtol=1e-6)
  with pytest.raises(AssertionError):
    N.update(stats, jnp.ones(3))
  with pytest.raises(AssertionError):
    N.update(stats, jnp.ones((2, 4)))
  with pytest.raises(AssertionError):
    N.normalize(stats, jnp.ones(4))
