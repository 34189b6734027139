"""The host loop over chunks: one compiled, vmapped program per seed group.

``run_seeds`` compiles the group's program, optionally restores its checkpoint, then
steps it one evaluation at a time and reports each step through ``emit(kind, payload)``.
Seed ``s`` always uses the key ``PRNGKey(s)``, so its random streams do not depend on
how seeds are grouped.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from mvelab import config as config_lib
from mvelab.config import Config
from mvelab.run import executables, signals
from mvelab.run.rundir import VECTOR_METRICS, group_state_dir


def compile_chunk(programs, state_shape):
  """The compiled ``train_chunk`` of a group of seeds (vmapped, state donated)."""
  import jax
  from mvelab import program as T
  return jax.jit(jax.vmap(lambda s: T.train_chunk(programs, s)),
                 donate_argnums=0).lower(state_shape).compile()


class GroupRun:
  """One compiled, vmapped program for a group of seeds, stepped one evaluation at a time.

  ``state`` is the full device state of all seeds in the group (a ``TrainState`` with a
  leading ``[len(seeds)]`` axis); tests may edit it between chunks.
  """

  def __init__(self, cfg: Config, seeds: list):
    import jax
    import jax.numpy as jnp
    from mvelab import program as T
    self.cfg, self.seeds = cfg, list(seeds)
    self.programs = T.make_programs(cfg)
    self.keys = jnp.stack([jax.random.PRNGKey(s) for s in self.seeds])
    t0 = time.perf_counter()
    stored = executables.load(cfg, len(self.seeds))
    #: "stored" (loaded by :mod:`mvelab.run.executables`) or "compiled".
    self.programs_from = "stored" if stored is not None else "compiled"
    if stored is not None:  # an identical run compiled them before: no tracing
      self._start, self._chunk, self.state_shape = stored
    else:
      hits = executables.xla_cache_hits()
      start_fn = jax.vmap(lambda k: T.start(self.programs, k))
      self._start = jax.jit(start_fn).lower(self.keys).compile()
      self.state_shape = jax.eval_shape(start_fn, self.keys)[0]
      self._chunk = compile_chunk(self.programs, self.state_shape)
      executables.store(cfg, len(self.seeds), self._start, self._chunk, self.state_shape,
                        fresh=executables.xla_cache_hits() == hits)
    self.compile_time_s = time.perf_counter() - t0
    self.state = None
    self.chunks_done = 0
    self.t_start = None
    self.wall_offset = 0.0  # training seconds before a resumed checkpoint

  @property
  def total_chunks(self) -> int:
    return config_lib.num_chunks(self.cfg)

  @property
  def finished(self) -> bool:
    return self.chunks_done >= self.total_chunks

  def step(self) -> list:
    """Runs the start (first call) or the next chunk; returns its metric rows."""
    if self.t_start is None:
      self.t_start = time.perf_counter()
    if self.state is None:
      self.state, metrics = self._start(self.keys)
    else:
      self.state, metrics = self._chunk(self.state)
      self.chunks_done += 1
    return _rows(self.seeds, metrics, self.wall_time_s())

  def wall_time_s(self) -> float:
    """Training wall time so far, counting the time before a resumed checkpoint."""
    now = 0.0 if self.t_start is None else time.perf_counter() - self.t_start
    return self.wall_offset + now

  def params(self) -> dict:
    import jax
    out = {}
    for i, s in enumerate(self.seeds):
      out[s] = jax.tree.map(lambda x: np.asarray(x[i]), {
          "actor": self.state.actor_params, "critic": self.state.critic_params,
          "obs_stats": self.state.obs_stats})
    return out

  # -- checkpoints ----------------------------------------------------------------------
  def ckpt_dir(self, run_dir: str) -> str:
    return group_state_dir(run_dir, self.seeds)

  def save(self, run_dir: str, keep: int) -> None:
    from mvelab import checkpoint
    checkpoint.save(self.ckpt_dir(run_dir), self.chunks_done, self.state,
                    extra={"chunks_done": self.chunks_done, "seeds": self.seeds,
                           "wall_time_s": self.wall_time_s()},
                    keep=keep)

  def restore(self, run_dir: str, warn, max_chunks: Optional[int] = None) -> Optional[int]:
    """Loads the newest valid checkpoint (of at most ``max_chunks`` chunks); returns the
    env steps it reached (or None)."""
    from mvelab import checkpoint
    found = checkpoint.restore(self.ckpt_dir(run_dir), self.state_shape, warn=warn,
                               max_step=max_chunks)
    if found is None:
      return None
    _, self.state, extra = found
    self.chunks_done = int(extra["chunks_done"])
    self.wall_offset = float(extra.get("wall_time_s", 0.0))
    return int(np.asarray(self.state.env_steps)[0])


def run_seeds(cfg: Config, seeds: list, emit: Callable[[str, Any], None],
              run_dir: Optional[str] = None, checkpoint_every: int = 0, keep: int = 3,
              resume: bool = False, resume_max_chunks: Optional[int] = None,
              stop_on_divergence: bool = False, diagnose: Optional[tuple] = None) -> None:
  """Trains ``seeds`` (vmapped) in this process; reports through ``emit(kind, payload)``.

  Kinds: ``compiled`` (seconds), ``resumed`` ({seed: env_steps} or None), ``rows`` (list
  of metric dicts), ``params`` (dict), ``diverged`` (rows of seeds that diverged; only
  with ``stop_on_divergence``, after which the group stops). With ``resume`` the group
  continues from its newest checkpoint of at most ``resume_max_chunks`` chunks. A signal
  (:mod:`mvelab.run.signals`) stops the loop between chunks, or after the checkpoint
  being written. ``diagnose = (every, settings)`` appends the value-target diagnostics of
  the live state to ``run_dir/diagnostics.csv`` every ``every`` evaluations.
  """
  group = GroupRun(cfg, seeds)
  emit("compiled", group.compile_time_s)
  if resume:
    reached = group.restore(run_dir, warn=lambda m: print(f"warning: {m}", file=sys.stderr),
                            max_chunks=resume_max_chunks)
    emit("resumed", None if reached is None else {s: reached for s in seeds})
  while not group.finished:
    signals.raise_if_requested()  # a signal that some callee swallowed
    rows = group.step()
    emit("rows", rows)
    if diagnose and group.chunks_done % diagnose[0] == 0:
      from mvelab.diagnostics import diagnose as diagnose_lib
      diagnose_lib.diagnose_live(group.programs, group.state, seeds, diagnose[1], run_dir)
    bad = [r for r in rows if r["diverged"]]
    stopping = stop_on_divergence and bool(bad)
    if run_dir and checkpoint_every and (
        group.finished or stopping or group.chunks_done % checkpoint_every == 0):
      with signals.deferred():
        group.save(run_dir, keep)
    if stopping:
      emit("diverged", bad)
      return
  emit("params", group.params())


def _rows(seeds, metrics, wall):
  m = {k: np.asarray(v) for k, v in metrics.items()}
  rows = []
  for i, s in enumerate(seeds):
    row = {k: m[k][i].item() for k in m if k not in VECTOR_METRICS}
    for k, prefix in VECTOR_METRICS.items():
      if k in m:  # [seeds, n] -> columns prefix0 .. prefix{n-1}
        row.update({f"{prefix}{j}": v.item() for j, v in enumerate(m[k][i])})
    row["seed"] = s
    row["env_steps"] = int(row["env_steps"])
    row["updates"] = int(row["updates"])
    row["diverged"] = bool(row["diverged"])
    row["diverged_step"] = int(row["diverged_step"])
    row["diverged_what"] = _divergence_name(int(row["diverged_what"]))
    row["wall_time_s"] = round(wall, 3)
    rows.append(row)
  return rows


def _divergence_name(code: int) -> str:
  from mvelab.program import DIVERGENCE_CODES
  return DIVERGENCE_CODES[code] if code else ""
