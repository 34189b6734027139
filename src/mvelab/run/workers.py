"""Seed groups spread over worker processes, and stopped with the run.

Each group trains in a fresh ("spawn": JAX is not fork-safe) process pinned to its own
core, and reports through a queue what ``run_seeds`` emits. Whatever ends the parent's
loop (the run finishing, a failure, a signal) terminates the workers still alive; a
worker finishes the checkpoint it is writing first (:mod:`mvelab.run.signals`), and one
that does not exit within ``STOP_GRACE_S`` is killed. Workers also die with the parent
if it is killed outright (Linux).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as queue_lib
import time

from mvelab.config import Config
from mvelab.run import signals
from mvelab.run.hostloop import run_seeds

#: Seconds a worker gets to finish its checkpoint after SIGTERM before it is killed.
STOP_GRACE_S = 30.0


def split_seeds(seeds: list, workers: int) -> list:
  """Contiguous, balanced groups of seeds, one per worker."""
  workers = max(1, min(workers, len(seeds)))
  groups, start = [], 0
  for w in range(workers):
    n = len(seeds) // workers + (w < len(seeds) % workers)
    groups.append(seeds[start:start + n])
    start += n
  return groups


def default_workers(num_seeds: int) -> int:
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, min(cores or 1, num_seeds))


def _worker(cfg_dict, seeds, core, queue, kwargs):
  signals.die_with_parent()
  try:
    if core is not None and hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {core})
    with signals.handled():
      run_seeds(Config.from_dict(cfg_dict), seeds,
                lambda kind, payload: queue.put((kind, seeds, payload)), **kwargs)
    queue.put(("done", seeds, None))
  except KeyboardInterrupt as e:
    queue.put(("interrupted", seeds, signals.exit_code(e) - 128))
  except BaseException as e:  # report, never hang the parent
    import traceback
    queue.put(("error", seeds, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_workers(cfg: Config, groups: list, handle, run_kwargs: dict) -> None:
  """Trains each seed group in its own process; ``handle(kind, group, payload)`` gets
  what the groups emit. Raises ``Interrupted`` if a worker was stopped by a signal."""
  procs, queue = _start(cfg, groups, run_kwargs)
  try:
    _collect(procs, queue, handle)
  finally:
    stop(procs)


def _start(cfg, groups, run_kwargs):
  ctx = mp.get_context("spawn")
  queue = ctx.Queue()
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  procs = []
  for i, g in enumerate(groups):
    core = cores[i % len(cores)] if len(cores) >= len(groups) else None
    proc = ctx.Process(target=_worker, args=(cfg.to_dict(), g, core, queue, run_kwargs),
                       daemon=True, name=f"mvelab-seeds-{i}")
    proc.start()
    procs.append(proc)
  return procs, queue


def _collect(procs, queue, handle):
  pending, error = len(procs), None
  while pending:
    try:
      kind, group, payload = queue.get(timeout=1.0)
    except queue_lib.Empty:
      if any(p.exitcode not in (None, 0) for p in procs) and queue.empty():
        raise RuntimeError("a worker process died without reporting")
      continue
    if kind == "done":
      pending -= 1
    elif kind == "error":
      pending -= 1
      error = error or payload
    elif kind == "interrupted":
      raise signals.Interrupted(payload)
    else:
      handle(kind, group, payload)
      if kind == "diverged":  # stop_on_divergence: end the other workers too
        return
  if error:
    raise RuntimeError(f"worker failed: {error}")


def stop(procs: list, grace_s: float = STOP_GRACE_S) -> None:
  """SIGTERM to every live process, then SIGKILL to any still alive after ``grace_s``."""
  for p in procs:
    if p.is_alive():
      p.terminate()
  deadline = time.monotonic() + grace_s
  for p in procs:
    p.join(max(0.0, deadline - time.monotonic()))
    if p.is_alive():
      p.kill()
      p.join()
