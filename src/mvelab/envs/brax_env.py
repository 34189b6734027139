"""Brax environments behind the mvelab ``Env`` protocol, with a minimal restorable state.

``BraxEnv(name, backend=..., action_repeat=..., episode_length=...)`` wraps
``brax.envs.get_environment(name, backend=backend, n_frames=...)`` for ``inverted_pendulum``,
``inverted_double_pendulum``, ``hopper``, ``walker2d``, ``halfcheetah`` and ``ant`` on the
``spring``, ``positional``, ``generalized`` and ``mjx`` physics backends.

Action repeat
-------------
One agent step is ONE brax env step whose physics interval is ``action_repeat`` times
longer: the brax env is built with ``n_frames = default_n_frames * action_repeat``, where
``default_n_frames`` is what the brax constructor picks for that env *and backend* (read
from a default-built env: brax changes it per backend, e.g. 4 instead of 2 for the
pendulums and 16 instead of 5 for halfcheetah on spring/positional). The reward is brax's
reward computed once per agent step from the start and end states (velocities are
``displacement / dt`` with ``dt = timestep * n_frames``), as in the reference paper; it is
NOT a sum of per-frame rewards. ``episode_length`` counts agent steps.

Simulator state ``sim``
-----------------------
``sim`` is a minimal dict of float32 arrays from which brax's next step is reproduced
exactly (to float32 rounding, i.e. as exactly as from brax's full ``pipeline_state``;
tested in ``tests/test_brax_envs.py`` against brax's own rollouts). Per backend:

* ``generalized``: ``q [q_size]``, ``qd [qd_size]``, ``mass_mx_inv [qd_size, qd_size]``.
  Restored by ``pipeline_init(q, qd)`` with the stored ``mass_mx_inv``: brax's step
  refines the inverse mass matrix by a few iterations warm-started from the previous one,
  so (q, qd) alone drifts (up to 0.5 in obs at contacts).
* ``mjx``: ``qpos``, ``qvel``, ``qacc_warmstart [nv]`` and ``x_pos0 [3]``, the root body
  position as brax reports it in ``pipeline_state.x.pos[0]``. MJX computes ``x`` before
  integrating, so it lags ``qpos`` by one substep; brax's forward reward (and the
  hopper/walker2d torso height in the obs) read it, so it must be kept. ``mjx.step``
  recomputes every other field from these, so they are restored into a zero template of
  the pipeline state (no ``mjx.forward`` in the restore).
* ``spring`` / ``positional``: ``x_i_pos [L, 3]``, ``x_i_rot [L, 4]``, ``xd_i_ang [L, 3]``,
  ``xd_i_vel [L, 3]`` (the ``L`` links' centre-of-mass poses and velocities in the world
  frame: what these maximal-coordinate integrators integrate) plus ``q``, ``qd``. (q, qd)
  alone is NOT enough: joints are soft, so reduced coordinates do not determine the
  state (next-obs errors 0.04-25, shared/reference/measurements.md section 2).
  ``q, qd`` are themselves a function of ``x_i, xd_i`` after a step, but recomputing them
  (``kinematics.inverse``) costs more compile time (2-5 s per call site) than the
  2 x q_size floats they take, and keeping them keeps brax's sampled reset coordinates. The rest of the pipeline state is recomputed
  exactly as brax's step recomputes it at its end (``com.to_world``,
  ``kinematics.world_to_joint``); masses are constants and inverse inertias are
  recomputed by the step itself. One caveat: brax's *reset* computes the world poses by
  forward kinematics rather than from the COM poses, so the restored initial state
  differs from brax's by float32 rounding (< 1e-7); our env starts from the restored one.
  The dynamics from there on are brax's, bit for bit in the tests, but chaotic envs
  amplify even that initial rounding (halfcheetah: 1e-8 -> O(1) in about 20 steps), so
  rollouts of this env and of brax from the "same" reset do not stay equal.

Sizes (floats per sim) are listed by ``benchmarks/env_cost.py``; e.g. hopper: 64
(spring/positional), 48 (generalized), 21 (mjx), versus 228-1144 for the full state.

Non-finite physics
------------------
Brax keeps integrating after ``done`` and a terminated state can blow up to NaN (e.g.
inverted_pendulum). ``Env.step`` auto-resets, so the agent never steps a terminated
state; ``simulate`` (the oracle) may. ``step_sim`` therefore never lets a non-finite
value out: if the next state, its observation or the reward is not finite, it returns the
input state unchanged, reward 0 and ``terminated = True``.

Termination from observations
-----------------------------
``termination_fn`` reproduces each env's ``done`` from ``next_obs`` (see its docstring for
the per-env formulas and the few cases where it is only approximate).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import jax
import jax.numpy as jnp

from mvelab.envs.base import Env, tree_select
from mvelab.errors import check_choice, check_positive

# Brax warns on every model load that it is unmaintained, jaxopt that it is deprecated,
# and mujoco.mjx prints "Failed to import warp" on import: keep all of that quiet.
warnings.filterwarnings("ignore", message=r".*not actively being maintained.*")
warnings.filterwarnings("ignore", message=r".*JAXopt is no longer maintained.*")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(brax|jaxopt|mujoco)")
with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
  warnings.simplefilter("ignore")
  from brax import com as brax_com
  from brax import envs as brax_envs
  from brax import kinematics as brax_kinematics
  from brax.base import Motion, Transform
  from brax.positional import base as positional_base
  from brax.spring import base as spring_base

Array = jax.Array

BRAX_ENV_NAMES = ("inverted_pendulum", "inverted_double_pendulum", "hopper", "walker2d",
                  "halfcheetah", "ant")
BACKENDS = ("spring", "positional", "generalized", "mjx")

# Half-lengths of the two poles of inverted_double_pendulum (tip = 0.6 above each hinge).
_IDP_POLE = 0.6


@contextlib.contextmanager
def _quiet():
  """Silences brax/mujoco warnings raised while building or tracing an env."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    yield


def _all_finite(tree) -> Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.ones((), bool)


class _ObsView:
  """Stands in for a pipeline state in ``_get_obs``: ``q``, ``qd`` and a lazy ``x``.

  The six envs' ``_get_obs`` read only these (hopper/walker2d: ``x.pos[0, 2]``); building
  just them keeps ``observe`` cheap to compile and run. ``observe`` is tested to equal
  brax's own observation.
  """

  def __init__(self, q, qd, x_fn):
    self.q, self.qd, self._x_fn = q, qd, x_fn

  @property
  def x(self):
    return self._x_fn()


class BraxEnv(Env):
  """A brax environment with a minimal exactly-restorable simulator state.

  Args:
    brax_name: one of ``BRAX_ENV_NAMES``.
    backend: one of ``BACKENDS``.
    action_repeat: physics interval of one agent step, in units of the env's default
      brax step (see the module docstring).
    episode_length: time limit in agent steps.

  Attributes:
    name, obs_size, action_size, episode_length, action_repeat, backend: see ``Env``.
    default_n_frames: brax's physics substeps per env step for this env and backend.
    n_frames: physics substeps per agent step (``default_n_frames * action_repeat``).
    dt: seconds of simulated time per agent step (``n_frames * substep_dt``).
    substep_dt: the physics timestep.
    brax_env: the wrapped brax ``PipelineEnv``.

  Actions: ``[action_size]`` in ``[-1, 1]``, clipped to it. Brax's envs take that box
  (control ranges ``[-1, 1]``; inverted_pendulum rescales it to its ``[-3, 3]`` itself).
  """

  def __init__(self, brax_name: str, backend: str = "spring", action_repeat: int = 1,
               episode_length: int = 1000):
    check_choice("env", brax_name, BRAX_ENV_NAMES)
    check_choice("backend", backend, BACKENDS)
    check_positive("action_repeat", action_repeat)
    check_positive("episode_length", episode_length)
    self.name = brax_name
    self.backend = backend
    self.action_repeat = int(action_repeat)
    self.episode_length = int(episode_length)
    with _quiet():
      env = brax_envs.get_environment(brax_name, backend=backend)
      self.default_n_frames = int(env._n_frames)  # pylint: disable=protected-access
      if self.action_repeat != 1:
        env = brax_envs.get_environment(
            brax_name, backend=backend, n_frames=self.default_n_frames * self.action_repeat)
    self.brax_env = env
    self.n_frames = int(env._n_frames)  # pylint: disable=protected-access
    self.dt = float(env.dt)
    self.substep_dt = float(env.sys.opt.timestep)
    self.action_size = int(env.action_size)
    with _quiet():
      template = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    self.obs_size = int(template.obs.shape[-1])
    # brax's step updates ``state.metrics`` in place and reads ``state.info``: keep the
    # shapes and build fresh zero dicts per call.
    self._metrics_spec = {k: (v.shape, v.dtype) for k, v in template.metrics.items()}
    self._info_spec = {k: (v.shape, v.dtype) for k, v in template.info.items()}
    self._ps_template = template.pipeline_state
    if backend in ("spring", "positional"):
      self._state_cls = spring_base.State if backend == "spring" else positional_base.State
    self._on_system()

  def _on_system(self) -> None:
    """Recomputes what is derived from ``brax_env.sys`` (after ``perturbed``)."""
    if self.backend in ("spring", "positional"):
      sys = self.brax_env.sys
      self._link_mass = sys.link.inertia.mass ** (1 - sys.spring_mass_scale)

  #: Scaled by ``perturbed``: Brax's link masses and inertias and actuator gears, and
  #: MJX's body masses, inertias and actuator gears (the mjx backend reads those).
  physics_parameters = ("link.inertia.mass", "link.inertia.i", "actuator.gear",
                        "body_mass", "body_inertia", "actuator_gear")

  def perturbed(self, scale: float) -> "BraxEnv":
    import copy
    f = 1.0 + scale
    sys = self.brax_env.sys
    inertia = sys.link.inertia.replace(mass=sys.link.inertia.mass * f,
                                       i=sys.link.inertia.i * f)
    sys = sys.replace(link=sys.link.replace(inertia=inertia),
                      actuator=sys.actuator.replace(gear=sys.actuator.gear * f),
                      body_mass=sys.body_mass * f, body_inertia=sys.body_inertia * f,
                      actuator_gear=sys.actuator_gear * f)
    out = copy.copy(self)
    out.brax_env = copy.copy(self.brax_env)
    out.brax_env.sys = sys
    out._on_system()
    return out

  # ------------------------------------------------------------- sim <-> brax
  def extract(self, pipeline_state) -> dict:
    """The minimal sim dict of a brax pipeline state (see the module docstring)."""
    ps = pipeline_state
    if self.backend == "generalized":
      sim = dict(q=ps.q, qd=ps.qd, mass_mx_inv=ps.mass_mx_inv)
    elif self.backend == "mjx":
      sim = dict(qpos=ps.qpos, qvel=ps.qvel, qacc_warmstart=ps.qacc_warmstart,
                 x_pos0=ps.x.pos[0])
    else:
      sim = dict(q=ps.q, qd=ps.qd, x_i_pos=ps.x_i.pos, x_i_rot=ps.x_i.rot,
                 xd_i_ang=ps.xd_i.ang, xd_i_vel=ps.xd_i.vel)
    return {k: jnp.asarray(v, jnp.float32) for k, v in sim.items()}

  def restore(self, sim: dict):
    """The full brax pipeline state of a sim dict, as brax's step needs it."""
    env = self.brax_env
    if self.backend == "generalized":
      ps = env.pipeline_init(sim["q"], sim["qd"])
      return ps.replace(mass_mx_inv=sim["mass_mx_inv"])
    if self.backend == "mjx":
      # mjx.step recomputes every derived field from (qpos, qvel, ctrl, qacc_warmstart),
      # so the rest of the data can be a zero template (no mjx.forward needed).
      ps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), self._ps_template)
      x = ps.x.replace(pos=ps.x.pos.at[0].set(sim["x_pos0"]))
      return ps.replace(qpos=sim["qpos"], qvel=sim["qvel"], q=sim["qpos"], qd=sim["qvel"],
                        qacc_warmstart=sim["qacc_warmstart"], x=x)
    sys = env.sys
    x_i = Transform(pos=sim["x_i_pos"], rot=sim["x_i_rot"])
    xd_i = Motion(ang=sim["xd_i_ang"], vel=sim["xd_i_vel"])
    x, xd = brax_com.to_world(sys, x_i, xd_i)
    j, jd, a_p, a_c = brax_kinematics.world_to_joint(sys, x, xd)
    fields = dict(q=sim["q"], qd=sim["qd"], x=x, xd=xd, contact=None, x_i=x_i, xd_i=xd_i,
                  j=j, jd=jd, a_p=a_p, a_c=a_c, mass=self._link_mass)
    if self.backend == "spring":
      fields["i_inv"] = brax_com.inv_inertia(sys, x)
    return self._state_cls(**fields)

  def _obs_view(self, sim: dict) -> "_ObsView":
    """The part of the pipeline state the envs' ``_get_obs`` read: q, qd and x (lazily)."""
    sys = self.brax_env.sys
    if self.backend == "generalized":
      return _ObsView(sim["q"], sim["qd"],
                      lambda: brax_kinematics.forward(sys, sim["q"], sim["qd"])[0])
    if self.backend == "mjx":
      return _ObsView(sim["qpos"], sim["qvel"],
                      lambda: Transform(pos=sim["x_pos0"][None], rot=None))
    return _ObsView(sim["q"], sim["qd"], lambda: brax_com.to_world(
        sys, Transform(pos=sim["x_i_pos"], rot=sim["x_i_rot"]),
        Motion(ang=sim["xd_i_ang"], vel=sim["xd_i_vel"]))[0])

  def _brax_state(self, pipeline_state):
    """A brax ``State`` around ``pipeline_state`` with zero obs/reward/done/metrics."""
    zero = jnp.zeros((), jnp.float32)
    return brax_envs.State(
        pipeline_state=pipeline_state,
        obs=jnp.zeros((self.obs_size,), jnp.float32),
        reward=zero, done=zero,
        metrics={k: jnp.zeros(s, d) for k, (s, d) in self._metrics_spec.items()},
        info={k: jnp.zeros(s, d) for k, (s, d) in self._info_spec.items()})

  # ---------------------------------------------------------------- primitives
  def init_sim(self, key: Array) -> dict:
    """Brax's reset distribution, as a minimal sim dict."""
    with _quiet():
      return self.extract(self.brax_env.reset(key).pipeline_state)

  def step_sim(self, sim: dict, action: Array) -> tuple[dict, Array, Array]:
    """One brax env step from ``sim`` with ``action`` clipped to ``[-1, 1]``.

    Returns:
      ``(next_sim, reward [] float32, terminated [] bool)``; non-finite results are
      replaced by ``(sim, 0, True)`` (see the module docstring).
    """
    action = jnp.clip(jnp.asarray(action, jnp.float32), -1.0, 1.0)
    with _quiet():
      out = self.brax_env.step(self._brax_state(self.restore(sim)), action)
    next_sim = self.extract(out.pipeline_state)
    reward = jnp.asarray(out.reward, jnp.float32)
    terminated = jnp.asarray(out.done, jnp.float32) > 0.5
    ok = _all_finite((next_sim, out.obs, reward))
    next_sim = tree_select(ok, next_sim, sim)
    reward = jnp.where(ok, reward, 0.0)
    terminated = jnp.logical_or(terminated, jnp.logical_not(ok))
    return next_sim, reward, terminated

  def observe(self, sim: dict) -> Array:
    """Brax's observation ``[obs_size]`` of ``sim`` (brax's ``_get_obs``, float32)."""
    obs = self.brax_env._get_obs(self._obs_view(sim))  # pylint: disable=protected-access
    return jnp.asarray(obs, jnp.float32)

  def termination_fn(self, obs: Array, action: Array, next_obs: Array) -> Array:
    """Brax's ``done`` as a function of ``next_obs`` (any leading batch axes).

    * inverted_pendulum: ``|pole angle| > 0.2`` with the angle ``next_obs[1]``; exact.
    * inverted_double_pendulum: ``y <= 1`` for the height ``y`` of the second pole's tip,
      ``y = 0.6 (cos a1 + cos(a1 + a2))`` from the sines/cosines ``next_obs[1:5]``. Exact
      (to rounding) on generalized. On spring/positional brax measures the tip from the
      body poses of soft joints, which the angles in the obs do not pin down: the two
      disagree when the tip is within the joints' slack (< 0.02) of ``y = 1`` (measured
      on 64 x 100 random steps: 0.57% of transitions on spring, i.e. 11 of 64
      terminations called one step early or late; 0.14% on positional). On mjx brax's
      body poses lag one substep, which is undone with the (clipped to 10) joint
      velocities, ``a -= timestep * da`` (no disagreement measured).
    * hopper: unhealthy unless ``0.7 < z``, ``|angle| < 0.2`` and ``|next_obs[1:]| < 100``
      with ``z = next_obs[0]`` (torso height as brax uses it) and ``angle =
      next_obs[1]``. Brax bounds the unclipped joint velocities by 100, the obs clips them
      to 10, so a velocity above 100 (a blow-up) is the one case it misses.
    * walker2d: unhealthy unless ``0.8 < z < 2`` and ``|angle| < 1``; exact.
    * halfcheetah: never terminates.
    * ant: unhealthy unless ``0.2 <= z <= 1`` with the torso height ``z = next_obs[0]``
      (= ``q[2]``); brax uses the torso body position, equal to ``q[2]`` except on mjx,
      where it lags one substep: there ``z -= timestep * vz`` with ``vz = next_obs[15]``
      (no disagreement measured on 32 x 60 random steps, 27 terminations).

    NaN observations get brax's own answer (terminated for hopper and walker2d, not for
    the others); ``step_sim`` never produces them. Returns bool ``[...]``.
    """
    del obs, action
    o = jnp.asarray(next_obs, jnp.float32)
    name = self.name
    if name == "inverted_pendulum":
      return jnp.abs(o[..., 1]) > 0.2
    if name == "inverted_double_pendulum":
      s1, s2, c1, c2 = o[..., 1], o[..., 2], o[..., 3], o[..., 4]
      if self.backend == "mjx":
        a1 = jnp.arctan2(s1, c1) - self.substep_dt * o[..., 6]
        a2 = jnp.arctan2(s2, c2) - self.substep_dt * o[..., 7]
        y = _IDP_POLE * (jnp.cos(a1) + jnp.cos(a1 + a2))
      else:
        y = _IDP_POLE * (c1 + c1 * c2 - s1 * s2)
      return y <= 1.0
    if name == "hopper":
      z, angle = o[..., 0], o[..., 1]
      healthy = jnp.all((-100.0 < o[..., 1:]) & (o[..., 1:] < 100.0), axis=-1)
      healthy &= (0.7 < z) & (z < jnp.inf)
      healthy &= (-0.2 < angle) & (angle < 0.2)
      return jnp.logical_not(healthy)
    if name == "walker2d":
      z, angle = o[..., 0], o[..., 1]
      healthy = (0.8 < z) & (z < 2.0) & (-1.0 < angle) & (angle < 1.0)
      return jnp.logical_not(healthy)
    if name == "halfcheetah":
      return jnp.zeros(o.shape[:-1], bool)
    # ant
    z = o[..., 0]
    if self.backend == "mjx":
      z = z - self.substep_dt * o[..., 15]
    return (z < 0.2) | (z > 1.0)
