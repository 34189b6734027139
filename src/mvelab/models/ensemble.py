"""The learned dynamics model: a probabilistic ensemble of MLPs (paper §9.1).

Each of ``E`` members maps ``concat(normalize(obs_stats, o), a)`` to the mean and
log-variance of ``y = [o' - o, r]`` (``D = obs_size + 1``; the observation delta and the
reward are UNnormalised). Members are one stacked set of MLP parameters (leading axis
``E``, independent init keys) applied with ``jax.vmap``; all members see the same
minibatch.

Log-variance soft bounds (PETS), with learnable ``min_logvar``/``max_logvar`` ``[D]``
initialised to -10 and 0.5::

  lv <- max - softplus(max - lv);  lv <- min + softplus(lv - min)

Loss (Gaussian NLL without the 1/2 and constants), mean over members and batch::

  L = mean_{e,b} sum_d [lv + (mu - y)^2 exp(-lv)] + 0.01 (sum max - sum min)

Rollouts sample every step from ONE member per row, fresh at every step
(``o' = o + mu + sigma eps``, ``r`` likewise). Two ways to choose it (``sampling``):

* ``"iid"`` (the reference's): a uniformly random member per row, independently across
  rows. The reference samples every member and then picks one; here every member's mean
  and log-variance are computed for every row (``E`` times the work of one member), the
  member is drawn, and only its Gaussian is sampled: the same distribution.
* ``"balanced"``: a random permutation of the ``B`` rows (padded to ``E·G``,
  ``G = ceil(B / E)``) is cut into ``E`` groups of ``G`` slots, and member ``e`` predicts
  only its own group (PETS's per-step shuffle). Each row's member is still uniform and
  fresh at every step, so each row's target has the same distribution as with ``"iid"``;
  only the joint draw differs (every member gets ``B/E`` rows, give or take the padding).
  It costs one member's work on ``E·G`` rows instead of all ``E`` members' on ``B``.

Termination comes from the environment's true ``termination_fn``. Model parameters are
``stop_gradient``-ed inside rollouts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import struct

from mvelab.agents.networks import MLP
from mvelab.core.normalization import RunningStats, normalize
from mvelab.models.base import PolicyFn, Rollout
from mvelab.models.oracle import masked_rollout

Array = jax.Array

#: Initial values of the learnable log-variance bounds.
INIT_MIN_LOGVAR = -10.0
INIT_MAX_LOGVAR = 0.5
#: Weight of ``sum(max_logvar) - sum(min_logvar)`` in the loss.
LOGVAR_BOUND_WEIGHT = 0.01


@struct.dataclass
class EnsembleState:
  """Parameters and optimiser state of the ensemble.

  Attributes:
    params: dict with ``net`` (MLP parameters, every leaf with leading axis ``E``),
      ``min_logvar [D]`` and ``max_logvar [D]``.
    opt_state: optax Adam state of ``params``.
  """

  params: Any
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class EnsembleModel:
  """Probabilistic ensemble dynamics model.

  Attributes:
    termination_fn: ``termination_fn(obs [O], action [A], next_obs [O]) -> [] bool``
      (unbatched; the environment's true termination, vmapped here).
    obs_size: ``O``.
    action_size: ``A``.
    hidden_sizes: hidden widths of each member's ReLU MLP.
    num_members: ensemble size ``E``.
    learning_rate: Adam learning rate.
    batch_size: minibatch size the caller should sample for :meth:`update`
      (informational: ``update`` trains on whatever batch it is given).
    sampling: how rollouts pick each row's member, ``"iid"`` or ``"balanced"`` (module
      docstring).
  """

  termination_fn: Callable[[Array, Array, Array], Array]
  obs_size: int
  action_size: int
  hidden_sizes: Sequence[int] = (256, 256, 256, 256)
  num_members: int = 5
  learning_rate: float = 3e-4
  batch_size: int = 256
  sampling: str = "iid"
  name: ClassVar[str] = "learned"
  needs_sim: ClassVar[bool] = False

  def __post_init__(self):
    object.__setattr__(self, "hidden_sizes", tuple(int(w) for w in self.hidden_sizes))

  @classmethod
  def from_env(cls, env, **options) -> "EnsembleModel":
    """An ensemble for ``env`` (its sizes and ``termination_fn``); ``options`` as fields."""
    return cls(termination_fn=env.termination_fn, obs_size=int(env.obs_size),
               action_size=int(env.action_size), **options)

  # ------------------------------------------------------------------ pieces
  @property
  def out_size(self) -> int:
    """``D = obs_size + 1``: observation delta and reward."""
    return self.obs_size + 1

  @property
  def network(self) -> MLP:
    """One member: ``[..., O + A] -> [..., 2 D]`` (mean, raw log-variance); zero biases."""
    return MLP(self.hidden_sizes, 2 * self.out_size, bias_init=0.0)

  @property
  def optimizer(self) -> optax.GradientTransformation:
    return optax.adam(self.learning_rate)

  def init(self, key: Array) -> EnsembleState:
    """Fresh parameters (independent key per member) and Adam state."""
    example = jnp.zeros((1, self.obs_size + self.action_size), jnp.float32)
    keys = jax.random.split(key, self.num_members)
    net = jax.vmap(lambda k: self.network.init(k, example)["params"])(keys)
    params = dict(
        net=net,
        min_logvar=jnp.full((self.out_size,), INIT_MIN_LOGVAR, jnp.float32),
        max_logvar=jnp.full((self.out_size,), INIT_MAX_LOGVAR, jnp.float32))
    return EnsembleState(params=params, opt_state=self.optimizer.init(params))

  def apply(self, params: Any, obs_stats: RunningStats, obs: Array,
            action: Array) -> tuple[Array, Array]:
    """Every member's prediction from raw parameters.

    Args:
      params: ``EnsembleState.params``.
      obs_stats: observation normaliser statistics.
      obs: ``[..., O]`` raw observations.
      action: ``[..., A]`` actions.

    Returns:
      ``(mean, logvar)``, each ``[E, ..., D]``: mean of ``[o' - o, r]`` and its bounded
      log-variance.
    """
    x = jnp.concatenate(
        [normalize(obs_stats, obs), jnp.asarray(action, jnp.float32)], axis=-1)
    out = jax.vmap(lambda p: self.network.apply({"params": p}, x))(params["net"])
    return self._split_bounded(params, out)

  def _split_bounded(self, params: Any, out: Array) -> tuple[Array, Array]:
    """``(mean, logvar)`` of raw outputs ``[..., 2 D]`` with the soft log-variance bounds."""
    mean, logvar = jnp.split(out, 2, axis=-1)
    max_lv, min_lv = params["max_logvar"], params["min_logvar"]
    logvar = max_lv - jax.nn.softplus(max_lv - logvar)
    logvar = min_lv + jax.nn.softplus(logvar - min_lv)
    return mean, logvar

  def apply_own_member(self, params: Any, obs_stats: RunningStats, obs: Array,
                       action: Array) -> tuple[Array, Array]:
    """Member ``e``'s prediction for its own rows: ``obs [E, B, O]``, ``action [E, B, A]``
    -> ``(mean, logvar)`` each ``[E, B, D]`` (the cost of one :meth:`apply` on ``B``)."""
    x = jnp.concatenate(
        [normalize(obs_stats, obs), jnp.asarray(action, jnp.float32)], axis=-1)
    out = jax.vmap(lambda p, xe: self.network.apply({"params": p}, xe))(params["net"], x)
    return self._split_bounded(params, out)

  def predict(self, model_state: EnsembleState, obs_stats: RunningStats, obs: Array,
              action: Array) -> tuple[Array, Array]:
    """:meth:`apply` with ``model_state.params``: ``(mean, logvar)``, each ``[E, ..., D]``."""
    return self.apply(model_state.params, obs_stats, obs, action)

  @staticmethod
  def _targets(batch) -> Array:
    """``[B, D]`` regression targets ``[o_t - o_tm1, r_t]``."""
    delta = jnp.asarray(batch.obs_t, jnp.float32) - jnp.asarray(batch.obs_tm1, jnp.float32)
    return jnp.concatenate([delta, jnp.asarray(batch.reward_t, jnp.float32)[..., None]],
                           axis=-1)

  def loss(self, params: Any, obs_stats: RunningStats, batch) -> tuple[Array, dict]:
    """Gaussian NLL of a batch (see the module docstring).

    Args:
      params: ``EnsembleState.params``.
      obs_stats: observation normaliser statistics.
      batch: :class:`~mvelab.replay.Transition` with leading axis ``[B]``.

    Returns:
      ``(loss [], metrics)`` with ``model_loss`` and ``model_mse`` (squared error of
      every member's mean, averaged over members, batch and the ``D`` outputs).
    """
    mean, logvar = self.apply(params, obs_stats, batch.obs_tm1, batch.action_tm1)
    err2 = jnp.square(mean - self._targets(batch))
    nll = jnp.mean(jnp.sum(logvar + err2 * jnp.exp(-logvar), axis=-1))
    bounds = LOGVAR_BOUND_WEIGHT * (
        jnp.sum(params["max_logvar"]) - jnp.sum(params["min_logvar"]))
    loss = nll + bounds
    return loss, dict(model_loss=loss, model_mse=jnp.mean(err2))

  # -------------------------------------------------------------- protocol
  def update(self, model_state: EnsembleState, obs_stats: RunningStats, batch,
             key: Array) -> tuple[EnsembleState, dict]:
    """One Adam step on a replay batch (every member on the same batch).

    Args:
      model_state: current :class:`EnsembleState`.
      obs_stats: observation normaliser statistics (not differentiated).
      batch: :class:`~mvelab.replay.Transition` with leading axis ``[B]``.
      key: unused (training is deterministic given the batch).

    Returns:
      ``(model_state, metrics)`` with scalar ``model_loss`` and ``model_mse``.
    """
    del key
    obs_stats = jax.lax.stop_gradient(obs_stats)
    grads, metrics = jax.grad(self.loss, has_aux=True)(model_state.params, obs_stats, batch)
    updates, opt_state = self.optimizer.update(grads, model_state.opt_state,
                                               model_state.params)
    params = optax.apply_updates(model_state.params, updates)
    return EnsembleState(params=params, opt_state=opt_state), metrics

  def rollout(self, model_state: EnsembleState, obs_stats: RunningStats, obs: Array,
              sim: Any, policy_fn: PolicyFn, key: Array, horizon: int) -> Rollout:
    """Imagines ``horizon`` steps, one random member per row and per step.

    Gradients flow through actions, predicted observations and rewards to whatever
    ``policy_fn`` closes over; the model parameters and ``obs_stats`` are
    ``stop_gradient``-ed (actor expansion must not train the model).

    Args:
      model_state: :class:`EnsembleState`.
      obs_stats: observation normaliser statistics.
      obs: ``[B, obs_size]`` raw start observations.
      sim: unused (``needs_sim`` is False; pass ``None``).
      policy_fn: ``policy_fn(obs [B, O], key) -> (action [B, A], log_prob [B])``.
      key: PRNG key (policy, member choice and Gaussian noise).
      horizon: ``H``, static.

    Returns:
      :class:`Rollout` (see :func:`~mvelab.models.oracle.masked_rollout` for the
      freezing semantics after a termination).
    """
    del sim
    return masked_rollout(self.transition(model_state, obs_stats), (), obs, policy_fn, key,
                          horizon)

  def transition(self, model_state: EnsembleState, obs_stats: RunningStats):
    """The batched one-step :data:`~mvelab.models.oracle.TransitionFn` of :meth:`rollout`.

    ``transition((), obs [B, O], action [B, A], key) -> ((), next_obs, reward,
    terminated)``: one random member per row, a Gaussian sample of it, the true
    ``termination_fn``; parameters and ``obs_stats`` are ``stop_gradient``-ed.
    """
    params = jax.lax.stop_gradient(model_state.params)
    obs_stats = jax.lax.stop_gradient(obs_stats)
    termination_fn = jax.vmap(self.termination_fn)
    obs_size = self.obs_size

    def transition(state, obs, action, key):
      member_key, noise_key = jax.random.split(key)
      mean, logvar = self.member_prediction(params, obs_stats, obs, action, member_key)
      eps = jax.random.normal(noise_key, mean.shape, jnp.float32)
      sample = mean + jnp.exp(0.5 * logvar) * eps
      next_obs = obs + sample[:, :obs_size]
      reward = sample[:, obs_size]
      terminated = termination_fn(obs, action, next_obs)
      return state, next_obs, reward, terminated

    return transition

  def member_prediction(self, params: Any, obs_stats: RunningStats, obs: Array,
                        action: Array, key: Array) -> tuple[Array, Array]:
    """One member's ``(mean, logvar)`` per row, each ``[B, D]``, chosen by ``sampling``.

    Args:
      params: ``EnsembleState.params``.
      obs_stats: observation normaliser statistics.
      obs: ``[B, O]`` raw observations.
      action: ``[B, A]`` actions.
      key: PRNG key of the member choice.
    """
    if self.sampling == "balanced":
      return self._balanced_prediction(params, obs_stats, obs, action, key)
    mean, logvar = self.apply(params, obs_stats, obs, action)  # [E, B, D]
    batch = obs.shape[0]
    member = jax.random.randint(key, (batch,), 0, self.num_members)
    rows = jnp.arange(batch)
    return mean[member, rows], logvar[member, rows]

  def _balanced_prediction(self, params, obs_stats, obs, action, key):
    """``"balanced"`` sampling: a random permutation of the rows, ``E`` equal groups."""
    e, b = self.num_members, obs.shape[0]
    slots = e * -(-b // e)  # E·G, G = ceil(B / E)
    pad = lambda x: jnp.concatenate([x, jnp.zeros((slots - b,) + x.shape[1:], x.dtype)])
    row_of_slot = jax.random.permutation(key, slots)  # rows >= B are padding
    grouped = lambda x: pad(x)[row_of_slot].reshape((e, slots // e) + x.shape[1:])
    mean, logvar = self.apply_own_member(params, obs_stats, grouped(obs),
                                         grouped(jnp.asarray(action, jnp.float32)))
    slot_of_row = jnp.argsort(row_of_slot)[:b]
    flat = lambda x: x.reshape((slots,) + x.shape[2:])[slot_of_row]
    return flat(mean), flat(logvar)

  def sample_rollouts(self, model_state: EnsembleState, obs_stats: RunningStats,
                      obs: Array, sim: Any, policy_fn: PolicyFn, key: Array, horizon: int,
                      num: int) -> Rollout:
    """The ``E`` member-consistent rollouts ``[E, B, ...]``: rollout ``e`` uses member
    ``e`` at every step (STEVE's transition-model samples; ``num`` is ignored).

    One masked rollout over ``E·B`` rows (start states tiled), each step one
    :meth:`apply_own_member`; model parameters are ``stop_gradient``-ed as in
    :meth:`rollout`.
    """
    del sim, num
    params = jax.lax.stop_gradient(model_state.params)
    obs_stats = jax.lax.stop_gradient(obs_stats)
    termination_fn = jax.vmap(self.termination_fn)
    e, (b, o) = self.num_members, obs.shape
    per_member = lambda x: x.reshape((e, b) + x.shape[1:])

    def transition(state, obs, action, key):
      mean, logvar = self.apply_own_member(params, obs_stats, per_member(obs),
                                           per_member(action))
      mean, logvar = mean.reshape((e * b, -1)), logvar.reshape((e * b, -1))
      sample = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
      next_obs = obs + sample[:, :o]
      return state, next_obs, sample[:, o], termination_fn(obs, action, next_obs)

    tiled = jnp.tile(jnp.asarray(obs, jnp.float32), (e, 1))
    roll = masked_rollout(transition, (), tiled, policy_fn, key, horizon)
    return jax.tree.map(per_member, roll)

  # --------------------------------------------------------------- logging
  def prediction_error(self, model_state: EnsembleState, obs_stats: RunningStats,
                       batch) -> dict:
    """Error of the ensemble-mean prediction on a (held-out) batch.

    Args:
      model_state: :class:`EnsembleState`.
      obs_stats: observation normaliser statistics.
      batch: :class:`~mvelab.replay.Transition` with leading axis ``[B]``.

    Returns:
      dict with scalar ``obs_mse`` (mean over batch and observation dimensions of the
      squared error of the predicted ``o'``) and ``reward_mse``.
    """
    mean, _ = self.predict(model_state, obs_stats, batch.obs_tm1, batch.action_tm1)
    err2 = jnp.square(jnp.mean(mean, axis=0) - self._targets(batch))  # [B, D]
    return dict(obs_mse=jnp.mean(err2[..., :self.obs_size]),
                reward_mse=jnp.mean(err2[..., self.obs_size]))
