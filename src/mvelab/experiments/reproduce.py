"""``mvelab reproduce figure1``: the seed paper's Figure 1 as one resumable command.

Figure 1 of the seed paper shows learning curves of critic expansion with a learned model
(MVE, top) and with the true simulator (OVE, bottom) for H in {1, 3, 5, 10, 20, 30}, mean
and spread over 5 seeds, against SAC (H = 0). This module writes that sweep spec, runs it
(:func:`mvelab.experiments.sweep.run_sweep`: finished runs are skipped on a re-run), then
writes the results table (:mod:`mvelab.experiments.results`) and the figures
(:mod:`mvelab.experiments.plots`).

Two scales:

* ``--preset default`` (the default): a small CPU version on the paper's own task,
  ``paper_inverted_pendulum``, sized to finish in at most 15 minutes on 2 CPU cores
  including set-up (``SMALL`` below: networks (64, 64), batch 128, a (64, 64) ensemble,
  :func:`small_steps` environment steps, 5 seeds vmapped per run; the diagnostics of
  each run's last checkpoint with ``SMALL_DIAGNOSTICS``, run by the sweep's worker
  right after the run trains: :func:`diagnosed_job`). Retrace at ``H = 3`` is added
  as a model-free reference. ``--env pendulum`` is the earlier main job (10k steps).
  Why (64, 64) and not the paper's (256, 256): with the paper's widths the 14 runs alone
  took 13 min 48 s on 2 cores, too long with set-up and diagnostics, and the ordering of
  H is the same at both widths (docs/figure1.md measures both).
* ``--preset paper``: the reference paper's settings for the chosen environment (its
  steps, networks, batch, ensemble and model schedule; ``--env paper_inverted_pendulum``
  etc.; ``mvelab reproduce paper`` runs the reference's whole matrix on such a task),
  for a machine with a GPU: no size overrides.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from typing import Optional

from mvelab.errors import ConfigError

HORIZONS = (1, 3, 5, 10, 20, 30)
RETRACE_HORIZON = 3
#: Default environment of both presets: the paper's own inverted-pendulum task.
DEFAULT_ENV = "paper_inverted_pendulum"
SMALL_STEPS = 10000
#: ... per environment where it differs from ``SMALL_STEPS``: at the small scale every
#: run of the paper's inverted pendulum has learned by 5k steps (SAC reaches 200 of 250 at
#: about 4.3k steps on 5 of 5 seeds; docs/figure1.md).
SMALL_STEPS_BY_ENV = {"paper_inverted_pendulum": 5000}
#: Diagnostics settings of the small scale (an eighth of the default Monte-Carlo work:
#: the ground truth of the paper's task steps 32 physics substeps per agent step). 8
#: rollouts instead of 16 cut a pass by about 30%; the figure's critic RMSE moved by at
#: most 0.7, its action correlation by at most 0.11 (docs/figure1.md, "Diagnostics").
SMALL_DIAGNOSTICS = dict(probes=128, rollouts=8)
#: Overrides of the small CPU default (``--preset default``).
SMALL = dict(hidden_sizes=[64, 64], batch_size=128, warmup_steps=1000, eval_every=500,
             eval_episodes=10)
#: ... of its critic-expansion runs (both models) and of its learned-model runs.
SMALL_CRITIC = dict(ce_values="direct")
SMALL_LEARNED = dict(model_hidden_sizes=[64, 64], model_batch_size=128,
                     model_warmup_updates=500)
FIGURES = ("figure1", "performance_vs_h", "cost_vs_h")
#: ``--with-dyna``: MBPO's rollout lengths and settings in the figure (small CPU scale).
DYNA_HORIZONS = (1, 5)
DYNA = dict(dyna_rollouts=32, dyna_retain=250)


def small_steps(env: str) -> int:
  """Environment steps per run of the small scale on ``env``."""
  return SMALL_STEPS_BY_ENV.get(env, SMALL_STEPS)


def figure1_spec(env: Optional[str] = None, steps: Optional[int] = None, seeds: int = 5,
                 preset: str = "default", retrace: bool = True,
                 dyna: bool = False) -> dict:
  """The sweep spec (a mapping, see docs/sweeps.md) of Figure 1.

  Args:
    env: environment (default: ``paper_inverted_pendulum``).
    steps: environment steps per run (default: :func:`small_steps` for the default preset,
      the paper's per-environment budget for ``paper``).
    seeds: seeds per run (vmapped in one program).
    preset: ``default`` (small CPU scale, ``SMALL`` overrides) or ``paper`` (full scale).
    retrace: add Retrace at ``H = RETRACE_HORIZON`` as a model-free reference.
    dyna: add MBPO (``--expansion dyna``) with the learned model and the oracle at rollout
      lengths ``DYNA_HORIZONS``, with ``DYNA`` settings (one SAC update per environment
      step, as every other run of the figure).
  """
  small = preset == "default"
  env = env or DEFAULT_ENV
  steps = steps or (small_steps(env) if small else None)
  critic = dict(expansions="critic", horizons=list(HORIZONS))
  learned = dict(critic, models="learned")
  oracle = dict(critic, models="oracle")
  if small:
    learned["overrides"] = dict(SMALL_CRITIC, **SMALL_LEARNED)
    oracle["overrides"] = dict(SMALL_CRITIC)
  spec = dict(name=f"figure1-{env}-{preset}", envs=[env], presets=[preset], seeds=seeds,
              runs=[dict(expansions="none"), learned, oracle])
  if retrace:
    spec["runs"].append(dict(expansions="retrace", horizons=[RETRACE_HORIZON]))
  if dyna:
    spec["runs"].append(dict(expansions="dyna", models="oracle", horizons=list(DYNA_HORIZONS),
                             overrides=dict(DYNA)))
    spec["runs"].append(dict(expansions="dyna", models="learned",
                             horizons=list(DYNA_HORIZONS),
                             overrides=dict(DYNA, **(SMALL_LEARNED if small else {}))))
  if steps is not None:
    spec["steps"] = steps
  if small:
    spec["overrides"] = dict(SMALL)
  return spec


def reproduce_figure1(out_dir: str, env: Optional[str] = None, steps: Optional[int] = None,
                      seeds: int = 5, preset: str = "default", jobs: Optional[int] = None,
                      retrace: bool = True, band: str = "std", dyna: bool = False,
                      progress: bool = True, executor=None, job_fn=None) -> dict:
  """Writes the spec, runs the sweep (resumable), the table and the figures.

  ``executor`` and ``job_fn`` are passed to :func:`mvelab.experiments.sweep.run_sweep`
  (defaults: ``jobs`` processes, ``sweep.run_job``).

  Returns:
    ``{"sweep": SweepResult, "tables": {name: path}, "figures": [paths], "spec": path,
    "wall_s": seconds}``.

  Raises:
    ConfigError: bad options (the message names the option).
  """
  from mvelab.experiments import plots

  if preset not in ("default", "paper"):
    raise ConfigError(f"preset: must be one of default, paper; got {preset!r}")
  if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds <= 0:
    raise ConfigError(f"seeds: must be a positive integer, got {seeds!r}")
  if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                            or steps <= 0):
    raise ConfigError(f"steps: must be a positive integer, got {steps!r}")
  from mvelab.diagnostics.settings import Settings
  settings = Settings(**SMALL_DIAGNOSTICS) if preset == "default" else Settings()

  def figures(df, d):
    from mvelab.diagnostics import found  # critic and targets against the true Q
    # Rows the sweep's workers kept (diagnosed_job) are reused; only the others are
    # diagnosed here, in this process.
    return plots.plot_all(df, d, band=band) + found.figure_for_sweep(d, d, settings)

  from mvelab.experiments.paper import THRESHOLDS  # steps to "solved" on the paper's tasks
  env = env or DEFAULT_ENV
  job_fn = job_fn or functools.partial(diagnosed_job, settings=settings)
  return run_spec(figure1_spec(env, steps, seeds, preset, retrace, dyna), "figure1", out_dir,
                  figures, threshold=THRESHOLDS.get(env), jobs=jobs,
                  executor=executor, progress=progress, job_fn=job_fn)


def diagnosed_job(job, settings):
  """A sweep job of ``reproduce figure1``: :func:`mvelab.experiments.sweep.run_job`, then,
  in the same worker process, the diagnostics of the run's last checkpoint
  (:func:`mvelab.diagnostics.found.keep_last`), so that the sweep's workers share the
  diagnostics pass instead of one process running it after the sweep. The reported wall
  time includes the pass. A pass that fails is a warning: the figure step diagnoses that
  run again (and says why it cannot)."""
  from mvelab.diagnostics import found
  from mvelab.experiments import sweep
  result = sweep.run_job(job)
  if not result.ok:
    return result
  t0 = time.perf_counter()
  try:
    found.keep_last(job.run_dir, settings)
  except Exception as e:  # noqa: BLE001 -- the run itself succeeded
    print(f"warning: diagnostics of {job.name} in its worker failed "
          f"({type(e).__name__}: {e}); the figure step tries again", file=sys.stderr)
  return dataclasses.replace(result, wall_s=result.wall_s + time.perf_counter() - t0)


def run_spec(data: dict, command: str, out_dir: str, figures, threshold=None, jobs=None,
             executor=None, progress: bool = True, job_fn=None) -> dict:
  """The pipeline of every ``reproduce`` command: spec, sweep (resumable), table, figures.

  Args:
    data: the sweep spec mapping (written to ``out_dir/spec.yaml`` with a comment naming
      ``mvelab reproduce <command>``).
    figures: ``figures(df, out_dir) -> [paths]`` draws the command's figures.
    threshold: return for the table's steps-to-threshold columns (None: no columns).
  """
  import yaml
  from mvelab.experiments import results, spec as spec_lib, sweep

  t0 = time.perf_counter()
  text = (f"# Written by `mvelab reproduce {command}`; re-run that command to resume.\n"
          + yaml.safe_dump(data, sort_keys=False))
  spec = spec_lib.parse_spec(data, text)
  result = sweep.run_sweep(spec, out_dir, jobs=jobs, executor=executor, progress=progress,
                           job_fn=job_fn or sweep.run_job)
  df = results.collect(os.path.join(out_dir, sweep.RUNS_DIR))
  out = dict(sweep=result, spec=os.path.join(out_dir, "spec.yaml"), tables={}, figures=[])
  if not df.empty:
    summary = results.summarize(df, threshold)
    out["tables"] = results.write_tables(df, summary, out_dir)
    out["figures"] = figures(df, out_dir)
    out["summary_text"] = results.format_summary(summary)
  out["wall_s"] = time.perf_counter() - t0
  return out


def run_and_report(out: str, args, run) -> int:
  """Builds the executor of ``args`` (``--executor`` and its options, refused with exit 2
  before anything runs), calls ``run(executor)`` (a ``run_spec`` result) with signals
  handled, and prints what it wrote; returns the exit code."""
  from mvelab.experiments import engines, sweep
  from mvelab.run import signals
  try:
    executor = engines.make(args, out)
    with engines.running(executor), signals.handled():
      r = run(executor)
  except ConfigError as e:
    print(f"mvelab: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt as e:
    print(f"\ninterrupted: finished runs are kept in {out}; re-run the same command to "
          "resume the rest", file=sys.stderr)
    return signals.exit_code(e)
  if r.get("summary_text"):
    print()
    print(r["summary_text"])
  print()
  print(f"sweep directory: {out} (spec: {r['spec']})")
  for path in list(r["tables"].values()) + list(r["figures"]):
    print(f"wrote {path}")
  print(f"total wall time: {r['wall_s'] / 60:.1f} min")
  return 1 if sweep.print_failures(r["sweep"]) else 0


def add_run_options(parser: argparse.ArgumentParser, default_out: str) -> None:
  """``--out``, ``--jobs``, ``--quiet`` and the executor options of every reproduce
  command (the sweep directory defaults to ``default_out``)."""
  from mvelab.experiments import engines
  parser.add_argument("--out", default=None, help=f"sweep directory (default {default_out})")
  parser.add_argument("--jobs", type=int, default=None,
                      help="runs at once, one process each (default: usable cores)")
  parser.add_argument("--quiet", action="store_true", help="no per-run progress lines")
  engines.add_options(parser)


def parse(parser: argparse.ArgumentParser, argv):
  """``(args, None)``, or ``(None, exit code)`` for --help (0) and a usage error (2)."""
  try:
    return parser.parse_args(argv), None
  except SystemExit as e:
    return None, (e.code if isinstance(e.code, int) else 2)


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="mvelab reproduce",
      description="Reproduce a figure of the seed paper. figure1: SAC (H=0) plus critic "
      "expansion with the learned model (MVE) and the oracle (OVE) at H in "
      f"{{{', '.join(map(str, HORIZONS))}}}, 5 seeds, then the table and the figures. "
      "Re-running the same command resumes: finished runs are not redone.")
  parser.add_argument("figure", choices=["figure1", "paper", "model-error"],
                      help="what to reproduce (`mvelab reproduce paper --help`: the "
                      "reference paper's matrix on one of its tasks; `mvelab reproduce "
                      "model-error --help`: the model error x horizon grid)")
  parser.add_argument("--env", default=None,
                      help=f"environment (default: {DEFAULT_ENV}, the paper's task, "
                      "at both presets)")
  parser.add_argument("--steps", type=int, default=None,
                      help=f"environment steps per run (default: "
                      f"{small_steps(DEFAULT_ENV)} on {DEFAULT_ENV}, {SMALL_STEPS} on other "
                      "envs; with --preset paper: the paper's budget for the env)")
  parser.add_argument("--seeds", type=int, default=5, help="seeds per run (default 5)")
  parser.add_argument("--preset", default="default", choices=["default", "paper"],
                      help="default: small CPU scale (~15 min on 2 cores); paper: the "
                      "reference paper's settings at full scale (needs a GPU)")
  parser.add_argument("--with-dyna", action="store_true",
                      help="add MBPO (Dyna) with the learned model and the oracle at "
                      f"rollout lengths {', '.join(map(str, DYNA_HORIZONS))} (dash-dot curves)")
  parser.add_argument("--no-retrace", action="store_true",
                      help="leave out the Retrace reference run")
  parser.add_argument("--band", default="std", choices=["std", "ci"],
                      help="shaded band of the learning curves: ±1 std over seeds (std) or "
                      "a 95%% bootstrap CI of the mean (ci)")
  add_run_options(parser, "runs/figure1-<env>-<preset>")
  return parser


def main(argv=None) -> int:
  """``mvelab reproduce figure1|paper [options]``; 0 ok, 1 a run failed, 2 bad input, 130
  Ctrl-C. ``paper`` is :mod:`mvelab.experiments.paper`."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "paper":
    from mvelab.experiments import paper
    return paper.main(argv[1:])
  if argv and argv[0] == "model-error":
    from mvelab.experiments import model_error
    return model_error.main(argv[1:])
  args, code = parse(_parser(), argv)
  if args is None:
    return code
  env = args.env
  if env is not None:
    from mvelab import envs
    if env not in envs.ENVS:
      print(f"mvelab: error: env: unknown environment {env!r}; allowed: "
            f"{', '.join(envs.ENVS)}", file=sys.stderr)
      return 2
  out = args.out or os.path.join(
      "runs", f"figure1-{env or DEFAULT_ENV}"
      f"-{args.preset}")
  return run_and_report(out, args, lambda executor: reproduce_figure1(
      out, env, args.steps, args.seeds, args.preset, args.jobs, retrace=not args.no_retrace,
      band=args.band, dyna=args.with_dyna, progress=not args.quiet, executor=executor))


if __name__ == "__main__":
  sys.exit(main())
