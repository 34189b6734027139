"""IQM, stratified bootstrap CIs, AUC and steps-to-threshold against hand-computed values."""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import numpy as np
import pytest

from mvelab.experiments import stats

scipy_stats = pytest.importorskip("scipy.stats")


# ------------------------------------------------------------------------------- iqm
def test_iqm_of_eight_values_is_the_mean_of_the_middle_four():
  assert stats.iqm(np.arange(1, 9)) == 4.5  # (3 + 4 + 5 + 6) / 4
  assert stats.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # order does not matter


def test_iqm_when_the_quarter_falls_inside_an_element():
  # n = 5: int(1.25) = 1 value dropped at each end, the middle 3 kept whole.
  assert stats.iqm([10, 1, 3, 2, 1000]) == pytest.approx((2 + 3 + 10) / 3)
  # n = 10: int(2.5) = 2 dropped at each end, the middle 6 averaged.
  x = [100, 0, 3, 0, 1, 100, 2, 0, 100, 4]
  assert stats.iqm(x) == pytest.approx((0 + 1 + 2 + 3 + 4 + 100) / 6)
  assert stats.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25, axis=None))
  # n < 4 trims nothing.
  assert stats.iqm([1, 2, 9]) == 4.0
  assert stats.iqm([7.5]) == 7.5


def test_iqm_pools_all_values_like_rliable():
  m = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
  assert stats.iqm(m) == pytest.approx(scipy_stats.trim_mean(m, 0.25, axis=None))
  assert stats.iqm(m) == pytest.approx((3 + 4 + 10 + 20) / 4)


def test_iqm_matches_scipy_trim_mean():
  rng = np.random.default_rng(1)
  for n in range(1, 23):
    x = rng.normal(size=n) * 100
    assert stats.iqm(x) == pytest.approx(scipy_stats.trim_mean(x, 0.25, axis=None), abs=1e-9)


@pytest.mark.parametrize("bad", [[1.0, float("nan"), 2.0], []])
def test_iqm_rejects_nan_and_empty(bad):
  with pytest.raises(ValueError):
    stats.iqm(bad)


# ------------------------------------------------------------------------- bootstrap
def _reference_ci(scores, reps, confidence, seed):
  """Straightforward loop version of rliable's stratified bootstrap + percentile CI."""
  scores = np.asarray(scores, dtype=float)
  runs, tasks = scores.shape
  idx = np.random.default_rng(seed).integers(0, runs, size=(reps, runs, tasks))
  values = []
  for b in range(reps):
    sample = np.empty_like(scores)
    for t in range(tasks):
      for i in range(runs):
        sample[i, t] = scores[idx[b, i, t], t]
    values.append(scipy_stats.trim_mean(sample, 0.25, axis=None))
  tail = (1 - confidence) / 2 * 100
  lo, hi = np.percentile(values, [tail, 100 - tail])
  return scipy_stats.trim_mean(scores, 0.25, axis=None), lo, hi


def test_bootstrap_matches_a_loop_reimplementation():
  rng = np.random.default_rng(3)
  scores = rng.normal(size=(7, 3)) * [1.0, 10.0, 100.0]
  got = stats.stratified_bootstrap_ci(scores, reps=300, confidence=0.9, seed=11)
  want = _reference_ci(scores, reps=300, confidence=0.9, seed=11)
  np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_bootstrap_is_deterministic_and_brackets_the_point():
  x = np.array([3.0, -1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
  a = stats.stratified_bootstrap_ci(x, seed=5)
  assert a == stats.stratified_bootstrap_ci(x, seed=5)
  y = np.random.default_rng(0).normal(size=20)
  assert (stats.stratified_bootstrap_ci(y, reps=100, seed=5)
          != stats.stratified_bootstrap_ci(y, reps=100, seed=6))
  point, lo, hi = a
  assert point == stats.iqm(x)
  assert lo <= point <= hi
  assert x.min() <= lo < hi <= x.max()
  # A 1-D array is one task: the same as a single column.
  assert stats.stratified_bootstrap_ci(x[:, None], seed=5) == a


def test_bootstrap_of_a_constant_has_zero_width():
  assert stats.stratified_bootstrap_ci(np.full((5, 2), 3.25)) == (3.25, 3.25, 3.25)
  assert stats.stratified_bootstrap_ci([42.0]) == (42.0, 42.0, 42.0)


def test_bootstrap_hand_enumerable_case():
  # Two runs {0, 1}, statistic = mean: a resample's mean is 0, 0.5 or 1 with
  # probabilities 1/4, 1/2, 1/4.
  seen = []

  def mean(m):
    seen.append(float(np.mean(m)))
    return seen[-1]

  point, lo, hi = stats.stratified_bootstrap_ci([0.0, 1.0], statistic=mean, reps=4000, seed=0)
  assert (point, lo, hi) == (0.5, 0.0, 1.0)  # 2.5% < P(0) and 97.5% > P(<= 0.5)
  boot = np.array(seen[1:])
  assert set(np.unique(boot)) == {0.0, 0.5, 1.0}
  freq = [np.mean(boot == v) for v in (0.0, 0.5, 1.0)]
  np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.03)
  # A 40% interval (30th..70th percentile) lies entirely in the 0.5 mass.
  assert stats.stratified_bootstrap_ci([0.0, 1.0], statistic=np.mean, reps=4000,
                                       confidence=0.4) == (0.5, 0.5, 0.5)


def test_bootstrap_never_mixes_tasks():
  small = np.array([1.0, 2.0, 3.0, 4.0])
  large = np.array([1000.0, 2000.0, 3000.0, 4000.0])
  scores = np.stack([small, large], axis=1)
  resamples = []

  def record(m):
    resamples.append(m.copy())
    return float(np.mean(m[:, 0]))

  point, lo, hi = stats.stratified_bootstrap_ci(scores, statistic=record, reps=500)
  assert len(resamples) == 501
  for m in resamples:
    assert m.shape == (4, 2)
    assert set(m[:, 0]) <= set(small) and set(m[:, 1]) <= set(large)
  # The statistic of task 0 alone stays within task 0's range.
  assert 1.0 <= lo <= point <= hi <= 4.0
  # Runs are drawn independently per task (not the same rows for both columns).
  rows = [tuple(np.searchsorted(small, m[:, 0])) != tuple(np.searchsorted(large, m[:, 1]))
          for m in resamples[1:]]
  assert any(rows)


@pytest.mark.parametrize("kwargs", [dict(reps=0), dict(reps=2.5), dict(confidence=1.0),
                                    dict(confidence=0.0)])
def test_bootstrap_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    stats.stratified_bootstrap_ci([1.0, 2.0], **kwargs)


def test_bootstrap_rejects_bad_shapes():
  for bad in ([], np.zeros((2, 2, 2)), np.zeros((0, 3))):
    with pytest.raises(ValueError):
      stats.stratified_bootstrap_ci(bad)


# ------------------------------------------------------------------------------- auc
def test_auc_of_hand_computed_curves():
  assert stats.auc([0, 10, 30], [5.0, 5.0, 5.0]) == 5.0  # constant
  assert stats.auc([0, 50, 100], [0.0, 50.0, 100.0]) == pytest.approx(50.0)  # linear
  # Uneven spacing: (1 * (0 + 2) / 2 + 2 * (2 + 2) / 2) / 3 = 5 / 3.
  assert stats.auc([0, 1, 3], [0.0, 2.0, 2.0]) == pytest.approx(5 / 3)
  # Offset start: (1000 * (0 + 10) / 2 + 2000 * (10 + 40) / 2) / 3000.
  assert stats.auc([1000, 2000, 4000], [0.0, 10.0, 40.0]) == pytest.approx(55000 / 3000)
  # Points are taken in step order.
  assert stats.auc([3, 0, 1], [2.0, 0.0, 2.0]) == pytest.approx(5 / 3)


def test_auc_edge_cases():
  assert stats.auc([1000], [7.0]) == 7.0
  assert np.isnan(stats.auc([0, 1, 2], [1.0, float("nan"), 1.0]))
  with pytest.raises(ValueError):
    stats.auc([0, 1], [1.0])
  with pytest.raises(ValueError):
    stats.auc([], [])


def test_auc_agrees_with_the_expansion_returns_benchmark(monkeypatch):
  path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "expansion_returns.py")
  if not os.path.exists(path):
    pytest.skip("benchmarks/expansion_returns.py not present")
  spec = importlib.util.spec_from_file_location("_expansion_returns", path)
  bench = importlib.util.module_from_spec(spec)
  monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look the module up
  spec.loader.exec_module(bench)
  rng = np.random.default_rng(0)
  steps = np.array([1000, 2000, 3500, 4000, 7000])
  curves = {s: rng.normal(size=steps.size) * 50 for s in range(3)}
  rows = [dict(seed=s, env_steps=int(t), eval_return=float(r), diverged=False)
          for s, c in curves.items() for t, r in zip(steps, c)]
  result = types.SimpleNamespace(rows=rows, compile_time_s=0.0, train_time_s=0.0)
  got = bench.summarize("x", "sac", 0, result, 0.0)
  aucs = [stats.auc(steps, c) for c in curves.values()]
  assert got.auc_mean == pytest.approx(np.mean(aucs))
  assert got.auc_std == pytest.approx(np.std(aucs))


# -------------------------------------------------------------------- steps to threshold
def test_steps_to_threshold():
  steps, rets = [1000, 2000, 3000, 4000], [0.0, 5.0, 4.0, 10.0]
  assert stats.steps_to_threshold(steps, rets, 5.0) == 2000.0  # reached exactly
  assert stats.steps_to_threshold(steps, rets, 6.0) == 4000.0
  assert stats.steps_to_threshold(steps, rets, -1.0) == 1000.0
  assert np.isnan(stats.steps_to_threshold(steps, rets, 10.5))
  assert stats.steps_to_threshold(steps, [float("nan"), 9.0, 1.0, 1.0], 5.0) == 2000.0
  assert stats.steps_to_threshold([3000, 1000, 2000], [9.0, 0.0, 9.0], 5.0) == 2000.0
