"""The Ray and Slurm (submitit local) executors: retries, failures, a real tiny sweep."""

import json
import os
import signal
import sys
import time

import pytest
from _procs import gone, pid_from

from mvelab.errors import ConfigError
from mvelab.experiments import sweep
from mvelab.experiments.executor import Job, JobResult
from mvelab.experiments.spec import dump_spec

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = {"name": "tiny", "envs": "pendulum", "seeds": 2, "steps": 300,
        "overrides": {"hidden_sizes": [16, 16], "batch_size": 32, "warmup_steps": 100,
                      "eval_every": 100, "eval_episodes": 2, "replay_capacity": 2000},
        "runs": [{"expansions": "none"}, {"expansions": "none", "overrides": {"seed": 10}}]}


def _attempt(job) -> int:
  """Counts the calls of ``job`` (in a file: each call may run in another process)."""
  path = os.path.join(job.run_dir + ".calls")
  n = int(open(path).read()) + 1 if os.path.exists(path) else 1
  with open(path, "w") as f:
    f.write(str(n))
  return n


def fake_job(job: Job) -> JobResult:
  """ok; flaky: its process dies on the first call; dies: always; boom: raises; hang:
  writes its pid and sleeps."""
  n = _attempt(job)
  if job.name == "hang":
    with open(job.run_dir + ".pid", "w") as f:
      f.write(str(os.getpid()))
    for _ in range(3000):  # back in Python every 0.1 s, as training is after each chunk
      time.sleep(0.1)
  if job.name == "dies" or (job.name == "flaky" and n == 1):
    os._exit(1)
  if job.name == "boom":
    raise RuntimeError("boom")
  return JobResult(job.name, True, None, 0.0, float(n), 0.0)


def _check_fake_results(executor, tmp_path):
  jobs = [Job(n, {}, str(tmp_path / n)) for n in ("ok", "flaky", "dies", "boom")]
  by_name = {r.name: r for r in executor.map(fake_job, jobs)}
  assert sorted(by_name) == ["boom", "dies", "flaky", "ok"]
  assert by_name["ok"].ok and by_name["ok"].final_return_mean == 1.0
  assert by_name["flaky"].ok and by_name["flaky"].final_return_mean == 2.0  # retried once
  assert not by_name["dies"].ok and by_name["dies"].error.startswith("WorkerDied")
  assert open(str(tmp_path / "dies.calls")).read() == "2"  # first try + one retry
  assert by_name["boom"].error == "RuntimeError: boom"
  assert open(str(tmp_path / "boom.calls")).read() == "1"  # an error is not retried


def _check_close_cancels(executor, tmp_path):
  """Closing the iterator (as a stopped sweep does) ends the job still running."""
  jobs = [Job(n, {}, str(tmp_path / n)) for n in ("hang", "ok")]
  it = executor.map(fake_job, jobs)
  assert next(it).name == "ok"
  pid = pid_from(str(tmp_path / "hang.pid"))
  it.close()
  assert gone(pid)


def _real_sweep_twice(tmp_path, capsys, *options):
  spec = str(tmp_path / "tiny.yaml")
  dump_spec(TINY, spec)
  out = str(tmp_path / "sweep")
  assert sweep.main([spec, "--out", out, "--quiet", *options]) == 0
  for name in os.listdir(os.path.join(out, "runs")):
    status = json.load(open(os.path.join(out, "runs", name, "status.json")))
    assert status["state"] == "done" and status["final_env_steps"] == 300
  capsys.readouterr()
  assert sweep.main([spec, "--out", out, *options]) == 0
  assert "2 done already, 0 to run" in capsys.readouterr().out


def _worker_pythonpath() -> str:
  """PYTHONPATH under which workers import this module (and mvelab, as we do)."""
  return os.pathsep.join([HERE] + [p for p in sys.path if p.endswith("src")]
                         + [os.environ.get("PYTHONPATH", "")])


@pytest.fixture
def importable_tests(monkeypatch):
  monkeypatch.setenv("PYTHONPATH", _worker_pythonpath())


# ------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
  ray = pytest.importorskip("ray")
  old = os.environ.get("PYTHONPATH")
  os.environ["PYTHONPATH"] = _worker_pythonpath()
  ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
           configure_logging=False)
  yield ray
  ray.shutdown()
  if old is None:
    os.environ.pop("PYTHONPATH")
  else:
    os.environ["PYTHONPATH"] = old


def test_ray_retries_a_dead_worker_then_records_it(ray_cluster, tmp_path):
  from mvelab.experiments.ray_executor import RayExecutor
  _check_fake_results(RayExecutor(retries=1, platform="cpu"), tmp_path)


def test_ray_cancels_outstanding_tasks_when_closed(ray_cluster, tmp_path):
  from mvelab.experiments.ray_executor import RayExecutor
  _check_close_cancels(RayExecutor(platform="cpu"), tmp_path)


def test_ray_real_sweep_then_rerun_skips(ray_cluster, tmp_path, capsys):
  _real_sweep_twice(tmp_path, capsys, "--executor", "ray", "--platform", "cpu")


# --------------------------------------------------------------------- Slurm (local)
def test_slurm_local_retries_a_dead_job_then_records_it(importable_tests, tmp_path):
  pytest.importorskip("submitit")
  from mvelab.experiments.slurm_executor import SlurmExecutor
  _check_fake_results(SlurmExecutor(str(tmp_path / "slurm"), retries=1, local=True),
                      tmp_path)


def test_slurm_local_cancels_running_jobs_when_closed(importable_tests, tmp_path):
  pytest.importorskip("submitit")
  from mvelab.experiments.slurm_executor import SlurmExecutor
  _check_close_cancels(SlurmExecutor(str(tmp_path / "slurm"), local=True), tmp_path)


def test_slurm_local_cancels_even_when_started_with_sigint_ignored(importable_tests, tmp_path):
  """A sweep started as ``cmd &`` from a script (or under nohup) ignores SIGINT, and its
  children would too: submitit's local cancel (SIGINT to the job's controller) must still
  end the job."""
  pytest.importorskip("submitit")
  from mvelab.experiments.slurm_executor import SlurmExecutor
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    _check_close_cancels(SlurmExecutor(str(tmp_path / "slurm"), local=True), tmp_path)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # still ignored here
  finally:
    signal.signal(signal.SIGINT, previous)


def test_slurm_local_real_sweep_then_rerun_skips(importable_tests, tmp_path, capsys):
  pytest.importorskip("submitit")
  _real_sweep_twice(tmp_path, capsys, "--executor", "slurm", "--slurm-local",
                    "--slurm-time", "00:20:00")


# ---------------------------------------------------------------- refused up front
@pytest.mark.parametrize("options, message", [
    (["--executor", "ray", "--ray-address", "no port"], "ray-address: 'no port' is not a"),
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"],
     "ray-address: nothing answers at '127.0.0.1:1'"),
    (["--executor", "ray", "--retries", "-1"], "retries: must be a non-negative integer"),
    (["--executor", "slurm", "--slurm-time", "soon"], "slurm-time: 'soon' is not a Slurm"),
    (["--executor", "slurm", "--slurm-mem", "lots"], "slurm-mem: 'lots' is not a Slurm"),
    (["--executor", "slurm", "--slurm-gpus", "-1"], "slurm-gpus: must be an integer >= 0"),
    (["--executor", "slurm"], "executor: slurm needs sbatch and srun on PATH"),
])
def test_bad_executor_options_exit_2_before_anything_is_written(tmp_path, capsys, options,
                                                                message, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
  spec = str(tmp_path / "tiny.yaml")
  dump_spec(TINY, spec)
  out = tmp_path / "sweep"
  assert sweep.main([spec, "--out", str(out), *options]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"mvelab: error: {message}") and err.count("\n") == 1
  assert not out.exists()


def test_missing_extra_is_one_line(monkeypatch):
  from mvelab.experiments import ray_executor, slurm_executor
  monkeypatch.setitem(sys.modules, "ray", None)
  monkeypatch.setitem(sys.modules, "submitit", None)
  with pytest.raises(ConfigError, match=r"^executor: ray is not installed; pip install "
                                        r"'mvelab\[ray\]'$"):
    ray_executor.import_ray()
  with pytest.raises(ConfigError, match=r"\[slurm\]"):
    slurm_executor.import_submitit()


def test_paper_matrix_is_the_papers_305_configurations():
  from mvelab.experiments.spec import load_spec
  spec = load_spec(os.path.join(HERE, "..", "examples", "paper_matrix.yaml"))
  envs = [r.config.env for r in spec.runs]
  assert len(spec.runs) == 305 and {envs.count(e) for e in set(envs)} == {61}
  assert {(r.config.seed, r.config.num_seeds, r.config.preset) for r in spec.runs} == {
      (1, 9, "paper")}


def test_slurm_requeue_hook_resubmits_the_same_run():
  """On preemption or timeout submitit calls ``checkpoint``: the same call is requeued,
  and ``run_job`` then resumes the run directory from its newest checkpoint."""
  pytest.importorskip("submitit")
  from submitit.helpers import DelayedSubmission
  from mvelab.experiments.slurm_executor import Resumable, time_minutes
  job, env = Job("a", {}, "/shared/a"), {"JAX_ENABLE_COMPILATION_CACHE": "false"}
  again = Resumable().checkpoint(sweep.run_job, job, env)
  assert isinstance(again, DelayedSubmission) and isinstance(again.function, Resumable)
  assert again.args == (sweep.run_job, job, env)
  assert [time_minutes(t) for t in ("90", "30:00", "1:30:00", "2-00:00:00", "00:00:30",
                                    "1-2:30")] == [90, 30, 90, 2880, 1, 1590]


def test_slurm_sweep_is_one_job_array_with_the_options(tmp_path, monkeypatch):
  """With stand-ins for sbatch and srun: the script submitit hands to sbatch."""
  pytest.importorskip("submitit")
  from mvelab.experiments.slurm_executor import Resumable, SlurmExecutor
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("sbatch", "srun"):
    (bin_dir / tool).write_text(f'#!/bin/sh\ncp "$(eval echo \\${{$#}})" {tmp_path}/script\n'
                                'echo "Submitted batch job 42"\n')
    (bin_dir / tool).chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  ex = SlurmExecutor(str(tmp_path / "slurm"), partition="gpu", time="72:00:00", gpus=1,
                     cpus=2, mem="16G", parallel=2)
  jobs = [Job(str(i), {}, str(tmp_path / str(i))) for i in range(3)]
  handles = ex._executor().map_array(Resumable(), [sweep.run_job] * 3, jobs, [ex.env] * 3)
  assert [h.job_id for h in handles] == ["42_0", "42_1", "42_2"]
  script = (tmp_path / "script").read_text()
  for line in ("--array=0-2%2", "--partition=gpu", "--time=4320", "--gpus-per-node=1",
               "--cpus-per-task=2", "--mem=16G", "--signal=USR2@"):
    assert f"#SBATCH {line}" in script


def test_reproduce_takes_the_executor_options(tmp_path, capsys, monkeypatch):
  from mvelab.experiments import reproduce
  monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
  out = tmp_path / "fig"
  assert reproduce.main(["figure1", "--out", str(out), "--executor", "slurm"]) == 2
  assert "executor: slurm needs sbatch and srun on PATH" in capsys.readouterr().err
  assert reproduce.main(["figure1", "--out", str(out), "--executor", "ray",
                         "--ray-address", "x"]) == 2
  assert "ray-address: 'x' is not a Ray address" in capsys.readouterr().err
  assert not out.exists()
