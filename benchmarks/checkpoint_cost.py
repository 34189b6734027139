"""Checkpoint size, write time and overhead for runs with a 100k-transition replay buffer.

For each environment: compile one seed's program, run the warm-up and one training chunk
(``eval_every`` environment steps), then time ``checkpoint.save`` of the complete state
(networks, optimisers, replay buffer, env states, keys) and ``checkpoint.restore``.
The overhead at the default interval is ``save_time / (checkpoint_every * chunk_time)``.

    .venv/bin/python benchmarks/checkpoint_cost.py [--envs pendulum hopper] [--out FILE]
"""

import argparse
import os
import statistics
import tempfile
import time

import jax

from mvelab import checkpoint, config as config_lib, runner
from mvelab.config import Config


def measure(env: str, capacity: int, every: int, repeats: int) -> dict:
  cfg = config_lib.resolve(Config(env=env, replay_capacity=capacity, eval_every=1000,
                                  warmup_steps=1000, total_steps=3000, eval_episodes=5))
  group = runner.GroupRun(cfg, [0])
  group.step()
  t0 = time.perf_counter()
  group.step()
  jax.block_until_ready(group.state)
  chunk_s = time.perf_counter() - t0
  saves, loads = [], []
  with tempfile.TemporaryDirectory() as d:
    for _ in range(repeats):
      t0 = time.perf_counter()
      group.save(d, keep=2)
      saves.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      group.restore(d, warn=print)
      jax.block_until_ready(group.state)
      loads.append(time.perf_counter() - t0)
      group.chunks_done += 1  # a new step number for the next save
    size = checkpoint.size_bytes(checkpoint.latest(group.ckpt_dir(d))[1])
  save_s = statistics.median(saves)
  return dict(env=env, backend=cfg.backend or "jax", capacity=capacity, size_mb=size / 2**20,
              save_s=save_s, restore_s=statistics.median(loads), chunk_s=chunk_s,
              overhead=save_s / (every * chunk_s), compile_s=group.compile_time_s)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--envs", nargs="+", default=["pendulum", "hopper"])
  ap.add_argument("--capacity", type=int, default=100_000)
  ap.add_argument("--every", type=int, default=10, help="evaluations between checkpoints")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default=None)
  args = ap.parse_args()
  rows = [measure(e, args.capacity, args.every, args.repeats) for e in args.envs]
  lines = [
      f"| env | backend | replay | checkpoint MB | save s | restore s | chunk s (1000 steps) "
      f"| overhead at every {args.every} evals |",
      "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['env']} | {r['backend']} | {r['capacity']:,} | {r['size_mb']:.1f} | "
                 f"{r['save_s']:.2f} | {r['restore_s']:.2f} | {r['chunk_s']:.1f} | "
                 f"{100 * r['overhead']:.2f}% |")
  text = "\n".join(lines)
  print(text)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
