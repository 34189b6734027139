"""Which state-action pairs are diagnosed: probe transitions from the replay and the actions
tried at their states.

A probe is a stored window of ``W`` consecutive real transitions (``replay.sample_windows``,
fixed key): its first transition ``(o_0, a_0, r_0, o_1)`` with its simulator states is the
probe of the critic and critic-expansion diagnostics, the whole window feeds Retrace.

At each of the first ``Ns = settings.num_signal`` probe states the action signal compares
``A = len(QUANTILES) + 1`` policy actions: the policy's quantiles
``tanh(loc + scale·Φ⁻¹(q))`` (per action dimension, the same ``q`` in every dimension) and
the policy mean ``E[tanh(u)]`` (estimated from ``mean_samples`` draws). DDPG's policy is
deterministic; its quantiles use the exploration noise as the scale.
"""

from __future__ import annotations

import statistics
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mvelab import replay as replay_lib
from mvelab.core import distributions, normalization
from mvelab.diagnostics import view
from mvelab.diagnostics.settings import QUANTILES, Settings

Array = jax.Array

#: Standard-normal quantiles ``Φ⁻¹(q)`` of :data:`QUANTILES`.
Z = tuple(statistics.NormalDist().inv_cdf(q) for q in QUANTILES)
#: Names of the signal actions: the quantiles, the policy mean.
ACTION_NAMES = tuple(f"q{q:g}" for q in QUANTILES) + ("mean",)


class Probes(NamedTuple):
  """The probes of one checkpoint of one seed.

  Attributes:
    window: stored transitions, leaves ``[N, W, ...]``; ``window[:, 0]`` is the probe.
    actions: ``[Ns, A, act]`` policy actions at the first ``Ns`` probe states (module
      docstring).
    first: first transitions, leaves ``[N + Ns·A, ...]``: rows ``0..N−1`` are the stored
      probe transitions; row ``N + n·A + i`` is one true simulator step from probe
      ``n``'s ``sim_tm1`` with ``actions[n, i]`` (never truncated).
  """

  window: replay_lib.Transition
  actions: Array
  first: replay_lib.Transition


def draw(p, state, settings: Settings, key: Array) -> Probes:
  """Draws the probes of ``state`` (one seed) with ``key``.

  Requires the replay to hold at least ``max_horizon + 1`` transitions per environment
  (checked by the caller, :func:`mvelab.diagnostics.compute.check_state`).
  """
  window = replay_lib.sample_windows(state.replay, key, settings.probes,
                                     settings.max_horizon + 1)
  probe = jax.tree.map(lambda x: x[:, 0], window)
  signal = jax.tree.map(lambda x: x[:settings.num_signal], probe)
  actions = policy_actions(p, state, signal.obs_tm1, jax.random.fold_in(key, 1),
                           settings.mean_samples)
  return Probes(window=window, actions=actions,
                first=first_transitions(p.env, probe, signal, actions))


def policy_actions(p, state, obs: Array, key: Array, mean_samples: int) -> Array:
  """``[Ns, A, act]`` quantile actions and the policy mean at RAW ``obs [Ns, O]``."""
  norm_obs = normalization.normalize(state.obs_stats, obs)
  loc, scale = p.nets.dist(view.target_actor(p, state), norm_obs)
  if p.deterministic:
    scale = jnp.full_like(loc, p.cfg.exploration_noise or 0.1)
  quantiles = [distributions.squash(loc, scale, jnp.full_like(loc, z))[0] for z in Z]
  eps = jax.random.normal(key, (mean_samples,) + loc.shape, jnp.float32)
  mean = jnp.mean(distributions.squash(loc, scale, eps)[0], axis=0)
  if p.deterministic:
    mean = distributions.mode(loc)
  return jnp.stack(quantiles + [mean], axis=1)


def first_transitions(env, probe: replay_lib.Transition, signal: replay_lib.Transition,
                      actions: Array) -> replay_lib.Transition:
  """Rows ``[N + Ns·A]``: the stored probes, then one true step per signal action."""
  ns, width = actions.shape[:2]
  rep = lambda x: jnp.repeat(x, width, axis=0)  # row n·A + i
  sim_tm1 = jax.tree.map(rep, signal.sim_tm1)
  flat_actions = actions.reshape((ns * width,) + actions.shape[2:])
  sim_t, obs_t, reward, terminated = jax.vmap(env.simulate)(sim_tm1, flat_actions)
  simulated = replay_lib.Transition(
      obs_tm1=rep(signal.obs_tm1), action_tm1=flat_actions,
      logprob_tm1=rep(signal.logprob_tm1), reward_t=reward,
      terminated_t=terminated, truncated_t=jnp.zeros_like(terminated),
      obs_t=obs_t, sim_tm1=sim_tm1, sim_t=sim_t)
  return jax.tree.map(lambda a, b: jnp.concatenate([a, b.astype(a.dtype)]), probe,
                      simulated)
