"""The one multi-step target operator of mvelab, and its helpers (rlax style).

Every value-expansion variant (critic expansion over model rollouts, Retrace over replay
windows, actor expansion) builds a window of ``K`` transitions ``j = 0..K−1`` — real or
imagined — with observations ``o_j → o'_j``, actions ``a_j``, rewards, terminations and
truncations, and reduces it with :func:`general_off_policy_returns_from_q_and_v`. With
``T = K − 1`` the operator's inputs are, for ``j = 0..T−1`` (paper code §7.1):

* ``r_t[j]``        reward of transition ``j``;
* ``discount_t[j]`` ``γ·Π_{i≤j} (1 − terminated_i)`` (:func:`cumulative_discount`);
* ``v_t[j]``        soft value at ``o'_j``: ``min_i Q̄_i(o'_j, ã_j) − α log π(ã_j|o'_j)``,
  ``ã_j ~ π`` fresh;

and for ``j = 0..T−2``:

* ``q_t[j]``  ``min_i Q̄_i(o'_j, a_{j+1})``, the action actually taken next in the window;
* ``c_t[j]``  ``λ·min(1, π(a_{j+1}|o_{j+1}) / μ(a_{j+1}|o_{j+1}))·(1 − truncated_j)``
  (:func:`truncated_importance_weights`).

The last transition ``K−1`` of the window only supplies its action to ``q``/``c``; its
reward is not used. All functions act on ONE unbatched window (``jax.vmap`` for a batch)
and are float32.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array


def general_off_policy_returns_from_q_and_v(
    q_t: Array,
    v_t: Array,
    r_t: Array,
    discount_t: Array,
    c_t: Array,
    stop_target_gradients: bool = False,
) -> Array:
  """Off-policy multi-step returns with traces ``c`` (Retrace family), from Q and V.

  Backward recursion (reverse ``lax.scan``), for a window of ``T`` steps:

    G_{T−1} = r_{T−1} + discount_{T−1}·v_{T−1},
    G_j     = r_j + discount_j·( v_j − c_j·q_j + c_j·G_{j+1} ),   j = T−2, …, 0.

  Callers use ``G_0`` as the target of ``Q(o_0, a_0)``. Special cases:

  * ``T = 1``: ``G_0 = r_0 + discount_0·v_0``, the 1-step (SAC) target.
  * ``c ≡ 0``: every ``G_j = r_j + discount_j·v_j`` (1-step TD targets); this is also how a
    truncation at step ``j`` (``c_j = 0``) cuts the trace yet still bootstraps ``v_j``.
  * ``c ≡ 1`` and ``q_j = v_j`` (on-policy, deterministic policy, α = 0):
    the n-step return ``G_0 = r_0 + discount_0·(r_1 + discount_1·(… r_{T−1}
    + discount_{T−1}·v_{T−1}))`` (:func:`n_step_return`).
  * ``c ≡ 1`` and constant ``discount ≡ γ`` (no termination), telescoped:

      G_0 = Σ_{j=0}^{T−1} γ^j r_j + Σ_{j=0}^{T−2} γ^{j+1}(v_j − q_j) + γ^T v_{T−1}.

  * A termination at step ``m`` (``discount_j = 0`` for ``j ≥ m``, see
    :func:`cumulative_discount`) gives ``G_m = r_m`` and removes every later term.
  * ``c_j = λ·min(1, π/μ)`` is Retrace (Munos et al., 2016).

  Args:
    q_t: ``[T−1]`` ``q_j``, Q-value at ``o'_j`` of the next window action, ``j = 0..T−2``.
    v_t: ``[T]`` ``v_j``, value of ``o'_j`` under π, ``j = 0..T−1``.
    r_t: ``[T]`` rewards ``r_j``, ``j = 0..T−1``.
    discount_t: ``[T]`` cumulative discounts ``discount_j``, ``j = 0..T−1``.
    c_t: ``[T−1]`` trace coefficients ``c_j``, ``j = 0..T−2``.
    stop_target_gradients: if True, no gradient flows through the returns.

  Returns:
    ``[T]`` returns ``G_j``, ``j = 0..T−1``.
  """
  q_t, v_t, r_t, discount_t, c_t = (
      jnp.asarray(x, jnp.float32) for x in (q_t, v_t, r_t, discount_t, c_t))
  chex.assert_rank([q_t, v_t, r_t, discount_t, c_t], 1)
  chex.assert_equal_shape([v_t, r_t, discount_t])
  chex.assert_equal_shape([q_t, c_t])
  if v_t.shape[0] < 1:
    raise ValueError("general_off_policy_returns_from_q_and_v: need T >= 1 steps")
  chex.assert_axis_dimension(q_t, 0, v_t.shape[0] - 1)

  g_last = r_t[-1] + discount_t[-1] * v_t[-1]

  def body(g_next, xs):
    r, discount, v, c, q = xs
    g = r + discount * (v - c * q + c * g_next)
    return g, g

  _, g_head = jax.lax.scan(
      body, g_last, (r_t[:-1], discount_t[:-1], v_t[:-1], c_t, q_t), reverse=True)
  returns = jnp.concatenate([g_head, g_last[None]])
  if stop_target_gradients:
    returns = jax.lax.stop_gradient(returns)
  return returns


def cumulative_discount(gamma: float | Array, not_terminated_t: Array) -> Array:
  """``discount_j = γ·Π_{i≤j} d_i`` with ``d_i = 1 − terminated_i``.

  Zero from the first termination on (inclusive), so nothing after a termination
  contributes to :func:`general_off_policy_returns_from_q_and_v`.

  Args:
    gamma: scalar discount factor γ.
    not_terminated_t: ``[T]`` ``d_j`` (bool or float, 1 = not terminated), ``j = 0..T−1``.

  Returns:
    ``[T]`` float32 ``discount_j``.
  """
  not_terminated_t = jnp.asarray(not_terminated_t, jnp.float32)
  chex.assert_rank(not_terminated_t, 1)
  return jnp.asarray(gamma, jnp.float32) * jnp.cumprod(not_terminated_t)


def n_step_return(r_t: Array, discount_t: Array, bootstrap: Array) -> Array:
  """Plain bootstrapped n-step return from step 0.

    G = r_0 + discount_0·(r_1 + discount_1·(… + discount_{T−1}·bootstrap))
      = Σ_{j=0}^{T−1} (Π_{i<j} discount_i)·r_j + (Π_{i<T} discount_i)·bootstrap.

  With constant ``discount ≡ γ``: ``Σ_j γ^j r_j + γ^T·bootstrap``. Note that
  ``discount_t`` is the per-step multiplier (as returned by :func:`cumulative_discount`),
  not ``γ^j``.

  Args:
    r_t: ``[T]`` rewards ``r_j``, ``j = 0..T−1``.
    discount_t: ``[T]`` per-step discounts ``discount_j``.
    bootstrap: ``[]`` value at the end of the window (``v_{T−1}``).

  Returns:
    ``[]`` float32 return ``G``.
  """
  r_t = jnp.asarray(r_t, jnp.float32)
  discount_t = jnp.asarray(discount_t, jnp.float32)
  bootstrap = jnp.asarray(bootstrap, jnp.float32)
  chex.assert_rank([r_t, discount_t, bootstrap], [1, 1, 0])
  chex.assert_equal_shape([r_t, discount_t])

  def body(g_next, xs):
    r, discount = xs
    return r + discount * g_next, None

  g, _ = jax.lax.scan(body, bootstrap, (r_t, discount_t), reverse=True)
  return g


def truncated_importance_weights(
    log_pi_t: Array, log_mu_t: Array, lam: float | Array, truncated_t: Array,
) -> Array:
  """Retrace traces ``c_j = λ·min(1, π_j/μ_j)·(1 − truncated_j)``, stop-gradient.

  Computed as ``λ·exp(min(0, log π_j − log μ_j))`` (no overflow); ``log π_j = −∞`` gives
  ``c_j = 0``. Where ``truncated_j`` is set the result is exactly 0 (via ``where``, so a
  NaN ratio cannot leak through). Index ``j = 0..T−2`` as ``c_t`` of
  :func:`general_off_policy_returns_from_q_and_v`: ``log_pi_t[j]``/``log_mu_t[j]`` are the
  target/behaviour log-probs of ``a_{j+1}`` at ``o_{j+1}``, ``truncated_t[j]`` the
  time-limit truncation of transition ``j``.

  Args:
    log_pi_t: ``[T−1]`` target-policy log-probs.
    log_mu_t: ``[T−1]`` behaviour-policy log-probs (stored in the buffer).
    lam: scalar λ.
    truncated_t: ``[T−1]`` bool or float truncation flags.

  Returns:
    ``[T−1]`` float32 ``c_j`` (no gradient).
  """
  log_pi_t = jnp.asarray(log_pi_t, jnp.float32)
  log_mu_t = jnp.asarray(log_mu_t, jnp.float32)
  truncated_t = jnp.asarray(truncated_t)
  chex.assert_rank([log_pi_t, log_mu_t, truncated_t], 1)
  chex.assert_equal_shape([log_pi_t, log_mu_t, truncated_t])
  ratio = jnp.exp(jnp.minimum(0.0, log_pi_t - log_mu_t))
  c_t = jnp.where(truncated_t.astype(bool), 0.0, jnp.asarray(lam, jnp.float32) * ratio)
  return jax.lax.stop_gradient(c_t)
