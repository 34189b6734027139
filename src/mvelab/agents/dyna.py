"""Dyna-style model use: MBPO's branched rollouts into a model buffer (Janner et al. 2019).

Value expansion uses the model for *targets*; Dyna uses it for *data*. After every
vectorised environment step (``program.train_iteration``):

1. ``M = dyna_rollouts * num_envs`` start states are drawn uniformly from the real replay
   buffer (the states ``o_tm1`` where a real action was taken; the oracle restarts from
   their stored simulator states ``sim_tm1``).
2. Each is rolled ``k`` steps with the CURRENT policy through the model (learned
   ensemble, oracle or perturbed oracle: any ``DynamicsModel``). A branch that
   terminates stops: its later steps are not kept.
3. Every kept imagined step goes into the **model buffer**, an on-device ring of
   ``dyna_rollouts * num_envs * horizon * dyna_retain`` transitions allocated once at
   the largest rollout length (``replay.add_rows``), so a schedule change never changes
   a shape (and never recompiles).

SAC then updates ``updates_per_step`` times per collected transition on batches of which
``n_real = round(dyna_real_ratio * batch_size)`` rows come from the real buffer and the
rest from the model buffer (a fixed split inside every batch, not a coin flip between
buffers), with the plain 1-step SAC target. With ``dyna_real_ratio = 1`` nothing of the
model is used or computed: the run is SAC, bit for bit.

Rollout length ``k``: ``horizon`` (``--horizon``), or MBPO's linear schedule
``dyna_schedule = (min_step, max_step, min_k, max_k)`` over environment steps
(``k = min_k`` before ``min_step``, ``max_k`` after ``max_step``, linear and floored in
between; ``max_k`` must equal ``horizon``). The rollout always runs ``horizon`` steps and
keeps the first ``k``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mvelab import replay as replay_lib
from mvelab.agents import expansion as xp

Array = jax.Array


class ImaginedTransition(NamedTuple):
  """What the model buffer stores of one imagined step (what the SAC update reads).

  Leaves (unbatched): ``obs_tm1 [O]``, ``action_tm1 [A]``, ``reward_t []``,
  ``terminated_t []`` bool (the model's true-termination verdict), ``obs_t [O]``.
  """

  obs_tm1: Array
  action_tm1: Array
  reward_t: Array
  terminated_t: Array
  obs_t: Array


def capacity(cfg) -> int:
  """Model-buffer capacity in transitions (see the module docstring)."""
  return cfg.dyna_rollouts * cfg.num_envs * cfg.horizon * cfg.dyna_retain


def init_buffer(cfg, obs_size: int, action_size: int) -> replay_lib.ReplayState:
  """An empty model buffer (one row)."""
  f32 = jnp.float32
  example = ImaginedTransition(
      obs_tm1=jax.ShapeDtypeStruct((obs_size,), f32),
      action_tm1=jax.ShapeDtypeStruct((action_size,), f32),
      reward_t=jax.ShapeDtypeStruct((), f32), terminated_t=jax.ShapeDtypeStruct((), bool),
      obs_t=jax.ShapeDtypeStruct((obs_size,), f32))
  return replay_lib.init(capacity(cfg), 1, example)


def rollout_length(cfg, env_steps: Array) -> Array:
  """``k`` (``[]`` int32, in ``[1, horizon]``) at ``env_steps`` (traced)."""
  if cfg.dyna_schedule is None:
    return jnp.int32(cfg.horizon)
  min_step, max_step, min_k, max_k = cfg.dyna_schedule
  frac = jnp.clip((env_steps - min_step) / (max_step - min_step), 0.0, 1.0)
  return jnp.floor(min_k + frac * (max_k - min_k)).astype(jnp.int32)


def branch(p, state, key: Array) -> tuple[Any, dict]:
  """Steps 1-3 of the module docstring: ``(model_buffer, metrics)``.

  ``metrics``: ``dyna_rollout_length`` (mean number of kept steps per branch: ``k``
  unless a termination stopped it earlier) and ``model_buffer_fill`` (stored /
  capacity, after the write).
  """
  cfg = p.cfg
  num = cfg.dyna_rollouts * cfg.num_envs
  k_start, k_roll = jax.random.split(key)
  starts = replay_lib.sample(state.replay, k_start, num)
  policy_fn = xp.make_policy_fn(p.nets, state.actor_params, state.obs_stats,
                                p.deterministic)
  roll = p.model.rollout(state.model_state, state.obs_stats, starts.obs_tm1,
                         starts.sim_tm1, policy_fn, k_roll, cfg.horizon)
  keep = kept_steps(roll.terminated, rollout_length(cfg, state.env_steps))  # [M, H]
  flat = lambda x: x.reshape((-1,) + x.shape[2:])
  rows = ImaginedTransition(
      obs_tm1=flat(roll.obs[:, :-1]), action_tm1=flat(roll.action),
      reward_t=flat(roll.reward), terminated_t=flat(roll.terminated),
      obs_t=flat(roll.obs[:, 1:]))
  buffer = replay_lib.add_rows(state.model_replay, rows, flat(keep))
  return buffer, dict(dyna_rollout_length=jnp.mean(jnp.sum(keep, axis=1)),
                      model_buffer_fill=buffer.size / buffer.capacity_per_env)


def kept_steps(terminated: Array, k: Array) -> Array:
  """``[M, H]`` bool: step ``j`` is kept iff ``j < k`` and no earlier step terminated
  (the terminating step itself is kept: its transition is real data for the target)."""
  horizon = terminated.shape[1]
  before = jnp.concatenate([jnp.zeros_like(terminated[:, :1]),
                            jnp.cumsum(terminated, axis=1)[:, :-1] > 0], axis=1)
  return (jnp.arange(horizon)[None, :] < k) & ~before


def real_rows(cfg) -> int:
  """Rows of every SAC batch taken from the real buffer (static)."""
  return int(round(cfg.dyna_real_ratio * cfg.batch_size))


def mixed_batch(cfg, state, key: Array):
  """A SAC batch: ``real_rows`` real transitions, then model-buffer ones; ``[B, ...]``.

  The real part is ``replay.sample(state.replay, key, n_real)`` (so with a real ratio of
  1 it is exactly SAC's batch); the model part uses ``fold_in(key, 1)``.
  """
  n_real = real_rows(cfg)
  real = replay_lib.sample(state.replay, key, n_real) if n_real else None
  if n_real == cfg.batch_size:
    return real
  imagined = replay_lib.sample(state.model_replay, jax.random.fold_in(key, 1),
                               cfg.batch_size - n_real)
  if real is None:
    return imagined
  pick = lambda x: jnp.asarray(x)
  return ImaginedTransition(*(
      jnp.concatenate([pick(getattr(real, f)).astype(getattr(imagined, f).dtype),
                       getattr(imagined, f)]) for f in ImaginedTransition._fields))
