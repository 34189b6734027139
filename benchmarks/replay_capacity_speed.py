#!/usr/bin/env python
"""Time of one SAC step (collect + update) as a function of the replay capacity.

A SAC step should not depend on how large the replay buffer is: a write is one slot, a
sample is ``batch_size`` rows. It did (commit b2e548b and earlier): XLA:CPU fused the
replay write into the sampling gather and then copied a whole ``[capacity, obs]`` leaf
twice per loop iteration. This script measures ms per environment step of the compiled
training chunk (the runner's program: ``jit(vmap(train_chunk))`` with the state donated,
1 seed, UTD 1, networks (256, 256), batch 256, 1000-step chunks with their evaluation) for
several capacities, alternating the programs round by round so that machine drift hits
all of them alike.

Usage::

  .venv/bin/python benchmarks/replay_capacity_speed.py                    # ~3 min
  .venv/bin/python benchmarks/replay_capacity_speed.py --env pendulum --rounds 3
  .venv/bin/python benchmarks/replay_capacity_speed.py --capacities 10000,1000000

The capacities are compared within one run; compare ratios, not absolute times, across
runs (this 2-core machine's speed drifts by up to 10%).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_common.py
from _common import log, md_table, parse_list, write_out  # noqa: E402


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--env", default="inverted_pendulum")
  ap.add_argument("--capacities", default="10000,100000,1000000",
                  help="comma-separated replay capacities")
  ap.add_argument("--rounds", type=int, default=5, help="timed chunks per capacity")
  ap.add_argument("--chunk", type=int, default=1000, help="environment steps per chunk")
  ap.add_argument("--out", default=None, help="also write the markdown report here")
  args = ap.parse_args(argv)

  import jax
  import jax.numpy as jnp
  from mvelab import __version__, runner
  from mvelab import program as T
  from mvelab.config import Config, resolve

  caps = parse_list(args.capacities, int)
  programs, states = {}, {}
  for cap in caps:
    cfg = resolve(Config(env=args.env, num_seeds=1, warmup_steps=1000,
                         total_steps=1000 + args.chunk, eval_every=args.chunk,
                         eval_episodes=1, num_envs=1, updates_per_step=1, batch_size=256,
                         hidden_sizes=(256, 256), replay_capacity=cap))
    p = T.make_programs(cfg)
    keys = jnp.stack([jax.random.PRNGKey(0)])
    start = jax.jit(jax.vmap(lambda k, p=p: T.start(p, k)[0]))
    shape = jax.eval_shape(jax.vmap(lambda k, p=p: T.start(p, k)[0]), keys)
    t0 = time.perf_counter()
    if hasattr(runner, "compile_chunk"):
      programs[cap] = runner.compile_chunk(p, shape)
    else:  # commits before runner.compile_chunk (e.g. b2e548b): the same program
      programs[cap] = jax.jit(jax.vmap(lambda s, p=p: T.train_chunk(p, s)),
                              donate_argnums=0).lower(shape).compile()
    state = start(keys)
    states[cap] = jax.block_until_ready(programs[cap](state)[0])  # one untimed chunk
    log(f"capacity {cap:,}: compiled and warmed up in {time.perf_counter() - t0:.1f} s")

  times = {cap: [] for cap in caps}
  for r in range(args.rounds):
    for cap in caps:
      t = time.perf_counter()
      states[cap] = jax.block_until_ready(programs[cap](states[cap])[0])
      times[cap].append((time.perf_counter() - t) / args.chunk * 1e3)
    log(f"round {r + 1}: " + ", ".join(f"{cap:,}: {times[cap][-1]:.3f} ms/step"
                                       for cap in caps))

  base = statistics.median(times[caps[0]])
  rows = [[f"{cap:,}", f"{statistics.median(v):.3f}", f"{min(v):.3f}",
           f"{statistics.median(v) / base:.3f}"] for cap, v in times.items()]
  text = "\n".join([
      f"# SAC step time vs replay capacity ({args.env})", "",
      f"mvelab {__version__}, jax {jax.__version__}, {os.cpu_count()} cores, "
      f"{args.rounds} alternating rounds of {args.chunk}-step chunks (evaluation included), "
      "1 seed, UTD 1, (256, 256), batch 256.", "",
      md_table(["replay capacity", "median ms/step", "min ms/step",
                f"vs {caps[0]:,}"], rows), ""])
  log("\n" + text)
  write_out(text, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
