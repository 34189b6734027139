"""``RayExecutor``: sweep jobs as Ray core tasks, on a local or a joined Ray cluster.

Each job is one task with ``num_cpus``/``num_gpus`` of its own, in a fresh worker process
(``max_calls=1``: a finished run releases its device memory), with JAX told not to
preallocate GPU memory and, optionally, which platform to use. Tasks write their run
directories themselves (atomically, as every run does), so the cluster needs a shared
filesystem at the sweep directory's path. A task whose worker dies (OOM kill, lost node)
is retried ``retries`` times by Ray, then reported as a failed ``JobResult``. Closing the
iterator (the sweep ending, Ctrl-C, SIGTERM) cancels the tasks still outstanding.
"""

from __future__ import annotations

import re
import socket
import time
from typing import Iterator, Optional, Sequence

from mvelab.errors import ConfigError
from mvelab.experiments.executor import (Job, JobFn, JobResult, call, failed, import_extra,
                                         remote_env)
from mvelab.run.workers import STOP_GRACE_S

CONNECT_TIMEOUT_S = 5.0
_ADDRESS = re.compile(r"^(auto|local|(ray://)?[A-Za-z0-9_.\-]+:\d{1,5})$")


def import_ray():
  return import_extra("ray", "ray")


def check_address(address: Optional[str]) -> None:
  """Refuses a malformed address, and a HOST:PORT where nothing answers (in seconds)."""
  if address is None or address in ("auto", "local"):
    return
  if not _ADDRESS.match(address):
    raise ConfigError(f"ray-address: {address!r} is not a Ray address; allowed: auto, "
                      "local, HOST:PORT or ray://HOST:PORT")
  host, port = address.removeprefix("ray://").rsplit(":", 1)
  try:
    socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
  except OSError as e:
    raise ConfigError(f"ray-address: nothing answers at {address!r} "
                      f"({e.strerror or type(e).__name__})") from None


def _task(fn: JobFn, job: Job) -> JobResult:
  return call(fn, job)


class RayExecutor:
  """Runs each job as a Ray task (see the module docstring).

  Args:
    address: the cluster to join (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None or
      ``local`` starts a local one with ``num_cpus`` CPUs (None: all).
    cpus_per_run, gpus_per_run: resources of each task.
    retries: times a task whose worker died is retried before it counts as failed.
    platform: ``JAX_PLATFORMS`` of the tasks (None: JAX's choice).
    num_cpus: CPUs of a local cluster.
  """

  def __init__(self, address: Optional[str] = None, cpus_per_run: float = 1,
               gpus_per_run: float = 0, retries: int = 1, platform: Optional[str] = None,
               num_cpus: Optional[int] = None):
    check_address(address)
    if cpus_per_run <= 0 or gpus_per_run < 0:
      raise ConfigError("cpus-per-run/gpus-per-run: must be > 0 and >= 0, got "
                        f"{cpus_per_run}/{gpus_per_run}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
      raise ConfigError(f"retries: must be a non-negative integer, got {retries!r}")
    self.ray = import_ray()
    self.address = None if address == "local" else address
    self.cpus, self.gpus, self.retries = cpus_per_run, gpus_per_run, retries
    self.platform, self.num_cpus = platform, num_cpus
    self.jobs = None  # runs at once: as many as the cluster's resources allow
    self._started = False

  def connect(self) -> None:
    """Joins (or starts) the cluster; a bad address is a ConfigError."""
    if self.ray.is_initialized():
      return
    kwargs = dict(address=self.address, include_dashboard=False, log_to_driver=False,
                  configure_logging=False)
    if self.address is None:
      kwargs["num_cpus"] = self.num_cpus
    try:
      self.ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
      raise ConfigError(f"ray-address: cannot join the Ray cluster at "
                        f"{self.address or 'a new local cluster'!r}: {e}") from None
    self._started = True

  def shutdown(self) -> None:
    if self._started:
      self.ray.shutdown()
      self._started = False

  def map(self, fn: JobFn, jobs: Sequence[Job]) -> Iterator[JobResult]:
    self.connect()
    ray = self.ray
    remote = ray.remote(max_calls=1)(_task).options(
        num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries,
        retry_exceptions=False, runtime_env={"env_vars": remote_env(self.platform)})
    t0 = time.perf_counter()
    pending = {remote.remote(fn, job): job for job in jobs}
    try:
      while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        yield self._result(ready[0], job, t0)
    finally:
      self._cancel(list(pending))

  def _cancel(self, refs: list) -> None:
    """KeyboardInterrupt in each task (a run stops after its chunk and checkpoint); the
    tasks not ended ``STOP_GRACE_S`` later have their workers killed."""
    ray = self.ray
    for ref in refs:
      ray.cancel(ref)
    if refs:
      _, alive = ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
      for ref in alive:
        ray.cancel(ref, force=True)

  def _result(self, ref, job: Job, t0: float) -> JobResult:
    try:
      return self.ray.get(ref)
    except self.ray.exceptions.RayError as e:
      what = type(e).__name__
      return failed(job, f"WorkerDied: {what} after {self.retries} retr"
                    f"{'y' if self.retries == 1 else 'ies'}: {str(e).splitlines()[0]}", t0)
