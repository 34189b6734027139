"""Tests of the dynamics models: oracle (true simulator) and learned ensemble."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.core import normalization
from mvelab.envs import make as make_env
from mvelab.errors import ConfigError
from mvelab.models import (DynamicsModel, EnsembleModel, EnsembleState, OracleModel,
                           Rollout, make_model, masked_rollout)
from mvelab.replay import Transition

B = 8
H = 5


def linear_policy(w):
  """Deterministic ``policy_fn``: ``a = tanh(o @ w)``, log-prob 0."""

  def policy_fn(obs, key):
    del key
    return jnp.tanh(obs @ w), jnp.zeros(obs.shape[:1], jnp.float32)

  return policy_fn


def implements_protocol(model) -> bool:
  """Has every attribute of ``DynamicsModel`` (the protocol is not runtime-checkable)."""
  names = ("name", "needs_sim", "init", "rollout", "update")
  return all(hasattr(model, n) for n in names) and all(
      hasattr(DynamicsModel, n) for n in names[2:])


def check_frozen(ro: Rollout):
  """Checks the freezing semantics of a rollout (numpy arrays)."""
  term = np.asarray(ro.terminated)
  reward = np.asarray(ro.reward)
  obs = np.asarray(ro.obs)
  for b in range(term.shape[0]):
    hits = np.flatnonzero(term[b])
    if hits.size == 0:
      continue
    first = hits[0]
    assert term[b, first:].all()
    np.testing.assert_array_equal(reward[b, first + 1:], 0.0)
    for j in range(first + 2, obs.shape[1]):
      np.testing.assert_array_equal(obs[b, j], obs[b, first + 1])


# ------------------------------------------------------------- masked rollout
def test_masked_rollout_never_leaks_post_termination_nan():
  """A model that is NaN one step past its terminal states: values and gradients finite."""

  def transition(state, obs, action, key):
    del obs, key
    nxt = state + action  # [B, 1]
    reward = jnp.sqrt(1.45 - nxt[:, 0])  # NaN (and NaN gradient) beyond 1.45
    return nxt, nxt, reward, nxt[:, 0] > 1.0

  start = jnp.array([[0.0], [0.5], [-3.0], [0.9]], jnp.float32)

  def loss(scale):
    policy = lambda o, k: (scale * jnp.ones_like(o), jnp.zeros(o.shape[:1]))
    ro = masked_rollout(transition, start, start, policy, jax.random.PRNGKey(0), 6)
    return jnp.sum(ro.reward) + jnp.sum(ro.obs), ro

  (value, ro), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(jnp.float32(0.3))
  # Rows 0, 1, 3 terminate (at 1.2, 1.1, 1.2), row 2 never does.
  np.testing.assert_array_equal(np.asarray(ro.terminated).any(axis=1),
                                [True, True, False, True])
  check_frozen(ro)
  assert np.isfinite(value) and np.isfinite(g) and g != 0
  for leaf in jax.tree.leaves(ro):
    assert np.isfinite(np.asarray(leaf, np.float32)).all()


# --------------------------------------------------------------------- oracle
@pytest.fixture(scope="module")
def pendulum():
  return make_env("pendulum")


@pytest.fixture(scope="module")
def pendulum_rollout(pendulum):
  model = OracleModel(pendulum)

  @functools.partial(jax.jit, static_argnums=4)
  def run(w, obs, sim, key, horizon):
    return model.rollout(model.init(key), None, obs, sim, linear_policy(w), key, horizon)

  return run


def test_protocol_and_update_noop(pendulum):
  model = OracleModel(pendulum)
  assert implements_protocol(model)
  assert model.name == "oracle" and model.needs_sim
  state = model.init(jax.random.PRNGKey(0))
  assert jax.tree.leaves(state) == []
  assert model.update(state, None, None, jax.random.PRNGKey(0)) == (state, {})


def test_oracle_matches_env_trajectory(pendulum, pendulum_rollout):
  sims = jax.vmap(pendulum.init_sim)(jax.random.split(jax.random.PRNGKey(0), B))
  obs = jax.vmap(pendulum.observe)(sims)
  w = jnp.array([[0.5], [-1.0], [0.3]], jnp.float32)
  ro = pendulum_rollout(w, obs, sims, jax.random.PRNGKey(1), H)
  assert ro.obs.shape == (B, H + 1, 3) and ro.action.shape == (B, H, 1)
  assert ro.reward.shape == ro.log_prob.shape == ro.terminated.shape == (B, H)
  assert ro.terminated.dtype == jnp.bool_ and ro.reward.dtype == jnp.float32

  simulate = jax.jit(jax.vmap(pendulum.simulate))
  sim, o = sims, obs
  np.testing.assert_array_equal(ro.obs[:, 0], obs)
  for j in range(H):
    a = jnp.tanh(o @ w)
    np.testing.assert_allclose(ro.action[:, j], a, atol=1e-6)
    sim, o, r, d = simulate(sim, a)
    np.testing.assert_allclose(ro.obs[:, j + 1], o, atol=1e-5)
    np.testing.assert_allclose(ro.reward[:, j], r, atol=1e-5, rtol=1e-6)
    np.testing.assert_array_equal(ro.terminated[:, j], d)


def test_oracle_freezes_after_termination_cartpole():
  env = make_env("cartpole_swingup")
  model = OracleModel(env)
  # Rows 0-3 start 0.15 m from the track limit moving outwards; rows 4-7 at rest.
  x = jnp.array([2.25, -2.25, 2.3, -2.3, 0.0, 0.1, -0.1, 0.0], jnp.float32)
  x_dot = jnp.array([2.0, -2.0, 1.5, -1.5, 0.0, 0.0, 0.0, 0.0], jnp.float32)
  sims = jnp.stack([x, jnp.full((B,), jnp.pi), x_dot, jnp.zeros((B,))], axis=-1)
  obs = jax.vmap(env.observe)(sims)
  push = lambda o, k: (jnp.sign(o[:, :1]) + (o[:, :1] == 0), jnp.zeros(o.shape[:1]))
  ro = jax.jit(lambda: model.rollout((), None, obs, sims, push, jax.random.PRNGKey(0),
                                     10))()
  term = np.asarray(ro.terminated)
  assert term[:4, 4:].all() and not term[:4, 0].any()  # inside the window, not at once
  assert not term[4:].any()
  check_frozen(ro)
  for leaf in jax.tree.leaves(ro):
    assert np.isfinite(np.asarray(leaf, np.float32)).all()
  # The frozen obs is the true terminal state, beyond the track limit.
  assert (np.abs(np.asarray(ro.obs)[:4, -1, 0]) > 2.4).all()

  def loss(w):
    ro = model.rollout((), None, obs, sims, linear_policy(w), jax.random.PRNGKey(0), 10)
    return jnp.sum(ro.reward) + jnp.sum(ro.obs)

  g = jax.jit(jax.grad(loss))(jnp.full((5, 1), 0.1, jnp.float32))
  assert np.isfinite(g).all() and np.abs(g).sum() > 0


def test_oracle_policy_gradient_pendulum(pendulum):
  model = OracleModel(pendulum)
  sims = jax.vmap(pendulum.init_sim)(jax.random.split(jax.random.PRNGKey(2), B))
  obs = jax.vmap(pendulum.observe)(sims)

  def loss(w):
    ro = model.rollout((), None, obs, sims, linear_policy(w), jax.random.PRNGKey(0), H)
    return jnp.sum(ro.reward)

  w = jnp.array([[0.2], [-0.4], [0.1]], jnp.float32)
  value, g = jax.jit(jax.value_and_grad(loss))(w)
  assert np.isfinite(value) and np.isfinite(g).all() and np.abs(g).max() > 1e-4
  # Matches a central finite difference (float32, so a loose tolerance).
  eps = 1e-2
  direction = jnp.array([[1.0], [0.0], [0.0]], jnp.float32)
  fd = (loss(w + eps * direction) - loss(w - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(g[0, 0], fd, rtol=5e-2, atol=1e-3)


def _brax_inverted_pendulum():
  pytest.importorskip("brax", reason="brax is not installed")
  try:
    return make_env("inverted_pendulum", backend="spring")
  except Exception as err:  # pylint: disable=broad-except
    pytest.skip(f"mvelab.envs.brax_env is not usable yet: {err!r}")


def test_oracle_brax_inverted_pendulum_terminates_finite():
  """Brax keeps integrating terminated states up to NaN: the frozen rollout stays finite.

  (Exactness of ``simulate`` against brax's own steps is tested with the environments;
  the rollout loop is the same code as for pendulum, checked exactly above.)
  """
  env = _brax_inverted_pendulum()
  model = OracleModel(env)
  n, horizon = 4, 12

  def loss(w):
    sims = jax.vmap(env.init_sim)(jax.random.split(jax.random.PRNGKey(0), n))
    obs = jax.vmap(env.observe)(sims)
    # A hard push: the pole falls past 0.2 rad within the window.
    policy = lambda o, k: (jnp.tanh(o @ w + 3.0), jnp.zeros(o.shape[:1]))
    ro = model.rollout((), None, obs, sims, policy, jax.random.PRNGKey(1), horizon)
    return jnp.sum(ro.obs[:, -1]) + jnp.sum(ro.reward), ro

  w = jnp.zeros((env.obs_size, 1), jnp.float32)
  (_, ro), g = jax.jit(jax.value_and_grad(loss, has_aux=True))(w)
  term = np.asarray(ro.terminated)
  assert term[:, -1].all() and not term[:, 0].any()
  check_frozen(ro)
  for leaf in jax.tree.leaves((ro, g)):
    assert np.isfinite(np.asarray(leaf, np.float32)).all()
  assert np.abs(g).sum() > 0
  np.testing.assert_array_equal(np.asarray(ro.reward)[~term], 1.0)  # brax: 1 per step alive


# -------------------------------------------------------------------- ensemble
OBS, ACT = 3, 1
A_MAT = np.array([[0.9, 0.1, 0.0], [-0.2, 0.8, 0.3], [0.0, -0.1, 0.95]], np.float32)
B_MAT = np.array([[0.5], [0.0], [-0.3]], np.float32)
C_VEC = np.array([1.0, -0.5, 0.25], np.float32)


def linear_data(key, n):
  """Transitions of ``o' = A o + B a``, ``r = c . o``."""
  ko, ka = jax.random.split(key)
  o = jax.random.normal(ko, (n, OBS), jnp.float32) * jnp.array([1.0, 2.0, 0.5])
  a = jax.random.uniform(ka, (n, ACT), jnp.float32, -1.0, 1.0)
  o_next = o @ A_MAT.T + a @ B_MAT.T
  zeros = jnp.zeros((n,), jnp.float32)
  return Transition(obs_tm1=o, action_tm1=a, logprob_tm1=zeros, reward_t=o @ C_VEC,
                    terminated_t=zeros.astype(bool), truncated_t=zeros.astype(bool),
                    obs_t=o_next, sim_tm1=zeros, sim_t=zeros)


def never_terminates(obs, action, next_obs):
  del obs, action
  return jnp.zeros(next_obs.shape[:-1], bool)


def box_terminates(obs, action, next_obs):
  """Unbatched: ``|o'_0| > 1.5``."""
  del obs, action
  return jnp.abs(next_obs[0]) > 1.5


@pytest.fixture(scope="module")
def small_ensemble():
  return EnsembleModel(never_terminates, OBS, ACT, hidden_sizes=(32, 32), num_members=5,
                       learning_rate=3e-3, batch_size=128)


def test_ensemble_fits_linear_system(small_ensemble):
  model = small_ensemble
  train = linear_data(jax.random.PRNGKey(0), 4096)
  test = linear_data(jax.random.PRNGKey(1), 1024)
  stats = normalization.update(normalization.init(OBS), train.obs_tm1)
  state = model.init(jax.random.PRNGKey(2))
  assert isinstance(state, EnsembleState)

  @functools.partial(jax.jit, static_argnums=2)
  def fit(state, key, steps):
    def body(state, key):
      idx = jax.random.randint(key, (model.batch_size,), 0, 4096)
      batch = jax.tree.map(lambda x: x[idx], train)
      return model.update(state, stats, batch, key)
    return jax.lax.scan(body, state, jax.random.split(key, steps))

  error = jax.jit(model.prediction_error)
  before = error(state, stats, test)
  state, metrics = fit(state, jax.random.PRNGKey(3), 500)
  after = error(state, stats, test)
  var_delta = float(jnp.var(test.obs_t - test.obs_tm1))
  var_reward = float(jnp.var(test.reward_t))
  assert set(metrics) == {"model_loss", "model_mse"}
  assert metrics["model_loss"][-1] < metrics["model_loss"][0]
  assert after["obs_mse"] < 1e-2 * var_delta
  assert after["reward_mse"] < 1e-2 * var_reward
  assert after["obs_mse"] < 0.05 * before["obs_mse"]
  assert after["reward_mse"] < 0.05 * before["reward_mse"]
  # The learned noise level shrinks well below the initial one.
  _, logvar = model.predict(state, stats, test.obs_tm1, test.action_tm1)
  assert float(jnp.mean(logvar)) < -3.0


def _distinct_members_state(model, key):
  """Random members with (near) deterministic outputs: log-var bounds at -40..-30."""
  state = model.init(key)
  params = dict(state.params)
  params["min_logvar"] = jnp.full_like(params["min_logvar"], -40.0)
  params["max_logvar"] = jnp.full_like(params["max_logvar"], -30.0)
  return state.replace(params=params)


@pytest.mark.parametrize("sampling", ["iid", "balanced"])
def test_ensemble_rollout_member_selection_and_shapes(sampling):
  model = EnsembleModel(never_terminates, OBS, ACT, hidden_sizes=(32, 32), num_members=5,
                        sampling=sampling)
  assert implements_protocol(model)
  assert model.name == "learned" and not model.needs_sim
  state = _distinct_members_state(model, jax.random.PRNGKey(0))
  stats = normalization.init(OBS)
  obs = jax.random.normal(jax.random.PRNGKey(1), (B, OBS))
  policy = linear_policy(jnp.array([[0.3], [-0.2], [0.5]], jnp.float32))

  @jax.jit
  def run(state):
    return model.rollout(state, stats, obs, None, policy, jax.random.PRNGKey(2), H)

  ro = run(state)
  assert ro.obs.shape == (B, H + 1, OBS) and ro.action.shape == (B, H, ACT)
  assert ro.reward.shape == ro.log_prob.shape == ro.terminated.shape == (B, H)
  assert not np.asarray(ro.terminated).any()
  np.testing.assert_array_equal(ro.obs[:, 0], obs)

  # Single-member ensembles: every member replaced by member k.
  singles = []
  for k in range(model.num_members):
    net = jax.tree.map(lambda x: jnp.broadcast_to(x[k], x.shape), state.params["net"])
    singles.append(run(state.replace(params={**state.params, "net": net})))
  # First step: each row comes from exactly one member, and not all from the same one.
  first = np.stack([np.asarray(s.obs[:, 1]) for s in singles])  # [E, B, O]
  match = np.all(np.abs(first - np.asarray(ro.obs[:, 1])[None]) < 1e-4, axis=-1)
  assert (match.sum(axis=0) == 1).all()
  assert len(set(np.argmax(match, axis=0))) > 1
  # Over the whole rollout the mixture differs from every single member in some row.
  for s in singles:
    assert np.abs(np.asarray(s.obs) - np.asarray(ro.obs)).max(axis=(1, 2)).max() > 1e-3


def test_balanced_member_prediction_is_one_member_per_row_uniform_and_balanced():
  """``sampling="balanced"``: every row gets exactly one member's prediction, every member
  gets B/E rows give or take the padding, and over keys each row's member is uniform."""
  e, b = 5, 23  # G = 5 slots per member, 2 of the 25 slots are padding
  model = EnsembleModel(never_terminates, OBS, ACT, hidden_sizes=(32, 32), num_members=e,
                        sampling="balanced")
  state = model.init(jax.random.PRNGKey(0))
  stats = normalization.init(OBS)
  obs = jax.random.normal(jax.random.PRNGKey(1), (b, OBS))
  act = jax.random.uniform(jax.random.PRNGKey(2), (b, ACT), minval=-1, maxval=1)
  every_mean, every_logvar = model.apply(state.params, stats, obs, act)  # [E, B, D]
  keys = jax.random.split(jax.random.PRNGKey(3), 400)
  mean, logvar = jax.jit(jax.vmap(
      lambda k: model.member_prediction(state.params, stats, obs, act, k)))(keys)
  # [K, E, B]: does member e's prediction equal row b's output under key k?
  same = np.all(np.abs(np.asarray(mean)[:, None] - np.asarray(every_mean)[None]) < 1e-5,
                axis=-1) & np.all(np.abs(np.asarray(logvar)[:, None]
                                         - np.asarray(every_logvar)[None]) < 1e-5, axis=-1)
  assert (same.sum(axis=1) == 1).all()  # exactly one member per row and key
  counts = same.sum(axis=2)  # [K, E] rows per member
  assert counts.min() >= 3 and counts.max() == 5 and (counts.sum(axis=1) == b).all()
  freq = same.mean(axis=0)  # [E, B]: each row's member frequency over 400 keys
  assert np.abs(freq - 1 / e).max() < 0.1  # 5 binomial sds at p = 0.2, n = 400
  # Different keys pick different members; the same key the same ones.
  assert len({tuple(np.argmax(same[k], axis=0)) for k in range(10)}) == 10
  again = jax.jit(model.member_prediction)(state.params, stats, obs, act, keys[0])
  np.testing.assert_allclose(again[0], mean[0], atol=1e-5)  # vmap may reorder the sums


def test_ensemble_logvar_bounds():
  model = EnsembleModel(never_terminates, OBS, ACT, hidden_sizes=(32, 32), num_members=3)
  state = model.init(jax.random.PRNGKey(0))
  # Large weights push raw log-variances far beyond both bounds.
  params = dict(state.params)
  params["net"] = jax.tree.map(lambda x: 30.0 * x, params["net"])
  stats = normalization.init(OBS)
  obs = 5.0 * jax.random.normal(jax.random.PRNGKey(1), (256, OBS))
  act = jax.random.uniform(jax.random.PRNGKey(2), (256, ACT), minval=-1, maxval=1)
  mean, logvar = jax.jit(model.apply)(params, stats, obs, act)
  assert mean.shape == logvar.shape == (3, 256, OBS + 1)
  assert float(logvar.min()) >= -10.0
  assert float(logvar.max()) <= 0.5 + 1e-3
  assert float(logvar.min()) < -9.0 and float(logvar.max()) > 0.4  # both bounds active


@pytest.mark.parametrize("sampling", ["iid", "balanced"])
def test_ensemble_rollout_gradients_and_freezing(sampling):
  model = EnsembleModel(box_terminates, OBS, ACT, hidden_sizes=(32, 32), num_members=5,
                        sampling=sampling)
  state = model.init(jax.random.PRNGKey(0))
  stats = normalization.init(OBS)
  obs = jnp.linspace(-1.4, 1.4, B)[:, None] * jnp.array([1.0, 0.5, -0.5])

  def loss(model_params, w):
    ro = model.rollout(state.replace(params=model_params), stats, obs, None,
                       linear_policy(w), jax.random.PRNGKey(3), H)
    return jnp.sum(ro.reward) + jnp.sum(jnp.square(ro.obs)), ro

  w = jnp.array([[1.0], [-0.5], [0.5]], jnp.float32)
  (_, ro), (g_model, g_w) = jax.jit(
      jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(state.params, w)
  for leaf in jax.tree.leaves(g_model):
    assert not np.asarray(leaf).any()  # the model is stop-gradient-ed
  assert np.isfinite(g_w).all() and np.abs(g_w).sum() > 0
  term = np.asarray(ro.terminated)
  assert term.any() and not term.all()
  check_frozen(ro)
  # Termination comes from the true termination function on the imagined transition.
  o = np.asarray(ro.obs)
  alive = np.concatenate([np.ones((B, 1), bool), ~term[:, :-1]], axis=1)
  np.testing.assert_array_equal(term[alive], (np.abs(o[:, 1:, 0]) > 1.5)[alive])


def test_ensemble_update_is_jittable_and_pure(small_ensemble):
  model = small_ensemble
  batch = linear_data(jax.random.PRNGKey(0), 64)
  stats = normalization.update(normalization.init(OBS), batch.obs_tm1)
  state = model.init(jax.random.PRNGKey(1))
  new_state, metrics = jax.jit(model.update)(state, stats, batch, jax.random.PRNGKey(2))
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  for leaf in jax.tree.leaves(new_state):
    assert leaf.dtype in (jnp.float32, jnp.int32)
  # Members start different (independent init keys) and all move.
  k0 = state.params["net"]["Dense_0"]["kernel"]
  assert not np.allclose(k0[0], k0[1])
  assert np.isfinite(float(metrics["model_loss"]))
  loss, _ = model.loss(state.params, stats, batch)
  np.testing.assert_allclose(metrics["model_loss"], loss, rtol=1e-5)
  # The loss formula by hand.
  mean, logvar = model.apply(state.params, stats, batch.obs_tm1, batch.action_tm1)
  y = jnp.concatenate([batch.obs_t - batch.obs_tm1, batch.reward_t[:, None]], axis=-1)
  manual = jnp.mean(jnp.sum(logvar + (mean - y) ** 2 * jnp.exp(-logvar), -1)) + 0.01 * (
      4 * 0.5 + 4 * 10.0)
  np.testing.assert_allclose(loss, manual, rtol=1e-5)


# ------------------------------------------------------------------- make_model
def test_make_model(pendulum):
  assert isinstance(make_model("oracle", pendulum), OracleModel)
  model = make_model("learned", pendulum, hidden_sizes=[16], num_members=2)
  assert isinstance(model, EnsembleModel)
  assert (model.obs_size, model.action_size) == (3, 1)
  assert model.hidden_sizes == (16,) and model.num_members == 2
  assert model.learning_rate == 3e-4 and model.batch_size == 256
  with pytest.raises(ConfigError, match=r"model.*'sim'.*oracle, learned"):
    make_model("sim", pendulum)
  assert make_model("learned", pendulum, sampling="balanced").sampling == "balanced"
  with pytest.raises(ConfigError, match=r"sampling.*'random'.*iid, balanced"):
    make_model("learned", pendulum, sampling="random")
  with pytest.raises(ConfigError, match="num_member"):
    make_model("learned", pendulum, num_member=3)
  with pytest.raises(ConfigError, match="hidden_sizes"):
    make_model("oracle", pendulum, hidden_sizes=(8,))
  with pytest.raises(ConfigError, match="num_members"):
    make_model("learned", pendulum, num_members=0)
  with pytest.raises(ConfigError, match="learning_rate"):
    make_model("learned", pendulum, learning_rate=-1.0)
  with pytest.raises(ConfigError, match="hidden_sizes"):
    make_model("learned", pendulum, hidden_sizes=(8, 0))
