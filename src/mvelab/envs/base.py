"""The one environment protocol of mvelab.

Every environment is a set of pure, jittable, vmappable functions around a *restorable*
simulator state (``sim``): any pytree of arrays from which the physics can be restarted
exactly. Subclasses implement four primitives; this base class builds the agent-facing
``reset``/``step`` (time limit, auto-reset, terminated vs truncated) and the oracle-facing
``simulate`` from them.

Conventions
-----------
* Actions are in ``[-1, 1]^action_size`` on the agent side; each subclass clips, casts to
  float32 and rescales them in ``step_sim``.
* Auto-reset draws the reset state on every step and selects it where the episode ended
  (a ``where``, so the program has no data-dependent branch and vmaps cleanly).
* ``terminated`` is a true end of the task (bootstrapping must stop); ``truncated`` is the
  time limit (bootstrapping must continue). They are never both true.
* ``action_repeat`` is folded into one agent step by each subclass (documented there);
  ``episode_length`` is counted in agent steps.
* After an episode ends, ``step`` auto-resets: ``obs``/``sim`` hold the new episode's first
  observation/state, while ``next_obs``/``next_sim`` keep the true final observation/state
  of the transition that just ended, for the replay buffer. The physics is never stepped
  from a terminated state, so nothing after a termination can leak into the data.
"""

from __future__ import annotations

import abc
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array
Sim = Any  # pytree of arrays: the restorable simulator state


@struct.dataclass
class EnvState:
  """State of one environment (add leading axes by ``jax.vmap``).

  Attributes:
    obs: ``[obs_size]`` observation the agent acts on next (after an auto-reset: the
      new episode's first observation).
    sim: restorable simulator state matching ``obs``.
    reward: ``[]`` reward of the transition that led here (0 after ``reset``).
    terminated: ``[]`` bool, that transition ended the task.
    truncated: ``[]`` bool, that transition hit the time limit without terminating.
    next_obs: ``[obs_size]`` true next observation of that transition (before any
      auto-reset); equals ``obs`` unless the episode just ended.
    next_sim: simulator state matching ``next_obs``.
    t: ``[]`` int32, agent steps taken in the current episode.
    key: PRNG key used for auto-resets.
  """

  obs: Array
  sim: Sim
  reward: Array
  terminated: Array
  truncated: Array
  next_obs: Array
  next_sim: Sim
  t: Array
  key: Array


def tree_select(pred: Array, on_true: Any, on_false: Any) -> Any:
  """``jnp.where`` over matching pytrees with a scalar predicate."""
  return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


class Env(abc.ABC):
  """Base class of all mvelab environments.

  Subclasses set ``name``, ``obs_size``, ``action_size``, ``episode_length``,
  ``action_repeat``, ``backend`` and implement the primitives ``init_sim``,
  ``step_sim``, ``observe`` and ``termination_fn``.
  """

  name: str
  obs_size: int
  action_size: int
  episode_length: int
  action_repeat: int
  backend: str

  # ----------------------------------------------------------------- primitives
  @abc.abstractmethod
  def init_sim(self, key: Array) -> Sim:
    """Draws an initial simulator state."""

  @abc.abstractmethod
  def step_sim(self, sim: Sim, action: Array) -> tuple[Sim, Array, Array]:
    """One agent step (action repeat included) from ``sim``.

    Returns:
      ``(next_sim, reward, terminated)`` with ``reward`` float32 ``[]`` and
      ``terminated`` bool ``[]`` as the simulator itself defines them.
    """

  @abc.abstractmethod
  def observe(self, sim: Sim) -> Array:
    """Observation ``[obs_size]`` of a simulator state."""

  @abc.abstractmethod
  def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
    """True termination of a transition as a pure function of observations.

    Used on imagined transitions of a learned model. Agrees with ``step_sim``'s
    ``terminated`` on real transitions (tested per environment).
    """

  # ----------------------------------------------------------- agent interface
  @property
  def action_low(self) -> float:
    return -1.0

  @property
  def action_high(self) -> float:
    return 1.0

  def reset(self, key: Array) -> EnvState:
    """Starts an episode. Pure and jittable."""
    key, init_key = jax.random.split(key)
    sim = self.init_sim(init_key)
    obs = self.observe(sim)
    false = jnp.zeros((), dtype=bool)
    return EnvState(
        obs=obs, sim=sim, reward=jnp.zeros((), jnp.float32), terminated=false,
        truncated=false, next_obs=obs, next_sim=sim, t=jnp.zeros((), jnp.int32),
        key=key)

  def step(self, state: EnvState, action: Array) -> EnvState:
    """One agent step with time limit and auto-reset. Pure and jittable.

    Args:
      state: current state (unbatched; ``jax.vmap`` for a batch).
      action: ``[action_size]`` in ``[-1, 1]``.
    """
    self.check_action(action, batched=False)
    next_sim, reward, terminated = self.step_sim(state.sim, action)
    next_obs = self.observe(next_sim)
    terminated = jnp.asarray(terminated, bool)
    t = state.t + 1
    truncated = jnp.logical_and(t >= self.episode_length, jnp.logical_not(terminated))
    done = jnp.logical_or(terminated, truncated)
    key, reset_key = jax.random.split(state.key)
    reset_sim = self.init_sim(reset_key)
    reset_obs = self.observe(reset_sim)
    return EnvState(
        obs=jnp.where(done, reset_obs, next_obs),
        sim=tree_select(done, reset_sim, next_sim),
        reward=jnp.asarray(reward, jnp.float32),
        terminated=terminated,
        truncated=truncated,
        next_obs=next_obs,
        next_sim=next_sim,
        t=jnp.where(done, 0, t).astype(jnp.int32),
        key=key)

  # ---------------------------------------------------------- oracle interface
  def simulate(self, sim: Sim, action: Array) -> tuple[Sim, Array, Array, Array]:
    """One step of the true dynamics from a restored state: no time limit, no reset.

    Returns:
      ``(next_sim, next_obs, reward, terminated)``.
    """
    self.check_action(action, batched=False)
    next_sim, reward, terminated = self.step_sim(sim, action)
    return next_sim, self.observe(next_sim), jnp.asarray(reward, jnp.float32), jnp.asarray(
        terminated, bool)

  # ------------------------------------------------------- controlled model error
  #: Physical parameters that ``perturbed`` scales (documentation; see each env).
  physics_parameters: tuple = ()

  def perturbed(self, scale: float) -> "Env":
    """A copy whose physical parameters (``physics_parameters``) are scaled by
    ``1 + scale``: the dynamics of the ``physics`` perturbed oracle
    (``mvelab.models.perturbed``). ``scale = 0`` gives an identical copy.

    Raises:
      ConfigError: the environment has no scalable physics.
    """
    from mvelab.errors import ConfigError
    del scale
    raise ConfigError(f"model_error: physics is not supported by env {self.name}")

  def _scaled_copy(self, scale: float, **names):
    """``copy.copy(self)`` with each attribute in ``names`` multiplied by ``1 + scale``."""
    import copy
    out = copy.copy(self)
    for name in names or self.physics_parameters:
      setattr(out, name, getattr(self, name) * (1.0 + scale))
    return out

  def describe(self) -> dict:
    """Static facts for tables and run configs."""
    return dict(name=self.name, obs_size=self.obs_size, action_size=self.action_size,
                episode_length=self.episode_length, action_repeat=self.action_repeat,
                backend=self.backend)

  def check_action(self, action, batched: bool = True) -> None:
    """Raises ConfigError if ``action`` has the wrong shape (checked at trace time).

    ``batched=False`` requires exactly ``[action_size]``; otherwise ``[..., action_size]``.
    """
    from mvelab.errors import ConfigError
    shape = tuple(jnp.shape(action))
    bad = (shape != (self.action_size,)) if not batched else (
        not shape or shape[-1] != self.action_size)
    if bad:
      want = f"[..., {self.action_size}]" if batched else f"[{self.action_size}]"
      raise ConfigError(
          f"action: {self.name} expects actions of shape {want}, got shape {list(shape)}")
