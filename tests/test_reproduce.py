"""`mvelab reproduce figure1`: the spec it writes, and the whole pipeline with fake runs.

The real runs are covered by tests/test_experiments_sweep.py (a tiny real sweep); here a
fake job writes run directories with known learning curves, so the pipeline (sweep,
resume, table, figures) is checked in seconds without JAX training.
"""

import json
import os

import numpy as np
import pandas as pd
import pytest

from mvelab import config as config_lib
from mvelab import runner
from mvelab.config import Config
from mvelab.experiments import reproduce, sweep
from mvelab.experiments.executor import JobResult, SerialExecutor
from mvelab.experiments.spec import parse_spec


def test_default_spec_is_figure1_plus_references():
  spec = parse_spec(reproduce.figure1_spec())
  names = [r.name for r in spec.runs]
  assert len(names) == 1 + 2 * len(reproduce.HORIZONS) + 1
  cfgs = {r.name: config_lib.resolve(r.config) for r in spec.runs}
  kinds = sorted((c.expansion, c.model or "", c.horizon) for c in cfgs.values())
  expected = sorted([("none", "", 0), ("retrace", "", 3)]
                    + [("critic", m, h) for m in ("learned", "oracle")
                       for h in reproduce.HORIZONS])
  assert kinds == expected
  for c in cfgs.values():
    assert c.env == "paper_inverted_pendulum" and c.num_seeds == 5 and c.total_steps == 5000
    assert c.hidden_sizes == (64, 64) and c.batch_size == 128
    assert c.ce_values == ("direct" if c.expansion == "critic" else "control_variate")


def test_small_steps_per_env():
  spec = parse_spec(reproduce.figure1_spec(env="pendulum"))
  assert {config_lib.resolve(r.config).total_steps for r in spec.runs} == {
      reproduce.SMALL_STEPS}
  assert reproduce.small_steps("pendulum") == 10000


def test_paper_spec_has_no_size_overrides():
  spec = parse_spec(reproduce.figure1_spec(preset="paper", retrace=False))
  assert len(spec.runs) == 1 + 2 * len(reproduce.HORIZONS)
  for r in spec.runs:
    c = config_lib.resolve(r.config)
    paper = config_lib.resolve(Config(env="paper_inverted_pendulum", preset="paper"))
    assert c.env == "paper_inverted_pendulum" and c.preset == "paper"
    assert (c.hidden_sizes, c.batch_size, c.total_steps) == (
        paper.hidden_sizes, paper.batch_size, paper.total_steps)
    assert c.ce_values == "control_variate"


class FakeRun:
  """Writes a run directory (resolved config.json, metrics.csv, summary.json) whose
  curves improve with the step and worsen with H; optionally crashes after k runs."""

  def __init__(self, crash_after=None, curve=None):
    self.calls, self.crash_after = [], crash_after
    # curve(cfg, i, seed) -> return at evaluation i (default: better with i, worse with H)
    self.curve = curve or (lambda cfg, i, seed: -1000 + 300 * i - 10 * cfg.horizon - seed)

  def __call__(self, job):
    if self.crash_after is not None and len(self.calls) == self.crash_after:
      raise KeyboardInterrupt
    self.calls.append(job.name)
    cfg = config_lib.resolve(Config(**{k: tuple(v) if isinstance(v, list) else v
                                       for k, v in job.config.items()}))
    os.makedirs(job.run_dir, exist_ok=True)
    with open(os.path.join(job.run_dir, "config.json"), "w") as f:
      json.dump({"config": cfg.to_dict(), "seeds": [0, 1], "groups": [[0, 1]]}, f)
    rows = []
    for seed in (0, 1):
      for i, step in enumerate((1000, 2000, 3000)):
        rows.append(dict(seed=seed, env_steps=step, updates=step - 1000,
                         eval_return=self.curve(cfg, i, seed),
                         wall_time_s=0.01 * step * (1 + cfg.horizon), diverged=0,
                         diverged_step=-1))
    pd.DataFrame(rows, columns=runner.CSV_COLUMNS).to_csv(
        os.path.join(job.run_dir, "metrics.csv"), index=False)
    with open(os.path.join(job.run_dir, "summary.json"), "w") as f:
      json.dump({"compile_time_s": 1.0, "train_time_s": 2.0}, f)
    sweep.write_status(job.run_dir, {"state": "done", "final_return_mean": -400.0})
    return JobResult(job.name, True, None, 0.1, -400.0, 1.0)


def test_pipeline_writes_table_and_figures_and_resumes(tmp_path):
  out = str(tmp_path / "fig1")
  kw = dict(steps=3000, seeds=2, executor=SerialExecutor(), progress=False)
  crashing = FakeRun(crash_after=5)
  with pytest.raises(KeyboardInterrupt):
    reproduce.reproduce_figure1(out, job_fn=crashing, **kw)
  assert len(crashing.calls) == 5
  rest = FakeRun()
  r = reproduce.reproduce_figure1(out, job_fn=rest, **kw)
  assert len(rest.calls) == 14 - 5 and not set(rest.calls) & set(crashing.calls)
  assert r["sweep"].ok and r["sweep"].skipped == 5
  for name in ("results.parquet", "results.csv", "summary.csv"):
    assert os.path.exists(os.path.join(out, name))
  for fig in reproduce.FIGURES:
    for ext in ("png", "pdf"):
      assert os.path.getsize(os.path.join(out, f"{fig}.{ext}")) > 10_000
  summary = pd.read_csv(os.path.join(out, "summary.csv"))
  assert len(summary) == 14
  assert "steps_to_threshold" in summary.columns  # the paper task's 200 of 250
  oracle = summary[(summary.expansion == "critic") & (summary.model == "oracle")]
  np.testing.assert_allclose(  # final = mean over seeds 0, 1 of -1000 + 600 - 10 H - seed
      oracle.sort_values("horizon").final_mean, [-400.5 - 10 * h for h in reproduce.HORIZONS])
  # A third call redoes nothing.
  again = FakeRun()
  reproduce.reproduce_figure1(out, job_fn=again, **kw)
  assert again.calls == []


@pytest.mark.parametrize("argv, needle", [
    (["figure1", "--env", "nope"], "env: unknown environment 'nope'"),
    (["figure1", "--seeds", "0"], "seeds: must be a positive integer"),
    (["figure2"], "invalid choice"),
])
def test_bad_input_exit_2(argv, needle, tmp_path, capsys):
  assert reproduce.main(argv + ["--out", str(tmp_path / "x")]) == 2
  assert needle in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


def test_with_dyna_adds_mbpo_learned_and_oracle(tmp_path):
  spec = parse_spec(reproduce.figure1_spec(dyna=True))
  cfgs = [config_lib.resolve(r.config) for r in spec.runs]
  dyna = sorted((c.model, c.horizon) for c in cfgs if c.expansion == "dyna")
  assert dyna == sorted((m, h) for m in ("learned", "oracle") for h in reproduce.DYNA_HORIZONS)
  assert all(c.updates_per_step == 1 for c in cfgs)  # same UTD as every other curve
  labels = {results_label(c) for c in cfgs if c.expansion == "dyna"}
  assert labels == {"MBPO k=1", "MBPO k=5", "MBPO-oracle k=1", "MBPO-oracle k=5"}
  r = reproduce.reproduce_figure1(str(tmp_path / "d"), steps=3000, seeds=2, dyna=True,
                                  executor=SerialExecutor(), progress=False, job_fn=FakeRun())
  assert r["sweep"].ok and os.path.getsize(tmp_path / "d" / "figure1.png") > 10_000


def results_label(cfg):
  from mvelab.experiments import results
  return results.run_label(cfg.to_dict())
