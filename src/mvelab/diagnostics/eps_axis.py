"""Where a learned model sits on the ε axis of the perturbed oracles.

A run's learned ensemble and the perturbed oracles ``kind:ε`` (:mod:`mvelab.models.perturbed`)
are measured on the SAME replayed transitions of one checkpoint, on one scale: the k-step
observation error of :mod:`mvelab.diagnostics.model_error` (RMS over dimensions of the
error divided by the replay's per-dimension std), stepping each model open loop along one
oracle rollout of the checkpoint's policy from the transitions' next states (those that
did not end the task). The learned
model's *equivalent ε* at step k is where the perturbed oracles' error curve ``e(ε)``
(piecewise linear through ``(0, 0)`` and the measured scales) reaches the learned model's
error; beyond the largest scale it is extrapolated in proportion (``e ∝ ε``) and flagged.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pandas as pd

from mvelab import replay as replay_lib
from mvelab.diagnostics import model_error, view
from mvelab.models.oracle import OracleModel

Array = jax.Array

#: Transitions per checkpoint (fixed key ``PRNGKey(seed)``).
PROBES = 1024


def errors_of_state(p, names: tuple, probes: int, horizon: int, state, key: Array) -> dict:
  """``{model: (obs [K], reward [K])}`` k-step errors (``k = 1..horizon``) of the run's
  learned model (``learned``) and the perturbed oracles ``names``, one seed; jittable."""
  k_batch, k_truth, k_model = jax.random.split(key, 3)
  batch = replay_lib.sample(state.replay, k_batch, probes)
  truth = OracleModel(p.env).rollout((), state.obs_stats, batch.obs_t, batch.sim_t,
                                     view.policy_fn(p, state), k_truth, horizon)
  obs_std = model_error.replay_obs_std(state.replay)
  models = dict(learned=(p.model, state.model_state))
  models.update(model_error.reference_models(p.env, names))
  out = {}
  for name, (model, model_state) in models.items():
    pred_obs, pred_reward = model_error.open_loop(model, model_state, state.obs_stats,
                                                  batch.obs_t, batch.sim_t, truth.action,
                                                  k_model)
    out[name] = model_error.compounding_error(pred_obs, pred_reward, truth, obs_std,
                                              start_valid=~batch.terminated_t)
  return out


@functools.lru_cache(maxsize=4)
def _compiled(p, names: tuple, probes: int, horizon: int):
  return jax.jit(jax.vmap(functools.partial(errors_of_state, p, names, probes, horizon),
                          in_axes=(0, None)))


def measure(run_dir: str, kind: str, scales, horizon: int, probes: int = PROBES,
            seed: int = 0) -> pd.DataFrame:
  """The k-step errors of the learned run ``run_dir`` (its last checkpoint) and of the
  perturbed oracles ``kind:ε`` for ``ε`` in ``scales``.

  Returns:
    tidy rows ``seed, env_steps, model, k, obs_error, reward_error``.

  Raises:
    ConfigError: the run has no learned model or no checkpoint, or ``kind`` does not
      apply to its env (``error_models: ...``).
  """
  from mvelab.diagnostics import loading
  from mvelab.errors import ConfigError
  refs = loading.checkpoints(run_dir, ("last", 1)) if loading.find_runs(run_dir) else []
  if not refs:
    raise ConfigError(f"run: {run_dir!r} holds no checkpoint")
  names = tuple(model_error.error_model_name(kind, float(e)) for e in scales)
  rows = []
  for ref in refs:
    p, states = loading.restore(ref)
    if not p.learned_model:
      raise ConfigError(f"run: {run_dir!r} has no learned model")
    model_error.reference_models(p.env, names)  # ConfigError before compiling
    out = jax.device_get(_compiled(p, names, probes, max(horizon, 1))(
        states, jax.random.PRNGKey(seed)))
    steps = np.asarray(states.env_steps)
    for i, s in enumerate(ref.seeds):
      for name, (obs, reward) in out.items():
        rows += [dict(seed=s, env_steps=int(steps[i]), model=name, k=k + 1,
                      obs_error=float(obs[i, k]), reward_error=float(reward[i, k]))
                 for k in range(obs.shape[1])]
  return pd.DataFrame(rows)


def equivalent_eps(errors: pd.DataFrame, k: int = 1) -> dict:
  """The learned model's equivalent ε at step ``k`` from :func:`measure`'s rows.

  Returns:
    ``{"k", "learned_obs_error", "eps", "extrapolated", "scales", "perturbed_obs_error"}``:
    errors are means over seeds; ``eps`` solves ``e(ε) = learned`` on the piecewise-linear
    curve through ``(0, 0)`` and the measured scales (NaN if the curve is not increasing).
  """
  at = errors[errors["k"] == k]
  mean = at.groupby("model")["obs_error"].mean()
  learned = float(mean.pop("learned"))
  curve = sorted((float(m.split(":", 1)[1]), float(v)) for m, v in mean.items())
  eps = np.array([0.0] + [e for e, _ in curve if e > 0])
  err = np.array([0.0] + [v for e, v in curve if e > 0])
  out = dict(k=k, learned_obs_error=learned, scales=eps[1:].tolist(),
             perturbed_obs_error=err[1:].tolist(), extrapolated=False, eps=float("nan"))
  if len(eps) < 2 or np.any(np.diff(err) <= 0):
    return out
  if learned <= err[-1]:
    out["eps"] = float(np.interp(learned, err, eps))
  else:
    out["eps"], out["extrapolated"] = float(eps[-1] * learned / err[-1]), True
  return out
