"""The reference paper's cart-pole tasks, as pure-JAX rigid-body equations.

The reference code (Palenicek et al. 2023) runs an *inverted pendulum* and a *cartpole
swing-up* on one and the same brax 0.0.12 system (``paper-and-official-code.md`` §3).
This module re-derives that system from its physical parameters; nothing is vendored.

System (SI units)
-----------------
* cart: a body of mass ``M = 10.471975`` that moves along ``x`` only, driven by a thruster
  force ``F = 100 * a`` (``a`` the agent action clipped to ``[-1, 1]``). No friction.
* pole: a solid capsule of mass ``m = 5.0185914``, radius ``r = 0.049`` and total length
  ``0.698`` (cylinder ``h = 0.6`` plus two hemispherical caps; ``m`` is 1000 kg/m^3 times
  its volume). It hangs from a frictionless hinge at the cart's centre; its centre of mass
  is ``l = 0.3`` from the hinge. Its moment of inertia about the centre of mass,
  perpendicular to its axis, follows from the capsule shape (uniform density)::

    I = m_cyl (h^2/12 + r^2/4) + m_caps (2 r^2/5 + h^2/4 + 3 h r/8)

  with ``m_cyl = m h / (h + 4 r/3)`` and ``m_caps = m - m_cyl`` (``I = 0.1887``).
* gravity ``g = 9.81``.

Equations of motion (Lagrange; ``theta = 0`` upright, positive ``theta`` tilts the pole
towards ``+x``; pole centre of mass at ``(x + l sin theta, l cos theta)``)::

  (M + m) x''            + m l cos(theta) theta''  = F + m l sin(theta) theta'^2
  m l cos(theta) x''     + (I + m l^2) theta''     = m g l sin(theta)

solved for ``(x'', theta'')`` as a 2 x 2 linear system (Cramer's rule). The energy
``E = (M + m) x'^2 / 2 + m l cos(theta) x' theta' + (I + m l^2) theta'^2 / 2 +
m g l cos(theta)`` is conserved when ``F = 0`` (tested).

Integration: semi-implicit Euler (velocities first, then positions) with the reference's
physics step ``dt / substeps = 0.04 / 8 = 0.005`` s. **Action repeat multiplies dt**, as
in the reference's wrapper: one agent step integrates ``8 * action_repeat`` substeps with
the action held, and the reward and the termination are computed **once**, from the state
at the end of the agent step (not summed over repeats).

Tasks (registered in ``mvelab.envs.registry``)
----------------------------------------------
* ``paper_inverted_pendulum``: starts upright, ``theta, theta' ~ U(-0.01, 0.01)``
  (``x = x' = 0``); reward ``+1`` per step; terminates when the pole's height
  ``0.3 cos(theta) + 0.1 <= 0.2`` (``cos theta <= 1/3``, ``|theta| >= 70.5 deg``); action
  repeat 4 (0.16 s per agent step), 250 agent steps. Maximum return 250.
* ``paper_cartpole``: starts hanging, ``theta = pi + U(-0.01, 0.01)``,
  ``theta' ~ U(-0.01, 0.01)``; dm_control's smooth product reward in ``[0, 1]`` (from the
  post-step state and the clipped action)::

    upright        = (cos theta + 1) / 2
    centered       = (1 + gaussian_tolerance(x, margin=2)) / 2
    small_control  = (4 + quadratic_tolerance(a, margin=1)) / 5
    small_velocity = (1 + gaussian_tolerance(theta', margin=5)) / 2

  terminates when ``|x| > 1`` after the step; action repeat 2 (0.08 s), 500 agent steps.

Simulator state ``sim``: float32 ``[4]`` = ``[x, theta, x', theta']`` (``theta`` not
wrapped); it restarts the physics exactly. Observation ``[5]`` = ``[x, cos theta,
sin theta, x', theta']``, the reference's layout.

Differences from the reference code
-----------------------------------
* Physics: brax 0.0.12's position-based dynamics (``pbd``) with a soft hinge is not
  reproduced; this is the ideal rigid system with the same masses, inertia, force, dt and
  substeps. Trajectories therefore differ slightly from the reference's.
* Termination functions (for imagined transitions of a learned model) are the exact
  post-step tests above. The reference's cartpole termination function tests ``|x|`` of
  the **pre-step** observation (a one-step lag: an imagined step that leaves the track is
  only cut one step later); mvelab's tests the post-step observation, as the env does.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from mvelab.envs.classic import swingup_reward
from mvelab.envs.base import Env
from mvelab.errors import check_positive

Array = jax.Array

CART_MASS = 10.471975
POLE_MASS = 5.0185914
POLE_RADIUS = 0.049
POLE_LENGTH = 0.698          # capsule length including both caps
POLE_COM = 0.3               # hinge to pole centre of mass
GRAVITY = 9.81
FORCE_SCALE = 100.0
BASE_DT = 0.04               # reference system dt per env step before action repeat
BASE_SUBSTEPS = 8            # physics substeps per env step before action repeat


def capsule_inertia(mass: float, radius: float, length: float) -> float:
  """Moment of inertia of a solid capsule about its centre, perpendicular to its axis.

  Args:
    mass: total mass (uniform density).
    radius: radius of the cylinder and the caps.
    length: total length including both hemispherical caps.
  """
  h = length - 2.0 * radius
  m_cyl = mass * h / (h + 4.0 * radius / 3.0)
  m_caps = mass - m_cyl
  return (m_cyl * (h * h / 12.0 + radius * radius / 4.0)
          + m_caps * (2.0 * radius * radius / 5.0 + h * h / 4.0 + 3.0 * h * radius / 8.0))


POLE_INERTIA = capsule_inertia(POLE_MASS, POLE_RADIUS, POLE_LENGTH)


@dataclasses.dataclass(frozen=True)
class Physics:
  """The system's physical parameters (SI units); ``NOMINAL`` is the reference's."""

  cart_mass: float = CART_MASS
  pole_mass: float = POLE_MASS
  pole_com: float = POLE_COM
  pole_inertia: float = POLE_INERTIA
  gravity: float = GRAVITY
  force_scale: float = FORCE_SCALE

  def scaled(self, scale: float) -> "Physics":
    """Masses, length, gravity and thruster gain times ``1 + scale``; the inertia
    (mass x length^2) times ``(1 + scale)^3``."""
    f = 1.0 + scale
    return Physics(self.cart_mass * f, self.pole_mass * f, self.pole_com * f,
                   self.pole_inertia * f ** 3, self.gravity * f, self.force_scale * f)


NOMINAL = Physics()


def accelerations(sim: Array, force: Array, p: Physics = NOMINAL) -> tuple[Array, Array]:
  """``(x'', theta'')`` of state ``sim`` ``[4]`` under horizontal ``force`` ``[]``."""
  theta, theta_dot = sim[1], sim[3]
  big_m, m, l, inertia = p.cart_mass, p.pole_mass, p.pole_com, p.pole_inertia
  c, s = jnp.cos(theta), jnp.sin(theta)
  a11, a12, a22 = big_m + m, m * l * c, inertia + m * l * l
  b1 = force + m * l * s * theta_dot ** 2
  b2 = m * p.gravity * l * s
  det = a11 * a22 - a12 * a12
  return (a22 * b1 - a12 * b2) / det, (a11 * b2 - a12 * b1) / det


def energy(sim: Array, p: Physics = NOMINAL) -> Array:
  """Total mechanical energy ``[...]`` of states ``sim`` ``[..., 4]`` (see module doc)."""
  theta, x_dot, theta_dot = sim[..., 1], sim[..., 2], sim[..., 3]
  m, l = p.pole_mass, p.pole_com
  kinetic = (0.5 * (p.cart_mass + m) * x_dot ** 2
             + m * l * jnp.cos(theta) * x_dot * theta_dot
             + 0.5 * (p.pole_inertia + m * l * l) * theta_dot ** 2)
  return kinetic + m * p.gravity * l * jnp.cos(theta)


def substep(sim: Array, force: Array, dt: float, p: Physics = NOMINAL) -> Array:
  """One semi-implicit Euler step of ``dt`` seconds: velocities, then positions."""
  x_acc, theta_acc = accelerations(sim, force, p)
  x_dot = sim[2] + dt * x_acc
  theta_dot = sim[3] + dt * theta_acc
  return jnp.stack([sim[0] + dt * x_dot, sim[1] + dt * theta_dot, x_dot,
                    theta_dot]).astype(jnp.float32)


class PaperCartpoleSystem(Env):
  """The reference's cart-pole system; the two tasks differ in start, reward, termination.

  Args:
    action_repeat: multiplies the agent step's dt (``0.04 * action_repeat`` seconds).
    episode_length: time limit in agent steps.
  """

  obs_size = 5
  action_size = 1
  backend = "jax"
  default_action_repeat: int
  default_episode_length: int

  def __init__(self, action_repeat: int | None = None, episode_length: int | None = None):
    action_repeat = self.default_action_repeat if action_repeat is None else action_repeat
    episode_length = self.default_episode_length if episode_length is None else episode_length
    check_positive("action_repeat", action_repeat)
    check_positive("episode_length", episode_length)
    self.action_repeat = int(action_repeat)
    self.episode_length = int(episode_length)
    self.substeps = BASE_SUBSTEPS * self.action_repeat
    self.substep_dt = BASE_DT / BASE_SUBSTEPS
    self.dt = self.substeps * self.substep_dt
    self.physics = NOMINAL

  #: Scaled by ``perturbed``: see :meth:`Physics.scaled`. The task's geometry (the pole
  #: height of the termination test, the track limit) is not.
  physics_parameters = tuple(f.name for f in dataclasses.fields(Physics))

  def perturbed(self, scale: float) -> "PaperCartpoleSystem":
    import copy
    out = copy.copy(self)
    out.physics = self.physics.scaled(scale)
    return out

  # Task-specific pieces.
  start_angle: float

  def reward(self, next_sim: Array, a: Array) -> Array:
    raise NotImplementedError

  def terminated(self, next_obs: Array) -> Array:
    raise NotImplementedError

  # Env primitives.
  def init_sim(self, key: Array) -> Array:
    """``[x, theta, x', theta']`` with ``theta, theta'`` perturbed by ``U(-0.01, 0.01)``."""
    noise = jax.random.uniform(key, (2,), jnp.float32, minval=-0.01, maxval=0.01)
    return jnp.stack([0.0, self.start_angle + noise[0], 0.0, noise[1]]).astype(jnp.float32)

  def step_sim(self, sim: Array, action: Array) -> tuple[Array, Array, Array]:
    """Integrates ``8 * action_repeat`` substeps with the action held.

    Returns:
      ``(next_sim [4], reward [], terminated [])``, both from the post-step state.
    """
    a = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)[0]
    force = self.physics.force_scale * a

    def body(s, _):
      return substep(s, force, self.substep_dt, self.physics), None

    next_sim, _ = jax.lax.scan(body, jnp.asarray(sim, jnp.float32), None,
                               length=self.substeps)
    return next_sim, self.reward(next_sim, a), self.terminated(self.observe(next_sim))

  def observe(self, sim: Array) -> Array:
    """Float32 ``[5]`` ``[x, cos theta, sin theta, x', theta']`` of ``sim`` ``[4]``."""
    x, theta, x_dot, theta_dot = sim[0], sim[1], sim[2], sim[3]
    return jnp.stack([x, jnp.cos(theta), jnp.sin(theta), x_dot, theta_dot]).astype(
        jnp.float32)

  def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
    """The env's own post-step test on ``next_obs`` ``[..., 5]``; bool ``[...]``."""
    del obs, action
    return self.terminated(jnp.asarray(next_obs, jnp.float32))


class PaperInvertedPendulum(PaperCartpoleSystem):
  """``paper_inverted_pendulum``: balance from upright; +1 per step until the pole falls."""

  name = "paper_inverted_pendulum"
  default_action_repeat = 4
  default_episode_length = 250
  start_angle = 0.0
  #: Pole height of the reference's test, ``POLE_COM cos(theta) + 0.1 <= 0.2``.
  height_offset, height_limit = 0.1, 0.2

  def reward(self, next_sim: Array, a: Array) -> Array:
    return jnp.ones((), jnp.float32)

  def terminated(self, next_obs: Array) -> Array:
    return POLE_COM * next_obs[..., 1] + self.height_offset <= self.height_limit


class PaperCartpole(PaperCartpoleSystem):
  """``paper_cartpole``: swing up from hanging; dm_control's product reward; |x| <= 1."""

  name = "paper_cartpole"
  default_action_repeat = 2
  default_episode_length = 500
  start_angle = math.pi
  x_limit = 1.0

  def reward(self, next_sim: Array, a: Array) -> Array:
    return swingup_reward(next_sim[0], next_sim[1], next_sim[3], a)

  def terminated(self, next_obs: Array) -> Array:
    return jnp.abs(next_obs[..., 0]) > self.x_limit
