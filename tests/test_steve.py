"""STEVE (``mvelab.agents.steve``): the SAC target at H = 0, inverse-variance weights."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np

from mvelab import envs, models
from mvelab.agents import sac, steve
from mvelab.agents.expansion import make_policy_fn
from mvelab.core import normalization
from mvelab.models.base import Rollout

B, O, GAMMA, ALPHA = 16, 3, 0.99, 0.2
NETS = sac.SACNets.make(O, 1, (16, 16), 0.0, "log_std")
ACTOR, CRITIC = NETS.init(jax.random.PRNGKey(0), O, 1)
STATS = normalization.update(normalization.init(O), jax.random.normal(
    jax.random.PRNGKey(1), (64, O)))


def _batch(truncated=False, key=2):
  k1, k2 = jax.random.split(jax.random.PRNGKey(key))
  return SimpleNamespace(reward_t=jax.random.normal(k1, (B,)),
                         terminated_t=jnp.zeros((B,), bool).at[0].set(True),
                         truncated_t=jnp.full((B,), truncated),
                         obs_t=jax.random.normal(k2, (B, O)))


def _rollouts(batch, rewards):
  """``R`` rollouts of ``H`` steps from ``batch.obs_t`` with given rewards ``[R, B, H]``."""
  r, _, h = rewards.shape
  obs = jnp.broadcast_to(batch.obs_t[None, :, None], (r, B, h + 1, O))
  obs = obs + 0.1 * jnp.arange(h + 1)[None, None, :, None]
  return Rollout(obs=obs, action=jnp.zeros((r, B, h, 1)), log_prob=jnp.full((r, B, h), -0.5),
                 reward=rewards, terminated=jnp.zeros((r, B, h), bool))


def test_horizon_zero_is_the_sac_target():
  batch, key = _batch(), jax.random.PRNGKey(3)
  out = steve.steve_target(NETS, ACTOR, CRITIC, ALPHA, STATS, batch,
                           _rollouts(batch, jnp.zeros((2, B, 0))), key, GAMMA)
  v = sac.soft_value(NETS, ACTOR, CRITIC, ALPHA, normalization.normalize(STATS, batch.obs_t),
                     key)
  want = sac.sac_target(batch.reward_t, batch.terminated_t, v, GAMMA)
  np.testing.assert_allclose(out.target, want, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(out.weights, 1.0)


def test_candidates_are_the_soft_expansion_cut_at_each_horizon():
  batch, key = _batch(), jax.random.PRNGKey(4)
  rewards = jax.random.normal(jax.random.PRNGKey(5), (2, B, 3))
  rolls = _rollouts(batch, rewards)
  t = steve.candidate_targets(NETS, ACTOR, CRITIC, ALPHA, STATS, batch, rolls, key, GAMMA)
  assert t.shape == (2, B, 4, 2)
  # Same rollouts with zero rewards: the difference is the rewards' part alone,
  # sum_{j=1..i} gamma^j r_j (0 after the real transition terminated).
  zero = steve.candidate_targets(NETS, ACTOR, CRITIC, ALPHA, STATS, batch,
                                 rolls.replace(reward=jnp.zeros_like(rewards)), key, GAMMA)
  alive = 1.0 - batch.terminated_t.astype(jnp.float32)
  want = jnp.cumsum(rewards * GAMMA ** jnp.arange(1, 4), axis=-1) * alive[None, :, None]
  for c in range(2):
    np.testing.assert_allclose((t - zero)[:, :, 1:, c], want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose((t - zero)[:, :, 0], 0.0, atol=1e-6)
  # the entropy bonus of the imagined actions enters from horizon 1 on
  no_entropy = steve.candidate_targets(NETS, ACTOR, CRITIC, 0.0, STATS, batch, rolls, key,
                                       GAMMA)
  assert not np.allclose(t[:, :, 1:], no_entropy[:, :, 1:])


def test_weights_sum_to_one_and_favour_low_variance():
  w = steve.inverse_variance_weights(jnp.array([[1.0, 0.01, 100.0]]), jnp.ones((1, 3), bool))
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  assert int(jnp.argmax(w)) == 1 and float(w[0, 2]) < 1e-3
  # Two rollouts that disagree wildly from step 2 on: horizons 2 and 3 get ~no weight.
  batch = _batch()
  rewards = jnp.zeros((2, B, 3)).at[0, :, 1:].set(100.0).at[1, :, 1:].set(-100.0)
  out = steve.steve_target(NETS, ACTOR, CRITIC, ALPHA, STATS, batch,
                           _rollouts(batch, rewards), jax.random.PRNGKey(6), GAMMA)
  np.testing.assert_allclose(out.weights.sum(-1), 1.0, rtol=1e-5)
  live = ~np.asarray(batch.terminated_t)
  assert np.all(out.weights[live][:, 2:] < 1e-3)
  assert np.all(out.variances[live][:, 2:] > 1e3)


def test_zero_variance_model_and_identical_critics_give_finite_weights():
  same = dict(CRITIC, MLP_1=CRITIC["MLP_0"])
  env = envs.make("pendulum")
  oracle = models.make_model("oracle", env)
  sim = jax.vmap(env.init_sim)(jax.random.split(jax.random.PRNGKey(7), B))
  batch = SimpleNamespace(reward_t=jnp.zeros((B,)), terminated_t=jnp.zeros((B,), bool),
                          truncated_t=jnp.zeros((B,), bool), obs_t=jax.vmap(env.observe)(sim))
  det = make_policy_fn(NETS, ACTOR, STATS, deterministic=True)
  rolls = oracle.sample_rollouts((), STATS, batch.obs_t, sim, det, jax.random.PRNGKey(8), 3, 2)
  out = steve.steve_target(NETS, ACTOR, same, ALPHA, STATS, batch, rolls,
                           jax.random.PRNGKey(9), GAMMA, deterministic=True)
  assert np.all(np.isfinite(out.weights)) and np.all(np.isfinite(out.target))
  np.testing.assert_allclose(out.variances, 0.0, atol=1e-6)
  np.testing.assert_allclose(out.weights, 0.25, rtol=1e-4)


def test_truncated_real_transition_keeps_only_horizon_zero():
  batch = _batch(truncated=True)
  out = steve.steve_target(NETS, ACTOR, CRITIC, ALPHA, STATS, batch,
                           _rollouts(batch, jnp.ones((2, B, 2))), jax.random.PRNGKey(10),
                           GAMMA)
  np.testing.assert_allclose(out.weights[:, 0], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(out.weights[:, 1:], 0.0)


def test_ensemble_rollout_e_uses_member_e():
  env = envs.make("pendulum")
  model = models.make_model("learned", env, hidden_sizes=(8,), num_members=3)
  state = model.init(jax.random.PRNGKey(11))
  params = dict(state.params, min_logvar=jnp.full((O + 1,), -40.0),
                max_logvar=jnp.full((O + 1,), -39.0))  # (almost) no sampling noise
  state = state.replace(params=params)
  obs = jax.random.normal(jax.random.PRNGKey(12), (B, O))
  det = make_policy_fn(NETS, ACTOR, STATS, deterministic=True)
  rolls = model.sample_rollouts(state, STATS, obs, None, det, jax.random.PRNGKey(13), 1, 99)
  assert rolls.obs.shape == (3, B, 2, O)
  action = det(obs, None)[0]
  mean, _ = model.predict(state, STATS, obs, action)  # [E, B, D]
  np.testing.assert_allclose(rolls.obs[:, :, 1], obs[None] + mean[..., :O], atol=1e-5)
  np.testing.assert_allclose(rolls.reward[:, :, 0], mean[..., O], atol=1e-5)
  assert float(jnp.abs(mean[0] - mean[1]).max()) > 1e-3  # members really differ
