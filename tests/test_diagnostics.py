"""Tests of mvelab.diagnostics against systems whose soft Q^π is known in closed form.

System: ``x' = A·x + B·u``, reward ``r = −x²`` (of the pre-step state), no termination, and
a fixed linear-Gaussian policy ``u = K·x + σ·ε`` (unsquashed, so its log-density and
entropy are exact). Then ``V(x) = −P·x² + C`` and

  Q(x, u) = −x² + γ·(−P·(A·x + B·u)² + C),
  P = 1 / (1 − γ(A + B·K)²),  C = (α·Ĥ − γ·P·B²·σ²) / (1 − γ),  Ĥ = ½·log(2πe·σ²).
"""

import math
import types

import jax
import jax.numpy as jnp
import numpy as np

from mvelab.config import CE_VALUES
from mvelab.core import normalization
from mvelab.diagnostics import ground_truth, targets
from mvelab.envs.base import Env
from mvelab.models.oracle import OracleModel
from mvelab.replay import Transition

A, B, K_GAIN, SIGMA, GAMMA, ALPHA = 0.9, 0.5, -0.8, 0.4, 0.9, 0.3
P = 1.0 / (1.0 - GAMMA * (A + B * K_GAIN) ** 2)
ENTROPY = 0.5 * math.log(2 * math.pi * math.e * SIGMA ** 2)
C = (ALPHA * ENTROPY - GAMMA * P * B ** 2 * SIGMA ** 2) / (1.0 - GAMMA)


def true_q(x, u):
  return -x ** 2 + GAMMA * (-P * (A * x + B * u) ** 2 + C)


class LinearEnv(Env):
  name, obs_size, action_size, episode_length, action_repeat, backend = (
      "linear", 1, 1, 1000, 1, "jax")

  def init_sim(self, key):
    return jax.random.uniform(key, (1,), jnp.float32, -2.0, 2.0)

  def step_sim(self, sim, action):
    return A * sim + B * action, -jnp.sum(sim ** 2), jnp.zeros((), bool)

  def observe(self, sim):
    return sim

  def termination_fn(self, obs, action, next_obs):
    return jnp.zeros((), bool)


class LinearGaussianNets:
  """Duck-typed ``SACNets``: policy ``K·x + σ·ε``, twin critic both equal to the true Q."""

  stable_logdet = True

  def sample(self, params, obs, key):
    eps = jax.random.normal(key, obs.shape, jnp.float32)
    log_prob = -0.5 * eps[:, 0] ** 2 - math.log(SIGMA) - 0.5 * math.log(2 * math.pi)
    return K_GAIN * obs + SIGMA * eps, log_prob

  def mode(self, params, obs):
    return K_GAIN * obs

  def dist(self, params, obs):
    return K_GAIN * obs, jnp.full_like(obs, SIGMA)

  def q(self, params, obs, action):
    q = true_q(obs[:, 0], action[:, 0])
    return jnp.stack([q, q], axis=-1)


ENV = LinearEnv()
NETS = LinearGaussianNets()
STATS = normalization.init(1)  # identity normalisation (|x| stays far below the clip)
P_STUB = types.SimpleNamespace(nets=NETS, deterministic=False, env=ENV,
                               cfg=types.SimpleNamespace(lam=1.0, alpha_param="log_alpha"))
STATE_STUB = types.SimpleNamespace(
    actor_params={}, target_actor_params={}, critic_params={}, target_critic_params={},
    alpha_param=jnp.float32(math.log(ALPHA)), obs_stats=STATS,
    hyper=types.SimpleNamespace(gamma=jnp.float32(GAMMA)))


def policy_fn(obs, key):
  return NETS.sample(None, obs, key)


def z_scores(estimate, truth, se):
  return (np.asarray(estimate) - np.asarray(truth)) / np.asarray(se)


def test_ground_truth_matches_closed_form_soft_q():
  n, m = 16, 400
  x0 = jnp.linspace(-2.0, 2.0, n)[:, None]
  u0 = jnp.linspace(1.0, -1.0, n)[:, None]
  mean, se = jax.jit(ground_truth.soft_q, static_argnums=(0, 1, 5, 6))(
      ENV, policy_fn, x0, u0, jax.random.PRNGKey(0), m, 200, GAMMA, ALPHA)
  truth = true_q(np.asarray(x0[:, 0]), np.asarray(u0[:, 0]))
  z = z_scores(mean, truth, se)
  assert np.all(np.isfinite(z))
  assert np.max(np.abs(z)) < 4.5, z
  assert 0.4 < np.sqrt(np.mean(z ** 2)) < 1.8, z
  # The entropy bonus matters: without it the truth would be off by many standard errors.
  no_entropy = truth - GAMMA * ALPHA * ENTROPY / (1 - GAMMA)
  assert np.sqrt(np.mean(z_scores(mean, no_entropy, se) ** 2)) > 10


def _first_transitions(n, key):
  """``n`` real transitions from random states and actions of the linear system."""
  k_x, k_u = jax.random.split(key)
  x = jax.random.uniform(k_x, (n, 1), jnp.float32, -2.0, 2.0)
  u = jax.random.uniform(k_u, (n, 1), jnp.float32, -1.0, 1.0)
  sim_t, obs_t, reward, term = jax.vmap(ENV.simulate)(x, u)
  zeros = jnp.zeros((n,), jnp.float32)
  return Transition(obs_tm1=x, action_tm1=u, logprob_tm1=zeros, reward_t=reward,
                    terminated_t=term, truncated_t=jnp.zeros_like(term), obs_t=obs_t,
                    sim_tm1=x, sim_t=sim_t)


def _windows(n, width, key):
  """``n`` windows of ``width`` consecutive behaviour transitions (uniform actions)."""
  k_x, k_u = jax.random.split(key)
  x = jax.random.uniform(k_x, (n, 1), jnp.float32, -2.0, 2.0)
  u = jax.random.uniform(k_u, (width, n, 1), jnp.float32, -0.9, 0.9)

  def step(x, u):
    sim_t, obs_t, reward, term = jax.vmap(ENV.simulate)(x, u)
    zeros = jnp.zeros((n,), jnp.float32)
    t = Transition(obs_tm1=x, action_tm1=u, logprob_tm1=zeros + math.log(1 / 1.8),
                   reward_t=reward, terminated_t=term, truncated_t=jnp.zeros_like(term),
                   obs_t=obs_t, sim_tm1=x, sim_t=sim_t)
    return sim_t, t

  _, seq = jax.lax.scan(step, x, u)
  return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), seq)


HORIZONS = (0, 1, 3, 10)


def test_oracle_targets_unbiased_with_the_true_critic():
  n, num_keys = 12, 512
  first = _first_transitions(n, jax.random.PRNGKey(1))
  keys = jax.random.split(jax.random.PRNGKey(2), num_keys)
  run = jax.jit(lambda f, k: targets.expansion_targets(
      P_STUB, STATE_STUB, OracleModel(ENV), (), f, HORIZONS, k)[0])
  ys = run(first, keys)
  truth = true_q(np.asarray(first.obs_tm1[:, 0]), np.asarray(first.action_tm1[:, 0]))
  for (values, h), y in ys.items():
    mean, noise = targets.mean_and_noise(y)
    z = z_scores(mean, truth, np.asarray(noise) / math.sqrt(num_keys) + 1e-6)
    assert np.max(np.abs(z)) < 4.5, (values, h, z)
    if h > 0:
      assert np.asarray(noise).min() > 0  # a stochastic target, not a constant
  assert {v for v, _ in ys} == set(CE_VALUES)

  windows = _windows(n, max(HORIZONS) + 1, jax.random.PRNGKey(3))
  ys = jax.jit(lambda w, k: targets.retrace_targets(P_STUB, STATE_STUB, w, HORIZONS, k))(
      windows, keys)
  truth = true_q(np.asarray(windows.obs_tm1[:, 0, 0]), np.asarray(windows.action_tm1[:, 0, 0]))
  for h, y in ys.items():
    mean, noise = targets.mean_and_noise(y)
    z = z_scores(mean, truth, np.asarray(noise) / math.sqrt(num_keys) + 1e-6)
    assert np.max(np.abs(z)) < 4.5, ("retrace", h, z)


def test_a_wrong_critic_makes_the_targets_biased():
  """The unbiasedness check can fail: a critic off by +5 biases every horizon's target."""

  class Shifted(LinearGaussianNets):
    def q(self, params, obs, action):
      return super().q(params, obs, action) + 5.0

  p = types.SimpleNamespace(**{**vars(P_STUB), "nets": Shifted()})
  first = _first_transitions(12, jax.random.PRNGKey(1))
  ys = jax.jit(lambda f, k: targets.expansion_targets(p, STATE_STUB, OracleModel(ENV), (),
                                                      f, (1,), k)[0])(
      first, jax.random.split(jax.random.PRNGKey(2), 64))
  truth = true_q(np.asarray(first.obs_tm1[:, 0]), np.asarray(first.action_tm1[:, 0]))
  for y in ys.values():
    assert np.mean(np.asarray(y).mean(axis=0) - truth) > 2.0


def test_compounding_error_counts_live_steps_from_valid_starts_only():
  from mvelab.diagnostics.model_error import compounding_error
  from mvelab.models.base import Rollout
  # 3 starts x 2 steps, 1-dim obs; truth 0 everywhere. Start 1 terminates at step 1 (its
  # step 2 is not counted); start 2 is a terminal state (excluded); std 2 halves errors.
  truth = Rollout(obs=jnp.zeros((3, 3, 1)), action=jnp.zeros((3, 2, 1)),
                  log_prob=jnp.zeros((3, 2)), reward=jnp.zeros((3, 2)),
                  terminated=jnp.array([[False, False], [True, False], [False, False]]))
  pred_obs = jnp.array([[0, 2, 4], [0, 6, 100], [0, 100, 100]], jnp.float32)[..., None]
  pred_reward = jnp.array([[1.0, 2.0], [3.0, 100.0], [100.0, 100.0]])
  obs, reward = compounding_error(pred_obs, pred_reward, truth, jnp.array([2.0]),
                                  start_valid=jnp.array([True, True, False]))
  np.testing.assert_allclose(obs, [np.sqrt((1 + 9) / 2), 2.0], rtol=1e-6)
  np.testing.assert_allclose(reward, [np.sqrt((1 + 9) / 2), 2.0], rtol=1e-6)
  everything, _ = compounding_error(pred_obs, pred_reward, truth, jnp.array([2.0]))
  assert everything[0] > 20  # without the mask the terminal start dominates
