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
import sys
import time
from typing import Any, Callable, Optional

import numpy as np

from mvelab import config as config_lib
from mvelab.config import Config
from mvelab.errors import ConfigError

CSV_COLUMNS = ("seed", "env_steps", "updates", "eval_return", "eval_return_std",
               "critic_loss", "actor_loss", "alpha", "entropy", "q_mean", "nonfinite",
               "wall_time_s")


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


def _atomic_write(path: str, text: str) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


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
      _atomic_write(path, ",".join(CSV_COLUMNS) + "\n")

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
def run_seeds(cfg: Config, seeds: list, emit: Callable[[str, Any], None]) -> None:
  """Trains ``seeds`` (vmapped) in this process; reports through ``emit(kind, payload)``.

  Kinds: ``compiled`` (seconds), ``rows`` (list of metric dicts), ``params`` (dict).
  """
  import jax
  import jax.numpy as jnp
  from mvelab import train as T

  p = T.make_programs(cfg)
  keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
  t0 = time.perf_counter()
  start = jax.jit(jax.vmap(lambda k: T.start(p, k))).lower(keys).compile()
  state_shape = jax.eval_shape(jax.vmap(lambda k: T.start(p, k)), keys)[0]
  chunk = jax.jit(jax.vmap(lambda s: T.train_chunk(p, s))).lower(state_shape).compile()
  emit("compiled", time.perf_counter() - t0)

  t_start = time.perf_counter()
  state, metrics = start(keys)
  emit("rows", _rows(seeds, metrics, time.perf_counter() - t_start))
  for _ in range(config_lib.num_chunks(cfg)):
    state, metrics = chunk(state)
    emit("rows", _rows(seeds, metrics, time.perf_counter() - t_start))
  params = {}
  for i, s in enumerate(seeds):
    params[s] = jax.tree.map(lambda x: np.asarray(x[i]), {
        "actor": state.actor_params, "critic": state.critic_params,
        "obs_stats": state.obs_stats})
  emit("params", params)


def _rows(seeds, metrics, wall):
  m = {k: np.asarray(v) for k, v in metrics.items()}
  rows = []
  for i, s in enumerate(seeds):
    row = {k: m[k][i].item() for k in m}
    row["seed"] = s
    row["env_steps"] = int(row["env_steps"])
    row["updates"] = int(row["updates"])
    row["nonfinite"] = bool(row["nonfinite"])
    row["wall_time_s"] = round(wall, 3)
    rows.append(row)
  return rows


def _worker(cfg_dict, seeds, core, queue):
  try:
    if core is not None and hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {core})
    cfg = Config.from_dict(cfg_dict)
    run_seeds(cfg, seeds, lambda kind, payload: queue.put((kind, seeds, payload)))
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


def train(config: Config, seeds: Optional[list] = None, out_dir: Optional[str] = None,
          overwrite: bool = False, workers: Optional[int] = 1, progress: bool = True,
          tensorboard: bool = False) -> RunResult:
  """Trains SAC for several seeds and returns per-seed metrics and parameters.

  Args:
    config: a ``Config`` (None fields are resolved from its preset).
    seeds: explicit seeds; default ``[config.seed + k for k in range(config.num_seeds)]``.
    out_dir: run directory to write (config.json, metrics.csv, summary.json); None keeps
      everything in memory.
    overwrite: replace a non-empty ``out_dir``.
    workers: processes to spread the seeds over (None: one per core, at most one per
      seed). With 1 the run happens in this process.
    progress: print a line per evaluation.
    tensorboard: also write TensorBoard event files under ``out_dir/tb/seed_<s>``.

  Example:
    >>> from mvelab import Config, train
    >>> result = train(Config(env="pendulum", num_seeds=2, total_steps=3000))
    >>> result.final_returns()
  """
  cfg = config_lib.resolve(config)
  if seeds is None:
    seeds = [cfg.seed + k for k in range(cfg.num_seeds)]
  seeds = [int(s) for s in seeds]
  if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
    raise ConfigError(f"seeds: must be distinct non-negative integers, got {seeds}")
  cfg = dataclasses.replace(cfg, num_seeds=len(seeds), seed=seeds[0])
  if workers is None:
    workers = default_workers(len(seeds))
  if isinstance(workers, bool) or not isinstance(workers, int) or workers <= 0:
    raise ConfigError(f"workers: must be a positive integer, got {workers!r}")
  groups = split_seeds(seeds, workers)

  writer = tb = None
  if out_dir is not None:
    prepare_run_dir(out_dir, overwrite)
    _atomic_write(os.path.join(out_dir, "config.json"), json.dumps(
        {"config": cfg.to_dict(), "seeds": seeds, "workers": len(groups),
         "versions": versions()}, indent=2, sort_keys=True) + "\n")
    writer = MetricsWriter(os.path.join(out_dir, "metrics.csv"))
    if tensorboard:
      tb = _TensorBoard(os.path.join(out_dir, "tb"))

  rows_all: list = []
  params: dict = {}
  compile_times: list = []
  progress_state = _Progress(cfg, len(seeds), enabled=progress)
  t0 = time.perf_counter()
  interrupted = False

  def handle(kind, group, payload):
    if kind == "compiled":
      compile_times.append(payload)
      progress_state.compiled(payload)
    elif kind == "rows":
      rows_all.extend(payload)
      if writer:
        writer.append(payload)
      if tb:
        tb.write(payload)
      progress_state.rows(payload)
    elif kind == "params":
      params.update(payload)

  try:
    if len(groups) == 1:
      run_seeds(cfg, groups[0], lambda kind, payload: handle(kind, groups[0], payload))
    else:
      _run_workers(cfg, groups, handle)
  except KeyboardInterrupt:
    interrupted = True
    if progress:
      print("\ninterrupted: every completed evaluation is in metrics.csv", file=sys.stderr)
  finally:
    if tb:
      tb.close()

  total = time.perf_counter() - t0
  compile_s = float(sum(compile_times))
  result = RunResult(cfg, seeds, rows_all, params, compile_s,
                     max(0.0, total - max(compile_times, default=0.0)), interrupted)
  if out_dir is not None:
    _atomic_write(os.path.join(out_dir, "summary.json"),
                  json.dumps(summarize(result), indent=2, sort_keys=True) + "\n")
  if progress:
    print_summary(result)
  if interrupted:
    raise KeyboardInterrupt
  return result


def _run_workers(cfg, groups, handle):
  ctx = mp.get_context("spawn")
  queue = ctx.Queue()
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  procs = []
  for i, g in enumerate(groups):
    core = cores[i % len(cores)] if len(cores) >= len(groups) else None
    proc = ctx.Process(target=_worker, args=(cfg.to_dict(), g, core, queue), daemon=True)
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
      bad = sum(bool(r["nonfinite"]) for r in rs)
      print(f"steps {step:>8d}/{self.cfg.total_steps} | return {np.nanmean(rets):9.2f} "
            f"± {np.nanstd(rets):7.2f} ({len(rs)} seeds) | {rate:7.1f} env steps/s "
            f"| ETA {eta:6.0f} s" + (f" | NON-FINITE in {bad} seed(s)" if bad else ""),
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


def summarize(result: RunResult) -> dict:
  last = {}
  for r in result.rows:
    last[r["seed"]] = r
  rets = np.array([r["eval_return"] for r in last.values()], dtype=float)
  return {
      "env": result.config.env, "preset": result.config.preset, "seeds": result.seeds,
      "final_env_steps": {str(s): r["env_steps"] for s, r in last.items()},
      "final_return": {str(s): r["eval_return"] for s, r in last.items()},
      "final_return_mean": float(np.nanmean(rets)) if len(rets) else None,
      "final_return_std": float(np.nanstd(rets)) if len(rets) else None,
      "nonfinite_seeds": sorted({r["seed"] for r in result.rows if r["nonfinite"]}),
      "compile_time_s": round(result.compile_time_s, 2),
      "train_time_s": round(result.train_time_s, 2),
      "interrupted": result.interrupted,
  }


def print_summary(result: RunResult) -> None:
  s = summarize(result)
  print("\n== summary ==")
  print(f"env {s['env']} | preset {s['preset']} | seeds {s['seeds']}")
  for seed, ret in s["final_return"].items():
    print(f"  seed {seed:>4}: final return {ret:10.2f} at {s['final_env_steps'][seed]} steps")
  if s["final_return_mean"] is not None:
    print(f"  mean ± std over seeds: {s['final_return_mean']:.2f} ± {s['final_return_std']:.2f}")
  print(f"  compile {s['compile_time_s']:.1f} s | train {s['train_time_s']:.1f} s")
  if s["nonfinite_seeds"]:
    print(f"  WARNING: non-finite values in seeds {s['nonfinite_seeds']}")
