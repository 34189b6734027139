"""Perturbed oracles: the true simulator with a known, controllable model error.

``PerturbedOracle(env, kind, scale)`` is a dynamics model like any other (the
:class:`~mvelab.models.base.DynamicsModel` protocol): it restarts from the stored
simulator states exactly as :class:`~mvelab.models.oracle.OracleModel` does, but steps a
*wrong* simulator, so that a study can sweep the model error ``scale`` (ε) from 0 (the
oracle, bit for bit) upwards and ask how much error each horizon tolerates.

Kinds
-----
* ``physics`` — a systematic error that compounds through the dynamics: the rollout steps
  ``env.perturbed(ε)``, a copy whose physical parameters are scaled by ``1 + ε``
  (``Env.physics_parameters``: pendulum mass, length, gravity and torque gain; the
  cart-poles' masses, pole length (and the inertia with it), gravity and force gain;
  Brax link masses and inertias and actuator gears). The copy also computes the reward
  and the termination, from its own states.
* ``noise`` — a random error: after every imagined step, Gaussian noise with standard
  deviation ``ε · σ`` is added to the next simulator state, where ``σ [sim]`` is the
  per-dimension standard deviation of the batch of simulator states being stepped (the
  ``B`` replayed states at the first step: an estimate of the replay's spread). It
  compounds because the rollout continues from the noisy state. The observation and the reward are those of
  the noisy state and of the step into it. Only environments whose simulator state is one
  flat array (the pure-JAX ones) support it: Brax states hold quaternions and derived
  coordinates that noise would make inconsistent.

``one_step_error`` measures any model's one-step error on a replay batch on one scale
(observation error normalised by the replay's per-dimension observation std, reward
error), so that a learned ensemble can be placed on the ε axis.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from mvelab.core import normalization
from mvelab.envs.base import Env
from mvelab.errors import ConfigError
from mvelab.models.base import PolicyFn, Rollout, independent_rollouts
from mvelab.models.oracle import OracleModel, masked_rollout

Array = jax.Array

KINDS = ("physics", "noise")


def supports(env: Env, kind: str) -> bool:
  """Whether ``env`` supports perturbation ``kind`` (``physics`` or ``noise``)."""
  if kind == "physics":
    return bool(env.physics_parameters)
  sim = jax.eval_shape(env.init_sim, jax.random.PRNGKey(0))
  return isinstance(sim, jax.ShapeDtypeStruct) and len(sim.shape) == 1


def check(env: Env, kind: str, scale) -> None:
  """Raises ConfigError unless ``kind``/``scale`` are valid for ``env``."""
  if kind not in KINDS:
    raise ConfigError(f"model_error: must be one of {', '.join(KINDS)}, got {kind!r}")
  if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
      math.isfinite(scale) and scale >= 0):
    raise ConfigError(f"model_error_scale: must be a finite number >= 0, got {scale!r}")
  if not supports(env, kind):
    allowed = [k for k in KINDS if supports(env, k)]
    raise ConfigError(f"model_error: {kind} is not supported by env {env.name}; allowed "
                      f"there: {', '.join(allowed) or 'none'}")


@dataclasses.dataclass(frozen=True)
class PerturbedOracle:
  """The true simulator with a controlled error (see the module docstring).

  Attributes:
    env: the environment (its true dynamics).
    kind: ``physics`` or ``noise``.
    scale: ε >= 0.
  """

  env: Env
  kind: str
  scale: float
  name: ClassVar[str] = "oracle"
  needs_sim: ClassVar[bool] = True

  def __post_init__(self):
    check(self.env, self.kind, self.scale)

  @property
  def stepper(self) -> Env:
    """The environment the rollout steps (the perturbed copy for ``physics``)."""
    return self.env.perturbed(self.scale) if self.kind == "physics" else self.env

  def init(self, key: Array) -> tuple:
    return OracleModel(self.env).init(key)

  def update(self, model_state: Any, obs_stats: Any, batch: Any, key: Array):
    return OracleModel(self.env).update(model_state, obs_stats, batch, key)

  def sample_rollouts(self, model_state, obs_stats, obs, sim, policy_fn, key, horizon, num):
    """``num`` independent rollouts ``[num, B, ...]`` (see ``DynamicsModel``)."""
    return independent_rollouts(self, model_state, obs_stats, obs, sim, policy_fn, key,
                                horizon, num)

  def rollout(self, model_state: Any, obs_stats: Any, obs: Array, sim: Any,
              policy_fn: PolicyFn, key: Array, horizon: int) -> Rollout:
    """Like ``OracleModel.rollout``, through the perturbed dynamics (same shapes)."""
    return masked_rollout(self.transition(model_state, obs_stats), sim, obs, policy_fn,
                          key, horizon)

  def transition(self, model_state: Any, obs_stats: Any):
    """The batched one-step model of :meth:`rollout` (``TransitionFn``; state = sims)."""
    del model_state, obs_stats
    env = self.stepper
    simulate = jax.vmap(env.simulate)
    if self.kind == "physics":
      def transition(s, o, a, k):
        del o, k
        return simulate(s, a)
      return transition
    scale = self.scale

    def noisy(s, o, a, k):
      sigma = scale * jnp.std(s, axis=0)  # [sim] spread of the batch being stepped
      next_sim, _, reward, _ = simulate(s, a)
      next_sim = next_sim + sigma * jax.random.normal(k, next_sim.shape, next_sim.dtype)
      next_obs = jax.vmap(env.observe)(next_sim)
      return next_sim, next_obs, reward, env.termination_fn(o, a, next_obs)

    return noisy


def one_step_error(model, model_state, obs_stats, batch, key: Array) -> dict:
  """One-step prediction error of any model on real replayed transitions.

  One step of the model's own ``transition`` (the one its rollouts iterate) with each
  stored action ``a_tm1`` from ``(o_tm1, sim_tm1)``, compared with the stored ``o_t`` and
  ``r_t``.

  Returns:
    ``{"obs_error": [B], "reward_error": [B]}``: the root-mean-square over observation
    dimensions of ``(ô_t − o_t) / σ_obs`` (``σ_obs`` the running per-dimension std of the
    replay, ``obs_stats``), and ``|r̂_t − r_t|``.
  """
  state = batch.sim_tm1 if model.needs_sim else ()
  _, obs_t, reward_t, _ = model.transition(model_state, obs_stats)(
      state, batch.obs_tm1, batch.action_tm1, key)
  err = (obs_t - batch.obs_t) / normalization.std(obs_stats)
  return dict(obs_error=jnp.sqrt(jnp.mean(jnp.square(err), axis=-1)),
              reward_error=jnp.abs(reward_t - batch.reward_t))
