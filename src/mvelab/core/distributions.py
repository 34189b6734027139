"""Tanh-squashed diagonal Gaussian policy distribution for SAC.

A pre-tanh Gaussian sample ``u ~ N(loc, diag(scale²))`` is squashed to the action
``a = tanh(u) ∈ (-1, 1)^A``. By the change of variables,

  log π(a) = Σ_i [ log N(u_i; loc_i, scale_i) − log(1 − tanh²(u_i)) ],

where the log-det term is evaluated in one of two forms (``stable`` argument):

* ``stable=False`` (the paper / reference code, default):
  ``log(1 − tanh²(u) + 1e-6)``. The ``1e-6`` keeps the term finite at saturation
  (``tanh(u) = ±1`` in float32 from ``|u| ≳ 9``), at the price of a small bias there.
* ``stable=True``: the exact identity
  ``log(1 − tanh²(u)) = 2·(log 2 − u − softplus(−2u))``, finite for every finite ``u``
  (the form used by distrax / TFP's tanh bijector).

All functions act on ONE unbatched item: ``loc``, ``scale`` and actions have shape ``[A]``,
log-probabilities are scalars ``[]``. Batch with ``jax.vmap``. Everything is float32.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
from flax import struct

from mvelab.errors import check_choice

Array = jax.Array

#: Added to ``1 − tanh²(u)`` inside the log in the paper's log-det form.
LOG_DET_EPS = 1e-6
#: Added to ``softplus(raw)`` in the paper's scale parametrisation.
MIN_SCALE = 1e-3
#: Bounds of the ``"log_std"`` parametrisation (SB3 / CleanRL SAC).
LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
#: Stored actions are clipped to ``±(1 − ACTION_CLIP_EPS)`` before arctanh.
ACTION_CLIP_EPS = 1e-6
SCALE_KINDS = ("softplus", "log_std")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def scale_from_raw(raw: Array, kind: str = "softplus") -> Array:
  """Maps an unconstrained network output to the Gaussian scale (std), elementwise.

  * ``"softplus"`` (paper, default): ``scale = softplus(raw) + 1e-3``; no upper clamp.
  * ``"log_std"`` (SB3 / CleanRL SAC): a tanh-squashed log-std in
    ``[LOG_STD_MIN, LOG_STD_MAX] = [-5, 2]``:
    ``log_std = -5 + ½·(2 − (−5))·(tanh(raw) + 1)``, ``scale = exp(log_std)``,
    so ``scale ∈ [e⁻⁵, e²] ≈ [0.0067, 7.39]`` and ``raw = 0`` gives ``log_std = -1.5``.

  Args:
    raw: unconstrained values, any shape (typically ``[A]``).
    kind: ``"softplus"`` or ``"log_std"`` (a Python string, static under jit).

  Returns:
    Positive scales with the shape of ``raw``.
  """
  check_choice("scale kind", kind, SCALE_KINDS)
  raw = jnp.asarray(raw, jnp.float32)
  if kind == "softplus":
    return jax.nn.softplus(raw) + MIN_SCALE
  log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw) + 1.0)
  return jnp.exp(log_std)


def tanh_log_det_jacobian(u: Array, stable: bool = False) -> Array:
  """Elementwise ``log |d tanh(u)/du| = log(1 − tanh²(u))``.

  Args:
    u: pre-tanh values, any shape.
    stable: ``False``: ``log(1 − tanh²(u) + 1e-6)`` (paper; bounded below by
      ``log 1e-6 ≈ −13.8``). ``True``: exact ``2·(log 2 − u − softplus(−2u))``.

  Returns:
    The log-det term with the shape of ``u`` (not summed).
  """
  if stable:
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))
  return jnp.log(1.0 - jnp.square(jnp.tanh(u)) + LOG_DET_EPS)


def _log_prob_from_pre_tanh(
    u: Array, z: Array, scale: Array, stable: bool) -> Array:
  """``Σ_i [log N(u_i; loc_i, scale_i) − log(1 − tanh²(u_i))]``; ``z = (u − loc)/scale``.

  ``z`` is passed in so that sampling can use ``ε`` itself (exact, same gradient).
  """
  gaussian = -0.5 * jnp.square(z) - jnp.log(scale) - _HALF_LOG_2PI
  return jnp.sum(gaussian - tanh_log_det_jacobian(u, stable), axis=-1)


def _check_params(loc: Array, scale: Array) -> tuple[Array, Array]:
  loc = jnp.asarray(loc, jnp.float32)
  scale = jnp.asarray(scale, jnp.float32)
  chex.assert_rank([loc, scale], 1)
  chex.assert_equal_shape([loc, scale])
  return loc, scale


def sample_and_log_prob(
    loc: Array, scale: Array, key: Array, stable: bool = False,
) -> tuple[Array, Array]:
  """Reparameterised sample of ``a = tanh(loc + scale·ε)``, ``ε ~ N(0, I)``, and log π(a).

  Gradients flow to ``loc`` and ``scale`` through both the action and the log-prob.
  The Gaussian term uses ``(u − loc)/scale = ε`` directly (exact, and with the same
  gradient as recomputing it from ``u``).

  Args:
    loc: ``[A]`` pre-tanh mean.
    scale: ``[A]`` pre-tanh std (> 0), e.g. from :func:`scale_from_raw`.
    key: PRNG key.
    stable: log-det form, see :func:`tanh_log_det_jacobian`.

  Returns:
    ``(action [A], log_prob [])``.
  """
  loc, scale = _check_params(loc, scale)
  return squash(loc, scale, jax.random.normal(key, loc.shape, jnp.float32), stable)


def squash(loc: Array, scale: Array, eps: Array, stable: bool = False
           ) -> tuple[Array, Array]:
  """``a = tanh(loc + scale·ε)`` and log π(a) for given standard-normal noise ``ε``.

  Works on any leading axes (``[..., A]``), so a batch of ``B`` actions needs one
  ``jax.random.normal(key, [B, A])`` draw (one PRNG call, not ``B`` keys).

  Returns:
    ``(action [..., A], log_prob [...])``.
  """
  u = loc + scale * eps
  return jnp.tanh(u), _log_prob_from_pre_tanh(u, eps, scale, stable)


def log_prob(
    loc: Array, scale: Array, action: Array, stable: bool = False) -> Array:
  """Log-density of a STORED tanh action (e.g. for Retrace importance weights).

  The pre-tanh value is recovered as
  ``u = arctanh(clip(action, −1 + 1e-6, 1 − 1e-6))``. The clip is needed because
  ``arctanh(±1) = ±∞``, and a sampled action may be exactly ±1 in float32 (``|u| ≳ 9``).
  ``1 − 1e-6`` is representable in float32 (spacing near 1 is ~6e-8), so the clip bounds
  ``|u| ≤ arctanh(1 − 1e-6) ≈ 7.25`` and keeps log π finite. The reference code clips to
  ``1 − 1e-9``, which rounds to exactly 1.0 in float32: saturated actions then get
  ``log π = −∞`` (Gaussian term at ``u = ∞``), hence a trace coefficient of 0.
  Away from saturation the clip is inactive and this equals the density of
  :func:`sample_and_log_prob` up to float error.

  Args:
    loc: ``[A]`` pre-tanh mean.
    scale: ``[A]`` pre-tanh std (> 0).
    action: ``[A]`` action in ``[-1, 1]``.
    stable: log-det form, see :func:`tanh_log_det_jacobian`.

  Returns:
    ``log π(action)`` of shape ``[]``.
  """
  loc, scale = _check_params(loc, scale)
  action = jnp.asarray(action, jnp.float32)
  chex.assert_equal_shape([loc, action])
  u = jnp.arctanh(jnp.clip(action, -1.0 + ACTION_CLIP_EPS, 1.0 - ACTION_CLIP_EPS))
  return _log_prob_from_pre_tanh(u, (u - loc) / scale, scale, stable)


def mode(loc: Array) -> Array:
  """Deterministic action ``tanh(loc)`` (evaluation / DDPG actor), shape of ``loc``."""
  return jnp.tanh(jnp.asarray(loc, jnp.float32))


@struct.dataclass
class TanhNormal:
  """Thin pytree wrapper over the functions of this module.

  Attributes:
    loc: ``[A]`` pre-tanh mean.
    scale: ``[A]`` pre-tanh std.
    stable: log-det form (static), see :func:`tanh_log_det_jacobian`.
  """

  loc: Array
  scale: Array
  stable: bool = struct.field(pytree_node=False, default=False)

  def sample_and_log_prob(self, key: Array) -> tuple[Array, Array]:
    return sample_and_log_prob(self.loc, self.scale, key, self.stable)

  def log_prob(self, action: Array) -> Array:
    return log_prob(self.loc, self.scale, action, self.stable)

  def mode(self) -> Array:
    return mode(self.loc)
