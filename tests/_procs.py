"""Process helpers for the tests that check that no child process survives (Linux /proc)."""

import os


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
