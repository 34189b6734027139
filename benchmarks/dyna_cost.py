"""Cost of MBPO (``--expansion dyna``) per environment step against SAC at the same G.

For each variant the script builds one seed's training program (``mvelab.program``),
prefills the replay buffer, and times a jitted ``lax.scan`` of ``--iterations`` calls of
``program.train_iteration`` (collect one transition, [train the model], [branch
rollouts into the model buffer], G SAC updates). It also times the pieces alone, each in
its own jitted scan over the same state: the G SAC updates (``program.update``), the
branched rollouts (``dyna.branch``) and the model training step, and reports their share
of the iteration.

  python benchmarks/dyna_cost.py [--env pendulum] [--G 20] [--horizon 5] [--rollouts 400]
      [--iterations 20] [--repeats 3] [--out FILE.md]

Variants: sac (G updates per step), mbpo-oracle, mbpo-learned (ensemble (128, 128), 5
members, one model update per step). Networks (256, 256), batch 256.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, md_table, write_out  # noqa: E402


def _cfg(env, variant, g, horizon, rollouts):
  from mvelab.config import Config, resolve
  kw = dict(env=env, updates_per_step=g, warmup_steps=1000, total_steps=2000,
            hidden_sizes=(256, 256), batch_size=256)
  if variant != "sac":
    kw.update(expansion="dyna", model=variant.split("-")[1], horizon=horizon,
              dyna_rollouts=rollouts, dyna_retain=50)
  return resolve(Config(**kw))


def _time(fn, state, repeats):
  import jax
  jax.block_until_ready(fn(state))  # compile + warm
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(state))
    times.append(time.perf_counter() - t0)
  return min(times)


def measure(env, variant, g, horizon, rollouts, iterations, repeats) -> dict:
  import jax
  from mvelab import program as T
  from mvelab.agents import dyna
  p = T.make_programs(_cfg(env, variant, g, horizon, rollouts))
  state = jax.jit(lambda k: T.prefill(p, T.init_state(p, k)))(jax.random.PRNGKey(0))
  if p.dyna:  # a full model buffer, as in a running MBPO
    state = state.replace(model_replay=jax.jit(lambda s: dyna.branch(p, s, s.key)[0])(state))

  def scan(body):
    return jax.jit(lambda s: jax.lax.scan(lambda c, _: (body(c), None), s, None,
                                          length=iterations)[0])

  out = dict(variant=variant)
  out["iteration"] = _time(scan(lambda s: T.train_iteration(p, s)[0]), state, repeats)
  keys = lambda s: jax.random.split(s.key, g)

  def updates(s):
    return jax.lax.scan(lambda c, k: (T.update(p, c, k)[0], None), s, keys(s))[0]

  out["updates"] = _time(scan(updates), state, repeats)
  if p.dyna:
    out["rollouts"] = _time(scan(lambda s: s.replace(
        model_replay=dyna.branch(p, s, s.key)[0], key=jax.random.fold_in(s.key, 1))),
                            state, repeats)
  if p.learned_model:
    out["model"] = _time(scan(lambda s: T.train_model(p, s, 1)[0]), state, repeats)
  return {k: (v / iterations * 1e3 if isinstance(v, float) else v) for k, v in out.items()}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--env", default="pendulum")
  ap.add_argument("--G", type=int, default=20)
  ap.add_argument("--horizon", type=int, default=5)
  ap.add_argument("--rollouts", type=int, default=400)
  ap.add_argument("--iterations", type=int, default=20)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--variants", default="sac,mbpo-oracle,mbpo-learned")
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  load = " ".join(f"{x:.2f}" for x in os.getloadavg())
  rows, res = [], []
  for v in args.variants.split(","):
    r = measure(args.env, v, args.G, args.horizon, args.rollouts, args.iterations,
                args.repeats)
    res.append(r)
    log(f"{v}: {r}")
  sac = next((r["iteration"] for r in res if r["variant"] == "sac"), float("nan"))
  for r in res:
    it = r["iteration"]
    share = lambda k: f"{r[k]:.2f} ({100 * r[k] / it:.0f}%)" if k in r else "-"
    rows.append([r["variant"], f"{it:.2f}", f"{it / sac:.2f}", share("updates"),
                 share("rollouts"), share("model")])
  text = (f"MBPO cost on {args.env}: ms per environment step (min of {args.repeats}), G = "
          f"{args.G}, k = {args.horizon}, {args.rollouts} rollouts per step, networks "
          f"(256, 256), batch 256; load average {load} at start\n\n"
          + md_table(["variant", "ms / env step", "x SAC", f"{args.G} SAC updates",
                      "branched rollouts", "model update"], rows) + "\n\n"
          "Pieces are timed alone (each in its own jitted scan), so they need not add up "
          "to the iteration.\n")
  log(text)
  write_out(text, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
