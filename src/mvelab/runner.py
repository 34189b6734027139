"""``train``: the Python API behind ``mvelab train``, composed of the rooms in ``mvelab.run``.

Seeds are vmapped inside one compiled program per worker process; with ``workers > 1``
the seeds are split over processes pinned to separate cores. Seed ``s`` always uses the
key ``PRNGKey(s)``, so its random streams do not depend on how seeds are grouped. The
run directory is :mod:`mvelab.run.rundir`, the loop over chunks
:mod:`mvelab.run.hostloop`, the worker processes :mod:`mvelab.run.workers`, the display
:mod:`mvelab.run.progress` and the stop on SIGINT/SIGTERM :mod:`mvelab.run.signals`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Optional

from mvelab import config as config_lib
from mvelab.config import Config
from mvelab.errors import ConfigError
from mvelab.run import signals
from mvelab.run.hostloop import GroupRun, compile_chunk, run_seeds  # noqa: F401
from mvelab.run.progress import Progress, TensorBoard, print_summary
from mvelab.run.rundir import (CSV_COLUMNS, RESUME_FREE_FIELDS, STATE_DIR,  # noqa: F401
                               TIMING_COLUMNS, MetricsLog, MetricsWriter, metric_columns,
                               complete_evaluations, config_differences, group_state_dir,
                               has_checkpoint, load_run, prepare_run_dir, read_metrics,
                               summarize, versions, write_config, write_summary)
from mvelab.run.workers import default_workers, run_workers, split_seeds  # noqa: F401


@dataclasses.dataclass
class RunResult:
  """What ``train`` returns.

  Attributes:
    config: the resolved config.
    seeds: the seeds trained.
    rows: one dict per seed per evaluation (the rows of metrics.csv, in (env_steps,
      seed) order).
    params: per-seed final parameters ``{seed: {"actor": ..., "critic": ...}}`` (numpy).
    compile_time_s: seconds spent compiling (per worker, summed).
    train_time_s: wall-clock seconds of the run after compilation (max over workers).
    interrupted: True if the run was stopped by Ctrl-C or SIGTERM.
  """

  config: Config
  seeds: list
  rows: list
  params: dict
  compile_time_s: float
  train_time_s: float
  interrupted: bool = False

  def dataframe(self):
    import pandas as pd
    return pd.DataFrame(self.rows, columns=list(metric_columns(self.config)))

  def final_returns(self) -> dict:
    last = {}
    for r in self.rows:
      last[r["seed"]] = r["eval_return"]
    return last


class DivergenceError(RuntimeError):
  """Raised with ``stop_on_divergence`` when a seed diverges."""


def train(config: Optional[Config] = None, seeds: Optional[list] = None,
          out_dir: Optional[str] = None, overwrite: bool = False,
          workers: Optional[int] = 1, progress: bool = True, tensorboard: bool = False,
          resume: Optional[str] = None, checkpoint_every: int = 10, keep_checkpoints: int = 3,
          stop_on_divergence: bool = False, diagnose_every: int = 0,
          diagnose_settings=None) -> RunResult:
  """Trains SAC for several seeds and returns per-seed metrics and parameters.

  Args:
    config: a ``Config`` (None fields are resolved from its preset). With ``resume`` it
      may be None (the run directory's config is used) or must agree with it in every
      field that changes results (only ``total_steps`` may grow).
    seeds: explicit seeds; default ``[config.seed + k for k in range(config.num_seeds)]``.
    out_dir: run directory to write (config.json, metrics.csv, summary.json,
      state/ checkpoints); None keeps everything in memory.
    overwrite: replace a non-empty ``out_dir``.
    workers: processes to spread the seeds over (None: one per core, at most one per
      seed). With 1 the run happens in this process.
    progress: print a line per evaluation.
    tensorboard: also write TensorBoard event files under ``out_dir/tb/seed_<s>``.
    resume: a run directory to continue from its latest complete checkpoint; metrics.csv
      is cut back to that checkpoint and appended to, so the finished file equals an
      uninterrupted run's (apart from ``wall_time_s``).
    checkpoint_every: save the complete training state every this many evaluations
      (and at the end); 0 disables checkpoints. Needs ``out_dir``.
    keep_checkpoints: how many checkpoints to keep per seed group.
    stop_on_divergence: stop the whole run as soon as one seed diverges (default: mark
      that seed diverged, write its later metrics as missing, and carry on).
    diagnose_every: run the value-target diagnostics (``mvelab.diagnostics``) on the live
      state every this many evaluations and append them to ``out_dir/diagnostics.csv``
      (0: never). Needs ``out_dir``.
    diagnose_settings: a ``diagnostics.Settings`` (default: the ``mvelab diagnose``
      defaults).

  SIGINT and SIGTERM stop the run (and its worker processes) after the checkpoint being
  written, if any; ``KeyboardInterrupt`` (``signals.Interrupted`` naming the signal) is
  raised after summary.json is written.

  Example:
    >>> from mvelab import Config, train
    >>> result = train(Config(env="pendulum", num_seeds=2, total_steps=3000))
    >>> result.final_returns()
  """
  stored = load_run(resume) if resume is not None else None
  out_dir = resume if resume is not None else out_dir
  cfg, seeds = _resolve(config, seeds, stored)
  _check_checkpoint_options(checkpoint_every, keep_checkpoints)
  diagnose = _diagnose_options(diagnose_every, diagnose_settings, out_dir)
  groups = _groups(seeds, stored, workers)
  run = _Run(cfg, seeds, out_dir, progress)
  run.open(groups, overwrite, stored is not None, tensorboard)
  run_kwargs = dict(run_dir=out_dir, checkpoint_every=checkpoint_every if out_dir else 0,
                    keep=keep_checkpoints, resume=stored is not None,
                    resume_max_chunks=run.resume_max_chunks,
                    stop_on_divergence=stop_on_divergence, diagnose=diagnose)
  stopped = run.execute(groups, run_kwargs)
  result = run.finish(stopped is not None)
  if stopped is not None:
    raise stopped
  if run.diverged:
    r = run.diverged[0]
    raise DivergenceError(
        f"seed {r['seed']} diverged ({r['diverged_what']} non-finite at env step "
        f"{r['diverged_step']}); stopped the run (stop_on_divergence)")
  return result


def _resolve(config, seeds, stored) -> tuple:
  """The resolved config and the seeds, checked (and against the stored run's)."""
  if config is None and stored:
    config = stored["config"]
  if config is None:
    raise ConfigError("config: a Config is required unless resuming a run")
  cfg = config_lib.resolve(config)
  if seeds is None:
    seeds = stored["seeds"] if stored else [cfg.seed + k for k in range(cfg.num_seeds)]
  seeds = [int(s) for s in seeds]
  if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
    raise ConfigError(f"seeds: must be distinct non-negative integers, got {seeds}")
  cfg = dataclasses.replace(cfg, num_seeds=len(seeds), seed=seeds[0])
  if stored:
    diffs = config_differences(stored["config"], cfg)
    if seeds != stored["seeds"]:
      diffs.append(f"seeds: {stored['seeds']} -> {seeds}")
    if diffs:
      raise ConfigError("resume: the config differs from the run's in fields that change "
                        "results: " + "; ".join(diffs))
  return cfg, seeds


def _diagnose_options(every, settings, out_dir) -> Optional[tuple]:
  """``(every, settings)`` of ``--diagnose_every`` (None when off); validated up front."""
  if isinstance(every, bool) or not isinstance(every, int) or every < 0:
    raise ConfigError(f"diagnose_every: must be a non-negative integer, got {every!r}")
  if not every:
    return None
  if not out_dir:
    raise ConfigError("diagnose_every: needs a run directory (out_dir) to write "
                      "diagnostics.csv")
  from mvelab.diagnostics.settings import Settings
  return every, settings or Settings()


def _check_checkpoint_options(checkpoint_every, keep_checkpoints) -> None:
  if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
    raise ConfigError(f"checkpoint_every: must be a non-negative integer, got {checkpoint_every!r}")
  if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints <= 0:
    raise ConfigError(f"keep_checkpoints: must be a positive integer, got {keep_checkpoints!r}")


def _groups(seeds, stored, workers) -> list:
  """The seed groups: the stored run's, or ``seeds`` split over ``workers``."""
  if stored:
    return [list(g) for g in stored["groups"]]
  if workers is None:
    workers = default_workers(len(seeds))
  if isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
    raise ConfigError(f"workers: must be a positive integer, got {workers!r}")
  return split_seeds(seeds, workers)


class _Run:
  """The parent's side of one ``train`` call: its files, its rows, what groups report."""

  def __init__(self, cfg, seeds, out_dir, progress):
    self.cfg, self.seeds, self.out_dir = cfg, seeds, out_dir
    self.show = Progress(cfg, len(seeds), enabled=progress)
    self.writer = self.tb = None
    self.log = MetricsLog(seeds, [], self._released)
    self.resume_max_chunks = None
    self.params, self.compile_times, self.diverged = {}, [], []
    self.t0 = time.perf_counter()

  def open(self, groups, overwrite, resuming, tensorboard) -> None:
    """Prepares the run directory (nothing to do without one) and, on resume, keeps the
    whole evaluations of metrics.csv: checkpoints beyond them are not used."""
    if self.out_dir is None:
      return
    if not resuming:
      prepare_run_dir(self.out_dir, overwrite)
    elif not os.access(self.out_dir, os.W_OK):
      raise ConfigError(f"resume: run directory {self.out_dir!r} is not writable")
    write_config(self.out_dir, self.cfg, self.seeds, groups)
    path = os.path.join(self.out_dir, "metrics.csv")
    kept = (complete_evaluations(read_metrics(path), self.seeds)
            if resuming and os.path.exists(path) else [])
    self.writer = MetricsWriter(path, metric_columns(self.cfg))
    if resuming:
      self.log = MetricsLog(self.seeds, kept, self._released)
      self.writer.replace(kept)
      self.resume_max_chunks = len(kept) // len(self.seeds) - 1
    if tensorboard:
      self.tb = TensorBoard(os.path.join(self.out_dir, "tb"))

  def execute(self, groups, run_kwargs) -> Optional[KeyboardInterrupt]:
    """Trains every group; returns the interrupt that stopped it, if one did."""
    try:
      with signals.handled():
        if len(groups) == 1:
          run_seeds(self.cfg, groups[0], lambda k, p: self.handle(k, groups[0], p),
                    **run_kwargs)
        else:
          run_workers(self.cfg, groups, self.handle, run_kwargs)
    except KeyboardInterrupt as e:
      self.show.interrupted()
      return e
    finally:
      if self.tb:
        self.tb.close()
    return None

  def handle(self, kind, group, payload) -> None:
    if kind == "compiled":
      self.compile_times.append(payload)
      self.show.compiled(payload)
    elif kind == "resumed":  # later rows of this group are recomputed exactly
      reached = payload or {}
      self.writer.replace(self.log.rewind(group, max(reached.values(), default=None)))
      self.show.resumed(group, reached)
    elif kind == "rows":
      self.log.add(payload)
    elif kind == "params":
      self.params.update(payload)
    elif kind == "diverged":  # stop_on_divergence: the run ends with what it has
      self.diverged.extend(payload)
      self.log.release_all()

  def _released(self, rows) -> None:
    """One whole evaluation: to metrics.csv, TensorBoard and the display."""
    if self.writer:
      with signals.deferred():  # a signal does not cut an evaluation's rows in half
        self.writer.append(rows)
    if self.tb:
      self.tb.write(rows)
    self.show.evaluation(rows)

  def finish(self, interrupted: bool) -> RunResult:
    total = time.perf_counter() - self.t0
    result = RunResult(self.cfg, self.seeds, self.log.written, self.params,
                       float(sum(self.compile_times)),
                       max(0.0, total - max(self.compile_times, default=0.0)), interrupted)
    if self.out_dir is not None:
      write_summary(self.out_dir, result)
    if self.show.enabled:
      print_summary(result)
    return result
