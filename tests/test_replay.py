"""Tests of the ring replay buffer (hand-checkable sizes: 3 envs x 5 slots).

Every stored value is coded ``code = env * 100 + step`` so a sample can be decoded back
to the (environment, time step) it was written at.
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab import replay
from mvelab.envs.base import EnvState
from mvelab.errors import ConfigError

NUM_ENVS = 3
CAPACITY = 15  # -> 5 slots per environment
CAP = CAPACITY // NUM_ENVS


def coded(env, step, xp=np) -> replay.Transition:
  """Transition with leading axes ``env.shape`` whose every field encodes (env, step)."""
  env, step = xp.asarray(env), xp.asarray(step)
  code = (env * 100 + step).astype(xp.float32)
  m = xp.broadcast_to(code[..., None, None], code.shape + (2, 3))
  i = code.astype(xp.int32)
  return replay.Transition(
      obs_tm1=xp.stack([code, -code, code + 0.5, code * 2], -1),  # [..., 4]
      action_tm1=xp.stack([code, code + 1], -1) / xp.float32(1024.0),  # [..., 2], exact
      logprob_tm1=-code,
      reward_t=code,
      terminated_t=(env + step) % 4 == 0,
      truncated_t=(env + step) % 5 == 0,
      obs_t=xp.stack([code + 1, -code, code, code], -1),
      sim_tm1={"q": xp.stack([code, code + 0.25], -1),  # [..., 2]
               "nested": {"m": m, "i": i}},  # [..., 2, 3], [...]
      sim_t={"q": xp.stack([code + 1, code + 1.25], -1),
             "nested": {"m": m + 1, "i": i + 1}})


def make_batch(step: int, num_envs: int = NUM_ENVS) -> replay.Transition:
  """Transition batch ``[num_envs, ...]`` written at time ``step``."""
  return coded(np.arange(num_envs), np.full((num_envs,), step))


def example() -> replay.Transition:
  return coded(0, 0)


_add = jax.jit(replay.add)
_sample = jax.jit(replay.sample, static_argnums=2)
_windows = jax.jit(replay.sample_windows, static_argnums=(2, 3))


def filled(num_steps: int) -> replay.ReplayState:
  state = replay.init(CAPACITY, NUM_ENVS, example())
  for step in range(num_steps):
    state = _add(state, make_batch(step))
  return state


def decode(tr: replay.Transition):
  """(env, step) int arrays of a sample, after checking every field agrees."""
  code = np.asarray(tr.reward_t).astype(int)
  env, step = code // 100, code % 100
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, tr),
               coded(env, step))
  return env, step


# --------------------------------------------------------------------------- init


def test_init_shapes_dtypes_zeros():
  state = replay.init(CAPACITY, NUM_ENVS, example())
  assert state.num_envs == NUM_ENVS and state.capacity_per_env == CAP
  assert state.data.obs_tm1.shape == (NUM_ENVS, CAP, 4)
  assert state.data.reward_t.shape == (NUM_ENVS, CAP)
  assert state.data.terminated_t.dtype == jnp.bool_
  assert state.data.sim_tm1["nested"]["m"].shape == (NUM_ENVS, CAP, 2, 3)
  assert state.data.sim_t["nested"]["i"].dtype == jnp.int32
  assert state.pos.dtype == jnp.int32 and state.size.dtype == jnp.int32
  assert int(state.pos) == 0 and int(state.size) == 0
  for leaf in jax.tree.leaves(state.data):
    assert not np.any(np.asarray(leaf))


def test_init_capacity_rounds_down_per_env():
  state = replay.init(17, NUM_ENVS, example())
  assert state.capacity_per_env == 5
  assert replay.init(3, 3, example()).capacity_per_env == 1


@pytest.mark.parametrize("capacity,num_envs,option", [
    (0, 3, "replay_capacity"), (-5, 3, "replay_capacity"), (2.5, 1, "replay_capacity"),
    (True, 1, "replay_capacity"), ("15", 3, "replay_capacity"), (15, 0, "num_envs"),
    (15, -1, "num_envs"), (15, 3.0, "num_envs"), (2, 3, "replay_capacity"),
])
def test_init_config_errors(capacity, num_envs, option):
  with pytest.raises(ConfigError, match=option) as info:
    replay.init(capacity, num_envs, example())
  msg = str(info.value)
  assert "positive integer" in msg or "at least num_envs" in msg
  with pytest.raises(ConfigError, match=option):
    replay.memory_report(example(), capacity, num_envs)


def test_capacity_below_num_envs_message_names_both():
  with pytest.raises(ConfigError) as info:
    replay.init(2, 3, example())
  msg = str(info.value)
  assert "replay_capacity=2" in msg and "num_envs=3" in msg and "at least" in msg


# ---------------------------------------------------------------------------- add


def test_add_bookkeeping_and_wraparound():
  state = replay.init(CAPACITY, NUM_ENVS, example())
  for step in range(8):
    state = _add(state, make_batch(step))
    assert int(state.pos) == (step + 1) % CAP
    assert int(state.size) == min(step + 1, CAP)
  # Columns after 8 writes: steps [5, 6, 7, 3, 4]; steps 0..2 were overwritten.
  reward = np.asarray(state.data.reward_t)
  expected_steps = np.array([5, 6, 7, 3, 4])
  np.testing.assert_array_equal(
      reward, np.arange(NUM_ENVS)[:, None] * 100 + expected_steps[None, :])
  np.testing.assert_array_equal(state.data.sim_t["nested"]["i"],
                                reward.astype(np.int32) + 1)


def test_add_rejects_mismatched_batch():
  state = replay.init(CAPACITY, NUM_ENVS, example())
  with pytest.raises(ConfigError, match=r"num_envs"):
    replay.add(state, make_batch(0, num_envs=2))
  with pytest.raises(ConfigError, match="structure"):
    replay.add(state, make_batch(0).replace(sim_t={"q": jnp.zeros((NUM_ENVS, 2))}))


# ------------------------------------------------------------------------- sample


@pytest.mark.parametrize("num_steps,valid_steps", [(3, range(0, 3)), (8, range(3, 8))])
def test_sample_only_valid_entries_and_covers_all(num_steps, valid_steps):
  state = filled(num_steps)
  tr = _sample(state, jax.random.PRNGKey(0), 3000)
  assert tr.obs_tm1.shape == (3000, 4) and tr.sim_tm1["nested"]["m"].shape == (3000, 2, 3)
  env, step = decode(tr)
  counts = collections.Counter(zip(env.tolist(), step.tolist()))
  expected = {(e, s) for e in range(NUM_ENVS) for s in valid_steps}
  assert set(counts) == expected
  mean = 3000 / len(expected)
  assert all(abs(c - mean) < 0.35 * mean for c in counts.values()), counts


# ---------------------------------------------------------------- sample_windows


def check_windows(state, valid_steps, window, num=4000, seed=1):
  tr = _windows(state, jax.random.PRNGKey(seed), num, window)
  assert tr.obs_tm1.shape == (num, window, 4)
  assert tr.reward_t.shape == (num, window)
  assert tr.sim_t["nested"]["m"].shape == (num, window, 2, 3)
  env, step = decode(tr)
  # One environment per window, consecutive time steps, all within the valid data
  # (so never the newest -> oldest jump across the write head).
  assert np.all(env == env[:, :1])
  np.testing.assert_array_equal(np.diff(step, axis=1), 1)
  assert step.min() >= min(valid_steps) and step.max() <= max(valid_steps)
  starts = collections.Counter(zip(env[:, 0].tolist(), step[:, 0].tolist()))
  valid_starts = {(e, s) for e in range(NUM_ENVS)
                  for s in valid_steps if s + window - 1 <= max(valid_steps)}
  assert set(starts) == valid_starts
  mean = num / len(valid_starts)
  assert all(abs(c - mean) < 0.35 * mean for c in starts.values()), starts


def test_windows_before_full():
  check_windows(filled(4), range(0, 4), window=2)


def test_windows_after_wrap_never_cross_write_head():
  # 12 writes into 5 slots: pos = 2, columns hold steps [10, 11, 7, 8, 9].
  state = filled(12)
  assert int(state.pos) == 2
  check_windows(state, range(7, 12), window=3)


def test_windows_full_length_is_the_whole_ring_in_order():
  state = filled(7)  # steps 2..6, oldest at column 2
  tr = _windows(state, jax.random.PRNGKey(3), 50, CAP)
  env, step = decode(tr)
  np.testing.assert_array_equal(step, np.broadcast_to(np.arange(2, 7), step.shape))
  assert set(env[:, 0].tolist()) == set(range(NUM_ENVS))


def test_window_equal_to_size_before_full():
  state = filled(2)
  _, step = decode(_windows(state, jax.random.PRNGKey(4), 30, 2))
  np.testing.assert_array_equal(step, np.broadcast_to([0, 1], step.shape))


@pytest.mark.parametrize("window", [0, -1, CAP + 1, 2.0])
def test_bad_window_raises(window):
  state = filled(CAP)
  with pytest.raises(ConfigError, match="window"):
    replay.sample_windows(state, jax.random.PRNGKey(0), 4, window)


def test_bad_batch_size_raises():
  with pytest.raises(ConfigError, match="batch_size"):
    replay.sample(filled(1), jax.random.PRNGKey(0), 0)


def test_can_sample():
  state = replay.init(CAPACITY, NUM_ENVS, example())
  assert not replay.can_sample(state)
  state = _add(state, make_batch(0))
  assert replay.can_sample(state) and not replay.can_sample(state, 2)
  for step in range(1, 9):
    state = _add(state, make_batch(step))
  assert replay.can_sample(state, CAP) and not replay.can_sample(state, CAP + 1)


# ---------------------------------------------------------------------------- jit


def test_jit_matches_eager():
  add = jax.jit(replay.add)
  sample = jax.jit(replay.sample, static_argnames="batch_size")
  windows = jax.jit(replay.sample_windows, static_argnames=("batch_size", "window"))
  eager = state = replay.init(CAPACITY, NUM_ENVS, example())
  for step in range(7):
    eager = replay.add(eager, make_batch(step))
    state = add(state, make_batch(step))
  jax.tree.map(np.testing.assert_array_equal, state, eager)
  key = jax.random.PRNGKey(7)
  jax.tree.map(np.testing.assert_array_equal, sample(state, key, batch_size=16),
               replay.sample(eager, key, 16))
  tr = windows(state, key, batch_size=16, window=3)
  jax.tree.map(np.testing.assert_array_equal, tr, replay.sample_windows(eager, key, 16, 3))
  _, step = decode(tr)
  assert step.min() >= 2 and step.max() <= 6


def test_jit_scan_fill():
  """The whole collect loop (add inside lax.scan) compiles; bookkeeping is traced."""

  def body(state, step):
    batch = make_batch(0).replace(reward_t=jnp.arange(NUM_ENVS) * 100.0 + step)
    return replay.add(state, batch), None

  state = replay.init(CAPACITY, NUM_ENVS, example())
  state, _ = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(7.0)))(state)
  assert int(state.pos) == 2 and int(state.size) == CAP
  np.testing.assert_array_equal(
      state.data.reward_t, np.arange(NUM_ENVS)[:, None] * 100 + np.array([5, 6, 2, 3, 4]))


# ---------------------------------------------------------- transition_from_step


def test_transition_from_step_batched_and_roundtrip():
  def env_state(step, final_step):
    b = make_batch(step)
    f = make_batch(final_step)
    return EnvState(obs=b.obs_tm1, sim=b.sim_tm1, reward=b.reward_t,
                    terminated=b.terminated_t, truncated=b.truncated_t, next_obs=f.obs_t,
                    next_sim=f.sim_t, t=jnp.zeros(NUM_ENVS, jnp.int32),
                    key=jax.random.split(jax.random.PRNGKey(0), NUM_ENVS))

  prev = env_state(3, 2)
  new = env_state(99, 3)  # after an auto-reset obs/sim (step 99) differ from next_*
  ref = make_batch(3)
  tr = replay.transition_from_step(prev, ref.action_tm1, ref.logprob_tm1, new)
  assert tr.obs_tm1.shape == (NUM_ENVS, 4)
  np.testing.assert_array_equal(tr.obs_t, ref.obs_t)  # true next obs, not reset obs
  np.testing.assert_array_equal(tr.reward_t, make_batch(99).reward_t)
  jax.tree.map(np.testing.assert_array_equal, tr.sim_t, ref.sim_t)
  jax.tree.map(np.testing.assert_array_equal, tr.sim_tm1, ref.sim_tm1)
  state = replay.add(replay.init(CAPACITY, NUM_ENVS, example()), tr)
  jax.tree.map(np.testing.assert_array_equal,
               jax.tree.map(lambda x: x[:, 0], state.data.sim_t), ref.sim_t)


# ------------------------------------------------------------------------- memory


def test_num_bytes_and_memory_report():
  # obs 16 + action 8 + logprob 4 + reward 4 + term 1 + trunc 1 + obs_t 16
  # + sim (q 8 + m 24 + i 4 = 36) * 2 = 122 bytes.
  assert replay.num_bytes_per_transition(example()) == 122
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), example())
  assert replay.num_bytes_per_transition(shapes) == 122
  rep = replay.memory_report(example(), 17, NUM_ENVS)
  assert rep["capacity_per_env"] == 5 and rep["stored_transitions"] == 15
  assert rep["bytes_by_field"]["sim_tm1"] == 36 and rep["bytes_by_field"]["obs_tm1"] == 16
  assert sum(rep["bytes_by_field"].values()) == 122
  assert rep["total_bytes"] == 122 * 15
  state = replay.init(17, NUM_ENVS, example())
  assert sum(x.nbytes for x in jax.tree.leaves(state.data)) == rep["total_bytes"]
