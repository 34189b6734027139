"""The persistent XLA compilation cache that every ``mvelab`` entry point uses.

A compiled program is stored on disk under a key of its HLO, compile options, jax/jaxlib
version and device, so the second run of an identical config loads its programs instead
of compiling them. Location, first match wins:

1. ``$MVELAB_CACHE_DIR``;
2. ``$JAX_COMPILATION_CACHE_DIR`` (an existing JAX setting is respected);
3. ``$XDG_CACHE_HOME/mvelab/xla``, by default ``~/.cache/mvelab/xla``.

``mvelab --no-compile-cache <command> ...`` (or ``MVELAB_CACHE_DIR=off``) turns it off.
Above it, :mod:`mvelab.run.executables` keeps whole compiled seed-group programs so that
an identical run skips tracing too; ``enable`` turns that on with the cache (unless
``MVELAB_EXECUTABLE_CACHE=off``).
The settings are exported as JAX environment variables, so worker processes (local, Ray)
inherit them; jobs that run elsewhere get them passed explicitly (``job_env``).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

ENV_VAR = "MVELAB_CACHE_DIR"
OFF = "off"
#: Programs that compile faster than this are not worth a disk entry.
MIN_COMPILE_TIME_S = 0.5


def default_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "mvelab", "xla")


def location() -> Optional[str]:
  """The cache directory in use, or None when the cache is off."""
  value = os.environ.get(ENV_VAR) or os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if value == OFF:
    return None
  return value or default_dir()


def job_env(path: Optional[str]) -> dict:
  """JAX environment variables that give a process the cache at ``path`` (None: off),
  and the stored-executables layer with it (unless it is off in this process)."""
  from mvelab.run.executables import ENV_VAR as EXECUTABLES
  if path is None:
    return {"JAX_ENABLE_COMPILATION_CACHE": "false", ENV_VAR: OFF, EXECUTABLES: OFF}
  return {"JAX_ENABLE_COMPILATION_CACHE": "true", "JAX_COMPILATION_CACHE_DIR": path,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(MIN_COMPILE_TIME_S),
          "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", ENV_VAR: path,
          EXECUTABLES: OFF if os.environ.get(EXECUTABLES) == OFF else "on"}


def enable(path: Optional[str] = None, on: bool = True) -> Optional[str]:
  """Turns the cache on at ``path`` (default: ``location()``) or off; returns the path.

  Sets the JAX environment variables (for worker processes) and, if jax is imported
  already, its config.
  """
  path = (path or location()) if on else None
  if path is not None:
    try:
      os.makedirs(path, exist_ok=True)
    except OSError as e:  # the cache only saves time: run without it
      print(f"warning: compile cache off: cannot create {path!r}: {e.strerror}",
            file=sys.stderr)
      path = None
  os.environ.update(job_env(path))
  if "jax" in sys.modules:
    import jax
    jax.config.update("jax_enable_compilation_cache", path is not None)
    if path is not None:
      jax.config.update("jax_compilation_cache_dir", path)
      jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
      jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
