"""Argument parsing shared by the experiment commands: one ``mvelab: error:`` line, code 2."""

from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
  """A bad command-line argument (raised instead of argparse's exit)."""


class Parser(argparse.ArgumentParser):
  """An ``ArgumentParser`` whose errors raise :class:`UsageError` instead of exiting."""

  def error(self, message):
    raise UsageError(message)


def fail(msg: str) -> int:
  """Prints ``mvelab: error: msg`` to stderr and returns the bad-input exit code 2."""
  print(f"mvelab: error: {msg}", file=sys.stderr)
  return 2
