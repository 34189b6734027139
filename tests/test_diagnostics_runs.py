"""Tests of mvelab.diagnostics on a stored run: the learned model swapped for the oracle,
determinism of the probes, and the ``mvelab diagnose`` command (output and bad input).

One tiny pendulum run with a learned model (1 seed, networks (16, 16)) is trained once
for the module; every diagnostics pass uses the same small settings (few compiles).
"""

import dataclasses
import os

import jax
import numpy as np
import pandas as pd
import pytest

from mvelab import Config, train
from mvelab.cli import main
from mvelab.diagnostics import compute, diagnose, loading
from mvelab.diagnostics.settings import Settings
from mvelab.models.oracle import OracleModel

#: Reference perturbed oracles measured next to the learned model (same scale).
ERROR_MODELS = ("physics:0", "physics:0.1", "physics:0.3")
SETTINGS = Settings(horizons=(0, 1, 3), probes=8, rollouts=4, keys=2, rollout_length=20,
                    error_models=ERROR_MODELS)
ARGS = ["--horizons", "0", "1", "3", "--probes", "8", "--rollouts", "4", "--keys", "2",
        "--rollout_length", "20", "--error_models", *ERROR_MODELS]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("diag") / "run")
  cfg = Config(env="pendulum", num_seeds=1, total_steps=1000, warmup_steps=500,
               eval_every=500, eval_episodes=1, hidden_sizes=(16, 16), batch_size=32,
               expansion="critic", model="learned", horizon=1,
               model_hidden_sizes=(16, 16), model_batch_size=32, model_warmup_updates=10)
  train(cfg, out_dir=out, progress=False, checkpoint_every=1)
  return out


def test_learned_model_replaced_by_the_oracle_has_zero_error_and_gap(run_dir):
  ref = loading.checkpoints(run_dir, ("last", 1))[0]
  p, states = loading.restore(ref)
  assert p.learned_model
  as_oracle = dataclasses.replace(p, model=OracleModel(p.env))
  a = jax.device_get(compute.compiled(as_oracle, SETTINGS)(states, jax.random.PRNGKey(0)))
  np.testing.assert_array_equal(a["model_error/learned/obs"], 0.0)
  np.testing.assert_array_equal(a["model_error/learned/reward"], 0.0)
  for key in [k for k in a if k.startswith("ce/learned/")]:
    np.testing.assert_array_equal(a[key], a[key.replace("/learned/", "/oracle/")])
  # ... while the real learned model is not exact (the check can fail).
  b = jax.device_get(compute.compiled(p, SETTINGS)(states, jax.random.PRNGKey(0)))
  assert np.all(b["model_error/learned/obs"] > 0)
  assert np.any(b["ce/learned/direct/3"] != b["ce/oracle/direct/3"])
  assert all(np.all(np.isfinite(v)) for v in b.values())
  # The reference perturbed oracles on the same probes: exact at eps = 0, and the error
  # grows with eps at every k (observations; the reward too at k = 1).
  for arrays in (a, b):
    np.testing.assert_array_equal(arrays["model_error/physics:0/obs"], 0.0)
    small, large = arrays["model_error/physics:0.1/obs"], arrays["model_error/physics:0.3/obs"]
    assert np.all(small > 0) and np.all(large > small)
    assert (arrays["model_error/physics:0.3/reward"][:, 0]
            > arrays["model_error/physics:0.1/reward"][:, 0]).all()


def test_probes_are_deterministic(run_dir):
  said = []
  first = diagnose.diagnose_dir(run_dir, SETTINGS, ("all", 1), progress=said.append)
  again = diagnose.diagnose_dir(run_dir, SETTINGS, ("all", 1), progress=None)
  pd.testing.assert_frame_equal(first, again)
  assert [m.split(" ")[0] for m in said] == ["[1/2]", "[2/2]"]  # one line per checkpoint
  assert first["env_steps"].nunique() == 2  # both checkpoints (start and end)
  values = first["value"].to_numpy()
  assert np.isfinite(values[~first["metric"].isin(["action_corr"])]).all()


def test_worker_processes_give_the_serial_rows(run_dir, tmp_path):
  """``jobs = 2`` diagnoses each run in its own process; same rows, same order. The two
  runs are copies of the module's run, so the worker's rows must equal the serial ones
  run by run (names aside)."""
  import shutil
  root = tmp_path / "sweep"
  for name in ("a", "b"):
    shutil.copytree(run_dir, root / "runs" / name, ignore=shutil.ignore_patterns("tb"))
  serial = diagnose.diagnose_dir(str(root), SETTINGS, ("last", 1), progress=None)
  said = []
  workers = diagnose.diagnose_dir(str(root), SETTINGS, ("last", 1), progress=said.append,
                                  jobs=2)
  pd.testing.assert_frame_equal(serial, workers)
  assert sorted(m.split(" ")[0] for m in said) == ["[1/2]", "[2/2]"]  # one line per run
  assert list(pd.unique(workers["run"])) == ["runs/a", "runs/b"]
  a, b = (workers[workers["run"] == f"runs/{n}"].drop(columns="run").reset_index(drop=True)
          for n in ("a", "b"))
  pd.testing.assert_frame_equal(a, b)


def test_sweep_worker_keeps_rows_that_the_figure_step_reuses(run_dir, tmp_path, monkeypatch):
  """``reproduce figure1``'s job diagnoses its run right after training and keeps the
  rows; the figure step then diagnoses only the other runs, and the merged table equals
  the serial pass over the sweep (rows, order, run names)."""
  import shutil
  from mvelab.diagnostics import found
  from mvelab.experiments import reproduce, sweep
  from mvelab.experiments.executor import Job, JobResult
  root = tmp_path / "sweep"
  runs = [str(root / "runs" / name) for name in ("a", "b")]
  for run in runs:
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("tb", "diagnostics"))
  serial = diagnose.diagnose_dir(str(root), SETTINGS, ("last", 1), progress=None)
  # The worker's job: training (here: the run is already there), then the pass.
  monkeypatch.setattr(sweep, "run_job", lambda job: JobResult(job.name, True, None, 1.0))
  result = reproduce.diagnosed_job(Job("a", {}, runs[0]), SETTINGS)
  assert result.ok and result.wall_s > 1.0  # the pass's time is reported
  kept = found.kept_path(runs[0], SETTINGS)
  assert os.path.isfile(kept) and found.kept_path(runs[1], SETTINGS) != kept
  # Other settings never reuse the kept rows.
  assert found.kept_path(runs[0], dataclasses.replace(SETTINGS, keys=3)) != kept
  diagnosed, real = [], diagnose.diagnose_run
  monkeypatch.setattr(diagnose, "diagnose_run",
                      lambda run, *a, **k: diagnosed.append(run) or real(run, *a, **k))
  merged = found.sweep_rows(str(root), SETTINGS)
  assert diagnosed == [runs[1]]
  pd.testing.assert_frame_equal(serial, merged)
  assert list(pd.unique(merged["run"])) == ["runs/a", "runs/b"]


def test_cli_writes_tidy_tables_and_figures(run_dir, tmp_path, capsys):
  out = str(tmp_path / "d")
  assert main(["diagnose", run_dir, *ARGS, "--checkpoints", "last", "--out", out]) == 0
  df = pd.read_parquet(os.path.join(out, "diagnostics.parquet"))
  assert list(df.columns[:4]) == ["run", "env", "label", "seed"]
  assert set(df["estimator"]) == {"truth", "critic", "ce_direct", "ce_control_variate",
                                  "retrace", "model"}
  assert not df.duplicated(["seed", "env_steps", "model", "estimator", "horizon", "k",
                            "metric"]).any()
  assert len(pd.read_csv(os.path.join(out, "diagnostics.csv"))) == len(df)
  assert os.path.isfile(os.path.join(out, "run_targets.png"))
  assert os.path.isfile(os.path.join(out, "run_model_error.png"))
  models = set(df[df["estimator"] == "model"]["model"])
  assert models == {"learned", "physics:0", "physics:0.1", "physics:0.3"}
  assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("args, option", [
    (["--horizons", "0", "-1"], "horizons"),
    (["--probes", "0"], "probes"),
    (["--checkpoints", "every:0"], "checkpoints"),
    (["--error_models", "wind:0.1"], "error_models"),
    (["--error_models", "physics:-1"], "error_models"),
    (["--jobs", "0"], "jobs"),
])
def test_cli_bad_options_exit_2_and_write_nothing(run_dir, tmp_path, capsys, args, option):
  out = str(tmp_path / "d")
  assert main(["diagnose", run_dir, *args, "--out", out]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"mvelab: error: {option}:"), err
  assert not os.path.exists(out)


def test_cli_directory_without_checkpoints_exits_2(tmp_path, capsys):
  empty = tmp_path / "empty"
  empty.mkdir()
  (empty / "config.json").write_text("{}")
  assert main(["diagnose", str(empty)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "no checkpoints" in err[0]
  assert os.listdir(empty) == ["config.json"]


def test_diagnose_live_appends_to_the_run_csv(run_dir, tmp_path):
  ref = loading.checkpoints(run_dir, ("last", 1))[0]
  p, states = loading.restore(ref)
  out = str(tmp_path)
  first = diagnose.diagnose_live(p, states, list(ref.seeds), SETTINGS, out)
  diagnose.diagnose_live(p, states, list(ref.seeds), SETTINGS, out)
  table = pd.read_csv(os.path.join(out, diagnose.LIVE_FILE))
  assert len(table) == 2 * len(first) > 0
  np.testing.assert_allclose(table["value"][:len(first)], table["value"][len(first):])


def test_results_and_plot_find_the_diagnostics(run_dir, tmp_path, capsys):
  assert main(["diagnose", run_dir, *ARGS, "--checkpoints", "last", "--no_figures",
               "--quiet"]) == 0
  assert os.path.isfile(os.path.join(run_dir, "diagnostics", "diagnostics.parquet"))
  capsys.readouterr()
  assert main(["results", run_dir, "--out", str(tmp_path / "r")]) == 0
  assert "diagnostics: 1 table(s)" in capsys.readouterr().out
  assert main(["plot", run_dir, "--out", str(tmp_path / "p")]) == 0
  assert os.path.isfile(tmp_path / "p" / "diagnostics" / "run_targets.png")


def test_train_diagnose_every_appends_live_rows(tmp_path):
  out = str(tmp_path / "live")
  cfg = Config(env="pendulum", num_seeds=1, total_steps=1500, warmup_steps=500,
               eval_every=500, eval_episodes=1, hidden_sizes=(16, 16), batch_size=32,
               expansion="critic", model="learned", horizon=1,
               model_hidden_sizes=(16, 16), model_batch_size=32, model_warmup_updates=10)
  train(cfg, out_dir=out, progress=False, checkpoint_every=0, diagnose_every=1,
        diagnose_settings=SETTINGS)
  table = pd.read_csv(os.path.join(out, diagnose.LIVE_FILE))
  assert sorted(table["env_steps"].unique()) == [500, 1000, 1500]  # every evaluation
  assert {"oracle", "learned"} <= set(table["model"].dropna().unique())
  with pytest.raises(ValueError, match="diagnose_every: needs a run directory"):
    train(cfg, diagnose_every=1)
  with pytest.raises(ValueError, match="diagnose_every: must be a non-negative integer"):
    train(cfg, out_dir=str(tmp_path / "x"), diagnose_every=-1)
  assert not (tmp_path / "x").exists()


def test_learned_model_placed_on_the_eps_axis(run_dir):
  from mvelab.diagnostics import eps_axis
  errors = eps_axis.measure(run_dir, "physics", [0.1, 0.3], horizon=3, probes=64)
  assert set(errors["model"]) == {"learned", "physics:0.1", "physics:0.3"}
  assert sorted(errors["k"].unique()) == [1, 2, 3]
  wide = errors.pivot_table(index="k", columns="model", values="obs_error")
  assert (wide["physics:0.3"] > wide["physics:0.1"]).all() and (wide["physics:0.1"] > 0).all()
  assert (wide["learned"] > 0).all()
  placed = eps_axis.equivalent_eps(errors, k=1)
  assert placed["eps"] > 0 and placed["learned_obs_error"] == pytest.approx(wide["learned"][1])
