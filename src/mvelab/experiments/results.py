"""Collect run directories into tidy tables and a per-run summary (``mvelab results``).

A run directory (written by ``mvelab.train(..., out_dir=...)``) holds ``config.json``,
``metrics.csv`` and ``summary.json``; a sweep may add ``status.json``. ``collect(root)``
turns every run below ``root`` into one table with a row per run x seed x evaluation;
``summarize`` reduces it to one row per run (final return, IQM with a bootstrap CI, AUC,
steps to a threshold, wall time); ``write_tables`` stores both; ``main`` is the CLI.

Config values in the tables: integer sequences (``hidden_sizes``, ``model_hidden_sizes``)
are written as ``"256x256"``, other lists/dicts as JSON; None stays missing. The config
field ``seed`` (the run's first seed) becomes ``config_seed`` because ``seed`` is the
per-row seed of metrics.csv.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import warnings
from typing import Mapping, Optional

import numpy as np
import pandas as pd

from mvelab import runner
from mvelab.config import Config
from mvelab.experiments import matched, stats
from mvelab.experiments._cli import Parser, UsageError, fail

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(Config))
#: Columns of ``collect`` that come before the config fields.
RUN_COLUMNS = ("run", "status", "label")
#: Columns of ``collect`` taken from summary.json (NaN when it is missing).
TIMING_COLUMNS = ("compile_time_s", "train_time_s")
METRIC_COLUMNS = tuple(runner.CSV_COLUMNS)
#: Run-level columns of ``summarize``, in order (threshold columns go before "diverged").
SUMMARY_COLUMNS = ("run", "label", "status", "env", "preset", "agent", "expansion", "model",
                   "horizon", "n_seeds", "final_env_steps", "final_mean", "final_std", "iqm",
                   "iqm_lo", "iqm_hi", "auc_mean", "auc_std", "diverged", "wall_time_s",
                   "compile_time_s", "train_time_s")
THRESHOLD_COLUMNS = ("steps_to_threshold", "reached")
RESULT_FILES = ("results.parquet", "results.csv", "summary.csv")
BOOTSTRAP_REPS = 2000
BOOTSTRAP_SEED = 0

_AGENT_ORDER = {"sac": 0, "ddpg": 1}
_EXPANSION_ORDER = {"none": 0, "critic": 1, "actor": 2, "retrace": 3, "steve": 4,
                    "dyna": 5}
_MODEL_ORDER = {None: 0, "oracle": 1, "learned": 2}


class RunSkippedWarning(UserWarning):
  """A run directory below the root could not be read and was left out."""


# ------------------------------------------------------------------------ finding runs
def is_run_dir(path: str) -> bool:
  """True if ``path`` holds both config.json and metrics.csv."""
  return (os.path.isfile(os.path.join(path, "config.json"))
          and os.path.isfile(os.path.join(path, "metrics.csv")))


def find_runs(root: str) -> list[str]:
  """Every run directory at or below ``root``, sorted.

  A run directory is one with config.json and metrics.csv; its own subdirectories
  (checkpoints, TensorBoard files) are not searched further.

  Returns:
    Paths ``os.path.join(root, relative)``, normalised (``root`` itself if it is a run).
  """
  found = []
  for dirpath, dirnames, _ in os.walk(root):
    if is_run_dir(dirpath):
      found.append(os.path.normpath(dirpath))
      dirnames[:] = []
    else:
      dirnames.sort()
  return sorted(found)


# -------------------------------------------------------------------- one run directory
def read_status(run_dir: str) -> str:
  """``state`` of the run's status.json, or "unknown" if absent or unreadable."""
  try:
    with open(os.path.join(run_dir, "status.json")) as f:
      state = json.load(f).get("state")
  except (OSError, ValueError, AttributeError):
    return "unknown"
  return str(state) if state is not None else "unknown"


def _read_json(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      d = json.load(f)
  except (OSError, ValueError):
    return None
  return d if isinstance(d, dict) else None


def read_config(run_dir: str) -> dict:
  """The raw config dict of a run's config.json, missing fields at Config's defaults.

  Unknown fields (from another mvelab version) are kept rather than rejected.

  Raises:
    ValueError: config.json is not valid JSON or has no ``config`` object.
    OSError: it cannot be read.
  """
  with open(os.path.join(run_dir, "config.json")) as f:
    meta = json.load(f)
  cfg = meta.get("config") if isinstance(meta, dict) else None
  if not isinstance(cfg, dict):
    raise ValueError("config.json has no 'config' object")
  return {**Config().to_dict(), **cfg}


def run_label(config: Mapping) -> str:
  """A readable algorithm name for a config (a mapping of Config fields).

  ``SAC`` / ``DDPG`` without expansion; ``MVE H=5`` (critic expansion, learned model),
  ``OVE H=5`` (critic, oracle), ``VG-oracle H=3`` / ``VG-learned H=3`` (actor expansion),
  ``Retrace H=3``; DDPG variants are prefixed ``DDPG-``. Non-default trace coefficient,
  particle count, TD-k, critic-expansion value mode and the learned model's balanced
  member sampling are appended (`` lam=0.9``, `` P=4``, `` TD-k``, `` direct``,
  `` balanced``).
  """
  sampling = " balanced" if config.get("model_sampling") == "balanced" else ""
  agent = config.get("agent") or "sac"
  expansion = config.get("expansion") or "none"
  model = config.get("model")
  horizon = config.get("horizon", 0)
  if expansion == "none":
    return agent.upper()
  if expansion == "critic":
    name = {"learned": "MVE", "oracle": "OVE"}.get(model, f"MVE-{model}")
  elif expansion == "actor":
    name = f"VG-{model}"
  elif expansion == "retrace":
    name = "Retrace"
  elif expansion == "steve":
    name = f"STEVE-{model}"
  elif expansion == "dyna":
    return (("MBPO" if model == "learned" else f"MBPO-{model}") + f" k={horizon}" + sampling
            + ("" if agent == "sac" else f" ({agent.upper()})"))
  else:
    name = str(expansion)
  name = f"{name} H={horizon}"
  lam, particles = config.get("lam", 1.0), config.get("particles", 1)
  if lam is not None and lam != 1.0:
    name += f" lam={lam:g}"
  if particles is not None and particles > 1:
    name += f" P={particles}"
  if config.get("tdk"):
    name += " TD-k"
  if config.get("model_error") not in (None, "none"):
    name += f" {config['model_error']} eps={config.get('model_error_scale', 0):g}"
  ce_values = config.get("ce_values", "control_variate")
  if ce_values not in (None, "control_variate"):
    name += f" {ce_values}"
  name += sampling
  return name if agent == "sac" else f"{agent.upper()}-{name}"


def _cell(v):
  """A config value as a table cell: int sequences as "64x64", other containers as JSON."""
  if isinstance(v, (list, tuple)):
    if v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
      return "x".join(str(x) for x in v)
    return json.dumps(list(v))
  if isinstance(v, dict):
    return json.dumps(v, sort_keys=True)
  return v


def _config_column(name: str) -> str:
  reserved = set(RUN_COLUMNS) | set(TIMING_COLUMNS) | set(METRIC_COLUMNS)
  return f"config_{name}" if name in reserved else name


def read_run(run_dir: str, name: str) -> list[dict]:
  """The ``collect`` rows of one run directory (``name`` fills the ``run`` column).

  Raises:
    OSError, ValueError, KeyError, TypeError: the run cannot be read.
  """
  cfg = read_config(run_dir)
  rows = runner.read_metrics(os.path.join(run_dir, "metrics.csv"))
  summary = _read_json(os.path.join(run_dir, "summary.json")) or {}
  base = {"run": name, "status": read_status(run_dir), "label": run_label(cfg)}
  base.update({_config_column(k): _cell(v) for k, v in cfg.items()})
  timing = {k: _float(summary.get(k)) for k in TIMING_COLUMNS}
  out = []
  for r in rows:
    missing = [k for k in ("seed", "env_steps", "eval_return") if k not in r]
    if missing:
      raise KeyError(f"metrics.csv lacks column(s) {missing}")
    out.append({**base, **{k: r.get(k) for k in METRIC_COLUMNS}, **timing})
  return out


def _float(v) -> float:
  try:
    return float(v)
  except (TypeError, ValueError):
    return float("nan")


def _columns(extra_config: list) -> list:
  """``collect``'s columns; ``extra_config``: config fields unknown to this version."""
  cfg = [_config_column(k) for k in CONFIG_FIELDS] + list(extra_config)
  return list(RUN_COLUMNS) + cfg + list(METRIC_COLUMNS) + list(TIMING_COLUMNS)


def collect(root: str) -> pd.DataFrame:
  """One row per run x seed x evaluation of every run directory at or below ``root``.

  Columns: ``run`` (path relative to ``root``, "." for ``root`` itself), ``status``
  (status.json's state or "unknown"), ``label`` (``run_label``), every config field
  (see the module docstring for value encoding and ``config_seed``; unknown fields of
  other versions follow), the metrics.csv columns (``runner.CSV_COLUMNS``), then
  ``compile_time_s`` and ``train_time_s`` from summary.json (NaN if missing). Rows are
  ordered by run, seed and env_steps. Runs without any evaluation add no rows.

  Unreadable runs are skipped with a ``RunSkippedWarning``.
  """
  rows, known, extra = [], set(_columns([])), []
  for path in find_runs(root):
    name = os.path.relpath(path, root)
    try:
      run_rows = read_run(path, name)
    except (OSError, ValueError, KeyError, TypeError) as e:
      warnings.warn(f"skipping run {name!r} ({path}): {e}", RunSkippedWarning, stacklevel=2)
      continue
    rows.extend(run_rows)
    if run_rows:
      extra += [k for k in run_rows[0] if k not in known and k not in extra]
  columns = _columns(extra)
  df = pd.DataFrame(rows, columns=columns)
  if len(df):
    df = df.sort_values(["run", "seed", "env_steps"], kind="stable").reset_index(drop=True)
  return df


# ---------------------------------------------------------------------------- summary
def _missing(v) -> bool:
  """None, NaN or pandas' NA (how a missing value comes out of a table)."""
  return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _seed_curves(run_df: pd.DataFrame) -> dict:
  """{seed: (steps, returns, last row)} with each seed's rows in env_steps order."""
  out = {}
  for seed, g in run_df.groupby("seed", sort=True):
    g = g.sort_values("env_steps", kind="stable")
    out[seed] = (g["env_steps"].to_numpy(float), g["eval_return"].to_numpy(float),
                 g.iloc[-1])
  return out


def summarize_run(run_df: pd.DataFrame, threshold: Optional[float] = None) -> dict:
  """The ``summarize`` row of one run's rows of ``collect``.

  Every seed is cut at the common final step (the last evaluation all seeds reached;
  for a complete run, the last evaluation). Final return: each seed's return there;
  ``final_mean`` / ``final_std`` (np.std, ddof 0) and the IQM with its 95% stratified
  bootstrap interval (one task, ``BOOTSTRAP_REPS`` resamples, seed ``BOOTSTRAP_SEED``)
  are over the seeds whose final return is finite (a diverged seed's is missing).
  AUC: ``stats.auc`` of each seed's curve up to the common step, mean / std over the
  finite ones. Steps to threshold (each seed's whole curve, not cut): mean over the
  seeds that reached it, ``reached`` = "k/n". ``diverged``: seeds with any diverged
  row. ``wall_time_s``: max over seeds of the last wall_time_s.
  """
  first = run_df.iloc[0]
  curves = _seed_curves(run_df)
  common = min(s[-1] for s, _, _ in curves.values())
  finals, aucs, hits = [], [], []
  for steps, rets, _ in curves.values():
    keep = steps <= common
    s, r = steps[keep], rets[keep]
    finals.append(r[-1])
    aucs.append(stats.auc(s, r))
    if threshold is not None:
      hits.append(stats.steps_to_threshold(steps, rets, threshold))
  finals = np.array([x for x in finals if np.isfinite(x)])
  aucs = np.array([x for x in aucs if np.isfinite(x)])
  if finals.size:
    point, lo, hi = stats.stratified_bootstrap_ci(finals, reps=BOOTSTRAP_REPS,
                                                  seed=BOOTSTRAP_SEED)
  else:
    point = lo = hi = float("nan")
  model = first["model"]
  row = {
      "run": first["run"], "label": first["label"], "status": first["status"],
      "env": first["env"], "preset": first["preset"], "agent": first["agent"],
      "expansion": first["expansion"], "model": None if _missing(model) else model,
      "horizon": int(first["horizon"]), "n_seeds": len(curves),
      "final_env_steps": int(common),
      "final_mean": _mean(finals), "final_std": _std(finals),
      "iqm": point, "iqm_lo": lo, "iqm_hi": hi,
      "auc_mean": _mean(aucs), "auc_std": _std(aucs),
  }
  if threshold is not None:
    reached = [h for h in hits if np.isfinite(h)]
    row["steps_to_threshold"] = _mean(np.array(reached))
    row["reached"] = f"{len(reached)}/{len(curves)}"
  walls = [_float(last.get("wall_time_s")) for _, _, last in curves.values()]
  walls = [w for w in walls if np.isfinite(w)]
  row.update({
      "diverged": int(sum(bool(np.any(g["diverged"].to_numpy(bool)))
                          for _, g in run_df.groupby("seed"))),
      "wall_time_s": max(walls) if walls else float("nan"),
      "compile_time_s": _float(first.get("compile_time_s")),
      "train_time_s": _float(first.get("train_time_s")),
  })
  return row


def _mean(a: np.ndarray) -> float:
  return float(np.mean(a)) if a.size else float("nan")


def _std(a: np.ndarray) -> float:
  return float(np.std(a)) if a.size else float("nan")


def _sort_key(row: dict) -> tuple:
  return (str(row["env"]), _AGENT_ORDER.get(row["agent"], 99), str(row["agent"]),
          _EXPANSION_ORDER.get(row["expansion"], 99), str(row["expansion"]),
          _MODEL_ORDER.get(row["model"], 99), str(row["model"]), row["horizon"], row["run"])


def summary_columns(threshold: Optional[float] = None) -> list:
  """Columns of ``summarize`` (the threshold ones only when a threshold is given)."""
  cols = list(SUMMARY_COLUMNS)
  if threshold is not None:
    i = cols.index("diverged")
    cols[i:i] = THRESHOLD_COLUMNS
  return cols


def summarize(df: pd.DataFrame, threshold: Optional[float] = None) -> pd.DataFrame:
  """One row per run of a ``collect`` table (see ``summarize_run`` for the statistics).

  Columns: ``SUMMARY_COLUMNS``, with ``steps_to_threshold`` and ``reached`` before
  ``diverged`` when ``threshold`` is given. Rows are sorted by env, agent (sac, ddpg),
  expansion (none, critic, actor, retrace), model (none, oracle, learned), horizon, run.
  """
  rows = [summarize_run(g, threshold) for _, g in df.groupby("run", sort=False)]
  rows.sort(key=_sort_key)
  return pd.DataFrame(rows, columns=summary_columns(threshold))


# ----------------------------------------------------------------------------- output
def _atomic(path: str, write) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
  """``df`` with object columns of mixed value types (possible for config fields of
  other mvelab versions) turned into strings, which parquet requires."""
  out = df
  for col in df.columns:
    if df[col].dtype != object:
      continue
    kinds = {type(v) for v in df[col] if not _missing(v)}
    if len(kinds) > 1:
      out = out.copy() if out is df else out
      out[col] = [None if _missing(v) else str(v) for v in df[col]]
  return out


def write_tables(df: pd.DataFrame, summary: pd.DataFrame, out_dir: str) -> dict:
  """Writes results.parquet, results.csv (``df``) and summary.csv into ``out_dir``.

  Each file is written to a temporary name and moved into place, so a reader never sees
  a partial file. ``out_dir`` is created if needed.

  Returns:
    ``{file name: path}`` for the three files.
  """
  os.makedirs(out_dir, exist_ok=True)
  paths = {name: os.path.join(out_dir, name) for name in RESULT_FILES}
  _atomic(paths["results.parquet"],
          lambda p: _parquet_safe(df).to_parquet(p, engine="pyarrow", index=False))
  _atomic(paths["results.csv"], lambda p: df.to_csv(p, index=False))
  _atomic(paths["summary.csv"], lambda p: summary.to_csv(p, index=False))
  return paths


def _num(v, digits: int = 1) -> str:
  return "n/a" if _missing(v) or not np.isfinite(v) else f"{v:.{digits}f}"


def _pm(mean, std) -> str:
  return "n/a" if _missing(mean) or not np.isfinite(mean) else f"{mean:.1f} ± {_num(std)}"


def format_summary(summary: pd.DataFrame) -> str:
  """A fixed-width text table of a ``summarize`` table, one line per run."""
  threshold = "steps_to_threshold" in summary.columns
  header = ["run", "label", "env", "seeds", "steps", "final (mean ± std)", "IQM [95% CI]",
            "AUC (mean ± std)"]
  if threshold:
    header.append("to threshold (reached)")
  header += ["diverged", "wall s"]
  rows = []
  for r in summary.to_dict("records"):
    iqm = ("n/a" if _missing(r["iqm"]) else
           f"{r['iqm']:.1f} [{r['iqm_lo']:.1f}, {r['iqm_hi']:.1f}]")
    row = [str(r["run"]), str(r["label"]), str(r["env"]), str(r["n_seeds"]),
           str(r["final_env_steps"]), _pm(r["final_mean"], r["final_std"]), iqm,
           _pm(r["auc_mean"], r["auc_std"])]
    if threshold:
      row.append(f"{_num(r['steps_to_threshold'], 0)} ({r['reached']})")
    row += [f"{r['diverged']}/{r['n_seeds']}", _num(r["wall_time_s"], 0)]
    rows.append(row)
  widths = [max(len(x) for x in col) for col in zip(header, *rows)]
  left = 3  # run, label, env: left-aligned; numbers right-aligned

  def line(cells):
    return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

  out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
  return "\n".join(out)


# -------------------------------------------------------------------------------- CLI


def _parse_threshold(text: Optional[str]) -> Optional[float]:
  if text is None:
    return None
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not math.isfinite(value):
    raise UsageError(f"threshold: must be a finite number, got {text!r}")
  return value


def _collect_all(dirs: list) -> pd.DataFrame:
  """``collect`` of every DIR; with several, ``run`` is relative to their common parent."""
  if len(dirs) == 1:
    return collect(dirs[0])
  base = os.path.commonpath([os.path.abspath(d) for d in dirs])
  frames = []
  for d in dirs:
    df = collect(d)
    prefix = os.path.relpath(os.path.abspath(d), base)
    df["run"] = [os.path.normpath(os.path.join(prefix, r)) for r in df["run"]]
    frames.append(df)
  frames = [f for f in frames if len(f)]
  if not frames:
    return collect(dirs[0])
  out = pd.concat(frames, ignore_index=True, sort=False)
  return out.sort_values(["run", "seed", "env_steps"], kind="stable").reset_index(drop=True)


def _parse_match(args) -> Optional[tuple]:
  """(metric, edges, after) of the --match options, or None; checks them all."""
  if args.match is None:
    if args.match_bins is not None:
      raise UsageError("match_bins: needs --match METRIC")
    return None
  metric = matched.check_metric(args.match)
  if args.match_bins is None:
    raise UsageError("match_bins: --match needs bin edges (--match_bins E0 E1 ...)")
  if not math.isfinite(args.match_after):
    raise UsageError(f"match_after: must be a finite number, got {args.match_after!r}")
  return metric, matched.check_edges(args.match_bins), args.match_after


def _write_matched(df: pd.DataFrame, metric: str, edges: list, after: float,
                   out: str) -> str:
  """Prints the matched tables and writes matched_<metric>.csv; returns its path."""
  table = matched.matched_returns(df, metric, edges, after)
  print()
  if table.empty:
    print(f"--match {metric}: no evaluations at or after step {after:g} fall in the bins")
  else:
    print(f"mean eval return per {metric} bin (evaluations at env step >= {after:g}):")
    print(matched.format_tables(table, matched.explained(df, metric, edges, after), metric))
  path = os.path.join(out, f"matched_{metric}.csv")
  _atomic(path, lambda p: table.to_csv(p, index=False))
  return path


def main(argv=None) -> int:
  """``mvelab results DIR [DIR ...] [--threshold X] [--out DIR2] [--match M --match_bins ...]``.

  Returns the exit code.

  Prints the summary table and the paths written; bad input prints one
  ``mvelab: error: ...`` line and returns 2.
  """
  parser = Parser(prog="mvelab results",
                   description="Collect the run directories below DIR into results.parquet, "
                   "results.csv and summary.csv, and print a per-run summary.")
  parser.add_argument("dir", metavar="DIR", nargs="+",
                      help="a run directory or a tree of them (a sweep); several DIRs are "
                      "collected into one table (then --out is required)")
  parser.add_argument("--threshold", default=None,
                      help="also report the first env step at which each seed's eval return "
                      "reaches this value")
  parser.add_argument("--out", default=None, help="where to write the tables (default: DIR)")
  parser.add_argument("--match", default=None, metavar="METRIC",
                      help="also tabulate the mean return per bin of this training metric "
                      f"and per run ({', '.join(matched.MATCHABLE)}; matched_METRIC.csv)")
  parser.add_argument("--match_bins", nargs="+", default=None, metavar="EDGE",
                      help="bin edges for --match (at least two, increasing)")
  parser.add_argument("--match_after", type=float, default=0.0, metavar="STEPS",
                      help="--match uses only evaluations at or after this env step")
  try:
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    threshold = _parse_threshold(args.threshold)
    match = _parse_match(args)
  except UsageError as e:
    return fail(str(e))
  dirs = args.dir
  for d in dirs:
    if not os.path.isdir(d):
      return fail(f"dir: {d!r} is not a directory")
    if not find_runs(d):
      return fail(f"dir: no run directories (config.json + metrics.csv) under {d!r}")
  if len(dirs) > 1 and args.out is None:
    return fail("out: give --out DIR2 when collecting several DIRs")
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", RunSkippedWarning)
    df = _collect_all(dirs)
  for w in caught:
    if issubclass(w.category, RunSkippedWarning):
      print(f"warning: {w.message}", file=sys.stderr)
  if df.empty:
    return fail(f"dir: no readable evaluations in the runs under {' '.join(map(repr, dirs))}")
  summary = summarize(df, threshold)
  out = args.out if args.out is not None else dirs[0]
  try:
    paths = write_tables(df, summary, out)
  except OSError as e:
    return fail(f"out: cannot write the tables to {out!r}: {e.strerror or e}")
  print(format_summary(summary))
  if match is not None:
    try:
      paths["matched"] = _write_matched(df, *match, out)
    except OSError as e:
      return fail(f"out: cannot write the matched table to {out!r}: {e.strerror or e}")
  print()
  for path in paths.values():
    print(f"wrote {path}")
  from mvelab.diagnostics import found
  for d in dirs:
    if found.summary_line(d):
      print(found.summary_line(d))
  return 0


if __name__ == "__main__":
  sys.exit(main())
