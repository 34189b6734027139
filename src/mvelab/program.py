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
from mvelab.agents import expansion as xp
from mvelab.agents import dyna
from mvelab.agents import sac
from mvelab.agents import steve
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
  target_actor_params: Any   # DDPG's target actor (SAC: unused copy, never updated)
  model_state: Any           # dynamics model parameters/optimiser (oracle: empty)
  alpha_param: jax.Array
  actor_opt: Any
  critic_opt: Any
  alpha_opt: Any
  hyper: Hyper
  obs_stats: Any
  replay: Any
  model_replay: Any          # Dyna's model buffer (agents/dyna.py); () otherwise
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
  model: Any = None  # a DynamicsModel, or None without critic/actor expansion

  @property
  def deterministic(self) -> bool:
    return self.cfg.agent == "ddpg"

  @property
  def dyna(self) -> bool:
    """Dyna with some model data in its batches (real ratio < 1)."""
    return self.cfg.expansion == "dyna" and dyna.real_rows(self.cfg) < self.cfg.batch_size

  @property
  def learned_model(self) -> bool:
    """A learned model that is used, hence trained (Dyna at real ratio 1 uses none)."""
    return self.cfg.model == "learned" and (self.cfg.expansion != "dyna" or self.dyna)

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
  model = None
  if cfg.model is not None:
    from mvelab import models
    options = dict(error=cfg.model_error, error_scale=cfg.model_error_scale) if (
        cfg.model == "oracle") else dict(
        hidden_sizes=cfg.model_hidden_sizes, num_members=cfg.model_members,
        learning_rate=cfg.model_lr, batch_size=cfg.model_batch_size,
        sampling=cfg.model_sampling)
    model = models.make_model(cfg.model, env, **options)
  return Programs(cfg, env, nets, model)


# ------------------------------------------------------------------------------- init
def init_state(p: Programs, key: jax.Array) -> TrainState:
  """Initial state of one seed."""
  cfg, env = p.cfg, p.env
  k_net, k_env, k_eval, k_model, key = jax.random.split(key, 5)
  actor_params, critic_params = p.nets.init(k_net, env.obs_size, env.action_size)
  alpha_param = jnp.asarray(math.log(cfg.init_alpha), jnp.float32)
  env_state = jax.vmap(env.reset)(jax.random.split(k_env, cfg.num_envs))
  example = replay_lib.transition_from_step(
      jax.tree.map(lambda x: x[0], env_state), jnp.zeros((env.action_size,), jnp.float32),
      jnp.zeros((), jnp.float32), jax.tree.map(lambda x: x[0], env_state))
  return TrainState(
      actor_params=actor_params, critic_params=critic_params,
      target_critic_params=critic_params, target_actor_params=actor_params,
      model_state=p.model.init(k_model) if p.model is not None else (),
      alpha_param=alpha_param,
      actor_opt=p.actor_tx.init(actor_params), critic_opt=p.critic_tx.init(critic_params),
      alpha_opt=p.alpha_tx.init(alpha_param),
      hyper=Hyper(gamma=jnp.float32(cfg.gamma), tau=jnp.float32(cfg.tau),
                  target_entropy=jnp.float32(cfg.target_entropy_per_dim * env.action_size)),
      obs_stats=normalization.init(env.obs_size),
      replay=replay_lib.init(cfg.replay_capacity, cfg.num_envs, example),
      model_replay=(dyna.init_buffer(cfg, env.obs_size, env.action_size)
                    if cfg.expansion == "dyna" else ()),
      env_state=env_state, key=key, eval_key=k_eval,
      env_steps=jnp.zeros((), jnp.int32), updates=jnp.zeros((), jnp.int32),
      diverged=jnp.zeros((), bool), diverged_step=jnp.full((), -1, jnp.int32),
      diverged_what=jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------------------- acting
def collect(p: Programs, state: TrainState, random_actions: bool
            ) -> tuple[TrainState, replay_lib.Transition]:
  """One vectorised environment step with the behaviour policy; stores the transitions.

  SAC acts with its stochastic policy; DDPG with ``tanh(loc + noise * eps)`` (noise before
  the tanh, as in the reference code) and stores log-prob 0 (no density).
  """
  env, n = p.env, p.cfg.num_envs
  key, k_act = jax.random.split(state.key)
  obs_tm1 = state.env_state.obs
  if random_actions:
    action = jax.random.uniform(k_act, (n, env.action_size), jnp.float32, -1.0, 1.0)
    # Density of U(-1, 1)^A: 2^-A.
    log_prob = jnp.full((n,), -env.action_size * math.log(2.0), jnp.float32)
  elif p.deterministic:
    norm_obs = normalization.normalize(state.obs_stats, obs_tm1)
    loc, _ = p.nets.dist(state.actor_params, norm_obs)
    noise = p.cfg.exploration_noise * jax.random.normal(k_act, loc.shape, jnp.float32)
    action = jnp.tanh(loc + noise)
    log_prob = jnp.zeros((n,), jnp.float32)
  else:
    norm_obs = normalization.normalize(state.obs_stats, obs_tm1)
    action, log_prob = p.nets.sample(state.actor_params, norm_obs, k_act)
  env_state = jax.vmap(env.step)(state.env_state, action)
  transition = replay_lib.transition_from_step(state.env_state, action, log_prob, env_state)
  return state.replace(
      key=key, env_state=env_state,
      replay=replay_lib.add(state.replay, transition),
      obs_stats=normalization.update(state.obs_stats, obs_tm1),
      env_steps=state.env_steps + n), transition


def prefill(p: Programs, state: TrainState) -> TrainState:
  """``warmup_steps`` environment steps with uniform random actions, no learning."""
  iters = p.cfg.warmup_steps // p.cfg.num_envs

  def body(s, _):
    return collect(p, s, random_actions=True)[0], None

  return jax.lax.scan(body, state, None, length=iters)[0]


# --------------------------------------------------------------------------- learning
def update(p: Programs, state: TrainState, key: jax.Array) -> tuple[TrainState, dict]:
  """One gradient update of critics, actor and temperature (SAC or DDPG, any expansion).

  All losses are computed from the same pre-update state, then the Adam steps are
  applied, then the target networks are Polyak-averaged.
  """
  cfg, nets, hp = p.cfg, p.nets, state.hyper
  k_batch, k_target, k_actor, k_roll = jax.random.split(key, 4)
  stats, det, horizon = state.obs_stats, p.deterministic, cfg.horizon
  if cfg.expansion == "retrace":
    window = replay_lib.sample_windows(state.replay, k_batch, cfg.batch_size, horizon + 1)
    batch = jax.tree.map(lambda x: x[:, 0], window)
  elif cfg.expansion == "dyna":
    batch = dyna.mixed_batch(cfg, state, k_batch)  # real rows first, then imagined ones
  else:
    batch = replay_lib.sample(state.replay, k_batch, cfg.batch_size)
  obs_tm1 = normalization.normalize(stats, batch.obs_tm1)
  alpha = jnp.float32(0.0) if det else sac.alpha_value(state.alpha_param, cfg.alpha_param)
  # SAC's target policy is the current policy (tau_pi = 1); DDPG has a target actor.
  target_actor = state.target_actor_params if det else state.actor_params

  # ALGO LOGIC: the critic target. Every variant goes through the one target operator.
  weights, extra = None, {}
  critic_obs, critic_action = obs_tm1, batch.action_tm1
  if cfg.expansion == "critic":
    policy_fn = xp.make_policy_fn(nets, target_actor, stats, det)
    roll = lambda k: p.model.rollout(state.model_state, stats, batch.obs_t, batch.sim_t,
                                     policy_fn, k, horizon)
    args = (nets, target_actor, state.target_critic_params, alpha, stats, batch)
    if cfg.tdk:
      tdk = xp.tdk_targets(*args, roll(k_roll), k_target, hp.gamma, cfg.lam, det,
                           cfg.ce_values)
      flat = lambda x: x.reshape((-1,) + x.shape[2:])
      critic_obs = normalization.normalize(stats, flat(tdk.obs))
      critic_action, target, weights = flat(tdk.action), flat(tdk.target), flat(tdk.mask)
    elif cfg.particles > 1:
      rollouts = jax.vmap(roll)(jax.random.split(k_roll, cfg.particles))
      target = xp.critic_expansion_target_particles(*args, rollouts, k_target, hp.gamma,
                                                    cfg.lam, det, cfg.ce_values)
    else:
      target = xp.critic_expansion_target(*args, roll(k_roll), k_target, hp.gamma, cfg.lam,
                                          det, cfg.ce_values)
  elif cfg.expansion == "steve":
    policy_fn = xp.make_policy_fn(nets, target_actor, stats, det)
    rollouts = p.model.sample_rollouts(state.model_state, stats, batch.obs_t, batch.sim_t,
                                       policy_fn, k_roll, horizon, cfg.particles)
    st = steve.steve_target(nets, target_actor, state.target_critic_params, alpha, stats,
                            batch, rollouts, k_target, hp.gamma, det)
    target = st.target
    extra = dict(model_use=1.0 - jnp.mean(st.weights[:, 0]),
                 steve_mean_horizon=jnp.mean(jnp.sum(
                     st.weights * jnp.arange(horizon + 1), axis=-1)),
                 steve_weights=jnp.mean(st.weights, axis=0))  # [H+1]
  elif cfg.expansion == "retrace":
    target = xp.retrace_target(nets, target_actor, state.target_critic_params, alpha, stats,
                               window, k_target, hp.gamma, cfg.lam, det)
  elif det:
    target = xp.ddpg_critic_target(nets, target_actor, state.target_critic_params, stats,
                                   batch, hp.gamma)
  else:
    obs_t = normalization.normalize(stats, batch.obs_t)
    v_t = sac.soft_value(nets, state.actor_params, state.target_critic_params, alpha, obs_t,
                         k_target)
    target = sac.sac_target(batch.reward_t, batch.terminated_t, v_t, hp.gamma)

  (c_loss, q_mean), c_grad = jax.value_and_grad(sac.critic_loss, has_aux=True)(
      state.critic_params, nets, critic_obs, critic_action, target, weights)

  # ALGO LOGIC: the actor loss (actor expansion differentiates through the rollout).
  if cfg.expansion == "actor":
    rollout_fn = lambda policy_fn, k: p.model.rollout(
        state.model_state, stats, batch.obs_tm1, batch.sim_tm1, policy_fn, k, horizon)
    (a_loss, log_prob), a_grad = jax.value_and_grad(xp.actor_expansion_loss, has_aux=True)(
        state.actor_params, nets, state.critic_params, alpha, stats, rollout_fn,
        batch.obs_tm1, k_actor, horizon, hp.gamma, det)
  elif det:
    (a_loss, log_prob), a_grad = jax.value_and_grad(xp.ddpg_actor_loss, has_aux=True)(
        state.actor_params, nets, state.critic_params, stats, batch.obs_tm1)
  else:
    (a_loss, log_prob), a_grad = jax.value_and_grad(sac.actor_loss, has_aux=True)(
        state.actor_params, nets, state.critic_params, alpha, obs_tm1, k_actor)

  c_upd, critic_opt = p.critic_tx.update(c_grad, state.critic_opt, state.critic_params)
  critic_params = optax.apply_updates(state.critic_params, c_upd)
  a_upd, actor_opt = p.actor_tx.update(a_grad, state.actor_opt, state.actor_params)
  actor_params = optax.apply_updates(state.actor_params, a_upd)
  if det:  # DDPG: alpha = 0 and fixed; a real target actor.
    alpha_param, alpha_opt = state.alpha_param, state.alpha_opt
    target_actor_params = sac.polyak(state.target_actor_params, actor_params, hp.tau)
  else:
    al_grad = jax.grad(sac.alpha_loss)(state.alpha_param, log_prob, hp.target_entropy,
                                       cfg.alpha_param)
    al_upd, alpha_opt = p.alpha_tx.update(al_grad, state.alpha_opt, state.alpha_param)
    alpha_param = optax.apply_updates(state.alpha_param, al_upd)
    target_actor_params = state.target_actor_params
  target_critic_params = sac.polyak(state.target_critic_params, critic_params, hp.tau)

  metrics = dict(critic_loss=c_loss, actor_loss=a_loss, alpha=alpha,
                 entropy=-jnp.mean(log_prob), q_mean=q_mean,
                 target_mean=jnp.mean(target) if weights is None else
                 jnp.sum(target * weights) / jnp.sum(weights), **extra)
  state = state.replace(
      actor_params=actor_params, critic_params=critic_params,
      target_critic_params=target_critic_params, target_actor_params=target_actor_params,
      alpha_param=alpha_param, actor_opt=actor_opt, critic_opt=critic_opt,
      alpha_opt=alpha_opt, updates=state.updates + 1)
  return state, metrics


def train_model(p: Programs, state: TrainState, num_updates) -> tuple[TrainState, jax.Array]:
  """``num_updates`` learned-model updates on uniform replay batches; mean model loss.

  ``num_updates`` may be traced (the 'paper' schedule depends on the buffer size).
  """
  key, k = jax.random.split(state.key)

  def body(i, carry):
    model_state, total = carry
    k_batch, k_upd = jax.random.split(jax.random.fold_in(k, i))
    batch = replay_lib.sample(state.replay, k_batch, p.cfg.model_batch_size)
    model_state, m = p.model.update(model_state, state.obs_stats, batch, k_upd)
    return model_state, total + m["model_loss"]

  model_state, total = jax.lax.fori_loop(0, num_updates, body,
                                         (state.model_state, jnp.float32(0.0)))
  mean_loss = total / jnp.maximum(num_updates, 1)
  return state.replace(model_state=model_state, key=key), mean_loss


def _model_updates_per_iteration(p: Programs, state: TrainState):
  """Model updates after one vectorised environment step."""
  if p.cfg.model_schedule == "paper":
    # One epoch over the buffer per environment step: floor(stored / batch) updates.
    stored = state.replay.size * p.cfg.num_envs
    return stored // p.cfg.model_batch_size
  return p.cfg.model_updates_per_step * p.cfg.num_envs


def train_iteration(p: Programs, state: TrainState, _=None) -> tuple[TrainState, dict]:
  """Collect one vectorised step, then ``num_envs * updates_per_step`` updates.

  Non-finite metrics are not checked here but by :func:`train_chunk` on the stacked
  per-iteration metrics (a check inside the loop body cost ~4% of a SAC iteration).
  """
  state, transition = collect(p, state, random_actions=False)
  model_metrics = {}
  if p.learned_model:
    # Held-out model error: the new transitions have not been trained on yet.
    err = p.model.prediction_error(state.model_state, state.obs_stats, transition)
    state, model_loss = train_model(p, state, _model_updates_per_iteration(p, state))
    model_metrics = dict(model_loss=model_loss, model_obs_mse=err["obs_mse"],
                         model_reward_mse=err["reward_mse"])
  if p.dyna:  # MBPO: branched rollouts of the current policy into the model buffer
    key, k_branch = jax.random.split(state.key)
    model_replay, dyna_metrics = dyna.branch(p, state, k_branch)
    state = state.replace(key=key, model_replay=model_replay)
    model_metrics.update(dyna_metrics)
  if p.cfg.expansion == "dyna":
    model_metrics["dyna_real_fraction"] = jnp.float32(dyna.real_rows(p.cfg) / p.cfg.batch_size)
  n_updates = p.cfg.num_envs * p.cfg.updates_per_step
  keys = jax.random.split(state.key, n_updates + 1)  # one PRNG call for all updates
  state = state.replace(key=keys[0])
  if n_updates == 1:  # no length-1 inner loop
    state, metrics = update(p, state, keys[1])
  else:
    state, metrics = jax.lax.scan(functools.partial(update, p), state, keys[1:])
    metrics = jax.tree.map(_mean_over_steps, metrics)
  return state, {**metrics, **model_metrics}


def _check_iterations(p: Programs, before: TrainState, state: TrainState,
                      metrics: dict) -> TrainState:
  """Marks the seed diverged (once) at the first iteration of a chunk whose losses were
  non-finite; ``metrics`` are the chunk's stacked per-iteration metrics ``[iters]``."""
  codes = jax.vmap(lambda m: _first_nonfinite(
      [(k, m[k]) for k in DIVERGENCE_CODES if k in m]))(metrics)  # [iters]
  bad = codes > 0
  first = jnp.argmax(bad)
  new = jnp.logical_and(jnp.any(bad), jnp.logical_not(state.diverged))
  step = before.env_steps + (first + 1) * p.cfg.num_envs
  return state.replace(
      diverged=jnp.logical_or(state.diverged, new),
      diverged_step=jnp.where(new, step, state.diverged_step),
      diverged_what=jnp.where(new, codes[first], state.diverged_what))


def _first_nonfinite(named: list) -> jax.Array:
  """Code (index in DIVERGENCE_CODES) of the first non-finite quantity, 0 if none."""
  code = jnp.zeros((), jnp.int32)
  for name, value in reversed(named):
    bad = jnp.logical_not(jnp.all(jnp.isfinite(value)))
    code = jnp.where(bad, DIVERGENCE_CODES.index(name), code)
  return code


def _check_divergence(state: TrainState, extra: tuple = ()) -> TrainState:
  """Marks the seed diverged (once) if a parameter or a quantity of ``extra`` (``(name,
  value)`` pairs) is non-finite. Runs at the end of every chunk; the per-iteration losses
  are checked by :func:`_check_iterations` (a non-finite parameter makes the next losses
  non-finite anyway)."""
  params_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(
      (state.actor_params, state.critic_params, state.alpha_param))]))
  named = [("parameters", jnp.where(params_ok, 0.0, jnp.nan)), *extra]
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

  # The scan's length is the time limit, so episodes need no auto-reset: step the true
  # dynamics (``simulate``, the same ``step_sim`` as ``step``) and stop counting rewards
  # after the first termination.
  def body(carry, i):
    sim, obs, ret, alive = carry
    norm_obs = normalization.normalize(state.obs_stats, obs)
    if cfg.eval_deterministic or p.deterministic:
      action = nets.mode(state.actor_params, norm_obs)
    else:
      action, _ = nets.sample(state.actor_params, norm_obs, jax.random.fold_in(sample_key, i))
    sim, obs, reward, terminated = jax.vmap(env.simulate)(sim, action)
    ret = ret + jnp.where(alive, reward, 0.0)
    return (sim, obs, ret, alive & ~terminated), None

  init = (env_state.sim, env_state.obs, jnp.zeros((cfg.eval_episodes,), jnp.float32),
          jnp.ones((cfg.eval_episodes,), bool))
  (_, _, ret, _), _ = jax.lax.scan(body, init, jnp.arange(env.episode_length))
  return jnp.mean(ret), jnp.std(ret)


def _with_eval(p: Programs, state: TrainState, metrics: dict) -> tuple[TrainState, dict]:
  """Evaluates, checks for divergence, and masks the metrics of a diverged seed.

  A diverged seed's metrics are written as missing (NaN) from the chunk in which it
  diverged on; ``diverged``, ``diverged_step`` and ``diverged_what`` say when and why.
  """
  ret, ret_std = evaluate(p, state)
  state = _check_divergence(state, (("eval_return", ret),))
  metrics = dict(metrics, eval_return=ret, eval_return_std=ret_std)
  metrics = {k: jnp.where(state.diverged, jnp.nan, v) for k, v in metrics.items()}
  metrics.update(diverged=state.diverged, diverged_step=state.diverged_step,
                 diverged_what=state.diverged_what, env_steps=state.env_steps,
                 updates=state.updates)
  return state, metrics


#: Metrics of a chunk; those that do not apply (no update yet, no learned model) are NaN
#: and written as empty cells. STEVE runs also report the vector ``steve_weights``
#: ``[H+1]`` (metrics.csv columns ``steve_w0 .. steve_wH``, ``rundir.metric_columns``).
CHUNK_METRICS = ("critic_loss", "actor_loss", "alpha", "entropy", "q_mean", "target_mean",
                 "model_loss", "model_obs_mse", "model_reward_mse", "model_use",
                 "steve_mean_horizon", "dyna_rollout_length", "model_buffer_fill",
                 "dyna_real_fraction")


def start(p: Programs, key: jax.Array) -> tuple[TrainState, dict]:
  """Initialise, prefill and evaluate the untrained policy (the first metrics row)."""
  state = prefill(p, init_state(p, key))
  metrics = {"alpha": jnp.float32(0.0) if p.deterministic else
             sac.alpha_value(state.alpha_param, p.cfg.alpha_param)}
  if p.learned_model:
    cfg = p.cfg
    n = (200 * cfg.warmup_steps // cfg.model_batch_size if cfg.model_schedule == "paper"
         else cfg.model_warmup_updates)
    state, metrics["model_loss"] = train_model(p, state, n)
  state, metrics = _with_eval(p, state, metrics)
  return state, _fill(metrics)


def _mean_over_steps(x: jax.Array) -> jax.Array:
  """Mean over the leading (update or iteration) axis: a scalar metric stays a scalar, a
  vector metric (``steve_weights [H+1]``) a vector."""
  return jnp.mean(x, axis=0)


def _fill(metrics: dict) -> dict:
  """Adds the chunk metrics that do not apply as NaN (missing, not non-finite)."""
  return {**{k: jnp.float32(jnp.nan) for k in CHUNK_METRICS}, **metrics}


def train_chunk(p: Programs, state: TrainState) -> tuple[TrainState, dict]:
  """``eval_every`` environment steps of learning, then one evaluation."""
  iters = p.cfg.eval_every // p.cfg.num_envs
  new_state, metrics = jax.lax.scan(functools.partial(train_iteration, p), state, None,
                                    length=iters)
  new_state = _check_iterations(p, state, new_state, metrics)
  new_state, metrics = _with_eval(p, new_state,
                                  _fill(jax.tree.map(_mean_over_steps, metrics)))
  # A seed that had diverged before this chunk stays frozen at its last state (its
  # vmapped lane still computes, but nothing it computes is kept). Its replay buffer is
  # not frozen: it is never read again, and keeping the old buffer alive for the select
  # would copy every replay leaf at the start of each chunk (Dyna's model buffer alike).
  frozen = jax.tree.map(lambda old, new: jnp.where(state.diverged, old, new),
                        state.replace(replay=(), model_replay=()),
                        new_state.replace(replay=(), model_replay=()))
  return frozen.replace(replay=new_state.replay, model_replay=new_state.model_replay), metrics


def train_scan(p: Programs, key: jax.Array, num_chunks: int) -> tuple[TrainState, dict]:
  """The whole run as one program: ``start`` then ``num_chunks`` chunks in a scan.

  Returns the final state and metrics stacked ``[num_chunks + 1]``.
  """
  state, first = start(p, key)

  def body(s, _):
    return train_chunk(p, s)

  state, rest = jax.lax.scan(body, state, None, length=num_chunks)
  return state, jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, rest)
