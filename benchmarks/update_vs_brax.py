#!/usr/bin/env python
"""One SAC gradient update of mvelab against Brax SAC's ``sgd_step``, same shapes.

Times ``--updates`` consecutive updates (a jitted ``lax.scan``) of

* mvelab: ``mvelab.program.update`` on inverted_pendulum (obs 4, action 1), replay
  sampling included, from the state after ``start`` (prefill + first evaluation);
* Brax: the body of ``brax.training.agents.sac.train``'s ``sgd_step`` rebuilt from
  brax's own pieces (``make_sac_networks`` with running-statistics normalisation,
  ``make_losses``, ``gradient_update_fn`` with Adam, Polyak on the target critics) on
  fixed random transitions (no replay sampling);

both with (256, 256) networks and batch 256, alternating round by round. This is the
kernel-level comparison behind the head-to-head in ``sac_speed.py``: it isolates the
update from environment stepping and evaluation.

Usage::

  .venv/bin/python benchmarks/update_vs_brax.py               # ~1 min
  .venv/bin/python benchmarks/update_vs_brax.py --rounds 12 --updates 500
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # benchmarks/_common.py
from _common import log, md_table, write_out  # noqa: E402


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--rounds", type=int, default=8)
  ap.add_argument("--updates", type=int, default=300, help="updates per timed call")
  ap.add_argument("--out", default=None)
  args = ap.parse_args(argv)
  warnings.filterwarnings("ignore")

  import jax
  import jax.numpy as jnp
  import optax
  import mvelab.envs.brax_env  # noqa: F401  (imports brax quietly)
  from brax.training import gradients, types
  from brax.training.acme import running_statistics, specs
  from brax.training.agents.sac import losses as sac_losses
  from brax.training.agents.sac import networks as sac_networks
  from mvelab import program as T
  from mvelab.config import Config, resolve

  n, batch = args.updates, 256
  cfg = resolve(Config(env="inverted_pendulum", backend="generalized", num_seeds=1,
                       warmup_steps=1000, total_steps=2000, eval_every=1000,
                       eval_episodes=1, num_envs=1, updates_per_step=1, batch_size=batch,
                       hidden_sizes=(256, 256)))
  p = T.make_programs(cfg)
  mv_state = jax.jit(lambda k: T.start(p, k)[0])(jax.random.PRNGKey(0))
  mv = jax.jit(lambda s: jax.lax.scan(lambda c, k: T.update(p, c, k), s,
                                      jax.random.split(s.key, n))[0])

  obs_size, act = p.env.obs_size, p.env.action_size
  net = sac_networks.make_sac_networks(
      obs_size, act, preprocess_observations_fn=running_statistics.normalize)
  alpha_loss, critic_loss, actor_loss = sac_losses.make_losses(net, 1.0, 0.99, act)
  a_opt, p_opt, q_opt = optax.adam(3e-4), optax.adam(3e-4), optax.adam(3e-4)
  alpha_update = gradients.gradient_update_fn(alpha_loss, a_opt, pmap_axis_name=None)
  critic_update = gradients.gradient_update_fn(critic_loss, q_opt, pmap_axis_name=None)
  actor_update = gradients.gradient_update_fn(actor_loss, p_opt, pmap_axis_name=None)
  key = jax.random.PRNGKey(1)
  pp, qp = net.policy_network.init(key), net.q_network.init(key)
  norm = running_statistics.init_state(specs.Array((obs_size,), jnp.float32))
  la = jnp.zeros(())
  bx_state = dict(pp=pp, qp=qp, tq=qp, la=la, po=p_opt.init(pp), qo=q_opt.init(qp),
                  ao=a_opt.init(la))
  k1, k2, k3 = jax.random.split(key, 3)
  trans = types.Transition(
      observation=jax.random.normal(k1, (n, batch, obs_size)),
      action=jax.random.uniform(k2, (n, batch, act), minval=-1.0, maxval=1.0),
      reward=jnp.ones((n, batch)), discount=jnp.ones((n, batch)),
      next_observation=jax.random.normal(k3, (n, batch, obs_size)),
      extras={"state_extras": {"truncation": jnp.zeros((n, batch))}, "policy_extras": {}})
  tau = 0.005

  def sgd_step(carry, t):  # brax.training.agents.sac.train's sgd_step, single device
    s, k = carry
    k, ka, kc, kp = jax.random.split(k, 4)
    _, la, ao = alpha_update(s["la"], s["pp"], norm, t, ka, optimizer_state=s["ao"])
    alpha = jnp.exp(s["la"])
    _, qp, qo = critic_update(s["qp"], s["pp"], norm, s["tq"], alpha, t, kc,
                              optimizer_state=s["qo"])
    _, pp, po = actor_update(s["pp"], norm, s["qp"], alpha, t, kp, optimizer_state=s["po"])
    tq = jax.tree.map(lambda x, y: x * (1 - tau) + y * tau, s["tq"], qp)
    return (dict(pp=pp, qp=qp, tq=tq, la=la, po=po, qo=qo, ao=ao), k), None

  bx = jax.jit(lambda s, t: jax.lax.scan(sgd_step, (s, key), t)[0][0])

  mv_state = jax.block_until_ready(mv(mv_state))
  bx_state = jax.block_until_ready(bx(bx_state, trans))
  t_mv, t_bx = [], []
  for r in range(args.rounds):
    t = time.perf_counter()
    mv_state = jax.block_until_ready(mv(mv_state))
    t_mv.append((time.perf_counter() - t) / n * 1e3)
    t = time.perf_counter()
    bx_state = jax.block_until_ready(bx(bx_state, trans))
    t_bx.append((time.perf_counter() - t) / n * 1e3)
    log(f"round {r + 1}: mvelab {t_mv[-1]:.3f} ms, Brax {t_bx[-1]:.3f} ms per update")
  m_mv, m_bx = statistics.median(t_mv), statistics.median(t_bx)
  text = "\n".join([
      "# One SAC update: mvelab vs Brax sgd_step", "",
      f"jax {jax.__version__}, {os.cpu_count()} cores, (256, 256), batch {batch}, "
      f"{args.rounds} alternating rounds of {n} updates.", "",
      md_table(["", "median ms/update", "min ms/update"],
               [["mvelab update (replay sampling included)", f"{m_mv:.3f}",
                 f"{min(t_mv):.3f}"],
                ["Brax sgd_step (fixed batch)", f"{m_bx:.3f}", f"{min(t_bx):.3f}"]]),
      "", f"mvelab / Brax (median): **{m_mv / m_bx:.3f}**", ""])
  log("\n" + text)
  write_out(text, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
