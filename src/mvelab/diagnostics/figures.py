"""The diagnostics figures and the per-horizon summary table, from the tidy table.

Per run (``run`` column):

* ``<run>_targets``: target bias, noise (sd over keys) and single-target action-signal
  correlation against H, at an early, a middle and the last checkpoint (mean ± sd over
  seeds), for every model × estimator;
* ``<run>_training``: critic bias, RMSE and action-signal correlation over training,
  with the oracle ``ce_direct`` targets' correlations per H;
* ``<run>_model_error`` (runs with a model error measured: a learned model, a perturbed
  oracle, or reference ``error_models``): compounding error against ``k``.
"""

from __future__ import annotations

import re

import pandas as pd
from matplotlib.figure import Figure

from mvelab.experiments.plots import _save

#: (model, estimator) lines of the target panels, with their styles (a perturbed oracle,
#: model ``kind:scale``, is drawn like the learned model in C1).
LINES = {("oracle", "ce_direct"): ("C0", "-"), ("oracle", "ce_control_variate"): ("C0", ":"),
         ("learned", "ce_direct"): ("C3", "-"), ("learned", "ce_control_variate"): ("C3", ":"),
         ("", "retrace"): ("0.4", "--")}
PERTURBED_COLOR = "C1"


def _lines(df: pd.DataFrame) -> dict:
  """LINES plus the perturbed oracles' targets present in ``df``."""
  out = dict(LINES)
  from mvelab.diagnostics.model_error import model_order
  for model in sorted(set(df["model"]) - {"", "oracle", "learned"}, key=model_order):
    for est, style in (("ce_direct", "-"), ("ce_control_variate", ":")):
      if ((df["model"] == model) & (df["estimator"] == est)).any():
        out[(model, est)] = (PERTURBED_COLOR, style)
  return out


def _stage_steps(df: pd.DataFrame) -> dict:
  """``{"early": s, "middle": s, "late": s}`` checkpoint env_steps (fewer if fewer exist)."""
  steps = sorted(df["env_steps"].unique())
  picks = {"early": steps[0], "middle": steps[len(steps) // 2], "late": steps[-1]}
  out, seen = {}, set()
  for name, s in reversed(picks.items()):  # a repeated checkpoint keeps its latest name
    if s not in seen:
      out[name], seen = s, seen | {s}
  return dict(reversed(out.items()))


def _over_seeds(rows: pd.DataFrame, by: str) -> pd.DataFrame:
  """Mean and sd over seeds of ``value`` per ``by``."""
  g = rows.groupby(by)["value"]
  return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=0).fillna(0.0)}).reset_index()


def _line(ax, stats, x, color, style, label):
  ax.plot(stats[x], stats["mean"], color=color, ls=style, marker="o", ms=3, label=label)
  ax.fill_between(stats[x], stats["mean"] - stats["sd"], stats["mean"] + stats["sd"],
                  color=color, alpha=0.12, lw=0)


def targets_figure(df: pd.DataFrame, out_path, title: str) -> list:
  """Bias / noise / action correlation of the targets against H at three checkpoints."""
  stages = _stage_steps(df)
  metrics = (("bias", "target bias to $Q^\\pi$"), ("noise", "target noise (sd over keys)"),
             ("action_corr_single", "action-signal corr. (1 target)"))
  fig = Figure(figsize=(4.2 * len(stages), 9.0), layout="constrained")
  axes = fig.subplots(len(metrics), len(stages), squeeze=False, sharex=True)
  for j, (stage, steps) in enumerate(stages.items()):
    at = df[df["env_steps"] == steps]
    signal = at[(at["estimator"] == "truth") & (at["metric"] == "action_signal_sd")]["value"]
    for i, (metric, ylabel) in enumerate(metrics):
      ax = axes[i, j]
      for (model, est), (color, style) in _lines(at).items():
        rows = at[(at["model"] == model) & (at["estimator"] == est) & (at["metric"] == metric)]
        if not rows.empty:
          _line(ax, _over_seeds(rows, "horizon"), "horizon", color, style,
                f"{model or 'replay'} {est}")
      if metric == "noise" and len(signal):
        ax.axhline(signal.mean(), color="k", lw=0.8, ls="-.",
                   label=f"action signal sd {signal.mean():.1f}")
      if metric == "bias":
        ax.axhline(0.0, color="k", lw=0.6)
        critic = at[(at["estimator"] == "critic") & (at["metric"] == "bias")]["value"]
        ax.axhline(critic.mean(), color="C2", lw=1.0, ls="--",
                   label=f"critic bias {critic.mean():.1f}")
      ax.set_ylabel(ylabel)
      ax.grid(alpha=0.3)
      if i == 0:
        ax.set_title(f"{stage}: {int(steps)} env steps")
      if i == len(metrics) - 1:
        ax.set_xlabel("horizon H")
      ax.legend(fontsize=7)
  fig.suptitle(title)
  return _save(fig, out_path)


def training_figure(df: pd.DataFrame, out_path, title: str) -> list:
  """Critic error and action-signal correlations over training."""
  critic = df[df["estimator"] == "critic"]
  fig = Figure(figsize=(13.0, 3.8), layout="constrained")
  axes = fig.subplots(1, 3)
  for ax, metric, ylabel in ((axes[0], "bias", "critic bias $Q - Q^\\pi$"),
                             (axes[1], "rmse", "critic RMSE")):
    _line(ax, _over_seeds(critic[critic["metric"] == metric], "env_steps"), "env_steps",
          "C2", "-", "critic")
    ax.set_ylabel(ylabel)
  ax = axes[2]
  _line(ax, _over_seeds(critic[critic["metric"] == "action_corr"], "env_steps"), "env_steps",
        "C2", "-", "critic")
  oracle = df[(df["model"] == "oracle") & (df["estimator"] == "ce_direct")
              & (df["metric"] == "action_corr_single")]
  horizons = sorted(oracle["horizon"].unique())
  cmap = [f"C{c}" for c in (0, 1, 4, 5, 6, 7, 8, 9)]
  for n, h in enumerate(horizons):
    _line(ax, _over_seeds(oracle[oracle["horizon"] == h], "env_steps"), "env_steps",
          cmap[n % len(cmap)], ":", f"oracle target H={int(h)}")
  ax.set_ylabel("action-signal correlation with $Q^\\pi$")
  ax.legend(fontsize=7)
  for ax in axes:
    ax.set_xlabel("env steps")
    ax.grid(alpha=0.3)
  fig.suptitle(title)
  return _save(fig, out_path)


def model_error_figure(df: pd.DataFrame, out_path, title: str) -> list:
  """Compounding error against k: one model at three checkpoints, or several models
  (the run's and reference perturbed oracles) at the last checkpoint."""
  rows = df[df["estimator"] == "model"]
  from mvelab.diagnostics.model_error import model_order
  models = sorted(rows["model"].unique(), key=model_order)
  fig = Figure(figsize=(10.0, 3.8), layout="constrained")
  axes = fig.subplots(1, 2)
  if len(models) == 1:
    curves = [(rows[rows["env_steps"] == steps], f"C{n}", f"{stage}: {int(steps)} steps")
              for n, (stage, steps) in enumerate(_stage_steps(rows).items())]
  else:
    last = rows[rows["env_steps"] == rows["env_steps"].max()]
    curves = [(last[last["model"] == m], f"C{n}", m) for n, m in enumerate(models)]
  for at, color, label in curves:
    for ax, metric in zip(axes, ("obs_error", "reward_error")):
      _line(ax, _over_seeds(at[at["metric"] == metric], "k"), "k", color, "-", label)
  axes[0].set_ylabel("obs error (RMS, per-dim std units)")
  axes[1].set_ylabel("reward error (RMS)")
  for ax in axes:
    ax.set_xlabel("k (model steps, open loop)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(title)
  return _save(fig, out_path)


def _stem(run: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=-]+", "_", run).strip("_") or "run"


def plot_all(df: pd.DataFrame, out_dir) -> list:
  """Every figure of every run in ``df`` into ``out_dir``; the paths written."""
  import os
  paths = []
  for run, rows in df.groupby("run", sort=True):
    label = rows["label"].iloc[0] if "label" in rows else run
    title = f"{label} ({run}), {rows['seed'].nunique()} seeds"
    stem = os.path.join(out_dir, _stem(run))
    paths += targets_figure(rows, stem + "_targets.png", title)
    paths += training_figure(rows, stem + "_training.png", title)
    if (rows["estimator"] == "model").any():
      paths += model_error_figure(rows, stem + "_model_error.png", title)
  return paths


def horizon_table(df: pd.DataFrame, steps=None) -> pd.DataFrame:
  """One row per (run, model, estimator, H) at the last checkpoint (or ``steps``): mean
  over seeds of bias, its MC error, RMSE, noise and the single-target action correlation."""
  out = []
  for run, rows in df.groupby("run", sort=True):
    at = rows[rows["env_steps"] == (rows["env_steps"].max() if steps is None else steps)]
    at = at[at["estimator"].isin(["ce_direct", "ce_control_variate", "retrace"])]
    wide = at.groupby(["model", "estimator", "horizon", "metric"])["value"].mean().unstack(
        "metric").reset_index()
    wide.insert(0, "run", run)
    wide.insert(1, "env_steps", int(at["env_steps"].max()))
    out.append(wide)
  cols = ["run", "env_steps", "model", "estimator", "horizon", "bias", "bias_se", "rmse",
          "noise", "action_corr_single", "action_corr"]
  table = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=cols)
  return table[[c for c in cols if c in table]]


def sweep_figure(df: pd.DataFrame, out_path) -> list:
  """Each run's last checkpoint against the run's own H: critic action-signal correlation,
  critic RMSE, and the noise-to-signal ratio of the run's own target (its model, its H)."""
  last = df[df["env_steps"] == df.groupby("run")["env_steps"].transform("max")]
  fig = Figure(figsize=(13.0, 3.8), layout="constrained")
  axes = fig.subplots(1, 3)
  panels = ((axes[0], "critic", "action_corr", "critic action-signal corr. with $Q^\\pi$"),
            (axes[1], "critic", "rmse", "critic RMSE to $Q^\\pi$"),
            (axes[2], "own", "noise_to_signal", "noise / action signal of own-H target"))
  kinds = (("oracle", "OVE", "C0"), ("learned", "MVE", "C3"))
  for ax, source, metric, ylabel in panels:
    for model, name, color in kinds:
      runs = last[(last["run_expansion"] == "critic") & (last["run_model"] == model)]
      if source == "critic":
        rows = runs[(runs["estimator"] == "critic") & (runs["metric"] == metric)]
      else:
        rows = runs[(runs["model"] == model) & (runs["estimator"] == "ce_direct")
                    & (runs["metric"] == metric) & (runs["horizon"] == runs["run_horizon"])]
      if not rows.empty:
        _line(ax, _over_seeds(rows, "run_horizon"), "run_horizon", color, "-", name)
    sac = last[(last["run_expansion"] == "none") & (last["estimator"] == "critic")
               & (last["metric"] == metric)]
    if source == "critic" and not sac.empty:
      ax.errorbar([0], [sac["value"].mean()], [sac["value"].std(ddof=0)], color="k",
                  marker="s", label="SAC")
    ax.set_xlabel("the run's horizon H")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  steps = int(last["env_steps"].max()) if len(last) else 0
  fig.suptitle(f"diagnostics at each run's last checkpoint ({steps} env steps), mean ± sd "
               f"over seeds")
  return _save(fig, out_path)
