"""The paper preset on the paper's tasks, field by field, and `mvelab reproduce paper`.

The expected values below are transcribed from the reference's hyperparameter table
(``paper-and-official-code.md`` §4, §5, §9, §10), not read from ``mvelab.config``.
"""

import os

import pandas as pd
import pytest

from mvelab import config as config_lib
from mvelab.config import Config
from mvelab.errors import ConfigError
from mvelab.experiments import paper
from mvelab.experiments.executor import SerialExecutor
from mvelab.experiments.spec import parse_spec
from test_reproduce import FakeRun

COMMON = dict(preset="paper", num_envs=None, replay_capacity=2 ** 20, updates_per_step=1,
              hidden_sizes=(256, 256), actor_lr=3e-4, critic_lr=3e-4, alpha_lr=5e-5,
              tau=0.005, init_alpha=1.0, target_entropy_per_dim=-0.5, alpha_param="alpha",
              std_param="softplus", bias_init=0.1, eval_episodes=128,
              eval_deterministic=False)
TASKS = {
    "paper_inverted_pendulum": dict(total_steps=10_000, num_envs=1, action_repeat=4,
                                    episode_length=250, gamma=0.95, batch_size=256,
                                    warmup_steps=512, eval_every=100),
    "paper_cartpole": dict(total_steps=100_000, num_envs=1, action_repeat=2,
                           episode_length=500, gamma=0.99, batch_size=256,
                           warmup_steps=512, eval_every=1000),
}
LOCOMOTION = dict(total_steps=1_000_000, num_envs=128, action_repeat=2, episode_length=500,
                  gamma=0.99, batch_size=256, warmup_steps=65_536, eval_every=4992)
TASKS.update(paper_hopper=LOCOMOTION, paper_walker2d=LOCOMOTION,
             paper_halfcheetah=dict(LOCOMOTION, action_repeat=1, episode_length=1000,
                                    gamma=0.95, batch_size=512))
MODEL = dict(model_hidden_sizes=(256, 256, 256, 256), model_members=5, model_lr=3e-4,
             model_batch_size=256, model_schedule="paper", model_sampling="iid")


@pytest.mark.parametrize("env", sorted(TASKS))
def test_paper_preset_resolves_reference_table(env):
  want = dict(COMMON, **TASKS[env])
  cfg = config_lib.resolve(Config(env=env, preset="paper"))
  got = cfg.to_dict()
  for field, value in want.items():
    value = list(value) if isinstance(value, tuple) else value
    assert got[field] == value, field
  learned = config_lib.resolve(Config(env=env, preset="paper", expansion="critic",
                                      model="learned", horizon=3))
  for field, value in MODEL.items():
    assert getattr(learned, field) == value, field
  # the fixed schedule does the paper's 200 warm-up epochs as a fixed number of updates
  fixed = config_lib.resolve(Config(env=env, preset="paper", expansion="critic",
                                    model="learned", horizon=3, model_schedule="fixed"))
  assert fixed.model_warmup_updates == 200 * want["warmup_steps"] // 256
  assert config_lib.paper_preset_warning(cfg) is None


def test_paper_preset_on_other_env_warns_with_the_paper_task():
  line = config_lib.paper_preset_warning(Config(env="inverted_pendulum", preset="paper"))
  assert "paper_inverted_pendulum" in line and "\n" not in line
  line = config_lib.paper_preset_warning(Config(env="pendulum", preset="paper"))
  assert "paper_cartpole" in line  # lists the paper's tasks
  assert config_lib.paper_preset_warning(Config(env="inverted_pendulum")) is None


def test_cli_prints_the_warning_once_before_anything_runs(tmp_path):
  import subprocess
  import sys
  out = tmp_path / "x"
  r = subprocess.run([sys.executable, "-m", "mvelab.cli", "train", "--env",
                      "inverted_pendulum", "--preset", "paper", "--steps", "-5", "--out",
                      str(out)], capture_output=True, text=True)
  assert r.returncode == 2
  assert r.stderr.count("warning: preset paper on inverted_pendulum") == 1
  assert not out.exists()


def test_matrix_is_the_reference_one():
  spec = parse_spec(paper.paper_spec(agents=("sac", "ddpg")))
  kinds = sorted((c.agent, c.expansion, c.model or "", c.horizon)
                 for c in (config_lib.resolve(r.config) for r in spec.runs))
  hs = paper.HORIZONS
  want = [(a, "none", "", 0) for a in ("sac", "ddpg")]
  want += [(a, e, m, h) for a in ("sac", "ddpg") for e in ("critic", "actor")
           for m in ("oracle", "learned") for h in hs]
  want += [(a, "retrace", "", h) for a in ("sac", "ddpg") for h in hs]
  assert kinds == sorted(want)
  assert all(r.config.env == "paper_inverted_pendulum" and r.config.num_seeds == 5
             for r in spec.runs)


def test_model_schedule_only_on_learned_runs():
  spec = parse_spec(paper.paper_spec(parts=("ce", "retrace"), model_schedule="fixed",
                                     model_sampling="balanced"))
  for r in spec.runs:
    cfg = config_lib.resolve(r.config)
    assert cfg.model_schedule == ("fixed" if cfg.model == "learned" else None)
    assert cfg.model_sampling == ("balanced" if cfg.model == "learned" else None)
  assert len(spec.runs) == 1 + 2 * 6 + 6
  spec = parse_spec(paper.paper_spec(parts=("ce",), model_sampling="balanced"))
  learned = [config_lib.resolve(r.config) for r in spec.runs if r.config.model == "learned"]
  assert len(learned) == 6 and all(c.model_schedule == "paper" for c in learned)
  with pytest.raises(ConfigError, match="model_sampling: unknown value 'random'; allowed: iid, balanced"):
    paper.paper_spec(model_sampling="random")


def test_pipeline_writes_ce_and_ae_figures(tmp_path):
  out = str(tmp_path / "p")
  r = paper.reproduce_paper(out, horizons=(1, 3), seeds=2, executor=SerialExecutor(),
                            progress=False, job_fn=FakeRun())  # critic and actor runs alike
  assert r["sweep"].ok
  for fig in ("figure1_ce", "figure1_ae", "performance_vs_h_ce", "performance_vs_h_ae",
              "cost_vs_h"):
    assert os.path.getsize(os.path.join(out, f"{fig}.png")) > 10_000
  summary = pd.read_csv(os.path.join(out, "summary.csv"))
  assert len(summary) == 1 + 4 * 2 + 2
  assert "steps_to_threshold" in summary.columns and "reached" in summary.columns


@pytest.mark.parametrize("argv, needle", [
    (["--env", "pendulum"], "env: must be one of the paper's tasks"),
    (["--parts", "ce,xx"], "parts: must be a non-empty list of ce, ae, retrace"),
    (["--agents", "ppo"], "agents: must be a non-empty list of sac, ddpg"),
    (["--horizons", "0"], "horizons: must be positive"),
    (["--seeds", "0"], "seeds: must be a positive integer"),
])
def test_bad_input_exit_2(argv, needle, tmp_path, capsys):
  assert paper.main(argv + ["--out", str(tmp_path / "x")]) == 2
  assert needle in capsys.readouterr().err
  assert not (tmp_path / "x").exists()
