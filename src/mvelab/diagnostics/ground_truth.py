"""The true soft action value Q^π(s, a) of a policy, by Monte-Carlo rollouts of the simulator.

For a state-action pair ``(s_0, a_0)`` (a restorable simulator state and an action), each
of ``M`` rollouts steps the true dynamics (``Env.simulate``: no time limit) with ``a_0``,
then with actions ``a_t ~ π(·|s_t)``, for ``L`` steps, and returns

  G = r_0 + Σ_{t=1}^{L−1} γ^t (r_t − α log π(a_t|s_t)),

stopping at the first true termination (no reward or entropy term after it). This is the
soft Q that SAC's critic estimates (the entropy bonus enters from the second step on, as
in ``sac.sac_target``); time limits are ignored, as the bootstrapped critic ignores them.
``L`` is chosen so that ``γ^L ≤ 1%`` (:func:`mvelab.diagnostics.settings.ground_truth_length`),
so the neglected tail is below 1% of the value scale ``max|r| / (1 − γ)``.

The estimate is the mean over the ``M`` rollouts and its standard error
``sd / √M`` (per pair). :func:`soft_q_actions` evaluates several actions at each state
with common random numbers, for the action dependence of ``Q^π``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvelab.models.base import PolicyFn
from mvelab.models.oracle import batch_select

Array = jax.Array


def soft_q(env, policy_fn: PolicyFn, sim, action: Array, key: Array, num_rollouts: int,
           length: int, gamma, alpha) -> tuple[Array, Array]:
  """Monte-Carlo soft ``Q^π(s, a)`` and its standard error for ``B`` pairs.

  Args:
    env: the environment (its ``simulate``).
    policy_fn: π over RAW observations, ``(obs [R, O], key) -> (action, log_prob [R])``.
    sim: simulator states of ``s``, leaves ``[B, ...]``.
    action: ``[B, act]`` first actions ``a``.
    key: PRNG key of the policy's draws.
    num_rollouts: ``M ≥ 2`` (static).
    length: ``L ≥ 1`` steps per rollout, the first with ``a`` (static).
    gamma: discount ``γ``.
    alpha: temperature ``α`` of the entropy bonus (0 for a deterministic policy).

  Returns:
    ``(mean [B], standard_error [B])``, float32.
  """
  ret = soft_returns(env, policy_fn, sim, action, key, num_rollouts, length, gamma, alpha)
  return jnp.mean(ret, axis=1), _standard_error(ret)


def soft_q_actions(env, policy_fn: PolicyFn, sim, actions: Array, key: Array,
                   num_rollouts: int, length: int, gamma, alpha) -> tuple[Array, Array]:
  """Soft ``Q^π(s, a_i)`` of ``A`` actions per state with common random numbers.

  Every action's rollouts use the SAME key (rollout ``m`` of every action draws the same
  policy noise), so the noise shared by the actions cancels in their differences: the
  action dependence ``Q^π(s, a_i) − mean_i Q^π(s, a_i)`` is estimated far more precisely
  than each value.

  Args:
    sim: simulator states, leaves ``[B, ...]``; ``actions [B, A, act]``; others as
      :func:`soft_q`.

  Returns:
    ``(mean [B, A], centred_standard_error [B, A])``: the standard error of the CENTRED
    estimate ``Q(s, a_i) − mean_i Q(s, a_i)`` (the quantity the action signal uses).
  """
  ret = jax.lax.map(lambda a: soft_returns(env, policy_fn, sim, a, key, num_rollouts,
                                           length, gamma, alpha),
                    jnp.swapaxes(actions, 0, 1))  # [A, B, M]
  ret = jnp.swapaxes(ret, 0, 1)  # [B, A, M]
  centred = ret - jnp.mean(ret, axis=1, keepdims=True)
  return jnp.mean(ret, axis=2), _standard_error(centred)


def _standard_error(ret: Array) -> Array:
  """``[..., M] -> [...]`` ``sd / √M`` over the last axis."""
  return jnp.std(ret, axis=-1, ddof=1) / jnp.sqrt(ret.shape[-1])


def soft_returns(env, policy_fn: PolicyFn, sim, action: Array, key: Array,
                 num_rollouts: int, length: int, gamma, alpha) -> Array:
  """``[B, M]`` returns ``G`` (module docstring) of ``M`` rollouts per pair (see :func:`soft_q`)."""
  b = action.shape[0]
  rep = lambda x: jnp.repeat(x, num_rollouts, axis=0)  # row b·M + m
  simulate = jax.vmap(env.simulate)
  sim, obs, ret, terminated = simulate(jax.tree.map(rep, sim), rep(action))
  alive = jnp.logical_not(terminated)

  def body(carry, step_key):
    sim, obs, ret, discount, alive = carry
    a, log_prob = policy_fn(obs, step_key)
    next_sim, next_obs, reward, terminated = simulate(sim, a)
    ret = ret + jnp.where(alive, discount * (reward - alpha * log_prob), 0.0)
    # A terminated row keeps its state: the physics is never integrated past the end.
    sim = batch_select(alive, next_sim, sim)
    obs = jnp.where(alive[:, None], next_obs, obs)
    alive = jnp.logical_and(alive, jnp.logical_not(terminated))
    return (sim, obs, ret, discount * gamma, alive), None

  init = (sim, obs, jnp.asarray(ret, jnp.float32), jnp.float32(gamma), alive)
  (_, _, ret, _, _), _ = jax.lax.scan(body, init, jax.random.split(key, length - 1))
  return ret.reshape((b, num_rollouts))
