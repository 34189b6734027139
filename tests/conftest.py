"""Test-wide settings: a persistent XLA compilation cache so identical programs compile once."""

import os
import tempfile

# LLVM's optimisation of the generated CPU code is about a third of XLA:CPU's compile time,
# and the suite's programs run a few hundred updates: not worth it. The HLO (what
# tests/test_program_copies.py inspects) is the same either way. Set before jax starts its
# backend; subprocesses inherit it. MVELAB_TEST_FULL_OPT=1 keeps XLA's default level (3).
# Separately compiled programs may differ in the last bit at 0: tests that compare them
# bit for bit compile them with compiler_options={"xla_backend_optimization_level": 3}.
if (os.environ.get("MVELAB_TEST_FULL_OPT", "") != "1"
    and "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", "")):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

import jax  # pylint: disable=wrong-import-position

_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mvelab-test-xla-cache"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
# The stored-executables layer (mvelab.run.executables) keys on the source, not on the
# program: a test that monkeypatches a function must not get a program stored before.
# Off for the whole suite (and its subprocesses) but for tests/test_executables.py.
os.environ.setdefault("MVELAB_EXECUTABLE_CACHE", "off")
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
