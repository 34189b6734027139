"""Host side of a run: compile, loop over evaluations, write the run directory.

``train(config, seeds=..., out_dir=...)`` is the Python API behind ``mvelab train``.
Seeds are vmapped inside one compiled program per worker process; with ``workers > 1``
the seeds are split over processes pinned to separate cores. Seed ``s`` always uses the
key ``PRNGKey(s)``, so its random streams do not depend on how seeds are grouped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import numpy as np

from mvelab import config as config_lib
from mvelab.config import Config
from mvelab.errors import ConfigError
from mvelab.fileio import atomic_write

CSV_COLUMNS = ("seed", "env_steps", "updates", "eval_return", "eval_return_std",
               "critic_loss", "actor_loss", "alpha", "entropy", "q_mean", "target_mean",
               "model_loss", "model_obs_mse", "model_reward_mse", "model_use",
               "steve_mean_horizon", "dyna_rollout_length", "model_buffer_fill",
               "dyna_real_fraction", "diverged",
               "diverged_step", "diverged_what", "wall_time_s")
#: Subdirectory of a run directory with the checkpoints (one folder per seed group).
STATE_DIR = "state"
#: Columns that legitimately differ between two runs of the same config and seeds.
TIMING_COLUMNS = ("wall_time_s",)


@dataclasses.dataclass
class RunResult:
  """What ``train`` returns.

  Attributes:
    config: the resolved config.
    seeds: the seeds trained.
    rows: one dict per seed per evaluation (the rows of metrics.csv).
    params: per-seed final parameters ``{seed: {"actor": ..., "critic": ...}}`` (numpy).
    compile_time_s: seconds spent compiling (per worker, summed).
    train_time_s: wall-clock seconds of the run after compilation (max over workers).
    interrupted: True if the run was stopped by Ctrl-C.
  """

  config: Config
  seeds: list
  rows: list
  params: dict
  compile_time_s: float
  train_time_s: float
  interrupted: bool = False

  def dataframe(self):
    import pandas as pd
    return pd.DataFrame(self.rows, columns=list(CSV_COLUMNS))

  def final_returns(self) -> dict:
    last = {}
    for r in self.rows:
      last[r["seed"]] = r["eval_return"]
    return last


def versions() -> dict:
  """Package and library versions recorded in every run directory."""
  import importlib.metadata as md
  out = {"python": platform.python_version(), "platform": platform.platform()}
  for name in ("mvelab", "jax", "jaxlib", "flax", "optax", "brax", "mujoco", "numpy"):
    try:
      out[name] = md.version(name)
    except md.PackageNotFoundError:
      out[name] = None
  return out


def prepare_run_dir(out_dir: str, overwrite: bool) -> None:
  """Creates ``out_dir``; refuses a non-empty one unless ``overwrite``."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise ConfigError(f"out: {out_dir!r} exists and is not a directory")
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    if not overwrite:
      raise ConfigError(
          f"out: run directory {out_dir!r} is not empty; choose another --out or pass "
          f"--overwrite to replace it")
    shutil.rmtree(out_dir)
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise ConfigError(f"out: cannot create run directory {out_dir!r}: {e.strerror}") from e
  if not os.access(out_dir, os.W_OK):
    raise ConfigError(f"out: run directory {out_dir!r} is not writable")


class MetricsWriter:
  """Appends rows to metrics.csv; each append is one flushed, fsynced write."""

  def __init__(self, path: str):
    self.path = path
    if not os.path.exists(path):
      atomic_write(path, ",".join(CSV_COLUMNS) + "\n")

  def append(self, rows: list) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                       lineterminator="\n")
    for r in rows:
      w.writerow({k: _fmt(r.get(k)) for k in CSV_COLUMNS})
    with open(self.path, "a") as f:
      f.write(buf.getvalue())
      f.flush()
      os.fsync(f.fileno())


def _fmt(v):
  if isinstance(v, (float, np.floating)):
    return "" if not np.isfinite(v) else repr(float(v))
  if isinstance(v, (bool, np.bool_)):
    return int(v)
  return v


# ----------------------------------------------------------------------- one process
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
    start_fn = jax.vmap(lambda k: T.start(self.programs, k))
    t0 = time.perf_counter()
    self._start = jax.jit(start_fn).lower(self.keys).compile()
    self.state_shape = jax.eval_shape(start_fn, self.keys)[0]
    self._chunk = compile_chunk(self.programs, self.state_shape)
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

  def restore(self, run_dir: str, warn) -> Optional[int]:
    """Loads the newest valid checkpoint; returns the env steps it reached (or None)."""
    from mvelab import checkpoint
    found = checkpoint.restore(self.ckpt_dir(run_dir), self.state_shape, warn=warn)
    if found is None:
      return None
    _, self.state, extra = found
    self.chunks_done = int(extra["chunks_done"])
    self.wall_offset = float(extra.get("wall_time_s", 0.0))
    return int(np.asarray(self.state.env_steps)[0])


def group_state_dir(run_dir: str, seeds: list) -> str:
  """Where a run directory keeps the checkpoints of one seed group."""
  return os.path.join(run_dir, STATE_DIR, "seeds_" + "_".join(map(str, seeds)))


def has_checkpoint(run_dir: str) -> bool:
  """True if ``run_dir`` is a run directory with a complete checkpoint of some seed group
  (so ``train(resume=run_dir)`` can continue it)."""
  from mvelab import checkpoint
  state = os.path.join(run_dir, STATE_DIR)
  if not os.path.isfile(os.path.join(run_dir, "config.json")) or not os.path.isdir(state):
    return False
  return any(checkpoint.list_checkpoints(os.path.join(state, name))
             for name in os.listdir(state))


def run_seeds(cfg: Config, seeds: list, emit: Callable[[str, Any], None],
              run_dir: Optional[str] = None, checkpoint_every: int = 0, keep: int = 3,
              resume: bool = False, stop_on_divergence: bool = False) -> None:
  """Trains ``seeds`` (vmapped) in this process; reports through ``emit(kind, payload)``.

  Kinds: ``compiled`` (seconds), ``resumed`` ({seed: env_steps} or None), ``rows`` (list
  of metric dicts), ``params`` (dict), ``diverged`` (rows of seeds that diverged; only
  with ``stop_on_divergence``, after which the group stops).
  """
  group = GroupRun(cfg, seeds)
  emit("compiled", group.compile_time_s)
  if resume:
    reached = group.restore(run_dir, warn=lambda m: print(f"warning: {m}", file=sys.stderr))
    emit("resumed", None if reached is None else {s: reached for s in seeds})
  while not group.finished:
    if _SIGINT.is_set():  # a Ctrl-C that some callee swallowed
      raise KeyboardInterrupt
    rows = group.step()
    emit("rows", rows)
    ending = group.finished
    bad = [r for r in rows if r["diverged"]]
    if stop_on_divergence and bad:
      ending = True
    if run_dir and checkpoint_every and (ending or group.chunks_done % checkpoint_every == 0):
      group.save(run_dir, keep)
    if stop_on_divergence and bad:
      emit("diverged", bad)
      return
  emit("params", group.params())


def _rows(seeds, metrics, wall):
  m = {k: np.asarray(v) for k, v in metrics.items()}
  rows = []
  for i, s in enumerate(seeds):
    row = {k: m[k][i].item() for k in m}
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


def _worker(cfg_dict, seeds, core, queue, kwargs):
  try:
    if core is not None and hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {core})
    cfg = Config.from_dict(cfg_dict)
    run_seeds(cfg, seeds, lambda kind, payload: queue.put((kind, seeds, payload)), **kwargs)
    queue.put(("done", seeds, None))
  except BaseException as e:  # report, never hang the parent
    import traceback
    queue.put(("error", seeds, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


# ---------------------------------------------------------------------------- driver
def split_seeds(seeds: list, workers: int) -> list:
  """Contiguous, balanced groups of seeds, one per worker."""
  workers = max(1, min(workers, len(seeds)))
  groups, start = [], 0
  for w in range(workers):
    n = len(seeds) // workers + (w < len(seeds) % workers)
    groups.append(seeds[start:start + n])
    start += n
  return groups


def default_workers(num_seeds: int) -> int:
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return max(1, min(cores or 1, num_seeds))


#: Config fields a resumed run may change: they do not alter any result already computed.
RESUME_FREE_FIELDS = ("total_steps",)


def load_run(run_dir: str) -> dict:
  """Reads ``config.json`` of a run directory (raises ConfigError if it is not one)."""
  path = os.path.join(run_dir, "config.json")
  try:
    with open(path) as f:
      meta = json.load(f)
    meta["config"] = Config.from_dict(meta["config"])
  except FileNotFoundError:
    raise ConfigError(f"resume: {run_dir!r} is not a run directory (no config.json)") from None
  except (ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"resume: cannot read {path}: {e}") from None
  return meta


def config_differences(old: Config, new: Config) -> list:
  """Fields (other than RESUME_FREE_FIELDS) whose values differ, as 'name: old -> new'."""
  a, b = old.to_dict(), new.to_dict()
  return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a
          if k not in RESUME_FREE_FIELDS and a[k] != b[k]]


def read_metrics(path: str) -> list:
  """Rows of a metrics.csv as dicts (a torn last line from a crash is dropped)."""
  with open(path) as f:
    text = f.read()
  lines = text.split("\n")
  if lines and lines[-1] != "":
    lines = lines[:-1]  # incomplete last line: written when the process was killed
  reader = csv.DictReader(io.StringIO("\n".join(lines) + "\n"))
  rows = []
  for r in reader:
    if None in r or any(v is None for v in r.values()):
      continue
    row = {}
    for k, v in r.items():
      if k in ("seed", "env_steps", "updates", "diverged_step"):
        row[k] = int(v)
      elif k == "diverged":
        row[k] = bool(int(v))
      elif k == "diverged_what":
        row[k] = v
      else:
        row[k] = float(v) if v != "" else float("nan")
    rows.append(row)
  return rows


def train(config: Optional[Config] = None, seeds: Optional[list] = None,
          out_dir: Optional[str] = None, overwrite: bool = False,
          workers: Optional[int] = 1, progress: bool = True, tensorboard: bool = False,
          resume: Optional[str] = None, checkpoint_every: int = 10, keep_checkpoints: int = 3,
          stop_on_divergence: bool = False) -> RunResult:
  """Trains SAC for several seeds and returns per-seed metrics and parameters.

  Args:
    config: a ``Config`` (None fields are resolved from its preset). With ``resume`` it
      may be None (the run directory's config is used) or must agree with it in every
      field that changes results (only ``total_steps`` may grow).
    seeds: explicit seeds; default ``[config.seed + k for k in range(config.num_seeds)]``.
    out_dir: run directory to write (config.json, metrics.csv, summary.json,
      state/ checkpoints); None keeps everything in memory.
    overwrite: replace a non-empty ``out_dir``.
    workers: processes to spread the seeds over (None: one per core, at most one per
      seed). With 1 the run happens in this process.
    progress: print a line per evaluation.
    tensorboard: also write TensorBoard event files under ``out_dir/tb/seed_<s>``.
    resume: a run directory to continue from its latest complete checkpoint; metrics.csv
      is cut back to that checkpoint and appended to, so the finished file equals an
      uninterrupted run's (apart from ``wall_time_s``).
    checkpoint_every: save the complete training state every this many evaluations
      (and at the end); 0 disables checkpoints. Needs ``out_dir``.
    keep_checkpoints: how many checkpoints to keep per seed group.
    stop_on_divergence: stop the whole run as soon as one seed diverges (default: mark
      that seed diverged, write its later metrics as missing, and carry on).

  Example:
    >>> from mvelab import Config, train
    >>> result = train(Config(env="pendulum", num_seeds=2, total_steps=3000))
    >>> result.final_returns()
  """
  stored = None
  if resume is not None:
    stored = load_run(resume)
    out_dir = resume
    if config is None:
      config = stored["config"]
  if config is None:
    raise ConfigError("config: a Config is required unless resuming a run")
  cfg = config_lib.resolve(config)
  if seeds is None:
    seeds = stored["seeds"] if stored else [cfg.seed + k for k in range(cfg.num_seeds)]
  seeds = [int(s) for s in seeds]
  if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
    raise ConfigError(f"seeds: must be distinct non-negative integers, got {seeds}")
  cfg = dataclasses.replace(cfg, num_seeds=len(seeds), seed=seeds[0])
  if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
    raise ConfigError(f"checkpoint_every: must be a non-negative integer, got {checkpoint_every!r}")
  if isinstance(keep_checkpoints, bool) or not isinstance(keep_checkpoints, int) or keep_checkpoints <= 0:
    raise ConfigError(f"keep_checkpoints: must be a positive integer, got {keep_checkpoints!r}")
  if stored:
    diffs = config_differences(stored["config"], cfg)
    if seeds != stored["seeds"]:
      diffs.append(f"seeds: {stored['seeds']} -> {seeds}")
    if diffs:
      raise ConfigError("resume: the config differs from the run's in fields that change "
                        "results: " + "; ".join(diffs))
    groups = [list(g) for g in stored["groups"]]
  else:
    if workers is None:
      workers = default_workers(len(seeds))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
      raise ConfigError(f"workers: must be a positive integer, got {workers!r}")
    groups = split_seeds(seeds, workers)

  writer = tb = None
  rows_all: list = []
  metrics_path = os.path.join(out_dir, "metrics.csv") if out_dir else None
  if out_dir is not None:
    if stored is None:
      prepare_run_dir(out_dir, overwrite)
    elif not os.access(out_dir, os.W_OK):
      raise ConfigError(f"resume: run directory {out_dir!r} is not writable")
    atomic_write(os.path.join(out_dir, "config.json"), json.dumps(
        {"config": cfg.to_dict(), "seeds": seeds, "groups": groups,
         "versions": versions()}, indent=2, sort_keys=True) + "\n")
    if stored and os.path.exists(metrics_path):
      rows_all = read_metrics(metrics_path)
    writer = MetricsWriter(metrics_path)
    if tensorboard:
      tb = _TensorBoard(os.path.join(out_dir, "tb"))
  run_kwargs = dict(run_dir=out_dir, checkpoint_every=checkpoint_every if out_dir else 0,
                    keep=keep_checkpoints, resume=stored is not None,
                    stop_on_divergence=stop_on_divergence)

  params: dict = {}
  compile_times: list = []
  diverged_stop: list = []
  progress_state = _Progress(cfg, len(seeds), enabled=progress)
  t0 = time.perf_counter()
  interrupted = False

  def handle(kind, group, payload):
    nonlocal rows_all
    if kind == "compiled":
      compile_times.append(payload)
      progress_state.compiled(payload)
    elif kind == "resumed":
      # Keep this group's rows up to its checkpoint; later ones are recomputed exactly.
      reached = payload or {}
      rows_all = [r for r in rows_all if r["seed"] not in group
                  or r["env_steps"] <= reached.get(r["seed"], -1)]
      atomic_write(metrics_path, _csv_text(rows_all))
      if progress:
        where = (f"from env step {max(reached.values())}" if reached
                 else "from scratch (no checkpoint)")
        print(f"resuming seeds {group} {where}", flush=True)
    elif kind == "rows":
      rows_all.extend(payload)
      if writer:
        writer.append(payload)
      if tb:
        tb.write(payload)
      progress_state.rows(payload)
    elif kind == "params":
      params.update(payload)
    elif kind == "diverged":
      diverged_stop.extend(payload)

  _SIGINT.clear()
  main_thread = threading.current_thread() is threading.main_thread()
  previous = signal.signal(signal.SIGINT, _on_sigint) if main_thread else None
  try:
    if len(groups) == 1:
      run_seeds(cfg, groups[0], lambda kind, payload: handle(kind, groups[0], payload),
                **run_kwargs)
    else:
      _run_workers(cfg, groups, handle, run_kwargs)
  except KeyboardInterrupt:
    interrupted = True
    if progress:
      print("\ninterrupted: every completed evaluation is in metrics.csv", file=sys.stderr)
  finally:
    if main_thread:
      signal.signal(signal.SIGINT, previous)
    if tb:
      tb.close()

  total = time.perf_counter() - t0
  compile_s = float(sum(compile_times))
  result = RunResult(cfg, seeds, rows_all, params, compile_s,
                     max(0.0, total - max(compile_times, default=0.0)), interrupted)
  if out_dir is not None:
    atomic_write(os.path.join(out_dir, "summary.json"),
                  json.dumps(summarize(result), indent=2, sort_keys=True) + "\n")
  if progress:
    print_summary(result)
  if interrupted:
    raise KeyboardInterrupt
  if diverged_stop:
    r = diverged_stop[0]
    raise DivergenceError(
        f"seed {r['seed']} diverged ({r['diverged_what']} non-finite at env step "
        f"{r['diverged_step']}); stopped the run (stop_on_divergence)")
  return result


#: Set by Ctrl-C during ``train``; the chunk loop checks it, so that an interrupt that
#: arrives inside a callee which swallows ``KeyboardInterrupt`` still stops the run.
_SIGINT = threading.Event()


def _on_sigint(signum, frame):
  _SIGINT.set()
  raise KeyboardInterrupt


class DivergenceError(RuntimeError):
  """Raised with ``stop_on_divergence`` when a seed diverges."""


def _csv_text(rows: list) -> str:
  buf = io.StringIO()
  w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
  w.writeheader()
  for r in rows:
    w.writerow({k: _fmt(r.get(k)) for k in CSV_COLUMNS})
  return buf.getvalue()


def _run_workers(cfg, groups, handle, run_kwargs):
  ctx = mp.get_context("spawn")
  queue = ctx.Queue()
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  procs = []
  for i, g in enumerate(groups):
    core = cores[i % len(cores)] if len(cores) >= len(groups) else None
    proc = ctx.Process(target=_worker, args=(cfg.to_dict(), g, core, queue, run_kwargs),
                       daemon=True)
    proc.start()
    procs.append(proc)
  pending = len(procs)
  error = None
  try:
    while pending:
      try:
        kind, group, payload = queue.get(timeout=1.0)
      except Exception:  # queue.Empty
        if any(p.exitcode not in (None, 0) for p in procs) and queue.empty():
          raise RuntimeError("a worker process died without reporting")
        continue
      if kind == "done":
        pending -= 1
      elif kind == "error":
        pending -= 1
        error = error or payload
      else:
        handle(kind, group, payload)
        if kind == "diverged":  # stop_on_divergence: end the other workers too
          break
  finally:
    for proc in procs:
      if proc.is_alive():
        proc.terminate()
      proc.join()
  if error:
    raise RuntimeError(f"worker failed: {error}")


class _Progress:

  def __init__(self, cfg, num_seeds, enabled):
    self.cfg, self.num_seeds, self.enabled = cfg, num_seeds, enabled
    self.by_step: dict = {}
    self.t0 = time.perf_counter()
    self.t_first = None

  def compiled(self, seconds):
    if self.enabled:
      print(f"compiled in {seconds:.1f} s", flush=True)

  def rows(self, rows):
    if not self.enabled:
      return
    for r in rows:
      self.by_step.setdefault(r["env_steps"], []).append(r)
    # Print each evaluation once all seeds reported it.
    for step in sorted(self.by_step):
      rs = self.by_step[step]
      if len(rs) < self.num_seeds:
        continue
      del self.by_step[step]
      now = time.perf_counter()
      if self.t_first is None:
        self.t_first, self.step_first = now, step
      rets = np.array([r["eval_return"] for r in rs], dtype=float)
      done = step - self.step_first
      rate = done / (now - self.t_first) if now > self.t_first and done else float("nan")
      left = self.cfg.total_steps - step
      eta = left / rate if rate == rate and rate > 0 else float("nan")
      bad = sum(bool(r["diverged"]) for r in rs)
      print(f"steps {step:>8d}/{self.cfg.total_steps} | return {np.nanmean(rets):9.2f} "
            f"± {np.nanstd(rets):7.2f} ({len(rs)} seeds) | {rate:7.1f} env steps/s "
            f"| ETA {eta:6.0f} s" + (f" | {bad} seed(s) DIVERGED" if bad else ""),
            flush=True)


class _TensorBoard:

  def __init__(self, root):
    from tensorboardX import SummaryWriter
    self.root, self.writers, self._cls = root, {}, SummaryWriter

  def write(self, rows):
    for r in rows:
      w = self.writers.get(r["seed"])
      if w is None:
        w = self.writers[r["seed"]] = self._cls(os.path.join(self.root, f"seed_{r['seed']}"))
      for k in CSV_COLUMNS:
        if k not in ("seed", "env_steps") and isinstance(r.get(k), (int, float)):
          w.add_scalar(k, r[k], r["env_steps"])

  def close(self):
    for w in self.writers.values():
      w.close()


def _num(v):
  return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def summarize(result: RunResult) -> dict:
  last = {}
  for r in result.rows:
    last[r["seed"]] = r
  rets = np.array([r["eval_return"] for r in last.values()], dtype=float)
  return {
      "env": result.config.env, "preset": result.config.preset, "seeds": result.seeds,
      "final_env_steps": {str(s): r["env_steps"] for s, r in last.items()},
      "final_return": {str(s): _num(r["eval_return"]) for s, r in last.items()},
      "final_return_mean": _num(float(np.nanmean(rets))) if np.isfinite(rets).any() else None,
      "final_return_std": _num(float(np.nanstd(rets))) if np.isfinite(rets).any() else None,
      "diverged": {str(r["seed"]): {"env_steps": r["diverged_step"], "what": r["diverged_what"]}
                   for r in result.rows if r["diverged"]},
      "compile_time_s": round(result.compile_time_s, 2),
      "train_time_s": round(result.train_time_s, 2),
      "interrupted": result.interrupted,
  }


def print_summary(result: RunResult) -> None:
  s = summarize(result)
  print("\n== summary ==")
  print(f"env {s['env']} | preset {s['preset']} | seeds {s['seeds']}")
  for seed, ret in s["final_return"].items():
    shown = f"{ret:10.2f}" if ret is not None else "   missing"
    print(f"  seed {seed:>4}: final return {shown} at {s['final_env_steps'][seed]} steps")
  if s["final_return_mean"] is not None:
    print(f"  mean ± std over seeds: {s['final_return_mean']:.2f} ± {s['final_return_std']:.2f}")
  print(f"  compile {s['compile_time_s']:.1f} s | train {s['train_time_s']:.1f} s")
  for seed, d in sorted(s["diverged"].items()):
    print(f"  DIVERGED: seed {seed} ({d['what']} non-finite at env step {d['env_steps']}); "
          f"its later metrics are missing")
