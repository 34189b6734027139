"""Exact, atomic checkpoints of a training state pytree (host-side, no pickle).

Layout under a run directory::

    <directory>/checkpoints/
        ckpt_000000010000/
            state.msgpack   every leaf, keyed by its pytree path (flax msgpack encoding)
            meta.json       format version, step, ``extra``, SHA-256 and size of each data
                            file, and the path/shape/dtype of every leaf
        ckpt_000000020000/
        ...

Atomicity: a checkpoint is written into a hidden temporary sibling directory
(``.tmp-ckpt_<step>-<pid>-...``), every file is fsynced, then the directory is renamed to
``ckpt_<step:012d>`` and the parent directory fsynced. A process killed at any moment
(SIGKILL included) therefore leaves either the complete checkpoint or none; a leftover
temporary directory is never listed and is removed by a later ``save``.

Exactness: leaves are stored as their raw bytes with their dtype name and shape, so a
restore is bit-identical (NaN payloads included). Typed PRNG keys (``jax.random.key``)
are stored as their key data plus implementation name; raw ``uint32`` keys are ordinary
arrays.

``restore`` matches leaves to the target by pytree path (``jax.tree_util.keystr``), so a
structure change (a renamed field, a new optimiser, another network width) is detected
and reported by path rather than silently mis-assigned.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from typing import Any, Callable, Optional

import jax
import numpy as np
from flax import serialization

__all__ = ["CheckpointError", "save", "restore", "restore_path", "latest", "list_checkpoints",
           "size_bytes", "checkpoint_dir"]

FORMAT = "mvelab-checkpoint"
VERSION = 1
DATA_FILE = "state.msgpack"
META_FILE = "meta.json"
SUBDIR = "checkpoints"
_NAME_RE = re.compile(r"^ckpt_(\d{12})$")
_TMP_PREFIX = ".tmp-ckpt_"
_DEL_PREFIX = ".del-ckpt_"
_STALE_RE = re.compile(r"^\.(?:tmp|del)-ckpt_\d+-(\d+)-")


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or no stored checkpoint could be restored."""


# ----------------------------------------------------------------------------- listing
def checkpoint_dir(directory: str) -> str:
  """The folder holding the checkpoints of run directory ``directory``."""
  return os.path.join(directory, SUBDIR)


def _path(directory: str, step: int) -> str:
  return os.path.join(checkpoint_dir(directory), f"ckpt_{step:012d}")


def list_checkpoints(directory: str) -> list:
  """``[(step, path), ...]`` of the checkpoints of run ``directory``, oldest first.

  Lists completed (renamed-into-place) checkpoints by name only; ``restore`` validates
  their contents. Temporary directories of interrupted saves are never listed.
  """
  root = checkpoint_dir(directory)
  try:
    names = os.listdir(root)
  except (FileNotFoundError, NotADirectoryError):
    return []
  out = []
  for name in names:
    m = _NAME_RE.match(name)
    if m and os.path.isdir(os.path.join(root, name)):
      out.append((int(m.group(1)), os.path.join(root, name)))
  return sorted(out)


def latest(directory: str) -> Optional[tuple]:
  """``(step, path)`` of the newest checkpoint of run ``directory``, or None."""
  ckpts = list_checkpoints(directory)
  return ckpts[-1] if ckpts else None


def size_bytes(path: str) -> int:
  """Total size in bytes of the file ``path``, or of all files below directory ``path``."""
  if os.path.isfile(path):
    return os.path.getsize(path)
  total = 0
  for root, _, files in os.walk(path):
    for f in files:
      total += os.path.getsize(os.path.join(root, f))
  return total


# ------------------------------------------------------------------------------ leaves
def _is_key(x) -> bool:
  dtype = getattr(x, "dtype", None)
  return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _flatten(tree) -> tuple:
  """``(paths, leaves, treedef)`` with unique ``keystr`` paths."""
  with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
  paths = [jax.tree_util.keystr(p) for p, _ in with_path]
  if len(set(paths)) != len(paths):
    dup = sorted({p for p in paths if paths.count(p) > 1})
    raise ValueError(f"checkpoint: pytree has leaves with identical paths: {dup[:5]}")
  return paths, [x for _, x in with_path], treedef


def _spec(x) -> dict:
  """Shape/dtype description of a leaf (array, ShapeDtypeStruct or scalar)."""
  if _is_key(x):
    return {"shape": list(x.shape), "dtype": str(x.dtype),
            "key_impl": str(jax.random.key_impl(x)) if not isinstance(
                x, jax.ShapeDtypeStruct) else None}
  if isinstance(x, jax.ShapeDtypeStruct) or hasattr(x, "dtype") and hasattr(x, "shape"):
    return {"shape": list(x.shape), "dtype": np.dtype(x.dtype).name}
  a = np.asarray(x)
  return {"shape": list(a.shape), "dtype": a.dtype.name}


def _to_host(leaves: list) -> list:
  """Host numpy copies of ``leaves``; typed keys become their uint32 key data."""
  leaves = [jax.random.key_data(x) if _is_key(x) else x for x in leaves]
  out = []
  for x in jax.device_get(leaves):
    a = np.asarray(x)
    if a.dtype.hasobject:
      raise TypeError(f"checkpoint: cannot store a leaf of dtype object: {x!r:.80}")
    out.append(a)
  return out


# --------------------------------------------------------------------------------- save
def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _write(path: str, data: bytes) -> None:
  with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _remove_dir(path: str) -> None:
  """Removes a checkpoint-like directory so that no half-deleted ``ckpt_*`` is ever seen."""
  root, name = os.path.split(path)
  trash = os.path.join(root, f"{_DEL_PREFIX}{name[5:]}-{os.getpid()}-{time.time_ns()}")
  try:
    os.rename(path, trash)
  except FileNotFoundError:
    return
  shutil.rmtree(trash, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
  if pid == os.getpid():
    return False  # our own leftovers are never in use outside a running save
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_stale(root: str) -> None:
  """Removes temporary directories left by saves that were killed mid-write."""
  for name in os.listdir(root):
    m = _STALE_RE.match(name)
    if m and not _pid_alive(int(m.group(1))):
      shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def save(directory: str, step: int, state: Any, extra: Optional[dict] = None,
         keep: Optional[int] = 3) -> str:
  """Writes ``state`` as checkpoint ``step`` of run ``directory``; returns its path.

  The checkpoint appears atomically as ``directory/checkpoints/ckpt_<step:012d>`` (an
  existing checkpoint of the same step is replaced). Afterwards, of the checkpoints with
  steps up to ``step``, only the ``keep`` newest are kept (so this one always is);
  ``keep=None`` keeps all.

  Args:
    directory: the run directory (created if missing).
    step: a non-negative integer, e.g. the environment step count.
    state: any pytree of arrays (jax or numpy), typed PRNG keys or scalars.
    extra: JSON-serialisable dict stored in ``meta.json`` and returned by ``restore``.
    keep: number of newest checkpoints to keep (>= 1) or None.

  Raises:
    CheckpointError: an OS error (unwritable directory, full disk, ...) while writing;
      previous checkpoints are untouched and no partial ``ckpt_*`` is left behind.
    ValueError / TypeError: a bad ``step``, ``keep`` or ``extra``.
  """
  if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
    raise ValueError(f"checkpoint: step must be a non-negative integer, got {step!r}")
  step = int(step)
  if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
    raise ValueError(f"checkpoint: keep must be a positive integer or None, got {keep!r}")
  extra = {} if extra is None else extra
  try:
    extra_json = json.loads(json.dumps(extra, allow_nan=False))
  except (TypeError, ValueError) as e:
    raise TypeError(f"checkpoint: extra must be JSON-serialisable: {e}") from e

  # Serialise in memory first: a bad leaf fails before anything touches the disk.
  paths, leaves, treedef = _flatten(state)
  specs = [_spec(x) for x in leaves]
  arrays = _to_host(leaves)
  data = serialization.msgpack_serialize(dict(zip(paths, arrays)))
  meta = {
      "format": FORMAT, "version": VERSION, "step": step, "time": time.time(),
      "extra": extra_json,
      "files": {DATA_FILE: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}},
      "leaves": {p: s for p, s in zip(paths, specs)},
      "treedef": str(treedef),
  }
  meta_bytes = json.dumps(meta, indent=1).encode()

  final = _path(directory, step)
  root = os.path.dirname(final)
  tmp = None
  try:
    if not os.path.isdir(root):
      os.makedirs(root, exist_ok=True)
      _fsync_dir(os.path.dirname(os.path.abspath(root)))
    _remove_stale(root)
    tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{step}-{os.getpid()}-", dir=root)
    _write(os.path.join(tmp, DATA_FILE), data)
    _write(os.path.join(tmp, META_FILE), meta_bytes)
    _fsync_dir(tmp)
    replaced = None
    if os.path.exists(final):  # same step saved again: move the old one aside first
      replaced = os.path.join(root, f"{_DEL_PREFIX}{step:012d}-{os.getpid()}-{time.time_ns()}")
      os.rename(final, replaced)
    try:
      os.rename(tmp, final)
    except OSError:
      if replaced is not None:
        os.rename(replaced, final)
      raise
    tmp = None
    _fsync_dir(root)
    if replaced is not None:
      shutil.rmtree(replaced, ignore_errors=True)
  except OSError as e:
    raise CheckpointError(
        f"cannot write checkpoint {step} to {final!r}: {e.strerror or e} "
        f"(errno {e.errno}); earlier checkpoints are unchanged") from e
  finally:
    if tmp is not None:
      shutil.rmtree(tmp, ignore_errors=True)

  if keep is not None:
    # Checkpoints of later steps (left by an abandoned timeline, e.g. a run resumed from
    # an older checkpoint because newer ones were invalid) are neither counted nor
    # removed here; the run replaces them when it reaches their steps.
    for _, old in [c for c in list_checkpoints(directory) if c[0] <= step][:-keep]:
      try:
        _remove_dir(old)
      except OSError as e:  # the new checkpoint is safe; a failed prune is not fatal
        warnings.warn(f"checkpoint: could not remove old checkpoint {old!r}: {e}",
                      RuntimeWarning, stacklevel=2)
  return final


# ------------------------------------------------------------------------------ restore
class _Invalid(Exception):
  """Reason a stored checkpoint cannot be used."""


def _load(path: str, paths: list, target_leaves: list) -> tuple:
  """Validates checkpoint ``path`` against the target.

  Returns ``(step, arrays, extra, leaf_specs)``; raises ``_Invalid`` with the reason.
  """
  try:
    with open(os.path.join(path, META_FILE), "rb") as f:
      meta = json.loads(f.read())
  except FileNotFoundError:
    raise _Invalid(f"{META_FILE} is missing") from None
  except (OSError, ValueError) as e:
    raise _Invalid(f"{META_FILE} is unreadable: {e}") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise _Invalid(f"{META_FILE} is not an {FORMAT} file")
  if meta.get("version") != VERSION:
    raise _Invalid(f"format version {meta.get('version')!r}, expected {VERSION}")

  # Cheap structure check from the manifest before reading the data.
  stored = meta.get("leaves", {})
  missing = [p for p in paths if p not in stored]
  unexpected = [p for p in stored if p not in set(paths)]
  if missing or unexpected:
    raise _Invalid(
        "tree structure differs from the target: "
        + "; ".join(s for s in (
            f"missing {len(missing)} leaves e.g. {missing[:3]}" if missing else "",
            f"unexpected {len(unexpected)} leaves e.g. {unexpected[:3]}" if unexpected
            else "") if s))
  for p, t in zip(paths, target_leaves):
    want, got = _spec(t), stored[p]
    if list(got.get("shape", [])) != want["shape"] or got.get("dtype") != want["dtype"]:
      raise _Invalid(f"leaf {p}: stored {got.get('dtype')}{list(got.get('shape', []))}, "
                     f"target {want['dtype']}{want['shape']}")

  info = meta.get("files", {}).get(DATA_FILE)
  if not info:
    raise _Invalid(f"{META_FILE} lists no {DATA_FILE}")
  try:
    with open(os.path.join(path, DATA_FILE), "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise _Invalid(f"{DATA_FILE} is missing") from None
  except OSError as e:
    raise _Invalid(f"{DATA_FILE} is unreadable: {e}") from None
  if len(data) != info["bytes"]:
    raise _Invalid(f"{DATA_FILE} is truncated or extended: {len(data)} bytes, "
                   f"expected {info['bytes']}")
  if hashlib.sha256(data).hexdigest() != info["sha256"]:
    raise _Invalid(f"{DATA_FILE} fails its SHA-256 checksum (corrupted)")
  try:
    flat = serialization.msgpack_restore(data)
  except Exception as e:  # noqa: BLE001 - any decoder failure means unusable data
    raise _Invalid(f"{DATA_FILE} cannot be decoded: {e}") from None
  arrays = []
  for p in paths:
    a = flat.get(p) if isinstance(flat, dict) else None
    spec = stored[p]
    expected_dtype = "uint32" if "key_impl" in spec else spec["dtype"]
    if not isinstance(a, np.ndarray) or a.dtype.name != expected_dtype or (
        "key_impl" not in spec and list(a.shape) != spec["shape"]):
      raise _Invalid(f"{DATA_FILE}: leaf {p} disagrees with {META_FILE}")
    arrays.append(a)
  return meta["step"], arrays, meta.get("extra", {}), stored


def _like(target, a: np.ndarray, spec: dict):
  """Stored array ``a`` in the form of the target leaf."""
  if "key_impl" in spec:
    impl = spec["key_impl"]
    return jax.random.wrap_key_data(a, impl=impl) if impl else jax.random.wrap_key_data(a)
  if isinstance(target, jax.ShapeDtypeStruct):
    sharding = getattr(target, "sharding", None)
    return jax.device_put(a, sharding) if sharding is not None else jax.device_put(a)
  if isinstance(target, jax.Array):
    return jax.device_put(a, target.sharding)
  if isinstance(target, np.ndarray):
    return np.array(a)  # writable copy
  if isinstance(target, (bool, int, float, complex)) or np.isscalar(target):
    return a.item() if isinstance(target, (bool, int, float, complex)) else a[()]
  return np.array(a)


def restore_path(path: str, target: Any) -> tuple:
  """Loads ONE checkpoint folder ``path`` (an entry of :func:`list_checkpoints`).

  Validated as in :func:`restore`. Returns ``(step, state, extra)``.

  Raises:
    CheckpointError: the checkpoint is invalid (the message gives the reason).
  """
  paths, target_leaves, treedef = _flatten(target)
  try:
    try:
      step, arrays, extra, specs = _load(path, paths, target_leaves)
    except (KeyError, TypeError, AttributeError) as e:
      raise _Invalid(f"{META_FILE} is malformed ({type(e).__name__}: {e})") from None
  except _Invalid as e:
    raise CheckpointError(f"{path}: {e}") from None
  leaves = [_like(t, a, specs[p]) for p, t, a in zip(paths, target_leaves, arrays)]
  return step, jax.tree_util.tree_unflatten(treedef, leaves), extra


def restore(directory: str, target: Any, warn: Callable[[str], None] = print,
            max_step: Optional[int] = None) -> Optional[tuple]:
  """Loads the newest valid checkpoint of run ``directory`` in the structure of ``target``.

  A checkpoint is valid when its ``meta.json`` parses, its data file is complete and
  matches its SHA-256, and its leaves match ``target`` path by path in shape and dtype.
  Invalid checkpoints are skipped newest-first, each with ``warn(message)`` naming the
  checkpoint and the reason.

  Args:
    directory: the run directory given to ``save``.
    target: a pytree of arrays or ``jax.ShapeDtypeStruct`` with the structure to load
      into; jax leaves come back as jax arrays (on the target leaf's sharding), numpy
      leaves as numpy arrays.
    warn: called with one message per skipped checkpoint.
    max_step: consider only checkpoints with ``step <= max_step`` (None: all).

  Returns:
    ``(step, state, extra)``, or None when the run has no checkpoint at all.

  Raises:
    CheckpointError: checkpoints exist but none is valid (the message lists each reason),
      so that a structure change is never silently "resumed" from scratch.
  """
  ckpts = [(s, p) for s, p in list_checkpoints(directory)
           if max_step is None or s <= max_step]
  if not ckpts:
    return None
  reasons = []
  for _, path in reversed(ckpts):
    try:
      return restore_path(path, target)
    except CheckpointError as e:
      reasons.append(str(e))
      warn(f"checkpoint: skipping {e}")
  raise CheckpointError(
      f"no valid checkpoint in {checkpoint_dir(directory)!r} ({len(ckpts)} found, all "
      "rejected):\n  " + "\n  ".join(reasons))
