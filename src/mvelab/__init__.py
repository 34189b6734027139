"""mvelab: model-based value expansion with learned and oracle dynamics, in JAX.

``mvelab.train(config, ...)`` runs SAC (and its value-expansion variants) for several
seeds; ``mvelab.Config`` describes a run. The jitted training program itself lives in
``mvelab.program``.
"""

__version__ = "0.1.0"

from mvelab.config import Config  # noqa: E402
from mvelab.errors import ConfigError  # noqa: E402
from mvelab.runner import RunResult, train  # noqa: E402

__all__ = ["Config", "ConfigError", "RunResult", "train", "__version__"]
