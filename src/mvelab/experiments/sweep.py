"""Run every configuration of a sweep spec, each in its own run directory; resumable.

Layout of a sweep directory::

    <out>/spec.yaml              the spec as given (the sweep's identity)
    <out>/sweep.json             summary of the last invocation
    <out>/runs/<name>/           one run directory per run (config.json, metrics.csv,
                                 summary.json, state/ checkpoints, status.json)

``status.json`` is written atomically by the job itself when it ends: ``{"state":
"done", ...}`` or ``{"state": "failed", "error": ..., "traceback": ...}``. A later
invocation skips the done runs, resumes partial ones from their checkpoints and redoes
the rest, so re-running the same command after a crash or Ctrl-C finishes the sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from typing import Optional

from mvelab.config import Config
from mvelab.errors import ConfigError, check_positive
from mvelab.experiments import engines
from mvelab.experiments.executor import (Executor, Job, JobFn, JobResult, ProcessExecutor,
                                         SerialExecutor, usable_cores)
from mvelab.experiments.spec import Spec, dump_spec, load_spec, write_atomic
from mvelab.run import signals

SPEC_FILE = "spec.yaml"
SUMMARY_FILE = "sweep.json"
STATUS_FILE = "status.json"
RUNS_DIR = "runs"
#: Evaluations between checkpoints of a sweep run (and one at the end).
CHECKPOINT_EVERY = 5
#: Checkpoints kept per seed group (the newest, plus one in case it is damaged).
KEEP_CHECKPOINTS = 2


@dataclasses.dataclass
class SweepResult:
  """What ``run_sweep`` returns.

  Attributes:
    total: runs in the spec.
    skipped: runs already done before this invocation.
    succeeded: runs that finished in this invocation.
    failed: ``(name, error)`` of the runs that failed in this invocation.
    results: every ``JobResult`` of this invocation, in completion order.
  """

  total: int
  skipped: int
  succeeded: int
  failed: list
  results: list = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    return not self.failed


# ------------------------------------------------------------------------ status files
def read_status(run_dir: str) -> Optional[dict]:
  """The run's status.json as a dict, or None if it is missing or unreadable."""
  try:
    with open(os.path.join(run_dir, STATUS_FILE)) as f:
      status = json.load(f)
  except (OSError, ValueError):
    return None
  return status if isinstance(status, dict) else None


def write_status(run_dir: str, status: dict) -> None:
  """Writes the run's status.json atomically (creating the run directory if needed)."""
  os.makedirs(run_dir, exist_ok=True)
  write_atomic(os.path.join(run_dir, STATUS_FILE),
               json.dumps(status, indent=2, sort_keys=True) + "\n")


def is_done(run_dir: str) -> bool:
  status = read_status(run_dir)
  return bool(status) and status.get("state") == "done"


# ------------------------------------------------------------------------------- a job
def _train(job: Job):
  """Trains the job's config into its run directory; returns (RunResult, notes)."""
  from mvelab import runner
  from mvelab.checkpoint import CheckpointError
  cfg = Config.from_dict(job.config)
  kwargs = dict(workers=1, progress=False, stop_on_divergence=True,
                checkpoint_every=CHECKPOINT_EVERY, keep_checkpoints=KEEP_CHECKPOINTS)
  previous = read_status(job.run_dir)
  if previous is None and runner.has_checkpoint(job.run_dir):  # partial: crashed or killed
    try:
      return runner.train(cfg, resume=job.run_dir, **kwargs), {"resumed": True}
    except (ConfigError, CheckpointError) as e:  # cannot resume: start over
      notes = {"resumed": False, "restarted_because": f"{type(e).__name__}: {e}"}
  else:
    notes = {"resumed": False}
  return runner.train(cfg, out_dir=job.run_dir, overwrite=True, **kwargs), notes


def run_job(job: Job) -> JobResult:
  """Trains one sweep run and records its outcome in ``<run_dir>/status.json``.

  A run directory without status but with a checkpoint is resumed; anything else is
  started afresh (replacing the directory). Training uses one process, stops at the
  first diverged seed and checkpoints every ``CHECKPOINT_EVERY`` evaluations.

  Returns:
    A ``JobResult``; every ``Exception`` (``DivergenceError``, ``ConfigError``, ...)
    gives ``ok=False`` with ``"<type>: <message>"``. ``KeyboardInterrupt`` propagates.
  """
  from mvelab import runner
  t0 = time.perf_counter()
  try:
    result, notes = _train(job)
    summary = runner.summarize(result)
    wall = time.perf_counter() - t0
    mean, std = summary["final_return_mean"], summary["final_return_std"]
    write_status(job.run_dir, dict(
        notes, state="done", wall_s=round(wall, 2), final_return_mean=mean,
        final_return_std=std, final_env_steps=max(summary["final_env_steps"].values(),
                                                  default=None)))
    return JobResult(job.name, True, None, wall, mean, std)
  except Exception as e:  # noqa: BLE001 -- a failed run is a result, not a crash
    wall = time.perf_counter() - t0
    error = f"{type(e).__name__}: {e}"
    try:
      write_status(job.run_dir, {"state": "failed", "error": error, "wall_s": round(wall, 2),
                                 "traceback": traceback.format_exc()})
    except OSError as write_error:
      error += f" (and status.json could not be written: {write_error})"
    return JobResult(job.name, False, error, wall)


# ----------------------------------------------------------------------- sweep driver
def default_jobs(num_runs: int) -> int:
  """Usable cores, at most ``num_runs`` (and at least 1)."""
  cores = len(usable_cores()) or os.cpu_count() or 1
  return max(1, min(cores, num_runs))


def default_executor(jobs: Optional[int], num_runs: int) -> Executor:
  """``SerialExecutor`` for one job at a time, else ``ProcessExecutor(jobs)``."""
  n = default_jobs(num_runs) if jobs is None else max(1, min(jobs, num_runs))
  return SerialExecutor() if n == 1 else ProcessExecutor(n)


def _grid_diff(old: dict, new: dict) -> str:
  def some(names):
    names = sorted(names)
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
  parts = []
  for what, names in (("added", set(new) - set(old)), ("removed", set(old) - set(new)),
                      ("changed", {n for n in set(old) & set(new) if old[n] != new[n]})):
    if names:
      parts.append(f"{len(names)} run(s) {what}: {some(names)}")
  return "; ".join(parts)


def _prepare_out(spec: Spec, out_dir: str) -> None:
  """Creates ``out_dir`` and writes spec.yaml; refuses a directory of another sweep."""
  path = os.path.join(out_dir, SPEC_FILE)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ConfigError(f"out: {out_dir!r} exists and is not a directory")
  old_text = None
  if os.path.isfile(path):
    try:
      old = load_spec(path)
    except ConfigError as e:
      raise ConfigError(f"out: {out_dir!r} holds a {SPEC_FILE} that is no longer valid "
                        f"({e}); use a new --out") from None
    diff = _grid_diff(old.grid(), spec.grid())
    if diff:
      raise ConfigError(f"out: {out_dir!r} holds a sweep with a different grid ({diff}); "
                        f"use a new --out, or delete that directory to start over")
    old_text = old.text
  elif os.path.isdir(out_dir) and os.listdir(out_dir):
    raise ConfigError(f"out: {out_dir!r} is not empty and holds no {SPEC_FILE}; choose a "
                      f"new or empty directory for the sweep")
  try:
    os.makedirs(os.path.join(out_dir, RUNS_DIR), exist_ok=True)
  except OSError as e:
    raise ConfigError(f"out: cannot create {out_dir!r}: {e.strerror or e}") from None
  if spec.text is None:
    dump_spec(spec.source, path)
  elif spec.text != old_text:
    write_atomic(path, spec.text)


def _run_summaries(spec: Spec, out_dir: str) -> list:
  out = []
  for r in spec.runs:
    status = read_status(os.path.join(out_dir, RUNS_DIR, r.name)) or {}
    out.append({"name": r.name, "state": status.get("state", "pending"),
                "final_return_mean": status.get("final_return_mean"),
                "final_return_std": status.get("final_return_std"),
                "wall_s": status.get("wall_s"), "error": status.get("error")})
  return out


def _write_summary(spec: Spec, out_dir: str, result: SweepResult, interrupted: bool):
  summary = {
      "name": spec.name, "total": result.total, "skipped": result.skipped,
      "succeeded": result.succeeded, "interrupted": interrupted,
      "failed": [{"name": n, "error": e} for n, e in result.failed],
      "runs": _run_summaries(spec, out_dir)}
  write_atomic(os.path.join(out_dir, SUMMARY_FILE),
               json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _duration(seconds: float) -> str:
  if seconds != seconds:  # NaN
    return "?"
  s = int(round(seconds))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{s % 3600 // 60:02d}m"


class _Progress:
  """Prints one line per finished job with an ETA from this invocation's throughput."""

  def __init__(self, todo: int, enabled: bool):
    self.todo, self.enabled = todo, enabled
    self.done = 0
    self.t0 = time.perf_counter()

  def start(self, spec: Spec, out_dir: str, skipped: int, parallel: Optional[int]):
    if not self.enabled:
      return
    label = f"sweep {spec.name}" if spec.name else "sweep"
    at_once = f", {parallel} at a time" if parallel and self.todo else ""
    print(f"{label}: {len(spec.runs)} runs in {out_dir}: {skipped} done already, "
          f"{self.todo} to run{at_once}", flush=True)

  def result(self, r: JobResult) -> None:
    self.done += 1
    if not self.enabled:
      return
    elapsed = time.perf_counter() - self.t0
    eta = elapsed / self.done * (self.todo - self.done)
    if r.ok:
      final = ("n/a" if r.final_return_mean is None else
               f"{r.final_return_mean:.1f} ± {r.final_return_std or 0.0:.1f}")
      what = f"ok final {final}"
    else:
      what = f"FAILED: {(r.error or 'unknown error').splitlines()[0]}"
    print(f"[{self.done}/{self.todo}] {r.name}: {what} ({r.wall_s:.0f} s) | "
          f"ETA {_duration(eta)}", flush=True)


def run_sweep(spec: Spec, out_dir: str, jobs: Optional[int] = None,
              executor: Optional[Executor] = None, progress: bool = True,
              job_fn: JobFn = run_job) -> SweepResult:
  """Runs every run of ``spec`` not yet done under ``out_dir/runs/<name>/``.

  Args:
    spec: a parsed spec (``load_spec`` / ``parse_spec``).
    out_dir: the sweep directory; a new one, or one of an earlier invocation of the
      same grid (its done runs are skipped, partial ones resumed).
    jobs: runs at once when ``executor`` is None (default: usable cores, at most the
      number of runs to do); 1 runs them in this process.
    executor: where the jobs run (overrides ``jobs``).
    progress: print a line per finished run.
    job_fn: the picklable function that runs one ``Job`` (tests pass fakes).

  Raises:
    ConfigError: ``out_dir`` belongs to another sweep or cannot be created.
    KeyboardInterrupt: after the executor stopped the running jobs; finished runs and
      sweep.json (``"interrupted": true``) are on disk.
  """
  if jobs is not None:
    check_positive("jobs", jobs)
  _prepare_out(spec, out_dir)
  todo, skipped = [], 0
  for r in spec.runs:
    run_dir = os.path.join(out_dir, RUNS_DIR, r.name)
    if is_done(run_dir):
      skipped += 1
    else:
      todo.append(Job(r.name, r.config.to_dict(), run_dir))
  if executor is None:
    executor = default_executor(jobs, len(todo))
  show = _Progress(len(todo), progress)
  show.start(spec, out_dir, skipped, getattr(executor, "jobs",
                                             1 if isinstance(executor, SerialExecutor) else None))
  results = []
  interrupted = True
  it = executor.map(job_fn, todo) if todo else iter(())
  try:
    for r in it:
      results.append(r)
      show.result(r)
    interrupted = False
  finally:
    close = getattr(it, "close", None)
    if close is not None:
      close()
    result = SweepResult(len(spec.runs), skipped, sum(r.ok for r in results),
                         [(r.name, r.error) for r in results if not r.ok], results)
    _write_summary(spec, out_dir, result, interrupted)
  if progress:
    print(f"sweep finished: {result.succeeded} ok, {len(result.failed)} failed, "
          f"{skipped} already done; summary in {os.path.join(out_dir, SUMMARY_FILE)}",
          flush=True)
  return result


# ---------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="mvelab sweep",
      description="Run every configuration of a sweep spec (YAML; see docs/sweeps.md), "
      "each in <out>/runs/<name>/. Re-running the same command skips finished runs and "
      "resumes interrupted ones.")
  parser.add_argument("spec", metavar="SPEC", help="the sweep spec file (YAML)")
  parser.add_argument("--out", required=True, metavar="DIR",
                      help="sweep directory (new, or one of an earlier run of this spec)")
  parser.add_argument("--jobs", type=int, default=None, metavar="N",
                      help="runs at once, each in its own process pinned to a core "
                      "(default: usable cores, at most the number of runs; 1: in this "
                      "process)")
  parser.add_argument("--quiet", action="store_true",
                      help="print only failures, not a line per finished run")
  engines.add_options(parser)
  return parser


def main(argv=None) -> int:
  """``mvelab sweep SPEC --out DIR [--jobs N] [--quiet] [--executor local|ray|slurm ...]``.

  Returns:
    0 if every run is done, 1 if a run failed (listed at the end), 2 for bad input
    (one ``mvelab: error: ...`` line on stderr), 130 on Ctrl-C, 143 on SIGTERM.
  """
  try:
    args = _parser().parse_args(argv)
  except SystemExit as e:  # --help (0) or a usage error (2)
    return e.code if isinstance(e.code, int) else 2
  try:
    spec = load_spec(args.spec)
    print_preset_warnings(spec)
    executor = engines.make(args, args.out)
    with engines.running(executor), signals.handled():
      result = run_sweep(spec, args.out, jobs=args.jobs, executor=executor,
                         progress=not args.quiet, job_fn=run_job)
  except ConfigError as e:
    print(f"mvelab: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:
    print(f"\ninterrupted: finished runs are kept in {args.out}; re-run the same command "
          f"to resume the rest", file=sys.stderr)
    return signals.exit_code(e)
  return 1 if print_failures(result) else 0


def print_preset_warnings(spec: Spec) -> None:
  """One line per env of the spec that runs the paper preset but is not a paper task."""
  from mvelab.config import paper_preset_warning
  lines = {paper_preset_warning(r.config) for r in spec.runs} - {None}
  for line in sorted(lines):
    print(line, file=sys.stderr)


def print_failures(result: SweepResult) -> bool:
  """Prints the failed runs with their errors; returns True if any failed."""
  if not result.failed:
    return False
  print(f"{len(result.failed)} of {result.total} runs FAILED:")
  for name, error in result.failed:
    print(f"  {name}: {error}")
  return True


if __name__ == "__main__":
  sys.exit(main())
