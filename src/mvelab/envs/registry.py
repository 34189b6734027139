"""Environment registry: names, allowed options, and ``make``."""

from __future__ import annotations

import dataclasses
from typing import Callable

from mvelab.errors import ConfigError, check_choice


@dataclasses.dataclass(frozen=True)
class EnvSpec:
  """How to build one named environment.

  Attributes:
    name: registry name.
    family: ``"classic"`` (pure JAX), ``"brax"``, or ``"paper"`` (the reference paper's
      own tasks, ``mvelab.envs.paper_cartpole`` and ``mvelab.envs.paper_brax``).
    factory: ``factory(**options) -> Env``; imported lazily.
    options: allowed keyword options and their defaults.
    backends: physics backends allowed for the ``backend`` option (classic: ``("jax",)``).
  """

  name: str
  family: str
  factory: Callable
  options: dict
  backends: tuple


def _classic(cls_name):
  def factory(**options):
    from mvelab.envs import classic
    return getattr(classic, cls_name)(**options)
  return factory


def _paper_cartpole(cls_name):
  def factory(**options):
    from mvelab.envs import paper_cartpole
    return getattr(paper_cartpole, cls_name)(**options)
  return factory


def _paper_brax(brax_name):
  def factory(**options):
    from mvelab.envs import paper_brax
    return paper_brax.PaperBraxEnv(brax_name, **options)
  return factory


def _brax(brax_name):
  def factory(**options):
    from mvelab.envs import brax_env
    return brax_env.BraxEnv(brax_name, **options)
  return factory


BRAX_BACKENDS = ("spring", "positional", "generalized", "mjx")
#: Backends of the paper locomotion tasks (no mjx: see envs/paper_brax.py).
PAPER_BRAX_BACKENDS = ("spring", "positional", "generalized")
#: Default physics backend for locomotion: spring, the fastest with contacts on CPU
#: (measurements.md §2: hopper 256 x 30-step rollout 85 ms vs 589 ms generalized).
DEFAULT_BRAX_BACKEND = "spring"
#: The pendulums default to generalized: the physics Brax's own SAC is known to solve.
#: On spring the inverted pendulum is a different system (soft joints, and a 0.02 s agent
#: step instead of 0.04 s, so 1000 steps cover half the time): mvelab SAC reached a return
#: of ~90 in 20k steps there, versus 1000 by 8k steps on generalized (docs/sac.md, "Results").
PENDULUM_BRAX_BACKEND = "generalized"

ENVS: dict[str, EnvSpec] = {}


def _register(spec: EnvSpec) -> None:
  ENVS[spec.name] = spec


_register(EnvSpec("pendulum", "classic", _classic("Pendulum"),
                  dict(action_repeat=1, episode_length=200), ("jax",)))
_register(EnvSpec("cartpole_swingup", "classic", _classic("CartpoleSwingup"),
                  dict(action_repeat=1, episode_length=500), ("jax",)))
for _name in ("inverted_pendulum", "inverted_double_pendulum", "hopper", "walker2d",
              "halfcheetah", "ant"):
  _backend = PENDULUM_BRAX_BACKEND if "pendulum" in _name else DEFAULT_BRAX_BACKEND
  _register(EnvSpec(_name, "brax", _brax(_name),
                    dict(backend=_backend, action_repeat=1, episode_length=1000),
                    BRAX_BACKENDS))


# The reference paper's own tasks (paper-and-official-code.md §3).
_register(EnvSpec("paper_inverted_pendulum", "paper", _paper_cartpole("PaperInvertedPendulum"),
                  dict(action_repeat=4, episode_length=250), ("jax",)))
_register(EnvSpec("paper_cartpole", "paper", _paper_cartpole("PaperCartpole"),
                  dict(action_repeat=2, episode_length=500), ("jax",)))
for _name, _repeat, _length in (("hopper", 2, 500), ("walker2d", 2, 500),
                                ("halfcheetah", 1, 1000)):
  _register(EnvSpec(f"paper_{_name}", "paper", _paper_brax(_name),
                    dict(backend=DEFAULT_BRAX_BACKEND, action_repeat=_repeat,
                         episode_length=_length), PAPER_BRAX_BACKENDS))

#: The paper task that corresponds to each non-paper env (for the ``paper`` preset warning).
PAPER_COUNTERPART = {"inverted_pendulum": "paper_inverted_pendulum",
                     "cartpole_swingup": "paper_cartpole", "hopper": "paper_hopper",
                     "walker2d": "paper_walker2d", "halfcheetah": "paper_halfcheetah"}


def paper_tasks() -> list:
  """Names of the reference paper's own tasks."""
  return [name for name, spec in ENVS.items() if spec.family == "paper"]


def validate(name: str, **options) -> dict:
  """Checks a name and options; returns the full option dict with defaults filled in."""
  check_choice("env", name, ENVS)
  spec = ENVS[name]
  for key in options:
    if key not in spec.options:
      raise ConfigError(
          f"env option {key!r} is not known for {name}; allowed: {', '.join(spec.options)}")
  resolved = {**spec.options, **{k: v for k, v in options.items() if v is not None}}
  if "backend" in resolved:
    check_choice("backend", resolved["backend"], spec.backends)
  for key in ("action_repeat", "episode_length"):
    value = resolved[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
      raise ConfigError(f"{key}: must be a positive integer, got {value!r}")
  return resolved


def make(name: str, **options):
  """Builds environment ``name`` with ``options`` (see ``list_envs``).

  Raises:
    ConfigError (a ValueError): unknown name or option, or a bad option value.
  """
  resolved = validate(name, **options)
  return ENVS[name].factory(**resolved)


def list_envs() -> list[EnvSpec]:
  return list(ENVS.values())
