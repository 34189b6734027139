#!/usr/bin/env python
"""Cost of the learned model's member sampling: ``iid`` against ``balanced``.

Learned-model critic expansion (MVE) at the paper preset spends most of an update in the
ensemble: with ``model_sampling: iid`` (the reference's) every imagined step evaluates all
``E`` members on every row and keeps one; ``balanced`` evaluates each member on its own
``ceil(B / E)`` rows only (models/ensemble.py). This script times ``mvelab.program.update``
(the function the training loop runs: critic, actor and temperature step with the
H-step rollout; no environment step, model training or evaluation) of ONE seed for both
samplings at each horizon, inside a jitted ``lax.scan`` of ``--updates`` updates, and
prints ms per update and the ratio iid / balanced measured in the same run.

Setup: the env's paper preset (networks (256, 256), batch 256, the paper ensemble
5 x (256, 256, 256, 256)), a random-action prefill, an untrained ensemble (the cost of a
rollout does not depend on the weights). The training loop vmaps seeds, so a run of S
seeds costs about S times these numbers.

  python benchmarks/member_sampling_cost.py [--env paper_inverted_pendulum]
      [--horizons 5,10] [--updates 10] [--repeats 3] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time

from _common import log, md_table, parse_list, write_out

SAMPLINGS = ("iid", "balanced")


def _config(env, sampling, horizon):
  from mvelab.config import Config, resolve
  return resolve(Config(env=env, preset="paper", expansion="critic", model="learned",
                        horizon=horizon, model_schedule="fixed", model_sampling=sampling))


def _time(p, state, key, updates, repeats):
  """(compile s, median ms per update) of a jitted scan of ``updates`` updates."""
  import jax
  import jax.numpy as jnp
  from mvelab import program as T

  def run(s, k):
    final, metrics = jax.lax.scan(functools.partial(T.update, p), s,
                                  jax.random.split(k, updates))
    return metrics["critic_loss"].sum() + jnp.sum(final.alpha_param)

  t0 = time.perf_counter()
  compiled = jax.jit(run).lower(state, key).compile()
  compile_s = time.perf_counter() - t0
  compiled(state, jax.random.PRNGKey(100)).block_until_ready()  # warm
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    compiled(state, jax.random.PRNGKey(101 + i)).block_until_ready()
    times.append((time.perf_counter() - t0) / updates * 1e3)
  return compile_s, statistics.median(times)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--env", default="paper_inverted_pendulum")
  ap.add_argument("--horizons", default="5,10", help="comma-separated H >= 1")
  ap.add_argument("--updates", type=int, default=10, help="updates per timed call")
  ap.add_argument("--repeats", type=int, default=3, help="timed calls per cell (median)")
  ap.add_argument("--out", default=None, help="also write the table as markdown here")
  args = ap.parse_args(argv)
  horizons = parse_list(args.horizons, int)
  if not horizons or min(horizons) < 1 or args.updates < 1 or args.repeats < 1:
    ap.error("--horizons: H >= 1; --updates, --repeats: >= 1")

  import jax
  from mvelab import program as T
  t_start = time.perf_counter()
  base = T.make_programs(_config(args.env, "iid", horizons[0]))
  fill = jax.jit(lambda k: T.prefill(base, T.init_state(base, k)))
  state = jax.block_until_ready(fill(jax.random.PRNGKey(0)))
  rows = []
  for h in horizons:
    ms = {}
    for sampling in SAMPLINGS:
      p = T.make_programs(_config(args.env, sampling, h), env=base.env)
      s = state.replace(model_state=p.model.init(jax.random.PRNGKey(7)))
      compile_s, ms[sampling] = _time(p, s, jax.random.PRNGKey(1), args.updates,
                                      args.repeats)
      log(f"H={h} {sampling}: {ms[sampling]:.1f} ms/update (compile {compile_s:.0f} s)")
    rows.append([str(h), f"{ms['iid']:.1f}", f"{ms['balanced']:.1f}",
                 f"{ms['iid'] / ms['balanced']:.2f}"])
  text = (f"Member sampling cost on {args.env} (paper preset, learned-model critic "
          f"expansion, 1 seed, median of {args.repeats} calls of {args.updates} updates); "
          f"jax {jax.__version__}, {platform.machine()}, "
          f"{time.perf_counter() - t_start:.0f} s in all\n\n"
          + md_table(["H", "iid ms/update", "balanced ms/update", "iid / balanced"], rows)
          + "\n")
  log()
  log(text)
  write_out(text, args.out)


if __name__ == "__main__":
  main()
