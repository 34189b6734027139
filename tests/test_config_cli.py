"""Config presets, validation messages and the CLI's handling of bad input (exit code 2)."""

import os
import subprocess
import sys

import pytest

from mvelab import config as config_lib
from mvelab.config import Config
from mvelab.errors import ConfigError


def test_default_preset_resolves_everything():
  cfg = config_lib.resolve(Config(env="pendulum"))
  unused = {"backend", "model", "exploration_noise", "dyna_schedule",  # None: no schedule
            *config_lib.MODEL_FIELDS}
  assert all(v is not None for k, v in cfg.to_dict().items() if k not in unused)
  learned = config_lib.resolve(Config(env="pendulum", expansion="critic", model="learned"))
  assert all(getattr(learned, k) is not None for k in config_lib.MODEL_FIELDS)
  assert config_lib.resolve(Config(agent="ddpg")).exploration_noise == 0.1
  assert cfg.target_entropy_per_dim == -1.0 and cfg.alpha_param == "log_alpha"
  assert cfg.eval_deterministic is True


def test_paper_preset_matches_reference_table():
  cfg = config_lib.resolve(Config(env="inverted_pendulum", preset="paper"))
  assert (cfg.gamma, cfg.action_repeat, cfg.episode_length) == (0.95, 4, 250)
  assert (cfg.total_steps, cfg.warmup_steps, cfg.eval_every) == (10_000, 512, 100)
  assert cfg.target_entropy_per_dim == -0.5 and cfg.alpha_param == "alpha"
  assert cfg.alpha_lr == 5e-5 and cfg.bias_init == 0.1 and cfg.std_param == "softplus"
  assert cfg.eval_deterministic is False
  cheetah = config_lib.resolve(Config(env="halfcheetah", preset="paper"))
  assert (cheetah.gamma, cheetah.batch_size, cheetah.num_envs) == (0.95, 512, 128)


def test_explicit_values_override_the_preset():
  cfg = config_lib.resolve(Config(env="inverted_pendulum", preset="paper", gamma=0.9))
  assert cfg.gamma == 0.9


@pytest.mark.parametrize("kwargs, needle", [
    (dict(env="nope"), "env: unknown value 'nope'"),
    (dict(gamma=1.5), "gamma"),
    (dict(batch_size=0), "batch_size"),
    (dict(hidden_sizes=(64, -1)), "hidden_sizes"),
    (dict(total_steps=500, warmup_steps=1000), "total_steps"),
    (dict(env="pendulum", backend="spring"), "backend"),
    (dict(env="hopper", backend="warp"), "backend: unknown value 'warp'"),
    (dict(num_envs=3, eval_every=1000), "eval_every"),
])
def test_bad_values_are_named(kwargs, needle):
  with pytest.raises(ConfigError, match=needle):
    config_lib.resolve(Config(**kwargs))


def _mvelab(*args, cwd=None):
  return subprocess.run([sys.executable, "-m", "mvelab.cli", *args], capture_output=True,
                        text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, needle", [
    (["train", "--env", "nope"], "nope"),
    (["train", "--steps", "-5"], "total_steps"),
    (["train", "--preset", "fancy"], "fancy"),
    (["train", "--bogus", "1"], "--bogus"),
    (["train", "--env", "hopper", "--backend", "warp"], "warp"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["train", "--expansion", "retrace", "--model", "oracle"], "model: not used"),
    (["train", "--expansion", "critic"], "model: required"),
    (["train", "--expansion", "critic", "--model", "oracle", "--horizon", "-1"], "horizon"),
    (["train", "--expansion", "critic", "--model", "oracle", "--model_members", "3"],
     "model_members: is a learned-model option"),
    (["train", "--horizon", "3"], "horizon: expansion=none"),
    (["train", "--expansion", "actor", "--model", "oracle", "--particles", "4"], "particles"),
    (["train", "--exploration_noise", "0.2"], "exploration_noise"),
    (["train", "--ce_values", "direct"], "ce_values: only used by --expansion critic"),
    (["train", "--agent", "td3"], "td3"),
    (["train", "--expansion", "critic", "--model", "learned", "--horizon", "3",
      "--model_sampling", "random"], "random"),
    (["train", "--expansion", "critic", "--model", "oracle", "--model_sampling", "balanced"],
     "model_sampling: is a learned-model option"),
    (["train", "--expansion", "steve", "--model", "learned", "--horizon", "2",
      "--model_sampling", "balanced"], "model_sampling: STEVE"),
])
def test_cli_bad_input_exit_2(args, needle, tmp_path):
  out = tmp_path / "run"
  proc = _mvelab(*args, "--out", str(out)) if args[0] == "train" else _mvelab(*args)
  assert proc.returncode == 2, proc.stderr
  assert needle in proc.stderr
  assert "Traceback" not in proc.stderr
  assert not out.exists()  # nothing half-written


def test_cli_refuses_non_empty_run_dir(tmp_path):
  out = tmp_path / "run"
  out.mkdir()
  (out / "precious.txt").write_text("keep me")
  proc = _mvelab("train", "--out", str(out))
  assert proc.returncode == 2
  assert "not empty" in proc.stderr and "--overwrite" in proc.stderr
  assert (out / "precious.txt").read_text() == "keep me"


def test_cli_help_and_envs():
  proc = _mvelab("--help")
  assert proc.returncode == 0 and "train" in proc.stdout
  proc = _mvelab("train", "--help")
  assert proc.returncode == 0
  for flag in ("--env", "--seeds", "--steps", "--preset", "--overwrite", "--workers"):
    assert flag in proc.stdout
  proc = _mvelab("envs")
  assert proc.returncode == 0
  for name in ("pendulum", "cartpole_swingup", "hopper", "inverted_pendulum", "ant"):
    assert name in proc.stdout


def test_ctrl_c_keeps_completed_evaluations(tmp_path):
  """SIGINT mid-run: exit 130, every completed evaluation readable in metrics.csv."""
  import csv
  import signal
  import time
  out = tmp_path / "run"
  proc = subprocess.Popen(
      [sys.executable, "-m", "mvelab.cli", "train", "--env", "pendulum", "--seeds", "2",
       "--hidden_sizes", "16", "16", "--batch_size", "32", "--warmup_steps", "100",
       "--eval_every", "100", "--steps", "20000000", "--eval_episodes", "2",
       "--workers", "1", "--out", str(out)],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  # 20M steps take hours, so the run cannot finish before the signal (100k steps once
  # did, in ~20 s, on a loaded machine).
  metrics = out / "metrics.csv"
  deadline = time.time() + 240
  try:
    while time.time() < deadline and proc.poll() is None:
      if metrics.exists() and len(metrics.read_text().splitlines()) >= 5:
        break
      time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    out_text, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130, (out_text, err)
  rows = list(csv.DictReader(open(metrics)))
  assert len(rows) >= 4 and len(rows) % 2 == 0  # whole evaluations, both seeds
  assert all(r["eval_return"] for r in rows)
  assert "interrupted" in err
