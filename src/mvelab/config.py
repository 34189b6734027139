"""Run configuration: one frozen dataclass, two presets, validation.

Every field left at ``None`` is filled in by ``resolve`` from the chosen preset (and, for
the ``paper`` preset, from the reference paper's per-environment table). The resolved
config is what a run directory records.

Static fields (they change array shapes or program structure and therefore define a
compilation): env, backend, action_repeat, episode_length, num_envs, batch_size,
hidden_sizes, replay_capacity, updates_per_step, eval_episodes, eval_every, warmup_steps,
std_param, alpha_param, eval_deterministic. Scalar hyperparameters (learning rates, gamma,
tau, target entropy, initial alpha) are carried as traced arrays inside the training
state.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Annotated, Literal, Optional

import tyro

from mvelab.errors import ConfigError, check_choice

PRESETS = ("default", "paper")
#: Critic-expansion value estimators (``Config.ce_values``; agents/expansion.py).
CE_VALUES = ("control_variate", "direct")
#: How a learned model's rollouts pick each imagined row's member (models/ensemble.py).
MODEL_SAMPLING = ("iid", "balanced")
EXPANSIONS = ("none", "critic", "actor", "retrace", "steve", "dyna")
#: Expansions that roll a dynamics model (``--model`` required).
MODEL_EXPANSIONS = ("critic", "actor", "steve", "dyna")
DYNA_DEFAULTS = dict(dyna_real_ratio=0.05, dyna_rollouts=400, dyna_retain=1000,
                     dyna_schedule=None)


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a training run.

  Fields set to None take the preset's value (see ``resolve`` and docs/sac.md).
  """

  # --- environment -------------------------------------------------------------------
  env: str = "pendulum"
  """Environment name (see `mvelab envs`)."""
  backend: Optional[str] = None
  """Physics backend of Brax environments: spring, positional, generalized or mjx."""
  action_repeat: Optional[int] = None
  """Physics steps per agent step."""
  episode_length: Optional[int] = None
  """Time limit in agent steps (ends episodes with truncated=True)."""

  # --- run ----------------------------------------------------------------------------
  preset: Literal["default", "paper"] = "default"
  """Hyperparameter preset: 'default' (modern SAC) or 'paper' (the reference paper)."""
  seed: int = 0
  """Base seed; seed k of a run uses seed + k."""
  num_seeds: Annotated[int, tyro.conf.arg(aliases=("--seeds",))] = 1
  """Number of seeds trained (vmapped in one program per worker)."""
  total_steps: Annotated[Optional[int], tyro.conf.arg(aliases=("--steps",))] = None
  """Environment steps including the warm-up (rounded up to warm-up + k * eval_every)."""
  eval_every: Optional[int] = None
  """Environment steps between evaluations."""
  eval_episodes: Optional[int] = None
  """Evaluation episodes per evaluation (fixed initial states)."""
  eval_deterministic: Optional[bool] = None
  """Evaluate the mean action (True) or the stochastic policy (False)."""

  # --- SAC ----------------------------------------------------------------------------
  num_envs: Optional[int] = None
  """Parallel environments stepped per iteration."""
  warmup_steps: Optional[int] = None
  """Environment steps with uniform random actions before learning starts."""
  replay_capacity: Optional[int] = None
  """Replay buffer capacity in transitions."""
  batch_size: Optional[int] = None
  """Minibatch size per gradient update."""
  updates_per_step: Optional[int] = None
  """Gradient updates per collected transition (UTD ratio)."""
  hidden_sizes: Optional[tuple[int, ...]] = None
  """Hidden layer widths of actor and critics."""
  actor_lr: Optional[float] = None
  """Adam learning rate of the actor."""
  critic_lr: Optional[float] = None
  """Adam learning rate of the critics."""
  alpha_lr: Optional[float] = None
  """Adam learning rate of the temperature."""
  gamma: Optional[float] = None
  """Discount factor."""
  tau: Optional[float] = None
  """Polyak rate of the target critics."""
  init_alpha: Optional[float] = None
  """Initial temperature."""
  target_entropy_per_dim: Optional[float] = None
  """Target entropy divided by the action size (default -1, paper -0.5)."""
  alpha_param: Optional[Literal["log_alpha", "alpha"]] = None
  """Temperature loss: 'log_alpha' (p*e) or 'alpha' (exp(p)*e, the paper's)."""
  std_param: Optional[Literal["log_std", "softplus"]] = None
  """Policy std: 'log_std' (tanh-squashed to [-5, 2]) or 'softplus' (+0.001, the paper's)."""
  bias_init: Optional[float] = None
  """Initial value of all network biases (paper: 0.1)."""

  # --- value expansion -----------------------------------------------------------------
  agent: Literal["sac", "ddpg"] = "sac"
  """Learner: 'sac' or 'ddpg' (deterministic actor, alpha = 0, target actor, noise)."""
  expansion: Literal["none", "critic", "actor", "retrace", "steve", "dyna"] = "none"
  """Value expansion: none (1-step), critic (MVE targets), actor (SVG-style), retrace,
  steve (horizons 0..H weighted by the inverse variance of their candidates); or dyna
  (MBPO: the model makes data, 1-step targets; horizon = rollout length)."""
  model: Optional[Literal["oracle", "learned"]] = None
  """Dynamics model for critic/actor expansion: 'oracle' (true simulator) or 'learned'."""
  horizon: int = 0
  """Expansion horizon H (imagined steps; for retrace: extra real steps). 0 = plain SAC."""
  lam: float = 1.0
  """Trace coefficient lambda of the target operator (retrace and critic expansion)."""
  particles: int = 1
  """Critic expansion: average the target over this many independent rollouts. STEVE with
  an oracle: the number of rollouts (model samples) per start state."""
  tdk: bool = False
  """Critic expansion: also train the critic on the imagined states (TD-k)."""
  ce_values: Literal["control_variate", "direct"] = "control_variate"
  """Critic expansion: values of imagined states from a fresh action with the control
  variate Q(s,ã) − Q(s,â) (the paper's code) or 'direct' from the rollout's own actions
  (the textbook soft H-step target; no critic call per imagined step, cheaper)."""
  model_error: Literal["none", "physics", "noise"] = "none"
  """Oracle only: a controlled model error (models/perturbed.py). 'physics': the rollout
  steps a copy whose physical parameters are scaled by 1 + model_error_scale; 'noise':
  Gaussian noise of model_error_scale x the batch's per-dimension std is added to every
  imagined next simulator state (pure-JAX envs)."""
  model_error_scale: float = 0.0
  """Size ε >= 0 of --model_error (0: the exact oracle, bit for bit)."""
  dyna_real_ratio: float = 0.05
  """Dyna: share of every SAC batch drawn from the real buffer (the rest from the model
  buffer); 1.0 is SAC."""
  dyna_rollouts: int = 400
  """Dyna: branched rollouts started per collected transition (MBPO: 400)."""
  dyna_retain: int = 1000
  """Dyna: environment steps of rollouts the model buffer keeps (MBPO: one epoch)."""
  dyna_schedule: Optional[tuple[int, int, int, int]] = None
  """Dyna: linear rollout-length schedule (min_step, max_step, min_k, max_k) over
  environment steps; max_k must equal --horizon (default: always --horizon)."""
  exploration_noise: Optional[float] = None
  """DDPG: std of the Gaussian exploration noise added before the tanh (default 0.1)."""

  # --- learned dynamics model ---------------------------------------------------------
  model_hidden_sizes: Optional[tuple[int, ...]] = None
  """Learned model: hidden widths of each ensemble member."""
  model_members: Optional[int] = None
  """Learned model: ensemble size."""
  model_lr: Optional[float] = None
  """Learned model: Adam learning rate."""
  model_batch_size: Optional[int] = None
  """Learned model: minibatch size of a model update."""
  model_schedule: Optional[Literal["fixed", "paper"]] = None
  """Learned model training: 'fixed' (model_updates_per_step per collected transition) or
  'paper' (one epoch over the replay buffer per environment step; very expensive)."""
  model_sampling: Optional[Literal["iid", "balanced"]] = None
  """Learned model rollouts: each row's member at each step. 'iid' (the reference's): a
  uniformly random member per row, computed by evaluating every member on every row;
  'balanced': a random permutation of the rows cut into one equal group per member (each
  row's member is still uniform and fresh every step; 1/members of the model work)."""
  model_updates_per_step: Optional[int] = None
  """Learned model, 'fixed' schedule: model updates per collected transition."""
  model_warmup_updates: Optional[int] = None
  """Learned model, 'fixed' schedule: model updates right after the warm-up ('paper': 200
  epochs over the warm-up data)."""

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    for k in ("hidden_sizes", "model_hidden_sizes", "dyna_schedule"):
      if d[k] is not None:
        d[k] = list(d[k])
    return d

  @classmethod
  def from_dict(cls, d: dict) -> "Config":
    d = dict(d)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ConfigError(f"config: unknown field(s) {sorted(unknown)}")
    for k in ("hidden_sizes", "model_hidden_sizes", "dyna_schedule"):
      if d.get(k) is not None:
        d[k] = tuple(d[k])
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# Modern SAC (CleanRL / SB3 style), tuned to be quick on small CPU problems.
_DEFAULT = dict(
    total_steps=20_000, eval_every=1000, eval_episodes=10, eval_deterministic=True,
    num_envs=1, warmup_steps=1000, replay_capacity=100_000, batch_size=256,
    updates_per_step=1, hidden_sizes=(256, 256), actor_lr=3e-4, critic_lr=3e-4,
    alpha_lr=3e-4, gamma=0.99, tau=0.005, init_alpha=1.0, target_entropy_per_dim=-1.0,
    alpha_param="log_alpha", std_param="log_std", bias_init=0.0)
_DEFAULT_MODEL = dict(model_hidden_sizes=(128, 128), model_members=5, model_lr=1e-3,
                      model_batch_size=256, model_schedule="fixed", model_updates_per_step=1,
                      model_warmup_updates=1000, model_sampling="iid")

# The reference paper's settings (paper-and-official-code.md §4, §5, §10, §14).
_PAPER = dict(
    total_steps=100_000, eval_every=1000, eval_episodes=128, eval_deterministic=False,
    num_envs=1, warmup_steps=512, replay_capacity=2**20, batch_size=256,
    updates_per_step=1, hidden_sizes=(256, 256), actor_lr=3e-4, critic_lr=3e-4,
    alpha_lr=5e-5, gamma=0.99, tau=0.005, init_alpha=1.0, target_entropy_per_dim=-0.5,
    alpha_param="alpha", std_param="softplus", bias_init=0.1)
_PAPER_MODEL = dict(model_hidden_sizes=(256, 256, 256, 256), model_members=5, model_lr=3e-4,
                    model_batch_size=256, model_schedule="paper", model_updates_per_step=1,
                    model_warmup_updates=0, model_sampling="iid")
MODEL_FIELDS = tuple(_DEFAULT_MODEL)

_LOCOMOTION = dict(total_steps=1_000_000, num_envs=128, warmup_steps=65_536,
                   eval_every=4992, action_repeat=2, episode_length=500)
_PAPER_ENV = {
    "inverted_pendulum": dict(total_steps=10_000, eval_every=100, action_repeat=4,
                              episode_length=250, gamma=0.95),
    "cartpole_swingup": dict(total_steps=100_000, eval_every=1000, episode_length=500),
    "hopper": dict(_LOCOMOTION),
    "walker2d": dict(_LOCOMOTION),
    "halfcheetah": dict(_LOCOMOTION, action_repeat=1, episode_length=1000, gamma=0.95,
                        batch_size=512),
}
# The paper's own tasks (envs/paper_cartpole.py, envs/paper_brax.py) take the same rows.
_PAPER_ENV.update({
    "paper_inverted_pendulum": dict(_PAPER_ENV["inverted_pendulum"]),
    "paper_cartpole": dict(total_steps=100_000, eval_every=1000, action_repeat=2,
                           episode_length=500),
    "paper_hopper": dict(_LOCOMOTION),
    "paper_walker2d": dict(_LOCOMOTION),
    "paper_halfcheetah": dict(_PAPER_ENV["halfcheetah"]),
})


def paper_preset_warning(cfg: Config) -> Optional[str]:
  """One warning line when the paper preset is used on an env that is not a paper task.

  The paper's hyperparameters on e.g. Brax's ``inverted_pendulum`` train a *different*
  task (|angle| > 0.2 terminates, 4-dim observation); the line names the paper task.
  """
  from mvelab import envs
  if cfg.preset != "paper" or envs.ENVS[cfg.env].family == "paper":
    return None
  counterpart = envs.registry.PAPER_COUNTERPART.get(cfg.env)
  instead = (f"use --env {counterpart} for the paper's task" if counterpart else
             f"the paper's tasks are {', '.join(envs.registry.paper_tasks())}")
  return (f"mvelab: warning: preset paper on {cfg.env}, which is not one of the paper's "
          f"tasks; {instead}")


def resolve(cfg: Config) -> Config:
  """Fills every None field from the preset and validates the result.

  Raises:
    ConfigError: a field is out of range or inconsistent (the message names it).
  """
  from mvelab import envs
  check_choice("preset", cfg.preset, PRESETS)
  check_choice("env", cfg.env, envs.ENVS)
  base = dict(_DEFAULT if cfg.preset == "default" else _PAPER)
  if cfg.preset == "paper":
    base.update(_PAPER_ENV.get(cfg.env, {}))
  check_choice("model", cfg.model, (None, "oracle", "learned"))
  if cfg.model == "learned":
    base.update(_DEFAULT_MODEL if cfg.preset == "default" else _PAPER_MODEL)
  else:
    for k in MODEL_FIELDS:
      if getattr(cfg, k) is not None:
        raise ConfigError(
            f"{k}: is a learned-model option, but model is {cfg.model!r}; use --model learned")
  if cfg.agent == "ddpg":
    base["exploration_noise"] = 0.1
  elif cfg.exploration_noise is not None:
    raise ConfigError("exploration_noise: only used with --agent ddpg")
  values = {}
  for f in dataclasses.fields(cfg):
    v = getattr(cfg, f.name)
    values[f.name] = base.get(f.name) if v is None else v
  spec = envs.ENVS[cfg.env]
  env_opts = envs.registry.validate(
      cfg.env, **{k: values[k] for k in ("backend", "action_repeat", "episode_length")
                  if k in spec.options or getattr(cfg, k) is not None})
  for k in ("backend", "action_repeat", "episode_length"):
    values[k] = env_opts.get(k)
  for k in ("hidden_sizes", "model_hidden_sizes"):
    if values[k] is not None:
      values[k] = tuple(values[k])
  if (cfg.preset == "paper" and cfg.model == "learned" and cfg.model_warmup_updates is None
      and values["model_schedule"] == "fixed"):
    # The paper trains the model 200 epochs on the warm-up data; the fixed schedule
    # does the same number of updates.
    values["model_warmup_updates"] = 200 * values["warmup_steps"] // values["model_batch_size"]
  out = Config(**values)
  validate(out)
  if out.model_error != "none":
    from mvelab.models import perturbed
    perturbed.check(envs.make(out.env, **env_opts), out.model_error, out.model_error_scale)
  return out


def _pos_int(name, v):
  if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
    raise ConfigError(f"{name}: must be a positive integer, got {v!r}")


def _pos_float(name, v):
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0) or not math.isfinite(v):
    raise ConfigError(f"{name}: must be a positive finite number, got {v!r}")


def validate(cfg: Config) -> None:
  """Checks a resolved config; raises ConfigError naming the first bad field."""
  for name in ("num_seeds", "total_steps", "eval_every", "eval_episodes", "num_envs",
               "replay_capacity", "batch_size", "updates_per_step"):
    _pos_int(name, getattr(cfg, name))
  if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
    raise ConfigError(f"seed: must be a non-negative integer, got {cfg.seed!r}")
  if isinstance(cfg.warmup_steps, bool) or not isinstance(cfg.warmup_steps, int) or cfg.warmup_steps < 0:
    raise ConfigError(f"warmup_steps: must be a non-negative integer, got {cfg.warmup_steps!r}")
  for name in ("actor_lr", "critic_lr", "alpha_lr", "init_alpha", "tau"):
    _pos_float(name, getattr(cfg, name))
  if not 0.0 < cfg.gamma <= 1.0:
    raise ConfigError(f"gamma: must be in (0, 1], got {cfg.gamma!r}")
  if not 0.0 < cfg.tau <= 1.0:
    raise ConfigError(f"tau: must be in (0, 1], got {cfg.tau!r}")
  if not cfg.hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h <= 0
                                 for h in cfg.hidden_sizes):
    raise ConfigError(
        f"hidden_sizes: must be one or more positive integers, got {cfg.hidden_sizes!r}")
  check_choice("alpha_param", cfg.alpha_param, ("log_alpha", "alpha"))
  check_choice("std_param", cfg.std_param, ("log_std", "softplus"))
  if cfg.eval_every % cfg.num_envs:
    raise ConfigError(
        f"eval_every: must be a multiple of num_envs={cfg.num_envs}, got {cfg.eval_every}")
  if cfg.warmup_steps % cfg.num_envs:
    raise ConfigError(
        f"warmup_steps: must be a multiple of num_envs={cfg.num_envs}, got {cfg.warmup_steps}")
  if cfg.replay_capacity < cfg.num_envs:
    raise ConfigError(
        f"replay_capacity: must be at least num_envs={cfg.num_envs}, got {cfg.replay_capacity}")
  if cfg.warmup_steps < cfg.batch_size and cfg.warmup_steps < cfg.total_steps:
    # Sampling from a buffer smaller than a batch is legal (with replacement) but the
    # first updates would see only a handful of transitions; require at least one batch.
    raise ConfigError(
        f"warmup_steps: must be at least batch_size={cfg.batch_size} (got {cfg.warmup_steps})")
  _validate_expansion(cfg)
  if cfg.total_steps <= cfg.warmup_steps:
    raise ConfigError(
        f"total_steps: must exceed warmup_steps={cfg.warmup_steps}, got {cfg.total_steps}")


def _validate_expansion(cfg: Config) -> None:
  check_choice("agent", cfg.agent, ("sac", "ddpg"))
  check_choice("expansion", cfg.expansion, EXPANSIONS)
  if isinstance(cfg.horizon, bool) or not isinstance(cfg.horizon, int) or cfg.horizon < 0:
    raise ConfigError(f"horizon: must be a non-negative integer, got {cfg.horizon!r}")
  if cfg.expansion in MODEL_EXPANSIONS and cfg.model is None:
    raise ConfigError(f"model: required for expansion={cfg.expansion}; allowed: oracle, learned")
  if cfg.expansion in ("none", "retrace") and cfg.model is not None:
    raise ConfigError(f"model: not used by expansion={cfg.expansion} (it needs no dynamics "
                      f"model); drop --model or use --expansion critic/actor/steve")
  if cfg.expansion == "none" and cfg.horizon != 0:
    raise ConfigError(f"horizon: expansion=none has no horizon (got {cfg.horizon}); choose "
                      f"--expansion critic, actor or retrace")
  if not 0.0 <= cfg.lam <= 1.0:
    raise ConfigError(f"lam: must be in [0, 1], got {cfg.lam!r}")
  _pos_int("particles", cfg.particles)
  if cfg.particles > 1 and cfg.expansion not in ("critic", "steve"):
    raise ConfigError("particles: only used by --expansion critic and steve")
  if cfg.particles > 1 and cfg.expansion == "steve" and cfg.model == "learned":
    raise ConfigError("particles: STEVE with the learned model uses one rollout per "
                      "ensemble member (see --model_members)")
  if cfg.tdk and cfg.expansion != "critic":
    raise ConfigError("tdk: only used by --expansion critic")
  check_choice("ce_values", cfg.ce_values, CE_VALUES)
  if cfg.ce_values != "control_variate" and cfg.expansion != "critic":
    raise ConfigError("ce_values: only used by --expansion critic")
  if cfg.expansion == "retrace" and cfg.warmup_steps // cfg.num_envs < cfg.horizon + 1:
    raise ConfigError(f"warmup_steps: retrace windows need at least horizon+1="
                      f"{cfg.horizon + 1} steps per environment before learning starts")
  check_choice("model_error", cfg.model_error, ("none", "physics", "noise"))
  scale = cfg.model_error_scale
  if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
      math.isfinite(scale) and scale >= 0):
    raise ConfigError(f"model_error_scale: must be a finite number >= 0, got {scale!r}")
  if cfg.model_error != "none" and cfg.model != "oracle":
    raise ConfigError(f"model_error: perturbs the oracle; needs --model oracle (got "
                      f"{cfg.model!r})")
  if cfg.model_error == "none" and scale != 0:
    raise ConfigError("model_error_scale: needs --model_error physics or noise")
  _validate_dyna(cfg)
  if cfg.agent == "ddpg":
    _pos_float("exploration_noise", cfg.exploration_noise)
  if cfg.model == "learned":
    if not cfg.model_hidden_sizes or any(
        isinstance(h, bool) or not isinstance(h, int) or h <= 0 for h in cfg.model_hidden_sizes):
      raise ConfigError(f"model_hidden_sizes: must be positive integers, got "
                        f"{cfg.model_hidden_sizes!r}")
    for name in ("model_members", "model_batch_size", "model_updates_per_step"):
      _pos_int(name, getattr(cfg, name))
    _pos_float("model_lr", cfg.model_lr)
    check_choice("model_schedule", cfg.model_schedule, ("fixed", "paper"))
    check_choice("model_sampling", cfg.model_sampling, MODEL_SAMPLING)
    if cfg.model_sampling == "balanced" and cfg.expansion == "steve":
      raise ConfigError("model_sampling: STEVE rolls every ensemble member on every row "
                        "(one rollout per member); balanced applies to critic, actor and "
                        "dyna rollouts only")
    w = cfg.model_warmup_updates
    if isinstance(w, bool) or not isinstance(w, int) or w < 0:
      raise ConfigError(f"model_warmup_updates: must be a non-negative integer, got {w!r}")


def _validate_dyna(cfg: Config) -> None:
  if cfg.expansion != "dyna":
    for k, default in DYNA_DEFAULTS.items():
      if getattr(cfg, k) != default:
        raise ConfigError(f"{k}: only used by --expansion dyna")
    return
  if cfg.horizon < 1:
    raise ConfigError(f"horizon: dyna needs a rollout length >= 1, got {cfg.horizon}")
  r = cfg.dyna_real_ratio
  if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0.0 <= r <= 1.0:
    raise ConfigError(f"dyna_real_ratio: must be in [0, 1], got {r!r}")
  _pos_int("dyna_rollouts", cfg.dyna_rollouts)
  _pos_int("dyna_retain", cfg.dyna_retain)
  s = cfg.dyna_schedule
  if s is not None:
    if (len(s) != 4 or any(isinstance(x, bool) or not isinstance(x, int) for x in s)
        or not (0 <= s[0] < s[1] and 1 <= s[2] <= s[3])):
      raise ConfigError(f"dyna_schedule: must be four integers min_step < max_step, "
                        f"1 <= min_k <= max_k, got {s!r}")
    if s[3] != cfg.horizon:
      raise ConfigError(f"dyna_schedule: max_k ({s[3]}) must equal --horizon "
                        f"({cfg.horizon}): the model buffer is allocated at it")


def num_chunks(cfg: Config) -> int:
  """Number of training chunks (one evaluation after each) after the warm-up."""
  return -(-(cfg.total_steps - cfg.warmup_steps) // cfg.eval_every)
