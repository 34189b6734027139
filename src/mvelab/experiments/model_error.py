"""``mvelab reproduce model-error``: how much model error each horizon tolerates.

The grid: critic expansion with a perturbed oracle (``models/perturbed.py``) at every
model-error size ε of ``--scales`` and horizon H of ``--horizons`` (H = 0 is SAC, run
once), STEVE at the largest H for every ε, and critic expansion with the learned model at
the largest H (the model whose error the study is about). The command runs it resumably
(:func:`mvelab.experiments.reproduce.run_spec`) and writes:

* ``model_error_returns.png``: final return and AUC against ε, one line per H, STEVE
  at the largest H, SAC and the learned model's run as reference lines;
* ``trust_map.png``: a heat map over (ε, H) of critic expansion's AUC minus SAC's AUC
  (return units; positive: expansion paid off);
* ``trust_table.csv``: mean AUC per (ε, H), and the largest H whose mean AUC beats SAC's
  at each ε;
* ``learned_on_eps_axis.csv``: the learned model placed on the ε axis. Its k-step
  observation error and the perturbed oracles' at every ε of ``--scales`` are measured
  on the same replayed transitions of the learned run's last checkpoint
  (:mod:`mvelab.diagnostics.eps_axis`); the learned model's *equivalent ε* (where the
  perturbed oracles' one-step error reaches its own) is marked on the trust map's and
  the returns figure's ε axis.
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from mvelab.errors import ConfigError

SCALES = (0.0, 0.01, 0.03, 0.1, 0.3)
HORIZONS = (0, 1, 3, 5, 10)
KINDS = ("physics", "noise")
DEFAULT_ENV = "paper_inverted_pendulum"
#: The small CPU scale of the default (sized for 2 cores; see docs/model_error.md).
SMALL = dict(hidden_sizes=[64, 64], batch_size=128, warmup_steps=1000, eval_every=500,
             eval_episodes=10, ce_values="direct")
SMALL_STEPS = 5000
SMALL_LEARNED = dict(model_hidden_sizes=[64, 64], model_batch_size=128,
                     model_warmup_updates=500)
FIGURES = ("model_error_returns", "trust_map")


def model_error_spec(env: str = DEFAULT_ENV, kind: str = "physics",
                     scales: Sequence = SCALES, horizons: Sequence = HORIZONS,
                     seeds: int = 5, steps: Optional[int] = SMALL_STEPS,
                     steve: bool = True, learned: bool = True) -> dict:
  """The sweep spec (a mapping) of the ε x H grid; see the module docstring.

  Raises:
    ConfigError: an option outside its allowed values (the message names it).
  """
  from mvelab import envs
  if env not in envs.ENVS:
    raise ConfigError(f"env: unknown environment {env!r}; allowed: {', '.join(envs.ENVS)}")
  if kind not in KINDS:
    raise ConfigError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
  scales = [float(s) for s in scales]
  if not scales or any(not np.isfinite(s) or s < 0 for s in scales):
    raise ConfigError(f"scales: must be finite numbers >= 0, got {scales}")
  horizons = sorted({int(h) for h in horizons})
  if not horizons or horizons[0] < 0 or horizons[-1] == 0:
    raise ConfigError(f"horizons: must be integers >= 0 with at least one > 0, got "
                      f"{horizons}")
  expanded = [h for h in horizons if h > 0]
  small_critic = {k: SMALL[k] for k in ("ce_values",)}
  runs = [dict(expansions="none")]
  for eps in scales:
    error = dict(model_error=kind, model_error_scale=eps)
    runs.append(dict(expansions="critic", models="oracle", horizons=expanded,
                     overrides=dict(small_critic, **error)))
    if steve:
      runs.append(dict(expansions="steve", models="oracle", horizons=[expanded[-1]],
                       overrides=error))
  if learned:
    runs.append(dict(expansions="critic", models="learned", horizons=[expanded[-1]],
                     overrides=dict(small_critic, **SMALL_LEARNED)))
  overrides = {k: v for k, v in SMALL.items() if k != "ce_values"}
  spec = dict(name=f"model-error-{kind}-{env}", envs=[env], presets=["default"],
              seeds=seeds, runs=runs, overrides=overrides)
  if steps is not None:
    spec["steps"] = steps
  return spec


def trust_table(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
  """``(auc, best)``: mean AUC of critic expansion per ε (rows) x H (columns), and per ε
  the largest H whose mean AUC beats SAC's (``-1``: none does)."""
  sac = summary[summary["expansion"] == "none"]["auc_mean"]
  sac_auc = float(sac.iloc[0]) if len(sac) else float("nan")
  ce = summary[(summary["expansion"] == "critic") & (summary["model"] == "oracle")]
  auc = ce.pivot_table(index="model_error_scale", columns="horizon", values="auc_mean")
  auc.insert(0, 0, sac_auc)
  beats = auc.columns[1:]
  best = pd.DataFrame({"largest_H_beating_SAC": [
      max([h for h in beats if auc.loc[e, h] > sac_auc] or [-1]) for e in auc.index]},
      index=auc.index)
  return auc, best


def learned_run_dir(summary: pd.DataFrame, runs_dir: str) -> Optional[str]:
  """The learned-model run of the grid, if it finished."""
  rows = summary[(summary["expansion"] == "critic") & (summary["model"] == "learned")
                 & (summary["status"] == "done")]
  return os.path.join(runs_dir, rows["run"].iloc[0]) if len(rows) else None


def place_learned(summary: pd.DataFrame, runs_dir: str, kind: str, out_dir: str
                  ) -> tuple[Optional[dict], list]:
  """Measures the learned model on the ε axis; ``(equivalent-ε info or None, paths)``."""
  from mvelab.diagnostics import eps_axis, loading
  from mvelab.experiments import results
  run = learned_run_dir(summary, runs_dir)
  scales = sorted(e for e in summary["model_error_scale"].dropna().unique() if e > 0)
  if run is None or not scales or not loading.find_runs(run):
    return None, []  # no learned run, no positive scale, or no checkpoint kept
  horizon = int(summary[summary["model"] == "learned"]["horizon"].iloc[0])
  errors = eps_axis.measure(run, kind, scales, horizon)
  placed = eps_axis.equivalent_eps(errors, k=1)
  path = os.path.join(out_dir, "learned_on_eps_axis.csv")
  results._atomic(path, lambda p: errors.to_csv(p, index=False))
  return placed, [path]


def _eps_position(eps: float, scales: list) -> float:
  """Fractional x position of ``eps`` on the categorical axis of ``scales``."""
  return float(np.interp(eps, scales, np.arange(len(scales)), right=len(scales) - 0.5))


def _mark_learned(ax, placed: Optional[dict], scales: list) -> None:
  if not placed or not np.isfinite(placed["eps"]):
    return
  more = " (extrapolated)" if placed["extrapolated"] else ""
  ax.axvline(_eps_position(placed["eps"], scales), color="tab:purple", ls="--", lw=1.2,
             label=f"learned model's 1-step error ≈ ε={placed['eps']:.2g}{more}")


def write_figures(df: pd.DataFrame, summary: pd.DataFrame, out_dir: str,
                  placed: Optional[dict] = None) -> list:
  """The returns-vs-ε figure and the trust map (PNG and PDF each); ``placed`` (from
  :func:`place_learned`) marks the learned model on their ε axes."""
  from matplotlib.figure import Figure
  from mvelab.experiments import plots
  auc, best = trust_table(summary)
  ce = summary[(summary["expansion"] == "critic") & (summary["model"] == "oracle")]
  sac = summary[summary["expansion"] == "none"]
  paths = []

  fig = Figure(figsize=(11, 4.6), layout="constrained")
  axes = fig.subplots(1, 2)
  scales = sorted(ce["model_error_scale"].unique())
  pos = {e: i for i, e in enumerate(scales)}
  for ax, col, title in zip(axes, ("final_mean", "auc_mean"), ("final return", "AUC")):
    for h in sorted(ce["horizon"].unique()):
      rows = ce[ce["horizon"] == h].sort_values("model_error_scale")
      ax.plot([pos[e] for e in rows["model_error_scale"]], rows[col], "o-", label=f"H={h}")
    steve = summary[summary["expansion"] == "steve"].sort_values("model_error_scale")
    if len(steve):
      ax.plot([pos.get(e, np.nan) for e in steve["model_error_scale"]], steve[col], "D:",
              color="0.3", label=f"STEVE H={int(steve['horizon'].max())}")
    if len(sac):
      ax.axhline(float(sac[col].iloc[0]), color="black", ls="--", label="SAC (H=0)")
    learned = summary[(summary["expansion"] == "critic") & (summary["model"] == "learned")]
    if len(learned):
      ax.axhline(float(learned[col].iloc[0]), color="tab:purple", ls=":",
                 label=f"MVE (learned) H={int(learned['horizon'].iloc[0])}")
    _mark_learned(ax, placed, scales)
    ax.set_xticks(range(len(scales)), [f"{e:g}" for e in scales])
    ax.set_xlabel("model error ε")
    ax.set_title(title)
    ax.grid(alpha=0.3)
  axes[0].legend(fontsize=8)
  paths += plots._save(fig, os.path.join(out_dir, "model_error_returns.png"))

  fig = Figure(figsize=(7.5, 4.8), layout="constrained")
  ax = fig.subplots()
  diff = auc.iloc[:, 1:].sub(auc.iloc[:, 0], axis=0).to_numpy(float)
  lim = np.nanmax(np.abs(diff)) if np.isfinite(diff).any() else 1.0
  image = ax.imshow(diff.T, origin="lower", cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
  ax.set_xticks(range(len(auc.index)), [f"{e:g}" for e in auc.index])
  ax.set_yticks(range(diff.shape[1]), [f"H={h}" for h in auc.columns[1:]])
  for i in range(diff.shape[0]):
    for j in range(diff.shape[1]):
      ax.text(i, j, f"{diff[i, j]:.0f}", ha="center", va="center", fontsize=8)
  _mark_learned(ax, placed, [float(e) for e in auc.index])
  if placed and np.isfinite(placed["eps"]):
    ax.legend(fontsize=8, loc="upper right")
  ax.set_xlabel(f"model error ε ({', '.join(sorted(set(ce['model_error'].dropna())))})")
  ax.set_title("critic expansion: AUC − SAC's AUC (blue: expansion pays off)")
  fig.colorbar(image, ax=ax, label="AUC difference (return units)")
  paths += plots._save(fig, os.path.join(out_dir, "trust_map.png"))
  return paths


def reproduce_model_error(out_dir: str, env: str = DEFAULT_ENV, kind: str = "physics",
                          scales: Sequence = SCALES, horizons: Sequence = HORIZONS,
                          seeds: int = 5, steps: Optional[int] = SMALL_STEPS,
                          jobs: Optional[int] = None, progress: bool = True,
                          executor=None, job_fn=None) -> dict:
  """Writes the spec, runs the grid (resumable), the tables and the figures."""
  from mvelab.experiments import reproduce, results, sweep

  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
    raise ConfigError(f"seeds: must be a positive integer, got {seeds!r}")
  data = model_error_spec(env, kind, scales, horizons, seeds, steps)

  def figures(df, d):
    summary = results.summarize(df)
    summary["model_error_scale"] = _per_run(df, "model_error_scale", summary)
    summary["model_error"] = _per_run(df, "model_error", summary)
    auc, best = trust_table(summary)
    table = os.path.join(d, "trust_table.csv")
    results._atomic(table, lambda p: auc.join(best).to_csv(p))
    placed, paths = place_learned(summary, os.path.join(d, sweep.RUNS_DIR), kind, d)
    if placed:
      print(learned_line(placed))
    return write_figures(df, summary, d, placed) + [table] + paths

  return reproduce.run_spec(data, "model-error", out_dir, figures, jobs=jobs,
                            executor=executor, progress=progress, job_fn=job_fn)


def learned_line(placed: dict) -> str:
  """One line: the learned model's one-step error and its equivalent ε."""
  pairs = ", ".join(f"{e:g}: {v:.3g}" for e, v in zip(placed["scales"],
                                                       placed["perturbed_obs_error"]))
  more = " (extrapolated beyond the largest scale)" if placed["extrapolated"] else ""
  return (f"learned model: 1-step obs error {placed['learned_obs_error']:.3g} (replay-std "
          f"units) ≈ ε = {placed['eps']:.3g}{more}; perturbed oracles {pairs}")


def _per_run(df: pd.DataFrame, column: str, summary: pd.DataFrame) -> list:
  """The value of a config ``column`` of each summary row's run (None if absent)."""
  if column not in df.columns:
    return [None] * len(summary)
  first = df.groupby("run")[column].first()
  return [first.get(r) for r in summary["run"]]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="mvelab reproduce model-error",
      description="Critic expansion with a perturbed oracle over a grid of model error "
      "eps x horizon H (plus STEVE at the largest H, the learned model at the largest H "
      "and SAC); then the returns against eps, the trust map and the table. Resumable.")
  parser.add_argument("--env", default=DEFAULT_ENV, help=f"environment (default {DEFAULT_ENV})")
  parser.add_argument("--kind", default="physics", choices=list(KINDS),
                      help="perturbation (default physics)")
  parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES),
                      help="model error sizes eps (default 0 0.01 0.03 0.1 0.3)")
  parser.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS),
                      help="horizons H (default 0 1 3 5 10; 0 is SAC)")
  parser.add_argument("--seeds", type=int, default=5, help="seeds per run (default 5)")
  parser.add_argument("--steps", type=int, default=SMALL_STEPS,
                      help=f"environment steps per run (default {SMALL_STEPS})")
  from mvelab.experiments import reproduce
  reproduce.add_run_options(parser, "runs/model-error-<kind>-<env>")
  return parser


def main(argv=None) -> int:
  """``mvelab reproduce model-error [options]``; 0 ok, 1 a run failed, 2 bad input."""
  from mvelab.experiments import reproduce
  args, code = reproduce.parse(_parser(), argv)
  if args is None:
    return code
  out = args.out or os.path.join("runs", f"model-error-{args.kind}-{args.env}")
  return reproduce.run_and_report(out, args, lambda executor: reproduce_model_error(
      out, args.env, args.kind, args.scales, args.horizons, args.seeds, args.steps,
      args.jobs, progress=not args.quiet, executor=executor))
