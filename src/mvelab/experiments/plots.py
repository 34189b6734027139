"""Figures from a table of runs: learning curves, performance and cost vs horizon.

The input is the tidy frame of ``mvelab.experiments.results.collect(root)``: one row per
run x seed x evaluation with at least the columns ``run``, ``env``, ``agent``,
``expansion`` ("none", "critic", "actor", "retrace"), ``model`` (missing, "oracle",
"learned"), ``horizon``, ``seed``, ``env_steps``, ``eval_return`` and, for the cost figure,
``wall_time_s``. The unit of variation is one seed of one run, ``(run, seed)``. Each
figure shows one environment and one agent (SAC when present, else the first one, e.g.
DDPG with prefixed names); filter the frame to choose another agent or config variant.

* ``figure1``: the seed paper's Figure 1 for one environment. Top panel: critic expansion
  with a learned model (MVE); bottom panel: with the oracle (OVE). One curve per horizon H
  (mean over seeds, shaded band), SAC and Retrace as reference lines.
* ``performance_vs_horizon``: final return and normalised area under the curve vs H
  (``performance_vs_horizon_from_summary``: the same from kept per-run summary rows).
* ``cost_vs_horizon``: training seconds per 1000 environment steps vs H.
* ``plot_all`` writes all three, ``main`` is ``mvelab plot DIR``.

Every figure is written as PNG and PDF, each atomically (temporary file, then rename).
Figures are built on ``matplotlib.figure.Figure`` directly, so no window ever opens and
no global pyplot state is touched.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
  matplotlib.use("Agg")  # headless; an interactive session keeps the backend it chose
from matplotlib import ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
import numpy as np
import pandas as pd

from mvelab.experiments._cli import Parser, UsageError, fail
from mvelab.errors import ConfigError, check_choice

BANDS = ("std", "ci")
FIGURES = ("figure1", "performance_vs_h", "cost_vs_h")
REQUIRED_COLUMNS = ("run", "env", "agent", "expansion", "model", "horizon", "seed",
                    "env_steps", "eval_return")
DPI = 150
MODELS = ("learned", "oracle")
MODEL_STYLE = {
    "learned": dict(color="tab:blue", marker="o", name="MVE (learned model)"),
    "oracle": dict(color="tab:orange", marker="s", name="OVE (oracle)"),
}
BOOTSTRAP_SAMPLES = 2000
#: Which expansion a figure shows, and its model-line names ("critic": the seed's Figure 1).
EXPANSIONS = ("critic", "actor")
PANEL_NAMES = {
    "critic": {"learned": "MVE (learned model)", "oracle": "OVE (oracle)"},
    "actor": {"learned": "AE (learned model)", "oracle": "AE (oracle)"},
}


# ----------------------------------------------------------------------------- data


def _prepare(df: pd.DataFrame, env: Optional[str]) -> tuple:
  """Validates ``df``, picks one environment and one agent.

  Returns:
    ``(env, agent, rows)``: the environment, the agent ("sac" if present, else the first
    one), and that environment's and agent's rows with ``model`` as a string ("" when
    missing), ``horizon`` as an int, one row per (run, seed, env_steps).

  Raises:
    ConfigError (a ValueError): missing columns, no rows, or an unknown ``env``.
  """
  missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
  if missing:
    raise ConfigError(f"df: missing columns {', '.join(missing)}; "
                      f"required: {', '.join(REQUIRED_COLUMNS)}")
  envs = _envs(df)
  if not envs:
    raise ConfigError("df: no rows to plot")
  if env is None:
    env = envs[0]
  check_choice("env", env, envs)
  rows = df[df["env"] == env].copy()
  agents = list(pd.unique(rows["agent"]))
  agent = "sac" if "sac" in agents else agents[0]
  rows = rows[rows["agent"] == agent]
  rows["model"] = rows["model"].astype(object).where(rows["model"].notna(), "").astype(str)
  rows["horizon"] = pd.to_numeric(rows["horizon"], errors="coerce").fillna(0).astype(int)
  rows.loc[rows["expansion"] == "none", "horizon"] = 0
  rows["env_steps"] = pd.to_numeric(rows["env_steps"], errors="coerce")
  rows["eval_return"] = pd.to_numeric(rows["eval_return"], errors="coerce")
  rows = rows.dropna(subset=["env_steps"])
  rows = rows.drop_duplicates(["run", "seed", "env_steps"], keep="last")
  return env, agent, rows.sort_values(["run", "seed", "env_steps"])


def _envs(df: pd.DataFrame) -> list:
  """Environments in order of first appearance."""
  return [str(e) for e in pd.unique(df["env"].dropna())]


def _names(agent: str, expansion: str = "critic") -> dict:
  """Display names; SAC runs are plain, other agents get a prefix ("DDPG-MVE")."""
  check_choice("expansion", expansion, EXPANSIONS)
  prefix = "" if agent == "sac" else f"{agent.upper()}-"
  return dict(base=agent.upper(), prefix=prefix, expansion=expansion,
              models=PANEL_NAMES[expansion])


def _select(rows: pd.DataFrame, kind: str, expansion: str = "critic") -> pd.DataFrame:
  """Rows of one kind: "sac" (no expansion), "retrace", or a model ("learned", "oracle")
  of ``expansion`` ("critic" or "actor").

  Variants of one kind (labels with a suffix after ``H=<h>``, e.g. "MVE H=5 P=4" next to
  "MVE H=5") are not pooled: the plain variant is kept (else the most common one) with a
  warning naming what was left out. Filter ``df`` beforehand to plot another variant.
  """
  picked = _of_kind(rows, kind, expansion)
  return picked if kind == "sac" else _one_variant(picked, kind)


def _of_kind(rows: pd.DataFrame, kind: str, expansion: str) -> pd.DataFrame:
  """Rows of one kind, every variant: the filter ``_select`` and ``_select_summary`` share."""
  if kind == "sac":
    return rows[rows["expansion"] == "none"]
  if kind == "retrace":
    return rows[rows["expansion"] == "retrace"]
  return rows[(rows["expansion"] == expansion) & (rows["model"] == kind)]


def _one_variant(rows: pd.DataFrame, kind: str) -> pd.DataFrame:
  if "label" not in rows.columns or rows.empty:
    return rows
  variant = rows["label"].astype(str).str.replace(r"^.*?H=\d+", "", regex=True).str.strip()
  counts = variant.value_counts()
  if len(counts) <= 1:
    return rows
  keep = "" if "" in counts.index else counts.index[0]
  dropped = sorted(pd.unique(rows.loc[variant != keep, "label"].astype(str)))
  warnings.warn(f"{kind}: plotting variant {keep or 'plain'!r} only; left out "
                f"{', '.join(dropped)} (filter the table to plot another variant)",
                stacklevel=3)
  return rows[variant == keep]


def _horizons(rows: pd.DataFrame) -> list:
  return sorted(int(h) for h in pd.unique(rows["horizon"]))


def _num_seeds(rows: pd.DataFrame) -> int:
  return len(rows[["run", "seed"]].drop_duplicates())


def _curve(rows: pd.DataFrame, band: str) -> pd.DataFrame:
  """Mean over seeds and band edges at each ``env_steps``.

  ``band="std"``: mean +- one standard deviation (ddof 0) over the seeds with a finite
  return at that step (a diverged seed drops out). ``band="ci"``: the
  95% percentile-bootstrap confidence interval of the mean (fixed resampling seed).
  """
  rng = np.random.default_rng(0)
  out = []
  for step, g in rows.groupby("env_steps", sort=True):
    v = g["eval_return"].to_numpy(float)
    v = v[np.isfinite(v)]
    if not len(v):
      continue
    mean = v.mean()
    if band == "std":
      s = v.std()
      lo, hi = mean - s, mean + s
    else:
      means = v[rng.integers(0, len(v), (BOOTSTRAP_SAMPLES, len(v)))].mean(axis=1)
      lo, hi = np.percentile(means, [2.5, 97.5])
    out.append((step, mean, lo, hi))
  return pd.DataFrame(out, columns=["env_steps", "mean", "lo", "hi"])


def _seed_scores(rows: pd.DataFrame) -> pd.DataFrame:
  """Per (run, seed): final return and normalised area under the curve.

  As in ``results.summarize``: every seed of a run is cut at the run's common final step
  (the last evaluation all its seeds reached). ``final`` is the return there; ``auc`` is
  the trapezoid integral of the curve over environment steps divided by the step span
  (the average return over training; a single point gives its return). Both are NaN for
  a seed with a missing (diverged) return, and such seeds are left out of the means.
  """
  out = []
  for run, g in rows.groupby("run", sort=False):
    common = g.groupby("seed")["env_steps"].max().min()
    for seed, c in g[g["env_steps"] <= common].groupby("seed", sort=False):
      x = c["env_steps"].to_numpy(float)
      y = c["eval_return"].to_numpy(float)
      span = x[-1] - x[0]
      if not np.isfinite(y).all():
        auc = np.nan
      elif span > 0:
        auc = float(np.sum((y[1:] + y[:-1]) / 2.0 * np.diff(x)) / span)
      else:
        auc = float(y[0])
      out.append((run, seed, int(c["horizon"].iloc[0]), y[-1], auc))
  return pd.DataFrame(out, columns=["run", "seed", "horizon", "final", "auc"])


def _run_costs(rows: pd.DataFrame) -> pd.DataFrame:
  """Per run: wall-clock seconds per 1000 environment steps, max over its seeds.

  Taken from each seed's last evaluation row; the seeds of one run train together, so the
  slowest seed is the run's cost.
  """
  out = []
  for run, g in rows.groupby("run", sort=False):
    last = g.sort_values("env_steps").groupby("seed").tail(1)
    steps = last["env_steps"].to_numpy(float)
    wall = pd.to_numeric(last["wall_time_s"], errors="coerce").to_numpy(float)
    ok = (steps > 0) & np.isfinite(wall)
    if ok.any():
      out.append((run, int(g["horizon"].iloc[0]), float(np.max(wall[ok] / steps[ok] * 1000))))
  return pd.DataFrame(out, columns=["run", "horizon", "cost"])


def _stats(values: pd.DataFrame, column: str) -> pd.DataFrame:
  """Mean, std (ddof 0, as in ``results.summarize``) and count of the finite values of
  ``column`` per horizon; horizons without a finite value are left out."""
  values = values[np.isfinite(values[column].to_numpy(float))]
  g = values.groupby("horizon")[column]
  out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=0).fillna(0.0), "n": g.count()})
  return out.reset_index().sort_values("horizon")


# ----------------------------------------------------------------------------- drawing


def _steps_formatter() -> ticker.FuncFormatter:
  def fmt(x, _):
    if abs(x) >= 1e6:
      return f"{x / 1e6:g}M"
    if abs(x) >= 1e3:
      return f"{x / 1e3:g}k"
    return f"{x:g}"
  return ticker.FuncFormatter(fmt)


def _horizon_colors(horizons: list) -> dict:
  """Viridis from short (dark) to long (light) horizons; the pale yellow end is skipped."""
  cmap = matplotlib.colormaps["viridis"]
  if len(horizons) == 1:
    return {horizons[0]: cmap(0.35)}
  return {h: cmap(0.85 * i / (len(horizons) - 1)) for i, h in enumerate(horizons)}


def _retrace_grey(i: int, n: int) -> str:
  return str(0.45 if n == 1 else 0.3 + 0.35 * i / (n - 1))


def _seed_note(counts: list) -> str:
  counts = sorted(set(c for c in counts if c))
  if not counts:
    return "no seeds"
  if len(counts) == 1:
    return f"{counts[0]} seed{'s' if counts[0] != 1 else ''}"
  return f"{counts[0]}–{counts[-1]} seeds"


def _no_runs(ax) -> None:
  ax.text(0.5, 0.5, "no runs", transform=ax.transAxes, ha="center", va="center",
          fontsize=14, color="0.45")


def _save(fig: Figure, out_path) -> list:
  """Writes ``fig`` as ``out_path`` with suffix .png and .pdf (any suffix is replaced).

  Each file is written to a temporary name in the same directory and renamed into place.
  """
  path = Path(out_path)
  path = path.with_suffix(".png") if path.suffix else path.with_name(path.name + ".png")
  path.parent.mkdir(parents=True, exist_ok=True)
  written = []
  for fmt in ("png", "pdf"):
    target = path.with_suffix(f".{fmt}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
      fig.savefig(tmp, format=fmt, dpi=DPI)
      os.chmod(tmp, 0o644)
      os.replace(tmp, target)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise
    written.append(str(target))
  return written


# ----------------------------------------------------------------------------- figures


def figure1(df: pd.DataFrame, out_path, band: str = "std", env: Optional[str] = None,
            expansion: str = "critic") -> list:
  """Learning curves per horizon: learned model (top) and oracle (bottom), one env.

  Args:
    df: the tidy run table (see the module docstring).
    out_path: where to write; the suffix is replaced by .png and .pdf.
    band: "std" (mean +- one std over seeds) or "ci" (95% bootstrap CI of the mean).
    env: the environment to plot (default: the first one in ``df``).
    expansion: "critic" (critic expansion: MVE/OVE, the seed's Figure 1) or "actor"
      (actor expansion, AE).

  Returns:
    The paths written (PNG, PDF).

  Raises:
    ConfigError (a ValueError): unknown ``band``, ``env`` or ``expansion``, or a frame
      without rows.
  """
  check_choice("band", band, BANDS)
  env, agent, rows = _prepare(df, env)
  names = _names(agent, expansion)
  panels = [(m, _select(rows, m, expansion)) for m in MODELS]
  dyna = {m: rows[(rows["expansion"] == "dyna") & (rows["model"] == m)] for m in MODELS}
  colors = _horizon_colors(sorted(set().union(*(_horizons(r) for _, r in panels),
                                              *(_horizons(r) for r in dyna.values()))))
  sac, retrace = _select(rows, "sac"), _select(rows, "retrace")
  ref_curves = _reference_curves(sac, retrace, band, names)
  seeds = [_num_seeds(r[r["horizon"] == h]) for r in (panels[0][1], panels[1][1], retrace)
           for h in _horizons(r)] + [_num_seeds(sac)]

  fig = Figure(figsize=(9.5, 7.5), layout="constrained")
  axes = fig.subplots(2, 1, sharex=True)
  titles = {m: f"{names['prefix']}{names['models'][m]} — {env}" for m in MODELS}
  for ax, (model, prows) in zip(axes, panels):
    for h in _horizons(prows):
      c = _curve(prows[prows["horizon"] == h], band)
      ax.fill_between(c["env_steps"], c["lo"], c["hi"], color=colors[h], alpha=0.18, lw=0)
      ax.plot(c["env_steps"], c["mean"], color=colors[h], lw=1.8)
    for h in _horizons(dyna[model]):  # MBPO with the same model, rollout length k = h
      c = _curve(dyna[model][dyna[model]["horizon"] == h], band)
      ax.plot(c["env_steps"], c["mean"], color=colors[h], lw=1.6, ls="-.")
    for c, style in ref_curves:
      ax.plot(c["env_steps"], c["mean"], **style)
    if prows.empty:
      _no_runs(ax)
    ax.set_title(titles[model])
    ax.set_ylabel("evaluation return")
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_formatter(_steps_formatter())
  axes[1].set_xlabel("environment steps")
  axes[0].tick_params(labelbottom=True)

  handles = [Line2D([], [], color=colors[h], lw=2.5, label=f"H={h}") for h in colors]
  if any(not r.empty for r in dyna.values()):
    handles.append(Line2D([], [], color="0.3", lw=1.6, ls="-.",
                          label=f"{names['prefix']}MBPO, rollout k = H (dash-dot)"))
  handles += [Line2D([], [], **style) for _, style in ref_curves]
  what = "±1 std over seeds" if band == "std" else "95% bootstrap CI of mean"
  fig.legend(handles=handles, loc="outside right center", frameon=False, alignment="left",
             title=f"lines: mean of {_seed_note(seeds)}\nshaded: {what}",
             title_fontsize=9)
  try:
    return _save(fig, out_path)
  finally:
    fig.clear()


def _label(rows: pd.DataFrame, default: str) -> str:
  """The rows' ``label`` column value if there is exactly one, else ``default``."""
  if "label" in rows.columns:
    labels = pd.unique(rows["label"].dropna().astype(str))
    if len(labels) == 1:
      return str(labels[0])
  return default


def _reference_curves(sac, retrace, band, names) -> list:
  """(curve, line style with label) for SAC (black dashed) and each Retrace horizon."""
  out = []
  if not sac.empty:
    out.append((_curve(sac, band),
                dict(color="black", ls="--", lw=1.6, label=f"{names['base']} (H=0)")))
  hs = _horizons(retrace)
  for i, h in enumerate(hs):
    out.append((_curve(retrace[retrace["horizon"] == h], band),
                dict(color=_retrace_grey(i, len(hs)), ls=":", lw=2.0,
                     label=_label(retrace[retrace["horizon"] == h],
                                  f"{names['prefix']}Retrace H={h}"))))
  return out


def performance_vs_horizon(df: pd.DataFrame, out_path, env: Optional[str] = None,
                           expansion: str = "critic") -> list:
  """Final return and normalised AUC vs horizon, one line per model type.

  Each seed contributes its final return and its normalised area under the curve (average
  return over training), both at the run's common final step as in ``results.summarize``;
  points are mean +- std (ddof 0) over seeds, diverged seeds left out (counted in the
  title). SAC is the shared H=0 point of both lines and a dashed reference line with a
  +-std band; Retrace appears as grey diamonds at its horizons. The horizon axis is
  categorical (the H values present).

  Returns:
    The paths written (PNG, PDF).
  """
  env, agent, rows = _prepare(df, env)
  names = _names(agent, expansion)
  scores = {k: _seed_scores(_select(rows, k, expansion))
            for k in ("sac",) + MODELS + ("retrace",)}
  finite = {k: s[np.isfinite(s["final"].to_numpy(float))] for k, s in scores.items()}
  seeds = [int(n) for s in finite.values() for n in s.groupby("horizon").size()]
  left_out = sum(len(scores[k]) - len(finite[k]) for k in scores)

  note = f"; {left_out} diverged seed{'s' * (left_out != 1)} left out" if left_out else ""
  panels = {c: {k: _stats(s, c) for k, s in scores.items()} for c in ("final", "auc")}
  return _horizon_figure(panels, names, f"{env} (mean ± std over {_seed_note(seeds)}{note})",
                         out_path)


def _horizon_figure(panels: dict, names: dict, about: str, out_path) -> list:
  """The two panels (final return, AUC) of the performance-vs-H figure, saved.

  ``panels`` maps "final" and "auc" to the ``stats`` dict of ``_horizon_panel``.
  """
  fig = Figure(figsize=(11, 4.8), layout="constrained")
  axes = fig.subplots(1, 2)
  labels = {"final": "final evaluation return", "auc": "normalised AUC (mean return)"}
  titles = {"final": "final return", "auc": "area under the curve / step span"}
  for ax, column in zip(axes, ("final", "auc")):
    _horizon_panel(ax, panels[column], names)
    ax.set_ylabel(labels[column])
    ax.set_title(titles[column])
  fig.suptitle(f"{names['prefix']}{names['expansion']} expansion vs horizon — {about}")
  _bottom_legend(fig, axes)
  try:
    return _save(fig, out_path)
  finally:
    fig.clear()


SUMMARY_REQUIRED = ("env", "agent", "expansion", "model", "horizon", "n_seeds",
                    "final_mean", "final_std", "auc_mean", "auc_std")


def performance_vs_horizon_from_summary(summary: pd.DataFrame, out_path,
                                        env: Optional[str] = None,
                                        expansion: str = "critic") -> list:
  """``performance_vs_horizon`` drawn from a per-run summary instead of per-seed rows.

  For runs whose per-seed files are gone but whose ``results.summarize`` row was kept
  (``summary.csv`` of ``mvelab results``): each row gives its run's mean +- std (ddof 0)
  of the final return and of the normalised AUC, exactly the points
  ``performance_vs_horizon`` computes from the seeds. One row per (kind, horizon) is
  allowed; pick the variant to show beforehand. Diverged seeds cannot be recounted here,
  so the title names the seed counts of the rows as given.

  Args:
    summary: rows with the columns of ``SUMMARY_REQUIRED``.
    out_path: PNG path (a PDF is written next to it).
    env: the environment to draw (default: the only one in ``summary``).
    expansion: "critic" or "actor", as in ``performance_vs_horizon``.

  Returns:
    The paths written (PNG, PDF).
  """
  missing = [c for c in SUMMARY_REQUIRED if c not in summary.columns]
  if missing:
    raise ValueError(f"summary: missing columns {', '.join(missing)}; give the "
                     "summary.csv of `mvelab results`")
  envs = _envs(summary)
  if env is None and len(envs) != 1:
    raise ValueError(f"env: the summary holds {len(envs)} environments "
                     f"({', '.join(envs)}); name one")
  if env is None:
    env = envs[0]
  check_choice("env", env, envs)
  rows = summary[summary["env"] == env]
  agent = "sac" if (rows["agent"] == "sac").any() else str(rows["agent"].iloc[0])
  rows = rows[rows["agent"] == agent]
  names = _names(agent, expansion)
  kinds = {k: _select_summary(rows, k, expansion) for k in ("sac",) + MODELS + ("retrace",)}
  panels = {c: {k: _summary_stats(r, c) for k, r in kinds.items()} for c in ("final", "auc")}
  seeds = [int(n) for r in kinds.values() for n in r["n_seeds"]]
  return _horizon_figure(panels, names, f"{env} (mean ± std over {_seed_note(seeds)}; "
                         "from run summaries)", out_path)


def _select_summary(rows: pd.DataFrame, kind: str, expansion: str) -> pd.DataFrame:
  """Summary rows of one kind (as ``_select``), at most one per horizon."""
  picked = _of_kind(rows, kind, expansion)
  doubled = picked["horizon"][picked["horizon"].duplicated()].tolist()
  if doubled:
    raise ValueError(f"summary: several {kind} rows at H = "
                     f"{', '.join(str(int(h)) for h in sorted(set(doubled)))}; keep one "
                     "row per kind and horizon")
  return picked


def _summary_stats(rows: pd.DataFrame, column: str) -> pd.DataFrame:
  """The frame ``_horizon_panel`` takes (horizon, mean, std, n) from summary rows."""
  out = pd.DataFrame({"horizon": rows["horizon"].astype(int).to_numpy(),
                      "mean": rows[f"{column}_mean"].astype(float).to_numpy(),
                      "std": rows[f"{column}_std"].astype(float).fillna(0.0).to_numpy(),
                      "n": rows["n_seeds"].astype(int).to_numpy()})
  return out[np.isfinite(out["mean"])].sort_values("horizon").reset_index(drop=True)


def cost_vs_horizon(df: pd.DataFrame, out_path, env: Optional[str] = None,
                    expansion: str = "critic") -> list:
  """Training wall-clock cost vs horizon, one line per model type.

  The cost of a run is ``wall_time_s / env_steps * 1000`` at its last evaluation, the max
  over its seeds (they train together). Points are the mean over runs of the same kind and
  horizon (+- std when there are several). SAC is the shared H=0 point and a dashed line;
  the right axis shows the cost as a multiple of SAC's.

  Returns:
    The paths written (PNG, PDF).

  Raises:
    ConfigError (a ValueError): no ``wall_time_s`` column, or unknown ``env``.
  """
  if "wall_time_s" not in df.columns:
    raise ConfigError("df: missing column wall_time_s (needed for the cost figure)")
  env, agent, rows = _prepare(df, env)
  names = _names(agent, expansion)
  stats = {k: _stats(_run_costs(_select(rows, k, expansion)), "cost")
           for k in ("sac",) + MODELS + ("retrace",)}

  fig = Figure(figsize=(7.5, 5.2), layout="constrained")
  ax = fig.subplots()
  _horizon_panel(ax, stats, names, band=False)
  ax.set_ylabel("training wall-clock time (s per 1000 env steps)")
  ax.set_title(f"{names['prefix']}training cost vs horizon — {env}")
  ax.text(0.01, 0.99, "per run: slowest seed, at its last evaluation", transform=ax.transAxes,
          ha="left", va="top", fontsize=8, color="0.4")
  values = np.concatenate([s["mean"].to_numpy(float) for s in stats.values()] + [[]])
  values = values[np.isfinite(values) & (values > 0)]
  if len(values) and values.max() / values.min() > 30:
    ax.set_yscale("log")
  if not stats["sac"].empty and stats["sac"]["mean"].iloc[0] > 0:
    base = float(stats["sac"]["mean"].iloc[0])
    ax2 = ax.secondary_yaxis("right", functions=(lambda y: y / base, lambda r: r * base))
    ax2.set_ylabel(f"× {names['base']} cost")
  _bottom_legend(fig, [ax])
  try:
    return _save(fig, out_path)
  finally:
    fig.clear()


def _horizon_panel(ax, stats: dict, names: dict, band: bool = True) -> None:
  """Draws mean +- std per horizon for SAC, learned, oracle and Retrace on ``ax``.

  ``stats`` maps "sac", "learned", "oracle", "retrace" to frames with columns horizon,
  mean, std, n. The x axis is categorical over the horizons present (0 for SAC).
  """
  hs = sorted(set().union(*(set(int(h) for h in s["horizon"]) for k, s in stats.items()
                            if k != "sac")))
  sac = stats["sac"]
  if not sac.empty:
    hs = sorted(set(hs) | {0})
  pos = {h: i for i, h in enumerate(hs)}
  if not hs:
    _no_runs(ax)
    return
  sac_point = None
  if not sac.empty:
    m, s = float(sac["mean"].iloc[0]), float(sac["std"].iloc[0])
    sac_point = (pos[0], m)
    ax.axhline(m, color="black", ls="--", lw=1.2, zorder=1)
    if band and s > 0:
      ax.axhspan(m - s, m + s, color="black", alpha=0.07, lw=0, zorder=0)
    ax.errorbar([pos[0]], [m], yerr=[s], fmt="*", ms=12, color="black", capsize=3,
                zorder=4, label=f"{names['base']} (H=0)")
  both = not stats["learned"].empty and not stats["oracle"].empty
  for k, off in zip(MODELS, (-0.15, 0.15) if both else (0.0, 0.0)):
    st = stats[k]
    if st.empty:
      continue
    style = dict(MODEL_STYLE[k], name=names["models"][k])
    x = [pos[int(h)] + off for h in st["horizon"]]
    y = list(st["mean"])
    if sac_point is not None:
      ax.plot([sac_point[0]] + x, [sac_point[1]] + y, color=style["color"], lw=1.5, zorder=2)
    ax.errorbar(x, y, yerr=st["std"], fmt=style["marker"] + ("-" if sac_point is None else ""),
                color=style["color"], ms=6, capsize=3, lw=1.5, zorder=3,
                label=names["prefix"] + style["name"])
  rt = stats["retrace"]
  if not rt.empty:
    ax.errorbar([pos[int(h)] for h in rt["horizon"]], rt["mean"], yerr=rt["std"], fmt="D",
                color="0.45", ms=7, capsize=3, zorder=3, label=f"{names['prefix']}Retrace")
  ax.set_xticks(range(len(hs)), [str(h) for h in hs])
  ax.set_xlim(-0.5, len(hs) - 0.5)
  ax.set_xlabel("rollout horizon H")
  ax.grid(alpha=0.3)


def _bottom_legend(fig: Figure, axes) -> None:
  """One legend below the panels, built from the labelled artists of all axes."""
  handles, labels = [], []
  for ax in axes:
    for h, l in zip(*ax.get_legend_handles_labels()):
      if l not in labels:
        handles.append(h)
        labels.append(l)
  if handles:
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), frameon=False)


# ----------------------------------------------------------------------------- all + CLI


def plot_all(df: pd.DataFrame, out_dir, band: str = "std", *,
             env: Optional[str] = None) -> list:
  """Writes figure1, performance_vs_h and cost_vs_h (.png and .pdf) into ``out_dir``.

  With several environments in ``df`` every file name gets the suffix ``_<env>``.

  Args:
    df: the tidy run table.
    out_dir: directory to write (created if missing).
    band: band of figure 1, "std" or "ci".
    env: plot only this environment (default: every environment in ``df``).

  Returns:
    The paths written.
  """
  return _plot_set(df, Path(out_dir), {f: f for f in FIGURES}, band, env)


def _plot_set(df, out_dir: Path, stems: dict, band: str, env: Optional[str]) -> list:
  check_choice("band", band, BANDS)
  envs = _envs(df)
  if env is not None:
    check_choice("env", env, envs)
  paths = []
  for e in envs if env is None else [env]:
    name = {k: out_dir / f"{v}{f'_{e}' if len(envs) > 1 else ''}.png" for k, v in stems.items()}
    paths += figure1(df, name["figure1"], band=band, env=e)
    paths += performance_vs_horizon(df, name["performance_vs_h"], env=e)
    if "wall_time_s" in df.columns:
      paths += cost_vs_horizon(df, name["cost_vs_h"], env=e)
  return paths




def main(argv=None) -> int:
  """``mvelab plot DIR [--out FILE_OR_DIR] [--band std|ci] [--env ENV]``.

  Collects the runs below DIR, writes the figures and prints their paths. ``--out`` is a
  directory (default DIR), or a file name ending in .png/.pdf: figure 1 is written there
  and the other figures next to it as ``<stem>_performance_vs_h`` and ``<stem>_cost_vs_h``.
  Bad input prints one ``mvelab: error: ...`` line and returns 2.
  """
  parser = Parser(prog="mvelab plot",
                   description="Plot learning curves, performance and cost vs horizon "
                   "for the run directories below DIR.")
  parser.add_argument("dir", metavar="DIR", help="directory holding run directories")
  parser.add_argument("--out", metavar="FILE_OR_DIR", default=None,
                      help="output directory, or FILE.png for figure 1 (default: DIR)")
  parser.add_argument("--band", default="std", choices=BANDS,
                      help="figure-1 band: ±1 std over seeds or 95%% bootstrap CI of the mean")
  parser.add_argument("--env", default=None, help="plot only this environment")
  try:
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
  except UsageError as e:
    return fail(str(e))
  except SystemExit as e:  # --help
    return int(e.code or 0)
  if not os.path.isdir(args.dir):
    return fail(f"DIR: {args.dir!r} is not a directory; give a directory that holds "
                 "run directories")
  from mvelab.experiments import results
  try:
    df = results.collect(args.dir)
  except (ValueError, OSError) as e:
    return fail(str(e))
  if df is None or len(df) == 0:
    return fail(f"DIR: no runs found below {args.dir!r}; give a directory that holds "
                 "run directories (written by `mvelab train`)")
  envs = _envs(df)
  if args.env is not None and args.env not in envs:
    return fail(f"--env: unknown value {args.env!r}; allowed: {', '.join(envs)}")
  out = Path(args.out if args.out is not None else args.dir)
  if out.suffix.lower() in (".png", ".pdf"):
    stems = {"figure1": out.stem, "performance_vs_h": f"{out.stem}_performance_vs_h",
             "cost_vs_h": f"{out.stem}_cost_vs_h"}
    out_dir = out.parent
  else:
    stems, out_dir = {f: f for f in FIGURES}, out
  try:
    paths = _plot_set(df, out_dir, stems, args.band, args.env)
  except ValueError as e:
    return fail(str(e))
  from mvelab.diagnostics import figures as diagnostics_figures, found
  diagnostics = found.load(args.dir)
  if diagnostics is not None:  # written by `mvelab diagnose` or `train --diagnose_every`
    paths += diagnostics_figures.plot_all(diagnostics, Path(out_dir) / "diagnostics")
  for p in paths:
    print(p)
  return 0
