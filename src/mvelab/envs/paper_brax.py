"""The reference paper's locomotion tasks on modern Brax systems.

``paper_hopper``, ``paper_walker2d`` and ``paper_halfcheetah`` step today's Brax hopper,
walker2d and halfcheetah systems (``brax.envs``, with mvelab's exactly restorable
minimal state, ``mvelab.envs.brax_env``) but observe, reward, terminate and reset as the
reference code's tasks did (``paper-and-official-code.md`` §3):

==============  ====================================================  ==================
task            observation (dims)                                    agent step
==============  ====================================================  ==================
paper_hopper    z, quat (4), 3 joint angles, v (3), 3 joint vel (14)  0.02 s x repeat 2
paper_walker2d  z, quat (4), 6 joint angles, v (3), 6 joint vel (20)  0.02 s x repeat 2
paper_halfch.   z, quat, 6 angles, v (3), omega (3), 6 joint vel (23) 0.05 s x repeat 1
==============  ====================================================  ==================

``z`` is the torso height, ``quat`` the torso orientation (w, x, y, z), ``v`` / ``omega``
the torso's linear / angular velocity in the world frame; the x position is left out.

* **Reward** (once per agent step, from the start and end states): hopper and walker2d
  ``v_x(CoM) + 1 - 1e-3 |a|^2`` with ``v_x(CoM)`` the x displacement of the system's
  centre of mass divided by the agent step's dt; halfcheetah ``dx_torso / dt - 0.1 |a|^2``.
* **Termination** (post-step): hopper ``z < 0.7``; walker2d ``z`` outside ``[0.7, 2.0]``;
  halfcheetah never. No angle conditions (unlike Brax's and Gym's own tasks).
* **Reset**: ``q = q_init + U(-n, n)``, ``qd = U(-n, n)`` with ``n = 0.005`` (hopper,
  walker2d) or ``0.1`` (halfcheetah).
* **Action repeat multiplies dt**: the agent step integrates ``round(base_dt * repeat /
  timestep)`` physics substeps of the backend's timestep, so an agent step covers the
  reference's simulated time (hopper: 0.04 s = 20 substeps of 0.002 s on spring).

Differences from the reference code: the systems are today's Brax models (masses,
geometry, contacts and actuator gears as Brax ships them: hopper gear 200, walker2d 100,
halfcheetah 60-120), not brax 0.0.12's; the physics backend is spring, positional or
generalized (the reference used brax 0.0.12's ``pbd``); the reference's sign flip of
hopper/walker2d torques is not reproduced (the policy class is symmetric). MJX is not
offered here: its stored state lags the body poses by one substep (brax_env.py), and the
torso quaternion and velocities of the observation would need a forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mvelab.envs import brax_env
from mvelab.envs.base import tree_select
from mvelab.errors import ConfigError, check_choice

Array = jax.Array

BACKENDS = ("spring", "positional", "generalized")
#: Seconds of simulated time per agent step before action repeat (reference §3).
BASE_DT = {"hopper": 0.02, "walker2d": 0.02, "halfcheetah": 0.05}
RESET_NOISE = {"hopper": 0.005, "walker2d": 0.005, "halfcheetah": 0.1}
#: Torso height limits (terminated outside); halfcheetah never terminates.
HEIGHT_LIMITS = {"hopper": (0.7, float("inf")), "walker2d": (0.7, 2.0)}
CONTROL_COST = {"hopper": 1e-3, "walker2d": 1e-3, "halfcheetah": 0.1}
#: Number of root degrees of freedom (slide x, slide z, hinge y) before the joints.
_ROOT_DOF = 3


class PaperBraxEnv(brax_env.BraxEnv):
  """A reference-paper locomotion task on a modern Brax system (see the module doc).

  Args:
    brax_name: ``hopper``, ``walker2d`` or ``halfcheetah``.
    backend: ``spring``, ``positional`` or ``generalized``.
    action_repeat: multiplies the agent step's simulated time (reference: 2, 2, 1).
    episode_length: time limit in agent steps (reference: 500, 500, 1000).
  """

  def __init__(self, brax_name: str, backend: str = "spring", action_repeat: int = 2,
               episode_length: int = 500):
    check_choice("env", brax_name, tuple(BASE_DT))
    check_choice("backend", backend, BACKENDS)
    default = brax_env.BraxEnv(brax_name, backend=backend)
    frames = BASE_DT[brax_name] * action_repeat / default.substep_dt
    factor = frames / default.default_n_frames
    if abs(factor - round(factor)) > 1e-6 or round(factor) < 1:
      raise ConfigError(f"action_repeat: {action_repeat} gives {frames:g} substeps of "
                        f"{default.substep_dt:g} s, not a multiple of brax's "
                        f"{default.default_n_frames} on {backend}")
    super().__init__(brax_name, backend=backend, action_repeat=int(round(factor)),
                     episode_length=episode_length)
    self.name = f"paper_{brax_name}"
    self.brax_name = brax_name
    self.action_repeat = int(action_repeat)
    self._num_joints = self.brax_env.sys.q_size() - _ROOT_DOF
    self.obs_size = 1 + 4 + 2 * self._num_joints + 3 + (3 if brax_name == "halfcheetah" else 0)

  def _on_system(self) -> None:
    super()._on_system()
    self._mass = jnp.asarray(self.brax_env.sys.link.inertia.mass, jnp.float32)

  # ------------------------------------------------------------ derived quantities
  def _pipeline(self, sim: dict):
    with brax_env._quiet():  # pylint: disable=protected-access
      return self.restore(sim)

  def _com_x(self, ps) -> Array:
    """x of the system's centre of mass ``[]`` from the link frames of ``ps``."""
    x_i = ps.x.vmap().do(self.brax_env.sys.link.inertia.transform)
    return jnp.sum(self._mass * x_i.pos[:, 0]) / jnp.sum(self._mass)

  def _observe_pipeline(self, ps) -> Array:
    parts = [ps.x.pos[0, 2:3], ps.x.rot[0], ps.q[_ROOT_DOF:], ps.xd.vel[0]]
    if self.brax_name == "halfcheetah":
      parts.append(ps.xd.ang[0])
    parts.append(ps.qd[_ROOT_DOF:])
    return jnp.concatenate(parts).astype(jnp.float32)

  # ----------------------------------------------------------------- primitives
  def init_sim(self, key: Array) -> dict:
    """``q = q_init + U(-n, n)``, ``qd = U(-n, n)`` (``n`` per task, module doc)."""
    sys, n = self.brax_env.sys, RESET_NOISE[self.brax_name]
    k_q, k_qd = jax.random.split(key)
    q = sys.init_q + jax.random.uniform(k_q, (sys.q_size(),), minval=-n, maxval=n)
    qd = jax.random.uniform(k_qd, (sys.qd_size(),), minval=-n, maxval=n)
    with brax_env._quiet():  # pylint: disable=protected-access
      return self.extract(self.brax_env.pipeline_init(q, qd))

  def step_sim(self, sim: dict, action: Array) -> tuple[dict, Array, Array]:
    """One agent step; non-finite results become ``(sim, 0, True)`` as in ``BraxEnv``."""
    action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    ps0 = self._pipeline(sim)
    with brax_env._quiet():  # pylint: disable=protected-access
      ps1 = self.brax_env.pipeline_step(ps0, action)
    next_sim = self.extract(ps1)
    # Observe and reward from the restored next state, exactly as a replay would.
    ps1 = self._pipeline(next_sim)
    if self.brax_name == "halfcheetah":
      forward = (ps1.x.pos[0, 0] - ps0.x.pos[0, 0]) / self.dt
      healthy = 0.0
    else:
      forward = (self._com_x(ps1) - self._com_x(ps0)) / self.dt
      healthy = 1.0
    reward = forward + healthy - CONTROL_COST[self.brax_name] * jnp.sum(action ** 2)
    obs = self._observe_pipeline(ps1)
    terminated = self.termination_fn(None, action, obs)
    ok = brax_env._all_finite((next_sim, obs, reward))  # pylint: disable=protected-access
    return (tree_select(ok, next_sim, sim), jnp.where(ok, reward, 0.0).astype(jnp.float32),
            jnp.logical_or(terminated, jnp.logical_not(ok)))

  def observe(self, sim: dict) -> Array:
    """The reference's observation layout ``[obs_size]`` (module doc)."""
    return self._observe_pipeline(self._pipeline(sim))

  def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
    """Torso height ``next_obs[..., 0]`` outside the task's limits; bool ``[...]``.

    Exact: the env applies the same test to the same observation.
    """
    del obs, action
    z = jnp.asarray(next_obs, jnp.float32)[..., 0]
    if self.brax_name not in HEIGHT_LIMITS:
      return jnp.zeros(z.shape, bool)
    low, high = HEIGHT_LIMITS[self.brax_name]
    return (z < low) | (z > high)
