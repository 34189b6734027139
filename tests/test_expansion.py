"""Tests of mvelab.agents.expansion: critic/actor expansion, Retrace and DDPG targets.

Small real networks (obs 3, act 1, hidden (16, 16)) and synthetic rollouts/windows, so
expected values can be computed independently of the window layout. ``KeyFreeNets``
replaces the sampled action by the mode (log-prob of the mode kept): its values do not
depend on keys, which makes the stochastic code path hand-computable.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.agents import expansion, sac
from mvelab.core import distributions, normalization
from mvelab.models.base import Rollout
from mvelab.replay import Transition

OBS, ACT, HIDDEN = 3, 1, (16, 16)
GAMMA, ALPHA = 0.9, 0.3
B, H = 4, 3  # one batch size and horizon for (almost) all tests: fewer compiles


@dataclasses.dataclass(frozen=True)
class KeyFreeNets(sac.SACNets):
  """``sample`` returns ``(tanh(loc), log π(tanh(loc)))``: deterministic, key unused."""

  def sample(self, actor_params, obs, key):
    del key
    loc, scale = self.dist(actor_params, obs)
    action = jnp.tanh(loc)
    log_prob = jax.vmap(functools.partial(
        distributions.log_prob, stable=self.stable_logdet))(loc, scale, action)
    return action, log_prob


NETS = sac.SACNets.make(OBS, ACT, HIDDEN, bias_init=0.1)
KF_NETS = KeyFreeNets.make(OBS, ACT, HIDDEN, bias_init=0.1)

# Jitted entry points (one compile per shape instead of many eager primitive compiles).
_DET = ("deterministic",)
CE = jax.jit(expansion.critic_expansion_target, static_argnums=(0, 9),
             static_argnames=_DET + ("values",))
CE_PARTICLES = jax.jit(expansion.critic_expansion_target_particles, static_argnums=0,
                       static_argnames=_DET)
TDK = jax.jit(expansion.tdk_targets, static_argnums=0, static_argnames=_DET)
RETRACE = jax.jit(expansion.retrace_target, static_argnums=0, static_argnames=_DET)
DDPG_TARGET = jax.jit(expansion.ddpg_critic_target, static_argnums=0)
DDPG_ACTOR = jax.jit(expansion.ddpg_actor_loss, static_argnums=1)
SOFT_VALUE = jax.jit(sac.soft_value, static_argnums=0)


def _sac_target_fn(nets, actor, target_critic, alpha, stats, reward, terminated, obs_t, key):
  """The training loop's 1-step SAC target."""
  v = sac.soft_value(nets, actor, target_critic, alpha, _norm(stats, obs_t), key)
  return sac.sac_target(reward, terminated, v, GAMMA)


_sac_target = jax.jit(_sac_target_fn, static_argnums=0)
# XLA's default LLVM optimisation level (tests/conftest.py compiles the suite at 0): two
# separately compiled programs agree bit for bit there, as they do in a training run.
FULL_OPT = {"xla_backend_optimization_level": 3}


@pytest.fixture(scope="module")
def setup():
  @jax.jit
  def make():
    actor, critic = NETS.init(jax.random.PRNGKey(0), OBS, ACT)
    _, target_critic = NETS.init(jax.random.PRNGKey(1), OBS, ACT)
    data = 2.0 + 3.0 * jax.random.normal(jax.random.PRNGKey(2), (64, OBS))
    stats = normalization.update(normalization.init(OBS), data)
    return actor, critic, target_critic, stats
  return make()


def _norm(stats, x):
  return normalization.normalize(stats, x)


@functools.partial(jax.jit, static_argnums=0)
def _policy(nets, actor, stats, obs):
  """``nets.sample`` at raw ``obs [..., obs]`` with a fixed key (key-free for KF_NETS)."""
  flat = _norm(stats, obs).reshape(-1, OBS)
  action, log_prob = nets.sample(actor, flat, jax.random.PRNGKey(0))
  return action.reshape(obs.shape[:-1] + (ACT,)), log_prob.reshape(obs.shape[:-1])


def _mode(actor, stats, obs):
  """Policy mode ``tanh(loc)`` at raw ``obs [..., obs]`` (the KF_NETS sample)."""
  return _policy(KF_NETS, actor, stats, obs)[0]


@functools.partial(jax.jit, static_argnums=0)
def _min_q(nets, params, stats, obs, action):
  return jnp.min(nets.q(params, _norm(stats, obs), action), axis=-1)


@functools.partial(jax.jit, static_argnums=0, static_argnames="deterministic")
def _value(nets, actor, critic, stats, obs, alpha, key=None, deterministic=False):
  """Independent value of raw ``obs [N, obs]``: twin-min Q of a policy action − α log π."""
  norm = _norm(stats, obs)
  if deterministic:
    return _min_q(nets, critic, stats, obs, nets.mode(actor, norm))
  a, lp = nets.sample(actor, norm, key)
  return _min_q(nets, critic, stats, obs, a) - alpha * lp


def _batch(seed, b, terminated=False, truncated=False):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return Transition(
      obs_tm1=2.0 + 3.0 * f(b, OBS), action_tm1=jnp.tanh(f(b, ACT)), logprob_tm1=f(b),
      reward_t=f(b), terminated_t=jnp.full((b,), terminated),
      truncated_t=jnp.full((b,), truncated), obs_t=2.0 + 3.0 * f(b, OBS),
      sim_tm1=jnp.zeros((b,)), sim_t=jnp.zeros((b,)))


def _rollout(seed, start, horizon, actor=None, stats=None, terminated=None):
  """Synthetic rollout from ``start [B, obs]``: random next obs and rewards.

  Actions are random, or the policy mode ``tanh(loc(o_j))`` if ``actor`` is given
  (on-policy for a deterministic / key-free policy).
  """
  rng = np.random.default_rng(seed)
  b = start.shape[0]
  rest = 2.0 + 3.0 * rng.normal(size=(b, horizon, OBS))
  obs = jnp.concatenate([start[:, None], jnp.asarray(rest, jnp.float32)], axis=1)
  if actor is None:
    action = jnp.asarray(np.tanh(rng.normal(size=(b, horizon, ACT))), jnp.float32)
  else:
    action = _mode(actor, stats, obs[:, :horizon])
  if terminated is None:
    terminated = jnp.zeros((b, horizon), bool)
  return Rollout(obs=obs, action=action,
                 log_prob=jnp.asarray(rng.normal(size=(b, horizon)), jnp.float32),
                 reward=jnp.asarray(rng.normal(size=(b, horizon)), jnp.float32),
                 terminated=terminated)


def _discounted(rewards, gamma):
  """``Σ_j γ^j r_j`` over the last axis."""
  rewards = np.asarray(rewards, np.float64)
  return np.sum(rewards * gamma ** np.arange(rewards.shape[-1]), axis=-1)


# ------------------------------------------------------------------ H = 0 identities
@pytest.mark.parametrize("flags", [(False, False), (True, False), (False, True)])
def test_critic_expansion_h0_equals_sac_target(setup, flags):
  actor, _, target_critic, stats = setup
  batch = _batch(0, B, *flags)
  key = jax.random.PRNGKey(7)
  rollout = _rollout(1, batch.obs_t, 0)
  y = CE(NETS, actor, target_critic, ALPHA, stats, batch,
                                        rollout, key, GAMMA)
  expected = _sac_target(NETS, actor, target_critic, ALPHA, stats, batch.reward_t,
                         batch.terminated_t, batch.obs_t, key)
  assert y.shape == (B,)
  np.testing.assert_array_equal(y, expected)
  # DDPG: deterministic H = 0 is the 1-step DDPG target.
  y_det = CE(NETS, actor, target_critic, 0.0, stats, batch,
                                            rollout, key, GAMMA, deterministic=True)
  np.testing.assert_array_equal(
      y_det, DDPG_TARGET(NETS, actor, target_critic, stats, batch, GAMMA))


def test_ddpg_helpers_by_hand(setup):
  actor, critic, target_critic, stats = setup
  batch = _batch(3, B).replace(terminated_t=jnp.array([False, True, False, True]))
  y = DDPG_TARGET(NETS, actor, target_critic, stats, batch, GAMMA)
  v = _value(NETS, actor, target_critic, stats, batch.obs_t, 0.0, deterministic=True)
  not_term = 1.0 - np.asarray(batch.terminated_t, np.float64)
  np.testing.assert_allclose(y, np.asarray(batch.reward_t) + GAMMA * not_term * v,
                             rtol=1e-5, atol=1e-6)
  loss, logp = DDPG_ACTOR(actor, NETS, critic, stats, batch.obs_tm1)
  q = _value(NETS, actor, critic, stats, batch.obs_tm1, 0.0, deterministic=True)
  np.testing.assert_allclose(loss, -np.mean(q), rtol=1e-5)
  np.testing.assert_array_equal(logp, np.zeros(B))


def test_retrace_h0_equals_sac_target(setup):
  actor, _, target_critic, stats = setup
  batch = _batch(2, B).replace(terminated_t=jnp.array([0, 1, 0, 1], bool),
                               truncated_t=jnp.array([0, 0, 1, 1], bool))
  window = jax.tree.map(lambda x: x[:, None], batch)  # [B, 1, ...]
  key = jax.random.PRNGKey(3)
  retrace = jax.jit(expansion.retrace_target, static_argnums=0, compiler_options=FULL_OPT)
  sac_target = jax.jit(_sac_target_fn, static_argnums=0, compiler_options=FULL_OPT)
  y = retrace(NETS, actor, target_critic, ALPHA, stats, window, key, GAMMA)
  np.testing.assert_array_equal(y, sac_target(
      NETS, actor, target_critic, ALPHA, stats, batch.reward_t, batch.terminated_t,
      batch.obs_t, key))


def test_actor_expansion_h0_equals_sac_actor_loss(setup):
  actor, critic, _, stats = setup
  obs = _batch(4, B).obs_tm1
  key = jax.random.PRNGKey(5)

  def never_called(policy_fn, key):
    raise AssertionError("rollout_fn must not be called for horizon 0")

  loss_fn = functools.partial(expansion.actor_expansion_loss, nets=NETS,
                              critic_params=critic, alpha=ALPHA, obs_stats=stats,
                              rollout_fn=never_called, obs=obs, key=key, horizon=0,
                              gamma=GAMMA)
  (loss, logp), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(actor)
  sac_fn = lambda p: sac.actor_loss(p, NETS, critic, ALPHA, _norm(stats, obs), key)
  (loss_ref, logp_ref), grad_ref = jax.jit(jax.value_and_grad(sac_fn, has_aux=True))(actor)
  np.testing.assert_array_equal(loss, loss_ref)
  np.testing.assert_array_equal(logp, logp_ref)
  jax.tree.map(np.testing.assert_array_equal, grad, grad_ref)


# ------------------------------------------------------------------ critic expansion
def test_critic_expansion_deterministic_is_discounted_rewards_plus_bootstrap(setup):
  actor, _, target_critic, stats = setup
  horizon, b = H, B
  batch = _batch(5, b)
  rollout = _rollout(6, batch.obs_t, horizon, actor=actor, stats=stats)
  y = CE(NETS, actor, target_critic, 0.0, stats, batch,
                                        rollout, jax.random.PRNGKey(0), GAMMA,
                                        deterministic=True)
  rewards = np.concatenate([np.asarray(batch.reward_t)[:, None], rollout.reward], axis=1)
  boot = _value(NETS, actor, target_critic, stats, rollout.obs[:, horizon], 0.0,
                deterministic=True)
  expected = _discounted(rewards, GAMMA) + GAMMA ** (horizon + 1) * boot
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

  # Particles: the mean over K stacked rollouts (deterministic => key-independent).
  other = _rollout(7, batch.obs_t, horizon, actor=actor, stats=stats)
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), rollout, other)
  y_p = CE_PARTICLES(
      NETS, actor, target_critic, 0.0, stats, batch, stacked, jax.random.PRNGKey(1),
      GAMMA, deterministic=True)
  y_other = CE(NETS, actor, target_critic, 0.0, stats,
                                              batch, other, jax.random.PRNGKey(0), GAMMA,
                                              deterministic=True)
  np.testing.assert_allclose(y_p, 0.5 * (y + y_other), rtol=1e-5, atol=1e-5)


def test_critic_expansion_stochastic_matches_reference_closed_form(setup):
  """§7.2: y = r_0 + Σ_{j=1}^H γ^j r̂_j + Σ_{j=0}^{H−1} γ^{j+1}(V(o'_j) − Q̄(o'_j, â_j))
  + γ^{H+1} V(o'_H), with off-policy (random) rollout actions â and α > 0."""
  actor, _, target_critic, stats = setup
  horizon, b = H, B
  batch = _batch(8, b)
  rollout = _rollout(9, batch.obs_t, horizon)  # random actions
  y = CE(KF_NETS, actor, target_critic, ALPHA, stats, batch,
                                        rollout, jax.random.PRNGKey(0), GAMMA)
  v = np.stack([_value(KF_NETS, actor, target_critic, stats, rollout.obs[:, j], ALPHA)
                for j in range(horizon + 1)], axis=1)
  q = np.stack([_min_q(KF_NETS, target_critic, stats, rollout.obs[:, j],
                       rollout.action[:, j]) for j in range(horizon)], axis=1)
  rewards = np.concatenate([np.asarray(batch.reward_t)[:, None], rollout.reward], axis=1)
  expected = (_discounted(rewards, GAMMA)
              + np.sum(GAMMA ** np.arange(1, horizon + 1) * (v[:, :horizon] - q), axis=1)
              + GAMMA ** (horizon + 1) * v[:, horizon])
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lam", [1.0, 0.5])
def test_critic_expansion_direct_values_closed_form(setup, lam):
  """values="direct": v_j = Q̄(o'_j, â_{j+1}) − α log π_j for j < H (the rollout's own
  action and log-prob), a fresh value only at o'_H. With λ = 1 the critic terms cancel:
  y = r_0 + Σ_{j=1}^H γ^j (r̂_j − α log π_{j−1}) + γ^{H+1} V(o'_H). With λ < 1 the
  recursion G_j = r_j + γ(v_j − λ q_j + λ G_{j+1}) is checked by hand."""
  actor, _, target_critic, stats = setup
  horizon, b = H, B
  batch = _batch(30, b)
  rollout = _rollout(31, batch.obs_t, horizon)  # random actions and log-probs
  y = CE(KF_NETS, actor, target_critic, ALPHA, stats, batch, rollout,
         jax.random.PRNGKey(0), GAMMA, lam, values="direct")
  v_last = _value(KF_NETS, actor, target_critic, stats, rollout.obs[:, horizon], ALPHA)
  rewards = np.concatenate([np.asarray(batch.reward_t)[:, None], rollout.reward], axis=1)
  lp = np.asarray(rollout.log_prob, np.float64)
  if lam == 1.0:
    expected = (_discounted(rewards, GAMMA)
                - ALPHA * np.sum(GAMMA ** np.arange(1, horizon + 1) * lp, axis=1)
                + GAMMA ** (horizon + 1) * v_last)
  else:
    q = np.stack([_min_q(KF_NETS, target_critic, stats, rollout.obs[:, j],
                         rollout.action[:, j]) for j in range(horizon)], axis=1)
    g = rewards[:, horizon] + GAMMA * np.asarray(v_last)
    for j in range(horizon - 1, -1, -1):
      v_j = q[:, j] - ALPHA * lp[:, j]
      g = rewards[:, j] + GAMMA * (v_j - lam * q[:, j] + lam * g)
    expected = g
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  # H = 0 is the SAC target for either estimator.
  empty = _rollout(32, batch.obs_t, 0)
  key = jax.random.PRNGKey(3)
  for values in ("direct", "control_variate"):
    y0 = CE(NETS, actor, target_critic, ALPHA, stats, batch, empty, key, GAMMA, lam,
            values=values)
    np.testing.assert_array_equal(
        y0, _sac_target(NETS, actor, target_critic, ALPHA, stats, batch.reward_t,
                        batch.terminated_t, batch.obs_t, key))


def test_critic_expansion_direct_truncated_and_terminated(setup):
  """Truncated real transition: c_0 = 0, so y = r_0 + γ(Q̄(o_1, â_1) − α log π_0) (the
  rollout's first action, no later term). Terminated: y = r_0."""
  actor, _, target_critic, stats = setup
  batch = _batch(33, B, truncated=True)
  rollout = _rollout(34, batch.obs_t, H)
  rollout = rollout.replace(reward=rollout.reward + 100.0)
  fn = lambda bt: CE(KF_NETS, actor, target_critic, ALPHA, stats, bt, rollout,
                     jax.random.PRNGKey(0), GAMMA, values="direct")
  q0 = _min_q(KF_NETS, target_critic, stats, rollout.obs[:, 0], rollout.action[:, 0])
  expected = batch.reward_t + GAMMA * (q0 - ALPHA * rollout.log_prob[:, 0])
  np.testing.assert_allclose(fn(batch), expected, rtol=1e-5, atol=1e-5)
  terminated = batch.replace(terminated_t=jnp.ones(B, bool), truncated_t=jnp.zeros(B, bool))
  np.testing.assert_array_equal(fn(terminated), batch.reward_t)


def test_imagined_termination_zeroes_later_rewards_and_bootstrap(setup):
  actor, _, target_critic, stats = setup
  horizon, b, k = H, B, 2  # window transition k = rollout transition k − 1 terminates
  batch = _batch(10, b)
  terminated = jnp.zeros((b, horizon), bool).at[:, k - 1].set(True)
  rollout = _rollout(11, batch.obs_t, horizon, actor=actor, stats=stats,
                     terminated=terminated)
  rollout = rollout.replace(reward=rollout.reward.at[:, k:].set(100.0))
  y = CE(NETS, actor, target_critic, 0.0, stats, batch,
                                        rollout, jax.random.PRNGKey(0), GAMMA,
                                        deterministic=True)
  rewards = np.concatenate([np.asarray(batch.reward_t)[:, None], rollout.reward], axis=1)
  np.testing.assert_allclose(y, _discounted(rewards[:, :k + 1], GAMMA), rtol=1e-5,
                             atol=1e-5)

  # Stochastic policy: nothing after the terminating transition affects the target.
  key = jax.random.PRNGKey(12)
  target = functools.partial(CE, NETS, actor, target_critic,
                             ALPHA, stats, batch, key=key, gamma=GAMMA)
  y_s = target(rollout=rollout)
  junk = _rollout(13, batch.obs_t, horizon)
  perturbed = rollout.replace(
      obs=rollout.obs.at[:, k:].set(junk.obs[:, k:] * 7.0),
      action=rollout.action.at[:, k:].set(-rollout.action[:, k:]),
      reward=rollout.reward.at[:, k:].set(-55.0),
      terminated=rollout.terminated.at[:, k:].set(True))
  np.testing.assert_allclose(target(rollout=perturbed), y_s, rtol=1e-6)
  changed = rollout.replace(reward=rollout.reward.at[:, k - 1].add(1.0))
  np.testing.assert_allclose(target(rollout=changed), y_s + GAMMA ** k, rtol=1e-5)


def test_terminated_real_transition_gives_reward_only(setup):
  actor, _, target_critic, stats = setup
  batch = _batch(14, B, terminated=True)
  rollout = _rollout(15, batch.obs_t, H)
  rollout = rollout.replace(reward=rollout.reward + 100.0)
  y = CE(NETS, actor, target_critic, ALPHA, stats, batch,
                                        rollout, jax.random.PRNGKey(0), GAMMA)
  np.testing.assert_array_equal(y, batch.reward_t)


def test_truncated_real_transition_collapses_to_one_step_target(setup):
  actor, _, target_critic, stats = setup
  batch = _batch(16, B, truncated=True)
  rollout = _rollout(17, batch.obs_t, H)
  key = jax.random.PRNGKey(4)
  fn = lambda bt, ro, k: CE(NETS, actor, target_critic, ALPHA, stats, bt, ro, k, GAMMA)
  y = fn(batch, rollout, key)
  v = SOFT_VALUE(NETS, actor, target_critic, ALPHA, _norm(stats, batch.obs_t), key)
  np.testing.assert_allclose(
      y, sac.sac_target(batch.reward_t, batch.terminated_t, v, GAMMA), rtol=1e-6,
      atol=1e-6)
  # Without truncation the imagined steps do enter.
  y_full = fn(batch.replace(truncated_t=jnp.zeros(B, bool)), rollout, key)
  assert np.all(np.abs(np.asarray(y_full) - np.asarray(y)) > 1e-4)


def test_tdk_targets_layout(setup):
  actor, _, target_critic, stats = setup
  horizon, b = H, B
  batch = _batch(18, b)
  terminated = jnp.zeros((b, horizon), bool).at[1, 1].set(True)
  rollout = _rollout(19, batch.obs_t, horizon, actor=actor, stats=stats,
                     terminated=terminated)
  key = jax.random.PRNGKey(0)
  out = TDK(NETS, actor, target_critic, 0.0, stats, batch, rollout, key,
                              GAMMA, deterministic=True)
  assert out.obs.shape == (b, horizon + 1, OBS) and out.target.shape == (b, horizon + 1)
  np.testing.assert_array_equal(out.obs[:, 0], batch.obs_tm1)
  np.testing.assert_array_equal(out.obs[:, 1:], rollout.obs[:, :horizon])
  np.testing.assert_array_equal(out.action[:, 1:], rollout.action)
  np.testing.assert_array_equal(
      out.target[:, 0], CE(
          NETS, actor, target_critic, 0.0, stats, batch, rollout, key, GAMMA,
          deterministic=True))
  # Row 1 terminates at window transition 2: pairs 3.. are masked.
  np.testing.assert_array_equal(out.mask[1], [1, 1, 1, 0])
  np.testing.assert_array_equal(out.mask[0], [1, 1, 1, 1])
  # Row 0 (no termination, on-policy, deterministic): G_j is the (H−j)-step return.
  rewards = np.concatenate([np.asarray(batch.reward_t)[:, None], rollout.reward], axis=1)
  boot = _value(NETS, actor, target_critic, stats, rollout.obs[:, horizon], 0.0,
                deterministic=True)
  for j in range(horizon + 1):
    expected = (_discounted(rewards[0, j:], GAMMA)
                + GAMMA ** (horizon + 1 - j) * boot[0])
    np.testing.assert_allclose(out.target[0, j], expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ Retrace
def _chain_window(seed, actor, stats, horizon, b):
  """On-policy window of one episode: o_{j+1} = obs_t[:, j] = obs_tm1[:, j+1], actions
  ``tanh(loc(o_j))`` for ``j ≥ 1`` and behaviour log-probs equal to π's."""
  rng = np.random.default_rng(seed)
  chain = jnp.asarray(2.0 + 3.0 * rng.normal(size=(b, horizon + 2, OBS)), jnp.float32)
  obs_tm1, obs_t = chain[:, :-1], chain[:, 1:]
  action, logp = _policy(KF_NETS, actor, stats, obs_tm1)
  action = action.at[:, 0].set(jnp.tanh(jnp.asarray(rng.normal(size=(b, ACT)))))
  return Transition(
      obs_tm1=obs_tm1, action_tm1=action, logprob_tm1=logp,
      reward_t=jnp.asarray(rng.normal(size=(b, horizon + 1)), jnp.float32),
      terminated_t=jnp.zeros((b, horizon + 1), bool),
      truncated_t=jnp.zeros((b, horizon + 1), bool), obs_t=obs_t,
      sim_tm1=jnp.zeros((b, horizon + 1)), sim_t=jnp.zeros((b, horizon + 1)))


@pytest.mark.parametrize("deterministic", [False, True])
def test_retrace_on_policy_is_n_step_return(setup, deterministic):
  actor, _, target_critic, stats = setup
  horizon, b = H, B
  window = _chain_window(20, actor, stats, horizon, b)
  nets = NETS if deterministic else KF_NETS  # KF: stochastic path, c = 1, v = q (α = 0)
  y = RETRACE(nets, actor, target_critic, 0.0, stats, window,
                               jax.random.PRNGKey(0), GAMMA, deterministic=deterministic)
  boot = _value(NETS, actor, target_critic, stats, window.obs_t[:, horizon], 0.0,
                deterministic=True)
  expected = _discounted(window.reward_t, GAMMA) + GAMMA ** (horizon + 1) * boot
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("log_ratio, c", [(np.log(2.0), 0.5), (-np.log(2.0), 1.0)])
def test_retrace_truncated_importance_weight(setup, log_ratio, c):
  """H = 1, v = q: G_0 = r_0 + γ((1 − c)·v_0 + c·(r_1 + γ v_1)), c = min(1, π/μ)."""
  actor, _, target_critic, stats = setup
  window = _chain_window(21, actor, stats, 1, B)
  window = window.replace(logprob_tm1=window.logprob_tm1 + log_ratio)  # μ = π·e^{ratio}
  y = RETRACE(KF_NETS, actor, target_critic, 0.0, stats, window,
                               jax.random.PRNGKey(0), GAMMA)
  v = [_value(NETS, actor, target_critic, stats, window.obs_t[:, j], 0.0,
              deterministic=True) for j in range(2)]
  r = np.asarray(window.reward_t)
  expected = r[:, 0] + GAMMA * ((1 - c) * v[0] + c * (r[:, 1] + GAMMA * v[1]))
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("boundary", ["truncated", "terminated"])
def test_retrace_window_crossing_episode_boundary(setup, boundary):
  """Transitions 0, 1 end episode A at 1; 2, 3 start episode B from a reset state."""
  actor, _, target_critic, stats = setup
  horizon, b = H, B
  window = _chain_window(22, actor, stats, horizon, b)
  rng = np.random.default_rng(23)
  reset_obs = jnp.asarray(2.0 + 3.0 * rng.normal(size=(b, OBS)), jnp.float32)
  window = window.replace(
      obs_tm1=window.obs_tm1.at[:, 2].set(reset_obs),
      action_tm1=window.action_tm1.at[:, 2].set(
          _mode(actor, stats, reset_obs)),
      reward_t=window.reward_t.at[:, 2:].set(50.0))
  window = window.replace(**{f"{boundary}_t": getattr(window, f"{boundary}_t").at[:, 1]
                             .set(True)})
  y = RETRACE(KF_NETS, actor, target_critic, 0.0, stats, window,
                               jax.random.PRNGKey(0), GAMMA)
  r = np.asarray(window.reward_t)
  expected = r[:, 0] + GAMMA * r[:, 1]
  if boundary == "truncated":  # still bootstraps from the true final observation
    expected = expected + GAMMA ** 2 * _value(NETS, actor, target_critic, stats,
                                              window.obs_t[:, 1], 0.0, deterministic=True)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)

  # Real stochastic policy: the post-reset transitions do not enter at all.
  target = functools.partial(RETRACE, NETS, actor, target_critic, ALPHA,
                             stats, key=jax.random.PRNGKey(1), gamma=GAMMA)
  y_s = target(window=window)
  after = jax.tree.map(lambda x: x[:, 2:], window)
  junk = jax.tree.map(lambda x: x * 3.0 + 1.0 if x.dtype != bool else ~x, after)
  junk = junk.replace(action_tm1=jnp.tanh(junk.action_tm1))
  perturbed = jax.tree.map(lambda w, j: w.at[:, 2:].set(j), window, junk)
  np.testing.assert_allclose(target(window=perturbed), y_s, rtol=1e-6)


# ------------------------------------------------------------------ actor expansion
def _linear_rollout_fn(start, horizon):
  """Differentiable toy model: o' = o + 0.1·a (a broadcast over obs), r = −|o'|² + a."""

  def rollout_fn(policy_fn, key):
    obs, actions, log_probs, rewards = [start], [], [], []
    for j in range(horizon):
      a, lp = policy_fn(obs[-1], jax.random.fold_in(key, j))
      nxt = obs[-1] + 0.1 * a
      obs.append(nxt)
      actions.append(a)
      log_probs.append(lp)
      rewards.append(-0.1 * jnp.sum(jnp.square(nxt), -1) + a[:, 0])
    return Rollout(obs=jnp.stack(obs, 1), action=jnp.stack(actions, 1),
                   log_prob=jnp.stack(log_probs, 1), reward=jnp.stack(rewards, 1),
                   terminated=jnp.zeros((start.shape[0], horizon), bool))

  return rollout_fn


def _actor_grad(nets, actor, critic, stats, obs, horizon, deterministic=False):
  def fn(p, critic, stats, obs, key):
    return expansion.actor_expansion_loss(
        p, nets, critic, ALPHA, stats, _linear_rollout_fn(obs, horizon), obs, key,
        horizon, GAMMA, deterministic=deterministic)
  return jax.jit(jax.value_and_grad(fn, has_aux=True))(
      actor, critic, stats, obs, jax.random.PRNGKey(9))


def test_actor_expansion_gradient_flows_through_model(setup):
  actor, critic, _, stats = setup
  obs = _batch(24, B).obs_tm1
  (loss0, _), g0 = _actor_grad(NETS, actor, critic, stats, obs, 0)
  (loss3, logp3), g3 = _actor_grad(NETS, actor, critic, stats, obs, H)
  assert np.isfinite(loss3) and logp3.shape == (B,)
  flat0, flat3 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g0, g3))
  assert np.all(np.isfinite(flat3)) and np.linalg.norm(flat3) > 1e-6
  assert np.max(np.abs(flat3 - flat0)) > 1e-4
  (loss_d, logp_d), g_d = _actor_grad(NETS, actor, critic, stats, obs, H, deterministic=True)
  flat_d = np.concatenate([np.ravel(x) for x in jax.tree.leaves(g_d)])
  assert np.isfinite(loss_d) and np.all(np.isfinite(flat_d)) and np.linalg.norm(flat_d) > 0
  np.testing.assert_array_equal(logp_d, np.zeros(B))


def test_actor_expansion_value_matches_closed_form(setup):
  """Key-free policy, c = 1: J = Σ_{j<H} γ^j r_j − α log π_0 + Σ_{j=1}^{H−1} γ^j (V(o_j)
  − Q(o_j, a_j)) + γ^H V(o_H), with V − Q = −α log π(a_j|o_j) since a_j is the mode."""
  actor, critic, _, stats = setup
  horizon, obs = H, _batch(25, B).obs_tm1
  rollout_fn = _linear_rollout_fn(obs, horizon)
  loss, logp0 = jax.jit(lambda p, k: expansion.actor_expansion_loss(
      p, KF_NETS, critic, ALPHA, stats, rollout_fn, obs, k, horizon, GAMMA))(
          actor, jax.random.PRNGKey(9))
  ro = rollout_fn(expansion.make_policy_fn(KF_NETS, actor, stats), jax.random.PRNGKey(0))
  lp = np.asarray(ro.log_prob)
  j_val = (_discounted(ro.reward, GAMMA) - ALPHA * lp[:, 0]
           - ALPHA * np.sum(GAMMA ** np.arange(1, horizon) * lp[:, 1:], axis=1)
           + GAMMA ** horizon * _value(KF_NETS, actor, critic, stats, ro.obs[:, horizon],
                                       ALPHA))
  np.testing.assert_allclose(loss, -np.mean(j_val) / (horizon + 1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(logp0, lp[:, 0], rtol=1e-5, atol=1e-6)
