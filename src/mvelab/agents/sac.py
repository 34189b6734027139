"""Soft Actor-Critic: networks bundle and pure loss functions.

Every loss takes the parameters it differentiates first, then data and keys, so that
``jax.value_and_grad`` differentiates argument 0. Batched inputs have a leading ``[B]``.

Seams for value expansion: the critic loss regresses onto a *given* target ``y [B]``;
``sac_target`` builds the plain 1-step soft target. Expansion variants build ``y``
elsewhere with the same ``soft_value`` and the one target operator of ``mvelab.core``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mvelab.agents import networks
from mvelab.core import distributions


@dataclasses.dataclass(frozen=True)
class SACNets:
  """The static parts of an agent: modules and parametrisation choices."""

  actor: networks.Actor
  critic: networks.Critic
  std_param: str = "log_std"  # "log_std" | "softplus"
  stable_logdet: bool = True

  @classmethod
  def make(cls, obs_size, action_size, hidden_sizes, bias_init=0.0, std_param="log_std"):
    return cls(
        actor=networks.Actor(tuple(hidden_sizes), action_size, bias_init),
        critic=networks.Critic(tuple(hidden_sizes), bias_init),
        std_param=std_param,
        # The paper's code uses log(1 - tanh(u)^2 + 1e-6); keep it for the paper preset.
        stable_logdet=(std_param != "softplus"))

  def init(self, key, obs_size, action_size):
    k1, k2 = jax.random.split(key)
    obs = jnp.zeros((1, obs_size), jnp.float32)
    act = jnp.zeros((1, action_size), jnp.float32)
    return (networks.init_params(self.actor, k1, obs),
            networks.init_params(self.critic, k2, obs, act))

  def dist(self, actor_params, obs):
    """``obs [B, obs] -> (loc [B, act], scale [B, act])`` of the pre-tanh Gaussian."""
    loc, raw = self.actor.apply({"params": actor_params}, obs)
    return loc, distributions.scale_from_raw(raw, self.std_param)

  def sample(self, actor_params, obs, key):
    """Reparameterised action in (-1, 1) and its log-probability ``[B]``.

    The noise of the whole batch is one ``normal(key, [B, act])`` draw: one PRNG call per
    batch (per-row keys cost two threefry loops per call, ~3% of a SAC update on CPU).
    """
    loc, scale = self.dist(actor_params, obs)
    eps = jax.random.normal(key, loc.shape, jnp.float32)
    return distributions.squash(loc, scale, eps, self.stable_logdet)

  def mode(self, actor_params, obs):
    loc, _ = self.dist(actor_params, obs)
    return distributions.mode(loc)

  def q(self, critic_params, obs, action):
    """``[B, num_critics]`` Q-values."""
    return self.critic.apply({"params": critic_params}, obs, action)


def alpha_value(alpha_param, kind: str):
  """Temperature from its parameter: ``exp(p)`` for both 'log_alpha' and 'alpha'."""
  del kind  # both parametrisations use alpha = exp(p); they differ in the loss only.
  return jnp.exp(alpha_param)


def soft_value(nets: SACNets, actor_params, critic_params, alpha, obs, key):
  """``v(s) = min_i Q_i(s, a) - alpha * log pi(a|s)``, ``a ~ pi(.|s)``; ``[B]``."""
  action, log_prob = nets.sample(actor_params, obs, key)
  return jnp.min(nets.q(critic_params, obs, action), axis=-1) - alpha * log_prob


def sac_target(reward_t, terminated_t, v_t, gamma):
  """1-step soft target ``y = r_t + gamma * (1 - terminated_t) * v(s_t)``; ``[B]``.

  Truncated transitions bootstrap (only ``terminated_t`` stops the bootstrap).
  """
  return reward_t + gamma * (1.0 - terminated_t.astype(jnp.float32)) * v_t


def critic_loss(critic_params, nets: SACNets, obs_tm1, action_tm1, target, weights=None):
  """``0.5 * mean_{b,i} (Q_i(s, a) - y)^2`` over batch and both critics.

  Args:
    obs_tm1: ``[B, obs]`` normalised observations.
    action_tm1: ``[B, act]``.
    target: ``[B]``, treated as a constant.
    weights: optional ``[B]`` non-negative weights (TD-k masks out pairs after a
      termination); the loss is then the weighted mean over the batch.

  Returns:
    ``(loss, q_mean)``.
  """
  q = nets.q(critic_params, obs_tm1, action_tm1)
  err = jnp.mean(jnp.square(q - jax.lax.stop_gradient(target)[:, None]), axis=-1)
  if weights is None:
    return 0.5 * jnp.mean(err), jnp.mean(q)
  w = jax.lax.stop_gradient(weights)
  return 0.5 * jnp.sum(w * err) / jnp.maximum(jnp.sum(w), 1e-8), jnp.mean(q)


def actor_loss(actor_params, nets: SACNets, critic_params, alpha, obs, key):
  """``mean(alpha * log pi(a|s) - min_i Q_i(s, a))`` with reparameterised ``a``.

  Returns:
    ``(loss, log_prob [B])``.
  """
  action, log_prob = nets.sample(actor_params, obs, key)
  q = jnp.min(nets.q(critic_params, obs, action), axis=-1)
  return jnp.mean(alpha * log_prob - q), log_prob


def alpha_loss(alpha_param, log_prob, target_entropy, kind: str):
  """Temperature loss with entropy error ``e = -log pi - target_entropy`` (constant).

  ``kind='log_alpha'``: ``p * e`` (classic); ``kind='alpha'``: ``exp(p) * e`` (SAC-v2
  eq. 18 written in alpha, the reference paper's choice; its gradient is scaled by alpha).
  """
  err = jax.lax.stop_gradient(-log_prob - target_entropy)
  scale = alpha_param if kind == "log_alpha" else jnp.exp(alpha_param)
  return jnp.mean(scale * err)


def polyak(target, online, tau):
  """``target <- (1 - tau) * target + tau * online``."""
  return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)
