"""Pure math of mvelab: policy distribution, observation normalisation, multi-step returns.

Every function acts on one unbatched item; batch with ``jax.vmap``.
"""

from mvelab.core import distributions, normalization, returns
from mvelab.core.distributions import (
    TanhNormal,
    log_prob,
    mode,
    sample_and_log_prob,
    scale_from_raw,
    tanh_log_det_jacobian,
)
from mvelab.core.normalization import RunningStats, normalize, std, variance
from mvelab.core.normalization import init as init_running_stats
from mvelab.core.normalization import update as update_running_stats
from mvelab.core.returns import (
    cumulative_discount,
    general_off_policy_returns_from_q_and_v,
    n_step_return,
    truncated_importance_weights,
)

__all__ = [
    "RunningStats",
    "TanhNormal",
    "cumulative_discount",
    "distributions",
    "general_off_policy_returns_from_q_and_v",
    "init_running_stats",
    "log_prob",
    "mode",
    "n_step_return",
    "normalization",
    "normalize",
    "returns",
    "sample_and_log_prob",
    "scale_from_raw",
    "std",
    "tanh_log_det_jacobian",
    "truncated_importance_weights",
    "update_running_stats",
    "variance",
]
