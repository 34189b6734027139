"""``mvelab diagnose RUN_OR_SWEEP_DIR [options]``: value-target diagnostics of stored runs.

Bad input (no checkpoints below the directory, a negative horizon, ``--probes 0``, a bad
``--checkpoints``) prints one ``mvelab: error:`` line naming the option and exits with
code 2 before anything compiles; nothing is written. The tables and figures are written
only after every checkpoint has been diagnosed, each to a temporary name then renamed.
"""

from __future__ import annotations

import os
import sys
import time

from mvelab.diagnostics.settings import HORIZONS, Settings
from mvelab.errors import ConfigError, check_positive
from mvelab.experiments._cli import Parser, UsageError, fail

#: Default output folder, inside the diagnosed directory.
OUT_SUBDIR = "diagnostics"


def _parser() -> Parser:
  parser = Parser(
      prog="mvelab diagnose",
      description="Compare the critic and the value targets of stored checkpoints with the "
      "policy's true soft Q (Monte Carlo with the true simulator, from the simulator states "
      "in the replay buffer): critic error, target bias and noise per horizon for the oracle "
      "and the learned model, Retrace, the action signal, and the learned model's "
      "compounding error. See docs/diagnostics.md.")
  parser.add_argument("dir", metavar="RUN_OR_SWEEP_DIR",
                      help="a run directory or a directory of runs (a sweep)")
  parser.add_argument("--horizons", type=int, nargs="+", default=list(HORIZONS),
                      help=f"horizons H of the target diagnostics (default: "
                      f"{' '.join(map(str, HORIZONS))})")
  parser.add_argument("--probes", type=int, default=256,
                      help="probe transitions per checkpoint (default 256)")
  parser.add_argument("--signal_probes", type=int, default=32,
                      help="probes (the first of the N) whose states also get the action "
                      "signal: Q of 5 policy quantiles and the policy mean (default 32)")
  parser.add_argument("--rollouts", type=int, default=32,
                      help="Monte-Carlo rollouts per probe state-action (default 32)")
  parser.add_argument("--keys", type=int, default=8,
                      help="keys per target: its mean and noise (default 8)")
  parser.add_argument("--rollout_length", type=int, default=None,
                      help="ground-truth rollout length (default: smallest L with "
                      "gamma^L <= 0.01)")
  parser.add_argument("--checkpoints", default="all",
                      help="which checkpoints: all, last or every:K (default all)")
  parser.add_argument("--error_models", nargs="+", default=[], metavar="KIND:SCALE",
                      help="reference perturbed oracles (e.g. physics:0.01 physics:0.1 "
                      "noise:0.1) whose compounding error is measured next to the run's "
                      "model on the same scale, to place a learned model on the model-error "
                      "axis (default: none)")
  parser.add_argument("--seed", type=int, default=0, help="probe key PRNGKey(seed)")
  parser.add_argument("--jobs", type=int, default=1,
                      help="runs diagnosed at once, each in its own process (default 1)")
  parser.add_argument("--out", default=None,
                      help=f"output directory (default: DIR/{OUT_SUBDIR})")
  parser.add_argument("--no_figures", action="store_true", help="tables only")
  parser.add_argument("--quiet", action="store_true", help="no per-checkpoint lines")
  return parser


def main(argv=None) -> int:
  """Entry point of ``mvelab diagnose``; returns the exit code."""
  try:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    settings = Settings(horizons=tuple(args.horizons), probes=args.probes,
                        signal_probes=args.signal_probes,
                        rollouts=args.rollouts, keys=args.keys,
                        rollout_length=args.rollout_length, seed=args.seed,
                        error_models=tuple(args.error_models))
    from mvelab.diagnostics import loading
    selection = loading.parse_selection(args.checkpoints)
    check_positive("jobs", args.jobs)
  except (UsageError, ConfigError) as e:
    return fail(str(e))
  if not os.path.isdir(args.dir):
    return fail(f"dir: {args.dir!r} is not a directory")
  runs = loading.find_runs(args.dir)
  if not runs:
    return fail(f"dir: no checkpoints (state/seeds_*/checkpoints/ckpt_*) at or below "
                f"{args.dir!r}; train with --checkpoint_every N to keep some")
  out = args.out if args.out is not None else os.path.join(args.dir, OUT_SUBDIR)
  from mvelab.diagnostics import diagnose
  t0 = time.perf_counter()
  try:
    df = diagnose.diagnose_dir(args.dir, settings, selection,
                               progress=None if args.quiet else print, jobs=args.jobs)
  except ConfigError as e:
    return fail(str(e))
  paths = diagnose.write_tables(df, out)
  if not args.no_figures:
    from mvelab.diagnostics import figures
    paths += figures.plot_all(df, out)
  print(summary_text(df))
  for path in paths:
    print(f"wrote {path}")
  print(f"diagnosed {df[['run', 'seed', 'env_steps']].drop_duplicates().shape[0]} "
        f"seed-checkpoints in {time.perf_counter() - t0:.1f} s")
  return 0


def summary_text(df) -> str:
  """The last checkpoint's target bias / noise / action correlation per H, as text."""
  from mvelab.diagnostics import figures
  return figures.horizon_table(df).to_string(index=False, float_format=lambda v: f"{v:.2f}")


if __name__ == "__main__":
  sys.exit(main())
