"""What the diagnostics read from one seed's training state: the agent as the targets see it.

The training program builds its targets from the (target) policy, the target critic, the
temperature and the observation statistics of a :class:`mvelab.program.TrainState`; these
helpers pick exactly those pieces, so that the diagnostics evaluate the same quantities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvelab.agents import expansion as xp
from mvelab.agents import sac
from mvelab.core import normalization

Array = jax.Array


def alpha(p, state) -> Array:
  """Temperature ``α`` of the state (0 for DDPG), as in ``program.update``."""
  if p.deterministic:
    return jnp.float32(0.0)
  return sac.alpha_value(state.alpha_param, p.cfg.alpha_param)


def target_actor(p, state):
  """The policy the targets use: SAC's current actor, DDPG's target actor."""
  return state.target_actor_params if p.deterministic else state.actor_params


def policy_fn(p, state):
  """The evaluated policy π over RAW observations (:func:`xp.make_policy_fn`)."""
  return xp.make_policy_fn(p.nets, target_actor(p, state), state.obs_stats, p.deterministic)


def critic_value(p, state, obs: Array, action: Array) -> Array:
  """Online critic ``min_i Q_i(o, a)`` (what the actor maximises) for RAW ``obs [B, O]``."""
  norm_obs = normalization.normalize(state.obs_stats, obs)
  return jnp.min(p.nets.q(state.critic_params, norm_obs, action), axis=-1)
