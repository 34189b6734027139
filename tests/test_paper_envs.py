"""Tests of the reference paper's own tasks (``mvelab.envs.paper_cartpole``, ``paper_brax``).

Each task is probed ONCE by one jitted function (compile time dominates on CPU):

* ``roll``: ``Env.reset``/``Env.step`` with a short time limit and auto-reset, ``B`` envs x
  ``T`` steps (the replay buffer's view: stored sims, actions, next obs, rewards);
* ``rep``: ``Env.simulate`` on one batch made of the stored sims (one-step replays of every
  stored transition) and of a ``T``-step *chain* from the first stored sims, replaying the
  stored actions without any reset;
* ``nat`` (Brax tasks): brax's own ``pipeline_step`` on the full pipeline state along the
  same actions, observed and rewarded by the task (the exactness proof of the chain).

The cart-pole chain is compared with an independent float64 numpy integration of the
equations of motion (the hand-computed step).
"""

from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab import envs
from mvelab.envs import paper_cartpole as pc

B, T, EPISODE_LENGTH = 4, 40, 32
XLA_OPTIONS = {"xla_backend_optimization_level": 0}
CARTPOLES = ("paper_inverted_pendulum", "paper_cartpole")
BRAX_TASKS = ("paper_hopper", "paper_walker2d", "paper_halfcheetah")
#: Balancing feedback for the inverted pendulum (keeps chains alive for T steps).
PD_GAINS = (3.0, 0.5, 0.05, 0.2)


def _policy(name, obs, noise):
  if name == "paper_inverted_pendulum":
    theta = jnp.arctan2(obs[..., 2], obs[..., 1])
    k = PD_GAINS
    a = k[0] * theta + k[1] * obs[..., 4] + k[2] * obs[..., 0] + k[3] * obs[..., 3]
    return jnp.clip(a[..., None] + 0.1 * noise, -1.0, 1.0)
  return 0.5 * noise


@functools.lru_cache(maxsize=None)
def probe(name):
  env = envs.make(name, episode_length=EPISODE_LENGTH)

  def run(key):
    k_reset, k_noise = jax.random.split(key)
    noise = jax.random.uniform(k_noise, (T, B, env.action_size), minval=-1.0, maxval=1.0)

    def body(s, n):
      a = _policy(name, s.obs, n)
      s2 = jax.vmap(env.step)(s, a)
      return s2, dict(obs=s.obs, sim=s.sim, action=a, next_obs=s2.next_obs,
                      reward=s2.reward, terminated=s2.terminated, truncated=s2.truncated)

    s0 = jax.vmap(env.reset)(jax.random.split(k_reset, B))
    _, roll = jax.lax.scan(body, s0, noise)

    def rbody(chain, xs):
      stored_sim, a = xs
      sims = jax.tree.map(lambda u, v: jnp.concatenate([u, v]), stored_sim, chain)
      nxt, nobs, rew, term = jax.vmap(env.simulate)(sims, jnp.concatenate([a, a]))
      out = dict(next_obs=nobs, reward=rew, terminated=term)
      split = lambda i: jax.tree.map(lambda x: x[i * B:(i + 1) * B], out)
      return jax.tree.map(lambda x: x[B:], nxt), dict(stored=split(0), chain=split(1))

    # The chain replays the stored actions from each lane's first stored state without
    # any reset (it matches the roll until the first episode ends).
    _, rep = jax.lax.scan(rbody, s0.sim, (roll["sim"], roll["action"]))
    out = dict(roll=roll, rep=rep)
    if name in BRAX_TASKS:
      out["nat"] = _native(env, s0.sim, roll["action"])
    return out

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    out = jax.device_get(jax.jit(run, compiler_options=XLA_OPTIONS)(jax.random.PRNGKey(3)))
  return env, out


def _first_episode(roll):
  """``[T, B]`` bool: the step belongs to the lane's first episode."""
  done = roll["terminated"] | roll["truncated"]
  return np.concatenate([np.ones_like(done[:1]), np.cumsum(done, 0)[:-1] == 0], axis=0)


def _native(env, sim0, actions):
  """Brax's ``pipeline_step`` on full pipeline states, observed/rewarded by the task."""
  ps0 = jax.vmap(env.restore)(sim0)

  def body(ps, a):
    ps1 = jax.vmap(env.brax_env.pipeline_step)(ps, a)
    obs = jax.vmap(env._observe_pipeline)(ps1)
    if env.brax_name == "halfcheetah":
      fwd = (ps1.x.pos[:, 0, 0] - ps.x.pos[:, 0, 0]) / env.dt
      healthy = 0.0
    else:
      fwd = (jax.vmap(env._com_x)(ps1) - jax.vmap(env._com_x)(ps)) / env.dt
      healthy = 1.0
    reward = fwd + healthy - _control_cost(env) * jnp.sum(a ** 2, -1)
    return ps1, dict(next_obs=obs, reward=reward)

  return jax.lax.scan(body, ps0, actions)[1]


def _control_cost(env):
  return {"paper_hopper": 1e-3, "paper_walker2d": 1e-3, "paper_halfcheetah": 0.1}[env.name]


# ------------------------------------------------------------------ numpy reference


def np_accelerations(state, force):
  """Lagrange equations of the cart-pole, solved with numpy (float64)."""
  _, th, _, thd = state
  big_m, m, l, i = pc.CART_MASS, pc.POLE_MASS, pc.POLE_COM, pc.POLE_INERTIA
  mass = np.array([[big_m + m, m * l * np.cos(th)], [m * l * np.cos(th), i + m * l * l]])
  rhs = np.array([force + m * l * np.sin(th) * thd ** 2, m * 9.81 * l * np.sin(th)])
  return np.linalg.solve(mass, rhs)


def np_agent_step(state, a, action_repeat):
  """``8 * action_repeat`` semi-implicit Euler substeps of 0.005 s with force 100 a."""
  x, th, xd, thd = state
  force = 100.0 * float(np.clip(a, -1, 1))
  for _ in range(8 * action_repeat):
    xdd, thdd = np_accelerations((x, th, xd, thd), force)
    xd, thd = xd + 0.005 * xdd, thd + 0.005 * thdd
    x, th = x + 0.005 * xd, th + 0.005 * thd
  return np.array([x, th, xd, thd])


def np_capsule_inertia(mass, radius, length, n=161):
  """Inertia about the centre, perpendicular to the axis, by integration on a grid."""
  half = length / 2
  zs = np.linspace(-half, half, 4 * n)
  xs = np.linspace(-radius, radius, n)
  X, Y, Z = np.meshgrid(xs, xs, zs, indexing="ij")
  core = np.clip(np.abs(Z) - (half - radius), 0, None)
  inside = X ** 2 + Y ** 2 + core ** 2 <= radius ** 2
  return mass * np.mean((X ** 2 + Z ** 2)[inside])


# ------------------------------------------------------------------ the system


def test_capsule_inertia_matches_integration():
  want = np_capsule_inertia(pc.POLE_MASS, pc.POLE_RADIUS, pc.POLE_LENGTH)
  assert pc.POLE_INERTIA == pytest.approx(want, rel=2e-3)
  # the cylinder part is 0.6 long: the centre of mass sits 0.3 from the hinge end
  assert pc.POLE_LENGTH - 2 * pc.POLE_RADIUS == pytest.approx(2 * pc.POLE_COM)


def test_one_step_matches_hand_computed_equations():
  for name, repeat in (("paper_inverted_pendulum", 4), ("paper_cartpole", 2)):
    env = envs.make(name)
    state = np.array([0.2, 0.7, -0.5, 1.3])
    for a in (-1.0, 0.3, 2.0):  # 2.0 is clipped to 1
      got, _, _ = jax.jit(env.step_sim)(jnp.asarray(state, jnp.float32),
                                        jnp.array([a], jnp.float32))
      want = np_agent_step(state, a, repeat)
      np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)


def _energy_error(env, sim, steps=125):
  """Largest |E_t - E_0| over ``steps`` agent steps with zero force, and the trajectory."""

  def body(s, _):
    s2, _, _ = env.step_sim(s, jnp.zeros((1,), jnp.float32))
    return s2, s2

  _, traj = jax.jit(lambda s: jax.lax.scan(body, s, None, length=steps))(sim)
  traj = np.asarray(traj, np.float64)
  e0 = float(pc.energy(np.asarray(sim, np.float64)))
  return np.max(np.abs(np.asarray(pc.energy(traj)) - e0)), traj


def test_energy_is_conserved_without_force():
  """Semi-implicit Euler on a configuration-dependent mass matrix is not exactly
  symplectic, so the energy error is small and vanishes with the substep (order 1)."""
  env = envs.make("paper_cartpole")
  fine = envs.make("paper_cartpole")
  fine.substeps, fine.substep_dt = 4 * env.substeps, env.substep_dt / 4  # same dt
  sim = jnp.array([0.0, 2.5, 0.4, -1.0], jnp.float32)  # large swings, moving cart
  scale = pc.POLE_MASS * pc.GRAVITY * pc.POLE_COM  # half the potential-energy swing
  err, traj = _energy_error(env, sim)
  err_fine, traj_fine = _energy_error(fine, sim)
  assert np.ptp(traj[:, 1]) > 1.0  # it really swung
  assert err / scale < 0.03
  assert err_fine < err / 3  # first order: 4x smaller substep, ~4x smaller error
  # momentum along x is conserved (no horizontal force), to the same order
  p = lambda s: ((pc.CART_MASS + pc.POLE_MASS) * s[..., 2]
                 + pc.POLE_MASS * pc.POLE_COM * np.cos(s[..., 1]) * s[..., 3])
  p0 = p(np.asarray(sim, np.float64))
  p_err, p_err_fine = np.abs(p(traj) - p0).max(), np.abs(p(traj_fine) - p0).max()
  assert p_err / abs(p0) < 1e-2 and p_err_fine < p_err / 3
  # and a force does work: the energy changes
  pushed, _, _ = jax.jit(env.step_sim)(sim, jnp.ones((1,), jnp.float32))
  e0 = float(pc.energy(np.asarray(sim, np.float64)))
  assert abs(float(pc.energy(np.asarray(pushed, np.float64))) - e0) > 1.0


def test_resets_and_registry():
  ip, cp = envs.make("paper_inverted_pendulum"), envs.make("paper_cartpole")
  assert (ip.action_repeat, ip.episode_length, cp.action_repeat, cp.episode_length) == (
      4, 250, 2, 500)
  assert ip.dt == pytest.approx(0.16) and cp.dt == pytest.approx(0.08)
  keys = jax.random.split(jax.random.PRNGKey(0), 256)
  for env, angle in ((ip, 0.0), (cp, math.pi)):
    s = np.asarray(jax.vmap(env.init_sim)(keys))
    assert np.all(s[:, [0, 2]] == 0)
    assert np.all(np.abs(s[:, 1] - angle) <= 0.01) and np.all(np.abs(s[:, 3]) <= 0.01)
    assert s[:, 1].std() > 0.004
  families = {s.name: s.family for s in envs.list_envs()}
  assert {n for n, f in families.items() if f == "paper"} == set(CARTPOLES + BRAX_TASKS)


def test_inverted_pendulum_terminates_at_pole_height():
  env = envs.make("paper_inverted_pendulum")
  limit = math.acos(1 / 3)
  cos = lambda th: jnp.array([0.0, math.cos(th), math.sin(th), 0.0, 0.0], jnp.float32)
  assert not bool(env.termination_fn(None, None, cos(limit - 1e-3)))
  assert bool(env.termination_fn(None, None, cos(limit + 1e-3)))
  assert bool(env.termination_fn(None, None, cos(-limit - 1e-3)))
  # still alive at 60 degrees, unlike Brax's inverted_pendulum (|angle| > 0.2 ends it)
  assert not bool(env.termination_fn(None, None, cos(math.radians(60))))


def test_cartpole_terminates_post_step_at_track_limit():
  env = envs.make("paper_cartpole")
  obs = lambda x: jnp.array([x, -1.0, 0.0, 0.0, 0.0], jnp.float32)
  assert not bool(env.termination_fn(obs(0.0), None, obs(0.999)))
  assert bool(env.termination_fn(obs(0.0), None, obs(-1.001)))  # post-step, no lag
  # rewards lie in [0, 1] and are near 0 hanging down, 1 upright and still at the centre
  r_up = env.reward(jnp.array([0.0, 0.0, 0.0, 0.0]), jnp.float32(0.0))
  r_down = env.reward(jnp.array([0.0, math.pi, 0.0, 0.0]), jnp.float32(0.0))
  assert float(r_up) == pytest.approx(1.0) and float(r_down) < 1e-6


# ------------------------------------------------------------------ exact restore


@pytest.mark.parametrize("name", CARTPOLES + BRAX_TASKS)
def test_stored_transitions_replay_exactly(name):
  """``simulate(stored sim, stored action)`` reproduces every stored transition."""
  env, out = probe(name)
  roll, stored = out["roll"], out["rep"]["stored"]
  np.testing.assert_allclose(stored["next_obs"], roll["next_obs"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stored["reward"], roll["reward"], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(stored["terminated"], roll["terminated"])
  assert roll["truncated"].any()  # the short time limit was hit: resets were replayed
  assert not np.any(roll["terminated"] & roll["truncated"])


@pytest.mark.parametrize("name", CARTPOLES + BRAX_TASKS)
def test_chained_replay_reproduces_episode(name):
  """A chain of ``simulate`` from the first stored sim reproduces the first episode."""
  env, out = probe(name)
  roll, chain = out["roll"], out["rep"]["chain"]
  first = _first_episode(roll)
  live = first & ~roll["terminated"]
  np.testing.assert_allclose(chain["next_obs"][first], roll["next_obs"][first],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(chain["reward"][live], roll["reward"][live], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_array_equal(chain["terminated"][first], roll["terminated"][first])
  if name in ("paper_inverted_pendulum", "paper_cartpole", "paper_halfcheetah"):
    assert first.sum(0).min() >= 30  # whole 30-step chains compared
  else:
    assert first.sum(0).max() >= 10


@pytest.mark.parametrize("name", CARTPOLES)
def test_cartpole_steps_match_numpy_equations(name):
  """Every stored transition equals one step of the float64 equations from its state."""
  env, out = probe(name)
  roll = out["roll"]
  sims = roll["sim"].reshape(-1, 4)
  actions = roll["action"].reshape(-1)
  for sim, a, got in zip(sims, actions, roll["next_obs"].reshape(-1, 5)):
    state = np_agent_step(np.asarray(sim, np.float64), a, env.action_repeat)
    want = np.array([state[0], np.cos(state[1]), np.sin(state[1]), state[2], state[3]])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
  if name == "paper_inverted_pendulum":
    assert not roll["terminated"].any()  # the feedback balanced every lane
    np.testing.assert_array_equal(roll["reward"], 1.0)


@pytest.mark.parametrize("name", BRAX_TASKS)
def test_brax_chain_matches_brax_pipeline(name):
  """A chain of ``simulate`` from minimal sims equals brax's own full-state steps."""
  env, out = probe(name)
  chain, nat = out["rep"]["chain"], out["nat"]
  np.testing.assert_allclose(chain["next_obs"], nat["next_obs"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(chain["reward"], nat["reward"], rtol=1e-4, atol=1e-4)
  assert env.obs_size == {"paper_hopper": 14, "paper_walker2d": 20,
                          "paper_halfcheetah": 23}[name]
  obs = out["roll"]["obs"]
  np.testing.assert_allclose(np.linalg.norm(obs[..., 1:5], axis=-1), 1.0, atol=1e-5)
  # termination is the task's height test on the next observation
  z = out["roll"]["next_obs"][..., 0]
  lo, hi = {"paper_hopper": (0.7, np.inf), "paper_walker2d": (0.7, 2.0),
            "paper_halfcheetah": (-np.inf, np.inf)}[name]
  np.testing.assert_array_equal(out["roll"]["terminated"], (z < lo) | (z > hi))
