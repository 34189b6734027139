"""The compiled training loop never copies a replay-sized buffer.

XLA:CPU once fused the replay write into the sampling gather and then copied a whole
``[num_envs, capacity, obs]`` leaf twice per loop iteration (1.24x the step time at capacity
1M, benchmarks/replay_capacity_speed.py). These tests compile the chunk program exactly as the runner does and look for copies
whose shape has the replay capacity inside any loop or called computation.
"""

import re

import jax
import pytest

from mvelab import program as T
from mvelab import runner
from mvelab.config import Config, resolve

CAPACITY = 4099  # odd, so that no other array dimension matches it
TINY = dict(hidden_sizes=(32, 32), batch_size=64, warmup_steps=256, eval_every=250,
            total_steps=756, eval_episodes=2, replay_capacity=CAPACITY)


def _loop_copies(hlo: str) -> list:
  """Copy instructions of a replay-sized array outside the ENTRY computation."""
  bad, in_entry = [], False
  for line in hlo.splitlines():
    if line and not line[0].isspace():  # a computation header (or its closing brace)
      in_entry = line.startswith("ENTRY")
    elif (not in_entry and " copy(" in line
          and re.search(rf"\[[0-9,]*\b{CAPACITY}\b[0-9,]*\]", line.split("=")[1])):
      bad.append(line.strip()[:160])
  return bad


def _chunk_hlo(**kw) -> str:
  cfg = resolve(Config(**TINY, **kw))
  p = T.make_programs(cfg)
  keys = jax.numpy.stack([jax.random.PRNGKey(0)])
  shape = jax.eval_shape(jax.vmap(lambda k: T.start(p, k)[0]), keys)
  # Compile afresh: the optimised HLO text of an executable loaded from the persistent
  # cache is not guaranteed.
  previous = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    return runner.compile_chunk(p, shape).as_text()
  finally:
    jax.config.update("jax_enable_compilation_cache", previous)


def test_detector_finds_a_copy_in_a_loop():
  """The check itself: a loop that reads a buffer after updating it in place copies it."""
  import jax.numpy as jnp

  def f(buf):
    def body(b, i):
      old = b
      b = b.at[i].set(b[i] + 1.0)
      return b, jnp.sum(old) + jnp.sum(b)
    return jax.lax.scan(body, buf, jnp.arange(3))

  hlo = jax.jit(f, donate_argnums=0).lower(jnp.zeros((CAPACITY, 3))).compile().as_text()
  assert _loop_copies(hlo)


@pytest.mark.parametrize("kw", [
    dict(env="pendulum"),
    dict(env="inverted_pendulum"),
    dict(env="pendulum", expansion="critic", model="oracle", horizon=2),
    dict(env="pendulum", expansion="retrace", horizon=3),
    dict(env="pendulum", expansion="critic", model="learned", horizon=2,
         model_hidden_sizes=(32, 32), model_members=2, model_warmup_updates=10),
], ids=["sac-pendulum", "sac-inverted_pendulum", "critic-oracle", "retrace",
        "critic-learned"])
def test_no_replay_copies_in_the_training_loop(kw):
  copies = _loop_copies(_chunk_hlo(**kw))
  assert not copies, "\n".join(copies)
