"""Which executor a sweep command runs on: its options, and the executor they make.

``add_options(parser)`` adds ``--executor local|ray|slurm`` and the options of each;
``make(args, out_dir)`` checks them and builds the executor before anything is submitted
(a missing extra, a bad ``--ray-address`` or a bad Slurm option is a ``ConfigError``).
``local`` (the default) is the process pool of :mod:`mvelab.experiments.executor`.
"""

from __future__ import annotations

import contextlib
import os

from mvelab.errors import ConfigError, check_positive

EXECUTORS = ("local", "ray", "slurm")


#: (flag, type, default, metavar, help) of each executor option.
OPTIONS = (
    ("--retries", int, 1, "N", "ray/slurm: times a run whose worker died is retried "
     "before it is recorded as failed (default 1)"),
    ("--platform", str, None, "NAME", "ray/slurm: JAX_PLATFORMS of the runs (cpu, cuda, "
     "...; default: JAX's choice)"),
    ("--ray-address", str, None, "ADDR", "ray: cluster to join (auto, HOST:PORT, "
     "ray://HOST:PORT; default: start a local one with --jobs CPUs)"),
    ("--ray-cpus", float, 1.0, "N", "ray: CPUs per run (default 1)"),
    ("--ray-gpus", float, 0.0, "N", "ray: GPUs per run (fractions share a GPU; default 0)"),
    ("--slurm-partition", str, None, "NAME", "slurm: partition (default: the cluster's)"),
    ("--slurm-time", str, "60", "TIME", "slurm: time limit per run (MINUTES or HH:MM:SS; "
     "default 60); a run that reaches it is requeued and resumes from its checkpoint"),
    ("--slurm-gpus", int, 0, "N", "slurm: GPUs per run (default 0)"),
    ("--slurm-cpus", int, 1, "N", "slurm: CPUs per run (default 1)"),
    ("--slurm-mem", str, None, "SIZE", "slurm: memory per run (e.g. 16G)"),
    ("--slurm-parallel", int, 256, "N", "slurm: array jobs running at once (default 256)"),
)


def add_options(parser) -> None:
  g = parser.add_argument_group("where the runs execute (docs/sweeps.md)")
  g.add_argument("--executor", default="local", choices=EXECUTORS,
                 help="local: a process pool on this machine (--jobs); ray: Ray tasks; "
                 "slurm: one Slurm job array through submitit")
  for flag, kind, default, metavar, text in OPTIONS:
    g.add_argument(flag, type=kind, default=default, metavar=metavar, help=text)
  g.add_argument("--slurm-local", action="store_true",
                 help="slurm: run the array through submitit's local executor (testing)")


def make(args, out_dir: str):
  """The executor the options name (None for ``local``: the sweep's default pool)."""
  if args.executor == "local":
    return None
  if args.jobs is not None:
    check_positive("jobs", args.jobs)
  check_out(out_dir)
  if args.executor == "ray":
    from mvelab.experiments.ray_executor import RayExecutor
    ex = RayExecutor(args.ray_address, args.ray_cpus, args.ray_gpus, args.retries,
                     args.platform, num_cpus=args.jobs)
    ex.connect()
    return ex
  from mvelab.experiments.slurm_executor import SlurmExecutor
  return SlurmExecutor(os.path.join(out_dir, "slurm"), args.slurm_partition,
                       args.slurm_time, args.slurm_gpus, args.slurm_cpus, args.slurm_mem,
                       args.retries, args.slurm_parallel, args.platform, args.slurm_local)


@contextlib.contextmanager
def running(executor):
  """Shuts down what the executor started (a local Ray cluster) when the block ends."""
  try:
    yield executor
  finally:
    shutdown = getattr(executor, "shutdown", None)
    if shutdown is not None:
      shutdown()


def check_out(out_dir: str) -> None:
  """Refuses an ``out_dir`` that cannot be created or written, without creating it."""
  path = os.path.abspath(out_dir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
    raise ConfigError(f"out: cannot create or write {out_dir!r} ({path!r} is not a "
                      "writable directory)")
