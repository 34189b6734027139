"""Dyna / MBPO (``mvelab.agents.dyna``): branched rollouts, model buffer, batch mix."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mvelab import program, replay as replay_lib
from mvelab.agents import dyna
from mvelab.config import Config, resolve

TINY = dict(hidden_sizes=(16, 16), batch_size=32, warmup_steps=128, total_steps=400,
            eval_every=136, replay_capacity=1024, dyna_rollouts=8, dyna_retain=4)


def _prefilled(**kw):
  cfg = resolve(Config(**{**TINY, **kw}))
  p = program.make_programs(cfg)
  state = jax.jit(lambda k: program.prefill(p, program.init_state(p, k)))(
      jax.random.PRNGKey(0))
  return p, state


def test_oracle_branches_of_length_one_are_true_transitions():
  p, state = _prefilled(env="pendulum", expansion="dyna", model="oracle", horizon=1)
  buffer, metrics = jax.jit(lambda s, k: dyna.branch(p, s, k))(state, jax.random.PRNGKey(1))
  n = int(buffer.size)
  assert n == 8 and float(metrics["dyna_rollout_length"]) == 1.0
  rows = jax.tree.map(lambda x: np.asarray(x[0, :n]), buffer.data)
  # pendulum's state is (th, thdot) = (atan2(sin, cos), thdot) of the observation
  sim = np.stack([np.arctan2(rows.obs_tm1[:, 1], rows.obs_tm1[:, 0]), rows.obs_tm1[:, 2]], 1)
  _, obs_t, reward_t, _ = jax.vmap(p.env.simulate)(jnp.asarray(sim, jnp.float32),
                                                   jnp.asarray(rows.action_tm1))
  np.testing.assert_allclose(rows.obs_t, obs_t, atol=1e-5)
  np.testing.assert_allclose(rows.reward_t, reward_t, atol=1e-4)
  # the start states are replayed states: each obs_tm1 is somewhere in the real buffer
  real = np.asarray(state.replay.data.obs_tm1[0, :int(state.replay.size)])
  assert all(np.any(np.all(np.abs(real - o) < 1e-6, axis=1)) for o in rows.obs_tm1)


def test_terminated_branches_add_nothing_after_the_termination():
  terminated = jnp.array([[False, True, False, False], [False, False, False, False],
                          [True, False, False, False]])
  keep = dyna.kept_steps(terminated, jnp.int32(3))
  np.testing.assert_array_equal(keep, [[True, True, False, False], [True, True, True, False],
                                       [True, False, False, False]])
  p, state = _prefilled(env="paper_inverted_pendulum", expansion="dyna", model="oracle",
                        horizon=30)
  buffer, metrics = jax.jit(lambda s, k: dyna.branch(p, s, k))(state, jax.random.PRNGKey(2))
  rows = jax.tree.map(lambda x: np.asarray(x[0, :int(buffer.size)]), buffer.data)
  # an untrained policy drops the pole within 30 steps: branches stop early, and each
  # branch's last row (and only it) is the terminating one
  assert 1 <= float(metrics["dyna_rollout_length"]) < 30
  assert int(buffer.size) == round(8 * float(metrics["dyna_rollout_length"]))
  assert rows.terminated_t.sum() == 8
  # rows of a branch are consecutive: each row continues the previous one's obs_t, except
  # right after a terminating row, where the next branch begins (frozen steps would
  # continue it: a terminated row would be followed by a copy of its end state)
  continues = np.all(np.abs(rows.obs_tm1[1:] - rows.obs_t[:-1]) < 1e-6, axis=1)
  np.testing.assert_array_equal(continues, ~rows.terminated_t[:-1])


def test_batch_mix_is_exact():
  cfg = resolve(Config(env="pendulum", expansion="dyna", model="oracle", horizon=2,
                       **{**TINY, "batch_size": 40}, dyna_real_ratio=0.25))
  assert dyna.real_rows(cfg) == 10
  real = replay_lib.init(64, 1, dyna.ImaginedTransition(
      *(jnp.zeros(s) for s in ((3,), (1,), (), (), (3,)))))
  model = dyna.init_buffer(cfg, 3, 1)
  ones = lambda n, v: dyna.ImaginedTransition(jnp.full((n, 3), v), jnp.zeros((n, 1)),
                                              jnp.zeros(n), jnp.zeros(n, bool),
                                              jnp.zeros((n, 3)))
  real = replay_lib.add_rows(real, ones(20, 1.0), jnp.ones(20, bool))
  model = replay_lib.add_rows(model, ones(20, -1.0), jnp.ones(20, bool))
  state = dataclasses.make_dataclass("S", ["replay", "model_replay"])(real, model)
  batch = dyna.mixed_batch(cfg, state, jax.random.PRNGKey(3))
  np.testing.assert_array_equal(batch.obs_tm1[:10], 1.0)
  np.testing.assert_array_equal(batch.obs_tm1[10:], -1.0)
  assert batch.obs_tm1.shape == (40, 3)


def test_ring_wraps_without_stale_rows():
  buf = replay_lib.init(10, 1, jnp.zeros(()))
  seen = []
  for start in range(0, 35, 7):  # 7 rows per call, every third invalid
    values = jnp.arange(start, start + 7, dtype=jnp.float32)
    valid = (jnp.arange(7) % 3) != 2
    buf = replay_lib.add_rows(buf, values, valid)
    seen += [float(v) for v, ok in zip(values, valid) if ok]
  assert int(buf.size) == 10
  cols = (int(buf.pos) - 10 + np.arange(10)) % 10
  np.testing.assert_array_equal(np.asarray(buf.data[0])[cols], seen[-10:])


def test_schedule_change_does_not_recompile():
  p, state = _prefilled(env="pendulum", expansion="dyna", model="oracle", horizon=4,
                        dyna_schedule=(200, 300, 1, 4))
  branch = jax.jit(lambda s, k: dyna.branch(p, s, k))
  lengths = []
  for steps in (100, 250, 400):
    buffer, m = branch(state.replace(env_steps=jnp.int32(steps)), jax.random.PRNGKey(4))
    lengths.append(float(m["dyna_rollout_length"]))
  assert lengths == [1.0, 2.0, 4.0]  # k = 1, floor(1 + 0.5 * 3) = 2, 4 (no terminations)
  assert branch._cache_size() == 1
