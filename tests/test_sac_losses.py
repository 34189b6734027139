"""Hand-computed unit tests of the SAC loss functions (fake networks, exact numbers)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab.agents import sac


class FakeNets:
  """Stands in for SACNets: Q and the policy are fixed tables we can compute by hand."""

  def __init__(self, q_table, action, log_prob):
    self.q_table = jnp.asarray(q_table, jnp.float32)  # [B, 2]
    self.action = jnp.asarray(action, jnp.float32)
    self.log_prob = jnp.asarray(log_prob, jnp.float32)

  def q(self, critic_params, obs, action):
    # Q_i(s, a) = w * table_i + sum(action); w is the "parameter".
    return critic_params["w"] * self.q_table + jnp.sum(action, -1, keepdims=True)

  def sample(self, actor_params, obs, key):
    return self.action * actor_params["s"], self.log_prob * actor_params["s"]


def test_sac_target_bootstraps_through_truncation_not_termination():
  r = jnp.array([1.0, 2.0, 3.0])
  terminated = jnp.array([False, True, False])
  v = jnp.array([10.0, 10.0, -5.0])
  y = sac.sac_target(r, terminated, v, 0.9)
  np.testing.assert_allclose(y, [1.0 + 9.0, 2.0, 3.0 - 4.5], rtol=1e-6)


def test_critic_loss_hand_computed():
  nets = FakeNets([[1.0, 3.0], [2.0, 2.0]], np.zeros((2, 1)), np.zeros(2))
  params = {"w": jnp.float32(1.0)}
  action = jnp.zeros((2, 1))
  target = jnp.array([2.0, 0.0])
  loss, q_mean = sac.critic_loss(params, nets, None, action, target)
  # errors [[-1, 1], [2, 2]] -> squares mean 2.5 -> half 1.25
  np.testing.assert_allclose(loss, 1.25, rtol=1e-6)
  np.testing.assert_allclose(q_mean, 2.0, rtol=1e-6)
  # d/dw 0.5*mean((w*t - y)^2) = mean((w*t - y) * t) = (-1*1 + 1*3 + 2*2 + 2*2)/4 = 2.5
  g = jax.grad(lambda p: sac.critic_loss(p, nets, None, action, target)[0])(params)
  np.testing.assert_allclose(g["w"], 2.5, rtol=1e-6)
  # The target is a constant: no gradient flows into it.
  gy = jax.grad(lambda y: sac.critic_loss(params, nets, None, action, y)[0])(target)
  np.testing.assert_allclose(gy, 0.0)


def test_actor_loss_hand_computed():
  nets = FakeNets([[1.0, 3.0], [4.0, 2.0]], [[0.5], [-0.5]], [-1.0, -2.0])
  critic = {"w": jnp.float32(1.0)}
  actor = {"s": jnp.float32(1.0)}
  loss, log_prob = sac.actor_loss(actor, nets, critic, 0.5, None, None)
  # min Q: [min(1.5, 3.5), min(3.5, 1.5)] = [1.5, 1.5]; alpha*logp = [-0.5, -1.0]
  np.testing.assert_allclose(loss, np.mean([-0.5 - 1.5, -1.0 - 1.5]), rtol=1e-6)
  np.testing.assert_allclose(log_prob, [-1.0, -2.0])


@pytest.mark.parametrize("kind, expected_loss, expected_grad", [
    ("log_alpha", 3.0 * math.log(2.0), 3.0),
    ("alpha", 6.0, 6.0),
])
def test_alpha_loss_hand_computed(kind, expected_loss, expected_grad):
  p = jnp.float32(math.log(2.0))
  log_prob = jnp.array([-1.0, -3.0])
  target_entropy = -1.0
  # e = -log pi - target = [2, 4], mean 3.
  loss, grad = jax.value_and_grad(sac.alpha_loss)(p, log_prob, target_entropy, kind)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
  np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)
  # Entropy above target (e > 0) => gradient descent lowers alpha.
  assert grad > 0


def test_soft_value_uses_twin_minimum_and_entropy():
  nets = FakeNets([[1.0, 3.0], [4.0, 2.0]], [[0.0], [0.0]], [-1.0, 1.0])
  v = sac.soft_value(nets, {"s": 1.0}, {"w": 1.0}, 0.5, None, None)
  np.testing.assert_allclose(v, [1.0 + 0.5, 2.0 - 0.5], rtol=1e-6)


def test_polyak():
  out = sac.polyak({"a": jnp.array([0.0, 10.0])}, {"a": jnp.array([1.0, 0.0])}, 0.1)
  np.testing.assert_allclose(out["a"], [0.1, 9.0], rtol=1e-6)


def test_real_networks_shapes_and_finite_grads():
  nets = sac.SACNets.make(3, 2, (8, 8), bias_init=0.1, std_param="softplus")
  actor, critic = nets.init(jax.random.PRNGKey(0), 3, 2)
  obs = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  a, logp = nets.sample(actor, obs, jax.random.PRNGKey(2))
  assert a.shape == (5, 2) and logp.shape == (5,)
  assert np.all(np.abs(np.asarray(a)) < 1)
  assert nets.q(critic, obs, a).shape == (5, 2)
  # The two critics are independent networks (different initial weights).
  q = np.asarray(nets.q(critic, obs, a))
  assert not np.allclose(q[:, 0], q[:, 1])
  # Paper init: every bias starts at 0.1.
  biases = [x for path, x in jax.tree_util.tree_leaves_with_path(actor)
            if "bias" in jax.tree_util.keystr(path)]
  assert biases and all(np.allclose(b, 0.1) for b in biases)
  g = jax.grad(lambda p: sac.actor_loss(p, nets, critic, 0.2, obs, jax.random.PRNGKey(3))[0])(
      actor)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(g))
