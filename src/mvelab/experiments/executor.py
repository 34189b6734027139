"""Where sweep jobs run: the ``Executor`` interface and two local backends.

An executor takes a picklable job function and a list of ``Job``s and yields one
``JobResult`` per job as jobs finish. The sweep logic (what to run, skipping, progress,
summaries) never looks inside an executor, so a cluster backend (Ray, Slurm, ...) only
has to implement ``map``; see docs/sweeps.md.

Contract for every executor:
  * ``fn(job)`` is called exactly once per job, in any process, and must be picklable
    (a module-level function) for executors that run it elsewhere.
  * An ``Exception`` raised by ``fn`` becomes a failed ``JobResult`` (``error`` is
    ``"<type>: <message>"``); a job whose process dies becomes a failed ``JobResult`` too.
    ``BaseException``s such as ``KeyboardInterrupt`` propagate, after the executor has
    stopped any jobs still running.
  * Results are yielded in completion order; closing the iterator early stops the jobs
    still running.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import time
from typing import Callable, Iterator, Optional, Protocol, Sequence, runtime_checkable

from mvelab.errors import ConfigError, check_positive
from mvelab.run import signals
from mvelab.run.workers import stop


@dataclasses.dataclass(frozen=True)
class Job:
  """One run to execute.

  Attributes:
    name: the run's name (unique in a sweep).
    config: the run's config as ``Config.to_dict()`` (plain, picklable).
    run_dir: the run directory the job writes.
  """

  name: str
  config: dict
  run_dir: str


@dataclasses.dataclass
class JobResult:
  """What a job reports back.

  Attributes:
    name: the job's name.
    ok: True if the run finished.
    error: ``"<exception type>: <message>"`` when not ``ok``.
    wall_s: wall-clock seconds the job took.
    final_return_mean: mean over seeds of the final evaluation return (if known).
    final_return_std: std over seeds of the final evaluation return (if known).
  """

  name: str
  ok: bool
  error: Optional[str]
  wall_s: float
  final_return_mean: Optional[float] = None
  final_return_std: Optional[float] = None


JobFn = Callable[[Job], JobResult]


@runtime_checkable
class Executor(Protocol):
  """Runs jobs somewhere and reports each result as it arrives."""

  def map(self, fn: JobFn, jobs: Sequence[Job]) -> Iterator[JobResult]:
    """Calls ``fn(job)`` for every job; yields the results in completion order."""
    ...


def failed(job: Job, error: str, t0: float) -> JobResult:
  """A failed result for ``job`` that started at ``time.perf_counter() == t0``."""
  return JobResult(job.name, False, error, time.perf_counter() - t0)


def call(fn: JobFn, job: Job) -> JobResult:
  """``fn(job)``, with an ``Exception`` turned into a failed result."""
  t0 = time.perf_counter()
  try:
    return fn(job)
  except Exception as e:  # noqa: BLE001 -- the contract: errors become results
    return failed(job, f"{type(e).__name__}: {e}", t0)


def import_extra(module: str, extra: str):
  """``module`` of the optional extra ``extra``, or a ConfigError naming how to install it."""
  import importlib
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ConfigError(f"executor: {module} is not installed; pip install "
                      f"'mvelab[{extra}]'") from None


def remote_env(platform: Optional[str] = None) -> dict:
  """Environment variables of a job run by a cluster executor: JAX does not preallocate
  GPU memory (several runs may share a device), uses this machine's compile cache
  setting and, if given, the platform ``platform`` (``cpu``, ``cuda``, ...)."""
  from mvelab import compile_cache
  env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",
         **compile_cache.job_env(compile_cache.location())}
  if platform:
    env["JAX_PLATFORMS"] = platform
  return env


class SerialExecutor:
  """Runs the jobs one after another in this process."""

  def map(self, fn: JobFn, jobs: Sequence[Job]) -> Iterator[JobResult]:
    for job in jobs:
      yield call(fn, job)


def usable_cores() -> list:
  """The CPU cores this process may run on (sorted), or [] if unknown."""
  if hasattr(os, "sched_getaffinity"):
    return sorted(os.sched_getaffinity(0))
  return []


def _child(fn: JobFn, job: Job, core: Optional[int], conn) -> None:
  """Entry point of a worker process: pin, run one job, send its result back.

  JAX in the worker does not preallocate GPU memory (the workers may share one device)
  unless the user's environment says otherwise; the backend reads this when it starts,
  at the job's first JAX call.
  """
  signals.die_with_parent()
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  if core is not None and hasattr(os, "sched_setaffinity"):
    try:
      os.sched_setaffinity(0, {core})
    except OSError:
      pass
  try:
    result = call(fn, job)
  except KeyboardInterrupt as e:  # the parent handles the stop; exit without a traceback
    sys.exit(signals.exit_code(e))
  conn.send(result)
  conn.close()


def _death(exitcode: Optional[int]) -> str:
  if exitcode is not None and exitcode < 0:
    try:
      name = signal.Signals(-exitcode).name
    except ValueError:
      name = f"signal {-exitcode}"
    return f"WorkerDied: the job's process was killed by {name}"
  return f"WorkerDied: the job's process exited with code {exitcode} without a result"


_EXIT_GRACE_S = 30.0


@dataclasses.dataclass
class _Running:
  job: Job
  slot: int
  proc: object
  reader: object
  t0: float
  result: Optional[JobResult] = None
  eof: bool = False


class ProcessExecutor:
  """Runs each job in a fresh process ("spawn": JAX is not fork-safe), N at a time.

  Worker slot ``k`` (0..N-1) is pinned to usable core ``k % ncores`` with
  ``os.sched_setaffinity`` where available, as ``runner.train`` pins its seed workers.
  On a GPU the workers share the device: none preallocates its memory (see ``_child``).
  A process that dies without a result (segfault, OOM kill, ``os._exit``) becomes a
  failed ``JobResult``. Ctrl-C (or closing the iterator) terminates the running jobs and
  the ``KeyboardInterrupt`` propagates.
  """

  def __init__(self, jobs: int = 1, pin: bool = True):
    check_positive("jobs", jobs)
    self.jobs = jobs
    self.pin = pin

  def map(self, fn: JobFn, jobs: Sequence[Job]) -> Iterator[JobResult]:
    ctx = mp.get_context("spawn")
    queue = list(jobs)[::-1]  # pop() from the end: spec order
    cores = usable_cores() if self.pin else []
    free = list(range(min(self.jobs, len(queue))))[::-1]
    running: list = []
    try:
      while queue or running:
        while queue and free:
          running.append(self._start(ctx, fn, queue.pop(), free.pop(), cores))
        for r in self._wait(running):
          running.remove(r)
          free.append(r.slot)
          yield r.result
    finally:
      stop([r.proc for r in running])  # a job writing a checkpoint finishes it
      for r in running:
        r.reader.close()

  @staticmethod
  def _start(ctx, fn, job, slot, cores) -> _Running:
    core = cores[slot % len(cores)] if cores else None
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, job, core, writer), name=f"mvelab-job-{slot}")
    t0 = time.perf_counter()
    proc.start()
    writer.close()  # the child holds the only write end: EOF when it exits
    return _Running(job, slot, proc, reader, t0)

  @staticmethod
  def _wait(running: list) -> list:
    """Blocks until at least one job ended; returns the ended ones with results set."""
    waitables = [r.proc.sentinel for r in running]
    waitables += [r.reader for r in running if not r.eof and r.result is None]
    ready = set(mp.connection.wait(waitables))
    ended = []
    for r in running:
      if r.reader in ready and r.result is None:
        try:
          r.result = r.reader.recv()
        except (EOFError, OSError):
          r.eof = True
        if r.result is not None:  # reported: give the process a moment to exit
          r.proc.join(_EXIT_GRACE_S)
          stop([r.proc])
          ready.add(r.proc.sentinel)
      if r.proc.sentinel in ready:
        r.proc.join()
        if r.result is None and not r.eof and r.reader.poll():
          try:
            r.result = r.reader.recv()
          except (EOFError, OSError):
            pass
        if r.result is None:
          r.result = failed(r.job, _death(r.proc.exitcode), r.t0)
        r.reader.close()
        ended.append(r)
    return ended
