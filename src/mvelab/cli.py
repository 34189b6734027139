"""The ``mvelab`` command line.

Subcommands: ``envs`` (list environments), ``demo`` (step every environment and check the
oracle round-trip), ``train`` (SAC runs), ``sweep``, ``results``, ``plot`` and ``reproduce``
(experiments, :mod:`mvelab.experiments`). Bad input prints one message naming the option
and what is allowed, and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Annotated, Optional

import tyro

from mvelab.config import Config

USAGE = """usage: mvelab <command> [options]

commands:
  envs     list the environments with observation/action sizes and backends
  demo     step every environment, check the oracle round-trip, print a table
  train    train SAC for one or more seeds and write a run directory
  sweep    run every configuration of a YAML sweep spec (resumable; docs/sweeps.md)
  results  gather the runs below a directory into one table with per-run statistics
  plot     Figure-1 learning curves, performance and cost against the horizon H
  reproduce figure1
           the seed paper's Figure 1: sweep, table and figures in one resumable command
  reproduce paper
           the reference paper's matrix (SAC, CE, AE, Retrace x H) on one of its tasks
  reproduce model-error
           critic expansion with perturbed oracles over model error x H: the trust map
  diagnose critic and value targets of stored checkpoints against the true Q (Monte Carlo)

Run `mvelab <command> --help` for the options of a command.

Compiled programs are cached on disk (default ~/.cache/mvelab/xla; MVELAB_CACHE_DIR sets
another directory); `mvelab --no-compile-cache <command> ...` runs without the cache.
"""


def _fail(msg: str) -> int:
  print(f"mvelab: error: {msg}", file=sys.stderr)
  return 2


def cmd_envs(argv) -> int:
  import argparse
  parser = argparse.ArgumentParser(prog="mvelab envs",
                                   description="List the environments.")
  parser.parse_args(argv)
  from mvelab import envs
  rows = []
  for spec in envs.list_envs():
    env = envs.make(spec.name)
    rows.append((spec.name, spec.family, env.obs_size, env.action_size,
                 env.episode_length, env.backend, "/".join(spec.backends)))
  header = ("env", "family", "obs", "act", "episode", "default backend", "backends")
  _print_table(header, rows)
  return 0


def _print_table(header, rows):
  widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
  fmt = "  ".join(f"{{:<{w}}}" for w in widths)
  print(fmt.format(*header))
  print(fmt.format(*("-" * w for w in widths)))
  for r in rows:
    print(fmt.format(*map(str, r)))


def cmd_demo(argv) -> int:
  import argparse
  parser = argparse.ArgumentParser(
      prog="mvelab demo",
      description="Step every environment in a batch and check that restoring the stored "
      "simulator state and stepping the stored action reproduces the stored next "
      "observation and reward (the oracle round-trip).")
  parser.add_argument("--envs", nargs="*", default=None, help="environments (default: all)")
  parser.add_argument("--batch", type=int, default=16, help="environments per batch")
  parser.add_argument("--steps", type=int, default=20, help="random steps per environment")
  args = parser.parse_args(argv)
  from mvelab import demo
  return demo.run(args.envs, args.batch, args.steps)


@dataclasses.dataclass
class TrainArgs:
  """Train SAC on one environment for one or more seeds (vmapped in one program)."""

  config: Annotated[Config, tyro.conf.OmitArgPrefixes]
  out: Optional[str] = None
  """Run directory to write (default: runs/<env>-<preset>-seed<seed>)."""
  overwrite: bool = False
  """Replace a non-empty run directory."""
  resume: Optional[str] = None
  """Continue the run in this directory from its latest complete checkpoint (its config is
  used; options given explicitly must agree with it, except --steps which may grow)."""
  workers: Optional[int] = None
  """Worker processes to spread seeds over (default: one per core, at most one per seed)."""
  checkpoint_every: int = 10
  """Save the complete training state every N evaluations and at the end (0: never)."""
  keep_checkpoints: int = 3
  """Checkpoints kept per seed group."""
  stop_on_divergence: bool = False
  """Stop the whole run when one seed diverges (default: mark it, carry on with the rest)."""
  tensorboard: bool = False
  """Also write TensorBoard event files under <out>/tb/."""
  diagnose_every: int = 0
  """Run the value-target diagnostics (`mvelab diagnose` defaults) on the live state every N
  evaluations and append them to <out>/diagnostics.csv (0: never)."""
  quiet: bool = False
  """Do not print progress."""


_ALIASES = {"seeds": "num_seeds", "steps": "total_steps"}


def _explicit_fields(argv) -> set:
  """Config fields named on the command line (``--name value`` or ``--name=value``)."""
  names = set()
  for tok in argv:
    if tok.startswith("--"):
      name = tok[2:].split("=", 1)[0].replace("-", "_")
      names.add(_ALIASES.get(name, name))
  return names


def cmd_train(argv) -> int:
  args = tyro.cli(TrainArgs, args=argv, prog="mvelab train")
  from mvelab import runner
  cfg = args.config
  if args.resume:
    stored = runner.load_run(args.resume)["config"]
    given = _explicit_fields(argv) & {f.name for f in dataclasses.fields(Config)}
    cfg = dataclasses.replace(stored, **{k: getattr(cfg, k) for k in given})
    out = args.resume
  else:
    out = args.out or os.path.join("runs", f"{cfg.env}-{cfg.preset}-seed{cfg.seed}")
  from mvelab.config import paper_preset_warning
  warning = paper_preset_warning(cfg)
  if warning:
    print(warning, file=sys.stderr)
  try:
    result = runner.train(
        cfg, out_dir=out, overwrite=args.overwrite, workers=args.workers,
        progress=not args.quiet, tensorboard=args.tensorboard, resume=args.resume,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        diagnose_every=args.diagnose_every,
        stop_on_divergence=args.stop_on_divergence)
  except runner.DivergenceError as e:
    print(f"mvelab: {e}", file=sys.stderr)
    print(f"run directory: {out}")
    return 3
  print(f"run directory: {out}")
  return 3 if any(r["diverged"] for r in result.rows) else 0


def cmd_sweep(argv) -> int:
  from mvelab.experiments import sweep
  return sweep.main(argv)


def cmd_results(argv) -> int:
  from mvelab.experiments import results
  return results.main(argv)


def cmd_plot(argv) -> int:
  from mvelab.experiments import plots
  return plots.main(argv)


def cmd_diagnose(argv) -> int:
  from mvelab.diagnostics import cli
  return cli.main(argv)


def cmd_reproduce(argv) -> int:
  from mvelab.experiments import reproduce
  return reproduce.main(argv)


COMMANDS = {"envs": cmd_envs, "demo": cmd_demo, "train": cmd_train, "sweep": cmd_sweep,
            "results": cmd_results, "plot": cmd_plot, "reproduce": cmd_reproduce,
            "diagnose": cmd_diagnose}


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help", "help"):
    print(USAGE)
    return 0
  if argv[0] in ("-V", "--version"):
    from mvelab import __version__
    print(f"mvelab {__version__}")
    return 0
  cache_on = "--no-compile-cache" not in argv
  argv = [a for a in argv if a != "--no-compile-cache"]
  cmd = argv[0] if argv else ""
  if cmd not in COMMANDS:
    return _fail(f"unknown command {cmd!r}; allowed: {', '.join(COMMANDS)}")
  from mvelab.checkpoint import CheckpointError
  from mvelab.errors import ConfigError
  from mvelab import compile_cache
  compile_cache.enable(on=cache_on)
  try:
    return COMMANDS[cmd](argv[1:])
  except ConfigError as e:
    return _fail(str(e))
  except CheckpointError as e:
    print(f"mvelab: error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt as e:  # Ctrl-C (130) or SIGTERM (143)
    from mvelab.run import signals
    return signals.exit_code(e)


if __name__ == "__main__":
  sys.exit(main())
