#!/usr/bin/env python
"""Learning results of value expansion on ``pendulum`` at a fixed budget of env steps.

Trains, with ``mvelab.runner.train`` (the code path of ``mvelab train``), every config of

  SAC             H = 0 (``expansion=none``)
  critic-oracle   critic expansion (MVE targets) with the true simulator, H in --horizons
  critic-learned  critic expansion with the learned ensemble (default preset's model:
                  5 members of (128, 128), 1 model update per env step after 1000
                  warm-up updates), H in --horizons
  retrace         Retrace over H + 1 real transitions, H in --retrace-horizons

for ``--seeds`` seeds (seeds 0..n-1, vmapped, split over ``--workers`` pinned processes)
and prints one row per config:

  final return    eval return at the last evaluation, mean ± std over seeds (np.std,
                  ddof = 0, as ``mvelab train`` prints it)
  AUC             area under the learning curve: trapezoid integral of the eval return
                  over env steps, from the first evaluation (end of the warm-up, untrained
                  policy) to the last, divided by that step range, i.e. the time-averaged
                  return; computed per seed, then mean ± std over seeds (the mean equals
                  the AUC of the seed-mean curve)
  diverged        seeds that went non-finite (their later evaluations are missing and they
                  are left out of the means)
  wall s          the whole ``train`` call: process spawn, compile, training, evaluations
  compile s       compile time summed over the worker processes (``RunResult``)

then the seed-mean learning curves (one column per config).

Every evaluation is ``--eval-episodes`` episodes from fixed initial states with the mean
action (default preset). Defaults: 10000 env steps (1000 random warm-up steps, then an
evaluation every 1000 steps: 10 evaluations after the initial one), networks (128, 128),
batch 128, UTD 1, 5 seeds on 2 workers, H in {1, 3, 5, 10} for critic expansion and
{3} for Retrace: 10 configs. Measured: 31.8 min on 2 cores shared with other jobs
(load average 4-5, each worker at ~55-60 % of a core), i.e. about 18-20 min on 2 idle
cores. critic-learned costs the most (its model trains every step; H = 10 alone took 7 min
of the 31.8), SAC the least (1 min). Everything else is mvelab's default preset.

Usage::

  .venv/bin/python benchmarks/expansion_returns.py --out expansion_returns.md
  .venv/bin/python benchmarks/expansion_returns.py --quick          # tiny, ~2-4 min
  .venv/bin/python benchmarks/expansion_returns.py --steps 20000 --horizons 1,5 \\
      --variants sac,critic-oracle --seeds 3 --hidden 256,256
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_common.py
from _common import log as _log, md_table as _md_table, parse_list as _parse_list, write_out  # noqa: E402
from mvelab.experiments import stats  # noqa: E402

VARIANTS = {
    "sac": dict(expansion="none", model=None),
    "critic-oracle": dict(expansion="critic", model="oracle"),
    "critic-learned": dict(expansion="critic", model="learned"),
    "retrace": dict(expansion="retrace", model=None),
}
#: Rough wall time of one config relative to SAC, for the ETA only (from the default run
#: on 2 shared cores: the learned model adds its training, every H adds a rollout step).
COST_PER_H = {"sac": 0.0, "critic-oracle": 0.15, "critic-learned": 0.35, "retrace": 0.15}
COST_BASE = {"sac": 1.0, "critic-oracle": 1.5, "critic-learned": 3.4, "retrace": 1.5}








def _pm(mean, std, digits=1):
  if not math.isfinite(mean):
    return "n/a"
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclasses.dataclass
class Result:
  name: str
  variant: str
  horizon: int
  final_mean: float
  final_std: float
  auc_mean: float
  auc_std: float
  diverged: int
  seeds: int
  wall_s: float
  compile_s: float
  train_s: float
  curve: dict  # env_steps -> mean return over the seeds that have it


def config_name(variant, horizon):
  return "SAC (H=0)" if variant == "sac" else f"{variant} H={horizon}"


def make_config(args, variant, horizon):
  from mvelab.config import Config
  v = VARIANTS[variant]
  return Config(env=args.env, expansion=v["expansion"], model=v["model"], horizon=horizon,
                total_steps=args.steps, warmup_steps=args.warmup, eval_every=args.eval_every,
                eval_episodes=args.eval_episodes, batch_size=args.batch,
                hidden_sizes=args.hidden, seed=0, num_seeds=args.seeds)


def summarize(name, variant, horizon, result, wall_s) -> Result:
  by_seed: dict = {}
  for r in result.rows:
    by_seed.setdefault(r["seed"], []).append((r["env_steps"], r["eval_return"],
                                              bool(r["diverged"])))
  finals, aucs, curves, diverged = [], [], {}, 0
  for seed, rs in by_seed.items():
    rs.sort()
    steps = np.array([s for s, _, _ in rs], dtype=float)
    ret = np.array([x for _, x, _ in rs], dtype=float)
    if any(d for _, _, d in rs) or not np.all(np.isfinite(ret)):
      diverged += 1
      continue
    finals.append(ret[-1])
    aucs.append(stats.auc(steps, ret))
    for s, x in zip(steps, ret):
      curves.setdefault(int(s), []).append(x)
  mean = lambda xs: float(np.mean(xs)) if xs else float("nan")
  std = lambda xs: float(np.std(xs)) if xs else float("nan")
  return Result(name, variant, horizon, mean(finals), std(finals), mean(aucs), std(aucs),
                diverged, len(by_seed), wall_s, result.compile_time_s, result.train_time_s,
                {s: float(np.mean(v)) for s, v in sorted(curves.items())})


def results_table(results) -> str:
  rows = []
  for r in results:
    rows.append([r.name, _pm(r.final_mean, r.final_std), _pm(r.auc_mean, r.auc_std),
                 f"{r.diverged}/{r.seeds}", f"{r.wall_s:.0f}", f"{r.compile_s:.0f}"])
  return _md_table(["config", "final return (mean ± std)", "AUC (mean ± std)",
                    "diverged", "wall s", "compile s"], rows)


def curve_table(results) -> str:
  steps = sorted({s for r in results for s in r.curve})
  header = ["env steps"] + [r.name for r in results]
  rows = [[str(s)] + [f"{r.curve[s]:.0f}" if s in r.curve else "" for r in results]
          for s in steps]
  return _md_table(header, rows)


def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--env", default="pendulum")
  ap.add_argument("--steps", type=int, default=10_000, help="env steps incl. warm-up")
  ap.add_argument("--warmup", type=int, default=1000, help="random-action warm-up steps")
  ap.add_argument("--eval-every", type=int, default=1000)
  ap.add_argument("--eval-episodes", type=int, default=10)
  ap.add_argument("--hidden", default="128,128", help="hidden widths of actor and critics")
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--workers", type=int, default=2)
  ap.add_argument("--variants", default="sac,critic-oracle,critic-learned,retrace",
                  help=f"comma-separated from {','.join(VARIANTS)}")
  ap.add_argument("--horizons", default="1,3,5,10", help="H of critic expansion")
  ap.add_argument("--retrace-horizons", default="3", help="H of Retrace")
  ap.add_argument("--quick", action="store_true",
                  help="tiny settings to check the script: 2500 steps, warm-up 500, eval "
                       "every 500 (2 episodes), (32, 32), batch 32, 2 seeds, H = 1")
  ap.add_argument("--out", default=None, help="also write the tables as markdown here")
  args = ap.parse_args(argv)
  if args.quick:
    args.steps, args.warmup, args.eval_every, args.eval_episodes = 2500, 500, 500, 2
    args.hidden, args.batch, args.seeds = "32,32", 32, 2
    args.horizons = args.retrace_horizons = "1"
  args.hidden = _parse_list(args.hidden, int)
  args.variants = _parse_list(args.variants)
  for v in args.variants:
    if v not in VARIANTS:
      ap.error(f"--variants: unknown {v!r}; allowed: {', '.join(VARIANTS)}")
  args.horizons = _parse_list(args.horizons, int)
  args.retrace_horizons = _parse_list(args.retrace_horizons, int)
  return args


def plan(args):
  out = []
  for v in args.variants:
    hs = (0,) if v == "sac" else (args.retrace_horizons if v == "retrace" else args.horizons)
    out += [(v, h) for h in hs]
  return out


def main(argv=None) -> int:
  args = parse_args(argv)
  warnings.filterwarnings("ignore")
  from mvelab import runner
  from mvelab.config import resolve
  todo = plan(args)
  for v, h in todo:  # fail fast on a bad config before spending any time
    resolve(make_config(args, v, h))
  cost = {(v, h): COST_BASE[v] + COST_PER_H[v] * h for v, h in todo}
  load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
  _log(f"# expansion returns | {args.env} | {len(todo)} configs | {args.seeds} seeds on "
       f"{args.workers} workers | {args.steps} steps (warm-up {args.warmup}, eval every "
       f"{args.eval_every}, {args.eval_episodes} episodes) | hidden {args.hidden} | batch "
       f"{args.batch} | load {load0}")
  results = []
  t0 = time.perf_counter()
  done_cost = 0.0
  for i, (v, h) in enumerate(todo):
    name = config_name(v, h)
    _log(f"[{i + 1}/{len(todo)}] {name} ...")
    t = time.perf_counter()
    res = runner.train(make_config(args, v, h), seeds=list(range(args.seeds)),
                       workers=args.workers, progress=False)
    wall = time.perf_counter() - t
    r = summarize(name, v, h, res, wall)
    results.append(r)
    done_cost += cost[(v, h)]
    elapsed = time.perf_counter() - t0
    left = sum(cost[k] for k in todo[i + 1:])
    eta = elapsed / done_cost * left
    _log(f"[{i + 1}/{len(todo)}] {name}: final {_pm(r.final_mean, r.final_std)} | AUC "
         f"{_pm(r.auc_mean, r.auc_std)} | diverged {r.diverged}/{r.seeds} | wall {wall:.0f} s "
         f"(compile {r.compile_s:.0f} s summed over workers) | elapsed {elapsed / 60:.1f} min, "
         f"ETA {eta / 60:.1f} min")
  total = time.perf_counter() - t0
  load1 = " ".join(f"{x:.2f}" for x in os.getloadavg())
  import jax
  head = (f"Value expansion on `{args.env}`: {args.seeds} seeds (0..{args.seeds - 1}, "
          f"{args.workers} workers), {args.steps} env steps (warm-up {args.warmup}, "
          f"evaluation every {args.eval_every} steps with {args.eval_episodes} episodes, "
          f"mean action), networks {args.hidden}, batch {args.batch}, UTD 1, default "
          f"preset otherwise; jax {jax.__version__}, {os.cpu_count()} cores, load average "
          f"{load0} at start, {load1} at end; total {total / 60:.1f} min.\n\n"
          "Final return: last evaluation, mean ± std (ddof 0) over seeds. AUC: trapezoid "
          "integral of the eval return over env steps from the first evaluation (end of "
          "the warm-up) to the last, divided by the step range (= time-averaged return), "
          "per seed, mean ± std over seeds. Wall: whole `train` call incl. process spawn "
          "and compile; compile: summed over the worker processes.")
  text = "\n\n".join([head, results_table(results),
                      "Seed-mean eval return per evaluation:", curve_table(results)]) + "\n"
  _log("\n" + text)
  write_out(text, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
