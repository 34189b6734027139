"""`mvelab reproduce model-error`: the grid it writes and its pipeline with fake runs."""

import math
import os

import pandas as pd
import pytest

from mvelab import config as config_lib
from mvelab.experiments import model_error
from mvelab.experiments.executor import SerialExecutor
from mvelab.experiments.spec import parse_spec
from test_reproduce import FakeRun


def test_grid_is_scales_x_horizons_plus_references():
  spec = parse_spec(model_error.model_error_spec(scales=(0.0, 0.1), horizons=(0, 1, 5)))
  kinds = sorted((c.expansion, c.model or "", c.model_error, c.model_error_scale, c.horizon)
                 for c in (config_lib.resolve(r.config) for r in spec.runs))
  want = [("none", "", "none", 0.0, 0), ("critic", "learned", "none", 0.0, 5)]
  want += [("critic", "oracle", "physics", e, h) for e in (0.0, 0.1) for h in (1, 5)]
  want += [("steve", "oracle", "physics", e, 5) for e in (0.0, 0.1)]
  assert kinds == sorted(want)


def _curve(cfg, i, seed):
  """Expansion helps by 20 per step of H, minus 400 eps H: long H stops paying first."""
  gain = cfg.horizon * (20 - 400 * cfg.model_error_scale) if cfg.expansion == "critic" else 0
  return -1000 + 300 * i + gain - seed


def test_pipeline_writes_trust_map_and_table(tmp_path):
  out = str(tmp_path / "me")
  r = model_error.reproduce_model_error(
      out, scales=(0.0, 0.01, 0.1), horizons=(0, 1, 3), seeds=2, steps=3000,
      executor=SerialExecutor(), progress=False, job_fn=FakeRun(curve=_curve))
  assert r["sweep"].ok
  for fig in model_error.FIGURES:
    assert os.path.getsize(os.path.join(out, f"{fig}.png")) > 10_000
  table = pd.read_csv(os.path.join(out, "trust_table.csv"), index_col=0)
  # eps 0 and 0.01: every H helps, so H=3 is the largest that beats SAC; at eps 0.1 the
  # gain 20 - 40 < 0: no H does.
  assert list(table["largest_H_beating_SAC"]) == [3, 3, -1]


def test_equivalent_eps_interpolates_the_perturbed_error_curve():
  from mvelab.diagnostics import eps_axis

  def rows(learned):
    errs = {"learned": learned, "physics:0.1": 1.0, "physics:0.3": 3.0}
    return pd.DataFrame([dict(seed=s, k=k, model=m, obs_error=v * k + s * 0.01 - 0.005)
                         for s in (0, 1) for k in (1, 2) for m, v in errs.items()])

  placed = eps_axis.equivalent_eps(rows(0.5))
  assert placed["eps"] == pytest.approx(0.05) and not placed["extrapolated"]
  assert placed["learned_obs_error"] == pytest.approx(0.5)
  assert eps_axis.equivalent_eps(rows(2.0))["eps"] == pytest.approx(0.2)
  far = eps_axis.equivalent_eps(rows(6.0))
  assert far["eps"] == pytest.approx(0.6) and far["extrapolated"]
  flat = rows(0.5).replace({"model": {"physics:0.3": "physics:0.05"}})  # not increasing
  assert math.isnan(eps_axis.equivalent_eps(flat)["eps"])


@pytest.mark.parametrize("argv, needle", [
    (["--kind", "wind"], "invalid choice"),
    (["--scales", "-0.1"], "scales: must be finite numbers >= 0"),
    (["--horizons", "0"], "horizons: must be integers >= 0 with at least one > 0"),
    (["--env", "nope"], "env: unknown environment"),
])
def test_bad_input_exit_2(argv, needle, tmp_path, capsys):
  assert model_error.main(argv + ["--out", str(tmp_path / "x")]) == 2
  assert needle in capsys.readouterr().err
  assert not (tmp_path / "x").exists()
