"""The one dynamics-model protocol: the oracle (true simulator) is a model like any other.

A model produces imagined trajectories for value expansion. Shapes use ``B`` start states
and horizon ``H`` (a Python int: it fixes shapes, so it is compile-time static).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
from flax import struct

Array = jax.Array

#: ``policy_fn(obs [B, obs_size], key) -> (action [B, action_size], log_prob [B])``.
#: Takes RAW observations (it normalises internally if the agent does). For actor
#: expansion the caller closes over the actor parameters being differentiated.
PolicyFn = Callable[[Array, Array], tuple[Array, Array]]


@struct.dataclass
class Rollout:
  """An imagined trajectory of ``H`` steps from ``B`` start states.

  Transition ``j`` (``j = 0..H-1``) goes ``obs[:, j] --action[:, j]--> obs[:, j+1]``.

  Attributes:
    obs: ``[B, H+1, obs_size]`` raw observations ``o_0 .. o_H`` (``o_0`` = start).
    action: ``[B, H, action_size]`` actions ``a_j ~ pi(.|o_j)``.
    log_prob: ``[B, H]`` ``log pi(a_j|o_j)`` as returned by ``policy_fn``.
    reward: ``[B, H]`` reward of transition ``j``; 0 after the first termination.
    terminated: ``[B, H]`` bool, transition ``j`` ends the task (true termination). Steps
      after the first termination are meaningless and are masked by the caller's
      cumulative discount; they are always finite.
  """

  obs: Array
  action: Array
  log_prob: Array
  reward: Array
  terminated: Array


class DynamicsModel(Protocol):
  """What every dynamics model provides (oracle and learned ensemble alike)."""

  name: str
  needs_sim: bool  # True: rollouts start from stored simulator states (the oracle)

  def init(self, key: Array) -> Any:
    """Model parameters and optimiser state (the oracle returns an empty pytree)."""

  def rollout(self, model_state: Any, obs_stats: Any, obs: Array, sim: Any,
              policy_fn: PolicyFn, key: Array, horizon: int) -> Rollout:
    """Rolls ``horizon`` steps from ``obs [B, obs_size]`` (and ``sim``, ``[B, ...]``)."""

  def transition(self, model_state: Any, obs_stats: Any) -> Callable:
    """The batched one-step model ``(state, obs, action, key) -> (state', obs', reward,
    terminated)`` that :meth:`rollout` iterates (``state``: ``sim`` if ``needs_sim``,
    else ``()``); see :data:`mvelab.models.oracle.TransitionFn`."""

  def update(self, model_state: Any, obs_stats: Any, batch: Any, key: Array
             ) -> tuple[Any, dict]:
    """One training step on a replay batch (a no-op for the oracle)."""

  def sample_rollouts(self, model_state: Any, obs_stats: Any, obs: Array, sim: Any,
                      policy_fn: PolicyFn, key: Array, horizon: int, num: int) -> Rollout:
    """``R`` rollouts from the same start states, stacked ``[R, B, ...]`` (STEVE).

    The learned ensemble returns its ``R = E`` member-consistent rollouts (member ``e``
    for every step of rollout ``e``; ``num`` is ignored); the oracles ``R = num``
    independent rollouts (only the policy's sampling differs).
    """


def independent_rollouts(model, model_state: Any, obs_stats: Any, obs: Array, sim: Any,
                         policy_fn: PolicyFn, key: Array, horizon: int, num: int
                         ) -> Rollout:
  """``num`` independent ``model.rollout`` calls, stacked ``[num, B, ...]``."""
  return jax.vmap(lambda k: model.rollout(model_state, obs_stats, obs, sim, policy_fn, k,
                                          horizon))(jax.random.split(key, num))
