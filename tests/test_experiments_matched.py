"""Returns at matched metric values (experiments.matched, `mvelab results --match`)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mvelab.config import Config
from mvelab.experiments import matched, results
from mvelab.experiments._cli import UsageError

from test_experiments_results import make_run

EDGES = [-1.0, 0.0, 1.0, 2.0]


def _evals(label, entropies, returns, seed=0, start=0):
  return [dict(label=label, seed=seed, env_steps=start + 100 * i, entropy=h, eval_return=r)
          for i, (h, r) in enumerate(zip(entropies, returns))]


@pytest.fixture
def frame():
  """Both labels follow return = 10 - 5 * entropy; "fast" spends its time at low entropy."""
  slow = _evals("slow", [1.5, 1.5, 0.5, 0.5, 0.5, -0.5], [2.5, 2.5, 7.5, 7.5, 7.5, 12.5])
  fast = _evals("fast", [1.5, -0.5, -0.5, -0.5], [2.5, 12.5, 12.5, 12.5], seed=1)
  out = _evals("out-of-bins", [5.0, float("nan")], [100.0, 100.0], seed=2)
  return pd.DataFrame(slow + fast + out)


def test_matched_returns_per_bin_and_pooled(frame):
  t = matched.matched_returns(frame, "entropy", EDGES)
  got = {(r.bin, r.label): (r.mean_return, r.n_evals) for r in t.itertuples()}
  assert got[("(-1.0, 0.0]", "fast")] == (12.5, 3)
  assert got[("(-1.0, 0.0]", "slow")] == (12.5, 1)
  assert got[("(0.0, 1.0]", "slow")] == (7.5, 3)
  assert ("(0.0, 1.0]", "fast") not in got  # no evaluation there
  assert got[("(1.0, 2.0]", "pooled")] == (2.5, 3)
  assert "out-of-bins" not in set(t.label)  # outside the edges or NaN: left out


def test_explained_predicts_a_pure_distribution_effect_exactly(frame):
  e = matched.explained(frame, "entropy", EDGES).set_index("label")
  # "fast" has the higher mean return only because it sits at lower entropy.
  assert e.at["fast", "actual"] > e.at["slow", "actual"]
  np.testing.assert_allclose(e["residual"], 0.0, atol=1e-9)
  assert e.at["fast", "mean_entropy"] == pytest.approx(0.0)


def test_explained_shows_a_better_return_at_the_same_metric(frame):
  better = frame.copy()
  better.loc[better.label == "fast", "eval_return"] += 3.0
  e = matched.explained(better, "entropy", EDGES).set_index("label")
  assert e.at["fast", "residual"] > 0 > e.at["slow", "residual"]


def test_after_drops_early_evaluations(frame):
  t = matched.matched_returns(frame, "entropy", EDGES, after=200)
  assert t[t.label == "slow"].n_evals.sum() == 4  # steps 200..500 of "slow"


@pytest.mark.parametrize("edges", [[0.0], [1.0, 0.0], [0.0, 0.0], [0.0, float("inf")],
                                   ["a", "b"]])
def test_bad_edges_raise(edges):
  with pytest.raises(UsageError, match="match_bins"):
    matched.check_edges(edges)


def test_cli_writes_the_matched_table(tmp_path, capsys):
  run = make_run(str(tmp_path / "run"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  assert results.main([run, "--match", "entropy", "--match_bins", "0", "0.5"]) == 0
  printed = capsys.readouterr().out
  assert "mean eval return per entropy bin" in printed and "predicted" in printed
  table = pd.read_csv(os.path.join(run, "matched_entropy.csv"))
  assert list(table.label) == ["SAC", "pooled"] and list(table.n_evals) == [3, 3]
  assert not [f for f in os.listdir(run) if ".tmp-" in f]


@pytest.mark.parametrize("argv, needle", [
    (["--match", "eval_return", "--match_bins", "0", "1"], "match:"),
    (["--match", "entropy"], "match_bins"),
    (["--match", "entropy", "--match_bins", "1", "0"], "match_bins"),
    (["--match_bins", "0", "1"], "match_bins"),
    (["--match", "entropy", "--match_bins", "0", "1", "--match_after", "nan"], "match_after"),
])
def test_cli_bad_match_input_exits_2_before_writing(tmp_path, capsys, argv, needle):
  run = make_run(str(tmp_path / "run"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  before = sorted(os.listdir(run))
  assert results.main([run] + argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("mvelab: error: ") and needle in err[0]
  assert sorted(os.listdir(run)) == before
