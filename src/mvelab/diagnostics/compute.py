"""One diagnostics pass over one training state: probes, ground truth, critic, targets,
model error, as one jitted program (vmapped over the seeds of a checkpoint).

:func:`diagnose_state` returns raw arrays (keys below); :mod:`mvelab.diagnostics.report`
reduces them to the tidy metrics. Shapes (``N`` probes, ``W = 1 + A`` actions per probe
state, ``K`` keys, ``Hmax = max(horizons)``):

* ``q_pi``, ``q_pi_se`` ``[N]``: Monte-Carlo ``Q^π(o_0, a_0)`` of every probe and its
  standard error (:mod:`~mvelab.diagnostics.ground_truth`);
* ``q_signal``, ``q_signal_se`` ``[Ns, A]``: ``Q^π`` of the ``A`` policy actions at the
  first ``Ns = settings.num_signal`` probe states (common random numbers) and the
  standard error of their centred values;
* ``critic`` ``[N]``, ``critic_signal`` ``[Ns, A]``: the online critic ``min_i Q_i`` there;
* ``ce/<model>/<ce_values>/<H>`` ``[K, N]`` and ``ce_signal/...`` ``[K, Ns, A]``:
  critic-expansion targets (:func:`~mvelab.diagnostics.targets.expansion_targets`) of
  every model of :func:`models_of`;
* ``retrace/<H>`` ``[K, N]``: Retrace targets of the probes' stored windows;
* ``model_error/<model>/obs``, ``model_error/<model>/reward`` ``[max(Hmax, 1)]``:
  compounding error (:mod:`~mvelab.diagnostics.model_error`) of every model but the
  oracle: the run's own and ``settings.error_models``;
* ``obs_std`` ``[O]``, ``alpha`` ``[]``, ``env_steps`` ``[]``, ``updates`` ``[]``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mvelab.diagnostics import ground_truth, model_error, probes as probes_lib
from mvelab.diagnostics import targets, view
from mvelab.diagnostics.settings import Settings
from mvelab.errors import ConfigError
from mvelab.models.oracle import OracleModel

Array = jax.Array


def models_of(p, state) -> dict:
  """``{name: (model, model_state)}`` whose targets are diagnosed: always the oracle, and
  the run's own model when it is not the exact oracle (``learned``, or a perturbed oracle
  named ``kind:scale``)."""
  out = {"oracle": (OracleModel(p.env), ())}
  if p.learned_model:
    out["learned"] = (p.model, state.model_state)
  elif p.cfg.model_error != "none":
    out.update(model_error.reference_models(
        p.env, [f"{p.cfg.model_error}:{p.cfg.model_error_scale}"]))
  return out


def error_models_of(p, settings: Settings, state) -> dict:
  """The models whose compounding error is measured: the run's own (not the oracle) and
  the reference perturbed oracles of ``settings.error_models``."""
  out = {k: v for k, v in models_of(p, state).items() if k != "oracle"}
  out.update(model_error.reference_models(p.env, settings.error_models))
  return out


def diagnose_state(p, settings: Settings, state, key: Array) -> dict:
  """All diagnostics arrays of one seed's ``state`` (module docstring); pure, jittable."""
  k_probe, k_truth, k_target, k_model = jax.random.split(key, 4)
  probes = probes_lib.draw(p, state, settings, k_probe)
  first, n = probes.first, settings.probes
  ns, num_actions = probes.actions.shape[:2]
  # [..., N + Ns·A] -> probe part [..., N] and signal part [..., Ns, A].
  split = lambda x: (x[..., :n], x[..., n:].reshape(x.shape[:-1] + (ns, num_actions)))
  alpha = view.alpha(p, state)

  mc = (settings.rollouts, settings.length(p.cfg.gamma), state.hyper.gamma, alpha)
  probe = jax.tree.map(lambda x: x[:n], first)
  q_pi, q_pi_se = ground_truth.soft_q(p.env, view.policy_fn(p, state), probe.sim_tm1,
                                      probe.action_tm1, k_truth, *mc)
  q_signal, q_signal_se = ground_truth.soft_q_actions(
      p.env, view.policy_fn(p, state), jax.tree.map(lambda x: x[:ns], probe.sim_tm1),
      probes.actions, jax.random.fold_in(k_truth, 1), *mc)
  critic, critic_signal = split(view.critic_value(p, state, first.obs_tm1, first.action_tm1))
  out = dict(q_pi=q_pi, q_pi_se=q_pi_se, q_signal=q_signal, q_signal_se=q_signal_se,
             critic=critic, critic_signal=critic_signal,
             obs_std=model_error.replay_obs_std(state.replay), alpha=alpha,
             env_steps=state.env_steps, updates=state.updates,
             rollout_length=jnp.int32(settings.length(p.cfg.gamma)))

  keys = jax.random.split(k_target, settings.keys)
  rollouts = {}
  for name, (model, model_state) in models_of(p, state).items():
    ys, rollouts[name] = targets.expansion_targets(p, state, model, model_state, first,
                                                   settings.horizons, keys)
    for (values, h), y in ys.items():
      out[f"ce/{name}/{values}/{h}"], out[f"ce_signal/{name}/{values}/{h}"] = split(y)
  ys = targets.retrace_targets(p, state, probes.window, settings.horizons, keys)
  out.update({f"retrace/{h}": ys[h] for h in settings.horizons})

  truth = jax.tree.map(lambda x: x[:, :n], rollouts["oracle"])  # probe rows [K, N, ...]
  for name, model in error_models_of(p, settings, state).items():
    out[f"model_error/{name}/obs"], out[f"model_error/{name}/reward"] = _model_error(
        model, state, probe, truth, k_model, out["obs_std"])
  return out


def _model_error(model_and_state, state, probe, truth, key, obs_std):
  """Compounding error of one model along the oracle rollouts ``truth`` of the probes."""
  model, model_state = model_and_state

  def one(actions, k):
    return model_error.open_loop(model, model_state, state.obs_stats, probe.obs_t,
                                 probe.sim_t, actions, k)

  keys = jax.random.split(key, truth.action.shape[0])
  pred_obs, pred_reward = jax.vmap(one)(truth.action, keys)
  return model_error.compounding_error(pred_obs, pred_reward, truth, obs_std,
                                       start_valid=~probe.terminated_t)


@functools.lru_cache(maxsize=8)
def compiled(p, settings: Settings):
  """``f(states [S], key) -> arrays [S, ...]``: :func:`diagnose_state` vmapped over seeds."""
  return jax.jit(jax.vmap(functools.partial(diagnose_state, p, settings),
                          in_axes=(0, None)))


def check_state(p, settings: Settings, state, where: str) -> None:
  """Host-side checks before a pass: enough replay for the windows, a finite state.

  Raises:
    ConfigError: naming ``where`` (the checkpoint) and the problem.
  """
  size = int(np.min(np.asarray(state.replay.size)))
  need = settings.max_horizon + 1
  if size < need:
    raise ConfigError(
        f"horizons: {where} holds {size} transitions per environment, fewer than "
        f"max(horizons) + 1 = {need} that the Retrace windows need")
  model_error.reference_models(p.env, settings.error_models)  # ConfigError: error_models
