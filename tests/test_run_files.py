"""metrics.csv order (whole evaluations, (env_steps, seed) order) and the compile cache."""

import os

from mvelab import compile_cache
from mvelab.run.rundir import MetricsLog, complete_evaluations


def _row(step, seed):
  return {"env_steps": step, "seed": seed}


def _keys(rows):
  return [(r["env_steps"], r["seed"]) for r in rows]


def test_rows_are_released_per_whole_evaluation_in_seed_order():
  released = []
  log = MetricsLog([0, 1, 2], [], lambda rows: released.append(_keys(rows)))
  log.add([_row(100, 2)])                # worker of seed 2 ahead of the others
  log.add([_row(200, 2)])
  assert released == []
  log.add([_row(100, 0), _row(100, 1)])  # evaluation 100 complete: released, sorted
  log.add([_row(200, 1), _row(200, 0)])
  assert released == [[(100, 0), (100, 1), (100, 2)], [(200, 0), (200, 1), (200, 2)]]
  assert _keys(log.written) == [k for ev in released for k in ev]


def test_rewind_cuts_one_group_and_holds_the_others_rows():
  written = [_row(s, seed) for s in (100, 200, 300) for seed in (0, 1)]
  log = MetricsLog([0, 1], written, lambda rows: None)
  assert _keys(log.rewind([0], 300)) == _keys(written)
  kept = log.rewind([1], 100)  # seed 1 resumed from an older checkpoint
  assert _keys(kept) == [(100, 0), (100, 1)]
  log.add([_row(200, 1)])
  log.add([_row(300, 1)])
  assert _keys(log.written) == _keys(written)
  assert _keys(MetricsLog([0], [], print).rewind([0], None)) == []


def test_complete_evaluations_drop_a_partial_tail():
  rows = [_row(100, 1), _row(100, 0), _row(200, 0)]
  assert _keys(complete_evaluations(rows, [0, 1])) == [(100, 0), (100, 1)]


def test_cache_location_precedence_and_off(monkeypatch, tmp_path):
  for var in ("MVELAB_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR", "XDG_CACHE_HOME"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  assert compile_cache.location() == str(tmp_path / ".cache" / "mvelab" / "xla")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.location() == str(tmp_path / "xdg" / "mvelab" / "xla")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/jax")
  assert compile_cache.location() == "/jax"
  monkeypatch.setenv("MVELAB_CACHE_DIR", str(tmp_path / "mine"))
  assert compile_cache.location() == str(tmp_path / "mine")
  monkeypatch.setenv("MVELAB_CACHE_DIR", "off")
  assert compile_cache.location() is None
  env = compile_cache.job_env(None)
  assert env["JAX_ENABLE_COMPILATION_CACHE"] == "false"
  assert compile_cache.job_env("/c")["JAX_COMPILATION_CACHE_DIR"] == "/c"
  assert not os.path.exists(tmp_path / "mine")
