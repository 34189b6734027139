"""How far a model's multi-step predictions drift from the truth (compounding error).

The models under test are the run's learned ensemble, the run's own perturbed oracle (a
run with ``--model_error``), and any *reference* perturbed oracles named in
``Settings.error_models`` (``physics:0.1``, ``noise:0.03``): all on one scale, so that a
learned ensemble can be placed on the ε axis of the perturbed oracles.

From the probes' next states ``o_1`` the oracle rolls out the policy (the rollouts of the
oracle targets). The model under test is then stepped OPEN LOOP with those same actions,
``ô_{k+1} = model(ô_k, a_k)`` with ``ô_1 = o_1``, through its own one-step transition
(``model.transition``, the one its rollouts use: for the ensemble a random member and a
Gaussian sample per step; a perturbed oracle restarts from the true ``sim_1``). The ``k``-step errors (``k = 1..K``), over probes, keys and, for observations,
dimensions, counted only while the true rollout has not terminated, and only from start states that
did not end the task (a probe whose own transition terminated is skipped):

* ``obs``: RMS of ``(ô_k − o_k) / std_d``, ``std_d`` the replay's per-dimension std;
* ``reward``: RMS of ``r̂_k − r_k``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mvelab.errors import ConfigError
from mvelab.models.base import Rollout

Array = jax.Array


def parse_error_model(text: str) -> tuple[str, float]:
  """``"KIND:SCALE"`` (e.g. ``physics:0.1``) -> ``(kind, scale)``; ConfigError otherwise."""
  from mvelab.models.perturbed import KINDS
  kind, sep, scale = str(text).partition(":")
  try:
    value = float(scale)
  except ValueError:
    value = float("nan")
  if not sep or kind not in KINDS or not (math.isfinite(value) and value >= 0):
    raise ConfigError(f"error_models: each must be KIND:SCALE with KIND one of "
                      f"{', '.join(KINDS)} and SCALE a finite number >= 0, got {text!r}")
  return kind, value


def error_model_name(kind: str, scale: float) -> str:
  """The ``model`` column of a perturbed oracle: ``physics:0.1``."""
  return f"{kind}:{scale:g}"


def model_order(model: str) -> tuple:
  """Sort key of model names: oracle, learned, then ``kind:scale`` by kind and scale."""
  if model in ("oracle", "learned") or ":" not in model:
    return (0 if model == "oracle" else 1, model, 0.0)
  kind, scale = model.split(":", 1)
  return (2, kind, float(scale))


def reference_models(env, names) -> dict:
  """``{name: (PerturbedOracle, ())}`` for ``names`` like ``physics:0.1``.

  Raises:
    ConfigError: (``error_models: ...``) a malformed name or a kind ``env`` lacks.
  """
  from mvelab.models.perturbed import PerturbedOracle, check
  out = {}
  for text in names:
    kind, scale = parse_error_model(text)
    try:
      check(env, kind, scale)
    except ConfigError as e:
      raise ConfigError(f"error_models: {text}: {e}") from None
    out[error_model_name(kind, scale)] = (PerturbedOracle(env, kind, scale), ())
  return out


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
                      obs_std: Array, start_valid=None) -> tuple[Array, Array]:
  """``k``-step errors ``(obs [K], reward [K])`` of predictions against a true rollout.

  Args:
    pred_obs: ``[..., B, K+1, O]`` predicted observations (index 0 = start).
    pred_reward: ``[..., B, K]``.
    truth: the true rollout, ``obs [..., B, K+1, O]``, ``reward``/``terminated [..., B, K]``.
    obs_std: ``[O]`` per-dimension scale.
    start_valid: ``[..., B]`` bool, the start state is one the task continues from; a
      start reached by a terminating transition is excluded (no model was trained on
      steps from terminal states, and the task has ended there). None: all valid.
  """
  terminated = truth.terminated.astype(jnp.float32)
  alive = jnp.cumprod(1.0 - jnp.concatenate(
      [jnp.zeros_like(terminated[..., :1]), terminated[..., :-1]], axis=-1), axis=-1)
  if start_valid is not None:
    alive = alive * jnp.broadcast_to(start_valid, alive.shape[:-1])[..., None]
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
