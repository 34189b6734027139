"""Errors that reach the user as one clear message (exit code 2 from the CLI)."""


class ConfigError(ValueError):
  """Bad user input: an unknown name, an out-of-range value, a wrong shape.

  The message names the option, the value given and what is allowed. The CLI prints it
  without a traceback and exits with code 2; Python callers get it as a ``ValueError``.
  """


def check_choice(option: str, value, allowed) -> None:
  """Raises ConfigError unless ``value`` is one of ``allowed``."""
  allowed = list(allowed)
  if value not in allowed:
    raise ConfigError(
        f"{option}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}")


def check_positive(option: str, value) -> None:
  """Raises ConfigError unless ``value`` is a positive integer."""
  if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
    raise ConfigError(f"{option}: must be a positive integer, got {value!r}")
