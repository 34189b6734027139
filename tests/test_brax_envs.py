"""Tests of the brax adapter ``mvelab.envs.brax_env.BraxEnv``.

Compile time dominates (3-12 s of CPU per physics call site per env x backend), so each
combination is probed ONCE by one jitted function with as few physics call sites as
possible, and all tests read its outputs:

* ``nat``: brax's own ``env.reset``/``env.step`` (full pipeline state, no time limit, no
  reset), ``B`` envs x ``T`` random actions;
* ``rep``: ``Env.simulate`` on one batch made of a *chain* replaying the actions from the
  first states (``extract`` of brax's reset states) without any reset, continuing past
  terminations; the minimal sims ``extract``-ed from brax's full states at every step (the
  exactness proof: same result as brax's step from the full state); those sims with the
  velocities blown up to 1e30 (the non-finite guard); and, where the Env API is probed,
  the sims stored by ``roll``;
* ``roll`` (Env API combos only): ``Env.reset``/``Env.step`` with time limit
  ``EPISODE_LENGTH`` and auto-reset.

Default matrix: every backend on inverted_pendulum, hopper (contacts) on spring, every env
on the default backend spring (hopper on mjx, 42 s of CPU compile on the slower 2-core
machine, runs with the full matrix: MJX is meant for GPUs). The Env API (``roll``: time
limit, auto-reset, stored replays) is backend-generic code around the same primitives: it
is probed on inverted_pendulum-spring,
inverted_pendulum-mjx and hopper-spring. ``MVELAB_FULL_TESTS=1`` runs everything on all
24 combinations (about 10 min of CPU).
"""

from __future__ import annotations

import functools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.envs import make
from mvelab.envs.brax_env import BACKENDS, BRAX_ENV_NAMES, BraxEnv
from mvelab.errors import ConfigError

B = 4  # envs per rollout (XLA:CPU compile time grows with the batch: keep it small)
N_BLOWN = 2  # rows with blown-up velocities
T = 24  # agent steps per rollout
EPISODE_LENGTH = 8  # small time limit: truncations and terminations both occur
RTOL = ATOL = 1e-5  # float32 tolerance for "exact"
# The probe runs a few dozen steps: LLVM optimisation is not worth its ~30% of compile time.
XLA_OPTIONS = {"xla_backend_optimization_level": 0}

FULL = os.environ.get("MVELAB_FULL_TESTS", "") == "1"
# The default matrix: every backend on inverted_pendulum, contacts (hopper) on the maximal-
# coordinate backend, every other env on spring (~17 s of compile per probe; the whole
# matrix, hopper on mjx included, with MVELAB_FULL_TESTS=1).
DEFAULT_COMBOS = ([("inverted_pendulum", b) for b in BACKENDS]
                  + [("hopper", "spring")]
                  + [(n, "spring") for n in BRAX_ENV_NAMES
                     if n not in ("inverted_pendulum", "hopper")])
API_COMBOS = [("inverted_pendulum", "spring"), ("inverted_pendulum", "mjx"), ("hopper", "spring")]


def _params(combos):
  return [pytest.param(n, b, id=f"{n}-{b}", marks=() if FULL or (n, b) in combos else
                       pytest.mark.skip(reason="full matrix: set MVELAB_FULL_TESTS=1"))
          for n in BRAX_ENV_NAMES for b in BACKENDS]


COMBOS = _params(DEFAULT_COMBOS)
API = _params(API_COMBOS)

# Where termination_fn is only approximate (BraxEnv.termination_fn): the largest
# disagreement rate allowed on the probe's transitions (measured rates in the report).
APPROX_TERMINATION = {("inverted_double_pendulum", "spring"): 0.05,
                      ("inverted_double_pendulum", "positional"): 0.05}

# Velocity leaves of each backend's sim (blown up to test the non-finite guard).
VELOCITY_KEYS = dict(spring=("xd_i_ang", "xd_i_vel"), positional=("xd_i_ang", "xd_i_vel"),
                     generalized=("qd",), mjx=("qvel",))


def _cat(*trees):
  return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=0), *trees)


@functools.lru_cache(maxsize=None)
def probe(name: str, backend: str):
  """Runs the probe of one env x backend once; returns ``(env, out)`` as numpy.

  ``out`` has ``nat``, ``obs0`` and ``rep`` (``chain``/``native``/``blown`` and, with the
  Env API probed, ``stored``) and ``roll`` (``None`` unless the Env API is probed).
  """
  env = make(name, backend=backend, episode_length=EPISODE_LENGTH)
  benv = env.brax_env
  api = FULL or (name, backend) in API_COMBOS

  def run(key):
    k_reset, k_act = jax.random.split(key)
    keys = jax.random.split(k_reset, B)
    actions = jax.random.uniform(k_act, (T, B, env.action_size), minval=-1.0, maxval=1.0)

    # brax's own env, from the initial states Env.reset draws (with split(key)[1]) ...
    b0 = jax.vmap(benv.reset)(jax.vmap(lambda k: jax.random.split(k)[1])(keys))
    sim0 = jax.vmap(env.extract)(b0.pipeline_state)
    # ... as restored from their minimal sims: on spring/positional brax's reset computes
    # the world poses x by forward kinematics, the restore from the centre-of-mass poses;
    # they differ by float32 rounding only (``reset_err``), but chaotic envs amplify even
    # that (halfcheetah-spring: 1e-8 -> O(1) in 20 steps), so the dynamics are compared
    # from identical states.
    restored0 = jax.vmap(env.restore)(sim0)
    n0 = b0.replace(pipeline_state=restored0)
    if backend == "mjx":  # the restore is a zero template apart from what mjx.step reads
      reset_err = jnp.abs(restored0.q - b0.pipeline_state.q).max()
    else:
      reset_err = jnp.max(jnp.stack([jnp.abs(a - b).max() for a, b in zip(
          jax.tree.leaves((restored0.q, restored0.qd, restored0.x, restored0.xd)),
          jax.tree.leaves((b0.pipeline_state.q, b0.pipeline_state.qd, b0.pipeline_state.x,
                           b0.pipeline_state.xd)))]))

    def nbody(s, a):
      s2 = jax.vmap(benv.step)(s, a)
      rec = dict(obs=s.obs, sim=jax.vmap(env.extract)(s.pipeline_state), next_obs=s2.obs,
                 reward=s2.reward, done=s2.done > 0.5,
                 tf=env.termination_fn(s.obs, a, s2.obs))
      return s2, rec

    _, nat = jax.lax.scan(nbody, n0, actions)
    out = dict(nat=nat, obs0=jax.vmap(env.observe)(sim0), brax_obs0=b0.obs,
               reset_err=reset_err, roll=None)

    if api:
      def body(s, a):
        s2 = jax.vmap(env.step)(s, a)
        rec = dict(obs=s.obs, sim=s.sim, t=s.t, next_obs=s2.next_obs, next_sim=s2.next_sim,
                   reward=s2.reward, terminated=s2.terminated, truncated=s2.truncated,
                   new_obs=s2.obs, new_t=s2.t,
                   next_obs_of_sim=jax.vmap(env.observe)(s2.next_sim),
                   new_obs_of_sim=jax.vmap(env.observe)(s2.sim),
                   tf=env.termination_fn(s.obs, a, s2.next_obs))
        return s2, rec

      s0 = jax.vmap(env.reset)(keys)
      _, out["roll"] = jax.lax.scan(body, s0, actions)
      out["roll"]["sim0"] = s0.sim

    parts = ("chain", "native", "blown") + (("stored",) if api else ())

    def rbody(chain, xs):
      nat_sim_t, a = xs[0], xs[1]
      blown = {k: v[:N_BLOWN] * (1e30 if k in VELOCITY_KEYS[backend] else 1.0)
               for k, v in nat_sim_t.items()}
      sims = _cat(chain, nat_sim_t, blown, *xs[2:])
      acts = jnp.concatenate([a, a, a[:N_BLOWN]] + [a] * (len(parts) - 3))
      nxt, nobs, rew, term = jax.vmap(env.simulate)(sims, acts)
      res = dict(next_sim=nxt, next_obs=nobs, reward=rew, terminated=term)
      bounds = np.cumsum([0, B, B, N_BLOWN] + [B] * (len(parts) - 3))
      res = {p: jax.tree.map(lambda x, i=i: x[bounds[i]:bounds[i + 1]], res)
             for i, p in enumerate(parts)}
      res["chain"]["tf"] = env.termination_fn(None, a, res["chain"]["next_obs"])
      return res["chain"]["next_sim"], res

    xs = (nat["sim"], actions) + ((out["roll"]["sim"],) if api else ())
    _, out["rep"] = jax.lax.scan(rbody, sim0, xs)
    return out

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # brax's deprecation noise while tracing its own env
    out = jax.device_get(jax.jit(run, compiler_options=XLA_OPTIONS)(jax.random.PRNGKey(0)))
  return env, out


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
def test_sizes_and_reset_match_brax(name, backend):
  env, out = probe(name, backend)
  nat = out["nat"]
  assert env.obs_size == nat["obs"].shape[-1]  # brax's own obs size
  assert env.action_size == env.brax_env.action_size
  for leaf in jax.tree.leaves(nat["sim"]):
    assert leaf.dtype == np.float32
  # our observation of brax's reset states is brax's; the restored state is brax's up to
  # float32 rounding
  _close(out["obs0"], out["brax_obs0"])
  assert out["reset_err"] < 1e-6
  if out["roll"] is not None:  # Env.reset draws brax's initial states
    _close(out["roll"]["obs"][0], nat["obs"][0])
    for a, b in zip(jax.tree.leaves(out["roll"]["sim0"]), jax.tree.leaves(nat["sim"])):
      np.testing.assert_array_equal(a, b[0])


@pytest.mark.parametrize("name,backend", COMBOS)
def test_minimal_sim_reproduces_brax_step(name, backend):
  """One step from the minimal sim of a brax state == brax's step from its full state."""
  env, out = probe(name, backend)
  nat, rep = out["nat"], out["rep"]
  alive = _alive_before(nat["done"])
  assert alive.sum() >= 2 * B
  _close(rep["native"]["next_obs"], nat["next_obs"], alive)
  _close(rep["native"]["reward"], nat["reward"], alive)
  np.testing.assert_array_equal(rep["native"]["terminated"][alive], nat["done"][alive])


@pytest.mark.parametrize("name,backend", COMBOS)
def test_replay_of_whole_rollout_reproduces_brax(name, backend):
  """``simulate`` chained from a stored first sim reproduces brax's own rollout."""
  env, out = probe(name, backend)
  nat, chain = out["nat"], out["rep"]["chain"]
  alive = _alive_before(nat["done"])
  assert alive.sum(0).max() >= 5  # some row replays at least 5 steps
  _close(chain["next_obs"], nat["next_obs"], alive)
  _close(chain["reward"], nat["reward"], alive)
  np.testing.assert_array_equal(chain["terminated"][alive], nat["done"][alive])


@pytest.mark.parametrize("name,backend", API)
def test_exact_replay_one_step(name, backend):
  """``simulate(stored sim, stored action)`` reproduces every stored transition."""
  env, out = probe(name, backend)
  roll, stored = out["roll"], out["rep"]["stored"]
  live = ~roll["terminated"]
  assert live.sum() >= B
  _close(stored["next_obs"], roll["next_obs"], live)
  _close(stored["reward"], roll["reward"], live)
  np.testing.assert_array_equal(stored["terminated"], roll["terminated"])
  for a, b in zip(jax.tree.leaves(stored["next_sim"]), jax.tree.leaves(roll["next_sim"])):
    _close(a, b, live)


@pytest.mark.parametrize("name,backend", API)
def test_exact_replay_episode(name, backend):
  """A chain of ``simulate`` from a stored first sim reproduces the whole first episode."""
  env, out = probe(name, backend)
  roll, chain = out["roll"], out["rep"]["chain"]
  first_episode = _alive_before(roll["terminated"] | roll["truncated"])
  assert first_episode.sum(0).max() >= 5
  live = first_episode & ~roll["terminated"]
  _close(chain["next_obs"], roll["next_obs"], live)
  _close(chain["reward"], roll["reward"], live)
  np.testing.assert_array_equal(chain["terminated"][first_episode],
                                roll["terminated"][first_episode])


@pytest.mark.parametrize("name,backend", API)
def test_time_limit_truncates_not_terminates(name, backend):
  env, out = probe(name, backend)
  roll = out["roll"]
  term, trunc = roll["terminated"], roll["truncated"]
  assert not np.any(term & trunc)
  assert trunc.any()
  # truncated exactly when the step counter reaches the limit without a termination
  np.testing.assert_array_equal(trunc, (roll["t"] + 1 >= EPISODE_LENGTH) & ~term)
  done = term | trunc
  np.testing.assert_array_equal(roll["new_t"], np.where(done, 0, roll["t"] + 1))
  assert roll["t"].max() == EPISODE_LENGTH - 1


@pytest.mark.parametrize("name,backend", API)
def test_auto_reset_keeps_final_transition(name, backend):
  env, out = probe(name, backend)
  roll, stored = out["roll"], out["rep"]["stored"]
  done = roll["terminated"] | roll["truncated"]
  assert done.any()
  # next_obs/next_sim are the finished transition's true final state (as simulate says) ...
  np.testing.assert_array_equal(roll["next_obs"], roll["next_obs_of_sim"])
  _close(stored["next_obs"][done], roll["next_obs"][done])
  for a, b in zip(jax.tree.leaves(stored["next_sim"]), jax.tree.leaves(roll["next_sim"])):
    _close(a[done], b[done])
  # ... while obs/sim hold the new episode's first state, which the next step starts from
  np.testing.assert_array_equal(roll["new_obs"], roll["new_obs_of_sim"])
  np.testing.assert_array_equal(roll["obs"][1:], roll["new_obs"][:-1])
  assert np.all(np.abs(roll["new_obs"][done] - roll["next_obs"][done]).max(-1) > 0)
  np.testing.assert_array_equal(roll["new_obs"][~done], roll["next_obs"][~done])


@pytest.mark.parametrize("name,backend", COMBOS)
def test_nothing_non_finite(name, backend):
  """No NaN/inf leaves step_sim: not after terminations, not from blown-up states."""
  env, out = probe(name, backend)
  rep = out["rep"]
  trees = [rep[p] for p in rep] + ([out["roll"]] if out["roll"] is not None else [])
  for tree in trees:
    for leaf in jax.tree.leaves(tree):
      if np.issubdtype(leaf.dtype, np.floating):
        assert np.all(np.isfinite(leaf))
  # the chain kept stepping terminated states; blown-up states are reported as terminated
  assert rep["blown"]["terminated"].any()


@pytest.mark.parametrize("name,backend", COMBOS)
def test_termination_fn_agrees_with_env(name, backend):
  """termination_fn(next_obs) == the env's flag on real transitions of live states."""
  env, out = probe(name, backend)
  nat, chain = out["nat"], out["rep"]["chain"]
  alive = _alive_before(nat["done"])
  chain_alive = _alive_before(chain["terminated"])
  pairs = [(nat["tf"][alive], nat["done"][alive]),
           (chain["tf"][chain_alive], chain["terminated"][chain_alive])]
  if out["roll"] is not None:
    pairs.append((out["roll"]["tf"], out["roll"]["terminated"]))
  for tf, flag in pairs:
    if (name, backend) in APPROX_TERMINATION:  # documented in BraxEnv.termination_fn
      assert np.mean(tf != flag) <= APPROX_TERMINATION[(name, backend)]
    else:
      np.testing.assert_array_equal(tf, flag)


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
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    BraxEnv("inverted_pendulum", backend="generalized")
  assert not [w for w in caught if "maintained" in str(w.message)]
