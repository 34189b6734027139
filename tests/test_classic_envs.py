"""Tests of the pure-JAX classic control environments (Pendulum, Cartpole swing-up)."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.envs import make
from mvelab.envs.classic import CartpoleSwingup, Pendulum
from mvelab.errors import ConfigError

# ------------------------------------------------------------------ references


def gym_angle_normalize(x):
  return ((x + np.pi) % (2 * np.pi)) - np.pi


def gym_pendulum_step(th, thdot, a):
  """Gymnasium Pendulum-v1 ``step`` in float64 numpy; ``a`` is the agent action."""
  g, m, l, dt = 10.0, 1.0, 1.0, 0.05
  u = np.clip(2.0 * np.clip(a, -1.0, 1.0), -2.0, 2.0)
  costs = gym_angle_normalize(th) ** 2 + 0.1 * thdot ** 2 + 0.001 * u ** 2
  newthdot = thdot + (3 * g / (2 * l) * np.sin(th) + 3.0 / (m * l ** 2) * u) * dt
  newthdot = np.clip(newthdot, -8.0, 8.0)
  newth = th + newthdot * dt
  return newth, newthdot, -costs


def np_cartpole_step(state, a):
  """Gymnasium CartPole equations, semi-implicit Euler, tau=0.01, 4 sub-steps + reward."""
  x, theta, x_dot, theta_dot = state
  a = float(np.clip(a, -1, 1))
  force = 10.0 * a
  total_mass, pml = 1.1, 0.05
  for _ in range(4):
    c, s = np.cos(theta), np.sin(theta)
    temp = (force + pml * theta_dot ** 2 * s) / total_mass
    thetaacc = (9.8 * s - c * temp) / (0.5 * (4.0 / 3.0 - 0.1 * c ** 2 / total_mass))
    xacc = temp - pml * thetaacc * c / total_mass
    x_dot = x_dot + 0.01 * xacc
    x = x + 0.01 * x_dot
    theta_dot = theta_dot + 0.01 * thetaacc
    theta = theta + 0.01 * theta_dot

  def tol(v, margin):
    return np.exp(-0.5 * (v * math.sqrt(-2 * math.log(0.1)) / margin) ** 2)

  reward = ((np.cos(theta) + 1) / 2 * (1 + tol(x, 2.0)) / 2
            * (4 + max(0.0, 1 - a ** 2)) / 5 * (1 + tol(theta_dot, 5.0)) / 2)
  return np.array([x, theta, x_dot, theta_dot]), reward


# ------------------------------------------------------------------ jitted helpers


@functools.lru_cache(maxsize=None)
def jitted(env):
  """Jitted ``reset``/``step``/``simulate`` for one env instance (compiled once)."""
  return dict(reset=jax.jit(env.reset), step=jax.jit(env.step),
              simulate=jax.jit(env.simulate),
              vsimulate=jax.jit(jax.vmap(env.simulate)))


@functools.lru_cache(maxsize=None)
def rollout_fn(env, n_envs, n_steps):
  """Jitted batched random rollout with auto-reset.

  Actions are a per-env constant bias plus noise so that some carts leave the track.

  Returns ``fn(key) -> (first EnvState [n_envs], dict of [n_steps, n_envs, ...])``: the
  pre-step ``obs``/``sim``, ``action`` and the post-step ``EnvState`` fields.
  """

  def fn(key):
    reset_key, bias_key, act_key = jax.random.split(key, 3)
    state0 = jax.vmap(env.reset)(jax.random.split(reset_key, n_envs))
    bias = jax.random.uniform(bias_key, (n_envs, env.action_size), minval=-1, maxval=1)

    def body(state, k):
      noise = jax.random.uniform(k, (n_envs, env.action_size), minval=-1, maxval=1)
      action = jnp.clip(bias + noise, -1.0, 1.0)
      new = jax.vmap(env.step)(state, action)
      out = dict(obs=state.obs, sim=state.sim, action=action, new_obs=new.obs,
                 new_sim=new.sim, next_obs=new.next_obs, next_sim=new.next_sim,
                 reward=new.reward, terminated=new.terminated, truncated=new.truncated,
                 t=new.t)
      return new, out

    _, traj = jax.lax.scan(body, state0, jax.random.split(act_key, n_steps))
    return state0, traj

  return jax.jit(fn)


def replay_fn(env):
  """Jitted chain of ``simulate`` over an action sequence ``[n, action_size]``."""

  def fn(sim, actions):
    def body(s, a):
      s, obs, r, term = env.simulate(s, a)
      return s, (obs, r, term)
    return jax.lax.scan(body, sim, actions)[1]

  return jax.jit(fn)


def _to_np(tree):
  return jax.tree.map(np.asarray, tree)


PENDULUM = Pendulum()
PENDULUM_R2 = Pendulum(action_repeat=2)
CARTPOLE = CartpoleSwingup()
CARTPOLE_R2 = CartpoleSwingup(action_repeat=2)


@pytest.fixture(scope="module")
def cartpole_rollout():
  _, traj = rollout_fn(CARTPOLE, 64, 200)(jax.random.PRNGKey(0))
  return _to_np(traj)


@pytest.fixture(scope="module")
def pendulum_rollout():
  _, traj = rollout_fn(PENDULUM, 16, 200)(jax.random.PRNGKey(1))
  return _to_np(traj)


# ------------------------------------------------------------------ construction


def test_registry_builds_classic_envs():
  env = make("pendulum", action_repeat=2, episode_length=7)
  assert isinstance(env, Pendulum)
  assert (env.action_repeat, env.episode_length, env.obs_size, env.action_size) == (2, 7, 3, 1)
  assert env.name == "pendulum" and env.backend == "jax"
  env = make("cartpole_swingup")
  assert isinstance(env, CartpoleSwingup)
  assert (env.action_repeat, env.episode_length, env.obs_size, env.action_size) == (1, 500, 5, 1)
  assert env.name == "cartpole_swingup" and env.backend == "jax"
  with pytest.raises(ConfigError, match="action_repeat"):
    Pendulum(action_repeat=0)


def test_reset_distributions():
  keys = jax.random.split(jax.random.PRNGKey(3), 256)
  sims = np.asarray(jax.vmap(PENDULUM.init_sim)(keys))
  assert sims.dtype == np.float32 and sims.shape == (256, 2)
  assert np.all(np.abs(sims[:, 0]) <= np.pi) and np.all(np.abs(sims[:, 1]) <= 1.0)
  assert sims[:, 0].min() < -2.5 and sims[:, 0].max() > 2.5
  sims = np.asarray(jax.vmap(CARTPOLE.init_sim)(keys))
  assert sims.dtype == np.float32 and sims.shape == (256, 4)
  assert np.all(np.abs(sims[:, [0, 2, 3]]) <= 0.01)
  assert np.all(np.abs(sims[:, 1] - np.pi) <= 0.01 + 1e-6)
  state = jitted(CARTPOLE)["reset"](jax.random.PRNGKey(0))
  assert state.obs.shape == (5,) and state.obs.dtype == jnp.float32
  np.testing.assert_allclose(state.obs, CARTPOLE.observe(state.sim))


# ------------------------------------------------------------------ pendulum physics

PENDULUM_CASES = [
    # (th, thdot, action)
    (0.5, 0.3, 0.7),
    (-2.0, -1.5, -0.25),
    (3.0, 7.9, 1.0),     # new speed clipped to +8
    (-3.0, -7.9, -1.0),  # new speed clipped to -8
    (5.0, 2.0, 1.5),     # angle_normalize wraps (5 -> 5 - 2 pi); action clipped to 1
    (-7.0, 0.0, -3.0),   # wraps below -pi; action clipped to -1
    (math.pi, 0.0, 0.0),  # boundary of the wrap
]


@pytest.mark.parametrize("repeat", [1, 2])
def test_pendulum_matches_gymnasium(repeat):
  env = PENDULUM if repeat == 1 else PENDULUM_R2
  sims = jnp.array([[th, thd] for th, thd, _ in PENDULUM_CASES], jnp.float32)
  actions = jnp.array([[a] for _, _, a in PENDULUM_CASES], jnp.float32)
  next_sim, next_obs, reward, term = _to_np(jitted(env)["vsimulate"](sims, actions))
  for i, (th, thdot, a) in enumerate(PENDULUM_CASES):
    th, thdot = float(np.float32(th)), float(np.float32(thdot))
    total = 0.0
    for _ in range(repeat):
      th, thdot, r = gym_pendulum_step(th, thdot, a)
      total += r
    np.testing.assert_allclose(next_sim[i], [th, thdot], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(next_obs[i], [np.cos(th), np.sin(th), thdot],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reward[i], total, rtol=1e-5, atol=1e-5)
    assert not term[i]
  assert next_sim.dtype == np.float32 and reward.dtype == np.float32
  # The clipped cases really hit the speed limit.
  assert next_sim[2, 1] == 8.0 and next_sim[3, 1] == -8.0


def test_pendulum_termination_fn_is_false():
  obs = jnp.zeros((4, 3))
  out = PENDULUM.termination_fn(obs, jnp.zeros((4, 1)), obs)
  assert out.shape == (4,) and out.dtype == jnp.bool_ and not bool(out.any())


# ------------------------------------------------------------------ cartpole physics


def test_cartpole_matches_reference_equations():
  cases = [([0.1, 0.3, -0.2, 0.5], 0.4), ([-1.0, math.pi, 0.0, 0.0], -1.0),
           ([0.5, 2.0, 1.0, -3.0], 2.0), ([0.0, -0.2, 0.0, 0.0], 0.0)]
  sims = jnp.array([s for s, _ in cases], jnp.float32)
  actions = jnp.array([[a] for _, a in cases], jnp.float32)
  next_sim, next_obs, reward, term = _to_np(jitted(CARTPOLE)["vsimulate"](sims, actions))
  for i, (s, a) in enumerate(cases):
    ref, ref_r = np_cartpole_step(np.asarray(s, np.float32).astype(np.float64), a)
    np.testing.assert_allclose(next_sim[i], ref, rtol=1e-5, atol=1e-5)
    x, th, xd, thd = ref
    np.testing.assert_allclose(next_obs[i], [x, np.cos(th), np.sin(th), xd, thd],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(reward[i], ref_r, rtol=1e-5, atol=1e-6)
    assert not term[i]


def test_cartpole_reward_extremes():
  # Hanging at rest is an equilibrium with reward 0; upright, centred, still, no force: 1.
  down = jnp.array([0.0, math.pi, 0.0, 0.0], jnp.float32)
  next_sim, _, reward, _ = CARTPOLE.simulate(down, jnp.zeros(1))
  np.testing.assert_allclose(next_sim, down, atol=1e-6)
  np.testing.assert_allclose(reward, 0.0, atol=1e-6)
  up = jnp.zeros(4, jnp.float32)
  next_sim, _, reward, _ = CARTPOLE.simulate(up, jnp.zeros(1))
  np.testing.assert_allclose(next_sim, up, atol=1e-6)
  np.testing.assert_allclose(reward, 1.0, atol=1e-6)
  # Full control costs exactly a factor 4/5.
  _, _, reward_full, _ = CARTPOLE.simulate(up, jnp.ones(1))
  _, _, reward_half, _ = CARTPOLE.simulate(up, jnp.full((1,), 0.5))
  assert float(reward_full) < float(reward_half) < 1.0
  assert 0.7 < float(reward_full) < 0.8


# ------------------------------------------------------------------ time limit


def test_truncation_at_episode_boundary():
  env = Pendulum(episode_length=5)
  fns = jitted(env)
  state = fns["reset"](jax.random.PRNGKey(7))
  action = jnp.array([0.3], jnp.float32)
  flags = []
  for i in range(10):
    prev = state
    state = fns["step"](prev, action)
    flags.append((bool(state.terminated), bool(state.truncated), int(state.t)))
    # next_obs/next_sim is always the true successor of the previous sim.
    true_sim, true_obs, true_r, _ = fns["simulate"](prev.sim, action)
    np.testing.assert_array_equal(state.next_sim, true_sim)
    np.testing.assert_array_equal(state.next_obs, true_obs)
    np.testing.assert_array_equal(state.next_obs, env.observe(state.next_sim))
    np.testing.assert_array_equal(state.reward, true_r)
    np.testing.assert_allclose(state.obs, env.observe(state.sim), rtol=1e-6, atol=1e-6)
    if i in (4, 9):
      # Auto-reset: obs is a fresh episode start, next_obs the true final observation.
      assert not np.allclose(state.obs, state.next_obs)
      assert abs(float(state.sim[1])) <= 1.0  # reset speed range
      assert abs(float(state.sim[0])) <= math.pi
    else:
      np.testing.assert_array_equal(state.obs, state.next_obs)
      np.testing.assert_array_equal(state.sim, state.next_sim)
  assert [f[0] for f in flags] == [False] * 10
  assert [f[1] for f in flags] == [False, False, False, False, True] * 2
  assert [f[2] for f in flags] == [1, 2, 3, 4, 0] * 2


# ------------------------------------------------------------------ termination


def _cartpole_state_at(env, sim, t):
  state = jitted(env)["reset"](jax.random.PRNGKey(0))
  sim = jnp.asarray(sim, jnp.float32)
  return state.replace(sim=sim, obs=env.observe(sim), t=jnp.asarray(t, jnp.int32))


def test_cartpole_terminates_at_track_limit_even_at_time_limit():
  env = CartpoleSwingup(episode_length=10)
  fns = jitted(env)
  edge = [2.39, math.pi, 2.0, 0.0]
  action = jnp.ones(1, jnp.float32)
  # Last step of the episode: termination wins over truncation.
  state = fns["step"](_cartpole_state_at(env, edge, 9), action)
  assert bool(state.terminated) and not bool(state.truncated)
  assert float(state.next_obs[0]) > 2.4 and int(state.t) == 0
  assert abs(float(state.obs[0])) <= 0.01  # auto-reset
  assert bool(env.termination_fn(_cartpole_state_at(env, edge, 0).obs, action,
                                 state.next_obs))
  # Mid-episode, same outcome.
  state = fns["step"](_cartpole_state_at(env, edge, 3), action)
  assert bool(state.terminated) and not bool(state.truncated)
  # Pushed back inward from the same spot: no termination.
  state = fns["step"](_cartpole_state_at(env, [2.39, math.pi, -2.0, 0.0], 3), -action)
  assert not bool(state.terminated) and not bool(state.truncated)
  assert int(state.t) == 4


def test_cartpole_action_repeat_freezes_after_termination():
  edge = jnp.array([2.39, math.pi, 2.0, 0.0], jnp.float32)
  action = jnp.ones(1, jnp.float32)
  # Compiled at XLA's default LLVM optimisation level (tests/conftest.py compiles the suite
  # at 0): the two programs then agree bit for bit, as they do in a training run.
  full_opt = {"xla_backend_optimization_level": 3}
  sim1, obs1, r1, term1 = jax.jit(CARTPOLE.simulate, compiler_options=full_opt)(edge, action)
  sim3, obs3, r3, term3 = jax.jit(CartpoleSwingup(action_repeat=3).simulate,
                                  compiler_options=full_opt)(edge, action)
  assert bool(term1) and bool(term3)
  np.testing.assert_array_equal(sim3, sim1)
  np.testing.assert_array_equal(obs3, obs1)
  np.testing.assert_allclose(r3, r1, rtol=1e-6)
  # Without termination the rewards of the repeats add up.
  start = jnp.array([0.0, 2.5, 0.0, 1.0], jnp.float32)
  s, _, ra, _ = CARTPOLE.simulate(start, action)
  _, _, rb, _ = CARTPOLE.simulate(s, action)
  s2, _, r2, term2 = CARTPOLE_R2.simulate(start, action)
  np.testing.assert_allclose(r2, ra + rb, rtol=1e-6)
  assert not bool(term2)


def test_cartpole_termination_fn_agrees_with_env(cartpole_rollout):
  traj = cartpole_rollout
  pred = np.asarray(CARTPOLE.termination_fn(
      jnp.asarray(traj["obs"]), jnp.asarray(traj["action"]), jnp.asarray(traj["next_obs"])))
  assert pred.shape == traj["terminated"].shape == (200, 64)
  np.testing.assert_array_equal(pred, traj["terminated"])
  n_term = int(traj["terminated"].sum())
  assert n_term > 0, "no rollout reached the track limit"
  assert n_term < 64 * 200
  # Terminated and truncated are never both true; no truncation before 500 steps.
  assert not np.any(traj["terminated"] & traj["truncated"])
  assert not np.any(traj["truncated"])
  # After a termination the episode restarts near the hanging rest state.
  done = traj["terminated"]
  assert np.all(np.abs(traj["new_obs"][done][:, 0]) <= 0.01)
  assert np.all(traj["t"][done] == 0)


def test_cartpole_termination_fn_agrees_with_action_repeat():
  _, traj = rollout_fn(CARTPOLE_R2, 32, 100)(jax.random.PRNGKey(5))
  traj = _to_np(traj)
  pred = np.asarray(CARTPOLE_R2.termination_fn(traj["obs"], traj["action"],
                                               traj["next_obs"]))
  np.testing.assert_array_equal(pred, traj["terminated"])
  assert traj["terminated"].any()
  assert np.all((traj["reward"] >= 0.0) & (traj["reward"] <= 2.0))


# ------------------------------------------------------------------ exact restore


@pytest.mark.parametrize("env_name", ["pendulum", "cartpole"])
def test_restore_one_step(env_name, pendulum_rollout, cartpole_rollout):
  env, traj = ((PENDULUM, pendulum_rollout) if env_name == "pendulum"
               else (CARTPOLE, cartpole_rollout))
  flat = lambda a: a.reshape((-1,) + a.shape[2:])
  next_sim, next_obs, reward, term = _to_np(jitted(env)["vsimulate"](
      flat(traj["sim"]), flat(traj["action"])))
  np.testing.assert_allclose(next_sim, flat(traj["next_sim"]), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(next_obs, flat(traj["next_obs"]), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(reward, flat(traj["reward"]), rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(term, flat(traj["terminated"]))


@pytest.mark.parametrize("env_name", ["pendulum", "cartpole"])
def test_restore_replays_rollout(env_name, pendulum_rollout, cartpole_rollout):
  """Chains ``simulate`` from a stored mid-episode sim up to the episode's end."""
  env, traj = ((PENDULUM, pendulum_rollout) if env_name == "pendulum"
               else (CARTPOLE, cartpole_rollout))
  replay = replay_fn(env)
  n = 25
  checked = 0
  for i in range(traj["obs"].shape[1]):
    ends = np.flatnonzero(traj["terminated"][:, i] | traj["truncated"][:, i])
    starts = np.concatenate([[0], ends[:-1] + 1])
    for first, last in zip(starts, ends):
      if last - first + 1 < n:
        continue
      s = last - n + 1  # window of n steps inside one episode, ending at its end
      obs, reward, term = _to_np(replay(jnp.asarray(traj["sim"][s, i]),
                                        jnp.asarray(traj["action"][s:last + 1, i])))
      # Float32 tolerance: XLA may fuse multiply-adds (FMA) differently in the rollout's
      # and the replay's compiled programs, so bits can differ by an ulp per step.
      np.testing.assert_allclose(obs, traj["next_obs"][s:last + 1, i], rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(reward, traj["reward"][s:last + 1, i], rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(term, traj["terminated"][s:last + 1, i])
      checked += 1
      break
    if checked == 6:
      break
  assert checked == 6
  if env_name == "cartpole":
    assert term[-1]  # the replayed window ends with the track-limit termination


# ------------------------------------------------------------------ ranges and NaN


def test_reward_ranges(pendulum_rollout, cartpole_rollout):
  assert np.all(pendulum_rollout["reward"] <= 0.0)
  assert np.all(pendulum_rollout["reward"] >= -(math.pi ** 2 + 6.4 + 0.004) - 1e-4)
  assert np.all((cartpole_rollout["reward"] >= 0.0) & (cartpole_rollout["reward"] <= 1.0))
  assert cartpole_rollout["reward"].max() > 0.0


@pytest.mark.parametrize("env", [Pendulum(action_repeat=2, episode_length=50),
                                 CartpoleSwingup(episode_length=100)],
                         ids=["pendulum", "cartpole"])
def test_no_nan_long_rollout(env):
  _, traj = rollout_fn(env, 8, 1000)(jax.random.PRNGKey(11))
  traj = _to_np(traj)
  for name, value in traj.items():
    if np.issubdtype(value.dtype, np.floating):
      assert value.dtype == np.float32, name
      assert np.all(np.isfinite(value)), name
  assert traj["truncated"].sum() > 0  # auto-resets happened


# ------------------------------------------------------------------ action shape


@pytest.mark.parametrize("env", [PENDULUM, CARTPOLE], ids=["pendulum", "cartpole"])
@pytest.mark.parametrize("shape", [(2,), (), (1, 1)])
def test_wrong_action_shape_raises(env, shape):
  state = env.reset(jax.random.PRNGKey(0))
  with pytest.raises(ConfigError, match=r"shape \[1\]") as info:
    env.step(state, jnp.zeros(shape))
  assert isinstance(info.value, ValueError)
  assert str(list(shape)) in str(info.value)
  with pytest.raises(ConfigError, match=r"shape \[1\]"):
    jax.jit(env.simulate)(state.sim, jnp.zeros(shape))
