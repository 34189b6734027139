"""Returns at matched values of a training metric: "learns better" or "gets there sooner"?

Two runs can differ in their return curves because one reaches a better policy, or
because both follow the same relation between some training quantity and the return and
one of them moves along it faster. The stochastic evaluation return of SAC, for example,
falls with the policy's entropy (sampled actions are noisier), so a run whose entropy
drops sooner scores higher even when its policies are no better *at the same entropy*.

``matched_returns`` bins every evaluation (one row per run x seed x evaluation, as
:func:`mvelab.experiments.results.collect` gives them) by a logged metric and reports,
per run label, the mean evaluation return in each bin. ``explained`` adds, per label,
the mean return predicted from the label's own distribution over the bins and the
*pooled* return of each bin (all labels together): when the predicted mean is close to
the actual one, the difference between the labels is explained by where they spend
their training in that metric, not by a better return at the same metric value.

This is an observational comparison (the metric also moves with training time); it
separates the two readings above, it does not prove a cause.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from mvelab.experiments._cli import UsageError

#: Metrics one can match on (numeric metrics.csv columns that describe training).
MATCHABLE = ("entropy", "alpha", "critic_loss", "actor_loss", "q_mean", "target_mean",
             "model_obs_mse", "model_loss")


def check_edges(edges: Sequence[float]) -> list:
  """The bin edges as floats; ``UsageError`` unless >= 2, finite, strictly increasing."""
  try:
    out = [float(e) for e in edges]
  except (TypeError, ValueError):
    raise UsageError(f"match_bins: bin edges must be numbers, got {list(edges)!r}") from None
  if len(out) < 2 or not all(math.isfinite(e) for e in out) or any(
      b <= a for a, b in zip(out, out[1:])):
    raise UsageError("match_bins: give at least two finite, strictly increasing bin edges, "
                     f"got {out!r}")
  return out


def check_metric(name: str) -> str:
  if name not in MATCHABLE:
    raise UsageError(f"match: {name!r} is not a metric to match on; choose one of "
                     f"{', '.join(MATCHABLE)}")
  return name


def _binned(df: pd.DataFrame, by: str, edges: list, after: float) -> pd.DataFrame:
  """The evaluations at env_steps >= ``after`` with a finite ``by`` and return, binned."""
  d = df[(df["env_steps"] >= after)].copy()
  d[by] = pd.to_numeric(d[by], errors="coerce")
  d["eval_return"] = pd.to_numeric(d["eval_return"], errors="coerce")
  d = d[np.isfinite(d[by]) & np.isfinite(d["eval_return"])]
  d["bin"] = pd.cut(d[by], edges)
  return d[d["bin"].notna()]


def matched_returns(df: pd.DataFrame, by: str, edges: Sequence[float],
                    after: float = 0) -> pd.DataFrame:
  """Mean evaluation return per bin of ``by`` and per label.

  Returns one row per (bin, label) with columns ``bin`` (the interval as text, e.g.
  "(-0.35, -0.3]"), ``label``, ``mean_return``, ``n_evals`` (evaluations in the bin) and
  ``n_seeds`` (seeds with at least one), plus one ``label = "pooled"`` row per bin
  (all labels together). Evaluations outside the edges, before ``after`` env steps, or
  with a missing metric are left out.
  """
  d = _binned(df, by, check_edges(edges), after)
  rows = []
  for (interval, label), g in d.groupby(["bin", "label"], observed=True, sort=True):
    rows.append(dict(bin=str(interval), label=label, mean_return=g["eval_return"].mean(),
                     n_evals=len(g), n_seeds=g["seed"].nunique()))
  for interval, g in d.groupby("bin", observed=True, sort=True):
    rows.append(dict(bin=str(interval), label="pooled", mean_return=g["eval_return"].mean(),
                     n_evals=len(g), n_seeds=g["seed"].nunique()))
  return pd.DataFrame(rows, columns=["bin", "label", "mean_return", "n_evals", "n_seeds"])


def explained(df: pd.DataFrame, by: str, edges: Sequence[float],
              after: float = 0) -> pd.DataFrame:
  """Per label: actual mean return against the one its ``by`` distribution predicts.

  Columns ``label``, ``n_evals``, ``mean_<by>``, ``actual`` (mean return of the label's
  binned evaluations) and ``predicted`` (the same evaluations, each given the pooled
  mean return of its bin), and ``residual`` = actual − predicted.
  """
  d = _binned(df, by, check_edges(edges), after)
  pooled = d.groupby("bin", observed=True)["eval_return"].mean()
  d["predicted"] = d["bin"].map(pooled).astype(float)
  out = d.groupby("label", sort=True).agg(
      n_evals=("eval_return", "size"), mean_metric=(by, "mean"),
      actual=("eval_return", "mean"), predicted=("predicted", "mean")).reset_index()
  out["residual"] = out["actual"] - out["predicted"]
  return out.rename(columns={"mean_metric": f"mean_{by}"})


def format_tables(matched: pd.DataFrame, expl: pd.DataFrame, by: str) -> str:
  """The two tables as aligned text: return per bin x label, then actual vs predicted."""
  wide = matched.pivot(index="bin", columns="label", values="mean_return")
  counts = matched.pivot(index="bin", columns="label", values="n_evals")
  order = [b for b in dict.fromkeys(matched["bin"])]
  labels = [c for c in wide.columns if c != "pooled"] + ["pooled"]
  header = [f"{by} bin"] + [f"{c} (n)" for c in labels]
  lines = [header]
  for b in order:
    cells = [b]
    for c in labels:
      v, n = wide.at[b, c], counts.at[b, c]
      cells.append("-" if pd.isna(v) else f"{v:.1f} ({int(n)})")
    lines.append(cells)
  widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
  text = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines]
  text.append("")
  cols = ["label", "n_evals", f"mean_{by}", "actual", "predicted", "residual"]
  rows = [cols] + [[str(r["label"]), str(int(r["n_evals"])), f"{r[f'mean_{by}']:.3f}",
                    f"{r['actual']:.1f}", f"{r['predicted']:.1f}", f"{r['residual']:+.1f}"]
                   for _, r in expl.iterrows()]
  widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
  text += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
  return "\n".join(text)
