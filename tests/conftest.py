"""Test-wide settings: a persistent XLA compilation cache so identical programs compile once."""

import os
import tempfile

import jax

_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mvelab-test-xla-cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
# The stored-executables layer (mvelab.run.executables) keys on the source, not on the
# program: a test that monkeypatches a function must not get a program stored before.
# Off for the whole suite (and its subprocesses) but for tests/test_executables.py.
os.environ.setdefault("MVELAB_EXECUTABLE_CACHE", "off")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
