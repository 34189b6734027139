"""Actor and twin-critic networks (flax.linen).

Initialisation follows the reference code: variance scaling (scale 1, fan-in, truncated
normal) for every weight; biases set to a constant (0.1 in the ``paper`` preset, 0 in
``default``).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

_KERNEL_INIT = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class MLP(nn.Module):
  """ReLU MLP: hidden layers then a linear output of size ``out_size``."""

  hidden_sizes: Sequence[int]
  out_size: int
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, x):
    bias = nn.initializers.constant(self.bias_init)
    for width in self.hidden_sizes:
      x = nn.relu(nn.Dense(width, kernel_init=_KERNEL_INIT, bias_init=bias)(x))
    return nn.Dense(self.out_size, kernel_init=_KERNEL_INIT, bias_init=bias)(x)


class Actor(nn.Module):
  """Policy head: ``obs [..., obs] -> (loc [..., act], raw_scale [..., act])``."""

  hidden_sizes: Sequence[int]
  action_size: int
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, obs):
    out = MLP(self.hidden_sizes, 2 * self.action_size, self.bias_init)(obs)
    loc, raw_scale = jnp.split(out, 2, axis=-1)
    return loc, raw_scale


class Critic(nn.Module):
  """``num_critics`` independent Q-networks: ``(obs, action) -> q [..., num_critics]``.

  The networks are separate modules (``MLP_0``, ``MLP_1``, ...) evaluated one after the
  other, not an ``nn.vmap``-ed stack: XLA:CPU runs two plain matmuls ~10% faster than one
  batched matmul of the same size (measured: 0.99 vs 1.10 ms per forward+backward of the
  (256, 256) twin at batch 256).
  """

  hidden_sizes: Sequence[int]
  bias_init: float = 0.0
  num_critics: int = 2

  @nn.compact
  def __call__(self, obs, action):
    x = jnp.concatenate([obs, action], axis=-1)
    return jnp.concatenate([MLP(self.hidden_sizes, 1, self.bias_init)(x)
                            for _ in range(self.num_critics)], axis=-1)


def init_params(module: nn.Module, key: jax.Array, *example_inputs):
  return module.init(key, *example_inputs)["params"]
