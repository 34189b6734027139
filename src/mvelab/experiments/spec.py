"""Sweep specs: a YAML grid of configurations, validated and expanded into named runs.

A spec names environments, presets, a number of seeds and a list of run blocks; each
block is a product over its list-valued axes (agents, expansions, models, horizons).
``parse_spec`` checks every key and value, builds one ``Config`` per grid point, resolves
and validates it, and drops duplicates; every problem is a ``ConfigError`` whose message
starts with ``spec:`` and names the key path. See docs/sweeps.md for the schema.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import os
import re
import types
import typing
from typing import Any, Iterator, Literal, Optional

import yaml

from mvelab import config as config_lib
from mvelab.config import Config
from mvelab.errors import ConfigError
from mvelab.fileio import atomic_write as write_atomic

TOP_KEYS = ("name", "envs", "presets", "seeds", "steps", "overrides", "runs")
BLOCK_KEYS = ("agents", "expansions", "models", "horizons", "overrides")
#: Config fields the grid sets, and the spec key that sets each.
GRID_FIELDS = {"env": "envs", "preset": "presets", "agent": "runs[].agents",
               "expansion": "runs[].expansions", "model": "runs[].models",
               "horizon": "runs[].horizons", "num_seeds": "seeds", "total_steps": "steps"}
#: Expansions that use a dynamics model (``models`` is dropped for the others).
MODEL_EXPANSIONS = config_lib.MODEL_EXPANSIONS
_MISSING = object()


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One run of a sweep.

  Attributes:
    name: readable, filesystem-safe, unique within the spec.
    config: the config as the spec gives it (None fields are filled from the preset
      when the run starts); already checked with ``config.resolve``.
  """

  name: str
  config: Config


@dataclasses.dataclass
class Spec:
  """A parsed, validated sweep spec.

  Attributes:
    name: the spec's ``name`` (or None).
    runs: the expanded, deduplicated runs, in spec order.
    source: the spec mapping as given.
    text: the file's text when loaded with ``load_spec`` (kept verbatim, comments too).
  """

  name: Optional[str]
  runs: list
  source: dict
  text: Optional[str] = None

  def grid(self) -> dict:
    """``{run name: config dict}``: what two specs must share to be the same sweep."""
    return {r.name: r.config.to_dict() for r in self.runs}


# ------------------------------------------------------------------------------ I/O
def load_spec(path: str) -> Spec:
  """Reads and parses a YAML spec file.

  Raises:
    ConfigError: the file is missing or unreadable, is not valid YAML, or the spec is
      invalid (the message names the key path).
  """
  try:
    with open(path) as f:
      text = f.read()
  except OSError as e:
    raise ConfigError(f"spec: cannot read {path!r}: {e.strerror or e}") from None
  try:
    data = yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise ConfigError(f"spec: {path!r} is not valid YAML: {_yaml_problem(e)}") from None
  if data is None:
    raise ConfigError(f"spec: {path!r} is empty; expected a mapping with keys "
                      f"{', '.join(TOP_KEYS)}")
  return parse_spec(data, text=text)


def _yaml_problem(e: yaml.YAMLError) -> str:
  mark = getattr(e, "problem_mark", None)
  problem = getattr(e, "problem", None)
  if problem and mark is not None:
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
  return str(e).splitlines()[0] if str(e) else type(e).__name__


def dump_spec(spec_dict: dict, path: str) -> None:
  """Writes a spec mapping as YAML to ``path`` atomically (tuples become lists)."""
  text = yaml.safe_dump(_plain(spec_dict), sort_keys=False, default_flow_style=None)
  write_atomic(path, text)


def _plain(x):
  if isinstance(x, dict):
    return {k: _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return x


# -------------------------------------------------------------------------- parsing
def _err(path: str, msg: str) -> ConfigError:
  return ConfigError(f"spec: {path}: {msg}" if path else f"spec: {msg}")


def _check_keys(path: str, mapping: dict, allowed: tuple) -> None:
  for key in mapping:
    if key not in allowed:
      close = difflib.get_close_matches(str(key), allowed, n=1)
      hint = f" (did you mean {close[0]!r}?)" if close else ""
      raise _err(path, f"unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _choices(path: str, value, allowed: tuple, what: str) -> list:
  """A string or list of strings from ``allowed``, as a list (error if empty)."""
  items = value if isinstance(value, list) else [value]
  if isinstance(value, list) and not value:
    raise _err(path, "the grid is empty (an empty list); give at least one value")
  for k, v in enumerate(items):
    where = f"{path}[{k}]" if isinstance(value, list) else path
    if not isinstance(v, str):
      raise _err(where, f"must be {what} (a string), or a list of them, got {v!r}")
    if v not in allowed:
      raise _err(where, f"unknown value {v!r}; allowed: {', '.join(map(str, allowed))}")
  return list(dict.fromkeys(items))


def _horizons(path: str, value) -> list:
  items = value if isinstance(value, list) else [value]
  if isinstance(value, list) and not value:
    raise _err(path, "the grid is empty (an empty list); give at least one horizon")
  if not all(_is_int(h) and h >= 0 for h in items):
    raise _err(path, f"must be a list of non-negative integers, got {value!r}")
  return list(dict.fromkeys(items))


def _positive(path: str, value) -> int:
  if not _is_int(value) or value <= 0:
    raise _err(path, f"must be a positive integer, got {value!r}")
  return value


def _literal(field: str) -> tuple:
  """The allowed values of a ``Literal``-typed Config field."""
  hint = _hints()[field]
  while typing.get_origin(hint) in (typing.Union, types.UnionType, typing.Annotated):
    hint = next(a for a in typing.get_args(hint) if a is not type(None))
  return typing.get_args(hint)


_HINTS: dict = {}


def _hints() -> dict:
  if not _HINTS:
    _HINTS.update(typing.get_type_hints(Config, include_extras=True))
  return _HINTS


def _field_value(path: str, v, hint):
  """Checks ``v`` against a Config field's type; returns it normalised (lists->tuples)."""
  origin = typing.get_origin(hint)
  if origin is typing.Annotated:
    return _field_value(path, v, typing.get_args(hint)[0])
  if origin in (typing.Union, types.UnionType):
    args = typing.get_args(hint)
    if v is None and type(None) in args:
      return None
    return _field_value(path, v, next(a for a in args if a is not type(None)))
  if origin is Literal:
    allowed = typing.get_args(hint)
    if not isinstance(v, str) or v not in allowed:
      raise _err(path, f"unknown value {v!r}; allowed: {', '.join(allowed)}")
    return v
  if origin is tuple:
    if not isinstance(v, (list, tuple)) or not all(_is_int(x) for x in v):
      raise _err(path, f"must be a list of integers, got {v!r}")
    return tuple(v)
  if hint is bool:
    if not isinstance(v, bool):
      raise _err(path, f"must be true or false, got {v!r}")
    return v
  if hint is int:
    if not _is_int(v):
      raise _err(path, f"must be an integer, got {v!r}")
    return v
  if hint is float:
    if isinstance(v, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
      try:
        return float(v)
      except ValueError:
        pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      raise _err(path, f"must be a number, got {v!r}")
    return float(v)
  if hint is str:
    if not isinstance(v, str):
      raise _err(path, f"must be a string, got {v!r}")
    return v
  raise _err(path, f"cannot be set from a spec (type {hint})")  # pragma: no cover


def _overrides(path: str, value) -> dict:
  """Checks an ``overrides`` mapping: known, non-grid Config fields of the right type."""
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise _err(path, f"must be a mapping of Config fields to values, got {value!r}")
  fields = [f.name for f in dataclasses.fields(Config)]
  out = {}
  for key, v in value.items():
    where = f"{path}.{key}"
    if key not in fields:
      close = difflib.get_close_matches(str(key), fields, n=3)
      hint = (f"did you mean {' or '.join(map(repr, close))}?" if close
              else "see `mvelab train --help` for the fields")
      raise _err(where, f"unknown Config field; {hint}")
    if key in GRID_FIELDS:
      raise _err(where, f"is a grid field; set it with the spec key "
                        f"'{GRID_FIELDS[key]}' instead of an override")
    out[key] = _field_value(where, v, _hints()[key])
  return out


def _block_hash(own: dict) -> str:
  text = json.dumps(own, sort_keys=True)
  return hashlib.sha1(text.encode()).hexdigest()[:6]


def _safe(part: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.]+", "_", str(part))


def run_name(cfg: Config, suffix: str = "") -> str:
  """``<env>-<preset>-<agent>-<expansion>[-<model>]-H<horizon>[-<suffix>]``."""
  parts = [cfg.env, cfg.preset, cfg.agent, cfg.expansion]
  if cfg.model is not None:
    parts.append(cfg.model)
  parts.append(f"H{cfg.horizon}")
  if suffix:
    parts.append(suffix)
  return "-".join(_safe(p) for p in parts)


def _block_configs(i: int, block: dict, top: dict) -> Iterator[tuple]:
  """Yields ``(config, name suffix)`` for each grid point of block ``runs[i]``."""
  path = f"runs[{i}]"
  agents = _choices(f"{path}.agents", block.get("agents", "sac"), _literal("agent"), "an agent")
  expansions = _choices(f"{path}.expansions", block.get("expansions", "none"),
                        _literal("expansion"), "an expansion")
  models = ([None] if "models" not in block else
            _choices(f"{path}.models", block["models"], _literal("model"), "a model"))
  horizons = _horizons(f"{path}.horizons", block.get("horizons", 0))
  own = _overrides(f"{path}.overrides", block.get("overrides"))
  merged = {**top["overrides"], **own}
  suffix = _block_hash(own) if own else ""
  for env, preset, agent, expansion, model, horizon in itertools.product(
      top["envs"], top["presets"], agents, expansions, models, horizons):
    fields = dict(merged, env=env, preset=preset, agent=agent, expansion=expansion,
                  model=model if expansion in MODEL_EXPANSIONS else None,
                  horizon=0 if expansion == "none" else horizon, num_seeds=top["seeds"])
    if top["steps"] is not None:
      fields["total_steps"] = top["steps"]
    yield Config(**fields), suffix


def _resolved_key(path: str, name: str, cfg: Config) -> str:
  """Resolves and validates ``cfg``; returns its resolved JSON (the dedupe key)."""
  try:
    return config_lib.resolve(cfg).to_json()
  except (ValueError, TypeError) as e:  # ConfigError is a ValueError
    raise _err(f"{path} (run {name})", str(e)) from None


def _top(data: dict) -> dict:
  from mvelab import envs
  _check_keys("", data, TOP_KEYS)
  name = data.get("name")
  if name is not None and not isinstance(name, str):
    raise _err("name", f"must be a string, got {name!r}")
  if "envs" not in data:
    raise _err("envs", "required: an environment name or a list of them; allowed: "
                       + ", ".join(envs.ENVS))
  if "seeds" not in data:
    raise _err("seeds", "required: the number of seeds per run (a positive integer)")
  steps = data.get("steps")
  return dict(
      name=name,
      envs=_choices("envs", data["envs"], tuple(envs.ENVS), "an environment"),
      presets=_choices("presets", data.get("presets", "default"), config_lib.PRESETS,
                       "a preset"),
      seeds=_positive("seeds", data["seeds"]),
      steps=None if steps is None else _positive("steps", steps),
      overrides=_overrides("overrides", data.get("overrides")))


def parse_spec(data: Any, text: Optional[str] = None) -> Spec:
  """Validates a spec mapping and expands it into runs.

  Args:
    data: the spec as a mapping (e.g. ``yaml.safe_load`` of a spec file).
    text: the file's text, kept in ``Spec.text`` to write it back verbatim.

  Raises:
    ConfigError: naming the key path and what is allowed.
  """
  if not isinstance(data, dict):
    raise _err("", f"must be a mapping with keys {', '.join(TOP_KEYS)}, got {data!r}")
  top = _top(data)
  blocks = data.get("runs", [{}])
  if not isinstance(blocks, list):
    raise _err("runs", f"must be a list of run blocks (mappings), got {blocks!r}")
  if not blocks:
    raise _err("runs", "the grid is empty (an empty list); give at least one block, e.g. {}")
  runs, seen, names = [], set(), {}
  for i, block in enumerate(blocks):
    if block is None:
      block = {}
    if not isinstance(block, dict):
      raise _err(f"runs[{i}]", f"must be a mapping with keys {', '.join(BLOCK_KEYS)}, "
                               f"got {block!r}")
    _check_keys(f"runs[{i}]", block, BLOCK_KEYS)
    for cfg, suffix in _block_configs(i, block, top):
      name = run_name(cfg, suffix)
      key = _resolved_key(f"runs[{i}]", name, cfg)
      if key in seen:
        continue
      if name in names:  # same name, different config: only on a hash collision
        raise _err(f"runs[{i}]", f"run name {name!r} is used by two different configs")
      seen.add(key)
      names[name] = key
      runs.append(RunSpec(name, cfg))
  return Spec(top["name"], runs, data, text)
