"""``SlurmExecutor``: a sweep as one Slurm job array, through submitit.

Each job runs ``fn(job)`` in a :class:`Resumable` wrapper: when Slurm preempts it or its
time limit nears, submitit calls ``checkpoint``, which requeues the same call; the run
then continues from its run directory's newest checkpoint (``sweep.run_job`` resumes a
run directory that has one). A job that fails outside ``fn`` (node failure, OOM kill) is
resubmitted ``retries`` times, then reported as a failed ``JobResult``. Closing the
iterator cancels the jobs still queued or running. ``local=True`` uses submitit's local
executor (subprocesses on this machine) with the same code path, for tests.

submitit cancels a local job with SIGINT to its controller process. A process started
with SIGINT ignored (``cmd &`` in a script, ``nohup``) passes that to its children, and
the controller would then ignore the cancel and keep its job running: local jobs are
therefore started with SIGINT at its default (:func:`_children_take_sigint`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
import time
from typing import Iterator, Optional, Sequence

from mvelab.errors import ConfigError
from mvelab.experiments.executor import Job, JobFn, JobResult, call, failed, import_extra, remote_env

_TIME = re.compile(r"^(?:(\d+)-)?(\d+(?::\d+){0,2})$")
_MEM = re.compile(r"^\d+[KMGT]?$")


def import_submitit():
  return import_extra("submitit", "slurm")


def time_minutes(text: str) -> int:
  """Slurm's ``--time`` in whole minutes (rounded up): ``MM``, ``MM:SS``, ``HH:MM:SS``,
  ``D-HH``, ``D-HH:MM`` or ``D-HH:MM:SS``."""
  m = _TIME.match(str(text))
  if not m:
    raise ConfigError(f"slurm-time: {text!r} is not a Slurm time; allowed: MINUTES, "
                      "MM:SS, HH:MM:SS or D-HH:MM:SS")
  days, rest = m.groups()
  parts = [int(x) for x in rest.split(":")]
  if days is not None:  # D-HH[:MM[:SS]]
    h, mi, sec = (parts + [0, 0])[:3]
  elif len(parts) == 3:  # HH:MM:SS
    h, mi, sec = parts
  else:  # MM or MM:SS
    h, (mi, sec) = 0, (parts + [0])[:2]
  minutes = (int(days or 0) * 24 + h) * 60 + mi + (sec > 0)
  if minutes <= 0:
    raise ConfigError(f"slurm-time: must be positive, got {text!r}")
  return minutes


def _submitit_fn(fn: JobFn, job: Job, env: dict) -> JobResult:
  os.environ.update(env)
  from mvelab import compile_cache
  compile_cache.enable(env.get("JAX_COMPILATION_CACHE_DIR"),
                       on=env.get("JAX_ENABLE_COMPILATION_CACHE") == "true")
  return call(fn, job)


@contextlib.contextmanager
def _children_take_sigint(on: bool = True):
  """Processes started in this block get SIGINT at its default even if this one ignores
  it. An ignored signal stays ignored across ``exec``, a handled one is reset to the
  default, so a no-op handler stands in for ``SIG_IGN`` here (this process keeps
  ignoring SIGINT). Only the main thread may change handlers; elsewhere this does
  nothing."""
  if (not on or threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
    yield
    return
  signal.signal(signal.SIGINT, lambda signum, frame: None)
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Resumable:
  """``fn(job)`` that submitit requeues on preemption or timeout (``checkpoint``)."""

  def __call__(self, fn: JobFn, job: Job, env: dict) -> JobResult:
    return _submitit_fn(fn, job, env)

  def checkpoint(self, fn: JobFn, job: Job, env: dict):
    from submitit.helpers import DelayedSubmission
    return DelayedSubmission(Resumable(), fn, job, env)


class SlurmExecutor:
  """Runs the jobs as one Slurm job array (see the module docstring).

  Args:
    folder: where submitit keeps job scripts, pickles and logs.
    partition, time, gpus, cpus, mem: per-job Slurm resources (``time`` as for
      ``sbatch --time``).
    retries: resubmissions of a job that failed outside the run itself.
    parallel: array jobs at once (Slurm's ``%N``).
    platform: ``JAX_PLATFORMS`` of the jobs.
    local: use submitit's local executor instead of Slurm.
    poll_s: seconds between status checks.
  """

  def __init__(self, folder: str, partition: Optional[str] = None, time: str = "60",
               gpus: int = 0, cpus: int = 1, mem: Optional[str] = None, retries: int = 1,
               parallel: int = 256, platform: Optional[str] = None, local: bool = False,
               poll_s: Optional[float] = None):
    minutes = time_minutes(time)
    for name, value, low in (("slurm-gpus", gpus, 0), ("slurm-cpus", cpus, 1),
                             ("retries", retries, 0), ("slurm-parallel", parallel, 1)):
      if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}: must be an integer >= {low}, got {value!r}")
    if mem is not None and not _MEM.match(mem):
      raise ConfigError(f"slurm-mem: {mem!r} is not a Slurm memory size; allowed: e.g. "
                        "16G, 4000M")
    if partition is not None and not re.match(r"^[\w.\-,]+$", partition):
      raise ConfigError(f"slurm-partition: {partition!r} is not a partition name")
    self.submitit = import_submitit()
    missing = [] if local else [t for t in ("sbatch", "srun") if shutil.which(t) is None]
    if missing:
      raise ConfigError(f"executor: slurm needs {' and '.join(missing)} on PATH (not "
                        "found); run on the cluster's login node, or pass --slurm-local "
                        "to test locally")
    self.folder, self.local, self.retries = folder, local, retries
    self.env = remote_env(platform)
    self.params = dict(timeout_min=minutes, gpus_per_node=gpus, cpus_per_task=cpus,
                       slurm_partition=partition, slurm_mem=mem,
                       slurm_array_parallelism=parallel)
    self.poll_s = poll_s if poll_s is not None else (0.5 if local else 15.0)
    self.jobs = parallel

  def _executor(self):
    s = self.submitit
    if self.local:
      ex = s.LocalExecutor(folder=self.folder)
      ex.update_parameters(timeout_min=self.params["timeout_min"])
      return ex
    ex = s.AutoExecutor(folder=self.folder, cluster="slurm")
    ex.update_parameters(**{k: v for k, v in self.params.items() if v is not None})
    return ex

  def map(self, fn: JobFn, jobs: Sequence[Job]) -> Iterator[JobResult]:
    ex = self._executor()
    jobs = list(jobs)
    t0 = time.perf_counter()
    n = len(jobs)
    with _children_take_sigint(self.local):
      handles = ex.map_array(Resumable(), [fn] * n, jobs, [self.env] * n) if jobs else []
    pending = {h: (job, 0) for h, job in zip(handles, jobs)}
    try:
      while pending:
        done = [h for h in pending if h.done()]
        if not done:
          time.sleep(self.poll_s)
          continue
        for h in done:
          job, attempt = pending.pop(h)
          result, why = self._outcome(h)
          if result is None and attempt < self.retries:
            with _children_take_sigint(self.local):
              pending[ex.submit(Resumable(), fn, job, self.env)] = (job, attempt + 1)
            continue
          yield result or failed(job, f"WorkerDied: Slurm job {h.job_id} ended without a "
                                 f"result ({attempt + 1} attempt(s)): {why}", t0)
    finally:
      for h in pending:
        h.cancel(check=False)

  def _outcome(self, handle) -> tuple:
    """``(JobResult, None)``, or ``(None, why)`` when the job died without one."""
    if self.local:  # no shared filesystem to wait for
      handle._results_timeout_s = 1.0
    try:
      return handle.result(), None
    except Exception as e:  # noqa: BLE001 -- UncompletedJobError, FailedJobError, ...
      lines = [x for x in str(e).splitlines() if x.strip()]
      return None, lines[0] if lines else type(e).__name__
