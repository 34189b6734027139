"""Value-target diagnostics against ground truth (docs/diagnostics.md).

The replay buffer stores every transition's simulator state, so the true simulator can
compute, for any checkpoint of any run, the policy's true soft ``Q^π`` by Monte Carlo
and compare it with the critic, with the critic-expansion targets of the oracle and the
learned model at every horizon, and with Retrace; and it can measure the learned model's
compounding error.

Files: ``settings`` (what is measured), ``view`` (what is read from a training state),
``probes``, ``ground_truth``, ``targets``, ``model_error``, ``compute`` (one jitted pass),
``report`` (tidy metrics), ``loading`` (checkpoints), ``diagnose`` (whole runs),
``figures``, ``cli`` (``mvelab diagnose``).
"""

from mvelab.diagnostics.settings import HORIZONS, Settings

__all__ = ["HORIZONS", "Settings"]
