"""SIGINT and SIGTERM turned into an orderly stop, in the parent and in every worker.

``handled()`` installs handlers that raise :class:`Interrupted` (a ``KeyboardInterrupt``
carrying the signal number) in the main thread, so ``finally`` blocks stop the worker
processes and the run directory is left consistent. Inside ``deferred()`` (a checkpoint
being written) a signal only sets a flag; the stop happens when the block ends.
``stop_requested()`` lets a loop notice a signal that some callee swallowed.

The handler state is per process (signals are): one flag, one deferral depth.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
  """A run or sweep stopped by a signal; ``signum`` says which."""

  def __init__(self, signum: int = signal.SIGINT):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum


class _State:
  signum: Optional[int] = None
  deferring: int = 0


_STATE = _State()
_FLAG = threading.Event()


def exit_code(e: BaseException) -> int:
  """The shell's exit code for a stop: 128 + the signal number (130 for Ctrl-C)."""
  return 128 + getattr(e, "signum", signal.SIGINT)


def stop_requested() -> bool:
  return _FLAG.is_set()


def raise_if_requested() -> None:
  """Raises :class:`Interrupted` if a signal arrived (outside ``deferred()``)."""
  if _FLAG.is_set() and not _STATE.deferring:
    raise Interrupted(_STATE.signum or signal.SIGINT)


def _on_signal(signum, frame):
  if _FLAG.is_set():  # already stopping: let the clean-up finish
    return
  _STATE.signum = signum
  _FLAG.set()
  if not _STATE.deferring:
    raise Interrupted(signum)


@contextlib.contextmanager
def handled():
  """SIGINT and SIGTERM raise :class:`Interrupted` in this block (main thread only)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _FLAG.clear()
  _STATE.signum, _STATE.deferring = None, 0
  previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


@contextlib.contextmanager
def deferred():
  """A signal arriving in this block (e.g. a checkpoint write) stops the run after it."""
  _STATE.deferring += 1
  try:
    yield
  finally:
    _STATE.deferring -= 1
  raise_if_requested()


def die_with_parent() -> None:
  """Asks Linux to send this process SIGTERM when its parent dies (even by SIGKILL)."""
  if not sys.platform.startswith("linux"):
    return
  try:
    import ctypes
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
  except (OSError, AttributeError):
    pass
