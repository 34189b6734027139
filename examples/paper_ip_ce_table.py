"""The critic-expansion table of issue 11 on ``paper_inverted_pendulum``, from kept runs.

Every cell of the README's table "Critic expansion on the paper's inverted pendulum"
(the paper preset, 5 seeds, 10k steps): SAC, oracle (OVE) and learned (MVE) critic
expansion and Retrace at H = 1, 3, 5, 10, 20, 30. The cells were measured by several
sweeps (``results/README.md`` lists their commands); this script gathers them into one
table and draws final return and AUC against H.

A cell whose run files are kept under ``results/`` is summarised from them
(``mvelab.experiments.results``, as ``mvelab results --threshold 200``). The 2026-12-01
sweeps lost their per-run files (results/README.md, "What was lost"); their cells come
from the summary rows kept with them: ``summary.csv`` (written by ``mvelab results``
then), and for MVE H = 1, 3 ``mve-13/published.csv``, the numbers the README published
on 2026-12-01 (no summary table of that sweep was kept).
A cell not measured yet is left out and named on stderr.

Usage::

  python examples/paper_ip_ce_table.py            # from the repository root
  python examples/paper_ip_ce_table.py --results DIR --table FILE.csv --figure FILE.png

Writes the table (one row per cell, the ``summarize`` columns and ``source``) and the
figure (PNG and PDF), and prints the table.
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from mvelab.experiments import plots, results

ENV = "paper_inverted_pendulum"
THRESHOLD = 200.0
RUN = f"runs/{ENV}-paper-sac-"
#: Every cell: its run, relative to ``--results``.
CELLS = (
    "mbpo/a/" + RUN + "none-H0",
    "mbpo/b/" + RUN + "critic-oracle-H1",
    "ove-135/" + RUN + "critic-oracle-H3",
    "mbpo/c/" + RUN + "critic-oracle-H5",
    "h10/" + RUN + "critic-oracle-H10",
    "ce-long/" + RUN + "critic-oracle-H20",
    "ove-h30/" + RUN + "critic-oracle-H30",
    "mve-13/" + RUN + "critic-learned-H1-0f4a69",
    "mve-13/" + RUN + "critic-learned-H3-0f4a69",
    "mbpo/b/" + RUN + "critic-learned-H5-0f4a69",
    "mve-h10/" + RUN + "critic-learned-H10-6ac08b",
    "mve-h20/" + RUN + "critic-learned-H20-6ac08b",
    "mve-h30/" + RUN + "critic-learned-H30-6ac08b",
    "ove-135/" + RUN + "retrace-H1",
    "ove-135/" + RUN + "retrace-H3",
    "ove-135/" + RUN + "retrace-H5",
    "ce-long/" + RUN + "retrace-H10",
    "retrace-h20/" + RUN + "retrace-H20",
    "retrace-h30/" + RUN + "retrace-H30",
)
#: Kept summary rows (``run`` relative to ``--results``) of runs whose files were lost.
SUMMARIES = ("summary.csv", "mve-13/published.csv")


def cell(root: str, run: str, kept: pd.DataFrame):
  """The summary row and source of one cell, or None when it is not kept."""
  run_dir = os.path.join(root, run)
  if results.is_run_dir(run_dir) and results.read_status(run_dir) == "done":
    row = results.summarize(results.collect(run_dir), THRESHOLD).iloc[0].to_dict()
    return dict(row, run=run, source="run files")
  rows = kept[kept["run"] == run]
  return None if rows.empty else rows.iloc[0].to_dict()


def kept_rows(root: str) -> pd.DataFrame:
  """The rows of ``SUMMARIES``, each with its file as ``source``."""
  frames = [pd.read_csv(os.path.join(root, f)).assign(source=f) for f in SUMMARIES
            if os.path.isfile(os.path.join(root, f))]
  return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run"])


def table(root: str) -> pd.DataFrame:
  """Every kept cell of ``CELLS``, in order, with its ``source``."""
  kept, rows = kept_rows(root), []
  for run in CELLS:
    row = cell(root, run, kept)
    if row is None:
      print(f"not kept (not measured yet?): {run}", file=sys.stderr)
    else:
      rows.append(row)
  columns = results.summary_columns(THRESHOLD) + ["source"]
  return pd.DataFrame(rows)[[c for c in columns if c in rows[0]]]


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--results", default=f"results/{ENV}",
                  help="folder holding the kept sweeps (default: %(default)s)")
  ap.add_argument("--table", default=None,
                  help="CSV to write (default: RESULTS/ce-table.csv)")
  ap.add_argument("--figure", default="docs/img/paper_ip_ce_vs_h.png",
                  help="PNG to write, a PDF goes next to it (default: %(default)s)")
  args = ap.parse_args(argv)
  if not os.path.isdir(args.results):
    ap.error(f"--results: {args.results!r} is not a directory")
  df = table(args.results)
  out = args.table or os.path.join(args.results, "ce-table.csv")
  tmp = f"{out}.tmp-{os.getpid()}"
  df.to_csv(tmp, index=False)
  os.replace(tmp, out)
  plots.performance_vs_horizon_from_summary(df, args.figure, env=ENV)
  shown = ["label", "n_seeds", "final_mean", "final_std", "auc_mean", "auc_std",
           "steps_to_threshold", "reached", "wall_time_s", "source"]
  with pd.option_context("display.width", 200, "display.max_columns", None):
    print(df[shown].round(1).to_string(index=False))
  print(f"wrote {out}, {args.figure}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
