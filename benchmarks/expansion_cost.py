#!/usr/bin/env python
"""Cost of value expansion: milliseconds per gradient update against the horizon H.

For every (env, variant, H) the script builds the jitted training program of ONE seed
(``mvelab.program``), fills the replay buffer, and times a jitted ``lax.scan`` of
``--updates`` calls of ``mvelab.program.update`` (the exact function the training loop
runs, nothing else: no environment step, no model training, no evaluation).

Variants (``--variants``):

  sac             plain SAC (``expansion=none``); measured once per env, at H = 0
  critic-oracle   critic expansion (MVE targets) with the true simulator
  critic-learned  critic expansion with the learned ensemble (default widths (128, 128),
                  5 members; untrained: the cost of a rollout does not depend on weights)
  critic-*-direct the same with ``ce_values=direct``: imagined values reuse the rollout's
                  own action (no fresh action, no critic call per imagined step)
  actor-oracle    actor expansion (SVG-style, differentiates through the simulator)
  retrace         Retrace over H + 1 real replayed transitions
  steve-oracle    STEVE with the oracle (one rollout: critics' disagreement only)
  steve-learned   STEVE with the learned ensemble (its 5 member-consistent rollouts)

Setup of each measurement: one seed, networks (256, 256), batch 256, the default preset
otherwise. One prefill per env (``init_state`` + ``prefill`` with ``max(1000, 2 (Hmax + 2))``
random-action warm-up steps, jitted once) gives the replay buffer, observation statistics
and parameters that every variant starts from (a learned variant gets a fresh ensemble
state); the timed program only reads that state (it is not donated or returned, so
nothing is copied). Each cell is: ahead-of-time compile (reported), one warm call, then
the median (``--stat min``: the minimum) of ``--repeats`` calls, divided by ``--updates``.

What cannot be removed (per env, batch 256, each timed inside a jitted ``lax.scan`` of
``--inner`` iterations over different replayed inputs, i.e. without dispatch overhead,
as it runs inside the update; the per-call time of the same jitted function, which
includes ~10-50 us of dispatch, is printed alongside):

  step      ``jax.vmap(env.simulate)`` on 256 replayed simulator states
  ensemble  one learned-model step (``EnsembleModel.rollout`` with H = 1 and a given
            action: all members' prediction, member choice, noise, termination)
  pi        one policy sample (normalise + ``SACNets.sample``: action and log-prob)
  Q         one twin-critic evaluation (``SACNets.q`` and the min)

Each part's cost in the comparisons below is the smaller of the two (each is an upper
bound on the work itself: per-call adds dispatch, in-loop adds the summing reduction).

The slope (ms per unit of H) is a least-squares line through the H >= 1 points of a
variant (H = 0 takes a different, shorter code path: no rollout, no control variate). It
is compared with

  floor = step + pi + Q        (the brief's irreducible work: the physics step, one
                                action, one critic evaluation per imagined step)
  work  = s + 2 pi + 2 Q       (what the algorithm itself evaluates per extra step:
                                the rollout action and a fresh action for v_j, and
                                Q at v_j and at q_j; s = physics step for the oracle
                                variants, the ensemble step for critic-learned, 0 for
                                Retrace, whose second pi is the log-prob of the stored
                                action). Actor expansion also runs the backward pass
                                through all of it, which ``work`` does not count.

and for pendulum the acceptance check: ms/update of critic-oracle at H = 30 against
``sac(H=0) + 30 (step + pi + Q)`` (goal: ratio <= 1.5).

Usage::

  .venv/bin/python benchmarks/expansion_cost.py --out expansion_cost.md   # ~10-15 min
  .venv/bin/python benchmarks/expansion_cost.py --full          # every variant and H on
                                                                # hopper too (much longer)
  .venv/bin/python benchmarks/expansion_cost.py --envs pendulum --horizons 0,1,5 \\
      --variants critic-oracle,retrace --repeats 3

Defaults: pendulum: all variants, H in {0, 1, 3, 5, 10, 20, 30}; hopper (brax, backend
``--backend``, default spring): critic-oracle, critic-learned, retrace at H in
{0, 1, 3, 5, 10} (``--full``: the pendulum set). ``--variants``/``--horizons`` apply to
every env. Every cell is a separate XLA compile (pendulum 3-8 s, hopper spring 10-80 s;
actor-oracle on hopper is the slowest). Timings on a shared machine include other jobs'
load; the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_common.py
from _common import log as _log, md_table as _md_table, parse_list as _parse_list, write_out  # noqa: E402

VARIANTS = {
    "sac": dict(expansion="none", model=None),
    "critic-oracle": dict(expansion="critic", model="oracle"),
    "critic-learned": dict(expansion="critic", model="learned"),
    "critic-oracle-direct": dict(expansion="critic", model="oracle", ce_values="direct"),
    "critic-learned-direct": dict(expansion="critic", model="learned", ce_values="direct"),
    "actor-oracle": dict(expansion="actor", model="oracle"),
    "retrace": dict(expansion="retrace", model=None),
    "steve-oracle": dict(expansion="steve", model="oracle"),
    "steve-learned": dict(expansion="steve", model="learned"),
}
EXPANSION_VARIANTS = ("critic-oracle", "critic-learned", "critic-oracle-direct",
                      "critic-learned-direct", "actor-oracle", "retrace", "steve-oracle",
                      "steve-learned")
ALL_HORIZONS = (0, 1, 3, 5, 10, 20, 30)
SMALL_HORIZONS = (0, 1, 3, 5, 10)
HOPPER_VARIANTS = ("critic-oracle", "critic-learned", "retrace")
HIDDEN = (256, 256)
BATCH = 256
#: Statistic over the timed repeats (``--stat``): the median (default) or the minimum,
#: which is the more reproducible estimate of the work itself on a machine shared with
#: other jobs (XLA:CPU's intra-op threads make loaded timings bimodal).
STATS = {"median": statistics.median, "min": min}
_stat = statistics.median




def _load() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "n/a"


def _fmt(x, digits=2):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  if isinstance(x, float):
    return f"{x:.{digits}f}"
  return str(x)






# ---------------------------------------------------------------------------- setup
@dataclasses.dataclass
class Cell:
  env: str
  variant: str
  horizon: int
  ms: float = float("nan")          # ms per update (--stat over the repeats)
  ms_all: tuple = ()                # every repeat
  compile_s: float = float("nan")
  error: str = ""


def make_config(env_name, backend, variant, horizon, warmup):
  from mvelab import envs as mv_envs
  from mvelab.config import Config, resolve
  v = VARIANTS[variant]
  has_backend = "backend" in mv_envs.ENVS[env_name].options
  return resolve(Config(
      env=env_name, backend=backend if has_backend else None, expansion=v["expansion"],
      model=v["model"], horizon=horizon, warmup_steps=warmup, total_steps=warmup + 1000,
      ce_values=v.get("ce_values", "control_variate"),
      batch_size=BATCH, hidden_sizes=HIDDEN))


class EnvBench:
  """The prefilled state of one env, shared by every variant and horizon."""

  def __init__(self, env_name, backend, warmup, seed=0):
    import jax
    from mvelab import program as T
    self.env_name, self.backend, self.warmup = env_name, backend, warmup
    cfg = make_config(env_name, backend, "sac", 0, warmup)
    self.base = T.make_programs(cfg)
    self.env = self.base.env
    t0 = time.perf_counter()
    fill = jax.jit(lambda k: T.prefill(self.base, T.init_state(self.base, k)))
    self.state = jax.block_until_ready(fill(jax.random.PRNGKey(seed)))
    self.prefill_s = time.perf_counter() - t0
    self.key = jax.random.PRNGKey(seed + 1)

  def programs(self, variant, horizon):
    from mvelab import program as T
    cfg = make_config(self.env_name, self.backend, variant, horizon, self.warmup)
    return T.make_programs(cfg, env=self.env)

  def state_for(self, p):
    import jax
    if p.model is None:
      return self.state
    return self.state.replace(model_state=p.model.init(jax.random.PRNGKey(7)))


def time_updates(bench: EnvBench, variant, horizon, n_updates, repeats) -> Cell:
  """Compiles a scan of ``n_updates`` updates of one seed and times it."""
  import jax
  import jax.numpy as jnp
  from mvelab import program as T
  cell = Cell(bench.env_name, variant, horizon)
  p = bench.programs(variant, horizon)
  state = bench.state_for(p)

  def run(s, key):
    final, metrics = jax.lax.scan(functools.partial(T.update, p), s,
                                  jax.random.split(key, n_updates))
    # Return scalars only: the state is neither donated nor copied out.
    return metrics["critic_loss"].sum() + jnp.sum(final.alpha_param)

  t0 = time.perf_counter()
  compiled = jax.jit(run).lower(state, bench.key).compile()
  cell.compile_s = time.perf_counter() - t0
  compiled(state, jax.random.PRNGKey(100)).block_until_ready()  # warm
  times = []
  for i in range(repeats):
    k = jax.random.PRNGKey(101 + i)
    t0 = time.perf_counter()
    compiled(state, k).block_until_ready()
    times.append((time.perf_counter() - t0) / n_updates * 1e3)
  cell.ms, cell.ms_all = _stat(times), tuple(times)
  return cell


# ---------------------------------------------------------------- irreducible parts
def _sum_leaves(tree):
  import jax
  import jax.numpy as jnp
  return sum(jnp.sum(jnp.asarray(x, jnp.float32)) for x in jax.tree.leaves(tree))


def _time_fn(fn, xs, repeats):
  """(in-loop ms, per-call ms, compile s) of ``fn(x)`` over the ``K`` inputs ``xs``.

  In-loop: one jitted ``lax.scan`` over the K different inputs, each output summed into
  the carry (so nothing is hoisted or dropped); per iteration. Per-call: the jitted
  ``fn`` on the first input, median over calls (includes dispatch).
  """
  import jax
  import jax.numpy as jnp
  k = jax.tree.leaves(xs)[0].shape[0]

  def loop(xs):
    def body(acc, x):
      return acc + _sum_leaves(fn(x)), None
    return jax.lax.scan(body, jnp.float32(0.0), xs)[0]

  t0 = time.perf_counter()
  loop_c = jax.jit(loop).lower(xs).compile()
  x0 = jax.tree.map(lambda a: a[0], xs)
  call_c = jax.jit(fn).lower(x0).compile()
  compile_s = time.perf_counter() - t0
  loop_c(xs).block_until_ready()
  jax.block_until_ready(call_c(x0))
  loop_t, call_t = [], []
  for _ in range(repeats):
    t0 = time.perf_counter()
    loop_c(xs).block_until_ready()
    loop_t.append((time.perf_counter() - t0) / k * 1e3)
  for _ in range(max(20, 5 * repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(call_c(x0))
    call_t.append((time.perf_counter() - t0) * 1e3)
  return _stat(loop_t), _stat(call_t), compile_s


def irreducible(bench: EnvBench, inner, repeats, with_ensemble=True) -> dict:
  """ms of one batched physics step, ensemble step, policy sample, twin-critic eval."""
  import jax
  import jax.numpy as jnp
  from mvelab import replay as replay_lib
  from mvelab.agents import expansion as xp
  from mvelab.core import normalization
  p, st, env = bench.base, bench.state, bench.env
  big = replay_lib.sample(st.replay, jax.random.PRNGKey(3), inner * BATCH)
  xs = jax.tree.map(lambda a: a.reshape((inner, BATCH) + a.shape[1:]), big)
  keys = jax.random.split(jax.random.PRNGKey(4), inner)
  stats = st.obs_stats
  out = {}
  simulate = jax.vmap(env.simulate)
  out["step"] = _time_fn(lambda x: simulate(x[0], x[1]), (xs.sim_t, xs.action_tm1), repeats)
  policy_fn = xp.make_policy_fn(p.nets, st.actor_params, stats, False)
  out["pi"] = _time_fn(lambda x: policy_fn(x[0], x[1]), (xs.obs_t, keys), repeats)

  def critic(x):
    q = p.nets.q(st.critic_params, normalization.normalize(stats, x[0]), x[1])
    return jnp.min(q, axis=-1)

  out["Q"] = _time_fn(critic, (xs.obs_t, xs.action_tm1), repeats)
  if with_ensemble:
    pl = bench.programs("critic-learned", 1)
    ms = pl.model.init(jax.random.PRNGKey(7))

    def ens(x):
      obs, action, key = x
      roll = pl.model.rollout(ms, stats, obs, None, lambda o, k: (
          action, jnp.zeros(o.shape[:1], jnp.float32)), key, 1)
      return roll.obs[:, 1], roll.reward, roll.terminated

    out["ensemble"] = _time_fn(ens, (xs.obs_t, xs.action_tm1, keys), repeats)
  return out


# --------------------------------------------------------------------------- tables
def _best(t):
  """Cost of an irreducible part: the smaller of in-loop and per-call (each is an upper
  bound on the work itself: per-call adds dispatch, in-loop adds a reduction)."""
  return min(t[0], t[1])


def slope_fit(cells):
  pts = [(c.horizon, c.ms) for c in cells if c.horizon >= 1 and math.isfinite(c.ms)]
  if len(pts) < 2:
    return float("nan"), float("nan"), len(pts)
  h, ms = np.array(pts, dtype=float).T
  slope, intercept = np.polyfit(h, ms, 1)
  return float(slope), float(intercept), len(pts)


def env_tables(env_name, backend, cells, irr, horizons, variants) -> str:
  by = {(c.variant, c.horizon): c for c in cells if c.env == env_name}
  cols = [v for v in variants if v != "sac"]
  sac = by.get(("sac", 0))
  title = env_name + (f" (backend {backend})" if backend else "")
  out = [f"### {title}: ms per update ({_stat.__name__} of the repeats; compile s in "
         "parentheses)", ""]
  header = ["H"] + cols + (["sac (H=0)"] if sac else [])
  rows = []
  for h in horizons:
    r = [str(h)]
    for v in cols:
      c = by.get((v, h))
      if c is None:
        r.append("-")
      elif c.error:
        r.append("error")
      else:
        r.append(f"{c.ms:.2f} ({c.compile_s:.0f})")
    if sac:
      r.append(f"{sac.ms:.2f} ({sac.compile_s:.0f})" if h == 0 and not sac.error else "")
    rows.append(r)
  out.append(_md_table(header, rows))
  if irr:
    out += ["", f"Irreducible parts at batch {BATCH} (ms; in-loop = inside a jitted scan, "
            "per-call = one jitted call incl. dispatch):", ""]
    names = {"step": "physics step (vmap env.simulate)",
             "ensemble": "learned-model step (5 members)", "pi": "policy sample",
             "Q": "twin-critic eval"}
    out.append(_md_table(["part", "in-loop ms", "per-call ms", "used (min) ms", "compile s"], [
        [names[k], f"{v[0]:.3f}", f"{v[1]:.3f}", f"{_best(v):.3f}", f"{v[2]:.1f}"]
        for k, v in irr.items()]))
  return "\n".join(out)


def slope_table(cells, irrs, envs_, variants) -> tuple[str, list]:
  rows, data = [], []
  for env_name in envs_:
    irr = irrs.get(env_name)
    for v in variants:
      if v == "sac":
        continue
      cs = [c for c in cells if c.env == env_name and c.variant == v and not c.error]
      if not cs:
        continue
      slope, icpt, n = slope_fit(cs)
      if irr:
        step, pi, q = _best(irr["step"]), _best(irr["pi"]), _best(irr["Q"])
        floor = step + pi + q
        ens = _best(irr["ensemble"]) if "ensemble" in irr else float("nan")
        own = {"critic-oracle": step, "actor-oracle": step, "retrace": 0.0,
               "critic-learned": ens, "critic-oracle-direct": step,
               "critic-learned-direct": ens, "steve-oracle": step, "steve-learned": ens}[v]
        if v.endswith("-direct"):
          # 'direct' values reuse the rollout's action: one pi and no Q per imagined step.
          work = own + pi
        elif v.startswith("steve"):
          # R rollouts (learned: the 5 members), each step: the rollout's pi, a fresh pi
          # and one twin-critic evaluation per rollout; the model step once (the learned
          # one applies each member to its own rollout).
          r = 5 if v == "steve-learned" else 1
          work = own * (1 if v == "steve-learned" else r) + r * (2 * pi + q)
        else:
          work = own + 2 * pi + 2 * q
      else:
        floor = work = float("nan")
      data.append(dict(env=env_name, variant=v, slope=slope, intercept=icpt, points=n,
                       floor=floor, work=work))
      rows.append([env_name, v, _fmt(slope, 3), _fmt(icpt, 2), str(n), _fmt(floor, 3),
                   _fmt(slope / floor if floor else float("nan"), 2), _fmt(work, 3),
                   _fmt(slope / work if work else float("nan"), 2)])
  header = ["env", "variant", "slope ms/H", "intercept ms", "H>=1 points",
            "floor = step+pi+Q ms", "slope/floor", "work = s+2pi+2Q ms", "slope/work"]
  return _md_table(header, rows), data


def acceptance(cells, irrs) -> str:
  by = {(c.env, c.variant, c.horizon): c for c in cells if not c.error}
  sac = by.get(("pendulum", "sac", 0))
  irr = irrs.get("pendulum")
  cv, direct = (by.get(("pendulum", v, 30)) for v in ("critic-oracle", "critic-oracle-direct"))
  if not (sac and irr and (cv or direct)):
    return ("Acceptance check (pendulum): not run (needs pendulum, variants sac and "
            "critic-oracle or critic-oracle-direct, H = 30).")
  step, pi, q = _best(irr["step"]), _best(irr["pi"]), _best(irr["Q"])
  budget = sac.ms + 30 * (step + pi + q)
  budget2 = sac.ms + 30 * (step + 2 * pi + 2 * q)
  rows = [["SAC update (H=0)", f"{sac.ms:.2f}"],
          ["30 x (step + pi + Q)", f"{30 * (step + pi + q):.2f}"],
          ["budget = SAC + 30 x (step + pi + Q)", f"{budget:.2f}"]]
  for name, cell in (("critic-oracle (control variate, the paper's)", cv),
                     ("critic-oracle-direct (ce_values=direct)", direct)):
    if cell is None:
      continue
    ratio = cell.ms / budget
    rows += [[f"measured ms/update, {name} H=30", f"{cell.ms:.2f}"],
             ["  measured / budget (goal <= 1.5)",
              f"**{ratio:.2f}** ({'met' if ratio <= 1.5 else 'NOT met'})"],
             ["  measured / (SAC + 30 x (step + 2 pi + 2 Q))", f"{cell.ms / budget2:.2f}"]]
  return "\n".join([
      "Acceptance check (pendulum, critic expansion with the oracle, H = 30):", "",
      _md_table(["quantity", "ms"], rows)])


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--envs", default="pendulum,hopper",
                  help="comma-separated env names (default pendulum,hopper)")
  ap.add_argument("--variants", default=None,
                  help=f"comma-separated from {','.join(VARIANTS)} (default: all on "
                       f"pendulum, {','.join(HOPPER_VARIANTS)} elsewhere unless --full; "
                       "sac is always added as the H=0 reference)")
  ap.add_argument("--horizons", default=None,
                  help="comma-separated H (default 0,1,3,5,10,20,30 on pendulum, "
                       "0,1,3,5,10 elsewhere unless --full)")
  ap.add_argument("--full", action="store_true",
                  help="every variant and the full horizon set on every env")
  ap.add_argument("--backend", default=None,
                  help="physics backend of brax envs (default: mvelab's, spring)")
  ap.add_argument("--repeats", type=int, default=5, help="timed calls per cell")
  ap.add_argument("--stat", choices=tuple(STATS), default="median",
                  help="statistic over the repeats: median (default) or min (steadier on "
                       "a shared machine)")
  ap.add_argument("--updates", type=int, default=20, help="updates per timed call")
  ap.add_argument("--inner", type=int, default=50,
                  help="iterations of the in-loop timing of the irreducible parts")
  ap.add_argument("--no-sac", action="store_true", help="skip the plain SAC reference")
  ap.add_argument("--out", default=None, help="also write the tables as markdown here")
  return ap.parse_args(argv)


def plan(args):
  """[(env, variants, horizons)]."""
  out = []
  for env_name in _parse_list(args.envs):
    small = env_name != "pendulum" and not args.full
    variants = (_parse_list(args.variants) if args.variants else
                (HOPPER_VARIANTS if small else EXPANSION_VARIANTS))
    for v in variants:
      if v not in VARIANTS:
        raise SystemExit(f"--variants: unknown variant {v!r}; allowed: {', '.join(VARIANTS)}")
    horizons = (_parse_list(args.horizons, int) if args.horizons else
                (SMALL_HORIZONS if small else ALL_HORIZONS))
    if not args.no_sac and "sac" not in variants:
      variants = ("sac",) + tuple(variants)
    out.append((env_name, tuple(variants), tuple(horizons)))
  return out


def main(argv=None) -> int:
  global _stat
  args = parse_args(argv)
  _stat = STATS[args.stat]
  warnings.filterwarnings("ignore")
  import jax
  from mvelab import envs as mv_envs
  work = plan(args)
  t_start = time.perf_counter()
  load0 = _load()
  _log(f"# expansion cost | jax {jax.__version__} on {jax.devices()[0].platform} | "
       f"{os.cpu_count()} cores | load {load0}")
  cells, irrs, sections, backends = [], {}, [], {}
  for env_name, variants, horizons in work:
    spec = mv_envs.ENVS[env_name]
    backend = (args.backend or spec.options["backend"]) if "backend" in spec.options else None
    backends[env_name] = backend
    warmup = max(1000, 2 * (max(horizons) + 2))
    _log(f"\n## {env_name}{f' ({backend})' if backend else ''}: variants "
         f"{','.join(variants)}, H {','.join(map(str, horizons))}, warm-up {warmup}")
    bench = EnvBench(env_name, backend, warmup)
    _log(f"  prefill (compile + run): {bench.prefill_s:.1f} s")
    t0 = time.perf_counter()
    try:
      irrs[env_name] = irreducible(bench, args.inner, args.repeats,
                                   with_ensemble="critic-learned" in variants)
      _log("  irreducible (in-loop ms): " + ", ".join(
          f"{k} {v[0]:.3f}" for k, v in irrs[env_name].items())
           + f" [{time.perf_counter() - t0:.0f} s]")
    except Exception as e:  # keep going: the update timings are the main result
      _log(f"  irreducible parts FAILED: {type(e).__name__}: {e}")
    for v in variants:
      for h in ((0,) if v == "sac" else horizons):
        t0 = time.perf_counter()
        try:
          c = time_updates(bench, v, h, args.updates, args.repeats)
          _log(f"  {v:15s} H={h:<3d} {c.ms:9.2f} ms/update  (compile {c.compile_s:5.1f} s, "
               f"repeats {', '.join(f'{x:.2f}' for x in c.ms_all)}) "
               f"[{time.perf_counter() - t0:.0f} s, load {_load()}]")
        except Exception as e:
          c = Cell(env_name, v, h, error=f"{type(e).__name__}: {e}")
          _log(f"  {v:15s} H={h:<3d} FAILED: {c.error}")
          traceback.print_exc()
        cells.append(c)
    sections.append(env_tables(env_name, backend, cells, irrs.get(env_name), horizons,
                               variants))
    del bench
  envs_ = [w[0] for w in work]
  all_variants = []
  for w in work:
    all_variants += [v for v in w[1] if v not in all_variants]
  st, _ = slope_table(cells, irrs, envs_, all_variants)
  total = time.perf_counter() - t_start
  head = (f"Expansion cost: ms per gradient update (1 seed, batch {BATCH}, networks "
          f"{HIDDEN}, {args.updates} updates per timed call, {args.stat} of {args.repeats}); "
          f"jax {jax.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load0} at start, {_load()} at end; "
          f"total {total / 60:.1f} min.")
  text = "\n\n".join([head] + sections + [
      "### Slope per unit of H (least squares over H >= 1) vs the irreducible work", st,
      acceptance(cells, irrs)]) + "\n"
  _log("\n" + text)
  write_out(text, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
