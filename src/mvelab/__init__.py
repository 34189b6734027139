"""mvelab: model-based value expansion with learned and oracle dynamics, in JAX."""

__version__ = "0.1.0"

from mvelab.errors import ConfigError  # noqa: E402

__all__ = ["ConfigError", "__version__"]
