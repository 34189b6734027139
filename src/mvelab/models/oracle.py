"""The oracle dynamics model: the true simulator, restarted from stored simulator states.

Also home of :func:`masked_rollout`, the horizon loop shared by every model: it draws
actions from the policy, advances a batched one-step ``transition`` and FREEZES rows after
their first termination.

Freezing
--------
Each row carries an ``alive [B]`` mask. Once transition ``j`` of a row terminates, that
row keeps the terminated state/observation for all later steps, its later rewards are 0
and its later ``terminated`` flags are True. The model is still evaluated on frozen rows
(the program has no data-dependent branch), but only ever ONE step past the terminal
state, and the result is thrown away by a ``where``. So the physics is never integrated
past a termination (brax blows up to NaN when it is) and everything returned is finite.

Gradients use the same rule: the throw-away step of a frozen row gets its inputs
(state, observation, action) through ``stop_gradient``, so even a non-finite Jacobian of
that step cannot leak into the gradient (the ``jnp.where`` gradient trap): its cotangent
stops at the ``stop_gradient``. Gradients w.r.t. the policy's parameters flow through
live rows' actions, transitions and rewards, and through the frozen carry.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from mvelab.envs.base import Env
from mvelab.models.base import PolicyFn, Rollout, independent_rollouts

Array = jax.Array

#: ``transition(state, obs [B, O], action [B, A], key) ->
#: (next_state, next_obs [B, O], reward [B], terminated [B] bool)``: one batched model step.
#: ``state`` is any pytree with leading axis ``B`` (the oracle's simulator states; ``()``
#: for a model that only needs the observation).
TransitionFn = Callable[[Any, Array, Array, Array], tuple[Any, Array, Array, Array]]


def batch_select(mask: Array, on_true: Any, on_false: Any) -> Any:
  """Row-wise ``jnp.where`` over matching pytrees.

  Args:
    mask: ``[B]`` bool.
    on_true: pytree whose leaves have leading axis ``B``.
    on_false: pytree of the same structure and shapes.

  Returns:
    Pytree with row ``b`` taken from ``on_true`` where ``mask[b]``, else ``on_false``.
  """

  def select(a, b):
    m = jnp.reshape(mask, mask.shape + (1,) * (jnp.ndim(a) - 1))
    return jnp.where(m, a, b)

  return jax.tree.map(select, on_true, on_false)


def masked_rollout(transition: TransitionFn, state: Any, obs: Array, policy_fn: PolicyFn,
                   key: Array, horizon: int) -> Rollout:
  """Rolls a batched one-step model ``horizon`` steps, freezing rows after termination.

  Step ``j`` splits its key into a policy key and a model key, draws
  ``a_j, log_prob_j = policy_fn(o_j, policy_key)`` and calls ``transition`` on the rows'
  current state (see the module docstring for the freezing and gradient rules).

  Args:
    transition: batched one-step model (see :data:`TransitionFn`).
    state: pytree with leading axis ``B`` carried by ``transition``.
    obs: ``[B, obs_size]`` start observations ``o_0``.
    policy_fn: ``policy_fn(obs [B, O], key) -> (action [B, A], log_prob [B])``.
    key: PRNG key.
    horizon: number of steps ``H`` (static, ``>= 1``).

  Returns:
    :class:`Rollout` with ``obs [B, H+1, O]``, ``action [B, H, A]``, ``log_prob [B, H]``,
    ``reward [B, H]`` (0 after the first termination), ``terminated [B, H]`` (True from
    the first termination on).
  """
  obs = jnp.asarray(obs, jnp.float32)
  batch = obs.shape[0]
  alive0 = jnp.ones((batch,), bool)
  sg = jax.lax.stop_gradient

  def body(carry, step_key):
    state, obs, alive = carry
    policy_key, model_key = jax.random.split(step_key)
    action, log_prob = policy_fn(obs, policy_key)
    # Frozen rows take one throw-away step whose inputs carry no gradient.
    state_in = batch_select(alive, state, sg(state))
    obs_in = batch_select(alive, obs, sg(obs))
    action_in = batch_select(alive, action, sg(action))
    next_state, next_obs, reward, terminated = transition(state_in, obs_in, action_in,
                                                          model_key)
    next_state = batch_select(alive, next_state, state)
    next_obs = jnp.where(alive[:, None], next_obs, obs)
    reward = jnp.where(alive, jnp.asarray(reward, jnp.float32), 0.0)
    terminated = jnp.where(alive, jnp.asarray(terminated, bool), True)
    alive = jnp.logical_and(alive, jnp.logical_not(terminated))
    out = (next_obs, action, jnp.asarray(log_prob, jnp.float32), reward, terminated)
    return (next_state, next_obs, alive), out

  keys = jax.random.split(key, horizon)
  _, (next_obs, action, log_prob, reward, terminated) = jax.lax.scan(
      body, (state, obs, alive0), keys)
  # Time-major [H, B, ...] -> batch-major [B, H, ...].
  swap = lambda x: jnp.swapaxes(x, 0, 1)
  return Rollout(
      obs=jnp.concatenate([obs[:, None], swap(next_obs)], axis=1),
      action=swap(action),
      log_prob=swap(log_prob),
      reward=swap(reward),
      terminated=swap(terminated))


@dataclasses.dataclass(frozen=True)
class OracleModel:
  """The true simulator as a dynamics model (paper §8).

  Rollouts restart ``env.simulate`` (vmapped over the batch) from stored simulator
  states: zero model error, the true reward and the simulator's own termination. No
  parameters, nothing to train.

  Attributes:
    env: the environment whose physics is used (same action repeat as the agent's).
  """

  env: Env
  name: ClassVar[str] = "oracle"
  needs_sim: ClassVar[bool] = True

  def init(self, key: Array) -> tuple:
    """Empty model state ``()``."""
    del key
    return ()

  def update(self, model_state: Any, obs_stats: Any, batch: Any, key: Array
             ) -> tuple[Any, dict]:
    """No-op: returns ``(model_state, {})``."""
    del obs_stats, batch, key
    return model_state, {}

  def sample_rollouts(self, model_state, obs_stats, obs, sim, policy_fn, key, horizon, num):
    """``num`` independent rollouts ``[num, B, ...]`` (see ``DynamicsModel``)."""
    return independent_rollouts(self, model_state, obs_stats, obs, sim, policy_fn, key,
                                horizon, num)

  def rollout(self, model_state: Any, obs_stats: Any, obs: Array, sim: Any,
              policy_fn: PolicyFn, key: Array, horizon: int) -> Rollout:
    """Simulates ``horizon`` true steps from the simulator states ``sim``.

    Args:
      model_state: unused (``()``).
      obs_stats: unused.
      obs: ``[B, obs_size]`` observations of ``sim`` (returned as ``o_0``).
      sim: simulator states, a pytree with leading axis ``B``.
      policy_fn: ``policy_fn(obs [B, O], key) -> (action [B, A], log_prob [B])``.
      key: PRNG key (only the policy uses randomness).
      horizon: ``H``, static.

    Returns:
      :class:`Rollout` (see :func:`masked_rollout` for the freezing semantics).
    """
    return masked_rollout(self.transition(model_state, obs_stats), sim, obs, policy_fn,
                          key, horizon)

  def transition(self, model_state: Any, obs_stats: Any) -> TransitionFn:
    """The batched one-step :data:`TransitionFn` of :meth:`rollout` (state: ``sim``)."""
    del model_state, obs_stats
    simulate = jax.vmap(self.env.simulate)

    def transition(sim, obs, action, key):
      del obs, key
      return simulate(sim, action)

    return transition
