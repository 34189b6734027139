"""Environments: one protocol (``Env``/``EnvState``), pure-JAX classic control, Brax adapters.

``make(name, **options)`` builds an environment by name; ``list_envs()`` lists them.
"""

from __future__ import annotations

from mvelab.envs.base import Env, EnvState, tree_select
from mvelab.envs.registry import ENVS, make, list_envs

__all__ = ["Env", "EnvState", "tree_select", "ENVS", "make", "list_envs"]
