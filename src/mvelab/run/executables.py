"""Compiled seed-group programs kept across processes: an identical run skips tracing.

XLA's persistent cache (:mod:`mvelab.compile_cache`) saves the compile but not the
tracing and lowering that compute its key (1–2 s per program on a 2-core CPU). This layer
stores a seed group's compiled ``start`` and ``train_chunk``
(``jax.experimental.serialize_executable``) with the state's structure, under a key of
everything that determines them without tracing:

* the resolved config (every field) and the group size;
* the source of the ``mvelab`` package (a digest of every ``.py`` file);
* the versions of Python and the libraries recorded in every run directory
  (``rundir.versions``: mvelab, jax, jaxlib, flax, optax, brax, mujoco, numpy);
* the devices (platform, kind, count), the CPU model and flags, the JAX settings that
  change programs (matmul precision, x64, PRNG implementation) and ``XLA_FLAGS``.

What the key cannot see (an installed dependency edited in place without a version
change, a function monkeypatched in-process) can make a stored program stale, so the
layer is on only where the CLI turns it on (``compile_cache.enable``), off with
``mvelab --no-compile-cache`` or ``MVELAB_EXECUTABLE_CACHE=off``; library calls
(``mvelab.train``) in a process that never ran the CLI do not use it. Entries live in
``<compile cache>/executables/``, written under a temporary name then renamed; an entry
that fails to load is ignored (and the programs are compiled as usual).

Only freshly compiled programs are stored: on CPU (jaxlib 0.10) an executable that XLA's
cache loaded serializes without its kernels and fails when called ("Function ... not
found"), so a compile that hit XLA's cache (counted through ``jax.monitoring``) stores
nothing, and the next identical run loads from XLA's cache as before.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import platform
import sys
from typing import Any, Optional

ENV_VAR = "MVELAB_EXECUTABLE_CACHE"
SUBDIR = "executables"


_XLA_HITS = [0]


def _count_hits(event: str, **kwargs) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _XLA_HITS[0] += 1


@functools.lru_cache(maxsize=1)
def _listening() -> bool:
  import jax.monitoring
  jax.monitoring.register_event_listener(_count_hits)
  return True


def xla_cache_hits() -> int:
  """Programs loaded from XLA's persistent cache in this process so far."""
  _listening()
  return _XLA_HITS[0]


def directory() -> Optional[str]:
  """Where entries are kept, or None when the layer is off."""
  from mvelab import compile_cache
  root = compile_cache.location()
  if os.environ.get(ENV_VAR) != "on" or root is None:
    return None
  return os.path.join(root, SUBDIR)


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the mvelab package
  h = hashlib.sha256()
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(f for f in filenames if f.endswith(".py")):
      path = os.path.join(dirpath, name)
      h.update(os.path.relpath(path, root).encode())
      with open(path, "rb") as f:
        h.update(hashlib.sha256(f.read()).digest())
  return h.hexdigest()


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      lines = [l for l in f if l.startswith(("model name", "flags", "Features"))]
    return "".join(sorted(set(lines)))
  except OSError:
    return platform.processor() or platform.machine()


def _environment() -> dict:
  import jax
  from mvelab.run.rundir import versions
  devices = jax.devices()
  return dict(versions=versions(), python=sys.version, platform=devices[0].platform,
              device_kind=devices[0].device_kind, devices=len(devices), cpu=_cpu(),
              matmul=str(jax.config.jax_default_matmul_precision),
              x64=bool(jax.config.jax_enable_x64),
              prng=str(jax.config.jax_default_prng_impl),
              xla_flags=os.environ.get("XLA_FLAGS", ""))


def key(cfg, group_size: int) -> str:
  """The entry name of ``cfg``'s programs for a group of ``group_size`` seeds."""
  blob = json.dumps(dict(config=cfg.to_dict(), group_size=group_size,
                         source=_source_digest(), env=_environment()),
                    sort_keys=True, default=str)
  return hashlib.sha256(blob.encode()).hexdigest()


def load(cfg, group_size: int) -> Optional[tuple]:
  """``(start, chunk, state_shape)`` stored for ``cfg``, or None (off, missing, or
  unreadable)."""
  root = directory()
  if root is None:
    return None
  path = os.path.join(root, key(cfg, group_size) + ".pkl")
  try:
    with open(path, "rb") as f:
      start, chunk, state_shape = pickle.load(f)
    return _load(start), _load(chunk), state_shape
  except FileNotFoundError:
    return None
  except Exception as e:  # a damaged or foreign entry: compile instead
    print(f"warning: ignoring the stored programs {path!r}: {type(e).__name__}: {e}",
          file=sys.stderr)
    return None


def store(cfg, group_size: int, start: Any, chunk: Any, state_shape: Any,
          fresh: bool = True) -> None:
  """Keeps the compiled ``start`` and ``chunk`` of ``cfg`` (a no-op when off, or when not
  ``fresh``: one of them came from XLA's cache, see the module docstring). Failing to
  write only costs the next run its compile."""
  root = directory()
  if root is None or not fresh:
    return
  from jax.experimental import serialize_executable
  from mvelab.fileio import atomic_write_bytes
  try:
    blob = pickle.dumps((serialize_executable.serialize(start),
                         serialize_executable.serialize(chunk), state_shape))
    os.makedirs(root, exist_ok=True)
    atomic_write_bytes(os.path.join(root, key(cfg, group_size) + ".pkl"), blob)
  except Exception as e:
    print(f"warning: compiled programs not stored: {type(e).__name__}: {e}",
          file=sys.stderr)


def _load(serialized: tuple):
  from jax.experimental import serialize_executable
  return serialize_executable.deserialize_and_load(*serialized)
