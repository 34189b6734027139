"""What a run prints: a line per whole evaluation while it trains, a summary at the end."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from mvelab.run.rundir import summarize


class Progress:
  """Prints compile times, resumes and one line per whole evaluation (all seeds)."""

  def __init__(self, cfg, num_seeds, enabled):
    self.cfg, self.num_seeds, self.enabled = cfg, num_seeds, enabled
    self.t_first = self.step_first = None

  def compiled(self, seconds):
    if self.enabled:
      print(f"compiled in {seconds:.1f} s", flush=True)

  def resumed(self, group, reached):
    if self.enabled:
      where = (f"from env step {max(reached.values())}" if reached
               else "from scratch (no checkpoint)")
      print(f"resuming seeds {group} {where}", flush=True)

  def interrupted(self):
    if self.enabled:
      print("\ninterrupted: every completed evaluation is in metrics.csv", file=sys.stderr)

  def evaluation(self, rows):
    """One line for the rows of one evaluation of every seed."""
    if not self.enabled:
      return
    step = rows[0]["env_steps"]
    now = time.perf_counter()
    if self.t_first is None:
      self.t_first, self.step_first = now, step
    rets = np.array([r["eval_return"] for r in rows], dtype=float)
    done = step - self.step_first
    rate = done / (now - self.t_first) if now > self.t_first and done else float("nan")
    left = self.cfg.total_steps - step
    eta = left / rate if rate == rate and rate > 0 else float("nan")
    bad = sum(bool(r["diverged"]) for r in rows)
    print(f"steps {step:>8d}/{self.cfg.total_steps} | return {np.nanmean(rets):9.2f} "
          f"± {np.nanstd(rets):7.2f} ({len(rows)} seeds) | {rate:7.1f} env steps/s "
          f"| ETA {eta:6.0f} s" + (f" | {bad} seed(s) DIVERGED" if bad else ""),
          flush=True)


class TensorBoard:
  """TensorBoard event files, one directory per seed."""

  def __init__(self, root):
    from tensorboardX import SummaryWriter
    self.root, self.writers, self._cls = root, {}, SummaryWriter

  def write(self, rows):
    for r in rows:
      w = self.writers.get(r["seed"])
      if w is None:
        w = self.writers[r["seed"]] = self._cls(os.path.join(self.root, f"seed_{r['seed']}"))
      for k, v in r.items():  # the metrics.csv columns, STEVE's steve_w<i> included
        if k not in ("seed", "env_steps") and isinstance(v, (int, float)):
          w.add_scalar(k, v, r["env_steps"])

  def close(self):
    for w in self.writers.values():
      w.close()


def print_summary(result) -> None:
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
