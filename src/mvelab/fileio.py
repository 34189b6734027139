"""Small file helpers shared by the run directory, checkpoint and sweep writers."""

from __future__ import annotations

import os


def atomic_write(path: str, text: str) -> None:
  """Writes ``text`` to ``path`` via a fsynced temporary file and ``os.replace``.

  Readers see the old file or the complete new one, never a half-written file.
  """
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
