"""Value-expansion targets and losses: critic expansion, Retrace, actor expansion, DDPG.

Every variant builds a window of transitions and reduces it with the ONE target operator
:func:`mvelab.core.returns.general_off_policy_returns_from_q_and_v` (vmapped over the
batch ``B``; paper-code reference §7.1). With a window of ``T`` transitions ``j = 0..T−1``
(``o_j --a_j--> o'_j``) the operator takes, per batch row,

* ``r_t [T]``        ``r_j``;
* ``discount_t [T]`` ``γ·Π_{i≤j}(1 − terminated_i)`` (zero from the first termination on);
* ``v_t [T]``        value of ``o'_j`` under the evaluating policy, fresh action;
* ``q_t [T−1]``      ``min_i Q_i(o'_j, a_{j+1})``, ``j = 0..T−2``;
* ``c_t [T−1]``      trace coefficients, ``j = 0..T−2``;

and returns ``G_j`` for ``j = 0..T−1``; the targets use ``G_0``. The four windows are:

* **Critic expansion** (SAC-MVE, §7.2), :func:`critic_expansion_target`: the real
  transition followed by an ``H``-step rollout from its next observation, ``T = H+1``.
* **Retrace** (§7.4), :func:`retrace_target`: ``H+1`` consecutive real transitions.
* **Actor expansion** (SAC-VG, §7.3), :func:`actor_expansion_loss`: an ``H``-step
  differentiable rollout from the current observation, ``T = H``.
* **DDPG** (§7.5): the same functions with ``deterministic=True`` (actions are
  ``tanh(loc)``, log-probs are 0, α plays no role), plus the 1-step helpers
  :func:`ddpg_critic_target` and :func:`ddpg_actor_loss`.

Observations. Rollouts and the replay hold RAW observations; every function here takes
raw observations plus ``obs_stats`` and normalises (``normalization.normalize``) right
before each network call.

Key usage (so that every ``H = 0`` case is the plain 1-step quantity for the SAME key):

* Value estimates at ``N`` successor observations ``[B, N]`` (:func:`_values`): the ``B``
  values at index 0 use ``key`` exactly as :func:`sac.soft_value` does (SAC's target
  key); the ``B·(N−1)`` values at indices ``1..N−1`` are one flattened batch sampled
  with ``jax.random.fold_in(key, 1)``. So critic expansion / Retrace with ``H = 0`` and
  key ``k`` give bit-for-bit ``sac.sac_target(r, term, sac.soft_value(..., o', k), γ)``
  (the ``T = 1`` window is evaluated with ``sac.sac_target`` itself rather than the
  operator, so the op order, hence the bits, match inside ``jit`` as well).
* Critic expansion does not sample the rollout itself: the caller draws it with a key
  INDEPENDENT of ``key`` (e.g. ``k_rollout, k_target = jax.random.split(k)``).
* Actor expansion with ``horizon = 0`` calls ``sac.actor_loss(..., key)`` (or
  :func:`ddpg_actor_loss`) directly; with ``horizon ≥ 1`` it splits
  ``k_rollout, k_value = jax.random.split(key)``, passes ``k_rollout`` to
  ``rollout_fn`` and uses ``k_value`` for the fresh-action values as above.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from mvelab.agents import sac
from mvelab.config import CE_VALUES
from mvelab.core import distributions, normalization, returns
from mvelab.models.base import PolicyFn, Rollout

Array = jax.Array
#: ``rollout_fn(policy_fn, key) -> Rollout``: closes over the model, its state and the
#: start observations (``[B, obs]``); used by :func:`actor_expansion_loss`.
RolloutFn = Callable[[PolicyFn, Array], Rollout]

# The unbatched operator, vmapped over the leading batch axis of all five inputs.
_batched_returns = jax.vmap(returns.general_off_policy_returns_from_q_and_v)


# --------------------------------------------------------------------------- helpers
def make_policy_fn(nets: sac.SACNets, actor_params, obs_stats,
                   deterministic: bool = False) -> PolicyFn:
  """A :data:`~mvelab.models.base.PolicyFn` over RAW observations.

  ``policy_fn(obs [B, obs], key) -> (action [B, act], log_prob [B])``: normalises ``obs``
  with ``obs_stats``, then draws a reparameterised action with ``nets.sample`` (gradients
  flow to ``actor_params`` through action and log-prob), or returns ``nets.mode`` with
  log-prob 0 if ``deterministic`` (DDPG; ``key`` unused).
  """

  def policy_fn(obs, key):
    norm_obs = normalization.normalize(obs_stats, obs)
    if deterministic:
      action = nets.mode(actor_params, norm_obs)
      return action, jnp.zeros(action.shape[:1], jnp.float32)
    return nets.sample(actor_params, norm_obs, key)

  return policy_fn


def _flat(x: Array) -> Array:
  """``[B, N, d] -> [B·N, d]``."""
  return x.reshape((-1, x.shape[-1]))


def _min_q(nets: sac.SACNets, critic_params, obs: Array, action: Array) -> Array:
  """Twin-minimum ``min_i Q_i(obs, action)`` for ``obs [B, N, obs]``; returns ``[B, N]``."""
  q = nets.q(critic_params, _flat(obs), _flat(action))
  return jnp.min(q, axis=-1).reshape(obs.shape[:2])


def _policy_value(nets: sac.SACNets, actor_params, critic_params, alpha, obs: Array,
                  key: Array, deterministic: bool) -> Array:
  """``[N]`` value of normalised ``obs [N, obs]`` under a fresh policy action.

  Stochastic: ``sac.soft_value`` (``min_i Q_i(o, ã) − α log π(ã|o)``, ``ã ~ π`` drawn
  with ``key``). Deterministic: ``min_i Q_i(o, tanh(loc(o)))`` (no entropy; ``key``,
  ``alpha`` unused).
  """
  if deterministic:
    action = nets.mode(actor_params, obs)
    return jnp.min(nets.q(critic_params, obs, action), axis=-1)
  return sac.soft_value(nets, actor_params, critic_params, alpha, obs, key)


def _values(nets: sac.SACNets, actor_params, critic_params, alpha, obs: Array, key: Array,
            deterministic: bool) -> Array:
  """``v [B, N]`` at normalised successor observations ``obs [B, N, obs]`` (``N ≥ 1``).

  Key convention (module docstring): ``v[:, 0]`` is exactly
  ``_policy_value(obs[:, 0], key)``, the 1-step SAC value for ``key``;
  ``v[:, 1:]`` is one flattened batch of ``B·(N−1)`` states drawn with
  ``fold_in(key, 1)`` (one noise draw for the flattened batch).
  """
  b, n = obs.shape[:2]
  v_0 = _policy_value(nets, actor_params, critic_params, alpha, obs[:, 0], key,
                      deterministic)
  if n == 1:
    return v_0[:, None]
  v_rest = _policy_value(nets, actor_params, critic_params, alpha, _flat(obs[:, 1:]),
                         jax.random.fold_in(key, 1), deterministic)
  return jnp.concatenate([v_0[:, None], v_rest.reshape((b, n - 1))], axis=1)


def _discounts(gamma, terminated: Array) -> Array:
  """``[B, T]`` ``γ·Π_{i≤j}(1 − terminated_i)`` from ``terminated [B, T]``."""
  not_terminated = 1.0 - jnp.asarray(terminated).astype(jnp.float32)
  return jax.vmap(returns.cumulative_discount, in_axes=(None, 0))(gamma, not_terminated)


def _traces(log_pi: Array, log_mu: Array, lam, truncated: Array) -> Array:
  """``[B, T−1]`` ``λ·min(1, π/μ)·(1 − truncated)`` (stop-gradient), vmapped over B."""
  return jax.vmap(returns.truncated_importance_weights, in_axes=(0, 0, None, 0))(
      log_pi, log_mu, lam, truncated)


# --------------------------------------------------------------------------- critic expansion
def critic_expansion_returns(nets: sac.SACNets, actor_params, target_critic_params, alpha,
                             obs_stats, batch, rollout: Rollout, key: Array, gamma,
                             lam=1.0, deterministic: bool = False,
                             values: str = "control_variate") -> Array:
  """All returns ``G_j [B, H+1]`` of the critic-expansion window (§7.2); see below.

  Window layout. ``batch`` holds ``B`` real transitions ``o_0 --a_0--> o_1`` (fields
  ``reward_t``, ``terminated_t``, ``truncated_t``, ``obs_t`` ``[B, ...]``); ``rollout``
  holds ``H`` imagined steps that START at the real next observation,
  ``rollout.obs[:, 0] == batch.obs_t`` (the caller's precondition; the window reads the
  successor observations from ``rollout.obs`` only). The window has ``T = H+1``
  transitions ``j = 0..H``:

  ====================  =================================  ===============================
  quantity              ``j = 0`` (real)                   ``j = 1..H`` (imagined)
  ====================  =================================  ===============================
  transition            ``o_0 --a_0--> rollout.obs[:,0]``  ``rollout.obs[:,j−1]
                                                           --rollout.action[:,j−1]-->
                                                           rollout.obs[:,j]``
  ``r_j``               ``batch.reward_t``                 ``rollout.reward[:, j−1]``
  ``terminated_j``      ``batch.terminated_t``             ``rollout.terminated[:, j−1]``
  ``truncated_j``       ``batch.truncated_t``              0 (the rollout has no time limit)
  ====================  =================================  ===============================

  so the successor ``o'_j = rollout.obs[:, j]`` for ``j = 0..H`` and the operator gets

  * ``r [B, H+1]``, ``discount [B, H+1]`` (cumulative, zero from the first termination);
  * ``v [B, H+1]``: ``v_j`` = value of ``rollout.obs[:, j]``, ``j = 0..H``, with a FRESH
    action of the (target) policy ``actor_params`` and the target critic
    (``sac.soft_value``; deterministic: ``min Q̄(o, tanh(loc(o)))``);
  * ``q [B, H]``: ``q_j = min Q̄(rollout.obs[:, j], rollout.action[:, j])``, ``j = 0..H−1``
    (the window action ``a_{j+1}`` taken at ``o'_j``);
  * ``c [B, H]``: ``c_j = λ·(1 − truncated_j)``, ``j = 0..H−1``, i.e. ``c_0 = 0`` when the
    real transition was truncated (the target collapses to the 1-step target, still
    bootstrapping ``v_0``) and ``c_j = λ`` otherwise. The importance ratio is taken as
    exactly 1: the rollout actions are drawn from the same policy that evaluates them
    (the reference code recomputes ``min(1, π/μ)``, which is 1 up to float error).

  With ``c ≡ 1`` and no termination this is the reference's control-variate target
  ``r_0 + Σ_{j=1}^{H} γ^j r_j + Σ_{j=0}^{H−1} γ^{j+1}(v_j − q_j) + γ^{H+1} v_H``.

  ``values="direct"`` (mvelab's cheaper option, ``Config.ce_values``): for ``j < H`` the
  value ``v_j`` reuses the rollout's own next action instead of a fresh one,
  ``v_j = q_j − α·rollout.log_prob[:, j]``, so ``v_j − q_j = −α log π(a_{j+1}|o'_j)``
  and the critic terms cancel. With ``c ≡ 1`` and no termination the target becomes the
  textbook soft H-step expansion
  ``r_0 + Σ_{j=1}^{H} γ^j (r_j − α log π(a_j|o'_{j−1})) + γ^{H+1} v_H``
  (equal in expectation to the control-variate target, §7.2). Only the fresh value
  ``v_H`` at the last state and ``q_0`` (read when a truncated real transition sets
  ``c_0 = 0``) need the critic; with ``λ < 1`` every ``q_j`` is evaluated. The imagined
  steps therefore cost one policy sample (the rollout's own) and no critic call.
  ``G_j`` (``j ≥ 1``) is the matching target of the imagined pair
  ``(rollout.obs[:, j−1], rollout.action[:, j−1])`` (see :func:`tdk_targets`).

  Args:
    nets: networks.
    actor_params: the (target) policy that drew the rollout and evaluates ``v``.
    target_critic_params: target critic ``Q̄``.
    alpha: temperature ``α`` (ignored if ``deterministic``).
    obs_stats: observation statistics for normalisation.
    batch: real transitions (:class:`mvelab.replay.Transition`, leaves ``[B, ...]``).
    rollout: imagined steps, ``obs [B, H+1, obs]``, ``action [B, H, act]``,
      ``reward``/``terminated`` ``[B, H]``; ``H = 0`` allowed.
    key: key for the fresh actions (module docstring); independent of the rollout's.
    gamma: discount ``γ``.
    lam: trace ``λ`` (1 in the paper).
    deterministic: DDPG-style deterministic policy (α unused, log-probs 0).
    values: "control_variate" (the reference's fresh-action values, above) or "direct"
      (reuse the rollout's actions; above).

  Returns:
    ``[B, H+1]`` float32 returns ``G_j`` (not stop-gradient; see
    :func:`critic_expansion_target`).
  """
  if values not in CE_VALUES:
    raise ValueError(f"values: must be one of {CE_VALUES}, got {values!r}")
  b, horizon = rollout.reward.shape
  chex.assert_shape(rollout.obs, (b, horizon + 1, None))
  chex.assert_shape(rollout.action, (b, horizon, None))
  chex.assert_shape([rollout.terminated, rollout.log_prob], (b, horizon))
  chex.assert_shape([batch.reward_t, batch.terminated_t, batch.truncated_t], (b,))

  next_obs = normalization.normalize(obs_stats, rollout.obs)  # [B, H+1, obs] o'_j
  if values == "direct" and horizon > 0:
    return _direct_returns(nets, actor_params, target_critic_params, alpha, batch, rollout,
                           next_obs, key, gamma, lam, deterministic)
  v = _values(nets, actor_params, target_critic_params, alpha, next_obs, key,
              deterministic)
  if horizon == 0:
    # T = 1: the operator gives r_0 + discount_0·v_0; spell it as the SAC target itself so
    # that H = 0 is bit-for-bit SAC also inside a jitted program (same op order).
    return sac.sac_target(batch.reward_t, batch.terminated_t, v[:, 0], gamma)[:, None]
  r, discount, c = _window_inputs(batch, rollout, gamma, lam)
  q = _min_q(nets, target_critic_params, next_obs[:, :horizon], rollout.action)
  return _batched_returns(q, v, r, discount, c)


def _window_inputs(batch, rollout: Rollout, gamma, lam):
  """``r``, ``discount`` ``[B, H+1]`` and traces ``c [B, H]`` of the critic-expansion window."""
  b, horizon = rollout.reward.shape
  r = jnp.concatenate([jnp.asarray(batch.reward_t, jnp.float32)[:, None],
                       jnp.asarray(rollout.reward, jnp.float32)], axis=1)
  terminated = jnp.concatenate(
      [jnp.asarray(batch.terminated_t, bool)[:, None],
       jnp.asarray(rollout.terminated, bool)], axis=1)
  discount = _discounts(gamma, terminated)
  truncated = jnp.concatenate(
      [jnp.asarray(batch.truncated_t, bool)[:, None],
       jnp.zeros((b, horizon - 1), bool)], axis=1)
  ratio_one = jnp.zeros((b, horizon), jnp.float32)  # log π − log μ ≡ 0: on-policy rollout
  return r, discount, _traces(ratio_one, ratio_one, lam, truncated)


def _direct_returns(nets, actor_params, target_critic_params, alpha, batch, rollout,
                    next_obs, key, gamma, lam, deterministic):
  """``values="direct"`` returns of :func:`critic_expansion_returns` (``H ≥ 1``)."""
  b, horizon = rollout.reward.shape
  r, discount, c = _window_inputs(batch, rollout, gamma, lam)
  # Fresh value at the last state o'_H only (key: fold_in(key, 1), as _values' rest).
  v_last = _policy_value(nets, actor_params, target_critic_params, alpha, next_obs[:, -1],
                         jax.random.fold_in(key, 1), deterministic)
  if isinstance(lam, (int, float)) and lam == 1.0:  # a static λ = 1 (the config's)
    # c_j = 1 for j ≥ 1, so q_j cancels there: only q_0 (c_0 = 0 after truncation) is read.
    q0 = _min_q(nets, target_critic_params, next_obs[:, :1], rollout.action[:, :1])
    q = jnp.concatenate([q0, jnp.zeros((b, horizon - 1), jnp.float32)], axis=1)
  else:
    q = _min_q(nets, target_critic_params, next_obs[:, :horizon], rollout.action)
  entropy = 0.0 if deterministic else alpha * jnp.asarray(rollout.log_prob, jnp.float32)
  v = jnp.concatenate([q - entropy, v_last[:, None]], axis=1)
  return _batched_returns(q, v, r, discount, c)


def critic_expansion_target(nets: sac.SACNets, actor_params, target_critic_params, alpha,
                            obs_stats, batch, rollout: Rollout, key: Array, gamma,
                            lam=1.0, deterministic: bool = False,
                            values: str = "control_variate") -> Array:
  """Critic-expansion (SAC-MVE / DDPG-MVE) target ``y = G_0`` of ``Q(o_0, a_0)``; ``[B]``.

  The window, shapes and key usage are those of :func:`critic_expansion_returns`
  (``T = H+1``: the real transition, then ``H`` imagined steps from ``batch.obs_t``).
  With ``H = 0`` (``rollout.obs [B, 1, obs]``, other fields ``[B, 0, ...]``) this is
  exactly ``sac.sac_target(r, terminated, sac.soft_value(..., normalize(obs_t), key), γ)``
  (deterministic: :func:`ddpg_critic_target`). For DDPG pass the target actor,
  ``alpha = 0`` and ``deterministic=True``. Stop-gradient.
  """
  g = critic_expansion_returns(nets, actor_params, target_critic_params, alpha, obs_stats,
                               batch, rollout, key, gamma, lam, deterministic, values)
  return jax.lax.stop_gradient(g[:, 0])


def critic_expansion_target_particles(nets: sac.SACNets, actor_params, target_critic_params,
                                      alpha, obs_stats, batch, rollouts: Rollout,
                                      key: Array, gamma, lam=1.0,
                                      deterministic: bool = False,
                                      values: str = "control_variate") -> Array:
  """Average of :func:`critic_expansion_target` over ``K`` independent rollouts; ``[B]``.

  The caller draws the ``K`` rollouts (e.g. ``jax.vmap`` of ``model.rollout`` over
  ``jax.random.split(k_rollout, K)``) and passes them stacked: ``rollouts.obs
  [K, B, H+1, obs]``, other fields ``[K, B, H, ...]``. Particle ``k`` uses the fresh-action
  key ``jax.random.split(key, K)[k]`` (so ``K = 1`` equals the single-rollout target in
  distribution, not bit-for-bit). The paper's code always uses one particle (§7.2).
  """
  num = rollouts.reward.shape[0]

  def one(rollout, k):
    return critic_expansion_target(nets, actor_params, target_critic_params, alpha,
                                   obs_stats, batch, rollout, k, gamma, lam, deterministic,
                                   values)

  return jnp.mean(jax.vmap(one)(rollouts, jax.random.split(key, num)), axis=0)


class TDkTargets(NamedTuple):
  """Critic targets for every prefix of a critic-expansion window (Feinberg et al. TD-k).

  Attributes:
    obs: ``[B, H+1, obs]`` RAW observation of pair ``j``: ``batch.obs_tm1`` for ``j = 0``,
      ``rollout.obs[:, j−1]`` for ``j = 1..H`` (normalise before the critic).
    action: ``[B, H+1, act]`` action of pair ``j``: ``batch.action_tm1``, then
      ``rollout.action[:, j−1]``.
    target: ``[B, H+1]`` stop-gradient ``G_j``, the target of ``Q(obs_j, action_j)``.
    mask: ``[B, H+1]`` float, ``Π_{i<j}(1 − terminated_i)``: 1 where pair ``j`` is reached
      before any termination, 0 for the meaningless pairs after one.
  """

  obs: Array
  action: Array
  target: Array
  mask: Array


def tdk_targets(nets: sac.SACNets, actor_params, target_critic_params, alpha, obs_stats,
                batch, rollout: Rollout, key: Array, gamma, lam=1.0,
                deterministic: bool = False, values: str = "control_variate") -> TDkTargets:
  """TD-k targets ``G_j`` for every (real or imagined) pair of the window; ``[B, H+1]``.

  Same window, operator and key usage as :func:`critic_expansion_returns`; ``G_j`` is the
  return of the sub-window ``j..H``, i.e. the ``(H−j)``-step expansion target of pair
  ``j``: with ``valid_j = Π_{i<j}(1 − terminated_i) = 1`` the cumulative discount from
  ``j`` on is ``γ·(1 − terminated_j)·…``, the correct per-step discount. Pairs with
  ``valid_j = 0`` follow a termination and must be masked out of the critic loss
  (``TDkTargets.mask``). The paper's code trains only pair 0 (no TD-k, §7.2).
  """
  g = critic_expansion_returns(nets, actor_params, target_critic_params, alpha, obs_stats,
                               batch, rollout, key, gamma, lam, deterministic, values)
  horizon = rollout.reward.shape[1]
  terminated = jnp.concatenate(
      [jnp.asarray(batch.terminated_t, bool)[:, None],
       jnp.asarray(rollout.terminated, bool)], axis=1)[:, :horizon]
  not_terminated = 1.0 - terminated.astype(jnp.float32)
  mask = jnp.concatenate(
      [jnp.ones_like(g[:, :1]), jnp.cumprod(not_terminated, axis=1)], axis=1)
  obs = jnp.concatenate([batch.obs_tm1[:, None], rollout.obs[:, :horizon]], axis=1)
  action = jnp.concatenate([batch.action_tm1[:, None], rollout.action], axis=1)
  return TDkTargets(obs=obs, action=action, target=jax.lax.stop_gradient(g), mask=mask)


# --------------------------------------------------------------------------- Retrace
def retrace_target(nets: sac.SACNets, actor_params, target_critic_params, alpha, obs_stats,
                   window, key: Array, gamma, lam=1.0,
                   deterministic: bool = False) -> Array:
  """Retrace target of ``Q(o_0, a_0)`` over ``H+1`` consecutive real transitions; ``[B]``.

  Window layout (§7.4). ``window`` is a :class:`mvelab.replay.Transition` with leaves
  ``[B, H+1, ...]`` (``replay.sample_windows`` with ``W = H+1``): transitions
  ``j = 0..H`` of ONE environment, ``obs_tm1[:, j] --action_tm1[:, j]--> obs_t[:, j]``.
  ``T = H+1``; the operator gets

  * ``r [B, H+1]``: ``r_j = reward_t[:, j]``; ``discount [B, H+1]`` from
    ``terminated_t`` (cumulative);
  * ``v [B, H+1]``: value of ``obs_t[:, j]``, ``j = 0..H``, fresh action of
    ``actor_params`` and target critic (key usage: module docstring);
  * ``q [B, H]``: ``q_j = min Q̄(obs_t[:, j], action_tm1[:, j+1])``, ``j = 0..H−1``;
  * ``c [B, H]``: ``c_j = λ·min(1, π(a_{j+1}|o_{j+1}) / μ(a_{j+1}|o_{j+1}))·(1 −
    truncated_t[:, j])`` with ``a_{j+1} = action_tm1[:, j+1]``, ``o_{j+1} =
    obs_tm1[:, j+1]``, ``log μ = logprob_tm1[:, j+1]`` (stored behaviour log-prob) and
    ``log π`` the density of the STORED tanh action (``distributions.log_prob``).

  Episode boundaries. Windows may cross them. An episode ends at transition ``j`` either
  by termination (``discount_i = 0`` for all ``i ≥ j``: ``G_j = r_j`` and no later term
  enters) or by truncation (``c_j = 0``: ``G_j = r_j + discount_j·v_j`` with ``v_j`` at the
  true final ``obs_t[:, j]``, and ``G_{j+1}`` is never read). Either way nothing of the
  next episode (transitions ``> j``) reaches ``G_0``, including ``q_j``, whose action
  ``a_{j+1}`` belongs to the next episode (it is multiplied by ``discount_j·c_j = 0``).
  Within an episode ``obs_t[:, j] == obs_tm1[:, j+1]``.

  ``deterministic=True`` (DDPG-RETRACE): a deterministic policy has no density ratio, so
  ``c_j = λ·(1 − truncated_t[:, j])`` (uncorrected n-step return, as in n-step DDPG /
  TD3 practice) and ``v_j = min Q̄(o, tanh(loc(o)))``. This deliberately differs from the
  reference code, whose DDPG traces come from an untrained std head and a pseudo-density
  (§14 item 15) and are not meaningful.

  ``H = 0`` is exactly the SAC target ``sac.sac_target(reward_t[:, 0],
  terminated_t[:, 0], sac.soft_value(..., normalize(obs_t[:, 0]), key), γ)``.

  Args:
    nets: networks.
    actor_params: target policy π (= current policy for SAC; target actor for DDPG).
    target_critic_params: target critic ``Q̄``.
    alpha: temperature (ignored if ``deterministic``).
    obs_stats: observation statistics.
    window: transitions with leaves ``[B, H+1, ...]``.
    key: key for the fresh actions.
    gamma: discount.
    lam: trace ``λ`` (1 in the paper).
    deterministic: DDPG (see above).

  Returns:
    ``[B]`` stop-gradient target ``G_0``.
  """
  b, t = window.reward_t.shape
  horizon = t - 1
  chex.assert_shape([window.terminated_t, window.truncated_t, window.logprob_tm1], (b, t))
  chex.assert_shape([window.obs_tm1, window.obs_t], (b, t, None))
  chex.assert_shape(window.action_tm1, (b, t, None))

  next_obs = normalization.normalize(obs_stats, window.obs_t)  # [B, H+1, obs]
  v = _values(nets, actor_params, target_critic_params, alpha, next_obs, key,
              deterministic)
  if horizon == 0:  # T = 1, spelled as the SAC target (see critic_expansion_returns)
    return jax.lax.stop_gradient(
        sac.sac_target(window.reward_t[:, 0], window.terminated_t[:, 0], v[:, 0], gamma))
  r = jnp.asarray(window.reward_t, jnp.float32)
  discount = _discounts(gamma, window.terminated_t)
  next_action = window.action_tm1[:, 1:]  # [B, H, act]: a_{j+1}
  q = _min_q(nets, target_critic_params, next_obs[:, :horizon], next_action)
  truncated = jnp.asarray(window.truncated_t[:, :horizon], bool)
  if deterministic:
    zeros = jnp.zeros((b, horizon), jnp.float32)
    c = _traces(zeros, zeros, lam, truncated)
  else:
    obs_next_tm1 = normalization.normalize(obs_stats, window.obs_tm1[:, 1:])
    loc, scale = nets.dist(actor_params, _flat(obs_next_tm1))
    log_pi = jax.vmap(functools.partial(
        distributions.log_prob, stable=nets.stable_logdet))(
            loc, scale, _flat(next_action)).reshape((b, horizon))
    c = _traces(log_pi, window.logprob_tm1[:, 1:], lam, truncated)
  g = _batched_returns(q, v, r, discount, c)
  return jax.lax.stop_gradient(g[:, 0])


# --------------------------------------------------------------------------- actor expansion
def actor_expansion_loss(actor_params, nets: sac.SACNets, critic_params, alpha, obs_stats,
                         rollout_fn: RolloutFn, obs: Array, key: Array, horizon: int,
                         gamma, deterministic: bool = False) -> tuple[Array, Array]:
  """SVG(H)-style actor-expansion loss (SAC-VG / DDPG-VG, §7.3); ``(loss, log_prob_0)``.

  ``horizon = 0``: exactly ``sac.actor_loss(actor_params, nets, critic_params, alpha,
  normalize(obs), key)`` (deterministic: :func:`ddpg_actor_loss`); ``rollout_fn`` is not
  called.

  ``horizon = H ≥ 1``: ``k_rollout, k_value = split(key)``; the rollout
  ``rollout_fn(policy_fn, k_rollout)`` starts at the current observations (``obs``, which
  ``rollout_fn`` closes over) and uses ``policy_fn`` = :func:`make_policy_fn` of
  ``actor_params`` (reparameterised), so gradients flow through actions, model
  transitions and rewards (the model parameters are not differentiated). Window of
  ``T = H`` imagined transitions ``rollout.obs[:, j] --rollout.action[:, j]-->
  rollout.obs[:, j+1]``, ``j = 0..H−1``:

  * ``r [B, H]`` ``= rollout.reward``; ``discount [B, H]`` from ``rollout.terminated``;
  * ``v [B, H]``: ``v_j = min Q(o_{j+1}, ã) − α log π(ã|o_{j+1})`` at
    ``o_{j+1} = rollout.obs[:, j+1]``, fresh reparameterised ``ã`` (key ``k_value`` as in
    the module docstring), ONLINE critic;
  * ``q [B, H−1]``: ``q_j = min Q(rollout.obs[:, j+1], rollout.action[:, j+1])``,
    ``j = 0..H−2``;
  * ``c [B, H−1]`` ``≡ 1`` (constants; no truncation inside a rollout).

  No stop-gradient on the returns. ``J = G_0 − α·rollout.log_prob[:, 0]`` and
  ``loss = −mean(J)/(H+1)`` (the reference's division). Expanded:
  ``J = Σ_{j<H} γ^j r_j − α log π(a_0|o_0) + Σ_{j=1}^{H−1} γ^j [v_{j−1} − q_{j−1}]
  + γ^H v_{H−1}`` without termination.

  Args:
    actor_params: differentiated policy parameters.
    nets: networks.
    critic_params: ONLINE critic ``Q``.
    alpha: temperature (ignored if ``deterministic``).
    obs_stats: observation statistics.
    rollout_fn: ``(policy_fn, key) -> Rollout`` with ``H = horizon`` steps.
    obs: ``[B, obs]`` raw start observations (used directly only when ``horizon = 0``).
    key: PRNG key (see above).
    horizon: static ``H ≥ 0``.
    gamma: discount.
    deterministic: DDPG (``tanh(loc)`` actions, log-probs 0).

  Returns:
    ``(loss [], log_prob_0 [B])``; ``log_prob_0 = log π(a_0|o_0)`` for the temperature
    loss (zeros if ``deterministic``).
  """
  if horizon < 0:
    raise ValueError(f"actor_expansion_loss: horizon must be >= 0, got {horizon}")
  if horizon == 0:
    if deterministic:
      return ddpg_actor_loss(actor_params, nets, critic_params, obs_stats, obs)
    return sac.actor_loss(actor_params, nets, critic_params, alpha,
                          normalization.normalize(obs_stats, obs), key)

  k_rollout, k_value = jax.random.split(key)
  policy_fn = make_policy_fn(nets, actor_params, obs_stats, deterministic)
  rollout = rollout_fn(policy_fn, k_rollout)
  b = rollout.reward.shape[0]
  chex.assert_shape(rollout.obs, (b, horizon + 1, None))
  chex.assert_shape(rollout.action, (b, horizon, None))
  chex.assert_shape([rollout.reward, rollout.terminated, rollout.log_prob], (b, horizon))

  next_obs = normalization.normalize(obs_stats, rollout.obs[:, 1:])  # [B, H, obs]
  r = jnp.asarray(rollout.reward, jnp.float32)
  discount = _discounts(gamma, rollout.terminated)
  v = _values(nets, actor_params, critic_params, alpha, next_obs, k_value, deterministic)
  q = _min_q(nets, critic_params, next_obs[:, :horizon - 1], rollout.action[:, 1:])
  c = jnp.ones((b, horizon - 1), jnp.float32)
  g_0 = _batched_returns(q, v, r, discount, c)[:, 0]
  log_prob_0 = rollout.log_prob[:, 0]
  alpha = 0.0 if deterministic else alpha
  objective = g_0 - alpha * log_prob_0
  return -jnp.mean(objective) / (horizon + 1), log_prob_0


# --------------------------------------------------------------------------- DDPG
def ddpg_critic_target(nets: sac.SACNets, actor_params_target, target_critic_params,
                       obs_stats, batch, gamma) -> Array:
  """1-step DDPG/TD3 target ``r + γ(1 − terminated)·min_i Q̄_i(o', tanh(loc̄(o')))``; ``[B]``.

  ``batch`` leaves ``[B, ...]`` (raw ``obs_t``). Twin minimum as in the reference (§7.5);
  no target-policy smoothing. Truncated transitions bootstrap. Stop-gradient.
  """
  next_obs = normalization.normalize(obs_stats, batch.obs_t)
  v = _policy_value(nets, actor_params_target, target_critic_params, 0.0, next_obs, None,
                    deterministic=True)
  return jax.lax.stop_gradient(sac.sac_target(batch.reward_t, batch.terminated_t, v, gamma))


def ddpg_actor_loss(actor_params, nets: sac.SACNets, critic_params, obs_stats,
                    obs: Array) -> tuple[Array, Array]:
  """DDPG actor loss ``−mean_b min_i Q_i(o_b, tanh(loc(o_b)))`` for raw ``obs [B, obs]``.

  Returns ``(loss, zeros [B])``, the same ``(loss, log_prob)`` shape as
  ``sac.actor_loss`` (a deterministic policy has log-prob 0 here).
  """
  norm_obs = normalization.normalize(obs_stats, obs)
  action = nets.mode(actor_params, norm_obs)
  q = jnp.min(nets.q(critic_params, norm_obs, action), axis=-1)
  return -jnp.mean(q), jnp.zeros(q.shape, jnp.float32)
