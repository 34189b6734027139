"""Running observation statistics (Welford / Chan) and the reference normaliser.

State ``(count n, mean μ, m2 M)`` starts at ``(0, 0, 1)`` as in the reference code. ``M``
is the sum of squared deviations from the mean PLUS the initial 1, which acts as one
pseudo-observation of unit variance:

  var = clip(M / (n + 1), 1e-6, 1e6) = clip((1 + Σ_k (x_k − μ)²) / (n + 1), 1e-6, 1e6),
  normalize(x) = clip((x − μ) / √var, −5, 5).

So before any update ``std = 1`` and ``normalize(x) = clip(x, −5, 5)``; for large ``n`` the
variance tends to the population variance of the data. The update is the exact batched
(Chan et al.) form of Welford's algorithm, so the result does not depend on how the data
is split into batches (up to float error): for a batch ``B`` of ``n_b`` rows with mean
``μ_b`` and within-batch squared deviations ``M_b``,

  n' = n + n_b,  δ = μ_b − μ,  μ' = μ + δ·n_b/n',  M' = M + M_b + δ²·n·n_b/n'.

The count is int32 (it doubles as the environment-step counter, exact beyond 2^24);
mean and m2 are float32.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array

#: Initial value of ``m2`` (one pseudo-observation of unit variance).
INIT_M2 = 1.0
VAR_MIN = 1e-6
VAR_MAX = 1e6


@struct.dataclass
class RunningStats:
  """Running mean / variance of vectors of size ``[size]``.

  Attributes:
    count: ``[]`` int32, number of vectors seen.
    mean: ``[size]`` float32 running mean.
    m2: ``[size]`` float32, ``1 + Σ_k (x_k − mean)²``.
  """

  count: Array
  mean: Array
  m2: Array


def init(size: int) -> RunningStats:
  """Statistics before any data: ``(count, mean, m2) = (0, 0, 1)``."""
  return RunningStats(
      count=jnp.zeros((), jnp.int32),
      mean=jnp.zeros((size,), jnp.float32),
      m2=jnp.full((size,), INIT_M2, jnp.float32))


def update(stats: RunningStats, batch: Array) -> RunningStats:
  """Adds a batch of vectors with the exact parallel Welford (Chan) update.

  Args:
    stats: current statistics.
    batch: ``[N, size]`` new vectors (``N ≥ 1``, static).

  Returns:
    Statistics of all vectors seen so far (see the module docstring for the formula).
  """
  batch = jnp.asarray(batch, jnp.float32)
  chex.assert_rank(batch, 2)
  chex.assert_axis_dimension(batch, 1, stats.mean.shape[0])
  n_b = batch.shape[0]
  count = stats.count + n_b
  n_a = stats.count.astype(jnp.float32)
  n = count.astype(jnp.float32)
  batch_mean = jnp.mean(batch, axis=0)
  batch_m2 = jnp.sum(jnp.square(batch - batch_mean), axis=0)
  delta = batch_mean - stats.mean
  mean = stats.mean + delta * (n_b / n)
  m2 = stats.m2 + batch_m2 + jnp.square(delta) * (n_a * n_b / n)
  return RunningStats(count=count, mean=mean, m2=m2)


def variance(stats: RunningStats) -> Array:
  """``[size]`` variance used for normalisation: ``clip(m2 / (count + 1), 1e-6, 1e6)``."""
  return jnp.clip(stats.m2 / (stats.count.astype(jnp.float32) + 1.0), VAR_MIN, VAR_MAX)


def std(stats: RunningStats) -> Array:
  """``[size]`` standard deviation ``√variance(stats)``."""
  return jnp.sqrt(variance(stats))


def normalize(stats: RunningStats, x: Array, clip: float = 5.0) -> Array:
  """``clip((x − mean) / std, −clip, clip)``.

  Args:
    stats: statistics.
    x: ``[size]`` vector (extra leading axes broadcast).
    clip: symmetric clip bound (5 in the reference).

  Returns:
    Normalised ``x``, same shape, float32.
  """
  x = jnp.asarray(x, jnp.float32)
  chex.assert_axis_dimension(x, -1, stats.mean.shape[0])
  return jnp.clip((x - stats.mean) / std(stats), -clip, clip)
