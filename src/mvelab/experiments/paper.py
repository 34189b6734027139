"""``mvelab reproduce paper``: the reference paper's experiment matrix on one of its tasks.

The reference code (``paper-and-official-code.md`` §11) runs, per task: SAC once (H = 0);
critic expansion (CE) and actor expansion (AE) with the oracle and the learned model at
H in {1, 3, 5, 10, 20, 30}; Retrace (model-free) at the same H; and the same for DDPG;
9 seeds each. This module writes that matrix as a sweep spec at the ``paper`` preset
(every setting of the reference's table, ``mvelab.config``), runs it resumably
(:func:`mvelab.experiments.sweep.run_sweep`), then writes the results table (with steps
to the task's threshold) and the figures: Figure 1 for CE and for AE, performance vs H
for each, and the cost vs H.

``--parts`` and ``--models`` pick a sub-matrix (e.g. ``--parts ce,retrace`` is "the CE
part"); ``--model-schedule fixed`` replaces the paper's learned-model schedule (one epoch
over the whole buffer after every environment step, which dominates the run time on a
CPU) with a fixed number of model updates per step, and ``--model-sampling balanced``
replaces the reference's member choice (every member evaluated on every imagined row) with
one that evaluates each member on its own share of the rows only (models/ensemble.py).
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from mvelab.config import MODEL_SAMPLING
from mvelab.errors import ConfigError, check_choice

HORIZONS = (1, 3, 5, 10, 20, 30)
PARTS = ("ce", "ae", "retrace")
MODELS = ("oracle", "learned")
AGENTS = ("sac", "ddpg")
#: Return that counts as "solved" for steps-to-threshold, per task (IP: 200 of 250).
THRESHOLDS = {"paper_inverted_pendulum": 200.0, "paper_cartpole": 400.0}
DEFAULT_ENV = "paper_inverted_pendulum"
_EXPANSION_OF_PART = {"ce": "critic", "ae": "actor", "retrace": "retrace"}


def _check_list(name: str, values: Sequence, allowed: Sequence) -> list:
  values = list(values)
  bad = [v for v in values if v not in allowed]
  if not values or bad:
    raise ConfigError(f"{name}: must be a non-empty list of {', '.join(map(str, allowed))}; "
                      f"got {', '.join(map(str, values)) or 'nothing'}")
  return values


def paper_spec(env: str = DEFAULT_ENV, seeds: int = 5, agents: Sequence = ("sac",),
               parts: Sequence = PARTS, models: Sequence = MODELS,
               horizons: Sequence = HORIZONS, steps: Optional[int] = None,
               model_schedule: Optional[str] = None,
               model_sampling: Optional[str] = None) -> dict:
  """The sweep spec (a mapping, see docs/sweeps.md) of the paper's matrix on ``env``.

  Every run uses ``presets: [paper]``; each agent gets its H = 0 baseline (the reference
  submits SAC's only). Retrace has no model and runs once per H.

  Raises:
    ConfigError: an option outside its allowed values (the message names it).
  """
  from mvelab import envs
  if env not in envs.ENVS or envs.ENVS[env].family != "paper":
    raise ConfigError(f"env: must be one of the paper's tasks "
                      f"{', '.join(envs.registry.paper_tasks())}; got {env!r}")
  agents = _check_list("agents", agents, AGENTS)
  parts = _check_list("parts", parts, PARTS)
  models = _check_list("models", models, MODELS)
  horizons = [int(h) for h in horizons]
  if not horizons or any(h <= 0 for h in horizons):
    raise ConfigError(f"horizons: must be positive integers, got {horizons}")
  if model_schedule not in (None, "fixed", "paper"):
    raise ConfigError(f"model_schedule: must be fixed or paper, got {model_schedule!r}")
  if model_sampling is not None:
    check_choice("model_sampling", model_sampling, MODEL_SAMPLING)
  runs = []
  for agent in agents:
    runs.append(dict(agents=agent, expansions="none"))
    for part in parts:
      block = dict(agents=agent, expansions=_EXPANSION_OF_PART[part], horizons=horizons)
      if part != "retrace":
        block["models"] = models
      runs.append(block)
  spec = dict(name=f"paper-{env}", envs=[env], presets=["paper"], seeds=seeds, runs=runs)
  if steps is not None:
    spec["steps"] = steps
  learned = {k: v for k, v in (("model_schedule", model_schedule),
                                ("model_sampling", model_sampling)) if v is not None}
  if learned and "learned" in models:
    # Only runs with the learned model take model options; the spec applies block
    # overrides to every run of a block, so learned runs get blocks of their own.
    spec["runs"] = _split_learned(runs, learned)
  return spec


def _split_learned(runs: list, overrides: dict) -> list:
  out = []
  for block in runs:
    models = block.get("models")
    if not models or "learned" not in models:
      out.append(block)
      continue
    rest = [m for m in models if m != "learned"]
    if rest:
      out.append(dict(block, models=rest))
    out.append(dict(block, models=["learned"], overrides=dict(overrides)))
  return out


def reproduce_paper(out_dir: str, env: str = DEFAULT_ENV, seeds: int = 5,
                    agents: Sequence = ("sac",), parts: Sequence = PARTS,
                    models: Sequence = MODELS, horizons: Sequence = HORIZONS,
                    steps: Optional[int] = None, model_schedule: Optional[str] = None,
                    model_sampling: Optional[str] = None, threshold: Optional[float] = None,
                    jobs: Optional[int] = None, band: str = "std", progress: bool = True,
                    executor=None, job_fn=None) -> dict:
  """Writes the spec, runs the sweep (resumable), the table and the figures.

  Returns:
    ``{"sweep", "spec", "tables", "figures", "summary_text", "wall_s"}`` as
    ``reproduce_figure1``.
  """
  from mvelab.experiments import reproduce

  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
    raise ConfigError(f"seeds: must be a positive integer, got {seeds!r}")
  data = paper_spec(env, seeds, agents, parts, models, horizons, steps, model_schedule,
                    model_sampling)
  return reproduce.run_spec(
      data, "paper", out_dir, lambda df, d: write_figures(df, d, band),
      threshold=THRESHOLDS.get(env) if threshold is None else threshold, jobs=jobs,
      executor=executor, progress=progress, job_fn=job_fn)


def write_figures(df, out_dir: str, band: str = "std") -> list:
  """Figure 1 and performance vs H for CE and AE (where present), and cost vs H."""
  from pathlib import Path
  from mvelab.experiments import plots
  out, paths = Path(out_dir), []
  present = set(df["expansion"].dropna())
  for expansion, tag in (("critic", "ce"), ("actor", "ae")):
    if expansion not in present:
      continue
    paths += plots.figure1(df, out / f"figure1_{tag}.png", band=band, expansion=expansion)
    paths += plots.performance_vs_horizon(df, out / f"performance_vs_h_{tag}.png",
                                          expansion=expansion)
  if "wall_time_s" in df.columns:
    paths += plots.cost_vs_horizon(df, out / "cost_vs_h.png")
  return paths


def _csv(text: str) -> list:
  return [t for t in text.split(",") if t]


def _parser() -> argparse.ArgumentParser:
  from mvelab import envs
  parser = argparse.ArgumentParser(
      prog="mvelab reproduce paper",
      description="The reference paper's matrix on one of its tasks at the paper preset: "
      "SAC, critic expansion (CE) and actor expansion (AE) with the oracle and the learned "
      f"model at H in {{{', '.join(map(str, HORIZONS))}}}, Retrace at the same H; then the "
      "table (with steps to threshold) and the figures. Re-running the same command "
      "resumes: finished runs are not redone.")
  parser.add_argument("--env", default=DEFAULT_ENV,
                      help=f"a paper task (default {DEFAULT_ENV}; "
                      f"{', '.join(envs.registry.paper_tasks())})")
  parser.add_argument("--seeds", type=int, default=5, help="seeds per run (paper: 9)")
  parser.add_argument("--agents", type=_csv, default=["sac"],
                      help="comma-separated: sac, ddpg (default sac)")
  parser.add_argument("--parts", type=_csv, default=list(PARTS),
                      help="comma-separated: ce, ae, retrace (default all)")
  parser.add_argument("--models", type=_csv, default=list(MODELS),
                      help="comma-separated: oracle, learned (default both)")
  parser.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS),
                      help="horizons H (default 1 3 5 10 20 30)")
  parser.add_argument("--steps", type=int, default=None,
                      help="environment steps per run (default: the paper's budget)")
  parser.add_argument("--model-schedule", default=None, choices=["fixed", "paper"],
                      help="learned-model schedule (default paper: one epoch over the "
                      "buffer per env step; fixed: one update per env step)")
  parser.add_argument("--model-sampling", default=None, choices=list(MODEL_SAMPLING),
                      help="learned-model member per imagined row (default iid, the "
                      "reference's: every member evaluated on every row; balanced: each "
                      "member on its own 1/members of the rows, the same per-row "
                      "distribution at a fraction of the cost)")
  parser.add_argument("--threshold", type=float, default=None,
                      help="return for steps-to-threshold (default: "
                      + ", ".join(f"{k} {v:g}" for k, v in THRESHOLDS.items()) + ")")
  parser.add_argument("--band", default="std", choices=["std", "ci"],
                      help="shaded band of the learning curves")
  from mvelab.experiments import reproduce
  reproduce.add_run_options(parser, "runs/paper-<env>")
  return parser


def main(argv=None) -> int:
  """``mvelab reproduce paper [options]``; 0 ok, 1 a run failed, 2 bad input, 130 Ctrl-C."""
  from mvelab.experiments import reproduce
  args, code = reproduce.parse(_parser(), argv)
  if args is None:
    return code
  out = args.out or os.path.join("runs", f"paper-{args.env}")
  return reproduce.run_and_report(out, args, lambda executor: reproduce_paper(
      out, args.env, args.seeds, args.agents, args.parts, args.models, args.horizons,
      args.steps, args.model_schedule, args.model_sampling, args.threshold, args.jobs,
      args.band,
      progress=not args.quiet, executor=executor))
