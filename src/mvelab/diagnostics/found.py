"""Where a directory's diagnostics are, and the diagnostics figure of a sweep.

``mvelab diagnose DIR`` writes ``DIR/diagnostics/diagnostics.parquet``; ``mvelab train
--diagnose_every K`` appends to ``RUN/diagnostics.csv``. :func:`load` finds both, for
``mvelab results`` and ``mvelab plot``. :func:`figure_for_sweep` is what
``mvelab reproduce figure1`` calls: it diagnoses every run's last checkpoint (unless a
table is already there) and draws the per-run summary next to Figure 1. The sweep's
worker processes do most of that pass: right after training, each keeps the rows of its
run's last checkpoint (:func:`keep_last`, in ``RUN/diagnostics/last-<digest>.parquet``),
and :func:`sweep_rows` reuses them, diagnosing only the runs without kept rows.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from mvelab.diagnostics.cli import OUT_SUBDIR
from mvelab.diagnostics.diagnose import LIVE_FILE, TABLE_FILES
from mvelab.errors import ConfigError

#: The checkpoints a sweep's diagnostics figure reads: each seed group's last.
LAST = ("last", 1)


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


def kept_path(run_dir: str, settings) -> Optional[str]:
  """Where :func:`keep_last` keeps the rows of the run's last checkpoints under
  ``settings`` (None: the run has no checkpoint). The name carries a digest of the
  settings and of the checkpoints' paths, so rows of other settings or of an older
  checkpoint are never reused."""
  import hashlib
  from mvelab.diagnostics import loading
  refs = loading.checkpoints(run_dir, LAST)
  if not refs:
    return None
  key = repr((settings, [os.path.relpath(ref.path, run_dir) for ref in refs]))
  digest = hashlib.sha1(key.encode()).hexdigest()[:16]
  return os.path.join(run_dir, OUT_SUBDIR, f"last-{digest}.parquet")


def keep_last(run_dir: str, settings) -> Optional[str]:
  """Diagnoses the run's last checkpoints and keeps the rows at :func:`kept_path`
  (temporary name, then rename); returns that path (None: no checkpoint). A sweep worker
  runs this right after training (``mvelab.experiments.reproduce.diagnosed_job``)."""
  from mvelab.diagnostics import diagnose
  path = kept_path(run_dir, settings)
  if path is None:
    return None
  rows = diagnose.diagnose_run(run_dir, run_dir, settings, LAST, progress=None)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  diagnose.write_rows(rows, path)
  return path


def sweep_rows(sweep_dir: str, settings, jobs: int = 1):
  """The diagnostics of every run's last checkpoint below ``sweep_dir``: the rows (and
  their order) of ``diagnose_dir(sweep_dir, settings, LAST)``, taking a run's kept rows
  (:func:`keep_last`) where they exist and diagnosing the others here (``jobs`` at once,
  each in its own process when > 1)."""
  import pandas as pd
  from mvelab.diagnostics import diagnose, loading
  runs = loading.find_runs(sweep_dir)
  kept = {run: kept_path(run, settings) for run in runs}
  todo = [run for run in runs if kept[run] is None or not os.path.isfile(kept[run])]
  rows = {}
  if jobs > 1 and len(todo) > 1:
    for row in diagnose.diagnose_in_workers(todo, sweep_dir, settings, LAST, None, jobs):
      rows.setdefault(row["run"], []).append(row)
  else:
    for run in todo:
      rows[diagnose.run_name(run, sweep_dir)] = diagnose.diagnose_run(
          run, sweep_dir, settings, LAST, progress=None)
  for run in runs:
    if run not in todo:
      name = diagnose.run_name(run, sweep_dir)
      rows[name] = pd.read_parquet(kept[run]).assign(run=name).to_dict("records")
  return diagnose.frame([row for run in runs
                         for row in rows.get(diagnose.run_name(run, sweep_dir), [])])


def figure_for_sweep(sweep_dir: str, out_dir: str, settings=None, jobs: int = 1) -> list:
  """Diagnoses the last checkpoint of every run below ``sweep_dir`` (unless
  ``sweep_dir/diagnostics/diagnostics.parquet`` exists; runs whose rows a sweep worker
  kept are not diagnosed again, :func:`sweep_rows`) and writes the table there and the
  figure ``diagnostics_vs_h`` into ``out_dir``; returns the paths written (none when no
  run below ``sweep_dir`` has a checkpoint)."""
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
      df = sweep_rows(sweep_dir, settings or Settings(), jobs=jobs)
    except ConfigError as e:  # e.g. replays too short for the horizons: no figure
      print(f"warning: no diagnostics figure: {e}", file=sys.stderr)
      return []
    paths += diagnose.write_tables(df, os.path.dirname(table))
  return paths + figures.sweep_figure(df, os.path.join(out_dir, "diagnostics_vs_h.png"))
