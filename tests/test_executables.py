"""Stored seed-group programs (mvelab.run.executables): an identical run loads them
without tracing and computes the same numbers; another config misses; a program that
came from XLA's cache is not stored (on CPU it would not run once loaded)."""

import json
import os
import subprocess
import sys

from mvelab.run import executables

# One tiny config; the child processes get a fresh XLA cache, so the first compile is
# fresh (what the layer stores) and the gamma variant (same program) hits XLA's cache.
CFG = dict(env="pendulum", num_seeds=2, hidden_sizes=[16, 16], batch_size=32,
           warmup_steps=100, eval_every=100, total_steps=300, eval_episodes=2,
           replay_capacity=2000)
_CHILD = """
import json, sys
from mvelab import compile_cache, config
compile_cache.enable()
from mvelab.run.hostloop import GroupRun
group = GroupRun(config.resolve(config.Config(**json.loads(sys.argv[1]))), [0, 1])
rows = group.step() + group.step()
print(json.dumps({"from": group.programs_from,
                  "rows": [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]}))
"""


def _child(cfg, cache):
  env = dict(os.environ, MVELAB_CACHE_DIR=str(cache), **{executables.ENV_VAR: "on"})
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_identical_run_loads_the_stored_programs(tmp_path):
  cache = tmp_path / "cache"
  stored = cache / executables.SUBDIR
  first = _child(CFG, cache)
  assert first["from"] == "compiled" and len(os.listdir(stored)) == 1
  again = _child(CFG, cache)
  assert again["from"] == "stored" and again["rows"] == first["rows"]
  # gamma is traced: the same XLA programs, loaded from XLA's cache, hence not stored.
  other = _child(dict(CFG, gamma=0.9), cache)
  assert other["from"] == "compiled" and other["rows"] != first["rows"]
  assert len(os.listdir(stored)) == 1


def test_off_unless_turned_on(monkeypatch, tmp_path):
  monkeypatch.setenv("MVELAB_CACHE_DIR", str(tmp_path / "cache"))
  monkeypatch.setenv(executables.ENV_VAR, "off")
  assert executables.directory() is None
  monkeypatch.setenv(executables.ENV_VAR, "on")
  assert executables.directory() == str(tmp_path / "cache" / executables.SUBDIR)
  monkeypatch.setenv("MVELAB_CACHE_DIR", "off")  # --no-compile-cache turns both off
  assert executables.directory() is None
