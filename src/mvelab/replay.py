"""On-device ring replay buffer: pure functional, fixed capacity, jittable.

Storage is one :class:`Transition` pytree whose leaves have leading axes
``[num_envs, capacity_per_env, ...]``: row ``e`` holds environment ``e``'s transitions
in time order, as a ring. Every :func:`add` writes one *column* (one transition per
parallel environment) at ``pos``, so all rows share the same ``pos``/``size``
bookkeeping and the valid data of every row, in time order, is

  columns ``(oldest + u) mod capacity_per_env`` for ``u`` in ``[0, size)``, with
  ``oldest = (pos - size) mod capacity_per_env``.

This layout makes :func:`sample_windows` cheap: a window of ``W`` consecutive
transitions of one environment is ``W`` consecutive columns of one row, and it never
crosses the write head as long as its start offset ``u`` is in ``[0, size - W]``.
Windows *may* cross episode boundaries; consumers mask with ``terminated_t`` /
``truncated_t``.

All functions are pure and jittable (``batch_size`` and ``window`` must be static);
sampling gathers with advanced indexing through ``jax.tree.map``, never a Python loop
over the batch. Misuse that is visible from static shapes (a bad ``window``, a batch of
the wrong shape) raises :class:`~mvelab.errors.ConfigError` at trace time; conditions
on the traced ``size`` cannot raise inside ``jit`` and are documented as the caller's
responsibility (see :func:`can_sample`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mvelab.envs.base import EnvState
from mvelab.errors import ConfigError

Array = jax.Array
Sim = Any  # pytree of arrays: the restorable simulator state


@struct.dataclass
class Transition:
  """One environment transition (add leading axes for batches and storage).

  Attributes:
    obs_tm1: ``[obs_size]`` observation the action was taken from.
    action_tm1: ``[action_size]`` action taken, in ``[-1, 1]``.
    logprob_tm1: ``[]`` log-probability of ``action_tm1`` under the behaviour policy.
    reward_t: ``[]`` reward of the transition.
    terminated_t: ``[]`` bool, the transition ended the task (stop bootstrapping).
    truncated_t: ``[]`` bool, the transition hit the time limit (keep bootstrapping).
    obs_t: ``[obs_size]`` true next observation, before any auto-reset.
    sim_tm1: simulator state (pytree) matching ``obs_tm1``.
    sim_t: simulator state (pytree) matching ``obs_t``.
  """

  obs_tm1: Array
  action_tm1: Array
  logprob_tm1: Array
  reward_t: Array
  terminated_t: Array
  truncated_t: Array
  obs_t: Array
  sim_tm1: Sim
  sim_t: Sim


def transition_from_step(prev: EnvState, action: Array, logprob: Array,
                         new: EnvState) -> Transition:
  """Builds the transition ``prev --action--> new`` of :meth:`Env.step`.

  Works unbatched or with any common leading axes (e.g. ``[num_envs]``), since it only
  picks fields. ``obs_t``/``sim_t`` are ``new.next_obs``/``new.next_sim``, the true
  final ones when the episode just ended (``new.obs``/``new.sim`` then belong to the
  next episode and are not stored).

  Args:
    prev: state the action was taken from; ``obs [..., obs_size]``.
    action: ``[..., action_size]`` action given to ``step``.
    logprob: ``[...]`` behaviour log-probability of ``action``.
    new: state returned by ``step``.

  Returns:
    A :class:`Transition` with the same leading axes.
  """
  return Transition(
      obs_tm1=prev.obs,
      action_tm1=action,
      logprob_tm1=logprob,
      reward_t=new.reward,
      terminated_t=new.terminated,
      truncated_t=new.truncated,
      obs_t=new.next_obs,
      sim_tm1=prev.sim,
      sim_t=new.next_sim)


@struct.dataclass
class ReplayState:
  """The buffer.

  Attributes:
    data: :class:`Transition` with leaves ``[num_envs, capacity_per_env, ...]``;
      row ``e`` is environment ``e``'s ring of transitions.
    pos: ``[]`` int32, next column to write.
    size: ``[]`` int32, number of valid columns (``<= capacity_per_env``).
  """

  data: Transition
  pos: Array
  size: Array

  @property
  def num_envs(self) -> int:
    """Number of rows (static)."""
    return int(jax.tree.leaves(self.data)[0].shape[0])

  @property
  def capacity_per_env(self) -> int:
    """Number of columns (static)."""
    return int(jax.tree.leaves(self.data)[0].shape[1])


def _check_sizes(capacity, num_envs) -> None:
  for option, value in (("replay_capacity", capacity), ("num_envs", num_envs)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
      raise ConfigError(f"{option}: must be a positive integer, got {value!r}")
  if capacity < num_envs:
    raise ConfigError(
        f"replay_capacity: must be at least num_envs (one slot per parallel "
        f"environment), got replay_capacity={capacity} < num_envs={num_envs}")


def init(capacity: int, num_envs: int, example: Transition) -> ReplayState:
  """Creates an empty, zero-filled buffer.

  Args:
    capacity: total number of transitions (``replay_capacity``); each environment
      gets ``capacity // num_envs`` slots, the remainder is dropped.
    num_envs: number of parallel environments written by each :func:`add`.
    example: one *unbatched* transition (arrays or ``jax.ShapeDtypeStruct``), giving
      shapes and dtypes.

  Returns:
    A :class:`ReplayState` with ``pos = size = 0``.

  Raises:
    ConfigError: ``capacity`` or ``num_envs`` is not a positive integer, or
      ``capacity < num_envs``.
  """
  _check_sizes(capacity, num_envs)
  capacity_per_env = int(capacity) // int(num_envs)
  data = jax.tree.map(
      lambda x: jnp.zeros((int(num_envs), capacity_per_env) + tuple(x.shape), x.dtype),
      example)
  return ReplayState(data=data, pos=jnp.zeros((), jnp.int32),
                     size=jnp.zeros((), jnp.int32))


def add(state: ReplayState, batch: Transition) -> ReplayState:
  """Writes one transition per environment at column ``pos``, overwriting the oldest.

  Args:
    state: the buffer.
    batch: :class:`Transition` with leaves ``[num_envs, ...]`` (same structure and
      per-transition shapes as the ``example`` given to :func:`init`; values are cast
      to the stored dtypes).

  Returns:
    The updated buffer (``pos`` advanced modulo ``capacity_per_env``, ``size`` grown
    up to ``capacity_per_env``).

  Raises:
    ConfigError: ``batch`` does not match the storage (checked at trace time).

  Note:
    Functional updates copy the storage unless XLA can update it in place: call
    ``add`` inside the jitted collect/train step that owns the buffer (e.g. in a
    ``lax.scan`` carry) or jit it with ``donate_argnums=0``.
  """
  num_envs, cap = state.num_envs, state.capacity_per_env
  buf_struct = jax.tree.structure(state.data)
  batch_struct = jax.tree.structure(batch)
  if buf_struct != batch_struct:
    raise ConfigError(
        f"replay add: transition structure {batch_struct} does not match the buffer's "
        f"{buf_struct}")

  def write(buf, x):
    x = jnp.asarray(x)
    want = (num_envs,) + buf.shape[2:]
    if x.shape != want:
      raise ConfigError(
          f"replay add: expected a leaf of shape {list(want)} ([num_envs, ...]), got "
          f"{list(x.shape)}")
    return buf.at[:, state.pos].set(x.astype(buf.dtype))

  data = jax.tree.map(write, state.data, batch)
  return ReplayState(
      data=data,
      pos=((state.pos + 1) % cap).astype(jnp.int32),
      size=jnp.minimum(state.size + 1, cap).astype(jnp.int32))


def add_rows(state: ReplayState, rows: Any, valid: Array) -> ReplayState:
  """Appends the ``valid`` rows of a batch to a one-row ring (a flat buffer), in order.

  The valid rows are written compactly at columns ``pos, pos + 1, ...`` (mod capacity),
  the others are dropped, so the buffer never holds a row that was not valid. Used for
  Dyna's model buffer (``agents/dyna.py``), whose rollouts end at different lengths.

  Args:
    state: a buffer with ``num_envs == 1``.
    rows: pytree matching the stored transition, leaves ``[N, ...]``, ``N`` at most the
      capacity (static check).
    valid: ``[N]`` bool.

  Returns:
    The buffer with ``pos`` advanced and ``size`` grown by the number of valid rows.
  """
  cap = state.capacity_per_env
  n = int(jnp.shape(valid)[0])
  if state.num_envs != 1 or n > cap:
    raise ConfigError(f"replay add_rows: needs a one-row buffer of capacity >= {n} rows, "
                      f"got {state.num_envs} row(s) of capacity {cap}")
  valid = jnp.asarray(valid, bool)
  offset = jnp.cumsum(valid) - 1
  col = jnp.where(valid, (state.pos + offset) % cap, cap)  # column cap: dropped

  def write(buf, x):
    x = jnp.asarray(x).astype(buf.dtype)
    return buf.at[0, col].set(x, mode="drop")

  data = jax.tree.map(write, state.data, rows)
  count = jnp.sum(valid).astype(jnp.int32)
  return ReplayState(data=data, pos=((state.pos + count) % cap).astype(jnp.int32),
                     size=jnp.minimum(state.size + count, cap).astype(jnp.int32))


def _oldest(state: ReplayState) -> Array:
  cap = state.capacity_per_env
  return (state.pos - state.size) % cap


def sample(state: ReplayState, key: Array, batch_size: int) -> Transition:
  """Samples transitions uniformly (with replacement) over all valid entries.

  Every valid ``(env, time)`` pair has probability ``1 / (num_envs * size)``.
  Requires ``size >= 1`` (the caller's responsibility under ``jit``; see
  :func:`can_sample`): on an empty buffer the zero-filled slots are returned.

  Args:
    state: the buffer.
    key: PRNG key.
    batch_size: static number of transitions.

  Returns:
    :class:`Transition` with leaves ``[batch_size, ...]``.
  """
  _check_static("batch_size", batch_size)
  env, u = _uniform_pairs(key, batch_size, state.num_envs, jnp.maximum(state.size, 1))
  col = (_oldest(state) + u) % state.capacity_per_env
  return _gather(state, env, col)


def _gather(state: ReplayState, env: Array, col: Array) -> Transition:
  """Entries ``(env, col)`` (equal shapes) of every leaf, read as flat rows.

  Each leaf is viewed as ``[num_envs * capacity_per_env, ...]`` and indexed with one
  integer array. With the two-index form ``leaf[env, col]``, XLA:CPU fused the
  preceding :func:`add` into a gather inside the training loop and then copied a whole
  ``[num_envs, capacity_per_env, obs]`` leaf twice per iteration (``benchmarks/replay_capacity_speed.py``:
  a SAC step at capacity 1M took 1.24x its time at 10k). ``tests/test_program_copies.py`` guards this.
  """
  row = env * state.capacity_per_env + col
  return jax.tree.map(lambda leaf: leaf.reshape((-1,) + leaf.shape[2:])[row], state.data)


def _uniform_pairs(key: Array, batch_size: int, num_envs: int, n: Array
                   ) -> tuple[Array, Array]:
  """``batch_size`` pairs ``(env, u)`` uniform over ``[0, num_envs) x [0, n)``.

  One ``randint`` over the ``num_envs * n`` flat indices (one PRNG call instead of a
  split and two draws); ``env = i mod num_envs``, ``u = i div num_envs``.
  """
  flat = jax.random.randint(key, (batch_size,), 0, num_envs * n)
  return flat % num_envs, flat // num_envs


def sample_windows(state: ReplayState, key: Array, batch_size: int,
                   window: int) -> Transition:
  """Samples windows of ``window`` consecutive transitions of one environment.

  Each window is ``window`` transitions of a single environment in time order. The
  start is uniform over all ``num_envs * (size - window + 1)`` valid starts (with
  replacement), and a window never crosses the write head: with
  ``oldest = (pos - size) mod capacity_per_env`` and a start offset
  ``u ~ U{0, ..., size - window}``, it reads columns
  ``(oldest + u + arange(window)) mod capacity_per_env``. Windows may cross episode
  boundaries; mask with ``terminated_t``/``truncated_t``.

  Requires ``size >= window``. This cannot be checked under ``jit``, so the caller
  must ensure it (see :func:`can_sample`); otherwise every window starts at the
  oldest entry and runs into zero-filled, never-written slots.

  Args:
    state: the buffer.
    key: PRNG key.
    batch_size: static number of windows.
    window: static window length, ``1 <= window <= capacity_per_env``.

  Returns:
    :class:`Transition` with leaves ``[batch_size, window, ...]``.

  Raises:
    ConfigError: ``window`` is not a positive integer ``<= capacity_per_env``
      (static check).
  """
  _check_static("batch_size", batch_size)
  _check_static("window", window)
  cap = state.capacity_per_env
  if window > cap:
    raise ConfigError(
        f"window: must be at most the per-environment replay capacity "
        f"(replay_capacity // num_envs = {cap}), got {window}")
  env, u = _uniform_pairs(key, batch_size, state.num_envs,
                          jnp.maximum(state.size - window + 1, 1))
  cols = (_oldest(state) + u[:, None] + jnp.arange(window)[None, :]) % cap  # [B, W]
  return _gather(state, jnp.broadcast_to(env[:, None], cols.shape), cols)


def _check_static(option: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ConfigError(f"{option}: must be a positive (static) integer, got {value!r}")


def can_sample(state: ReplayState, window: int = 1) -> bool:
  """Whether :func:`sample_windows` (or :func:`sample`, ``window=1``) is valid now.

  Pure Python: reads ``state.size`` back from the device, so call it outside ``jit``.
  """
  return window <= state.capacity_per_env and int(jax.device_get(state.size)) >= window


def num_bytes_per_transition(example: Transition) -> int:
  """Bytes one stored transition takes (all leaves of one unbatched ``example``)."""
  return int(sum(_leaf_bytes(x) for x in jax.tree.leaves(example)))


def _leaf_bytes(x) -> int:
  return int(np.prod(x.shape, dtype=np.int64)) * np.dtype(x.dtype).itemsize


def memory_report(example: Transition, capacity: int, num_envs: int) -> dict:
  """Storage cost of a buffer, for README tables and run logs.

  Args:
    example: one unbatched transition (arrays or ``jax.ShapeDtypeStruct``).
    capacity: ``replay_capacity`` as given to :func:`init`.
    num_envs: number of parallel environments.

  Returns:
    A dict with ``capacity_per_env``, ``stored_transitions``
    (``num_envs * capacity_per_env``), ``bytes_per_transition``, ``bytes_by_field``
    (per :class:`Transition` field, for one transition), ``total_bytes`` and
    ``total_mib``. Bookkeeping scalars (``pos``, ``size``) are not counted.

  Raises:
    ConfigError: as :func:`init`.
  """
  _check_sizes(capacity, num_envs)
  capacity_per_env = int(capacity) // int(num_envs)
  stored = int(num_envs) * capacity_per_env
  by_field = {
      name: int(sum(_leaf_bytes(x) for x in jax.tree.leaves(getattr(example, name))))
      for name in (f.name for f in dataclasses.fields(example))}
  per = num_bytes_per_transition(example)
  total = per * stored
  return dict(capacity=int(capacity), num_envs=int(num_envs),
              capacity_per_env=capacity_per_env, stored_transitions=stored,
              bytes_per_transition=per, bytes_by_field=by_field, total_bytes=total,
              total_mib=total / 2**20)
