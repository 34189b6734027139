"""Small file helpers shared by the run directory, checkpoint and sweep writers."""

from __future__ import annotations

import os


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` via a fsynced temporary file and ``os.replace``.

  Readers see the old file or the complete new one, never a half-written file.
  """
  _atomic(path, text, "w")


def atomic_write_bytes(path: str, data: bytes) -> None:
  """:func:`atomic_write` for bytes."""
  _atomic(path, data, "wb")


def _atomic(path: str, data, mode: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, mode) as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
