"""The training program: SAC as pure functions of (config, key), vmapped over seeds.

Structure (each a named top-level function; the run is jit(vmap(...)) of them):

* ``init_state(cfg, env, nets, key) -> TrainState`` builds networks, optimisers, replay,
  observation statistics and the environments of one seed.
* ``prefill(...)`` collects ``warmup_steps`` transitions with uniform random actions.
* ``train_chunk(...)`` runs ``eval_every`` environment steps (collect one vectorised step,
  then ``num_envs * updates_per_step`` gradient updates, repeated) and evaluates at the end.

The host loop in ``mvelab.runner`` calls the compiled chunk once per evaluation so that
metrics leave the device after every evaluation; the same functions compose into one
``lax.scan`` over chunks (``train_scan``) for users who want the whole run as one program.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mvelab import replay as replay_lib
from mvelab.agents import sac
from mvelab.config import Config
from mvelab.core import normalization
from mvelab.envs.base import Env

# Fixed matmul precision: identical numerics on CPU and GPU (no TF32 on Ampere+).
jax.config.update("jax_default_matmul_precision", "highest")



@struct.dataclass
class Hyper:
  """Scalar hyperparameters as traced float32 arrays (vmappable, no recompiles)."""

  gamma: jax.Array
  tau: jax.Array
  target_entropy: jax.Array


@struct.dataclass
class TrainState:
  """Complete state of one seed's run (add a leading [num_seeds] axis by vmap)."""

  actor_params: Any
  critic_params: Any
  target_critic_params: Any
  alpha_param: jax.Array
  actor_opt: Any
  critic_opt: Any
  alpha_opt: Any
  hyper: Hyper
  obs_stats: Any
  replay: Any
  env_state: Any
  key: jax.Array
  eval_key: jax.Array
  env_steps: jax.Array
  updates: jax.Array
  diverged: jax.Array        # [] bool: a non-finite loss, parameter or return was seen
  diverged_step: jax.Array   # [] int32: env_steps when it was first seen (-1: never)
  diverged_what: jax.Array   # [] int32: index into DIVERGENCE_CODES (0: none)


#: What went non-finite first (``diverged_what``); 0 means nothing did.
DIVERGENCE_CODES = ("none", "critic_loss", "actor_loss", "alpha", "entropy", "q_mean",
                    "parameters", "eval_return")


@dataclasses.dataclass(frozen=True)
class Programs:
  """The static pieces a run needs: env, networks, optimisers, config."""

  cfg: Config
  env: Env
  nets: sac.SACNets

  @functools.cached_property
  def actor_tx(self):
    return optax.inject_hyperparams(optax.adam)(learning_rate=self.cfg.actor_lr)

  @functools.cached_property
  def critic_tx(self):
    return optax.inject_hyperparams(optax.adam)(learning_rate=self.cfg.critic_lr)

  @functools.cached_property
  def alpha_tx(self):
    return optax.inject_hyperparams(optax.adam)(learning_rate=self.cfg.alpha_lr)


def make_programs(cfg: Config, env: Env | None = None) -> Programs:
  """Builds the env and networks for a *resolved* config."""
  from mvelab import envs
  if env is None:
    spec = envs.ENVS[cfg.env]
    env = envs.make(cfg.env, **{k: getattr(cfg, k) for k in spec.options})
  nets = sac.SACNets.make(env.obs_size, env.action_size, cfg.hidden_sizes, cfg.bias_init,
                          cfg.std_param)
  return Programs(cfg, env, nets)


# ------------------------------------------------------------------------------- init
def init_state(p: Programs, key: jax.Array) -> TrainState:
  """Initial state of one seed."""
  cfg, env = p.cfg, p.env
  k_net, k_env, k_eval, key = jax.random.split(key, 4)
  actor_params, critic_params = p.nets.init(k_net, env.obs_size, env.action_size)
  alpha_param = jnp.asarray(math.log(cfg.init_alpha), jnp.float32)
  env_state = jax.vmap(env.reset)(jax.random.split(k_env, cfg.num_envs))
  example = replay_lib.transition_from_step(
      jax.tree.map(lambda x: x[0], env_state), jnp.zeros((env.action_size,), jnp.float32),
      jnp.zeros((), jnp.float32), jax.tree.map(lambda x: x[0], env_state))
  return TrainState(
      actor_params=actor_params, critic_params=critic_params,
      target_critic_params=critic_params, alpha_param=alpha_param,
      actor_opt=p.actor_tx.init(actor_params), critic_opt=p.critic_tx.init(critic_params),
      alpha_opt=p.alpha_tx.init(alpha_param),
      hyper=Hyper(gamma=jnp.float32(cfg.gamma), tau=jnp.float32(cfg.tau),
                  target_entropy=jnp.float32(cfg.target_entropy_per_dim * env.action_size)),
      obs_stats=normalization.init(env.obs_size),
      replay=replay_lib.init(cfg.replay_capacity, cfg.num_envs, example),
      env_state=env_state, key=key, eval_key=k_eval,
      env_steps=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32),
      diverged=jnp.zeros((), bool), diverged_step=jnp.full((), -1, jnp.int32),
      diverged_what=jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------------------- acting
def collect(p: Programs, state: TrainState, random_actions: bool) -> TrainState:
  """One vectorised environment step with the behaviour policy; stores the transitions."""
  env, n = p.env, p.cfg.num_envs
  key, k_act = jax.random.split(state.key)
  obs_tm1 = state.env_state.obs
  if random_actions:
    action = jax.random.uniform(k_act, (n, env.action_size), jnp.float32, -1.0, 1.0)
    # Density of U(-1, 1)^A: 2^-A.
    log_prob = jnp.full((n,), -env.action_size * math.log(2.0), jnp.float32)
  else:
    norm_obs = normalization.normalize(state.obs_stats, obs_tm1)
    action, log_prob = p.nets.sample(state.actor_params, norm_obs, k_act)
  env_state = jax.vmap(env.step)(state.env_state, action)
  transition = replay_lib.transition_from_step(state.env_state, action, log_prob, env_state)
  return state.replace(
      key=key, env_state=env_state,
      replay=replay_lib.add(state.replay, transition),
      obs_stats=normalization.update(state.obs_stats, obs_tm1),
      env_steps=state.env_steps + n)


def prefill(p: Programs, state: TrainState) -> TrainState:
  """``warmup_steps`` environment steps with uniform random actions, no learning."""
  iters = p.cfg.warmup_steps // p.cfg.num_envs

  def body(s, _):
    return collect(p, s, random_actions=True), None

  return jax.lax.scan(body, state, None, length=iters)[0]


# --------------------------------------------------------------------------- learning
def update(p: Programs, state: TrainState, key: jax.Array) -> tuple[TrainState, dict]:
  """One SAC gradient update of critics, actor and temperature.

  All three losses are computed from the same pre-update state, then the three Adam
  steps are applied, then the target critics are Polyak-averaged.
  """
  cfg, nets, hp = p.cfg, p.nets, state.hyper
  k_batch, k_target, k_actor = jax.random.split(key, 3)
  batch = replay_lib.sample(state.replay, k_batch, cfg.batch_size)
  obs_tm1 = normalization.normalize(state.obs_stats, batch.obs_tm1)
  obs_t = normalization.normalize(state.obs_stats, batch.obs_t)
  alpha = sac.alpha_value(state.alpha_param, cfg.alpha_param)

  # ALGO LOGIC: critic target (the seam where value expansion plugs in).
  v_t = sac.soft_value(nets, state.actor_params, state.target_critic_params, alpha, obs_t,
                       k_target)
  target = sac.sac_target(batch.reward_t, batch.terminated_t, v_t, hp.gamma)

  (c_loss, q_mean), c_grad = jax.value_and_grad(sac.critic_loss, has_aux=True)(
      state.critic_params, nets, obs_tm1, batch.action_tm1, target)
  (a_loss, log_prob), a_grad = jax.value_and_grad(sac.actor_loss, has_aux=True)(
      state.actor_params, nets, state.critic_params, alpha, obs_tm1, k_actor)
  al_loss, al_grad = jax.value_and_grad(sac.alpha_loss)(
      state.alpha_param, log_prob, hp.target_entropy, cfg.alpha_param)

  c_upd, critic_opt = p.critic_tx.update(c_grad, state.critic_opt, state.critic_params)
  critic_params = optax.apply_updates(state.critic_params, c_upd)
  a_upd, actor_opt = p.actor_tx.update(a_grad, state.actor_opt, state.actor_params)
  actor_params = optax.apply_updates(state.actor_params, a_upd)
  al_upd, alpha_opt = p.alpha_tx.update(al_grad, state.alpha_opt, state.alpha_param)
  alpha_param = optax.apply_updates(state.alpha_param, al_upd)
  target_critic_params = sac.polyak(state.target_critic_params, critic_params, hp.tau)

  metrics = dict(critic_loss=c_loss, actor_loss=a_loss, alpha=alpha,
                 entropy=-jnp.mean(log_prob), q_mean=q_mean)
  state = state.replace(
      actor_params=actor_params, critic_params=critic_params,
      target_critic_params=target_critic_params, alpha_param=alpha_param,
      actor_opt=actor_opt, critic_opt=critic_opt, alpha_opt=alpha_opt,
      updates=state.updates + 1)
  return state, metrics


def train_iteration(p: Programs, state: TrainState, _=None) -> tuple[TrainState, dict]:
  """Collect one vectorised step, then ``num_envs * updates_per_step`` updates."""
  state = collect(p, state, random_actions=False)
  key, k_upd = jax.random.split(state.key)
  state = state.replace(key=key)
  n_updates = p.cfg.num_envs * p.cfg.updates_per_step
  state, metrics = jax.lax.scan(functools.partial(update, p), state,
                                jax.random.split(k_upd, n_updates))
  metrics = jax.tree.map(jnp.mean, metrics)
  return _check_divergence(state, metrics), metrics


def _first_nonfinite(named: list) -> jax.Array:
  """Code (index in DIVERGENCE_CODES) of the first non-finite quantity, 0 if none."""
  code = jnp.zeros((), jnp.int32)
  for name, value in reversed(named):
    bad = jnp.logical_not(jnp.all(jnp.isfinite(value)))
    code = jnp.where(bad, DIVERGENCE_CODES.index(name), code)
  return code


def _check_divergence(state: TrainState, metrics: dict, extra: tuple = ()) -> TrainState:
  """Marks the seed diverged (once) if a loss, a parameter or ``extra`` is non-finite."""
  params_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(
      (state.actor_params, state.critic_params, state.alpha_param))]))
  named = [(k, metrics[k]) for k in DIVERGENCE_CODES if k in metrics]
  named.append(("parameters", jnp.where(params_ok, 0.0, jnp.nan)))
  named.extend(extra)
  code = _first_nonfinite(named)
  new = jnp.logical_and(code > 0, jnp.logical_not(state.diverged))
  return state.replace(
      diverged=jnp.logical_or(state.diverged, code > 0),
      diverged_step=jnp.where(new, state.env_steps, state.diverged_step),
      diverged_what=jnp.where(new, code, state.diverged_what))


# ------------------------------------------------------------------------- evaluation
def evaluate(p: Programs, state: TrainState) -> tuple[jax.Array, jax.Array]:
  """Mean and std of the return of ``eval_episodes`` episodes from fixed initial states.

  The initial states are drawn from the seed's fixed ``eval_key`` and are the same at
  every evaluation. Each episode runs until its first termination or truncation; with the
  time limit every episode completes within ``episode_length`` steps.
  """
  cfg, env, nets = p.cfg, p.env, p.nets
  env_state = jax.vmap(env.reset)(jax.random.split(state.eval_key, cfg.eval_episodes))
  sample_key = jax.random.fold_in(state.eval_key, state.updates)

  def body(carry, i):
    es, ret, alive = carry
    obs = normalization.normalize(state.obs_stats, es.obs)
    if cfg.eval_deterministic:
      action = nets.mode(state.actor_params, obs)
    else:
      action, _ = nets.sample(state.actor_params, obs, jax.random.fold_in(sample_key, i))
    es = jax.vmap(env.step)(es, action)
    ret = ret + jnp.where(alive, es.reward, 0.0)
    alive = alive & ~(es.terminated | es.truncated)
    return (es, ret, alive), None

  init = (env_state, jnp.zeros((cfg.eval_episodes,), jnp.float32),
          jnp.ones((cfg.eval_episodes,), bool))
  (_, ret, _), _ = jax.lax.scan(body, init, jnp.arange(env.episode_length))
  return jnp.mean(ret), jnp.std(ret)


def _with_eval(p: Programs, state: TrainState, metrics: dict) -> tuple[TrainState, dict]:
  """Evaluates, checks for divergence, and masks the metrics of a diverged seed.

  A diverged seed's metrics are written as missing (NaN) from the chunk in which it
  diverged on; ``diverged``, ``diverged_step`` and ``diverged_what`` say when and why.
  """
  ret, ret_std = evaluate(p, state)
  state = _check_divergence(state, metrics, (("eval_return", ret),))
  metrics = dict(metrics, eval_return=ret, eval_return_std=ret_std)
  metrics = {k: jnp.where(state.diverged, jnp.nan, v) for k, v in metrics.items()}
  metrics.update(diverged=state.diverged, diverged_step=state.diverged_step,
                 diverged_what=state.diverged_what, env_steps=state.env_steps,
                 updates=state.updates)
  return state, metrics


_NAN_LEARNING = dict(critic_loss=jnp.nan, actor_loss=jnp.nan, alpha=jnp.nan,
                     entropy=jnp.nan, q_mean=jnp.nan)


def start(p: Programs, key: jax.Array) -> tuple[TrainState, dict]:
  """Initialise, prefill and evaluate the untrained policy (the first metrics row)."""
  state = prefill(p, init_state(p, key))
  state, metrics = _with_eval(p, state, {"alpha": sac.alpha_value(state.alpha_param,
                                                                  p.cfg.alpha_param)})
  # No update has happened yet: learning metrics are missing, not non-finite.
  return state, {**{k: jnp.float32(v) for k, v in _NAN_LEARNING.items() if k != "alpha"},
                 **metrics}


def train_chunk(p: Programs, state: TrainState) -> tuple[TrainState, dict]:
  """``eval_every`` environment steps of learning, then one evaluation."""
  iters = p.cfg.eval_every // p.cfg.num_envs
  new_state, metrics = jax.lax.scan(functools.partial(train_iteration, p), state, None,
                                    length=iters)
  new_state, metrics = _with_eval(p, new_state, jax.tree.map(jnp.mean, metrics))
  # A seed that had diverged before this chunk stays frozen at its last state (its
  # vmapped lane still computes, but nothing it computes is kept).
  new_state = jax.tree.map(lambda old, new: jnp.where(state.diverged, old, new), state,
                           new_state)
  return new_state, metrics


def train_scan(p: Programs, key: jax.Array, num_chunks: int) -> tuple[TrainState, dict]:
  """The whole run as one program: ``start`` then ``num_chunks`` chunks in a scan.

  Returns the final state and metrics stacked ``[num_chunks + 1]``.
  """
  state, first = start(p, key)

  def body(s, _):
    return train_chunk(p, s)

  state, rest = jax.lax.scan(body, state, None, length=num_chunks)
  return state, jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
