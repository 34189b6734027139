"""Seconds of one compiled diagnostics pass (5 seeds of one checkpoint) at several settings.

Restores a run's last checkpoint, then times ``compute.compiled(p, settings)`` twice per
setting: the first call includes tracing and compiling (or loading from the persistent
cache), the second is the pass alone. This is how docs/figure1.md chose 8 rollouts for the
main job's diagnostics (13.4 s at 16, 9.2 s at 8 for OVE H = 5 on the slower 2-core
machine, sharing it with a training run).

    python benchmarks/diagnostics_pass_cost.py RUN_DIR \\
        [--settings probes=128,rollouts=16 probes=128,rollouts=8 probes=64,signal_probes=16]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log  # noqa: E402
from mvelab import compile_cache  # noqa: E402
from mvelab.diagnostics import compute, loading  # noqa: E402
from mvelab.diagnostics.settings import Settings  # noqa: E402


def parse_settings(text: str) -> dict:
  """``probes=128,rollouts=8`` -> ``{"probes": 128, "rollouts": 8}``."""
  return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("run_dir")
  ap.add_argument("--settings", nargs="+", default=[
      "probes=128,rollouts=16", "probes=128,rollouts=8", "probes=64,signal_probes=16"])
  args = ap.parse_args()
  compile_cache.enable()
  t0 = time.perf_counter()
  p, states = loading.restore(loading.checkpoints(args.run_dir, ("last", 1))[0])
  log(f"restore {time.perf_counter() - t0:.2f} s")
  for text in args.settings:
    f = compute.compiled(p, Settings(**parse_settings(text)))
    times = []
    for _ in range(2):
      t0 = time.perf_counter()
      jax.block_until_ready(f(states, jax.random.PRNGKey(0)))
      times.append(time.perf_counter() - t0)
    log(f"{text}: first call {times[0]:.1f} s (compile included), pass {times[1]:.1f} s")


if __name__ == "__main__":
  main()
