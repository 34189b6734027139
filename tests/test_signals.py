"""SIGTERM to `mvelab train` and `mvelab sweep`: exit 143, no child survives, re-run resumes."""

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from _procs import alive, descendants
from mvelab.experiments.spec import dump_spec
from mvelab.run import signals

TINY = ["--hidden_sizes", "16", "16", "--batch_size", "32", "--warmup_steps", "100",
        "--eval_every", "100", "--eval_episodes", "2", "--replay_capacity", "2000"]
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")


def _wait_for(predicate, proc, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None and not predicate():
    time.sleep(0.2)
  assert proc.poll() is None, proc.communicate()
  assert predicate(), "timed out"


def _terminate(proc) -> set:
  """SIGTERM to ``proc``; returns its descendants as they were just before."""
  children = descendants(proc.pid)
  proc.send_signal(signal.SIGTERM)
  try:
    proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  deadline = time.time() + 15
  while time.time() < deadline and any(alive(c) for c in children):
    time.sleep(0.2)
  return children


def _mvelab(*args):
  return subprocess.Popen([sys.executable, "-m", "mvelab.cli", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_stops_train_and_its_workers(tmp_path):
  out = tmp_path / "run"
  metrics = out / "metrics.csv"
  # 20M steps: the run cannot finish before the signal.
  # Two workers of two seeds each: the program of test_resume and the sweep tests.
  proc = _mvelab("train", "--env", "pendulum", "--seeds", "4", "--steps", "20000000",
                 *TINY, "--workers", "2", "--quiet", "--out", str(out))
  _wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) > 4 * 3, proc)
  children = _terminate(proc)
  assert proc.returncode == 128 + signal.SIGTERM
  assert len(children) >= 2  # the two seed workers
  assert not [c for c in children if alive(c)]
  rows = list(csv.DictReader(open(metrics)))
  keys = [(int(r["env_steps"]), int(r["seed"])) for r in rows]
  assert keys == sorted(keys) and len(keys) % 4 == 0  # whole evaluations, in order
  assert json.load(open(out / "summary.json"))["interrupted"] is True


SPEC = {"name": "sig", "envs": "pendulum", "seeds": 2, "steps": 6100,
        "overrides": {"hidden_sizes": [16, 16], "batch_size": 32, "warmup_steps": 100,
                      "eval_every": 100, "eval_episodes": 2, "replay_capacity": 2000},
        "runs": [{"expansions": "none"}, {"expansions": "none", "overrides": {"seed": 10}}]}


def test_sigterm_stops_sweep_and_rerun_resumes(tmp_path):
  spec = str(tmp_path / "spec.yaml")
  dump_spec(SPEC, spec)
  out = tmp_path / "sweep"
  ckpts = str(out / "runs" / "*" / "state" / "*" / "checkpoints" / "ckpt_*")
  proc = _mvelab("sweep", spec, "--out", str(out), "--jobs", "2", "--quiet")
  _wait_for(lambda: len({p.split("/state/")[0] for p in glob.glob(ckpts)}) == 2, proc)
  children = _terminate(proc)
  assert proc.returncode == 128 + signal.SIGTERM
  assert len(children) >= 2 and not [c for c in children if alive(c)]
  runs = sorted(glob.glob(str(out / "runs" / "*")))
  # Both had a checkpoint; one may have finished already on a fast machine.
  killed = [r for r in runs if not os.path.exists(os.path.join(r, "status.json"))]
  assert len(runs) == 2 and killed
  rerun = subprocess.run([sys.executable, "-m", "mvelab.cli", "sweep", spec, "--out",
                          str(out), "--jobs", "2", "--quiet"], capture_output=True, text=True,
                         timeout=600)
  assert rerun.returncode == 0, rerun.stderr
  for r in runs:
    status = json.load(open(os.path.join(r, "status.json")))
    assert status["state"] == "done" and status["resumed"] is (r in killed)
    rows = list(csv.DictReader(open(os.path.join(r, "metrics.csv"))))
    assert [(int(x["env_steps"]), int(x["seed"])) for x in rows] == [
        (step, seed) for step in range(100, 6101, 100) for seed in sorted({
            int(x["seed"]) for x in rows})]  # every evaluation once, both seeds


def test_deferred_signal_waits_for_the_block(monkeypatch):
  with signals.handled():
    with pytest.raises(signals.Interrupted) as e:
      with signals.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        finished = True  # reached: the signal did not cut the block short
    assert finished and e.value.signum == signal.SIGTERM
  assert signals.exit_code(e.value) == 143
  assert signals.exit_code(KeyboardInterrupt()) == 130
