"""Aggregate statistics of learning results: IQM, stratified bootstrap CIs, AUC.

Plain numpy re-implementations of the definitions used by rliable (Agarwal et al., 2021,
"Deep RL at the edge of the statistical precipice"), so that no extra dependency is
needed:

* ``iqm``: the interquartile mean, ``scipy.stats.trim_mean(x, 0.25, axis=None)``: sort all
  values, drop ``int(0.25 * n)`` of them at each end, average the rest (no fractional
  weighting of the boundary values).
* ``stratified_bootstrap_ci``: rliable's ``StratifiedBootstrap`` with a percentile
  interval: runs are resampled with replacement independently within each task, the
  statistic is computed on every resampled score matrix, and the interval is the
  ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of those statistics.

and two learning-curve summaries:

* ``auc``: the normalised area under the learning curve, i.e. the time-averaged return
  (the definition of ``benchmarks/expansion_returns.py``).
* ``steps_to_threshold``: the first evaluation step at which the return reaches a level.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: Fraction trimmed at each end by ``iqm``.
IQM_TRIM = 0.25


def iqm(x) -> float:
  """Interquartile mean of all values of ``x`` (any shape).

  Sorts the ``n`` values, drops ``k = int(0.25 * n)`` from each end and averages the
  remaining ``n - 2k`` (scipy's ``trim_mean`` rule: when ``n / 4`` is not an integer the
  boundary values are kept whole rather than weighted, e.g. ``n = 10`` averages the middle
  6 values).

  Args:
    x: scores; flattened.

  Returns:
    The interquartile mean as a float.

  Raises:
    ValueError: ``x`` is empty or contains NaN.
  """
  a = np.asarray(x, dtype=float).ravel()
  if a.size == 0:
    raise ValueError("iqm: no values")
  if np.isnan(a).any():
    raise ValueError("iqm: values contain NaN")
  return float(_iqm_rows(a[None, :])[0])


def _iqm_rows(a: np.ndarray) -> np.ndarray:
  """IQM of each row of a 2-D array (same trimming rule as ``iqm``)."""
  n = a.shape[1]
  cut = int(IQM_TRIM * n)
  return np.sort(a, axis=1)[:, cut:n - cut].mean(axis=1)


def _as_score_matrix(scores) -> np.ndarray:
  a = np.asarray(scores, dtype=float)
  if a.ndim == 1:
    a = a[:, None]
  if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
    raise ValueError(f"scores: expected a non-empty [runs, tasks] array, got shape {a.shape}")
  return a


def bootstrap_indices(runs: int, tasks: int, reps: int, seed: int) -> np.ndarray:
  """Run indices of the stratified resamples, shape ``[reps, runs, tasks]``.

  Entry ``[b, i, t]`` is the run that fills row ``i`` of task ``t`` in resample ``b``;
  drawn as ``np.random.default_rng(seed).integers(0, runs, size=(reps, runs, tasks))``.
  """
  return np.random.default_rng(seed).integers(0, runs, size=(reps, runs, tasks))


def stratified_bootstrap_ci(scores, statistic: Callable = iqm, reps: int = 2000,
                            confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float, float]:
  """Point estimate and percentile bootstrap interval of an aggregate statistic.

  Each resample draws, for every task (column) separately, ``runs`` rows with replacement
  from that task's own scores (see ``bootstrap_indices``), so scores of different tasks
  are never mixed. The statistic is applied to each resampled ``[runs, tasks]`` matrix.

  Args:
    scores: ``[runs, tasks]`` scores, or a 1-D array of runs of a single task.
    statistic: maps a ``[runs, tasks]`` array to a number (default ``iqm``, which pools
      all values as rliable's IQM does).
    reps: number of bootstrap resamples.
    confidence: coverage of the interval, in (0, 1).
    seed: seed of the numpy Generator; the result is a deterministic function of it.

  Returns:
    ``(point, lo, hi)``: the statistic on ``scores`` and the interval bounds.

  Raises:
    ValueError: bad shape, ``reps`` or ``confidence`` (or NaN scores with ``iqm``).
  """
  a = _as_score_matrix(scores)
  if isinstance(reps, bool) or not isinstance(reps, (int, np.integer)) or reps <= 0:
    raise ValueError(f"reps: must be a positive integer, got {reps!r}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
  point = float(statistic(a))
  runs, tasks = a.shape
  idx = bootstrap_indices(runs, tasks, int(reps), seed)
  samples = a[idx, np.arange(tasks)]  # [reps, runs, tasks]
  if statistic is iqm:
    stats = _iqm_rows(samples.reshape(reps, -1))
  else:
    stats = np.array([float(statistic(s)) for s in samples])
  tail = 100.0 * (1.0 - confidence) / 2.0
  lo, hi = np.percentile(stats, [tail, 100.0 - tail])
  return point, float(lo), float(hi)


def _curve(steps, returns) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(steps, dtype=float).ravel()
  r = np.asarray(returns, dtype=float).ravel()
  if s.shape != r.shape:
    raise ValueError(f"steps and returns differ in length: {s.size} vs {r.size}")
  if s.size == 0:
    raise ValueError("empty learning curve")
  order = np.argsort(s, kind="stable")
  return s[order], r[order]


def auc(steps, returns) -> float:
  """Normalised area under a learning curve: the time-averaged return.

  The trapezoid integral of ``returns`` over ``steps`` divided by ``steps[-1] -
  steps[0]``; a constant curve gives that constant. Points are taken in order of
  ``steps``. A single point (or a zero step range) gives its (first) return.

  Args:
    steps: evaluation steps (env steps).
    returns: evaluation returns at those steps.

  Returns:
    The normalised AUC; NaN if any return is NaN.

  Raises:
    ValueError: empty or mismatched inputs.
  """
  s, r = _curve(steps, returns)
  if np.isnan(r).any():
    return float("nan")
  span = s[-1] - s[0]
  if span <= 0:
    return float(r[0])
  return float(np.sum((r[1:] + r[:-1]) / 2.0 * np.diff(s)) / span)


def steps_to_threshold(steps, returns, threshold: float) -> float:
  """First step (in order of ``steps``) whose return is ``>= threshold``; NaN if none.

  NaN returns never count as reaching the threshold.

  Raises:
    ValueError: empty or mismatched inputs.
  """
  s, r = _curve(steps, returns)
  hit = np.flatnonzero(r >= threshold)
  return float(s[hit[0]]) if hit.size else float("nan")
