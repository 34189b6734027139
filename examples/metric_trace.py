"""Training metrics of several runs side by side, at chosen steps or at matched values.

Prints, for each metric, a table with one column per run and one row per step: the
mean over the run's seeds of that metric in ``metrics.csv`` (the chunk mean of the
updates before the evaluation at that step; see docs/experiments.md for each metric).
With ``--by METRIC --bins EDGES`` the rows are bins of another metric instead: the mean
over every (seed, evaluation) row whose METRIC falls in the bin (from ``--after`` steps
on), e.g. the policy entropy of each run at the same critic Q level.
Used in docs/paper_tasks.md to follow the policy entropy, the critic's loss and its Q
values of the learned model against the oracle.

Usage::

  python examples/metric_trace.py NAME=RUN_DIR [NAME=RUN_DIR ...] \\
      [--metrics entropy q_mean critic_loss] [--steps 1012 2012 4012]
  python examples/metric_trace.py NAME=RUN_DIR ... --metrics entropy \\
      --by q_mean --bins 3 4 5 6 7 8 9 10 11 12 13 14 --after 1012
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from mvelab.experiments import results


def trace(runs: dict, metrics: list, steps: list | None) -> dict:
  """``{metric: DataFrame[step x run]}`` of seed means; all steps when ``steps`` is None."""
  means = {}
  for name, run_dir in runs.items():
    df = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    missing = [m for m in metrics if m not in df.columns]
    if missing:
      raise ValueError(f"--metrics: {', '.join(missing)} not in {run_dir}/metrics.csv")
    means[name] = df.groupby("env_steps")[metrics].mean()
  out = {}
  for m in metrics:
    table = pd.DataFrame({name: t[m] for name, t in means.items()})
    out[m] = table if steps is None else table.reindex(steps)
  return out


def matched(runs: dict, metrics: list, by: str, edges: list, after: int) -> dict:
  """``{metric: DataFrame[bin of by x run]}``: means over the rows in each bin."""
  out = {m: {} for m in metrics}
  for name, run_dir in runs.items():
    df = pd.read_csv(os.path.join(run_dir, "metrics.csv"))
    missing = [m for m in metrics + [by] if m not in df.columns]
    if missing:
      raise ValueError(f"--metrics/--by: {', '.join(missing)} not in {run_dir}/metrics.csv")
    df = df[df["env_steps"] >= after].dropna(subset=[by])
    groups = df.groupby(pd.cut(df[by], edges), observed=False)
    for m in metrics:
      out[m][name] = groups[m].mean()
  return {m: pd.DataFrame(cols) for m, cols in out.items()}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR")
  ap.add_argument("--metrics", nargs="+", default=["eval_return", "alpha", "entropy",
                                                  "q_mean", "critic_loss"])
  ap.add_argument("--steps", nargs="+", type=int, default=None)
  ap.add_argument("--by", default=None, metavar="METRIC",
                  help="rows are bins of this metric instead of steps")
  ap.add_argument("--bins", nargs="+", type=float, default=None, metavar="EDGE")
  ap.add_argument("--after", type=int, default=0, metavar="STEP",
                  help="with --by: only rows from this environment step on")
  args = ap.parse_args(argv)
  if (args.by is None) != (args.bins is None) or (args.bins and len(args.bins) < 2):
    ap.error("--by and --bins: give both, with at least two bin edges")
  runs = {}
  for item in args.runs:
    name, sep, path = item.partition("=")
    if not sep or not results.is_run_dir(path):
      ap.error(f"runs: {item!r} is not NAME=RUN_DIR with a run directory")
    runs[name] = path
  try:
    tables = (trace(runs, args.metrics, args.steps) if args.by is None else
              matched(runs, args.metrics, args.by, args.bins, args.after))
  except ValueError as e:
    ap.error(str(e))
  for metric, table in tables.items():
    print(f"\n{metric} (mean over seeds" + (f", by {args.by})" if args.by else ")"))
    print(table.round(3).to_string())
  return 0


if __name__ == "__main__":
  sys.exit(main())
