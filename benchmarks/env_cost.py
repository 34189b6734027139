"""Cost of the brax environments as mvelab uses them: state size, env step, oracle rollout.

Prints one table row per env (default backend ``spring``)::

  .venv/bin/python benchmarks/env_cost.py [--backend spring] [--envs hopper,ant]
      [--batch 256] [--horizons 5,30] [--repeats 20]

Columns:
  sim floats   floats in one stored simulator state (``Env.init_sim``).
  B/transition bytes of one replay transition in float32: obs + next_obs + action +
               reward + 2 flags (terminated, truncated) + logprob + 2 sims.
  step ms      one jitted ``vmap(env.step)`` at ``--batch`` (median of ``--repeats``
               calls after compiling), with its compile time. It includes the time
               limit and the auto-reset (an ``init_sim`` for every row, every step).
  brax ms      brax's own ``vmap(brax_env.step)`` on full pipeline states, for reference
               (no restore from the minimal sim, no time limit, no reset).
  H<h> ms      one jitted oracle rollout: ``--batch`` start states, a 2x64 tanh MLP policy
               (tanh output), ``lax.scan`` of ``env.simulate`` over ``h`` steps with a
               running ``alive`` mask and discounted return (median of ``--repeats``
               // 2 calls, at least 3), with its compile time.

Timings are wall-clock with ``block_until_ready``; on a shared machine they include other
jobs' load (the 1-minute load average is printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from mvelab.envs import make
from mvelab.envs.brax_env import BACKENDS, BRAX_ENV_NAMES

HIDDEN = 64


def init_policy(key, obs_size: int, action_size: int) -> list:
  """Parameters of a 2x64 tanh MLP: ``[(w, b)] * 3``."""
  sizes = [obs_size, HIDDEN, HIDDEN, action_size]
  keys = jax.random.split(key, len(sizes) - 1)
  return [(jax.random.normal(k, (m, n), jnp.float32) / jnp.sqrt(m), jnp.zeros((n,), jnp.float32))
          for k, m, n in zip(keys, sizes[:-1], sizes[1:])]


def policy(params: list, obs):
  """``[..., obs_size] -> [..., action_size]`` in ``(-1, 1)``."""
  h = obs
  for w, b in params:
    h = jnp.tanh(h @ w + b)
  return h


def make_rollout(env, horizon: int, gamma: float = 0.99):
  """``(params, sims [B, ...]) -> (returns [B], final sims)``: the oracle expansion."""

  def rollout(params, sims):
    def body(carry, _):
      sim, alive, ret, disc = carry
      obs = jax.vmap(env.observe)(sim)
      action = policy(params, obs)
      sim, _, reward, terminated = jax.vmap(env.simulate)(sim, action)
      ret = ret + disc * alive * reward
      alive = alive * (1.0 - terminated.astype(jnp.float32))
      return (sim, alive, ret, disc * gamma), None

    n = jax.tree.leaves(sims)[0].shape[0]
    ones = jnp.ones((n,), jnp.float32)
    (sim, _, ret, _), _ = jax.lax.scan(body, (sims, ones, 0.0 * ones, jnp.float32(1.0)), None,
                                       length=horizon)
    return ret, sim

  return rollout


def timed(fn, *args, repeats: int) -> tuple[float, float]:
  """Returns ``(compile seconds, median milliseconds per call)`` of ``jax.jit(fn)``."""
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return compile_s, 1000.0 * statistics.median(times)


def measure(name: str, backend: str, batch: int, horizons: list[int], repeats: int) -> dict:
  env = make(name, backend=backend)
  key = jax.random.PRNGKey(0)
  states = jax.jit(jax.vmap(env.reset))(jax.random.split(key, batch))
  sim_floats = sum(int(x.size) for x in jax.tree.leaves(states.sim)) // batch
  transition_floats = 2 * env.obs_size + env.action_size + 1 + 2 + 1 + 2 * sim_floats
  actions = jax.random.uniform(key, (batch, env.action_size), minval=-1.0, maxval=1.0)
  step_compile, step_ms = timed(jax.vmap(env.step), states, actions, repeats=repeats)
  brax_states = jax.jit(jax.vmap(env.brax_env.reset))(jax.random.split(key, batch))
  _, brax_ms = timed(jax.vmap(env.brax_env.step), brax_states, actions, repeats=repeats)
  row = dict(env=name, backend=backend, obs=env.obs_size, act=env.action_size,
             sim_floats=sim_floats, bytes=4 * transition_floats, step_ms=step_ms,
             step_compile=step_compile, brax_ms=brax_ms)
  params = init_policy(jax.random.PRNGKey(1), env.obs_size, env.action_size)
  for h in horizons:
    c, ms = timed(make_rollout(env, h), params, states.sim, repeats=max(3, repeats // 2))
    row[f"H{h}_ms"], row[f"H{h}_compile"] = ms, c
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--backend", default="spring", choices=BACKENDS)
  parser.add_argument("--envs", default=",".join(BRAX_ENV_NAMES),
                      help="comma-separated brax env names")
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--horizons", default="5,30")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args(argv)
  horizons = [int(h) for h in args.horizons.split(",") if h]
  names = [n for n in args.envs.split(",") if n]

  print(f"# jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs, "
        f"backend={args.backend}, batch={args.batch}, load avg {os.getloadavg()[0]:.1f}")
  head = (f"| {'env':24s} | obs | act | sim floats | B/transition | step ms (compile s) | brax ms | "
          + " | ".join(f"H{h} ms (compile s)" for h in horizons) + " |")
  print(head)
  print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
  for name in names:
    r = measure(name, args.backend, args.batch, horizons, args.repeats)
    cells = [f"{r['env']:24s}", f"{r['obs']:3d}", f"{r['act']:3d}", f"{r['sim_floats']:10d}",
             f"{r['bytes']:12d}", f"{r['step_ms']:8.2f} ({r['step_compile']:5.1f})",
             f"{r['brax_ms']:7.2f}"]
    cells += [f"{r[f'H{h}_ms']:8.1f} ({r[f'H{h}_compile']:5.1f})" for h in horizons]
    print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
  main()
