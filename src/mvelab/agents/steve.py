"""STEVE: stochastic ensemble value expansion (Buckman et al. 2018), soft-value version.

STEVE builds a candidate target for every horizon ``i = 0..H`` and every combination of a
model sample (rollout ``r``) and a critic ``c``, and weights the horizons by the inverse
variance of their candidates, so that the target leans on the model only where the
model and the critics agree.

Candidates. With ``R`` rollouts that start at the real next observation
(``rollouts.obs[:, :, 0] == batch.obs_t``; the learned ensemble gives its ``E``
member-consistent rollouts, the oracles ``R`` independent ones, see
``DynamicsModel.sample_rollouts``) and the twin target critics ``c ∈ {1, 2}``::

  D_0 = 1,   D_{j+1} = D_j · γ · (1 − terminated_j)        j = 0 the real transition
  T_i^{r,c} = Σ_{j=0}^{i} D_j (r_j − α log π(a_j | o'_{j−1}))  +  D_{i+1} V_c(o'_i)
  V_c(o)    = Q̄_c(o, ã) − α log π(ã | o),  ã ~ π(·|o) fresh

with no entropy term for the real reward (``j = 0``), exactly the soft H-step expansion
of critic expansion's ``direct`` values, cut at horizon ``i``.

Weights. ``μ_i = mean_r min_c T_i^{r,c}`` (clipped double-Q, as every other mvelab
target), ``σ²_i = var_{r,c} T_i^{r,c}`` (the spread over models *and* critics),
``w_i ∝ 1 / (σ²_i + 1e-8)`` normalised over ``i``; target ``Σ_i w_i μ_i``. A real
transition that hit the time limit keeps only ``i = 0`` (as ``c_0 = 0`` does for critic
expansion). With one horizon (``H = 0``) this is the SAC target; with a deterministic
model and identical critics every ``σ²_i`` is 0 and the weights are uniform (finite).

Critic ensemble: the twin critics (2), so ``R · 2`` candidates per horizon (Buckman
et al. use 4 x 4 x 4 = 64). Cost per update: the ``R`` rollouts plus one fresh action and
one twin-critic evaluation at each of the ``R·(H+1)`` successor states.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from mvelab.agents import sac
from mvelab.core import normalization
from mvelab.models.base import Rollout

Array = jax.Array
VARIANCE_FLOOR = 1e-8


class SteveTarget(NamedTuple):
  """STEVE's target and what it was made of.

  Attributes:
    target: ``[B]`` stop-gradient target of ``Q(o_0, a_0)``.
    weights: ``[B, H+1]`` horizon weights (sum 1 over the last axis).
    means: ``[B, H+1]`` ``μ_i``.
    variances: ``[B, H+1]`` ``σ²_i``.
  """

  target: Array
  weights: Array
  means: Array
  variances: Array


def candidate_targets(nets: sac.SACNets, actor_params, target_critic_params, alpha,
                      obs_stats, batch, rollouts: Rollout, key: Array, gamma,
                      deterministic: bool = False) -> Array:
  """``T_i^{r,c}`` of the module docstring: ``[R, B, H+1, C]`` (C = 2 critics).

  ``rollouts`` are stacked ``[R, B, ...]`` (obs ``[R, B, H+1, O]``). Fresh actions: at
  ``o'_0 = batch.obs_t`` (shared by every rollout) drawn with ``key`` exactly as
  ``sac.soft_value``; at ``o'_1..o'_H`` one flattened draw with ``fold_in(key, 1)``.
  Deterministic (DDPG): ``ã = tanh(loc)``, no entropy terms.
  """
  num, b, horizon = rollouts.reward.shape
  chex.assert_shape(rollouts.obs, (num, b, horizon + 1, None))
  r = jnp.concatenate([jnp.broadcast_to(batch.reward_t, (num, b))[..., None],
                       rollouts.reward], axis=-1)                      # [R, B, H+1]
  entropy = jnp.zeros_like(r) if deterministic else jnp.concatenate(
      [jnp.zeros((num, b, 1)), -alpha * rollouts.log_prob], axis=-1)
  term = jnp.concatenate([jnp.broadcast_to(batch.terminated_t, (num, b))[..., None],
                          rollouts.terminated], axis=-1).astype(jnp.float32)
  step = jnp.concatenate([jnp.ones((num, b, 1)), gamma * (1.0 - term)], axis=-1)
  d = jnp.cumprod(step, axis=-1)                                       # [R, B, H+2]
  partial = jnp.cumsum(d[..., :-1] * (r + entropy), axis=-1)          # [R, B, H+1]
  v = _critic_values(nets, actor_params, target_critic_params, alpha, obs_stats, batch,
                     rollouts, key, deterministic)                    # [R, B, H+1, C]
  return partial[..., None] + d[..., 1:, None] * v


def _critic_values(nets, actor_params, critic_params, alpha, obs_stats, batch, rollouts,
                   key, deterministic) -> Array:
  """``V_c`` at every successor ``o'_i`` of every rollout: ``[R, B, H+1, C]``."""
  num, b, h1 = rollouts.obs.shape[:3]

  def per_critic(obs, k):
    if deterministic:
      action, log_prob = nets.mode(actor_params, obs), 0.0
    else:
      action, log_prob = nets.sample(actor_params, obs, k)
      log_prob = alpha * log_prob[:, None]
    return nets.q(critic_params, obs, action) - log_prob            # [N, C]

  v0 = per_critic(normalization.normalize(obs_stats, batch.obs_t), key)  # [B, C]
  v0 = jnp.broadcast_to(v0, (num,) + v0.shape)[:, :, None]
  if h1 == 1:
    return v0
  rest = normalization.normalize(obs_stats, rollouts.obs[:, :, 1:]).reshape(
      (num * b * (h1 - 1), -1))
  v_rest = per_critic(rest, jax.random.fold_in(key, 1))
  return jnp.concatenate([v0, v_rest.reshape((num, b, h1 - 1, -1))], axis=2)


def inverse_variance_weights(variances: Array, valid: Array) -> Array:
  """``w_i ∝ valid_i / (σ²_i + 1e-8)``, normalised over the last axis."""
  raw = valid.astype(jnp.float32) / (variances + VARIANCE_FLOOR)
  return raw / jnp.sum(raw, axis=-1, keepdims=True)


def steve_target(nets: sac.SACNets, actor_params, target_critic_params, alpha, obs_stats,
                 batch, rollouts: Rollout, key: Array, gamma,
                 deterministic: bool = False) -> SteveTarget:
  """STEVE's target of ``Q(o_0, a_0)`` (module docstring); ``target [B]``.

  Args:
    nets, actor_params, target_critic_params, alpha, obs_stats: as critic expansion.
    batch: real transitions, leaves ``[B, ...]``.
    rollouts: ``R`` rollouts from ``batch.obs_t``, stacked ``[R, B, ...]``.
    key: key of the fresh actions (independent of the rollouts').
    gamma: discount.
    deterministic: DDPG.
  """
  t = candidate_targets(nets, actor_params, target_critic_params, alpha, obs_stats, batch,
                        rollouts, key, gamma, deterministic)          # [R, B, H+1, C]
  means = jnp.mean(jnp.min(t, axis=-1), axis=0)                       # [B, H+1]
  candidates = jnp.moveaxis(t, 0, -2).reshape(t.shape[1:3] + (-1,))  # [B, H+1, R·C]
  variances = jnp.var(candidates, axis=-1)
  horizons = jnp.arange(t.shape[2])
  valid = (horizons[None, :] == 0) | ~jnp.asarray(batch.truncated_t, bool)[:, None]
  weights = inverse_variance_weights(variances, valid)
  target = jnp.sum(weights * means, axis=-1)
  return SteveTarget(*jax.lax.stop_gradient((target, weights, means, variances)))
