"""Diagnostics of whole runs: every selected checkpoint of every run below a directory,
or the live state of a run in training; tidy tables out.

* :func:`diagnose_dir` (``mvelab diagnose``): restores each selected checkpoint
  (:mod:`~mvelab.diagnostics.loading`), runs the compiled pass on all its seeds at once
  (:func:`~mvelab.diagnostics.compute.compiled`) and collects the rows
  (:mod:`~mvelab.diagnostics.report`).
* :func:`diagnose_live` (``mvelab train --diagnose_every K``): the same pass on the
  in-memory state of a seed group, rows appended to ``RUN/diagnostics.csv``.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Callable, Optional

import numpy as np

from mvelab.diagnostics import loading, report
from mvelab.diagnostics.settings import Settings

#: Files :func:`write_tables` writes.
TABLE_FILES = ("diagnostics.parquet", "diagnostics.csv")
#: The file :func:`diagnose_live` appends to, in the run directory.
LIVE_FILE = "diagnostics.csv"


def state_rows(p, states, seeds: list, settings: Settings, meta: dict) -> list:
  """Rows of one checkpoint: the compiled pass over ``states`` (leaves ``[S, ...]``)."""
  import jax
  from mvelab.diagnostics import compute
  key = jax.random.PRNGKey(settings.seed)
  arrays = jax.device_get(compute.compiled(p, settings)(states, key))
  rows = []
  for i, seed in enumerate(seeds):
    a = {k: np.asarray(v[i]) for k, v in arrays.items()}
    rows += report.seed_rows(a, settings, dict(
        meta, seed=int(seed), env_steps=int(a["env_steps"]), updates=int(a["updates"])))
  return rows


def run_name(run_dir: str, root: str) -> str:
  """The ``run`` column of a run's rows: its path relative to ``root`` (its own name when
  it is ``root``)."""
  rel = os.path.relpath(run_dir, root)
  return os.path.basename(os.path.normpath(run_dir)) if rel == "." else rel


def _meta(run_dir: str, root: str, cfg) -> dict:
  """The run columns of its rows: name, env, label and its own expansion, model and H."""
  from mvelab.experiments import results
  return dict(run=run_name(run_dir, root), env=cfg.env,
              label=results.run_label(cfg.to_dict()), run_expansion=cfg.expansion,
              run_model=cfg.model or "", run_horizon=cfg.horizon)


def diagnose_dir(root: str, settings: Settings, selection: tuple,
                 progress: Optional[Callable[[str], None]] = print, jobs: int = 1):
  """Diagnostics of every selected checkpoint below ``root``; a tidy DataFrame.

  With ``jobs`` > 1 the runs are diagnosed in that many worker processes at once (the
  sweep's :class:`~mvelab.experiments.executor.ProcessExecutor`: one fresh process per
  run, pinned to a core; Ctrl-C stops them all); the rows are the same and in the same
  order as with ``jobs = 1``.

  Raises:
    ConfigError: no checkpoints, or a checkpoint whose replay is too short for the
      horizons (named).
  """
  from mvelab.errors import ConfigError, check_positive
  check_positive("jobs", jobs)
  runs = [run for run in loading.find_runs(root) if loading.checkpoints(run, selection)]
  if not runs:
    raise ConfigError(f"dir: no checkpoints (state/seeds_*/checkpoints/ckpt_*) at or "
                      f"below {root!r}")
  if jobs == 1 or len(runs) == 1:
    total = sum(len(loading.checkpoints(run, selection)) for run in runs)
    said = _numbered(progress, total)
    rows = [row for run in runs for row in diagnose_run(run, root, settings, selection,
                                                        said)]
  else:
    rows = diagnose_in_workers(runs, root, settings, selection, progress, jobs)
  return frame(rows)


def diagnose_run(run_dir: str, root: str, settings: Settings, selection: tuple,
                 progress: Optional[Callable[[str], None]] = print) -> list:
  """The rows of every selected checkpoint of one run (named relative to ``root``)."""
  from mvelab.diagnostics import compute
  rows = []
  for ref in loading.checkpoints(run_dir, selection):
    t0 = time.perf_counter()
    p, states = loading.restore(ref)
    compute.check_state(p, settings, states, f"checkpoint {ref.path}")
    rows += state_rows(p, states, list(ref.seeds), settings,
                       _meta(ref.run_dir, root, loading.run_config(ref.run_dir)))
    if progress:
      progress(f"{ref.path}: seeds {list(ref.seeds)}, {time.perf_counter() - t0:.1f} s")
  return rows


def diagnose_in_workers(runs: list, root: str, settings: Settings, selection: tuple,
                        progress, jobs: int) -> list:
  """``diagnose_run`` of each run in a worker process; each writes its rows to a
  temporary parquet file, read back here in the order of ``runs``."""
  import functools
  import tempfile
  import pandas as pd
  from mvelab.errors import ConfigError
  from mvelab.experiments import executor
  with tempfile.TemporaryDirectory(prefix="mvelab-diagnose-") as parts:
    work = [executor.Job(name=os.path.relpath(run, root), config={},
                         run_dir=os.path.abspath(run)) for run in runs]
    fn = functools.partial(_diagnose_job, root=os.path.abspath(root), settings=settings,
                           selection=selection, parts=parts, verbose=progress is not None)
    said = _numbered(progress, len(work))
    for result in executor.ProcessExecutor(min(jobs, len(work))).map(fn, work):
      if not result.ok:
        kind, _, message = (result.error or "").partition(": ")
        if kind == "ConfigError":
          raise ConfigError(message)
        raise RuntimeError(f"diagnostics of run {result.name!r} failed: {result.error}")
      if said:
        said(f"run {result.name} done, {result.wall_s:.1f} s")
    frames = [pd.read_parquet(_part_path(parts, job.run_dir)) for job in work]
  return [row for f in frames for row in f.to_dict("records")]


def _numbered(progress: Optional[Callable[[str], None]], total: int):
  """``progress`` with each message prefixed ``[i/total]`` (None stays None)."""
  if progress is None:
    return None
  count = itertools.count(1)
  return lambda message: progress(f"[{next(count)}/{total}] {message}")


def _part_path(parts: str, run_dir: str) -> str:
  import hashlib
  return os.path.join(parts, hashlib.sha1(run_dir.encode()).hexdigest()[:16] + ".parquet")


def _diagnose_job(job, root: str, settings: Settings, selection: tuple, parts: str,
                  verbose: bool):
  """Worker body: one run's rows into its part file (temporary name, then rename)."""
  from mvelab.experiments import executor
  t0 = time.perf_counter()
  rows = diagnose_run(job.run_dir, root, settings, selection,
                      print if verbose else None)
  write_rows(rows, _part_path(parts, job.run_dir))
  return executor.JobResult(name=job.name, ok=True, error=None,
                           wall_s=time.perf_counter() - t0)


def frame(rows: list):
  """Rows as a DataFrame with :data:`report.COLUMNS` (and ``label``) first."""
  import pandas as pd
  df = pd.DataFrame(rows)
  first = [c for c in report.COLUMNS[:2] + ("label",) + report.COLUMNS[2:] if c in df]
  return df[first + [c for c in df.columns if c not in first]]


def write_rows(rows: list, path: str) -> None:
  """``rows`` as one parquet file at ``path`` (temporary name, then rename)."""
  from mvelab.experiments.results import _atomic
  _atomic(path, lambda p: frame(rows).to_parquet(p, engine="pyarrow", index=False))


def write_tables(df, out_dir: str) -> list:
  """Writes ``diagnostics.parquet`` and ``diagnostics.csv`` (temporary name, then rename)."""
  from mvelab.experiments.results import _atomic
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, name) for name in TABLE_FILES]
  _atomic(paths[0], lambda p: df.to_parquet(p, engine="pyarrow", index=False))
  _atomic(paths[1], lambda p: df.to_csv(p, index=False))
  return paths


def diagnose_live(p, states, seeds: list, settings: Settings, run_dir: str) -> list:
  """Runs the pass on a live seed group and appends its rows to ``run_dir/diagnostics.csv``.

  Skipped (returns []) while the replay is still too short for the horizons.
  """
  import csv
  if int(np.min(np.asarray(states.replay.size))) < settings.max_horizon + 1:
    return []
  rows = state_rows(p, states, seeds, settings, _meta(run_dir, run_dir, p.cfg))
  path = os.path.join(run_dir, LIVE_FILE)
  columns = list(frame(rows).columns)
  import fcntl  # seed groups in several worker processes append to the same file
  with open(path, "a", newline="") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    writer = csv.DictWriter(f, fieldnames=columns)
    if f.tell() == 0:
      writer.writeheader()
    writer.writerows(rows)
    f.flush()
    os.fsync(f.fileno())
  return rows
