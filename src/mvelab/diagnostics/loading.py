"""Which checkpoints a diagnostics pass reads, and how one is restored into a training state.

A run directory (``mvelab train --out``) keeps, per seed group, its checkpoints under
``state/seeds_<s1>_<s2>.../checkpoints/ckpt_<step>``; a sweep directory holds run
directories below it. Restoring builds the run's programs from its ``config.json`` and
the state's structure from ``program.start`` (``jax.eval_shape``: nothing is compiled),
then loads one checkpoint with :func:`mvelab.checkpoint.restore_path`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

from mvelab.errors import ConfigError

_EVERY = re.compile(r"^every:([1-9][0-9]*)$")


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
  """One stored checkpoint of one seed group of one run."""

  run_dir: str
  seeds: tuple
  chunk: int
  path: str


def parse_selection(text: str) -> tuple:
  """``all`` | ``last`` | ``every:K`` -> ``(kind, K)``; ConfigError otherwise."""
  if text in ("all", "last"):
    return text, 1
  m = _EVERY.match(text or "")
  if not m:
    raise ConfigError(f"checkpoints: must be all, last or every:K with K a positive "
                      f"integer, got {text!r}")
  return "every", int(m.group(1))


def find_runs(root: str) -> list:
  """Run directories at or below ``root`` that hold at least one checkpoint."""
  from mvelab import runner
  from mvelab.experiments import results
  if runner.has_checkpoint(root):
    return [os.path.normpath(root)]
  return [r for r in results.find_runs(root) if runner.has_checkpoint(r)]


def checkpoints(run_dir: str, selection: tuple) -> list:
  """The selected :class:`CheckpointRef` of every seed group of ``run_dir``, oldest first.

  ``every:K`` keeps every K-th checkpoint counted from the last one (so the last is always
  included).
  """
  from mvelab import checkpoint, runner
  meta = runner.load_run(run_dir)
  kind, every = selection
  out = []
  for group in meta["groups"]:
    found = checkpoint.list_checkpoints(runner.group_state_dir(run_dir, group))
    if kind == "last":
      found = found[-1:]
    elif kind == "every":
      found = found[::-1][::every][::-1]
    out += [CheckpointRef(run_dir, tuple(group), step, path) for step, path in found]
  return out


#: Config fields that change neither the structure of a training state nor anything the
#: diagnostics compute, set to one value so that runs differing only in them (the
#: horizons of a sweep) share one ``Programs`` and hence one compiled diagnostics pass.
FREE_FIELDS = dict(expansion="none", horizon=0, ce_values="control_variate", tdk=False,
                   particles=1, total_steps=None, seed=0, num_seeds=1)


def programs(run_dir: str):
  """The ``Programs`` that restore and diagnose the run (from its config.json)."""
  from mvelab import runner
  cfg = runner.load_run(run_dir)["config"]
  model = cfg.model if cfg.model == "learned" else None  # the oracle needs no state
  return _programs(dataclasses.replace(cfg, model=model, **FREE_FIELDS))


def run_config(run_dir: str):
  """The run's own (resolved) config, as stored in its config.json."""
  from mvelab import runner
  return runner.load_run(run_dir)["config"]


@functools.lru_cache(maxsize=16)
def _programs(cfg):
  from mvelab import program
  return program.make_programs(cfg)


def restore(ref: CheckpointRef):
  """``(programs, states)``: the checkpoint's training state, leaves ``[len(seeds), ...]``."""
  import jax
  import jax.numpy as jnp
  from mvelab import checkpoint, program
  p = programs(ref.run_dir)
  keys = jnp.stack([jax.random.PRNGKey(s) for s in ref.seeds])
  shape = jax.eval_shape(jax.vmap(lambda k: program.start(p, k)), keys)[0]
  _, state, _ = checkpoint.restore_path(ref.path, shape)
  return p, state
