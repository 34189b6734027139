"""How far a learned model's multi-step predictions drift from the truth (compounding error).

From the probes' next states ``o_1`` the oracle rolls out the policy (the rollouts of the
oracle targets). The model under test is then stepped OPEN LOOP with those same actions,
``ô_{k+1} = model(ô_k, a_k)`` with ``ô_1 = o_1``, through its own one-step transition
(``model.transition``, the one its rollouts use: a random member and a Gaussian sample per
step). The ``k``-step errors (``k = 1..K``), over probes, keys and, for observations,
dimensions, counted only while the true rollout has not terminated:

* ``obs``: RMS of ``(ô_k − o_k) / std_d``, ``std_d`` the replay's per-dimension std;
* ``reward``: RMS of ``r̂_k − r_k``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvelab.models.base import Rollout

Array = jax.Array


def open_loop(model, model_state, obs_stats, obs: Array, sim, actions: Array, key: Array
              ) -> tuple[Array, Array]:
  """Steps ``model`` with given actions; ``(obs [B, K+1, O], reward [B, K])``.

  Args:
    model: a dynamics model; ``sim`` its start states if ``model.needs_sim`` (else unused).
    obs: ``[B, O]`` start observations.
    actions: ``[B, K, act]`` actions.
    key: PRNG key of the model's own randomness.
  """
  transition = model.transition(model_state, obs_stats)
  state = sim if model.needs_sim else ()

  def body(carry, x):
    state, obs = carry
    action, step_key = x
    state, next_obs, reward, _ = transition(state, obs, action, step_key)
    return (state, next_obs), (next_obs, reward)

  xs = (jnp.swapaxes(actions, 0, 1), jax.random.split(key, actions.shape[1]))
  _, (next_obs, reward) = jax.lax.scan(body, (state, obs), xs)
  return (jnp.concatenate([obs[:, None], jnp.swapaxes(next_obs, 0, 1)], axis=1),
          jnp.swapaxes(reward, 0, 1))


def compounding_error(pred_obs: Array, pred_reward: Array, truth: Rollout,
                      obs_std: Array) -> tuple[Array, Array]:
  """``k``-step errors ``(obs [K], reward [K])`` of predictions against a true rollout.

  Args:
    pred_obs: ``[..., B, K+1, O]`` predicted observations (index 0 = start).
    pred_reward: ``[..., B, K]``.
    truth: the true rollout, ``obs [..., B, K+1, O]``, ``reward``/``terminated [..., B, K]``.
    obs_std: ``[O]`` per-dimension scale.
  """
  terminated = truth.terminated.astype(jnp.float32)
  alive = jnp.cumprod(1.0 - jnp.concatenate(
      [jnp.zeros_like(terminated[..., :1]), terminated[..., :-1]], axis=-1), axis=-1)
  axes = tuple(range(alive.ndim - 1))  # all but k
  count = jnp.maximum(jnp.sum(alive, axis=axes), 1.0)
  obs_err2 = jnp.mean(jnp.square((pred_obs[..., 1:, :] - truth.obs[..., 1:, :]) / obs_std),
                      axis=-1)
  reward_err2 = jnp.square(pred_reward - truth.reward)
  rms = lambda e2: jnp.sqrt(jnp.sum(e2 * alive, axis=axes) / count)
  return rms(obs_err2), rms(reward_err2)


def replay_obs_std(replay) -> Array:
  """``[O]`` per-dimension std of the valid ``obs_tm1`` entries of a replay buffer."""
  obs = replay.data.obs_tm1  # [E, C, O]
  cap = obs.shape[1]
  age = (jnp.arange(cap) - (replay.pos - replay.size)) % cap
  valid = (age < replay.size).astype(jnp.float32)[None, :, None]  # [1, C, 1]
  n = jnp.maximum(obs.shape[0] * jnp.sum(valid), 1.0)
  mean = jnp.sum(obs * valid, axis=(0, 1)) / n
  var = jnp.sum(jnp.square(obs - mean) * valid, axis=(0, 1)) / n
  return jnp.sqrt(jnp.maximum(var, 1e-12))
