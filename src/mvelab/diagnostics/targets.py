"""The value targets the training program would build at the probes, per horizon and model.

Nothing here computes a target itself: critic expansion is
:func:`mvelab.agents.expansion.critic_expansion_target` (both ``ce_values`` variants) on
rollouts of the run's own dynamics models, and Retrace is
:func:`mvelab.agents.expansion.retrace_target` on the probes' stored windows, with the
state's target critic, (target) policy, temperature and observation statistics, exactly
as ``program.update`` calls them.

Each target is evaluated with ``K`` keys. Key ``k`` is split into a rollout key and a
fresh-action key (as in ``program.update``); every model and every horizon uses the SAME
keys, so the learned-minus-oracle gap compares targets that differ only in the model.
One rollout of ``max(horizons)`` steps per key and model is cut to every shorter horizon
(a model rollout's first ``H`` steps are an ``H``-step rollout).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvelab.agents import expansion as xp
from mvelab.config import CE_VALUES
from mvelab.diagnostics import view
from mvelab.models.base import Rollout

Array = jax.Array


def prefix(rollout: Rollout, horizon: int) -> Rollout:
  """The first ``horizon`` steps of ``rollout`` (``obs [B, H+1]``, others ``[B, H]``)."""
  return Rollout(obs=rollout.obs[:, :horizon + 1], action=rollout.action[:, :horizon],
                 log_prob=rollout.log_prob[:, :horizon], reward=rollout.reward[:, :horizon],
                 terminated=rollout.terminated[:, :horizon])


def expansion_targets(p, state, model, model_state, first, horizons: tuple, keys: Array
                      ) -> tuple[dict, Rollout]:
  """Critic-expansion targets of the transitions ``first`` with ``model``.

  Args:
    p: the run's ``Programs``.
    state: one seed's ``TrainState``.
    model: a dynamics model (oracle or learned) and ``model_state`` its state.
    first: transitions, leaves ``[B, ...]`` (``obs_t``/``sim_t`` start the rollouts).
    horizons: static horizons.
    keys: ``[K]`` keys.

  Returns:
    ``({(ce_values, H): targets [K, B]}, rollouts)`` with the ``max(horizons)``-step
    rollouts, leaves ``[K, B, ...]`` (at least one step, for the model-error diagnostics).
  """
  longest = max(max(horizons), 1)
  policy_fn = view.policy_fn(p, state)
  args = (p.nets, view.target_actor(p, state), state.target_critic_params,
          view.alpha(p, state), state.obs_stats, first)

  def one(key):
    k_roll, k_target = jax.random.split(key)
    rollout = model.rollout(model_state, state.obs_stats, first.obs_t, first.sim_t,
                            policy_fn, k_roll, longest)
    out = {(values, h): xp.critic_expansion_target(
        *args, prefix(rollout, h), k_target, state.hyper.gamma, p.cfg.lam, p.deterministic,
        values) for h in horizons for values in CE_VALUES}
    return out, rollout

  return jax.vmap(one)(keys)


def retrace_targets(p, state, window, horizons: tuple, keys: Array) -> dict:
  """Retrace targets ``{H: [K, N]}`` over the first ``H + 1`` transitions of ``window``.

  ``window`` leaves ``[N, W, ...]`` with ``W ≥ max(horizons) + 1``; the keys only draw
  the fresh actions (the window is fixed data).
  """
  args = (p.nets, view.target_actor(p, state), state.target_critic_params,
          view.alpha(p, state), state.obs_stats)

  def one(key):
    return {h: xp.retrace_target(*args, jax.tree.map(lambda x: x[:, :h + 1], window), key,
                                 state.hyper.gamma, p.cfg.lam, p.deterministic)
            for h in horizons}

  return jax.vmap(one)(keys)


def mean_and_noise(samples: Array) -> tuple[Array, Array]:
  """``[K, B]`` target samples -> (mean over keys ``[B]``, sd over keys ``[B]``)."""
  return jnp.mean(samples, axis=0), jnp.std(samples, axis=0, ddof=1)
