"""Figures from synthetic run tables: files written, sensible size, not blank, bad input."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from mvelab.experiments import plots

HORIZONS = (1, 3, 5, 10)


def _table(seeds=3, evals=5, env="pendulum", agent="sac", models=("learned", "oracle"),
           retrace=True, sac=True) -> pd.DataFrame:
  """Pendulum-like curves: -1400 rising towards -150, longer horizons learn worse."""
  rng = np.random.default_rng(0)
  steps = np.linspace(0, 10_000, evals).astype(int)
  rows = []

  def add(run, label, expansion, model, h, final, cost):
    if agent != "sac" and expansion != "none":
      label = f"{agent.upper()}-{label}"
    for s in range(seeds):
      for st in steps:
        prog = 1 - np.exp(-4 * st / steps[-1])
        rows.append(dict(run=run, label=label, env=env, agent=agent, expansion=expansion,
                         model=model, horizon=h, seed=s, env_steps=int(st),
                         eval_return=-1400 + (final + 1400) * prog + rng.normal(0, 50),
                         wall_time_s=cost * st / 1000 * (1 + 0.1 * s), updates=int(st)))

  if sac:
    add(f"{env}-sac", agent.upper(), "none", None, 0, -160, 2.0)
  for h in HORIZONS:
    if "learned" in models:
      add(f"{env}-mve{h}", f"MVE H={h}", "critic", "learned", h, -150 - 20 * h, 3 + 0.3 * h)
    if "oracle" in models:
      add(f"{env}-ove{h}", f"OVE H={h}", "critic", "oracle", h, -150 - 5 * h, 2.5 + h)
  if retrace:
    add(f"{env}-retrace3", "Retrace H=3", "retrace", np.nan, 3, -155, 2.2)
  return pd.DataFrame(rows)


def _check_outputs(paths, stem):
  assert sorted(os.path.basename(p) for p in paths) == [f"{stem}.pdf", f"{stem}.png"]
  png = next(p for p in paths if p.endswith(".png"))
  pdf = next(p for p in paths if p.endswith(".pdf"))
  import matplotlib.image as mpimg
  img = mpimg.imread(png)
  assert img.shape[0] > 300 and img.shape[1] > 400, img.shape
  assert float(np.std(img[..., :3])) > 0
  with open(pdf, "rb") as f:
    assert f.read(4) == b"%PDF"
  leftovers = [n for n in os.listdir(os.path.dirname(png)) if n.endswith(".tmp")]
  assert not leftovers


@pytest.mark.parametrize("band", ["std", "ci"])
def test_figure1(tmp_path, band):
  paths = plots.figure1(_table(), tmp_path / "fig1.svg", band=band)
  _check_outputs(paths, "fig1")


def test_figure1_no_extension_and_nested_dir(tmp_path):
  paths = plots.figure1(_table(), tmp_path / "a" / "b" / "figure1")
  _check_outputs(paths, "figure1")


def test_performance_vs_horizon(tmp_path):
  _check_outputs(plots.performance_vs_horizon(_table(), tmp_path / "perf.png"), "perf")


def test_cost_vs_horizon(tmp_path):
  _check_outputs(plots.cost_vs_horizon(_table(), tmp_path / "cost.png"), "cost")


def test_only_oracle_runs_still_plot(tmp_path, monkeypatch):
  texts = []
  orig = plots._no_runs
  monkeypatch.setattr(plots, "_no_runs", lambda ax: (texts.append(ax.get_title()), orig(ax)))
  df = _table(models=("oracle",), retrace=False, sac=False)
  _check_outputs(plots.figure1(df, tmp_path / "f.png"), "f")
  assert len(texts) == 1  # only the learned-model panel is empty
  _check_outputs(plots.performance_vs_horizon(df, tmp_path / "p.png"), "p")
  _check_outputs(plots.cost_vs_horizon(df, tmp_path / "c.png"), "c")


def test_no_runs_text_in_empty_panel(tmp_path, monkeypatch):
  captured = []
  orig_save = plots._save
  monkeypatch.setattr(plots, "_save", lambda fig, p: (captured.append(
      [t.get_text() for ax in fig.axes for t in ax.texts]), orig_save(fig, p))[1])
  plots.figure1(_table(models=("oracle",)), tmp_path / "f.png")
  assert captured == [["no runs"]]


def test_ddpg_only(tmp_path):
  df = _table(agent="ddpg", evals=3, seeds=2)
  _check_outputs(plots.figure1(df, tmp_path / "d.png"), "d")


def test_unknown_env_names_env(tmp_path):
  with pytest.raises(ValueError, match=r"env.*'nope'.*pendulum"):
    plots.figure1(_table(), tmp_path / "f.png", env="nope")
  with pytest.raises(ValueError, match="band"):
    plots.figure1(_table(), tmp_path / "f.png", band="iqr")


def test_plot_all_several_envs(tmp_path):
  df = pd.concat([_table(evals=3, seeds=2), _table(evals=3, seeds=2, env="cartpole")])
  paths = plots.plot_all(df, tmp_path / "out")
  names = sorted(os.path.basename(p) for p in paths)
  expected = sorted(f"{fig}_{env}.{ext}" for fig in plots.FIGURES
                    for env in ("pendulum", "cartpole") for ext in ("png", "pdf"))
  assert names == expected
  assert all(os.path.getsize(p) > 0 for p in paths)


def test_plot_all_one_env(tmp_path):
  paths = plots.plot_all(_table(evals=3, seeds=2), tmp_path)
  assert sorted(os.path.basename(p) for p in paths) == sorted(
      f"{fig}.{ext}" for fig in plots.FIGURES for ext in ("png", "pdf"))


def test_main_missing_dir(tmp_path, capsys):
  assert plots.main([str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("mvelab: error: DIR")


def test_main_bad_band(tmp_path, capsys):
  assert plots.main([str(tmp_path), "--band", "iqr"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--band" in err[0] and "std" in err[0] and "ci" in err[0]


def test_main_happy_path(tmp_path, monkeypatch, capsys):
  results = pytest.importorskip("mvelab.experiments.results")
  monkeypatch.setattr(results, "collect", lambda root: _table(evals=3, seeds=2))
  out = tmp_path / "figs"
  assert plots.main([str(tmp_path), "--out", str(out), "--band", "ci"]) == 0
  printed = capsys.readouterr().out.split()
  assert len(printed) == 6 and all(os.path.exists(p) for p in printed)
  assert plots.main([str(tmp_path), "--env", "nope"]) == 2
  assert "--env" in capsys.readouterr().err


def test_variants_are_not_pooled(tmp_path):
  df = _table(evals=3, seeds=2)
  extra = df[df["label"] == "MVE H=5"].assign(run="pendulum-mve5-p4", label="MVE H=5 P=4")
  with pytest.warns(UserWarning, match="MVE H=5 P=4"):
    _check_outputs(plots.figure1(pd.concat([df, extra]), tmp_path / "v.png"), "v")


def test_performance_from_summary_draws_the_per_seed_points(tmp_path, monkeypatch):
  """The summary rows of ``results.summarize`` give the very points the per-seed figure
  draws (final and AUC mean +- std per kind and horizon)."""
  from mvelab.experiments import results
  table = _table(seeds=3, evals=6)
  table["status"], table["preset"], table["diverged"] = "done", "default", False
  summary = results.summarize(table)
  drawn = []
  real_panel = plots._horizon_panel
  monkeypatch.setattr(plots, "_horizon_panel",
                      lambda ax, stats, names: (drawn.append(stats),
                                                real_panel(ax, stats, names))[1])
  plots.performance_vs_horizon(table, tmp_path / "seeds.png")
  paths = plots.performance_vs_horizon_from_summary(summary, tmp_path / "summary.png")
  _check_outputs(paths, "summary")
  assert len(drawn) == 4  # two panels each
  for per_seed, from_summary in zip(drawn[:2], drawn[2:]):
    assert set(per_seed) == set(from_summary)
    for kind in per_seed:
      a, b = per_seed[kind], from_summary[kind]
      assert list(a["horizon"]) == list(b["horizon"]), kind
      np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-6)
      np.testing.assert_allclose(a["std"], b["std"], rtol=1e-6)


def test_performance_from_summary_bad_input(tmp_path):
  summary = pd.DataFrame({"env": ["pendulum"] * 2, "agent": "sac", "expansion": "critic",
                          "model": "oracle", "horizon": [5, 5], "n_seeds": 3,
                          "final_mean": 1.0, "final_std": 0.1, "auc_mean": 1.0,
                          "auc_std": 0.1})
  with pytest.raises(ValueError, match="several oracle rows at H = 5"):
    plots.performance_vs_horizon_from_summary(summary, tmp_path / "x.png")
  with pytest.raises(ValueError, match="missing columns auc_std"):
    plots.performance_vs_horizon_from_summary(summary.drop(columns="auc_std"),
                                              tmp_path / "x.png")
  assert not list(tmp_path.iterdir())
