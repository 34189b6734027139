"""Sweeps: spec validation and expansion, resumable sweep logic, executors, one real sweep."""

from __future__ import annotations

import csv
import json
import os
import time

import pytest
import yaml

from mvelab.errors import ConfigError
from mvelab.experiments import sweep
from mvelab.experiments.executor import Job, JobResult, ProcessExecutor, SerialExecutor
from mvelab.experiments.spec import dump_spec, load_spec, parse_spec

FIGURE1 = {
    "name": "figure1", "envs": ["pendulum"], "presets": ["default"], "seeds": 5,
    "steps": 5000, "overrides": {"hidden_sizes": [64, 64], "batch_size": 128},
    "runs": [
        {"agents": "sac", "expansions": "none"},
        {"expansions": "critic", "models": ["learned", "oracle"],
         "horizons": [1, 3, 5, 10, 20, 30]},
        {"expansions": "retrace", "horizons": [3], "overrides": {"lam": 0.9}},
    ]}


def _spec(**kw) -> dict:
  return {"envs": "pendulum", "seeds": 1, **kw}


# ------------------------------------------------------------------------ validation
@pytest.mark.parametrize("data, message", [
    (_spec(foo=1), "spec: unknown key 'foo'; allowed: name, envs"),
    (_spec(runs=[{"agent": "sac"}]), "spec: runs[0]: unknown key 'agent' (did you mean 'agents'?)"),
    (_spec(overrides={"hiden_sizes": [8]}),
     "spec: overrides.hiden_sizes: unknown Config field; did you mean 'hidden_sizes'"),
    (_spec(runs=[{"overrides": {"zzzz": 1}}]),
     "spec: runs[0].overrides.zzzz: unknown Config field"),
    (_spec(runs=[{}, {"horizons": "x"}]),
     "spec: runs[1].horizons: must be a list of non-negative integers, got 'x'"),
    (_spec(runs=[{"horizons": [1, -2]}]), "spec: runs[0].horizons: must be a list of non-negative"),
    (_spec(seeds=0), "spec: seeds: must be a positive integer, got 0"),
    (_spec(seeds="5"), "spec: seeds: must be a positive integer, got '5'"),
    (_spec(steps=True), "spec: steps: must be a positive integer, got True"),
    (_spec(name=3), "spec: name: must be a string"),
    (_spec(overrides={"lam": "x"}), "spec: overrides.lam: must be a number, got 'x'"),
    (_spec(overrides={"hidden_sizes": "64"}),
     "spec: overrides.hidden_sizes: must be a list of integers"),
    (_spec(overrides={"tdk": 1}), "spec: overrides.tdk: must be true or false, got 1"),
    (_spec(overrides={"std_param": "exp"}),
     "spec: overrides.std_param: unknown value 'exp'; allowed: log_std, softplus"),
    (_spec(overrides=[1]), "spec: overrides: must be a mapping of Config fields"),
    (_spec(runs=[{"agents": ["sac", "td3"]}]),
     "spec: runs[0].agents[1]: unknown value 'td3'; allowed: sac, ddpg"),
    (_spec(envs=["pendulum", 1]), "spec: envs[1]: must be an environment"),
    (_spec(envs="moon"), "spec: envs: unknown value 'moon'; allowed: pendulum"),
    (_spec(presets="fast"), "spec: presets: unknown value 'fast'; allowed: default, paper"),
    (_spec(runs={"agents": "sac"}), "spec: runs: must be a list of run blocks"),
    (_spec(runs=["sac"]), "spec: runs[0]: must be a mapping with keys agents"),
    (_spec(overrides={"horizon": 3}), "spec: overrides.horizon: is a grid field; set it with "
                                      "the spec key 'runs[].horizons'"),
    (_spec(runs=[{"overrides": {"env": "hopper"}}]),
     "spec: runs[0].overrides.env: is a grid field"),
    (_spec(overrides={"num_seeds": 2}), "spec: overrides.num_seeds: is a grid field; set it "
                                        "with the spec key 'seeds'"),
    (_spec(envs=[]), "spec: envs: the grid is empty"),
    (_spec(runs=[{"expansions": "retrace", "horizons": []}]),
     "spec: runs[0].horizons: the grid is empty"),
    (_spec(runs=[]), "spec: runs: the grid is empty"),
    ({"seeds": 1}, "spec: envs: required"),
    ({"envs": "pendulum"}, "spec: seeds: required"),
    ([1, 2], "spec: must be a mapping with keys name, envs"),
    # Combinations the grid allows but config.validate rejects, with where they came from.
    (_spec(runs=[{}, {"expansions": "critic", "models": "oracle", "horizons": 3,
                      "overrides": {"model_members": 3}}]),
     "spec: runs[1] (run pendulum-default-sac-critic-oracle-H3-"),
    (_spec(runs=[{"expansions": "critic", "horizons": 3}]),
     "spec: runs[0] (run pendulum-default-sac-critic-H3): model: required for expansion=critic"),
    (_spec(runs=[{"expansions": ["none", "critic"], "models": "oracle"}],
           overrides={"particles": 2}),
     "spec: runs[0] (run pendulum-default-sac-none-H0): particles: only used by"),
    (_spec(overrides={"batch_size": 0}), "spec: runs[0] (run pendulum-default-sac-none-H0): "
                                         "batch_size: must be a positive integer, got 0"),
])
def test_invalid_specs_name_the_key_path(data, message):
  with pytest.raises(ConfigError) as e:
    parse_spec(data)
  assert message in str(e.value)


def test_learned_model_option_with_oracle_names_the_field():
  with pytest.raises(ConfigError, match=r"model_members: is a learned-model option"):
    parse_spec(_spec(runs=[{"expansions": "critic", "models": "oracle",
                            "overrides": {"model_members": 3}}]))


def test_load_spec_file_errors(tmp_path):
  with pytest.raises(ConfigError, match=r"^spec: cannot read .*nope.yaml.*No such file"):
    load_spec(str(tmp_path / "nope.yaml"))
  bad = tmp_path / "bad.yaml"
  bad.write_text("envs: [pendulum\nseeds: 2\n")
  with pytest.raises(ConfigError, match=r"^spec: .*bad.yaml' is not valid YAML: .*line \d+"):
    load_spec(str(bad))
  empty = tmp_path / "empty.yaml"
  empty.write_text("# nothing\n")
  with pytest.raises(ConfigError, match="is empty"):
    load_spec(str(empty))


# ------------------------------------------------------------------------- expansion
def test_figure1_grid_counts_and_names():
  spec = parse_spec(FIGURE1)
  names = [r.name for r in spec.runs]
  assert len(names) == 1 + 2 * 6 + 1 == 14
  assert names[0] == "pendulum-default-sac-none-H0"
  assert "pendulum-default-sac-critic-oracle-H5" in names
  assert "pendulum-default-sac-critic-learned-H30" in names
  assert names[-1].startswith("pendulum-default-sac-retrace-H3-") and len(names[-1]) == 38
  assert len(set(names)) == 14
  for r in spec.runs:
    assert r.config.num_seeds == 5 and r.config.total_steps == 5000
    assert r.config.hidden_sizes == (64, 64) and r.config.batch_size == 128
  assert spec.runs[-1].config.lam == 0.9 and spec.runs[0].config.lam == 1.0
  assert spec.name == "figure1"


def test_models_dropped_and_horizon_zeroed_where_unused_then_deduped():
  spec = parse_spec(_spec(runs=[
      {"expansions": ["none", "retrace"], "models": ["learned", "oracle"], "horizons": [0, 3]},
      {"expansions": "none", "horizons": [1, 5, 7]},  # all the same as the first none run
  ]))
  assert [r.name for r in spec.runs] == [
      "pendulum-default-sac-none-H0", "pendulum-default-sac-retrace-H0",
      "pendulum-default-sac-retrace-H3"]
  assert all(r.config.model is None for r in spec.runs)
  assert spec.runs[0].config.horizon == 0


def test_block_overrides_get_distinct_names_and_merge_over_top_level():
  spec = parse_spec(_spec(overrides={"lam": 0.5, "gamma": 0.9}, runs=[
      {}, {"overrides": {"lam": 0.9}}, {"overrides": {"lam": 0.8}}, {"overrides": {"lam": 0.9}}]))
  names = [r.name for r in spec.runs]
  assert len(names) == 3 and names[0] == "pendulum-default-sac-none-H0"
  assert names[1] != names[2] and all(n.startswith(names[0] + "-") for n in names[1:])
  assert [r.config.lam for r in spec.runs] == [0.5, 0.9, 0.8]
  assert all(r.config.gamma == 0.9 for r in spec.runs)
  assert parse_spec(_spec(runs=[{"overrides": {"lam": 0.9}}])).runs[0].name == names[1]


def test_envs_presets_seeds_and_yaml_floats():
  spec = parse_spec({"envs": ["pendulum", "cartpole_swingup"], "presets": ["default", "paper"],
                     "seeds": 3, "overrides": {"actor_lr": "1e-3"}})
  assert [r.name for r in spec.runs] == [
      "pendulum-default-sac-none-H0", "pendulum-paper-sac-none-H0",
      "cartpole_swingup-default-sac-none-H0", "cartpole_swingup-paper-sac-none-H0"]
  assert {r.config.actor_lr for r in spec.runs} == {1e-3}


def test_dump_spec_round_trips(tmp_path):
  path = str(tmp_path / "spec.yaml")
  data = dict(FIGURE1, overrides={"hidden_sizes": (64, 64)})
  dump_spec(data, path)
  assert load_spec(path).grid() == parse_spec(data).grid()
  assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


# ---------------------------------------------------------------- sweep (fake jobs)
SMALL = _spec(name="small", runs=[{"expansions": "none"},
                                  {"expansions": "retrace", "horizons": [1, 2, 3]}])
NAMES = ["pendulum-default-sac-none-H0"] + [f"pendulum-default-sac-retrace-H{h}" for h in (1, 2, 3)]


class Crash(BaseException):
  """Stands in for the sweep process dying mid-sweep."""


class FakeJob:
  """A job_fn that writes a run directory like run_job does, without JAX."""

  def __init__(self, fail=(), crash_at=None):
    self.fail, self.crash_at, self.calls = set(fail), crash_at, []

  def __call__(self, job: Job) -> JobResult:
    if self.crash_at is not None and len(self.calls) == self.crash_at:
      os.makedirs(job.run_dir, exist_ok=True)  # a partial run dir: config but no status
      with open(os.path.join(job.run_dir, "config.json"), "w") as f:
        json.dump({"config": job.config}, f)
      raise Crash
    self.calls.append(job.name)
    os.makedirs(job.run_dir, exist_ok=True)
    with open(os.path.join(job.run_dir, "metrics.csv"), "w") as f:
      f.write("seed,env_steps,eval_return\n0,100,-1.5\n")
    if job.name in self.fail:
      sweep.write_status(job.run_dir, {"state": "failed", "error": "RuntimeError: boom"})
      return JobResult(job.name, False, "RuntimeError: boom", 0.1)
    sweep.write_status(job.run_dir, {"state": "done", "final_return_mean": -1.5})
    return JobResult(job.name, True, None, 0.1, -1.5, 0.25)


def test_failed_run_is_recorded_and_others_finish(tmp_path, capsys):
  out = str(tmp_path / "sw")
  fake = FakeJob(fail={NAMES[1]})
  result = sweep.run_sweep(parse_spec(SMALL), out, executor=SerialExecutor(), job_fn=fake)
  assert fake.calls == NAMES
  assert (result.total, result.skipped, result.succeeded) == (4, 0, 3)
  assert result.failed == [(NAMES[1], "RuntimeError: boom")] and not result.ok
  text = capsys.readouterr().out
  assert "4 runs in" in text and "0 done already, 4 to run" in text
  assert f"[1/4] {NAMES[0]}: ok final -1.5 ± 0.2 (0 s) | ETA" in text
  assert f"[2/4] {NAMES[1]}: FAILED: RuntimeError: boom" in text
  summary = json.load(open(os.path.join(out, "sweep.json")))
  assert summary["failed"] == [{"name": NAMES[1], "error": "RuntimeError: boom"}]
  assert [r["state"] for r in summary["runs"]] == ["done", "failed", "done", "done"]
  assert yaml.safe_load(open(os.path.join(out, "spec.yaml"))) == SMALL
  # A second invocation redoes only the failed run.
  again = FakeJob()
  result = sweep.run_sweep(parse_spec(SMALL), out, progress=False, executor=SerialExecutor(),
                           job_fn=again)
  assert again.calls == [NAMES[1]] and result.ok and result.skipped == 3


def test_crash_mid_sweep_then_rerun_does_each_remaining_run_once(tmp_path):
  out = str(tmp_path / "sw")
  crashing = FakeJob(crash_at=2)
  with pytest.raises(Crash):
    sweep.run_sweep(parse_spec(SMALL), out, progress=False, executor=SerialExecutor(),
                    job_fn=crashing)
  assert crashing.calls == NAMES[:2]
  summary = json.load(open(os.path.join(out, "sweep.json")))
  assert summary["interrupted"] and summary["succeeded"] == 2
  assert [r["state"] for r in summary["runs"]] == ["done", "done", "pending", "pending"]
  rerun = FakeJob()
  result = sweep.run_sweep(parse_spec(SMALL), out, progress=False, executor=SerialExecutor(),
                           job_fn=rerun)
  assert rerun.calls == NAMES[2:]
  assert (result.skipped, result.succeeded, result.failed) == (2, 2, [])
  assert sorted(os.listdir(os.path.join(out, "runs"))) == sorted(NAMES)


def test_out_dir_of_another_sweep_is_refused(tmp_path):
  out = str(tmp_path / "sw")
  sweep.run_sweep(parse_spec(SMALL), out, progress=False, executor=SerialExecutor(),
                  job_fn=FakeJob())
  other = dict(SMALL, seeds=2)
  with pytest.raises(ConfigError, match=r"^out: .*different grid \(4 run\(s\) changed: .*"
                                        r"use a new --out"):
    sweep.run_sweep(parse_spec(other), out, executor=SerialExecutor(), job_fn=FakeJob())
  renamed = dict(SMALL, name="renamed")  # same grid: accepted, nothing to do
  result = sweep.run_sweep(parse_spec(renamed), out, progress=False,
                           executor=SerialExecutor(), job_fn=FakeJob())
  assert result.skipped == 4
  (tmp_path / "junk").mkdir()
  (tmp_path / "junk" / "x").write_text("x")
  with pytest.raises(ConfigError, match="is not empty and holds no spec.yaml"):
    sweep.run_sweep(parse_spec(SMALL), str(tmp_path / "junk"), job_fn=FakeJob())


def test_main_exit_codes(tmp_path, monkeypatch, capsys):
  spec_path = str(tmp_path / "spec.yaml")
  dump_spec(SMALL, spec_path)
  out = str(tmp_path / "sw")
  monkeypatch.setattr(sweep, "run_job", FakeJob(fail={NAMES[2]}))
  assert sweep.main([spec_path, "--out", out, "--jobs", "1", "--quiet"]) == 1
  captured = capsys.readouterr()
  assert "[1/4]" not in captured.out
  assert f"1 of 4 runs FAILED:\n  {NAMES[2]}: RuntimeError: boom" in captured.out
  monkeypatch.setattr(sweep, "run_job", FakeJob())
  assert sweep.main([spec_path, "--out", out, "--jobs", "1"]) == 0
  assert "3 done already, 1 to run" in capsys.readouterr().out
  # Bad input: one line on stderr, exit 2.
  assert sweep.main([str(tmp_path / "missing.yaml"), "--out", out]) == 2
  err = capsys.readouterr().err
  assert err.startswith("mvelab: error: spec: cannot read") and err.count("\n") == 1
  (tmp_path / "bad.yaml").write_text("envs: pendulum\nseeds: 1\nruns: [{horizons: x}]\n")
  assert sweep.main([str(tmp_path / "bad.yaml"), "--out", out]) == 2
  assert "runs[0].horizons" in capsys.readouterr().err
  assert sweep.main([spec_path, "--out", out, "--jobs", "0"]) == 2
  assert "jobs: must be a positive integer" in capsys.readouterr().err
  assert sweep.main([spec_path]) == 2  # --out missing: argparse usage error
  # Ctrl-C: 130 and a hint that re-running resumes.
  monkeypatch.setattr(sweep, "run_job", _interrupting_job)
  os.remove(os.path.join(out, "runs", NAMES[0], "status.json"))
  assert sweep.main([spec_path, "--out", out, "--jobs", "1", "--quiet"]) == 130
  assert "re-run the same command to resume" in capsys.readouterr().err


def _interrupting_job(job):
  raise KeyboardInterrupt


# --------------------------------------------------------------------- ProcessExecutor
def _process_job(job: Job) -> JobResult:
  """Picklable fake job; behaviour picked by name."""
  os.makedirs(job.run_dir, exist_ok=True)
  if hasattr(os, "sched_getaffinity"):
    with open(os.path.join(job.run_dir, "cores"), "w") as f:
      f.write(" ".join(map(str, sorted(os.sched_getaffinity(0)))))
  with open(os.path.join(job.run_dir, "preallocate"), "w") as f:
    f.write(os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "unset"))
  flag = job.config["flag"]
  if job.name == "slow":  # finishes only after "fast" did
    deadline = time.time() + 60
    while not os.path.exists(flag) and time.time() < deadline:
      time.sleep(0.05)
  elif job.name == "fast":
    open(flag, "w").close()
  elif job.name == "die":
    os._exit(1)
  elif job.name == "boom":
    raise RuntimeError("boom")
  elif job.name == "hang":
    with open(flag + ".pid", "w") as f:
      f.write(str(os.getpid()))
    time.sleep(120)
  return JobResult(job.name, True, None, 0.0, 1.0, 0.0)


def _jobs(tmp_path, names):
  flag = str(tmp_path / "flag")
  return [Job(n, {"flag": flag}, str(tmp_path / n)) for n in names]


def test_process_executor_collects_results_and_reports_dead_workers(tmp_path):
  results = list(ProcessExecutor(jobs=2).map(_process_job,
                                             _jobs(tmp_path, ["slow", "fast", "die", "boom"])))
  by_name = {r.name: r for r in results}
  assert sorted(by_name) == ["boom", "die", "fast", "slow"]
  assert by_name["slow"].ok and by_name["fast"].ok
  assert [r.name for r in results].index("fast") < [r.name for r in results].index("slow")
  assert not by_name["die"].ok and "exited with code 1" in by_name["die"].error
  assert by_name["boom"].error == "RuntimeError: boom"
  expected = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the user's wins
  assert open(tmp_path / "slow" / "preallocate").read() == expected  # workers share a GPU
  if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
    cores = {open(tmp_path / n / "cores").read() for n in ("slow", "fast")}
    assert len(cores) == 2 and all(" " not in c for c in cores)  # one core each, distinct


def test_process_executor_stops_running_jobs_when_closed(tmp_path):
  it = ProcessExecutor(jobs=2).map(_process_job, _jobs(tmp_path, ["hang", "fast"]))
  assert next(it).name == "fast"
  pid_file = str(tmp_path / "flag.pid")
  deadline = time.time() + 60
  while not os.path.exists(pid_file) and time.time() < deadline:
    time.sleep(0.05)
  pid = int(open(pid_file).read())
  it.close()
  with pytest.raises(ProcessLookupError):
    os.kill(pid, 0)


# ------------------------------------------------------------------- one real sweep
TINY = {"name": "tiny", "envs": "pendulum", "seeds": 2, "steps": 300,
        "overrides": {"hidden_sizes": [16, 16], "batch_size": 32, "warmup_steps": 100,
                      "eval_every": 100, "eval_episodes": 2, "replay_capacity": 2000},
        # Only the seeds differ: both runs share one compiled program.
        "runs": [{"expansions": "none"}, {"expansions": "none", "overrides": {"seed": 10}}]}


def _files(root):
  out = {}
  for d, _, names in os.walk(root):
    for n in names:
      p = os.path.join(d, n)
      out[p] = (os.stat(p).st_mtime_ns, open(p, "rb").read())
  return out


def _metrics(path_or_lines):
  if isinstance(path_or_lines, str):
    with open(path_or_lines) as f:
      path_or_lines = f.read().splitlines()
  rows = list(csv.DictReader(path_or_lines))
  for r in rows:
    r.pop("wall_time_s")
  return rows


def test_real_sweep_end_to_end_skips_and_resumes(tmp_path, capsys):
  spec_path = str(tmp_path / "tiny.yaml")
  dump_spec(TINY, spec_path)
  out = str(tmp_path / "sweep")
  assert sweep.main([spec_path, "--out", out, "--jobs", "1"]) == 0
  names = [r.name for r in load_spec(spec_path).runs]
  assert len(names) == 2
  for name in names:
    run_dir = os.path.join(out, "runs", name)
    status = json.load(open(os.path.join(run_dir, "status.json")))
    assert status["state"] == "done" and status["final_env_steps"] == 300
    assert isinstance(status["final_return_mean"], float)
    assert len(_metrics(os.path.join(run_dir, "metrics.csv"))) == 2 * 3
    assert os.path.exists(os.path.join(run_dir, "config.json"))
  assert "[2/2]" in capsys.readouterr().out
  before = _files(os.path.join(out, "runs"))
  assert sweep.main([spec_path, "--out", out, "--jobs", "1"]) == 0
  assert "2 done already, 0 to run" in capsys.readouterr().out
  assert _files(os.path.join(out, "runs")) == before
  # A run dir without status but with a checkpoint (a killed job) is resumed, not redone.
  run_dir = os.path.join(out, "runs", names[0])
  os.remove(os.path.join(run_dir, "status.json"))
  assert sweep.main([spec_path, "--out", out, "--jobs", "1", "--quiet"]) == 0
  status = json.load(open(os.path.join(run_dir, "status.json")))
  assert status["state"] == "done" and status["resumed"] is True
  metrics = os.path.join(run_dir, "metrics.csv")
  assert _metrics(metrics) == _metrics(before[metrics][1].decode().splitlines())


def test_every_example_spec_parses_and_resolves():
  """The ready specs of examples/ (bar the deliberately broken one) stay valid."""
  import glob
  from mvelab import config as config_lib
  here = os.path.dirname(os.path.abspath(__file__))
  paths = sorted(glob.glob(os.path.join(here, "..", "examples", "**", "*.yaml"),
                           recursive=True))
  paths = [p for p in paths if not p.endswith("broken_sweep.yaml")]
  assert len(paths) >= 6
  for path in paths:
    for run in load_spec(path).runs:
      config_lib.resolve(run.config)
