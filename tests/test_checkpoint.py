"""Checkpoints: bit-exact round trips, keep-last-K, atomicity, corruption fallback, errors."""

import errno
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from mvelab import checkpoint
from mvelab.checkpoint import CheckpointError

SEEDS = 3


@struct.dataclass
class Inner:
  gamma: jax.Array
  counts: jax.Array


@struct.dataclass
class FakeState:
  """Mimics mvelab.program.TrainState: params, optax states, replay, keys, counters."""

  params: dict
  opt: object
  replay: dict
  hyper: Inner
  key: jax.Array
  env_steps: jax.Array
  done: jax.Array


def _stack(tree):
  """Adds a leading [SEEDS] axis, each seed slightly different."""
  return jax.tree.map(lambda x: jnp.asarray(np.stack(
      [np.asarray(x) + np.asarray(i, x.dtype) if x.dtype != jnp.bool_ else np.asarray(x)
       for i in range(SEEDS)])), tree)


@functools.lru_cache(maxsize=None)  # states are immutable; building one dispatches many ops
def make_state(scale=1.0, replay_rows=64):
  params = {"layer_0": {"w": jnp.full((4, 8), 0.5 * scale, jnp.float32),
                        "b": jnp.zeros((8,), jnp.float32)},
            "layer_1": {"w": jnp.arange(8, dtype=jnp.float32) * scale}}
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
  opt = tx.init(params)
  # One real Adam step so mu/nu/count are non-trivial.
  _, opt = tx.update(jax.tree.map(jnp.ones_like, params), opt, params)
  obs = np.random.default_rng(0).standard_normal((replay_rows, 30)).astype(np.float32)
  obs[0, :4] = [np.nan, -0.0, np.inf, -np.inf]  # bit patterns that == would not check
  replay = {"obs": jnp.asarray(obs), "size": jnp.int32(replay_rows),
            "terminal": jnp.asarray(np.arange(replay_rows) % 7 == 0)}
  state = FakeState(params=params, opt=opt, replay=replay,
                    hyper=Inner(gamma=jnp.float32(0.99), counts=jnp.arange(3, dtype=jnp.int32)),
                    key=jax.random.PRNGKey(42), env_steps=jnp.int32(1000),
                    done=jnp.array([True, False]))
  state = _stack(state)
  return state.replace(key=jax.random.split(jax.random.PRNGKey(7), SEEDS))


def assert_bit_identical(a, b):
  la, ta = jax.tree_util.tree_flatten(a)
  lb, tb = jax.tree_util.tree_flatten(b)
  assert ta == tb
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


class Warnings(list):
  def __call__(self, msg):
    self.append(msg)


def _data(path):
  return os.path.join(path, checkpoint.DATA_FILE)


# ----------------------------------------------------------------------- round trips
def test_round_trip_bit_exact(tmp_path):
  run = str(tmp_path / "run")
  state = make_state()
  path = checkpoint.save(run, 1000, state, extra={"rows": 12, "config_hash": "abc"})
  assert os.path.basename(path) == "ckpt_000000001000"
  assert checkpoint.latest(run) == (1000, path)
  meta = json.load(open(os.path.join(path, "meta.json")))
  assert meta["step"] == 1000 and meta["extra"] == {"rows": 12, "config_hash": "abc"}
  assert len(meta["files"]["state.msgpack"]["sha256"]) == 64

  # Target made of zeros: every restored bit must come from disk.
  target = jax.tree.map(lambda x: jnp.asarray(np.zeros_like(x)), state)
  step, restored, extra = checkpoint.restore(run, target)
  assert step == 1000 and extra == {"rows": 12, "config_hash": "abc"}
  assert_bit_identical(restored, state)
  assert isinstance(restored, FakeState)
  assert type(restored.opt) is type(state.opt)  # optax inject_hyperparams state
  assert restored.key.dtype == jnp.uint32 and restored.key.shape == (SEEDS, 2)
  assert restored.done.dtype == jnp.bool_ and restored.env_steps.dtype == jnp.int32
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored))
  # The restored key drives the same random stream.
  np.testing.assert_array_equal(jax.random.uniform(restored.key[1], (5,)),
                                jax.random.uniform(state.key[1], (5,)))

  # ShapeDtypeStruct target (no memory for a throwaway state).
  _, restored2, _ = checkpoint.restore(run, jax.eval_shape(lambda: state))
  assert_bit_identical(restored2, state)


def test_round_trip_real_train_state_structure(tmp_path):
  """The real TrainState (shapes from eval_shape, random contents) round-trips exactly."""
  from mvelab import config, program
  cfg = config.resolve(config.Config(env="pendulum", hidden_sizes=(16, 16), num_envs=2, batch_size=4,
                                     warmup_steps=4, eval_every=4, total_steps=8,
                                     replay_capacity=64))
  p = program.make_programs(cfg)
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  shapes = jax.eval_shape(jax.vmap(lambda k: program.init_state(p, k)), keys)
  rng = np.random.default_rng(1)
  leaves, treedef = jax.tree_util.tree_flatten(shapes)
  vals = [jnp.asarray(rng.integers(0, 256, s.size * np.dtype(s.dtype).itemsize, np.uint8)
                      .view(np.dtype(s.dtype)).reshape(s.shape)) if s.dtype != jnp.bool_
          else jnp.asarray(rng.integers(0, 2, s.shape).astype(bool)) for s in leaves]
  state = jax.tree_util.tree_unflatten(treedef, vals)
  checkpoint.save(str(tmp_path), 5, state)
  step, restored, _ = checkpoint.restore(str(tmp_path), shapes)
  assert step == 5 and isinstance(restored, program.TrainState)
  assert_bit_identical(restored, state)


def test_typed_keys_numpy_and_scalars(tmp_path):
  state = {"key": jax.random.split(jax.random.key(3), 4), "np": np.arange(6.0).reshape(2, 3),
           "scalar": 7, "bf16": jnp.array([1.5, -2.0], jnp.bfloat16)}
  checkpoint.save(str(tmp_path), 0, state)
  target = {"key": jax.random.split(jax.random.key(0), 4), "np": np.zeros((2, 3)),
            "scalar": 0, "bf16": jnp.zeros((2,), jnp.bfloat16)}
  _, r, extra = checkpoint.restore(str(tmp_path), target)
  assert extra == {}
  assert jax.dtypes.issubdtype(r["key"].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(jax.random.key_data(r["key"]), jax.random.key_data(state["key"]))
  assert isinstance(r["np"], np.ndarray) and r["np"].flags.writeable
  np.testing.assert_array_equal(r["np"], state["np"])
  assert r["scalar"] == 7 and isinstance(r["scalar"], int)
  assert r["bf16"].dtype == jnp.bfloat16 and r["bf16"].tolist() == [1.5, -2.0]


def test_no_checkpoint_returns_none(tmp_path):
  assert checkpoint.restore(str(tmp_path / "nothing"), make_state()) is None
  assert checkpoint.latest(str(tmp_path)) is None
  assert checkpoint.list_checkpoints(str(tmp_path)) == []


# ---------------------------------------------------------------------------- pruning
def test_keep_last_k_and_same_step_replaced(tmp_path):
  run = str(tmp_path)
  for step in (10, 20, 30, 40, 50):
    checkpoint.save(run, step, make_state(scale=step), keep=3)
  assert [s for s, _ in checkpoint.list_checkpoints(run)] == [30, 40, 50]
  assert sorted(os.listdir(checkpoint.checkpoint_dir(run))) == [
      "ckpt_000000000030", "ckpt_000000000040", "ckpt_000000000050"]  # no leftovers
  # Re-saving an existing step replaces it.
  checkpoint.save(run, 50, make_state(scale=-1.0), keep=3)
  _, r, _ = checkpoint.restore(run, make_state())
  assert_bit_identical(r, make_state(scale=-1.0))
  # keep=None keeps everything.
  for step in (60, 70):
    checkpoint.save(run, step, make_state(), keep=None)
  assert [s for s, _ in checkpoint.list_checkpoints(run)] == [30, 40, 50, 60, 70]
  checkpoint.save(run, 80, make_state(), keep=1)
  assert [s for s, _ in checkpoint.list_checkpoints(run)] == [80]
  # Resumed from an older step (newer checkpoint invalid): the new save is never pruned,
  # later steps are left for the run to overwrite.
  checkpoint.save(run, 75, make_state(), keep=1)
  assert [s for s, _ in checkpoint.list_checkpoints(run)] == [75, 80]


def test_bad_arguments_write_nothing(tmp_path):
  run = str(tmp_path)
  with pytest.raises(ValueError, match="step"):
    checkpoint.save(run, -1, make_state())
  with pytest.raises(ValueError, match="keep"):
    checkpoint.save(run, 1, make_state(), keep=0)
  with pytest.raises(TypeError, match="JSON"):
    checkpoint.save(run, 1, make_state(), extra={"x": object()})
  assert checkpoint.list_checkpoints(run) == []


# -------------------------------------------------------------------------- atomicity
def test_crash_mid_write_leaves_no_checkpoint(tmp_path, monkeypatch):
  run = str(tmp_path)
  first = checkpoint.save(run, 1, make_state())
  real_write = checkpoint._write

  def crashing_write(path, data):
    real_write(path, data[: len(data) // 2])  # half the file, then the "crash"
    raise RuntimeError("simulated crash")

  monkeypatch.setattr(checkpoint, "_write", crashing_write)
  with pytest.raises(RuntimeError, match="simulated crash"):
    checkpoint.save(run, 2, make_state(scale=2.0))
  monkeypatch.undo()
  assert checkpoint.latest(run) == (1, first)
  assert os.listdir(checkpoint.checkpoint_dir(run)) == ["ckpt_000000000001"]
  step, r, _ = checkpoint.restore(run, make_state())
  assert step == 1
  assert_bit_identical(r, make_state())


def test_killed_save_leftover_is_ignored_then_removed(tmp_path):
  """What SIGKILL mid-write leaves (a half-written temp dir) is invisible and cleaned up."""
  run = str(tmp_path)
  checkpoint.save(run, 1, make_state())
  dead = subprocess.Popen(["true"])
  dead.wait()
  leftover = os.path.join(checkpoint.checkpoint_dir(run), f".tmp-ckpt_2-{dead.pid}-x1y2")
  os.makedirs(leftover)
  with open(_data(leftover), "wb") as f:
    f.write(b"\x00" * 100)
  assert checkpoint.latest(run)[0] == 1
  assert checkpoint.restore(run, make_state())[0] == 1
  checkpoint.save(run, 3, make_state())
  assert not os.path.exists(leftover)
  assert [s for s, _ in checkpoint.list_checkpoints(run)] == [1, 3]


_KILL_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from mvelab import checkpoint
    run = sys.argv[1]
    big = np.zeros((200_000, 10), np.float32)
    step = 0
    while True:
      step += 1
      big[:] = step
      checkpoint.save(run, step, {"big": big, "step": np.int32(step)}, keep=2)
      print(step, flush=True)
""")


def test_sigkill_during_saves_leaves_valid_checkpoints(tmp_path):
  run = str(tmp_path)
  child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, run], stdout=subprocess.PIPE,
                           text=True)
  try:
    child.stdout.readline()  # at least one complete checkpoint
    time.sleep(0.37)  # ... and then die at an arbitrary point of a later one
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  ckpts = checkpoint.list_checkpoints(run)
  assert ckpts
  target = {"big": np.zeros((200_000, 10), np.float32), "step": np.int32(0)}
  warns = Warnings()
  step, r, _ = checkpoint.restore(run, target, warn=warns)
  assert not warns and step == ckpts[-1][0]
  assert int(r["step"]) == step and (r["big"] == step).all()
  # Whatever the kill left behind (a temp dir, a half-pruned dir) goes with the next save.
  checkpoint.save(run, step + 1, r, keep=2)
  assert all(n.startswith("ckpt_") for n in os.listdir(checkpoint.checkpoint_dir(run)))


# --------------------------------------------------------------- corruption fallback
def _two(run):
  checkpoint.save(run, 1, make_state(scale=1.0), extra={"rows": 1})
  return checkpoint.save(run, 2, make_state(scale=2.0), extra={"rows": 2})


def test_truncated_newest_falls_back(tmp_path):
  run = str(tmp_path)
  newest = _two(run)
  size = os.path.getsize(_data(newest))
  with open(_data(newest), "r+b") as f:
    f.truncate(size // 3)
  warns = Warnings()
  step, r, extra = checkpoint.restore(run, make_state(), warn=warns)
  assert step == 1 and extra == {"rows": 1}
  assert_bit_identical(r, make_state(scale=1.0))
  assert len(warns) == 1 and newest in warns[0] and "truncated" in warns[0]


def test_flipped_byte_fails_checksum_and_falls_back(tmp_path):
  run = str(tmp_path)
  newest = _two(run)
  with open(_data(newest), "r+b") as f:
    f.seek(os.path.getsize(_data(newest)) // 2)
    b = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([b[0] ^ 0x01]))
  warns = Warnings()
  step, r, _ = checkpoint.restore(run, make_state(), warn=warns)
  assert step == 1
  assert_bit_identical(r, make_state(scale=1.0))
  assert len(warns) == 1 and newest in warns[0] and "SHA-256" in warns[0]


@pytest.mark.parametrize("damage", ["no_meta", "bad_meta", "no_data"])
def test_damaged_files_fall_back(tmp_path, damage):
  run = str(tmp_path)
  newest = _two(run)
  if damage == "no_meta":
    os.remove(os.path.join(newest, "meta.json"))
  elif damage == "bad_meta":
    with open(os.path.join(newest, "meta.json"), "w") as f:
      f.write('{"format": "mvelab-checkpoint", "vers')
  else:
    os.remove(_data(newest))
  warns = Warnings()
  assert checkpoint.restore(run, make_state(), warn=warns)[0] == 1
  assert len(warns) == 1 and newest in warns[0]


def test_structure_mismatch(tmp_path):
  run = str(tmp_path)
  _two(run)
  # A different structure matches no checkpoint: a clear error, not a silent fresh start.
  extra_leaf = make_state().replace(params={**make_state().params, "layer_2": jnp.zeros(2)})
  with pytest.raises(CheckpointError, match=r"missing 1 leaves.*layer_2"):
    checkpoint.restore(run, extra_leaf, warn=Warnings())
  wrong_shape = make_state(replay_rows=65)
  with pytest.raises(CheckpointError, match=r"\.replay\['obs'\].*float32\[3, 64, 30\]"):
    checkpoint.restore(run, wrong_shape, warn=Warnings())
  wrong_dtype = make_state().replace(env_steps=jnp.zeros((SEEDS,), jnp.float32))
  with pytest.raises(CheckpointError, match=r"\.env_steps: stored int32"):
    checkpoint.restore(run, wrong_dtype, warn=Warnings())
  # A newest checkpoint of another structure is skipped in favour of an older match.
  checkpoint.save(run, 3, {"other": jnp.zeros(3)})
  warns = Warnings()
  assert checkpoint.restore(run, make_state(), warn=warns)[0] == 2
  assert len(warns) == 1 and "ckpt_000000000003" in warns[0] and "structure" in warns[0]


# ---------------------------------------------------------------------- write errors
def _assert_previous_intact(run, first):
  assert checkpoint.latest(run) == (1, first)
  assert os.listdir(checkpoint.checkpoint_dir(run)) == ["ckpt_000000000001"]
  step, r, _ = checkpoint.restore(run, make_state(), warn=Warnings())
  assert step == 1
  assert_bit_identical(r, make_state())


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_chmod(tmp_path):
  run = str(tmp_path)
  first = checkpoint.save(run, 1, make_state())
  os.chmod(checkpoint.checkpoint_dir(run), 0o500)
  try:
    with pytest.raises(CheckpointError, match="Permission denied"):
      checkpoint.save(run, 2, make_state())
  finally:
    os.chmod(checkpoint.checkpoint_dir(run), 0o700)
  _assert_previous_intact(run, first)


def test_unwritable_directory_simulated(tmp_path, monkeypatch):
  """EACCES creating the checkpoint folder (what chmod 0o500 does for non-root users)."""
  def denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), kwargs.get("dir", args[:1]))

  monkeypatch.setattr(os, "makedirs", denied)
  with pytest.raises(CheckpointError) as info:
    checkpoint.save(str(tmp_path / "run"), 1, make_state())
  assert "Permission denied" in str(info.value) and str(tmp_path / "run") in str(info.value)
  monkeypatch.undo()

  run = str(tmp_path)
  first = checkpoint.save(run, 1, make_state())
  monkeypatch.setattr(checkpoint.tempfile, "mkdtemp", denied)
  with pytest.raises(CheckpointError, match="Permission denied"):
    checkpoint.save(run, 2, make_state())
  monkeypatch.undo()
  _assert_previous_intact(run, first)


def test_disk_full_cleans_up(tmp_path, monkeypatch):
  run = str(tmp_path)
  first = checkpoint.save(run, 1, make_state())
  real_open = open

  class FullFile:
    def __init__(self, f):
      self.f = f

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self.f.close()

    def write(self, data):
      self.f.write(data[:10])
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(checkpoint, "open", lambda p, mode="r", *a: FullFile(real_open(p, mode)),
                      raising=False)
  with pytest.raises(CheckpointError) as info:
    checkpoint.save(run, 2, make_state())
  monkeypatch.undo()
  msg = str(info.value)
  assert "No space left on device" in msg and "ckpt_000000000002" in msg
  _assert_previous_intact(run, first)


def test_size_bytes(tmp_path):
  path = checkpoint.save(str(tmp_path), 1, make_state(replay_rows=1000))
  n = checkpoint.size_bytes(path)
  assert n == sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
  assert n > SEEDS * 1000 * 30 * 4
  assert checkpoint.size_bytes(_data(path)) == os.path.getsize(_data(path))
