"""collect / summarize / write_tables / the results CLI on hand-made run directories."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from mvelab import config as config_lib
from mvelab import runner
from mvelab.config import Config
from mvelab.experiments import results

NAN = float("nan")
STEPS = (1000, 2000, 4000)  # uneven spacing on purpose


def _metric_row(seed, step, ret, wall, diverged=False):
  return dict(seed=seed, env_steps=step, updates=max(0, step - 1000), eval_return=ret,
              eval_return_std=0.5, critic_loss=1.0, actor_loss=-1.0, alpha=0.1,
              entropy=0.2, q_mean=3.0, target_mean=3.0, model_loss=NAN,
              model_obs_mse=NAN, model_reward_mse=NAN, diverged=diverged,
              diverged_step=2000 if diverged else 0,
              diverged_what="critic" if diverged else "", wall_time_s=wall)


def make_run(path, cfg: Config, curves: dict, walls=None, status=None, summary=True,
             diverged=()):
  """Writes a run directory: ``curves`` = {seed: returns at STEPS (or (steps, returns))}."""
  os.makedirs(path, exist_ok=True)
  seeds = sorted(curves)
  resolved = config_lib.resolve(cfg)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"config": resolved.to_dict(), "seeds": seeds, "groups": [seeds],
               "versions": {}}, f)
  rows = []
  for seed in seeds:
    curve = curves[seed]
    steps, rets = curve if isinstance(curve, tuple) else (STEPS, curve)
    for i, (step, ret) in enumerate(zip(steps, rets)):
      wall = (walls or {}).get(seed, 1.0) * (i + 1) / len(steps)
      rows.append(_metric_row(seed, step, ret, wall,
                              diverged=seed in diverged and not np.isfinite(ret)))
  runner.MetricsWriter(os.path.join(path, "metrics.csv")).append(rows)
  if summary:
    with open(os.path.join(path, "summary.json"), "w") as f:
      json.dump({"compile_time_s": 1.5, "train_time_s": 12.0}, f)
  if status:
    with open(os.path.join(path, "status.json"), "w") as f:
      json.dump({"state": status, "error": None}, f)
  return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  """A small sweep: runs/<name>/ with five algorithms, one diverged seed, one failure."""
  root = str(tmp_path_factory.mktemp("sweep"))
  runs = os.path.join(root, "runs")
  make_run(os.path.join(runs, "sac"), Config(env="pendulum", num_seeds=3),
           {0: [0.0, 10.0, 40.0], 1: [10.0, 10.0, 10.0], 2: [-10.0, 20.0, 70.0]},
           walls={0: 3.0, 1: 5.0, 2: 4.0}, status="done")
  make_run(os.path.join(runs, "mve5"),
           Config(env="pendulum", expansion="critic", model="learned", horizon=5),
           {0: [0.0, 10.0, 20.0], 1: [5.0, NAN, NAN]}, diverged=(1,), status="done")
  make_run(os.path.join(runs, "ddpg-ove5"),
           Config(env="pendulum", agent="ddpg", expansion="critic", model="oracle",
                  horizon=5),
           {0: [1.0, 2.0, 3.0]}, status="failed", summary=False)
  make_run(os.path.join(runs, "retrace3"),
           Config(env="pendulum", expansion="retrace", horizon=3),
           {0: [1.0, 1.0, 1.0]})
  make_run(os.path.join(runs, "vg3"),
           Config(env="pendulum", expansion="actor", model="oracle", horizon=3,
                  hidden_sizes=(64, 64)),
           # seed 1 stopped early: the run is compared at the common step 2000
           {0: (STEPS, [0.0, 6.0, 100.0]), 1: ((1000, 2000), [2.0, 4.0])})
  os.makedirs(os.path.join(root, "not-a-run"))  # no config.json: ignored
  return root


# ------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("kwargs, want", [
    (dict(), "SAC"),
    (dict(agent="ddpg"), "DDPG"),
    (dict(expansion="critic", model="learned", horizon=5), "MVE H=5"),
    (dict(expansion="critic", model="oracle", horizon=5), "OVE H=5"),
    (dict(agent="ddpg", expansion="critic", model="oracle", horizon=5), "DDPG-OVE H=5"),
    (dict(expansion="retrace", horizon=3), "Retrace H=3"),
    (dict(expansion="actor", model="oracle", horizon=3), "VG-oracle H=3"),
    (dict(expansion="actor", model="learned", horizon=3), "VG-learned H=3"),
    (dict(expansion="retrace", horizon=3, lam=0.9), "Retrace H=3 lam=0.9"),
    (dict(expansion="critic", model="oracle", horizon=2, particles=4, tdk=True),
     "OVE H=2 P=4 TD-k"),
    (dict(expansion="critic", model="learned", horizon=3, ce_values="direct"),
     "MVE H=3 direct"),
    (dict(expansion="critic", model="learned", horizon=10, model_sampling="balanced"),
     "MVE H=10 balanced"),
    (dict(expansion="critic", model="learned", horizon=10, model_sampling="iid"), "MVE H=10"),
    (dict(expansion="dyna", model="learned", horizon=5, model_sampling="balanced"),
     "MBPO k=5 balanced"),
])
def test_run_label(kwargs, want):
  assert results.run_label(Config(**kwargs).to_dict()) == want


# ----------------------------------------------------------------------------- collect
def test_find_runs(sweep, tmp_path):
  runs = results.find_runs(sweep)
  names = [os.path.relpath(p, sweep) for p in runs]
  assert names == sorted(f"runs/{n}" for n in ("sac", "mve5", "ddpg-ove5", "retrace3", "vg3"))
  assert results.find_runs(os.path.join(sweep, "runs", "sac")) == [
      os.path.normpath(os.path.join(sweep, "runs", "sac"))]
  assert results.find_runs(str(tmp_path)) == []


def test_collect_shapes_columns_and_labels(sweep):
  df = results.collect(sweep)
  # rows: sac 3x3, mve5 2x3, ddpg-ove5 3, retrace3 3, vg3 3 + 2
  assert len(df) == 9 + 6 + 3 + 3 + 5
  cols = list(df.columns)
  assert cols[:3] == ["run", "status", "label"]
  assert cols[-len(runner.CSV_COLUMNS) - 2:] == [*runner.CSV_COLUMNS, "compile_time_s",
                                                 "train_time_s"]
  fields = [f for f in Config().to_dict() if f != "seed"]
  assert set(fields) | {"config_seed"} <= set(cols)
  labels = df.groupby("run")["label"].first().to_dict()
  assert labels == {"runs/sac": "SAC", "runs/mve5": "MVE H=5",
                    "runs/ddpg-ove5": "DDPG-OVE H=5", "runs/retrace3": "Retrace H=3",
                    "runs/vg3": "VG-oracle H=3"}
  status = df.groupby("run")["status"].first().to_dict()
  assert status["runs/sac"] == "done" and status["runs/ddpg-ove5"] == "failed"
  assert status["runs/retrace3"] == "unknown"
  first = df.groupby("run").first()
  assert first.loc["runs/sac", "hidden_sizes"] == "256x256"
  assert first.loc["runs/vg3", "hidden_sizes"] == "64x64"
  assert first.loc["runs/mve5", "model_hidden_sizes"] == "128x128"
  assert pd.isna(df.set_index("run").loc["runs/sac", "model"]).all()
  assert first.loc["runs/sac", "compile_time_s"] == 1.5
  assert np.isnan(first.loc["runs/ddpg-ove5", "compile_time_s"])  # no summary.json
  sac = df[df["run"] == "runs/sac"]
  assert list(sac["seed"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
  assert list(sac["env_steps"]) == list(STEPS) * 3
  assert list(sac["eval_return"]) == [0.0, 10.0, 40.0, 10.0, 10.0, 10.0, -10.0, 20.0, 70.0]
  mve = df[df["run"] == "runs/mve5"]
  assert mve["diverged"].tolist() == [False, False, False, False, True, True]


def test_collect_of_a_single_run_dir(sweep):
  df = results.collect(os.path.join(sweep, "runs", "retrace3"))
  assert set(df["run"]) == {"."} and len(df) == 3


def test_collect_skips_unreadable_runs_with_a_warning(tmp_path):
  make_run(str(tmp_path / "good"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text("{not json")
  (bad / "metrics.csv").write_text(",".join(runner.CSV_COLUMNS) + "\n")
  garbled = make_run(str(tmp_path / "garbled"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  with open(os.path.join(garbled, "metrics.csv"), "a") as f:
    f.write("x,1000,0,abc" + "," * (len(runner.CSV_COLUMNS) - 4) + "\n")
  with pytest.warns(results.RunSkippedWarning) as record:
    df = results.collect(str(tmp_path))
  assert set(df["run"]) == {"good"}
  assert sorted(str(w.message).split("'")[1] for w in record) == ["bad", "garbled"]


def test_collect_of_nothing_is_empty_with_the_columns(tmp_path):
  df = results.collect(str(tmp_path))
  assert df.empty and list(df.columns)[:3] == ["run", "status", "label"]
  assert results.summarize(df).empty


# --------------------------------------------------------------------------- summarize
def test_summarize_matches_hand_computation(sweep):
  s = results.summarize(results.collect(sweep), threshold=20.0).set_index("run")
  sac = s.loc["runs/sac"]
  assert (sac["label"], sac["env"], sac["agent"], sac["expansion"]) == (
      "SAC", "pendulum", "sac", "none")
  assert pd.isna(sac["model"]) and sac["horizon"] == 0
  assert sac["n_seeds"] == 3 and sac["final_env_steps"] == 4000
  assert sac["final_mean"] == pytest.approx(40.0)  # finals 40, 10, 70
  assert sac["final_std"] == pytest.approx(np.sqrt(600.0))  # ddof 0
  assert sac["iqm"] == pytest.approx(40.0)  # n = 3: nothing trimmed
  assert 10.0 <= sac["iqm_lo"] <= 40.0 <= sac["iqm_hi"] <= 70.0
  # AUC per seed: (1000*(0+10)/2 + 2000*(10+40)/2) / 3000, 10, (1000*10/2 + 2000*90/2) / 3000
  aucs = [55000 / 3000, 10.0, 95000 / 3000]
  assert sac["auc_mean"] == pytest.approx(np.mean(aucs))
  assert sac["auc_std"] == pytest.approx(np.std(aucs))
  # Threshold 20: seed 0 at 4000, seed 1 never, seed 2 at 2000.
  assert sac["steps_to_threshold"] == pytest.approx(3000.0) and sac["reached"] == "2/3"
  assert sac["wall_time_s"] == pytest.approx(5.0)  # max over seeds of the last wall time
  assert sac["compile_time_s"] == 1.5 and sac["train_time_s"] == 12.0
  assert sac["diverged"] == 0 and sac["status"] == "done"

  mve = s.loc["runs/mve5"]  # seed 1 diverged: left out of the final/AUC statistics
  assert mve["diverged"] == 1 and mve["n_seeds"] == 2 and mve["model"] == "learned"
  assert (mve["final_mean"], mve["final_std"]) == (20.0, 0.0)
  assert (mve["iqm"], mve["iqm_lo"], mve["iqm_hi"]) == (20.0, 20.0, 20.0)
  assert mve["auc_mean"] == pytest.approx(35000 / 3000) and mve["auc_std"] == 0.0
  assert mve["reached"] == "1/2" and mve["steps_to_threshold"] == 4000.0

  vg = s.loc["runs/vg3"]  # seed 1 has evaluations up to 2000 only
  assert vg["final_env_steps"] == 2000
  assert vg["final_mean"] == pytest.approx(5.0)  # 6 and 4 at step 2000
  assert vg["auc_mean"] == pytest.approx(np.mean([3.0, 3.0]))
  assert vg["reached"] == "1/2"  # seed 0 reaches 20 at 4000, after the common step

  ddpg = s.loc["runs/ddpg-ove5"]
  assert ddpg["status"] == "failed" and np.isnan(ddpg["compile_time_s"])
  assert ddpg["iqm"] == 3.0 and ddpg["iqm_lo"] == ddpg["iqm_hi"] == 3.0  # one seed


def test_summarize_columns_and_order(sweep):
  df = results.collect(sweep)
  plain = results.summarize(df)
  assert list(plain.columns) == list(results.SUMMARY_COLUMNS)
  with_thr = results.summarize(df, threshold=0.0)
  assert list(with_thr.columns) == results.summary_columns(0.0)
  assert {"steps_to_threshold", "reached"} <= set(with_thr.columns)
  # env, agent (sac, ddpg), expansion (none, critic, actor, retrace), model, horizon
  assert list(plain["label"]) == ["SAC", "MVE H=5", "VG-oracle H=3", "Retrace H=3",
                                  "DDPG-OVE H=5"]


def test_summary_statistics_are_deterministic(sweep):
  df = results.collect(sweep)
  pd.testing.assert_frame_equal(results.summarize(df), results.summarize(df))


# ------------------------------------------------------------------------------ output
def test_write_tables_round_trip(sweep, tmp_path):
  df = results.collect(sweep)
  summary = results.summarize(df, threshold=20.0)
  out = str(tmp_path / "tables")
  paths = results.write_tables(df, summary, out)
  assert sorted(os.path.basename(p) for p in paths.values()) == sorted(results.RESULT_FILES)
  assert sorted(os.listdir(out)) == sorted(results.RESULT_FILES)  # no temp files left
  back = pd.read_parquet(paths["results.parquet"])
  assert back.shape == df.shape and list(back.columns) == list(df.columns)
  np.testing.assert_array_equal(back["eval_return"], df["eval_return"])
  csv = pd.read_csv(paths["results.csv"])
  assert csv.shape == df.shape
  summ = pd.read_csv(paths["summary.csv"])
  assert list(summ.columns) == list(summary.columns) and len(summ) == 5
  assert summ.set_index("run").loc["runs/sac", "final_mean"] == pytest.approx(40.0)


def test_write_tables_handles_mixed_unknown_config_fields(tmp_path):
  for name, value in (("a", 3), ("b", "three"), ("c", None)):
    run = make_run(str(tmp_path / name), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
    path = os.path.join(run, "config.json")
    with open(path) as f:
      meta = json.load(f)
    meta["config"]["future_field"] = value  # a field from another mvelab version
    with open(path, "w") as f:
      json.dump(meta, f)
  df = results.collect(str(tmp_path))
  assert "future_field" in df.columns
  paths = results.write_tables(df, results.summarize(df), str(tmp_path / "out"))
  back = pd.read_parquet(paths["results.parquet"])
  values = back.groupby("run")["future_field"].first()
  assert (values["a"], values["b"]) == ("3", "three") and pd.isna(values["c"])


def test_format_summary(sweep):
  summary = results.summarize(results.collect(sweep), threshold=20.0)
  text = results.format_summary(summary)
  lines = text.splitlines()
  assert len(lines) == 2 + 5
  assert "final (mean ± std)" in lines[0] and "IQM [95% CI]" in lines[0]
  sac = next(l for l in lines if l.startswith("runs/sac "))
  assert "40.0 ± 24.5" in sac and "3000 (2/3)" in sac and "0/3" in sac
  mve = next(l for l in lines if l.startswith("runs/mve5"))
  assert "20.0 [20.0, 20.0]" in mve and "1/2" in mve
  assert "to threshold" not in results.format_summary(results.summarize(
      results.collect(sweep)))


# --------------------------------------------------------------------------------- CLI
def test_main_writes_tables_and_prints_the_summary(sweep, tmp_path, capsys):
  out = str(tmp_path / "out")
  assert results.main([sweep, "--threshold", "20", "--out", out]) == 0
  printed = capsys.readouterr().out
  assert "MVE H=5" in printed and "reached" in printed
  assert all(os.path.join(out, f) in printed for f in results.RESULT_FILES)
  assert sorted(os.listdir(out)) == sorted(results.RESULT_FILES)


def test_main_defaults_to_writing_into_dir(tmp_path, capsys):
  run = make_run(str(tmp_path / "run"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  assert results.main([run]) == 0
  assert all(os.path.exists(os.path.join(run, f)) for f in results.RESULT_FILES)
  # The tables written there do not make it look like a different run next time.
  assert results.main([run]) == 0


@pytest.mark.parametrize("argv, needle", [
    (["{tmp}/missing"], "dir:"),
    (["{tmp}"], "no run directories"),
    (["{run}", "--threshold", "abc"], "threshold"),
    (["{run}", "--threshold", "nan"], "threshold"),
    ([], "DIR"),
])
def test_main_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, needle):
  empty = tmp_path / "empty"
  empty.mkdir()
  run = make_run(str(tmp_path / "run"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  argv = [a.format(tmp=empty, run=run) for a in argv]
  assert results.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("mvelab: error: ") and needle in err[0]


def test_main_reports_skipped_runs(tmp_path, capsys):
  make_run(str(tmp_path / "good"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "config.json").write_text("[]")
  (bad / "metrics.csv").write_text(",".join(runner.CSV_COLUMNS) + "\n")
  assert results.main([str(tmp_path)]) == 0
  err = capsys.readouterr().err
  assert err.startswith("warning: skipping run 'bad'")


def test_main_collects_several_dirs_into_one_table(tmp_path, capsys):
  a = make_run(str(tmp_path / "a" / "runs" / "sac"), Config(env="pendulum"), {0: [1.0, 2.0, 3.0]})
  make_run(str(tmp_path / "b" / "ove5"),
           Config(env="pendulum", expansion="critic", model="oracle", horizon=5),
           {0: [2.0, 3.0, 4.0]})
  out = str(tmp_path / "out")
  assert results.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", out]) == 0
  summary = pd.read_csv(os.path.join(out, "summary.csv"))
  assert sorted(summary["run"]) == ["a/runs/sac", "b/ove5"]
  assert os.path.isdir(a)
  # Several DIRs need --out: there is no single DIR to write into.
  assert results.main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
  assert "--out" in capsys.readouterr().err
