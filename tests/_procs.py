"""Process helpers for the tests that check that no child process survives (Linux /proc)."""

import os
import time


def alive(pid: int) -> bool:
  """True while ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


def descendants(pid: int) -> set:
  """Every live process below ``pid``."""
  parent = {}
  for d in os.listdir("/proc"):
    if d.isdigit():
      try:
        with open(f"/proc/{d}/stat") as f:
          parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
      except (OSError, IndexError, ValueError):
        pass
  out, todo = set(), [pid]
  while todo:
    p = todo.pop()
    kids = {c for c, pp in parent.items() if pp == p}
    out |= kids
    todo.extend(kids)
  return out


def pid_from(path: str, timeout: float = 60.0) -> int:
  """The pid a job writes to ``path``, once it has (waits up to ``timeout`` seconds)."""
  deadline = time.time() + timeout
  while not os.path.exists(path) and time.time() < deadline:
    time.sleep(0.1)
  return int(open(path).read())


def gone(pid: int, timeout: float = 60.0) -> bool:
  """Waits up to ``timeout`` seconds for ``pid`` to end; True if it did."""
  deadline = time.time() + timeout
  while alive(pid) and time.time() < deadline:
    time.sleep(0.2)
  return not alive(pid)
