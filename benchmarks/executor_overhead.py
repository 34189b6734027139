"""Per-run overhead of the Ray executor against the local process pool, same tiny sweep.

Both executors run the same 4 tiny runs (one program, shared through the compilation
cache, which the first, untimed pass fills), 2 at a time; each is timed ``--rounds``
times into a fresh sweep directory. The overhead per run is the difference of the median
walls times the parallelism over the runs: the extra seconds each run spends in Ray
(task dispatch, a fresh worker process, result transfer). The Ray cluster is started
once, outside the timing.

    python benchmarks/executor_overhead.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from mvelab import compile_cache
from mvelab.experiments import sweep
from mvelab.experiments.executor import ProcessExecutor
from mvelab.experiments.ray_executor import RayExecutor
from mvelab.experiments.spec import parse_spec

RUNS, PARALLEL = 4, 2
SPEC = {"name": "overhead", "envs": "pendulum", "seeds": 2, "steps": 300,
        "overrides": {"hidden_sizes": [16, 16], "batch_size": 32, "warmup_steps": 100,
                      "eval_every": 100, "eval_episodes": 2, "replay_capacity": 2000},
        "runs": [{"overrides": {"seed": 10 * k}} for k in range(RUNS)]}


def timed(executor, root: str, tag: str) -> float:
  out = os.path.join(root, f"{tag}-{time.monotonic_ns()}")
  t0 = time.perf_counter()
  result = sweep.run_sweep(parse_spec(SPEC), out, executor=executor, progress=False)
  assert result.ok and result.succeeded == RUNS, result.failed
  return time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--rounds", type=int, default=2)
  args = parser.parse_args()
  compile_cache.enable()
  ray = RayExecutor(platform="cpu", num_cpus=PARALLEL)
  ray.connect()
  local = ProcessExecutor(PARALLEL)
  walls = {"local": [], "ray": []}
  with tempfile.TemporaryDirectory() as root:
    timed(local, root, "warm")  # fills the compilation cache
    for _ in range(args.rounds):
      walls["local"].append(timed(local, root, "local"))
      walls["ray"].append(timed(ray, root, "ray"))
  ray.shutdown()
  med = {k: statistics.median(v) for k, v in walls.items()}
  print(f"{RUNS} runs, {PARALLEL} at a time, walls (s): " +
        "; ".join(f"{k} {', '.join(f'{x:.1f}' for x in v)}" for k, v in walls.items()))
  print(f"median: local {med['local']:.1f} s, ray {med['ray']:.1f} s; overhead per run "
        f"{(med['ray'] - med['local']) * PARALLEL / RUNS:+.1f} s")


if __name__ == "__main__":
  main()
