"""Tests of the brax adapter ``mvelab.envs.brax_env.BraxEnv``.

Each env x backend combination is probed ONCE by one jitted function (compile time
dominates: 1-8 s per physics step site), whose outputs all tests read:

* ``roll``: ``B`` envs x ``T`` agent steps of ``Env.step`` (random actions, time limit
  ``EPISODE_LENGTH``, auto-reset);
* ``nat``: brax's own ``env.step`` from the same initial states with the same actions
  (full pipeline state, no time limit, no reset);
* ``rep``: ``Env.simulate`` from four kinds of stored states, in one batch: a *chain*
  replaying ``roll``'s actions from its first states without any reset (continues past
  terminations), ``roll``'s stored sims, the minimal sims extracted from ``nat``'s full
  brax states (the exactness proof: same result as brax's step from its full state), and
  ``roll``'s sims with velocities blown up to 1e30 (the non-finite guard).

Default matrix: every backend on inverted_pendulum and hopper (contacts), every env on
the default backend spring. ``MVELAB_FULL_TESTS=1`` runs all 24 combinations.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.envs import make
from mvelab.envs.brax_env import BACKENDS, BRAX_ENV_NAMES, BraxEnv
from mvelab.errors import ConfigError

B = 8  # envs per rollout
T = 24  # agent steps per rollout
EPISODE_LENGTH = 8  # small time limit: truncations and terminations both occur
RTOL = ATOL = 1e-5  # float32 tolerance for "exact"

FULL = os.environ.get("MVELAB_FULL_TESTS", "") == "1"
DEFAULT_COMBOS = ([("inverted_pendulum", b) for b in BACKENDS] + [("hopper", b) for b in BACKENDS]
                  + [(n, "spring") for n in BRAX_ENV_NAMES
                     if n not in ("inverted_pendulum", "hopper")])
COMBOS = [
    pytest.param(n, b, id=f"{n}-{b}", marks=() if FULL or (n, b) in DEFAULT_COMBOS else
                 pytest.mark.skip(reason="full matrix: set MVELAB_FULL_TESTS=1"))
    for n in BRAX_ENV_NAMES for b in BACKENDS
]

# Velocity leaves of each backend's sim (blown up to test the non-finite guard).
VELOCITY_KEYS = dict(spring=("xd_i_ang", "xd_i_vel"), positional=("xd_i_ang", "xd_i_vel"),
                     generalized=("qd",), mjx=("qvel",))


def _cat(*trees):
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


@functools.lru_cache(maxsize=None)
def probe(name: str, backend: str):
  """Runs the env x backend probe once; returns ``(env, roll, nat, rep)`` as numpy."""
  env = make(name, backend=backend, episode_length=EPISODE_LENGTH)
  benv = env.brax_env

  def run(key):
    k_reset, k_act = jax.random.split(key)
    keys = jax.random.split(k_reset, B)
    s0 = jax.vmap(env.reset)(keys)
    actions = jax.random.uniform(k_act, (T, B, env.action_size), minval=-1.0, maxval=1.0)

    def body(s, a):
      s2 = jax.vmap(env.step)(s, a)
      rec = dict(obs=s.obs, sim=s.sim, t=s.t, action=a, next_obs=s2.next_obs,
                 next_sim=s2.next_sim, reward=s2.reward, terminated=s2.terminated,
                 truncated=s2.truncated, new_obs=s2.obs, new_t=s2.t,
                 next_obs_of_sim=jax.vmap(env.observe)(s2.next_sim),
                 new_obs_of_sim=jax.vmap(env.observe)(s2.sim),
                 tf=env.termination_fn(s.obs, a, s2.next_obs))
      return s2, rec

    _, roll = jax.lax.scan(body, s0, actions)

    # brax's own env from the same initial states (Env.reset draws with split(key)[1]).
    n0 = jax.vmap(benv.reset)(jax.vmap(lambda k: jax.random.split(k)[1])(keys))

    def nbody(s, a):
      s2 = jax.vmap(benv.step)(s, a)
      rec = dict(obs=s.obs, sim=jax.vmap(env.extract)(s.pipeline_state), next_obs=s2.obs,
                 reward=s2.reward, done=s2.done > 0.5,
                 tf=env.termination_fn(s.obs, a, s2.obs))
      return s2, rec

    _, nat = jax.lax.scan(nbody, n0, actions)

    def rbody(chain, xs):
      sim_t, nat_sim_t, a = xs
      blown = {k: v * 1e30 if k in VELOCITY_KEYS[backend] else v for k, v in sim_t.items()}
      sims = _cat(chain, sim_t, nat_sim_t, blown)
      nxt, nobs, rew, term = jax.vmap(env.simulate)(sims, jnp.concatenate([a] * 4))
      out = dict(next_sim=nxt, next_obs=nobs, reward=rew, terminated=term)
      parts = {p: jax.tree.map(lambda x, i=i: x[i * B:(i + 1) * B], out)
               for i, p in enumerate(("chain", "stored", "native", "blown"))}
      parts["chain"]["tf"] = env.termination_fn(None, a, parts["chain"]["next_obs"])
      return parts["chain"]["next_sim"], parts

    _, rep = jax.lax.scan(rbody, s0.sim, (roll["sim"], nat["sim"], actions))
    return roll, nat, rep

  roll, nat, rep = jax.device_get(jax.jit(run)(jax.random.PRNGKey(0)))
  return env, roll, nat, rep


def _close(a, b, mask=None):
  a, b = np.asarray(a), np.asarray(b)
  if mask is not None:
    a, b = a[mask], b[mask]
  np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


def _alive_before(done):
  """``[T, B]`` bool: no done at any step strictly before t."""
  done = np.asarray(done, bool)
  return np.concatenate([np.ones_like(done[:1]), np.cumsum(done, 0)[:-1] == 0], axis=0)


# ------------------------------------------------------------------ construction
def test_construction_options_and_frames():
  env = BraxEnv("inverted_pendulum", backend="spring", action_repeat=3, episode_length=7)
  assert env.default_n_frames == 4  # brax uses 4 frames (timestep 0.005) on spring
  assert env.n_frames == 12 and env.action_repeat == 3 and env.episode_length == 7
  np.testing.assert_allclose(env.dt, 3 * 0.02, rtol=1e-6)
  assert BraxEnv("inverted_pendulum", backend="generalized").default_n_frames == 2
  assert BraxEnv("halfcheetah", backend="spring").default_n_frames == 16
  assert BraxEnv("halfcheetah", backend="generalized").default_n_frames == 5
  assert env.describe() == dict(name="inverted_pendulum", obs_size=4, action_size=1,
                                episode_length=7, action_repeat=3, backend="spring")
  with pytest.raises(ConfigError):
    BraxEnv("humanoid")
  with pytest.raises(ConfigError):
    BraxEnv("hopper", backend="warp")
  with pytest.raises(ConfigError):
    BraxEnv("hopper", action_repeat=0)


@pytest.mark.parametrize("name,backend", COMBOS)
def test_sizes_match_brax(name, backend):
  env, roll, nat, _ = probe(name, backend)
  assert env.obs_size == env.brax_env.observation_size == roll["obs"].shape[-1]
  assert env.action_size == env.brax_env.action_size
  assert nat["obs"].shape[-1] == env.obs_size
  for leaf in jax.tree.leaves(roll["sim"]):
    assert leaf.dtype == np.float32
  # the brax obs of the same initial states is ours
  _close(roll["obs"][0], nat["obs"][0])


@pytest.mark.parametrize("name,backend", COMBOS)
def test_minimal_sim_reproduces_brax_step(name, backend):
  """One step from the minimal sim of a brax state == brax's step from the full state."""
  env, _, nat, rep = probe(name, backend)
  alive = _alive_before(nat["done"])
  assert alive.sum() >= B
  _close(rep["native"]["next_obs"], nat["next_obs"], alive)
  _close(rep["native"]["reward"], nat["reward"], alive)
  np.testing.assert_array_equal(rep["native"]["terminated"][alive], nat["done"][alive])


@pytest.mark.parametrize("name,backend", COMBOS)
def test_exact_replay_one_step(name, backend):
  env, roll, _, rep = probe(name, backend)
  live = ~roll["terminated"]
  _close(rep["stored"]["next_obs"], roll["next_obs"], live)
  _close(rep["stored"]["reward"], roll["reward"], live)
  np.testing.assert_array_equal(rep["stored"]["terminated"], roll["terminated"])
  for a, b in zip(jax.tree.leaves(rep["stored"]["next_sim"]), jax.tree.leaves(roll["next_sim"])):
    _close(a, b, live)


@pytest.mark.parametrize("name,backend", COMBOS)
def test_exact_replay_rollout(name, backend):
  """A chain of ``simulate`` from the first stored sim reproduces the whole episode."""
  env, roll, _, rep = probe(name, backend)
  done = roll["terminated"] | roll["truncated"]
  first_episode = _alive_before(done)  # steps of each row's first episode
  assert first_episode.sum(0).max() >= 5
  _close(rep["chain"]["next_obs"], roll["next_obs"], first_episode)
  _close(rep["chain"]["reward"], roll["reward"], first_episode)
  np.testing.assert_array_equal(rep["chain"]["terminated"][first_episode],
                                roll["terminated"][first_episode])


@pytest.mark.parametrize("name,backend", COMBOS)
def test_time_limit_truncates_not_terminates(name, backend):
  env, roll, _, _ = probe(name, backend)
  term, trunc = roll["terminated"], roll["truncated"]
  assert not np.any(term & trunc)
  assert trunc.any()
  # truncated exactly when the step counter reaches the limit without a termination
  np.testing.assert_array_equal(trunc, (roll["t"] + 1 >= EPISODE_LENGTH) & ~term)
  done = term | trunc
  np.testing.assert_array_equal(roll["new_t"], np.where(done, 0, roll["t"] + 1))
  assert roll["t"].max() == EPISODE_LENGTH - 1


@pytest.mark.parametrize("name,backend", COMBOS)
def test_auto_reset_keeps_final_transition(name, backend):
  env, roll, _, rep = probe(name, backend)
  done = roll["terminated"] | roll["truncated"]
  assert done.any()
  # next_obs/next_sim are the finished episode's true final state ...
  _close(roll["next_obs"], roll["next_obs_of_sim"])
  _close(rep["stored"]["next_obs"][done], roll["next_obs"][done])
  # ... while obs/sim hold the new episode's first state, which the next step starts from
  _close(roll["new_obs"], roll["new_obs_of_sim"])
  _close(roll["obs"][1:], roll["new_obs"][:-1])
  assert np.all(np.abs(roll["new_obs"][done] - roll["next_obs"][done]).max(-1) > 0)
  np.testing.assert_array_equal(roll["new_obs"][~done], roll["next_obs"][~done])


@pytest.mark.parametrize("name,backend", COMBOS)
def test_nothing_non_finite(name, backend):
  env, roll, _, rep = probe(name, backend)
  for tree in (roll, rep["chain"], rep["stored"], rep["blown"]):
    for leaf in jax.tree.leaves(tree):
      if np.issubdtype(leaf.dtype, np.floating):
        assert np.all(np.isfinite(leaf))
  # blown-up states cannot be stepped: the guard reports them as terminated
  assert rep["blown"]["terminated"].any()


@pytest.mark.parametrize("name,backend", COMBOS)
def test_termination_fn_agrees_with_env(name, backend):
  env, roll, nat, rep = probe(name, backend)
  np.testing.assert_array_equal(roll["tf"], roll["terminated"])
  alive = _alive_before(nat["done"])
  np.testing.assert_array_equal(nat["tf"][alive], nat["done"][alive])
  chain_alive = _alive_before(rep["chain"]["terminated"])
  np.testing.assert_array_equal(rep["chain"]["tf"][chain_alive],
                                rep["chain"]["terminated"][chain_alive])


def _obs(env, **entries):
  o = np.zeros((env.obs_size,), np.float32)
  for i, v in entries.items():
    o[int(i[1:])] = v
  return o


def test_termination_fn_thresholds():
  """Each env's done rule at its thresholds, on hand-made observations (no physics)."""
  def tf(env, **entries):
    o = _obs(env, **entries)
    return bool(env.termination_fn(o, None, o))

  ip = BraxEnv("inverted_pendulum")
  assert not tf(ip, i1=0.19) and tf(ip, i1=0.21) and tf(ip, i1=-0.21)
  idp = BraxEnv("inverted_double_pendulum")
  assert not tf(idp, i3=1.0, i4=1.0)  # upright: y = 1.2
  assert tf(idp, i3=0.8, i4=0.2, i1=0.6, i2=0.98)  # y = 0.6 (0.8 + 0.16 - 0.588) <= 1
  hop = BraxEnv("hopper")
  assert not tf(hop, i0=1.2)
  assert tf(hop, i0=0.69) and tf(hop, i0=1.2, i1=0.21) and tf(hop, i0=1.2, i3=100.0)
  assert tf(hop, i0=np.nan)
  walker = BraxEnv("walker2d")
  assert not tf(walker, i0=1.2, i1=0.9)
  assert tf(walker, i0=0.79) and tf(walker, i0=2.01) and tf(walker, i0=1.2, i1=-1.01)
  cheetah = BraxEnv("halfcheetah")
  assert not tf(cheetah, i0=-50.0)
  ant = BraxEnv("ant")
  assert not tf(ant, i0=0.5) and tf(ant, i0=0.19) and tf(ant, i0=1.01)
  batch = np.zeros((3, 5, ant.obs_size), np.float32)
  assert ant.termination_fn(batch, None, batch).shape == (3, 5)


def test_module_quiets_brax_warnings():
  import warnings
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    BraxEnv("inverted_pendulum", backend="generalized")
  assert not [w for w in caught if "maintained" in str(w.message)]
