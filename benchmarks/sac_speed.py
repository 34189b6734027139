#!/usr/bin/env python
"""SAC training speed of mvelab against Brax's own SAC trainer, plus FLOP accounting.

What one run measures (all in one process tree, one after the other, so that the rows
share the machine state):

1. **mvelab SAC** (``mvelab.runner.run_seeds``, the code path behind ``mvelab.train``) on
   ``pendulum`` (pure JAX) and Brax ``inverted_pendulum`` (mvelab's Brax wrapper on
   ``--brax-backend``, default: mvelab's default for inverted_pendulum, generalized), at
   UTD 1, networks (256, 256), batch 256, num_envs 1, for

   * 1 seed, in this process;
   * ``--seeds`` seeds (default 5) vmapped in this process (workers=1);
   * the same seeds over 2 spawned processes pinned one per core (workers=2), split and
     pinned exactly as ``mvelab.runner`` does for ``train(..., workers=2)``.

   Each run is ``--warmup`` random-action steps (prefill), then ``--steps`` (1 seed,
   default 5000) or ``--multi-steps`` (several seeds, default 3000 to keep the default run
   under ~10 min) learning steps per seed in chunks of ``--chunk`` steps; every chunk ends
   with a 1-episode evaluation (inside mvelab's compiled chunk; measured separately at
   0.035 s for inverted_pendulum's 1000 steps, ~1 % of a chunk). The
   steady rate is measured from the end of ``start`` (prefill + first eval) to the end of
   the last chunk, so it excludes compilation, prefill and process start-up. Compilation
   (``start`` + ``train_chunk``, ahead of time) is reported separately. For workers=2 the
   rate is (seed-steps of all workers) / (earliest first timestamp .. latest last
   timestamp), i.e. staggered workers are not flattered; "wall s" is the whole call
   including process spawn, imports and compilation.

2. **Brax SAC** (``brax.training.agents.sac.train``, brax 0.14.2) on ``inverted_pendulum``
   with the same physics backend, with the settings of measurements.md section 4
   (lr 3e-4, discount 0.99, batch 256, (256, 256) networks, normalised observations,
   episode_length 1000, min_replay_size = ``--warmup``-like prefill), in two variants:

   * ``num_envs=1, grad_updates_per_step=1``: one env step then one update, i.e. the same
     work per step as mvelab; ``num_eval_envs=1`` (like mvelab's 1 eval episode). This is
     the reference for the "x Brax" column.
   * ``num_envs=16, grad_updates_per_step=16, num_eval_envs=16``: measurements.md's setting
     (also UTD 1, but 16 envs stepped at once and 16 updates fused per step).

   Brax evaluates before prefill and after each training epoch and then calls
   ``progress_fn``. Epoch 1 contains the training-epoch compile and Brax's evaluator
   recompiles its unroll at the evaluations after epochs 1 and 2, so the run has 2 extra
   warm-up epochs and the steady rate is taken from the ``progress_fn`` timestamps from
   the end of epoch 2 to the end of the last epoch (``--steps`` steps); like mvelab's it
   includes the (small, once compiled) evaluations. Brax's own ``training/sps`` (epoch
   time only, no eval) is printed alongside. "compile s" for Brax is everything before
   the steady window that steady training does not explain (setup, initial eval,
   prefill, epoch compile, eval recompiles).

   jax 0.10 removed ``jax.device_put_replicated``, which Brax's SAC calls; it is patched
   exactly as in measurements.md section 4 before calling ``sac.train``.

3. **FLOPs of one mvelab SAC update** (``mvelab.program.update``, one seed): XLA's
   ``cost_analysis()['flops']`` of the compiled update, and an analytic matmul count
   (see ``analytic_update_flops``). Achieved FLOP/s = XLA flops/update x updates/s of each
   mvelab row; the machine's peak is measured in the same run as the best of several
   jitted ``N x N @ N x N`` float32 matmuls (``--peak-size``, default 2048), with all cores
   and, in a subprocess pinned to one core, with one core (XLA:CPU runs a SAC update of
   this size on about one core, measurements.md section 3).

Not measured here: SB3 and sbx are not installed in this venv. They were measured
separately (measurements.md section 5, SAC on Pendulum-v1, (256, 256), batch 256, 2 cores):
SB3 2.9.2 (torch 2.13 CPU) 133.6 updates/s, sbx-rl 0.28.0 about 202 updates/s.

Usage::

  .venv/bin/python benchmarks/sac_speed.py                 # full run, ~8-10 min on 2 cores
  .venv/bin/python benchmarks/sac_speed.py --quick         # every part, tiny sizes
  .venv/bin/python benchmarks/sac_speed.py --brax-backend generalized --out sac_speed.md
  .venv/bin/python benchmarks/sac_speed.py --parts flops   # only the FLOP table

Timings on a shared machine are noisy; compare rows of one run, not across runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_common.py
from _common import log as _log, md_table as _md_table, write_out  # noqa: E402

# Keep the top level light: spawned workers import this module as __mp_main__ and must
# pin themselves to a core before JAX starts its thread pools.

PARTS = ("mvelab", "brax", "flops")
HIDDEN = (256, 256)
BATCH = 256


# ------------------------------------------------------------------------- helpers
@dataclasses.dataclass
class Row:
  """One measured configuration (one line of the speed table)."""

  system: str
  env: str
  backend: str
  seeds: int
  workers: int
  env_steps_per_s: float
  updates_per_s: float
  compile_s: float
  wall_s: float
  note: str = ""
  num_envs: int = 1
  utd: float = 1.0


def _fmt(x, digits=1):
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  if isinstance(x, float):
    if abs(x) >= 1e4:
      return f"{x:,.0f}"
    return f"{x:.{digits}f}"
  return str(x)






# ------------------------------------------------------------------ mvelab SAC runs
def _mvelab_config(env, backend, args, num_seeds, steps=None):
  from mvelab import envs as mv_envs
  from mvelab.config import Config, resolve
  steps = args.steps if steps is None else steps
  has_backend = "backend" in mv_envs.ENVS[env].options
  cfg = Config(env=env, backend=backend if has_backend else None,
               num_seeds=num_seeds, total_steps=args.warmup + steps,
               warmup_steps=args.warmup, eval_every=args.chunk, eval_episodes=1,
               num_envs=1, updates_per_step=1, batch_size=BATCH, hidden_sizes=HIDDEN)
  return resolve(cfg)


def _emit_to_queue(queue, seeds):
  def emit(kind, payload):
    if kind == "params":  # not needed here; keep the queue small
      payload = None
    queue.put((kind, seeds, payload, time.time()))
  return emit


def _worker(cfg_dict, seeds, core, queue):
  """Worker process: pin to ``core`` (before JAX starts), then ``runner.run_seeds``."""
  try:
    if core is not None and hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {core})
    warnings.filterwarnings("ignore")
    from mvelab import runner
    from mvelab.config import Config
    runner.run_seeds(Config.from_dict(cfg_dict), seeds, _emit_to_queue(queue, seeds))
    queue.put(("done", seeds, None, time.time()))
  except BaseException as e:  # report, never hang the parent
    queue.put(("error", seeds, f"{type(e).__name__}: {e}\n{traceback.format_exc()}",
               time.time()))


def run_mvelab(cfg, workers: int) -> dict:
  """Trains ``cfg.num_seeds`` seeds over ``workers`` processes; returns timing events.

  Returns dict(compile=[s per worker], rows=[(t_abs, row dict)], wall=s).
  """
  from mvelab import runner
  seeds = list(range(cfg.num_seeds))
  groups = runner.split_seeds(seeds, workers)
  events = {"compile": [], "rows": [], "groups": groups}
  t0 = time.time()
  if len(groups) == 1:
    class _Q:
      def put(self, item):
        _handle(events, item)
    runner.run_seeds(cfg, seeds, _emit_to_queue(_Q(), seeds))
  else:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    procs = []
    for i, g in enumerate(groups):  # same pinning rule as mvelab.run.workers
      core = cores[i % len(cores)] if len(cores) >= len(groups) else None
      proc = ctx.Process(target=_worker, args=(cfg.to_dict(), g, core, queue), daemon=True)
      proc.start()
      procs.append(proc)
    pending = len(procs)
    try:
      while pending:
        try:
          item = queue.get(timeout=1.0)
        except Exception:  # queue.Empty
          if any(p.exitcode not in (None, 0) for p in procs) and queue.empty():
            raise RuntimeError("a worker process died without reporting")
          continue
        if item[0] in ("done", "error"):
          pending -= 1
          if item[0] == "error":
            raise RuntimeError(f"worker {item[1]} failed: {item[2]}")
        else:
          _handle(events, item)
    finally:
      for proc in procs:
        if proc.is_alive():
          proc.terminate()
        proc.join()
  events["wall"] = time.time() - t0
  return events


def _handle(events, item):
  kind, group, payload, t = item
  if kind == "compiled":
    events["compile"].append(payload)
  elif kind == "rows":
    for r in payload:
      events["rows"].append((t, r))


def steady_rates(events) -> tuple[float, float, list]:
  """(env steps/s, updates/s) summed over seeds, over the steady window; per-worker rates.

  The window runs from each group's first row (end of ``start``: prefill + first eval) to
  its last row; the joint window is [earliest first, latest last] over the groups.
  """
  per_seed: dict = {}
  for t, r in events["rows"]:
    per_seed.setdefault(r["seed"], []).append((t, r["env_steps"], r["updates"]))
  d_steps = d_upd = 0
  t_first, t_last = [], []
  per_worker = []
  for g in events["groups"]:
    gs = gu = 0
    for s in g:
      pts = sorted(per_seed[s], key=lambda x: x[1])
      if len(pts) < 2:
        raise RuntimeError(f"seed {s}: fewer than 2 evaluations; increase --steps")
      gs += pts[-1][1] - pts[0][1]
      gu += pts[-1][2] - pts[0][2]
      t_first.append(pts[0][0])
      t_last.append(pts[-1][0])
    g_t = [p for s in g for p in per_seed[s]]
    span = max(p[0] for p in g_t) - min(p[0] for p in g_t)
    per_worker.append((len(g), gs / span if span > 0 else float("nan")))
    d_steps += gs
    d_upd += gu
  span = max(t_last) - min(t_first)
  if span <= 0:
    return float("nan"), float("nan"), per_worker
  return d_steps / span, d_upd / span, per_worker


def mvelab_eval_time(cfg, reps=3) -> float:
  """Seconds of one compiled ``mvelab.program.evaluate`` of one seed (informative only)."""
  import jax
  from mvelab import program as T
  p = T.make_programs(cfg)
  state = jax.jit(lambda k: T.init_state(p, k))(jax.random.PRNGKey(0))
  ev = jax.jit(lambda st: T.evaluate(p, st)).lower(state).compile()
  jax.block_until_ready(ev(state))
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    jax.block_until_ready(ev(state))
    best = min(best, time.perf_counter() - t)
  return best


def mvelab_rows(args, envs_, backend, notes) -> list:
  rows = []
  combos = [(1, 1, args.steps), (args.seeds, 1, args.multi_steps),
            (args.seeds, 2, args.multi_steps)]
  for env in envs_:
    cfg1 = _mvelab_config(env, backend, args, 1)
    ev_s = mvelab_eval_time(cfg1)
    notes.append(f"mvelab evaluation of 1 seed x {cfg1.eval_episodes} episode "
                 f"({cfg1.episode_length} steps) on {env}: {ev_s:.3f} s per chunk "
                 f"(measured separately; included in the mvelab rates).")
    _log(f"[mvelab] {env}: one evaluation (1 seed, 1 episode of {cfg1.episode_length} "
         f"steps) takes {ev_s:.3f} s")
    for num_seeds, workers, steps in combos:
      cfg = _mvelab_config(env, backend, args, num_seeds, steps)
      _log(f"[mvelab] {env} ({cfg.backend or 'jax'}) seeds={num_seeds} workers={workers}: "
           f"{cfg.warmup_steps} warm-up + {cfg.total_steps - cfg.warmup_steps} steps "
           f"per seed, chunks of {cfg.eval_every} ...")
      ev = run_mvelab(cfg, workers)
      sps, ups, per_worker = steady_rates(ev)
      compile_s = max(ev["compile"])
      pw = ", ".join(f"{n} seed(s): {r:.1f} steps/s" for n, r in per_worker)
      _log(f"    {sps:8.1f} env steps/s  {ups:8.1f} updates/s  compile {compile_s:.1f} s "
           f"(per worker: {', '.join(f'{c:.1f}' for c in ev['compile'])})  "
           f"wall {ev['wall']:.1f} s  [per worker: {pw}]")
      rows.append(Row("mvelab SAC", env, cfg.backend or "jax", num_seeds, workers, sps, ups,
                      compile_s, ev["wall"]))
  return rows


# ----------------------------------------------------------------------- Brax SAC
def _patch_device_put_replicated():
  """jax 0.10 removed jax.device_put_replicated; Brax's SAC still calls it (§1, §4)."""
  import jax
  import jax.numpy as jnp

  def _dpr(x, devices):
    return jax.tree.map(lambda a: jax.device_put(jnp.stack([a] * len(devices))), x)

  jax.device_put_replicated = _dpr


BRAX_SKIP_EPOCHS = 2


def run_brax_sac(backend, num_envs, gups, num_eval_envs, warmup, steps, chunk) -> dict:
  """One Brax SAC run: ``BRAX_SKIP_EPOCHS`` warm-up epochs, then ``steps / chunk`` more.

  Brax calls ``progress_fn`` after its initial evaluation (before the prefill) and after
  the evaluation that follows each training epoch. Epoch 1 contains the training-epoch
  compile, and Brax's evaluator recompiles its unroll at the first two evaluations after
  the initial one (its donated eval state changes type once more; measured: ~8 s each
  under load, then 0.03 s), so the steady window starts at the progress call after epoch
  ``BRAX_SKIP_EPOCHS`` and ends at the last one.
  """
  import mvelab.envs.brax_env  # noqa: F401  (imports brax quietly)
  from brax import envs as brax_envs
  from brax.training.agents.sac import train as brax_sac
  _patch_device_put_replicated()

  n_epochs = BRAX_SKIP_EPOCHS + max(1, -(-steps // chunk))
  prefill = -(-warmup // num_envs) * num_envs
  num_timesteps = prefill + n_epochs * chunk
  calls = []

  def progress(step, metrics):
    calls.append((time.time(), int(step), dict(metrics)))

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    env = brax_envs.get_environment("inverted_pendulum", backend=backend)
    t0 = time.time()
    brax_sac.train(
        environment=env, num_timesteps=num_timesteps, episode_length=1000,
        num_envs=num_envs, grad_updates_per_step=gups, batch_size=BATCH,
        learning_rate=3e-4, discounting=0.99, normalize_observations=True,
        reward_scaling=1.0, min_replay_size=warmup,
        max_replay_size=max(20_000, num_timesteps), num_evals=n_epochs + 1,
        num_eval_envs=num_eval_envs, seed=0, progress_fn=progress)
    wall = time.time() - t0
  # calls[0]: initial eval (before prefill); calls[k]: after epoch k and its eval.
  if len(calls) < BRAX_SKIP_EPOCHS + 2:
    raise RuntimeError(f"brax SAC: only {len(calls)} progress calls; increase --steps")
  (ts, ss, _), (tn, sn, _) = calls[BRAX_SKIP_EPOCHS], calls[-1]
  sps = (sn - ss) / (tn - ts)
  # Everything before the window that steady training does not explain: setup, initial
  # eval, prefill, the epoch compile and the eval recompiles.
  compile_s = (ts - t0) - (ss - prefill) / sps
  # Per epoch: (interval between progress calls, epoch training time, eval time).
  epochs = []
  for i, ((ta, sa, _), (tb, sb, mb)) in enumerate(zip(calls[:-1], calls[1:])):
    n = sb - (prefill if i == 0 else sa)
    tr = n / float(mb["training/sps"]) if mb.get("training/sps") else float("nan")
    epochs.append((tb - ta, tr, float(mb.get("eval/epoch_eval_time", float("nan")))))
  steady = epochs[BRAX_SKIP_EPOCHS:]
  train_s = sum(e[1] for e in steady)
  ret = float(calls[-1][2].get("eval/episode_reward", float("nan")))
  return dict(sps=sps, ups=sps * gups / num_envs, compile_s=compile_s, wall=wall,
              train_only_sps=(sn - ss) / train_s if train_s > 0 else float("nan"),
              eval_s=sum(e[2] for e in steady) / len(steady),
              steps=sn - ss, final_return=ret, num_envs=num_envs, gups=gups,
              epochs=epochs)


def brax_rows(args, backend, notes) -> list:
  rows = []
  for num_envs, gups, n_eval, label in [(1, 1, 1, "num_envs=1, gups=1"),
                                        (16, 16, 16, "num_envs=16, gups=16, §4")]:
    chunk = max(num_envs, args.chunk)
    _log(f"[brax] inverted_pendulum ({backend}) {label}: prefill {args.warmup}, "
         f"{BRAX_SKIP_EPOCHS} warm-up + {-(-args.steps // chunk)} epochs of {chunk} "
         f"steps ...")
    r = run_brax_sac(backend, num_envs, gups, n_eval, args.warmup, args.steps, chunk)
    _log(f"    {r['sps']:8.1f} env steps/s  {r['ups']:8.1f} updates/s over {r['steps']} "
         f"steps (training only, no eval: {r['train_only_sps']:.1f}; eval "
         f"{r['eval_s']:.2f} s per epoch)  "
         f"compile+setup {r['compile_s']:.1f} s  wall {r['wall']:.1f} s  "
         f"last eval return {r['final_return']:.1f}")
    _log("    per epoch (interval s / training s / eval s): " + "; ".join(
        f"{a:.2f}/{b:.2f}/{c:.2f}" for a, b, c in r["epochs"]))
    notes.append(f"Brax SAC {label}: {r['eval_s']:.3f} s per evaluation ({n_eval} env(s) x "
                 f"1000 steps; included); training only, without evaluations: "
                 f"{r['train_only_sps']:.1f} env steps/s (Brax's training/sps).")
    rows.append(Row("Brax SAC", "inverted_pendulum", backend, 1, 1, r["sps"], r["ups"],
                    r["compile_s"], r["wall"], note=label, num_envs=num_envs,
                    utd=gups / num_envs))
  return rows


def head_to_head(args, backend, rounds: int) -> str:
  """Alternates mvelab (1 seed) and Brax SAC (num_envs 1, UTD 1) on inverted_pendulum
  ``rounds`` times, so that drift in the machine's speed over the benchmark hits both
  alike; returns a markdown table with every round and the median ratio."""
  cfg = _mvelab_config("inverted_pendulum", backend, args, 1)
  table, ratios = [], []
  for i in range(rounds):
    sps_mv = steady_rates(run_mvelab(cfg, 1))[0]
    sps_bx = run_brax_sac(backend, 1, 1, 1, args.warmup, args.steps, args.chunk)["sps"]
    ratios.append(sps_mv / sps_bx)
    _log(f"[head-to-head {i + 1}/{rounds}] mvelab {sps_mv:.1f} | Brax {sps_bx:.1f} env "
         f"steps/s | ratio {ratios[-1]:.3f}")
    table.append([str(i + 1), f"{sps_mv:.1f}", f"{sps_bx:.1f}", f"{ratios[-1]:.3f}"])
  med = statistics.median(ratios)
  return (f"## Head to head (inverted_pendulum, {backend}, 1 seed, UTD 1, alternating)\n\n"
          + _md_table(["round", "mvelab env steps/s", "Brax SAC env steps/s",
                       "mvelab / Brax"], table)
          + f"\n\nMedian ratio over {rounds} rounds: **{med:.3f}**.")


# ---------------------------------------------------------------------------- FLOPs
def _mlp_flops(sizes) -> int:
  """Forward matmul FLOPs per sample of a dense MLP with layer sizes ``sizes``."""
  return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:]))


def analytic_update_flops(obs, act, hidden=HIDDEN, batch=BATCH, num_critics=2) -> dict:
  """Matmul FLOPs of one SAC update (``mvelab.program.update``), by component.

  Conventions: a dense layer costs ``2 * in * out`` FLOPs per sample forward; its
  backward costs twice that (gradient w.r.t. inputs and w.r.t. weights), so forward +
  backward = 3x forward. Where only the input gradient is needed (the critics inside the
  actor loss: the actor loss is differentiated w.r.t. the actor only, so JAX never builds
  the critics' weight gradients) the backward costs 1x forward. Biases, activations, the
  tanh-Gaussian head, replay sampling and normalisation are left out (< 1 %); Adam
  (~10 FLOPs per parameter) and the Polyak average (3 per critic parameter) are added.

  Per sample, with A = actor forward and C = one critic forward:

  * target:            A (sample a' ~ pi(s')) + 2C (two target critics on (s', a'))
  * critic loss+grad:  2 x 3C
  * actor loss+grad:   3A (actor fwd+bwd) + 2C (critics fwd) + 2C (critics input-bwd)
  * total:             4A + 12C, times the batch.
  """
  A = _mlp_flops((obs, *hidden, 2 * act))
  C = _mlp_flops((obs + act, *hidden, 1))
  n = num_critics
  target = (A + n * C) * batch
  critic = 3 * n * C * batch
  actor = (3 * A + 2 * n * C) * batch
  sizes_a = (obs, *hidden, 2 * act)
  sizes_c = (obs + act, *hidden, 1)
  p_actor = sum(a * b + b for a, b in zip(sizes_a[:-1], sizes_a[1:]))
  p_critic = n * sum(a * b + b for a, b in zip(sizes_c[:-1], sizes_c[1:]))
  optim = 10 * (p_actor + p_critic) + 3 * p_critic
  return dict(target=target, critic=critic, actor=actor, optim=optim,
              total=target + critic + actor + optim, params_actor=p_actor,
              params_critic=p_critic)


def xla_update_flops(env, backend, args) -> tuple:
  """XLA cost analysis of one jitted ``mvelab.program.update`` (one seed)."""
  import jax
  from mvelab import program as T
  cfg = _mvelab_config(env, backend, args, 1)
  p = T.make_programs(cfg)
  key = jax.random.PRNGKey(0)
  state_shape = jax.eval_shape(lambda k: T.start(p, k)[0], key)
  compiled = jax.jit(lambda s, k: T.update(p, s, k)).lower(state_shape, key).compile()
  ca = compiled.cost_analysis()
  if isinstance(ca, (list, tuple)):  # older jax: one dict per computation
    ca = ca[0] if ca else {}
  return float(ca.get("flops", float("nan"))), p.env.obs_size, p.env.action_size


def matmul_peak(n: int, reps: int) -> float:
  """Best FLOP/s of a jitted float32 ``n x n @ n x n`` matmul over ``reps`` runs."""
  import jax
  import jax.numpy as jnp
  ka, kb = jax.random.split(jax.random.PRNGKey(0))
  a = jax.random.normal(ka, (n, n), jnp.float32)
  b = jax.random.normal(kb, (n, n), jnp.float32)
  f = jax.jit(lambda x, y: x @ y)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(reps):
    t = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best


def _peak_worker(n, reps, core, queue):
  try:
    if core is not None and hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {core})
    queue.put(("ok", matmul_peak(n, reps)))
  except BaseException as e:
    queue.put(("error", f"{type(e).__name__}: {e}"))


def matmul_peak_one_core(n: int, reps: int) -> float:
  """``matmul_peak`` in a subprocess pinned to one core before JAX starts."""
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  ctx = mp.get_context("spawn")
  queue = ctx.Queue()
  proc = ctx.Process(target=_peak_worker, args=(n, reps, cores[-1] if cores else None,
                                                queue), daemon=True)
  proc.start()
  try:
    kind, val = queue.get(timeout=600)
  finally:
    proc.join(timeout=30)
  if kind != "ok":
    raise RuntimeError(f"one-core peak failed: {val}")
  return val


def flops_part(args, envs_, backend) -> dict:
  out = {"per_env": {}}
  for env in envs_:
    flops, obs, act = xla_update_flops(env, backend, args)
    an = analytic_update_flops(obs, act)
    out["per_env"][env] = dict(xla=flops, analytic=an, obs=obs, act=act)
    _log(f"[flops] {env}: obs {obs}, act {act}: XLA {flops / 1e6:.1f} MFLOP/update, "
         f"analytic {an['total'] / 1e6:.1f} MFLOP (target {an['target'] / 1e6:.1f}, critic "
         f"{an['critic'] / 1e6:.1f}, actor {an['actor'] / 1e6:.1f}, Adam+Polyak "
         f"{an['optim'] / 1e6:.2f}); params actor {an['params_actor']:,}, critics "
         f"{an['params_critic']:,}")
  out["peak"] = matmul_peak(args.peak_size, args.peak_reps)
  _log(f"[flops] peak {args.peak_size}^3 f32 matmul, all cores: {out['peak'] / 1e9:.1f} "
       f"GFLOP/s")
  try:
    out["peak1"] = matmul_peak_one_core(args.peak_size, args.peak_reps)
    _log(f"[flops] peak, one core (pinned subprocess): {out['peak1'] / 1e9:.1f} GFLOP/s")
  except Exception as e:  # informative only
    out["peak1"] = float("nan")
    _log(f"[flops] one-core peak not measured: {e}")
  return out


# --------------------------------------------------------------------------- tables
def speed_table(rows, ref: Optional[Row]) -> str:
  header = ["system", "env", "backend", "seeds", "workers", "env steps/s (all seeds)",
            "env steps/s per seed", "updates/s", "compile s", "wall s",
            "x Brax SAC (UTD 1)"]
  out = []
  for r in rows:
    ratio = r.env_steps_per_s / ref.env_steps_per_s if ref else float("nan")
    system = r.system + (f" ({r.note})" if r.note else "")
    out.append([system, r.env, r.backend, str(r.seeds), str(r.workers),
                _fmt(r.env_steps_per_s), _fmt(r.env_steps_per_s / r.seeds),
                _fmt(r.updates_per_s), _fmt(r.compile_s), _fmt(r.wall_s),
                _fmt(ratio, 2)])
  return _md_table(header, out)


def flops_table(rows, fl) -> str:
  header = ["env", "seeds", "workers", "FLOPs/update (XLA)", "FLOPs/update (analytic)",
            "updates/s", "achieved GFLOP/s", "peak GFLOP/s (all cores)",
            "fraction of peak", "fraction of 1-core peak"]
  out = []
  peak, peak1 = fl["peak"], fl.get("peak1", float("nan"))
  mv = [r for r in rows if r.system == "mvelab SAC"]
  if not mv:  # --parts flops only: per-update counts, no rates
    for env, d in fl["per_env"].items():
      out.append([env, "-", "-", f"{d['xla'] / 1e6:.1f} M", f"{d['analytic']['total'] / 1e6:.1f} M",
                  "n/a", "n/a", _fmt(peak / 1e9), "n/a", "n/a"])
  for r in mv:
    d = fl["per_env"].get(r.env)
    if d is None:
      continue
    achieved = d["xla"] * r.updates_per_s
    out.append([r.env, str(r.seeds), str(r.workers), f"{d['xla'] / 1e6:.1f} M",
                f"{d['analytic']['total'] / 1e6:.1f} M", _fmt(r.updates_per_s),
                _fmt(achieved / 1e9), _fmt(peak / 1e9), _fmt(achieved / peak, 3),
                _fmt(achieved / peak1, 3)])
  note = (f"Peak: best of {fl['reps']} jitted float32 {fl['n']}x{fl['n']} @ {fl['n']}x{fl['n']} "
          f"matmuls, all cores {peak / 1e9:.1f} GFLOP/s, one pinned core "
          f"{peak1 / 1e9:.1f} GFLOP/s. Achieved = XLA FLOPs/update x updates/s (all seeds).")
  return _md_table(header, out) + "\n\n" + note


def header_text(args, backend) -> str:
  import jax
  import mvelab.runner as runner
  v = runner.versions()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
  return (f"SAC speed, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node() or 'host'}: "
          f"{cores} cores, load avg {load[0]:.2f} at start, devices {jax.devices()}; "
          f"jax {v.get('jax')}, brax {v.get('brax')}, flax {v.get('flax')}, "
          f"optax {v.get('optax')}, python {v.get('python')}.\n"
          f"Settings: UTD 1, hidden {HIDDEN}, batch {BATCH}, num_envs 1 (mvelab), "
          f"{args.warmup} warm-up + {args.steps} steps per seed (1 seed, Brax) / "
          f"{args.multi_steps} (multi-seed), chunks/epochs of "
          f"{args.chunk}, Brax backend {backend}{' (--quick)' if args.quick else ''}.")


# ----------------------------------------------------------------------------- main
def parse_args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--quick", action="store_true",
                  help="tiny settings to check every part runs (600 steps, 256 warm-up)")
  ap.add_argument("--steps", type=int, default=None,
                  help="learning steps per seed after the warm-up (default 5000; quick 600)")
  ap.add_argument("--multi-steps", type=int, default=None,
                  help="learning steps per seed of the multi-seed rows (default 3000; "
                       "quick 600)")
  ap.add_argument("--warmup", type=int, default=None,
                  help="random-action warm-up steps / Brax min_replay_size (default 1000; "
                       "quick 256)")
  ap.add_argument("--chunk", type=int, default=None,
                  help="steps per mvelab chunk and per Brax epoch (default 1000; quick 300)")
  ap.add_argument("--seeds", type=int, default=5, help="seeds of the multi-seed rows")
  ap.add_argument("--envs", default="pendulum,inverted_pendulum",
                  help="comma-separated mvelab envs (default pendulum,inverted_pendulum)")
  ap.add_argument("--brax-backend", default=None,
                  choices=("spring", "generalized", "positional", "mjx"),
                  help="physics backend of inverted_pendulum for mvelab AND Brax SAC "
                       "(default: mvelab's default for inverted_pendulum, generalized)")
  ap.add_argument("--head-to-head", type=int, default=0, metavar="N",
                  help="also alternate mvelab (1 seed) and Brax SAC (UTD 1) on "
                  "inverted_pendulum N times and report every round and the median ratio "
                  "(use with --parts '' to run only this)")
  ap.add_argument("--parts", default=",".join(PARTS),
                  help=f"comma-separated subset of {','.join(PARTS)}")
  ap.add_argument("--peak-size", type=int, default=2048, help="matmul size for the peak")
  ap.add_argument("--peak-reps", type=int, default=None, help="matmul repeats (default 8)")
  ap.add_argument("--out", default=None, help="also write the tables as markdown here")
  args = ap.parse_args(argv)
  q = args.quick
  args.steps = args.steps or (600 if q else 5000)
  args.multi_steps = args.multi_steps or (600 if q else 3000)
  args.warmup = args.warmup if args.warmup is not None else (256 if q else 1000)
  args.chunk = args.chunk or (300 if q else 1000)
  args.peak_reps = args.peak_reps or (3 if q else 8)
  if q and args.peak_size == 2048:
    args.peak_size = 1024
  args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
  bad = [p for p in args.parts if p not in PARTS]
  if bad:
    ap.error(f"--parts: unknown {bad}; choose from {PARTS}")
  if args.warmup < BATCH:
    ap.error(f"--warmup must be at least the batch size {BATCH}")
  for name in ("steps", "multi_steps"):
    v = getattr(args, name)
    if v < 2 * args.chunk or v % args.chunk:
      ap.error(f"--{name.replace('_', '-')} must be a multiple of --chunk and at least "
               f"2 x --chunk, got {v} (chunk {args.chunk})")
  return args


def main(argv=None) -> int:
  args = parse_args(argv)
  warnings.filterwarnings("ignore")
  from mvelab import envs as mv_envs
  backend = args.brax_backend or mv_envs.ENVS["inverted_pendulum"].options["backend"]
  envs_ = [e.strip() for e in args.envs.split(",") if e.strip()]
  for e in envs_:
    if e not in mv_envs.ENVS:
      raise SystemExit(f"--envs: unknown env {e!r}")
  head = header_text(args, backend)
  _log(head)
  t_all = time.time()

  rows: list = []
  notes: list = []
  if "mvelab" in args.parts:
    rows += mvelab_rows(args, envs_, backend, notes)
  ref = None
  if "brax" in args.parts:
    b = brax_rows(args, backend, notes)
    ref = b[0]
    rows += b
  h2h = head_to_head(args, backend, args.head_to_head) if args.head_to_head else None
  fl = None
  if "flops" in args.parts:
    fl = flops_part(args, envs_, backend)
    fl["n"], fl["reps"] = args.peak_size, args.peak_reps

  sections = [f"# SAC speed\n\n{head}"]
  if rows:
    t = speed_table(rows, ref)
    sections.append(
        "## Training speed (steady state, compile excluded)\n\n" + t + "\n\n"
        "Rates are summed over seeds; 'x Brax' divides env steps/s (all seeds) by Brax SAC "
        "num_envs=1, UTD 1 on inverted_pendulum. Compile: mvelab start+chunk AOT compile "
        "(max over workers); Brax: the time before its steady window not explained by "
        "steady training (setup, initial eval, prefill, epoch compile, eval recompiles). "
        "Wall: the whole call (incl. spawn, imports, compile, prefill). "
        "Not run here: SB3 133.6 and sbx ~202 updates/s on Pendulum-v1 "
        "(measurements.md §5).\n\n" + "\n".join(f"- {n}" for n in notes))
  if h2h:
    sections.append(h2h)
  if fl is not None:
    sections.append("## FLOPs of one mvelab SAC update\n\n" + flops_table(rows, fl))
  if hasattr(os, "getloadavg"):
    sections.append(f"Load average at the end: {os.getloadavg()[0]:.2f} "
                    f"(total benchmark time {time.time() - t_all:.0f} s).")
  text = "\n\n".join(sections) + "\n"
  print("\n" + text, flush=True)
  _log(f"total benchmark time {time.time() - t_all:.0f} s")
  write_out(text, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
