"""What a run directory holds, and how it is written and read back.

Layout (``out_dir``)::

    config.json    the resolved config, the seeds, their grouping, library versions, CPU
    metrics.csv    one row per seed per evaluation, in (env_steps, seed) order
    summary.json   final returns, divergence, compile and training time
    state/seeds_<s1>_<s2>.../checkpoints/   checkpoints of one seed group
    tb/seed_<s>/   TensorBoard event files (optional)

Rows reach metrics.csv one whole evaluation at a time: :class:`MetricsLog` holds the rows
of an evaluation until every seed reported it, so the file does not depend on which
worker process finished first.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
from typing import Optional

import numpy as np

from mvelab.config import Config
from mvelab.errors import ConfigError
from mvelab.fileio import atomic_write

CSV_COLUMNS = ("seed", "env_steps", "updates", "eval_return", "eval_return_std",
               "critic_loss", "actor_loss", "alpha", "entropy", "q_mean", "target_mean",
               "model_loss", "model_obs_mse", "model_reward_mse", "model_use",
               "steve_mean_horizon", "dyna_rollout_length", "model_buffer_fill",
               "dyna_real_fraction", "diverged", "diverged_step", "diverged_what",
               "wall_time_s")
#: Vector metrics (``[n]`` per seed) and the prefix of their metrics.csv columns
#: ``<prefix>0 .. <prefix>{n-1}``: STEVE's mean weight per horizon i = 0..H.
VECTOR_METRICS = {"steve_weights": "steve_w"}


def metric_columns(cfg: Optional[Config] = None) -> tuple:
  """The metrics.csv columns of a run of ``cfg``: :data:`CSV_COLUMNS`, and for STEVE the
  per-horizon weights ``steve_w0 .. steve_wH`` before ``wall_time_s``."""
  if cfg is None or cfg.expansion != "steve":
    return CSV_COLUMNS
  weights = tuple(f"{VECTOR_METRICS['steve_weights']}{i}" for i in range(cfg.horizon + 1))
  return CSV_COLUMNS[:-1] + weights + CSV_COLUMNS[-1:]


#: Subdirectory of a run directory with the checkpoints (one folder per seed group).
STATE_DIR = "state"
#: Columns that legitimately differ between two runs of the same config and seeds.
TIMING_COLUMNS = ("wall_time_s",)
#: Config fields a resumed run may change: they do not alter any result already computed.
RESUME_FREE_FIELDS = ("total_steps",)


# ----------------------------------------------------------------------------- layout
def versions() -> dict:
  """Package and library versions recorded in every run directory."""
  import importlib.metadata as md
  out = {"python": platform.python_version(), "platform": platform.platform(),
         "cpu": cpu_description()}
  for name in ("mvelab", "jax", "jaxlib", "flax", "optax", "brax", "mujoco", "numpy"):
    try:
      out[name] = md.version(name)
    except md.PackageNotFoundError:
      out[name] = None
  return out


def cpu_description() -> str:
  """The CPU model and its widest vector extensions, e.g. ``"AMD EPYC; family 25 model 1;
  avx2 avx"``: runs on another CPU type give other digits, so every run directory says
  which it ran on."""
  info = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        name, _, value = line.partition(":")
        info.setdefault(name.strip(), value.strip())
  except OSError:
    return platform.processor() or platform.machine()
  flags = set((info.get("flags") or info.get("Features") or "").split())
  parts = [info.get("model name") or platform.processor() or platform.machine()]
  if "cpu family" in info:
    parts.append(f"family {info['cpu family']} model {info.get('model', '?')}")
  simd = [f for f in ("avx512f", "avx2", "avx", "sve", "asimd") if f in flags]
  if simd:
    parts.append(" ".join(simd))
  return "; ".join(parts)


def prepare_run_dir(out_dir: str, overwrite: bool) -> None:
  """Creates ``out_dir``; refuses a non-empty one unless ``overwrite``."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ConfigError(f"out: {out_dir!r} exists and is not a directory")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    if not overwrite:
      raise ConfigError(
          f"out: run directory {out_dir!r} is not empty; choose another --out or pass "
          f"--overwrite to replace it")
    shutil.rmtree(out_dir)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"out: cannot create run directory {out_dir!r}: {e.strerror}") from e
  if not os.access(out_dir, os.W_OK):
    raise ConfigError(f"out: run directory {out_dir!r} is not writable")


def group_state_dir(run_dir: str, seeds: list) -> str:
  """Where a run directory keeps the checkpoints of one seed group."""
  return os.path.join(run_dir, STATE_DIR, "seeds_" + "_".join(map(str, seeds)))


def has_checkpoint(run_dir: str) -> bool:
  """True if ``run_dir`` is a run directory with a complete checkpoint of some seed group
  (so ``train(resume=run_dir)`` can continue it)."""
  from mvelab import checkpoint
  state = os.path.join(run_dir, STATE_DIR)
  if not os.path.isfile(os.path.join(run_dir, "config.json")) or not os.path.isdir(state):
    return False
  return any(checkpoint.list_checkpoints(os.path.join(state, name))
             for name in os.listdir(state))


# ------------------------------------------------------------------------ config.json
def write_config(out_dir: str, cfg: Config, seeds: list, groups: list) -> None:
  atomic_write(os.path.join(out_dir, "config.json"), json.dumps(
      {"config": cfg.to_dict(), "seeds": seeds, "groups": groups, "versions": versions()},
      indent=2, sort_keys=True) + "\n")


def load_run(run_dir: str) -> dict:
  """Reads ``config.json`` of a run directory (raises ConfigError if it is not one)."""
  path = os.path.join(run_dir, "config.json")
  try:
    with open(path) as f:
      meta = json.load(f)
    meta["config"] = Config.from_dict(meta["config"])
  except FileNotFoundError:
    raise ConfigError(f"resume: {run_dir!r} is not a run directory (no config.json)") from None
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"resume: cannot read {path}: {e}") from None
  return meta


def config_differences(old: Config, new: Config) -> list:
  """Fields (other than RESUME_FREE_FIELDS) whose values differ, as 'name: old -> new'."""
  a, b = old.to_dict(), new.to_dict()
  return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a
          if k not in RESUME_FREE_FIELDS and a[k] != b[k]]


# ------------------------------------------------------------------------ metrics.csv
def _fmt(v):
  if isinstance(v, (float, np.floating)):
    return "" if not np.isfinite(v) else repr(float(v))
  if isinstance(v, (bool, np.bool_)):
    return int(v)
  return v


def csv_rows(rows: list, header: bool = False, columns: tuple = CSV_COLUMNS) -> str:
  """metrics.csv text of ``rows`` (with the header line if ``header``)."""
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
  if header:
    w.writeheader()
  for r in rows:
    w.writerow({k: _fmt(r.get(k)) for k in columns})
  return buf.getvalue()


class MetricsWriter:
  """Appends rows to metrics.csv; each append is one flushed, fsynced write."""

  def __init__(self, path: str, columns: tuple = CSV_COLUMNS):
    self.path, self.columns = path, columns
    if not os.path.exists(path):
      atomic_write(path, csv_rows([], header=True, columns=columns))

  def append(self, rows: list) -> None:
    with open(self.path, "a") as f:
      f.write(csv_rows(rows, columns=self.columns))
      f.flush()
      os.fsync(f.fileno())

  def replace(self, rows: list) -> None:
    atomic_write(self.path, csv_rows(rows, header=True, columns=self.columns))


def read_metrics(path: str) -> list:
  """Rows of a metrics.csv as dicts (a torn last line from a crash is dropped)."""
  with open(path) as f:
    text = f.read()
  lines = text.split("\n")
  if lines and lines[-1] != "":
    lines = lines[:-1]  # incomplete last line: written when the process was killed
  reader = csv.DictReader(io.StringIO("\n".join(lines) + "\n"))
  rows = []
  for r in reader:
    if None in r or any(v is None for v in r.values()):
      continue
    row = {}
    for k, v in r.items():
      if k in ("seed", "env_steps", "updates", "diverged_step"):
        row[k] = int(v)
      elif k == "diverged":
        row[k] = bool(int(v))
      elif k == "diverged_what":
        row[k] = v
      else:
        row[k] = float(v) if v != "" else float("nan")
    rows.append(row)
  return rows


def complete_evaluations(rows: list, seeds: list) -> list:
  """The leading rows that form whole evaluations (every seed), in (env_steps, seed) order."""
  by_step: dict = {}
  for r in rows:
    by_step.setdefault(r["env_steps"], {})[r["seed"]] = r
  out = []
  for step in sorted(by_step):
    if set(by_step[step]) != set(seeds):
      break
    out.extend(by_step[step][s] for s in sorted(seeds))
  return out


class MetricsLog:
  """The rows of a run, released one whole evaluation at a time in (env_steps, seed) order.

  ``written`` are the released rows (those in metrics.csv); rows of an evaluation that
  not every seed reported yet wait in ``pending``. ``on_release(rows)`` is called with
  each released evaluation.
  """

  def __init__(self, seeds: list, written: list, on_release):
    self.seeds, self.written, self.on_release = sorted(seeds), list(written), on_release
    self.pending: dict = {}

  def rewind(self, seeds: list, reached: Optional[int]) -> list:
    """Forgets the rows of ``seeds`` after env step ``reached`` (None: all of them), as
    when that seed group resumed from its checkpoint; the other seeds' rows after it wait
    again. Returns the new ``written``."""
    limit = -1 if reached is None else reached
    group = set(seeds)
    keep = lambda r: r["seed"] not in group or r["env_steps"] <= limit
    self.pending = {step: {s: r for s, r in rows.items() if keep(r)}
                    for step, rows in self.pending.items()}
    for r in self.written:
      if r["env_steps"] > limit and keep(r):
        self.pending.setdefault(r["env_steps"], {})[r["seed"]] = r
    self.written = [r for r in self.written if r["env_steps"] <= limit]
    return self.written

  def add(self, rows: list) -> None:
    for r in rows:
      self.pending.setdefault(r["env_steps"], {})[r["seed"]] = r
    while self.pending:
      step = min(self.pending)
      if len(self.pending[step]) < len(self.seeds):
        return
      self._release(self.pending.pop(step))

  def release_all(self) -> None:
    """Releases the incomplete evaluations too (the run ended early on purpose)."""
    for step in sorted(self.pending):
      self._release(self.pending.pop(step))

  def _release(self, by_seed: dict) -> None:
    rows = [by_seed[s] for s in sorted(by_seed)]
    self.written.extend(rows)
    self.on_release(rows)


# ----------------------------------------------------------------------- summary.json
def _num(v):
  return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def summarize(result) -> dict:
  """summary.json of a ``RunResult``."""
  last = {}
  for r in result.rows:
    last[r["seed"]] = r
  rets = np.array([r["eval_return"] for r in last.values()], dtype=float)
  return {
      "env": result.config.env, "preset": result.config.preset, "seeds": result.seeds,
      "final_env_steps": {str(s): r["env_steps"] for s, r in last.items()},
      "final_return": {str(s): _num(r["eval_return"]) for s, r in last.items()},
      "final_return_mean": _num(float(np.nanmean(rets))) if np.isfinite(rets).any() else None,
      "final_return_std": _num(float(np.nanstd(rets))) if np.isfinite(rets).any() else None,
      "diverged": {str(r["seed"]): {"env_steps": r["diverged_step"], "what": r["diverged_what"]}
                   for r in result.rows if r["diverged"]},
      "compile_time_s": round(result.compile_time_s, 2),
      "train_time_s": round(result.train_time_s, 2),
      "interrupted": result.interrupted,
  }


def write_summary(out_dir: str, result) -> None:
  atomic_write(os.path.join(out_dir, "summary.json"),
               json.dumps(summarize(result), indent=2, sort_keys=True) + "\n")
