"""Where a directory's diagnostics are, and the diagnostics figure of a sweep.

``mvelab diagnose DIR`` writes ``DIR/diagnostics/diagnostics.parquet``; ``mvelab train
--diagnose_every K`` appends to ``RUN/diagnostics.csv``. :func:`load` finds both, for
``mvelab results`` and ``mvelab plot``. :func:`figure_for_sweep` is what
``mvelab reproduce figure1`` calls: it diagnoses every run's last checkpoint (unless a
table is already there) and draws the per-run summary next to Figure 1.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from mvelab.diagnostics.cli import OUT_SUBDIR
from mvelab.diagnostics.diagnose import LIVE_FILE, TABLE_FILES
from mvelab.errors import ConfigError


def find_tables(root: str) -> list:
  """Diagnostics tables at or below ``root``: a post-hoc table and the runs' live files."""
  from mvelab.experiments import results
  found = []
  table = os.path.join(root, OUT_SUBDIR, TABLE_FILES[0])
  if os.path.isfile(table):
    found.append(table)
  for run in results.find_runs(root):
    live = os.path.join(run, LIVE_FILE)
    if os.path.isfile(live):
      found.append(live)
  return found


def load(root: str):
  """All diagnostics rows found at or below ``root`` (a DataFrame), or None."""
  import pandas as pd
  frames = [pd.read_parquet(p) if p.endswith(".parquet") else pd.read_csv(
      p, keep_default_na=False, na_values=[""]) for p in find_tables(root)]
  return pd.concat(frames, ignore_index=True) if frames else None


def summary_line(root: str) -> Optional[str]:
  """One line naming the diagnostics found below ``root`` (None if there are none)."""
  tables = find_tables(root)
  if not tables:
    return None
  return (f"diagnostics: {len(tables)} table(s), e.g. {tables[0]} "
          f"(`mvelab plot` draws them; docs/diagnostics.md explains the metrics)")


def figure_for_sweep(sweep_dir: str, out_dir: str, settings=None, jobs: int = 1) -> list:
  """Diagnoses the last checkpoint of every run below ``sweep_dir`` (unless
  ``sweep_dir/diagnostics/diagnostics.parquet`` exists; ``jobs`` runs at once, each in
  its own process when > 1) and writes the table there and the figure
  ``diagnostics_vs_h`` into ``out_dir``; returns the paths written (none when no run
  below ``sweep_dir`` has a checkpoint)."""
  from mvelab.diagnostics import diagnose, figures, loading
  from mvelab.diagnostics.settings import Settings
  import pandas as pd
  if not loading.find_runs(sweep_dir):
    return []  # no run kept a checkpoint: nothing to diagnose
  table = os.path.join(sweep_dir, OUT_SUBDIR, TABLE_FILES[0])
  paths = []
  if os.path.isfile(table):
    df = pd.read_parquet(table)
  else:
    try:
      df = diagnose.diagnose_dir(sweep_dir, settings or Settings(), ("last", 1),
                                 progress=None, jobs=jobs)
    except ConfigError as e:  # e.g. replays too short for the horizons: no figure
      print(f"warning: no diagnostics figure: {e}", file=sys.stderr)
      return []
    paths += diagnose.write_tables(df, os.path.dirname(table))
  return paths + figures.sweep_figure(df, os.path.join(out_dir, "diagnostics_vs_h.png"))
