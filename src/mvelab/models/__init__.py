"""Dynamics models for value expansion: the true simulator (oracle) and a learned ensemble.

Both implement the one :class:`DynamicsModel` protocol; ``make_model(name, env, **options)``
builds one by name (``"oracle"`` or ``"learned"``).
"""

from __future__ import annotations

from mvelab.config import MODEL_SAMPLING as MEMBER_SAMPLING
from mvelab.errors import ConfigError, check_choice, check_positive
from mvelab.models.base import DynamicsModel, PolicyFn, Rollout
from mvelab.models.ensemble import EnsembleModel, EnsembleState
from mvelab.models.oracle import OracleModel, masked_rollout
from mvelab.models.perturbed import PerturbedOracle, one_step_error

#: Allowed ``make_model`` options per model name, with their defaults.
MODEL_OPTIONS: dict[str, dict] = {
    "oracle": dict(error="none", error_scale=0.0),
    "learned": dict(hidden_sizes=(256, 256, 256, 256), num_members=5, learning_rate=3e-4,
                    batch_size=256, sampling="iid"),
}


def make_model(name: str, env, **options) -> DynamicsModel:
  """Builds dynamics model ``name`` for ``env``.

  Args:
    name: ``"oracle"`` (the true simulator) or ``"learned"`` (probabilistic ensemble).
    env: the environment (an :class:`~mvelab.envs.base.Env`).
    **options: for ``"learned"``: ``hidden_sizes``, ``num_members``, ``learning_rate``,
      ``batch_size``, ``sampling`` (``MEMBER_SAMPLING``; ``None`` means the default).
      ``"oracle"``: ``error`` ("none", "physics" or "noise") and ``error_scale`` (a :class:`PerturbedOracle` unless
      ``error`` is "none").

  Returns:
    The model.

  Raises:
    ConfigError (a ValueError): unknown name or option, or a bad option value.
  """
  check_choice("model", name, MODEL_OPTIONS)
  allowed = MODEL_OPTIONS[name]
  for key in options:
    if key not in allowed:
      raise ConfigError(
          f"model option {key!r} is not known for model {name!r}; allowed: "
          f"{', '.join(allowed) if allowed else 'none'}")
  if name == "oracle":
    error = options.get("error") or "none"
    if error == "none":
      return OracleModel(env)
    return PerturbedOracle(env, error, options.get("error_scale") or 0.0)
  resolved = {**allowed, **{k: v for k, v in options.items() if v is not None}}
  check_positive("num_members", resolved["num_members"])
  check_positive("batch_size", resolved["batch_size"])
  check_choice("sampling", resolved["sampling"], MEMBER_SAMPLING)
  hidden = resolved["hidden_sizes"]
  if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__") or any(
      isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in hidden):
    raise ConfigError(
        f"hidden_sizes: must be a sequence of positive integers, got {hidden!r}")
  lr = resolved["learning_rate"]
  if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
    raise ConfigError(f"learning_rate: must be a positive number, got {lr!r}")
  return EnsembleModel.from_env(env, **resolved)


__all__ = ["Rollout", "DynamicsModel", "PolicyFn", "OracleModel", "PerturbedOracle",
           "one_step_error", "EnsembleModel",
           "EnsembleState", "MODEL_OPTIONS", "MEMBER_SAMPLING", "make_model",
           "masked_rollout"]
