"""Pure-JAX classic control environments: Pendulum swing-up and Cartpole swing-up.

Both are written against the ``Env`` protocol of ``mvelab.envs.base``: the simulator
state ``sim`` is a float32 array from which the physics restarts exactly, and every
function is pure, jittable and vmappable. Agent actions live in ``[-1, 1]``; each
environment clips them to that box and rescales them to a torque/force.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mvelab.envs.base import Env
from mvelab.errors import check_positive

Array = jax.Array


def angle_normalize(x: Array) -> Array:
  """Wraps angles to ``[-pi, pi)`` exactly as Gymnasium's ``angle_normalize``."""
  return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


def gaussian_tolerance(x: Array, margin: float) -> Array:
  """dm_control ``tolerance`` with bounds ``(0, 0)``, gaussian sigmoid, value 0.1 at margin.

  Args:
    x: any shape.
    margin: distance from 0 at which the value falls to 0.1.

  Returns:
    Same shape as ``x``, in ``(0, 1]``, equal to 1 at ``x == 0``.
  """
  scale = math.sqrt(-2.0 * math.log(0.1)) / margin
  return jnp.exp(-0.5 * jnp.square(x * scale))


def quadratic_tolerance(x: Array, margin: float) -> Array:
  """dm_control ``tolerance`` with bounds ``(0, 0)``, quadratic sigmoid, value 0 at margin.

  Args:
    x: any shape.
    margin: distance from 0 at which (and beyond which) the value is 0.

  Returns:
    Same shape as ``x``, ``max(0, 1 - (x / margin)^2)`` in ``[0, 1]``.
  """
  return jnp.maximum(0.0, 1.0 - jnp.square(x / margin))


def swingup_reward(x: Array, theta: Array, theta_dot: Array, a: Array) -> Array:
  """dm_control's cart-pole swing-up reward ``[]`` in ``[0, 1]`` (post-step state, action)::

    upright * centered * small_control * small_velocity
  """
  upright = (jnp.cos(theta) + 1.0) / 2.0
  centered = (1.0 + gaussian_tolerance(x, margin=2.0)) / 2.0
  small_control = (4.0 + quadratic_tolerance(a, margin=1.0)) / 5.0
  small_velocity = (1.0 + gaussian_tolerance(theta_dot, margin=5.0)) / 2.0
  return (upright * centered * small_control * small_velocity).astype(jnp.float32)


class _ClassicEnv(Env):
  """Shared constructor of the pure-JAX environments (validated options)."""

  default_episode_length: int

  def __init__(self, action_repeat: int = 1, episode_length: int | None = None):
    if episode_length is None:
      episode_length = self.default_episode_length
    check_positive("action_repeat", action_repeat)
    check_positive("episode_length", episode_length)
    self.action_repeat = action_repeat
    self.episode_length = episode_length


class Pendulum(_ClassicEnv):
  """Gymnasium ``Pendulum-v1`` swing-up, reproduced exactly in JAX.

  Physics: ``g = 10``, ``m = 1``, ``l = 1``, ``dt = 0.05``, speed clipped to ``[-8, 8]``,
  torque ``u = 2 * clip(a, -1, 1)``. One physics step from ``(th, thdot)``::

    cost     = angle_normalize(th)^2 + 0.1 * thdot^2 + 0.001 * u^2   # pre-step state
    thdot'   = clip(thdot + (3 g / (2 l) sin(th) + 3 / (m l^2) u) dt, -8, 8)
    th'      = th + thdot' dt
    reward   = -cost

  Action repeat: one agent step holds the action for ``action_repeat`` physics steps and
  returns the SUM of their rewards (so rewards are in ``[-action_repeat * 16.27, 0]``).
  ``episode_length`` counts agent steps. There is no termination, ever.

  Simulator state ``sim``: float32 ``[2]`` = ``[th, thdot]`` (``th`` is not wrapped, as in
  Gymnasium). Observation ``[3]`` = ``[cos th, sin th, thdot]``. Reset draws
  ``th ~ U(-pi, pi)``, ``thdot ~ U(-1, 1)``.
  """

  name = "pendulum"
  obs_size = 3
  action_size = 1
  backend = "jax"

  g = 10.0
  m = 1.0
  l = 1.0
  dt = 0.05
  max_speed = 8.0
  max_torque = 2.0
  #: Scaled by ``perturbed`` (mass, length, gravity, actuator gain).
  physics_parameters = ("m", "l", "g", "max_torque")

  def perturbed(self, scale: float) -> "Pendulum":
    return self._scaled_copy(scale)

  default_episode_length = 200

  def init_sim(self, key: Array) -> Array:
    """Returns float32 ``[2]`` ``[th, thdot]`` with ``th ~ U(-pi, pi)``, ``thdot ~ U(-1, 1)``."""
    high = jnp.array([jnp.pi, 1.0], jnp.float32)
    return jax.random.uniform(key, (2,), jnp.float32, minval=-high, maxval=high)

  def _physics_step(self, sim: Array, u: Array) -> tuple[Array, Array]:
    """One Gymnasium step from ``sim`` ``[2]`` with torque ``u`` ``[]``: ``(sim', reward)``."""
    th, thdot = sim[0], sim[1]
    g, m, l, dt = self.g, self.m, self.l, self.dt
    cost = angle_normalize(th) ** 2 + 0.1 * thdot ** 2 + 0.001 * u ** 2
    newthdot = thdot + (3 * g / (2 * l) * jnp.sin(th) + 3.0 / (m * l ** 2) * u) * dt
    newthdot = jnp.clip(newthdot, -self.max_speed, self.max_speed)
    newth = th + newthdot * dt
    return jnp.stack([newth, newthdot]).astype(jnp.float32), -cost.astype(jnp.float32)

  def step_sim(self, sim: Array, action: Array) -> tuple[Array, Array, Array]:
    """Holds ``action`` ``[1]`` for ``action_repeat`` physics steps.

    Returns:
      ``(next_sim [2], summed reward [], terminated [] = False)``.
    """
    a = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    u = self.max_torque * a[0]

    def body(carry, _):
      s, total = carry
      s, r = self._physics_step(s, u)
      return (s, total + r), None

    init = (jnp.asarray(sim, jnp.float32), jnp.zeros((), jnp.float32))
    (next_sim, reward), _ = jax.lax.scan(body, init, None, length=self.action_repeat)
    return next_sim, reward, jnp.zeros((), bool)

  def observe(self, sim: Array) -> Array:
    """Float32 ``[3]`` ``[cos th, sin th, thdot]`` of ``sim`` ``[2]``."""
    th, thdot = sim[0], sim[1]
    return jnp.stack([jnp.cos(th), jnp.sin(th), thdot]).astype(jnp.float32)

  def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
    """Always False (``[...]`` bool, leading axes of ``next_obs``): Pendulum never ends."""
    return jnp.zeros(jnp.shape(next_obs)[:-1], bool)


class CartpoleSwingup(_ClassicEnv):
  """Cartpole swing-up: the pole starts hanging down; swing it up and balance it.

  Physics: the classic Barto / Gymnasium ``CartPole`` equations of motion with gravity
  ``9.8``, cart mass ``1.0``, pole mass ``0.1``, pole half-length ``0.5`` and horizontal
  force ``10 * clip(a, -1, 1)`` on the cart. Angle convention: ``theta = 0`` upright,
  ``theta = pi`` hanging (the equations are valid for any angle). Integration:
  semi-implicit Euler (velocities first, then positions) with ``tau = 0.01`` s and
  4 sub-steps per agent step, i.e. 0.04 s of simulated time per agent step (before action
  repeat). Default episode: 500 agent steps = 20 s.

  Reward, from the post-step state and the clipped action, a smooth product in ``[0, 1]``
  (dm_control ``cartpole.swingup`` style)::

    upright        = (cos theta + 1) / 2
    centered       = (1 + gaussian_tolerance(x, margin=2)) / 2
    small_control  = (4 + quadratic_tolerance(a, margin=1)) / 5
    small_velocity = (1 + gaussian_tolerance(theta_dot, margin=5)) / 2
    reward         = upright * centered * small_control * small_velocity

  Termination: the cart leaves the track, ``|x| > 2.4`` on the post-step state
  (``termination_fn`` checks ``|next_obs[0]| > 2.4``).

  Action repeat: the whole agent step (4 sub-steps + reward) is repeated
  ``action_repeat`` times with the same action and the rewards are SUMMED (so rewards
  are in ``[0, action_repeat]``). If the track limit is hit in an earlier repeat, the
  state is frozen from then on (later repeats add no reward) and the step reports
  ``terminated``.

  Simulator state ``sim``: float32 ``[4]`` = ``[x, theta, x_dot, theta_dot]`` (``theta``
  is not wrapped). Observation ``[5]`` = ``[x, cos theta, sin theta, x_dot, theta_dot]``.
  Reset: ``x, x_dot, theta_dot ~ U(-0.01, 0.01)``, ``theta = pi + U(-0.01, 0.01)``.
  """

  name = "cartpole_swingup"
  obs_size = 5
  action_size = 1
  backend = "jax"

  gravity = 9.8
  masscart = 1.0
  masspole = 0.1
  length = 0.5  # half the pole's length
  force_mag = 10.0
  #: Scaled by ``perturbed`` (masses, length, gravity, actuator gain).
  physics_parameters = ("masscart", "masspole", "length", "gravity", "force_mag")

  @property
  def total_mass(self) -> float:
    return self.masscart + self.masspole

  @property
  def polemass_length(self) -> float:
    return self.masspole * self.length

  def perturbed(self, scale: float) -> "CartpoleSwingup":
    return self._scaled_copy(scale)
  tau = 0.01
  substeps = 4
  x_threshold = 2.4

  default_episode_length = 500

  def init_sim(self, key: Array) -> Array:
    """Returns float32 ``[4]`` ``[x, theta, x_dot, theta_dot]`` near the hanging rest state."""
    noise = jax.random.uniform(key, (4,), jnp.float32, minval=-0.01, maxval=0.01)
    return noise + jnp.array([0.0, jnp.pi, 0.0, 0.0], jnp.float32)

  def _physics_substep(self, sim: Array, force: Array) -> Array:
    """One semi-implicit Euler step of ``tau`` from ``sim`` ``[4]`` under ``force`` ``[]``."""
    x, theta, x_dot, theta_dot = sim[0], sim[1], sim[2], sim[3]
    costheta = jnp.cos(theta)
    sintheta = jnp.sin(theta)
    temp = (force + self.polemass_length * theta_dot ** 2 * sintheta) / self.total_mass
    thetaacc = (self.gravity * sintheta - costheta * temp) / (
        self.length * (4.0 / 3.0 - self.masspole * costheta ** 2 / self.total_mass))
    xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
    x_dot = x_dot + self.tau * xacc
    x = x + self.tau * x_dot
    theta_dot = theta_dot + self.tau * thetaacc
    theta = theta + self.tau * theta_dot
    return jnp.stack([x, theta, x_dot, theta_dot]).astype(jnp.float32)

  def _reward(self, sim: Array, a: Array) -> Array:
    """Reward ``[]`` in ``[0, 1]`` of post-step ``sim`` ``[4]`` and clipped action ``a`` ``[]``."""
    return swingup_reward(sim[0], sim[1], sim[3], a)

  def _agent_step(self, sim: Array, a: Array) -> tuple[Array, Array, Array]:
    """One agent step without repeat: ``(sim' [4], reward [], terminated [])``."""
    force = self.force_mag * a
    for _ in range(self.substeps):
      sim = self._physics_substep(sim, force)
    terminated = jnp.abs(sim[0]) > self.x_threshold
    return sim, self._reward(sim, a), terminated

  def step_sim(self, sim: Array, action: Array) -> tuple[Array, Array, Array]:
    """Repeats the agent step ``action_repeat`` times, freezing after a termination.

    Returns:
      ``(next_sim [4], summed reward [], terminated [])``.
    """
    a = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)[0]

    def body(carry, _):
      s, total, done = carry
      new_s, r, term = self._agent_step(s, a)
      s = jnp.where(done, s, new_s)
      total = total + jnp.where(done, 0.0, r)
      done = jnp.logical_or(done, term)
      return (s, total, done), None

    init = (jnp.asarray(sim, jnp.float32), jnp.zeros((), jnp.float32), jnp.zeros((), bool))
    (next_sim, reward, terminated), _ = jax.lax.scan(
        body, init, None, length=self.action_repeat)
    return next_sim, reward, terminated

  def observe(self, sim: Array) -> Array:
    """Float32 ``[5]`` ``[x, cos theta, sin theta, x_dot, theta_dot]`` of ``sim`` ``[4]``."""
    x, theta, x_dot, theta_dot = sim[0], sim[1], sim[2], sim[3]
    return jnp.stack([x, jnp.cos(theta), jnp.sin(theta), x_dot, theta_dot]).astype(
        jnp.float32)

  def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
    """``|next_obs[..., 0]| > 2.4``: ``[...]`` bool over the leading axes."""
    return jnp.abs(next_obs[..., 0]) > self.x_threshold
