"""The tidy metrics of a diagnostics pass: one row per (seed, checkpoint, model, estimator,
H or k, metric).

Columns: ``run, env, seed, env_steps, updates, model, estimator, horizon, k, metric,
value``. ``estimator`` is ``truth`` (the Monte-Carlo Q^π), ``critic`` (the online critic),
``ce_direct`` / ``ce_control_variate`` (critic-expansion targets, ``horizon`` = H, ``model``
= oracle, learned, or a perturbed oracle ``kind:scale``), ``retrace`` (``horizon`` = H) or
``model`` (compounding error, ``k`` = steps; ``model`` = learned or ``kind:scale``). ``horizon``/``k`` are NaN where they do not apply. See
docs/diagnostics.md for every metric.
"""

from __future__ import annotations

import math

import numpy as np

from mvelab.config import CE_VALUES
from mvelab.diagnostics.model_error import model_order

COLUMNS = ("run", "env", "seed", "env_steps", "updates", "model", "estimator", "horizon",
           "k", "metric", "value")
#: Normalised bias divides by ``max(|Q^π|, NORM_FLOOR)`` (REDQ's bias_utils floor).
NORM_FLOOR = 10.0


def centred(x: np.ndarray) -> np.ndarray:
  """``[..., N, A]`` minus its mean over the action axis."""
  return x - x.mean(axis=-1, keepdims=True)


def action_corr(estimate: np.ndarray, truth: np.ndarray) -> float:
  """Pooled correlation of the action dependence: ``Σ x̃ỹ / √(Σ x̃² Σ ỹ²)`` with ``x̃, ỹ``
  centred over the actions of each probe state; ``[..., N, A]`` each."""
  x, y = centred(estimate), centred(np.broadcast_to(truth, estimate.shape))
  denom = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
  return float(np.sum(x * y) / denom) if denom > 0 else float("nan")


def seed_rows(a: dict, settings, meta: dict) -> list:
  """Rows of one seed's arrays ``a`` (:func:`mvelab.diagnostics.compute.diagnose_state`,
  numpy) with ``meta`` = run, env, seed, env_steps, updates."""
  q_pi, se = a["q_pi"], a["q_pi_se"]  # the probes' own (s0, a0)
  truth_actions = a["q_signal"]  # [Ns, A] the policy's actions: the action signal
  signal_sd = float(np.sqrt(np.mean(np.square(centred(truth_actions)))))
  out = []
  row = lambda model, est, h, k, metric, value: out.append(dict(
      meta, model=model, estimator=est, horizon=h, k=k, metric=metric, value=float(value)))
  nan = float("nan")

  row("", "truth", nan, nan, "q_pi_mean", np.mean(q_pi))
  row("", "truth", nan, nan, "q_pi_se_rms", np.sqrt(np.mean(np.square(se))))
  row("", "truth", nan, nan, "action_signal_sd", signal_sd)
  row("", "truth", nan, nan, "action_signal_se_rms",
      np.sqrt(np.mean(np.square(a["q_signal_se"]))))
  row("", "truth", nan, nan, "rollout_length", a["rollout_length"])

  err = a["critic"] - q_pi
  norm = err / np.maximum(np.abs(q_pi), NORM_FLOOR)
  row("", "critic", nan, nan, "bias", np.mean(err))
  row("", "critic", nan, nan, "bias_se", np.sqrt(np.sum(np.square(se))) / len(se))
  row("", "critic", nan, nan, "rmse", np.sqrt(np.mean(np.square(err))))
  row("", "critic", nan, nan, "normalized_bias", np.mean(norm))
  row("", "critic", nan, nan, "normalized_bias_sd", np.std(norm))
  row("", "critic", nan, nan, "action_corr", action_corr(a["critic_signal"], truth_actions))

  for model in models_in(a, "ce"):
    for values in CE_VALUES:
      for h in settings.horizons:
        key = f"ce/{model}/{values}/{h}"
        if key not in a:
          continue
        y, y_signal = a[key], a[key.replace("ce/", "ce_signal/")]  # [K, N], [K, Ns, A]
        _target_rows(row, model, f"ce_{values}", h, y, q_pi, se)
        row(model, f"ce_{values}", h, nan, "action_corr",
            action_corr(y_signal.mean(axis=0), truth_actions))
        row(model, f"ce_{values}", h, nan, "action_corr_single",
            np.mean([action_corr(yk, truth_actions) for yk in y_signal]))
        noise_actions = np.sqrt(np.mean(np.var(y_signal, axis=0, ddof=1)))
        row(model, f"ce_{values}", h, nan, "noise_to_signal",
            noise_actions / signal_sd if signal_sd > 0 else nan)
        if model != "oracle":
          gap = y.mean(axis=0) - a[f"ce/oracle/{values}/{h}"].mean(axis=0)
          row(model, f"ce_{values}", h, nan, "gap_mean", np.mean(gap))
          row(model, f"ce_{values}", h, nan, "gap_rms", np.sqrt(np.mean(np.square(gap))))
  for h in settings.horizons:
    _target_rows(row, "", "retrace", h, a[f"retrace/{h}"], q_pi, se)

  for model in models_in(a, "model_error"):
    errors = zip(a[f"model_error/{model}/obs"], a[f"model_error/{model}/reward"])
    for k, (e_obs, e_rew) in enumerate(errors):
      row(model, "model", nan, k + 1, "obs_error", e_obs)
      row(model, "model", nan, k + 1, "reward_error", e_rew)
  return out


def models_in(a: dict, prefix: str) -> list:
  """Model names of the ``prefix/<model>/...`` arrays: oracle, learned, then the
  perturbed oracles ``kind:scale`` by kind and scale."""
  return sorted({k.split("/")[1] for k in a if k.startswith(prefix + "/")}, key=model_order)


def _target_rows(row, model, estimator, h, y, q_pi, se) -> None:
  """Bias, its Monte-Carlo error, RMSE and noise of targets ``y [K, N]`` against Q^π."""
  num_keys = y.shape[0]
  mean, var = y.mean(axis=0), y.var(axis=0, ddof=1)
  err = mean - q_pi
  nan = float("nan")
  row(model, estimator, h, nan, "bias", np.mean(err))
  # MC error of the mean bias: ground-truth SE and the key average's SE, per probe.
  row(model, estimator, h, nan, "bias_se",
      np.sqrt(np.sum(np.square(se) + var / num_keys)) / len(se))
  row(model, estimator, h, nan, "rmse", np.sqrt(np.mean(np.square(err))))
  row(model, estimator, h, nan, "noise", np.sqrt(np.mean(var)))
