"""What a diagnostics pass measures and how hard it tries: one frozen, validated settings object.

Every field is static (it fixes array shapes), so one :class:`Settings` and one run config
define one compiled diagnostics program.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

from mvelab.errors import ConfigError

#: Default horizons of the target diagnostics (the issue's list).
HORIZONS = (0, 1, 3, 5, 10, 20, 30)
#: Policy quantiles at which the action signal is probed (plus the policy mean).
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Ground-truth rollouts stop when ``γ^L ≤ TAIL`` (the neglected tail is at most
#: ``TAIL · max|r| / (1 − γ)``, i.e. 1% of the value scale ``max|r| / (1 − γ)``).
TAIL = 0.01


@dataclasses.dataclass(frozen=True)
class Settings:
  """Static settings of one diagnostics pass.

  Attributes:
    horizons: expansion horizons ``H`` of the target diagnostics (distinct, ``≥ 0``).
    probes: ``N`` probe transitions per checkpoint (drawn from its replay buffer).
    signal_probes: the first ``min(signal_probes, N)`` probes also get the action signal
      (``len(QUANTILES) + 1`` more ground-truth values each).
    rollouts: ``M`` Monte-Carlo rollouts per probe state-action for the ground truth.
    keys: ``K`` keys per target (its mean and its noise, the sd over keys).
    rollout_length: ground-truth rollout length ``L``; None: the smallest ``L`` with
      ``γ^L ≤ TAIL`` (:func:`ground_truth_length`).
    seed: the probe key is ``PRNGKey(seed)`` (the same at every checkpoint).
    mean_samples: policy samples that estimate the policy-mean action.
    error_models: reference perturbed oracles (``physics:0.1``, ``noise:0.03``) whose
      compounding error is measured next to the run's model, on the same scale
      (:mod:`mvelab.diagnostics.model_error`); normalised to ``kind:scale``, sorted.
  """

  horizons: tuple = HORIZONS
  probes: int = 256
  signal_probes: int = 32
  rollouts: int = 32
  keys: int = 8
  rollout_length: Optional[int] = None
  seed: int = 0
  mean_samples: int = 64
  error_models: tuple = ()

  def __post_init__(self):
    horizons = self.horizons
    if isinstance(horizons, (int, str)) or not hasattr(horizons, "__iter__"):
      raise ConfigError(f"horizons: must be a list of non-negative integers, got {horizons!r}")
    horizons = tuple(horizons)
    if not horizons or any(isinstance(h, bool) or not isinstance(h, int) or h < 0
                           for h in horizons):
      raise ConfigError(f"horizons: must be non-negative integers, got {list(horizons)}")
    if len(set(horizons)) != len(horizons):
      raise ConfigError(f"horizons: must be distinct, got {list(horizons)}")
    object.__setattr__(self, "horizons", tuple(sorted(horizons)))
    for name in ("probes", "signal_probes", "rollouts", "keys", "mean_samples"):
      _check_positive(name, getattr(self, name))
    if self.rollouts < 2:
      raise ConfigError(f"rollouts: must be at least 2 (the standard error is an sd over "
                        f"rollouts), got {self.rollouts}")
    if self.keys < 2:
      raise ConfigError(f"keys: must be at least 2 (the noise is an sd over keys), "
                        f"got {self.keys}")
    if self.rollout_length is not None:
      _check_positive("rollout_length", self.rollout_length)
    if isinstance(self.error_models, str) or not hasattr(self.error_models, "__iter__"):
      raise ConfigError(f"error_models: must be a list of KIND:SCALE, got "
                        f"{self.error_models!r}")
    from mvelab.diagnostics.model_error import (error_model_name, model_order,
                                                parse_error_model)
    names = sorted({error_model_name(*parse_error_model(t)) for t in self.error_models},
                   key=model_order)
    object.__setattr__(self, "error_models", tuple(names))
    if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
      raise ConfigError(f"seed: must be a non-negative integer, got {self.seed!r}")

  @property
  def num_signal(self) -> int:
    """Probes with the action signal."""
    return min(self.signal_probes, self.probes)

  @property
  def max_horizon(self) -> int:
    return max(self.horizons)

  def length(self, gamma: float) -> int:
    """Ground-truth rollout length for discount ``gamma``."""
    return self.rollout_length or ground_truth_length(gamma)


def ground_truth_length(gamma: float, tail: float = TAIL) -> int:
  """Smallest ``L`` with ``γ^L ≤ tail`` (459 for ``γ = 0.99``)."""
  if not 0.0 < gamma < 1.0:
    raise ConfigError(f"gamma: ground truth needs 0 < gamma < 1, got {gamma}")
  return int(math.ceil(math.log(tail) / math.log(gamma)))


def _check_positive(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
