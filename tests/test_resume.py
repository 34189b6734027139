"""Runs that survive: kill-and-resume equality, resume refusal, divergence isolation."""

import csv
import glob
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab import runner
from mvelab.config import Config

ARGS = ["--env", "pendulum", "--seeds", "2", "--hidden_sizes", "16", "16", "--batch_size",
        "32", "--warmup_steps", "100", "--eval_every", "100", "--steps", "4100",
        "--eval_episodes", "2", "--replay_capacity", "2000", "--workers", "1",
        "--checkpoint_every", "2", "--quiet"]
CFG = Config(env="pendulum", num_seeds=2, hidden_sizes=(16, 16), batch_size=32,
             warmup_steps=100, eval_every=100, total_steps=4100, eval_episodes=2,
             replay_capacity=2000)


def _cli(*args, **kw):
  return subprocess.Popen([sys.executable, "-m", "mvelab.cli", "train", *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _table(path):
  with open(path) as f:
    rows = list(csv.DictReader(f))
  for r in rows:
    r.pop("wall_time_s")
  return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("ref") / "run")
  runner.train(CFG, out_dir=out, progress=False, checkpoint_every=2)
  return out


#: Runs ``mvelab train`` and kills itself with SIGKILL at a fixed point: right after the
#: metric rows of the first chunk past the second checkpoint have been written, so the
#: metrics hold rows that no checkpoint covers. A fixed point, not a timer: a fast machine
#: must not finish the run before the kill.
_KILL_ITSELF = """
import os, signal, sys
from mvelab import cli
from mvelab.run import hostloop, rundir
saves = []
save, append = hostloop.GroupRun.save, rundir.MetricsWriter.append
def counted_save(self, *a, **k):
  save(self, *a, **k)
  saves.append(self.chunks_done)
def append_then_die(self, rows):
  append(self, rows)
  if len(saves) >= 2 and rows and int(rows[0]["env_steps"]) > 100 * (saves[-1] + 1):
    os.kill(os.getpid(), signal.SIGKILL)
hostloop.GroupRun.save, rundir.MetricsWriter.append = counted_save, append_then_die
sys.exit(cli.main(["train"] + sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("kill") / "run")
  proc = subprocess.run([sys.executable, "-c", _KILL_ITSELF, *ARGS, "--out", out],
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr
  partial = _table(os.path.join(out, "metrics.csv"))
  resumed = _cli("--resume", out, "--quiet")
  _, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err
  return out, partial


def test_kill_and_resume_gives_the_same_metrics(reference, killed_and_resumed):
  out, partial = killed_and_resumed
  ref = _table(os.path.join(reference, "metrics.csv"))
  assert 0 < len(partial) < len(ref)  # it really was interrupted mid-run
  assert _table(os.path.join(out, "metrics.csv")) == ref  # same rows, same numbers
  # wall_time_s counts the training time before the checkpoint: it never goes back.
  with open(os.path.join(out, "metrics.csv")) as f:
    rows = list(csv.DictReader(f))
  for seed in {r["seed"] for r in rows}:
    walls = [float(r["wall_time_s"]) for r in rows if r["seed"] == seed]
    assert walls == sorted(walls), walls


def test_truncated_checkpoint_falls_back_to_previous(reference, tmp_path):
  import shutil
  out = str(tmp_path / "run")
  shutil.copytree(reference, out)
  newest = sorted(glob.glob(os.path.join(out, "state", "*", "checkpoints", "ckpt_*")))[-1]
  data = os.path.join(newest, "state.msgpack")
  with open(data, "r+b") as f:
    f.truncate(os.path.getsize(data) // 2)
  # Pretend the run was cut short: drop the rows after the previous checkpoint too.
  proc = _cli("--resume", out)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err
  assert "skipping" in err and "ckpt_" in err
  assert _table(os.path.join(out, "metrics.csv")) == _table(
      os.path.join(reference, "metrics.csv"))


def test_resume_refuses_a_changed_config(reference):
  proc = _cli("--resume", reference, "--gamma", "0.5", "--batch_size", "64")
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2
  assert "gamma: 0.99 -> 0.5" in err and "batch_size: 32 -> 64" in err


def test_unwritable_output_directory_errors_cleanly(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  proc = _cli(*ARGS, "--out", str(blocker / "run"))
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2 and "out:" in err and "Traceback" not in err
  assert blocker.read_text() == "not a directory"


def test_nan_in_one_seed_leaves_the_others_untouched():
  cfg = Config(env="pendulum", hidden_sizes=(16, 16), batch_size=32, warmup_steps=100,
               eval_every=100, total_steps=500, eval_episodes=2, replay_capacity=2000)
  from mvelab import config as config_lib
  cfg = config_lib.resolve(cfg)
  clean, hurt = runner.GroupRun(cfg, [0, 1, 2]), runner.GroupRun(cfg, [0, 1, 2])
  rows_clean, rows_hurt = clean.step(), hurt.step()
  poison = lambda x: x.at[1].set(jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x
  hurt.state = hurt.state.replace(actor_params=jax.tree.map(poison, hurt.state.actor_params))
  while not clean.finished:
    rows_clean += clean.step()
    rows_hurt += hurt.step()
  for a, b in zip(rows_clean, rows_hurt):
    if a["seed"] == 1:
      continue
    for k in ("eval_return", "critic_loss", "actor_loss", "alpha", "entropy", "q_mean"):
      assert a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])), (k, a, b)
  seed1 = [r for r in rows_hurt if r["seed"] == 1 and r["env_steps"] > 100]
  assert seed1 and all(r["diverged"] for r in seed1)
  assert all(np.isnan(r["eval_return"]) for r in seed1)
  assert seed1[0]["diverged_step"] == 101 and seed1[0]["diverged_what"]
  assert not any(r["diverged"] for r in rows_hurt if r["seed"] != 1)
