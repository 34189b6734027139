"""Perturbed oracles (``mvelab.models.perturbed``): exact at ε = 0, error growing with ε."""

import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mvelab import envs, models
from mvelab.config import Config, resolve
from mvelab.core import normalization
from mvelab.errors import ConfigError
from mvelab.models import perturbed

B, H = 64, 6
SCALES = (0.0, 0.01, 0.03, 0.1, 0.3)
CASES = [("pendulum", "physics"), ("pendulum", "noise"),
         ("paper_inverted_pendulum", "physics"), ("paper_cartpole", "noise"),
         ("cartpole_swingup", "physics")]


def _batch(env, key):
  """``B`` replayed transitions after a few random steps, and their obs statistics."""
  k_init, k_act, k_steps = jax.random.split(key, 3)
  sim = jax.vmap(env.init_sim)(jax.random.split(k_init, B))
  for a in jax.random.uniform(k_steps, (5, B, env.action_size), minval=-1, maxval=1):
    sim = jax.vmap(env.simulate)(sim, a)[0]
  action = jax.random.uniform(k_act, (B, env.action_size), minval=-1, maxval=1)
  obs = jax.vmap(env.observe)(sim)
  _, obs_t, reward_t, _ = jax.vmap(env.simulate)(sim, action)
  stats = normalization.update(normalization.init(env.obs_size), obs)
  return SimpleNamespace(obs_tm1=obs, sim_tm1=sim, action_tm1=action, obs_t=obs_t,
                         reward_t=reward_t), stats


def _policy(obs, key):
  a = jnp.tanh(jax.random.normal(key, (obs.shape[0], 1)) + 0.5 * obs[:, :1])
  return a, -jnp.sum(a ** 2, -1)


@pytest.mark.parametrize("name,kind", CASES)
def test_zero_error_is_the_oracle_bit_for_bit(name, kind):
  env = envs.make(name)
  batch, stats = _batch(env, jax.random.PRNGKey(0))
  run = lambda m: jax.jit(lambda k: m.rollout((), stats, batch.obs_tm1, batch.sim_tm1,
                                              _policy, k, H))(jax.random.PRNGKey(1))
  want = run(models.make_model("oracle", env))
  got = run(models.make_model("oracle", env, error=kind, error_scale=0.0))
  assert isinstance(models.make_model("oracle", env, error=kind), perturbed.PerturbedOracle)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name,kind", CASES)
def test_one_step_error_grows_with_scale(name, kind):
  env = envs.make(name)
  batch, stats = _batch(env, jax.random.PRNGKey(2))
  errors = []
  for scale in SCALES:
    model = models.make_model("oracle", env, error=kind, error_scale=scale)
    err = jax.jit(lambda k, m=model: perturbed.one_step_error(m, (), stats, batch, k))(
        jax.random.PRNGKey(3))
    errors.append(float(jnp.mean(err["obs_error"])))
  assert errors[0] < 1e-6  # float rounding between two compiled programs only
  assert errors[1] > 100 * errors[0]
  assert all(b > a for a, b in zip(errors, errors[1:])), errors


def test_brax_physics_scales_masses_and_gears():
  env = envs.make("inverted_pendulum", backend="spring")
  same, heavier = env.perturbed(0.0), env.perturbed(0.1)
  sys, s0, s1 = env.brax_env.sys, same.brax_env.sys, heavier.brax_env.sys
  for a, b in ((sys.link.inertia.mass, s0.link.inertia.mass), (sys.actuator.gear,
                                                               s0.actuator.gear)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(s1.link.inertia.mass, 1.1 * sys.link.inertia.mass, rtol=1e-6)
  np.testing.assert_allclose(s1.actuator.gear, 1.1 * sys.actuator.gear, rtol=1e-6)
  np.testing.assert_allclose(s1.body_mass, 1.1 * sys.body_mass, rtol=1e-6)
  np.testing.assert_allclose(heavier._link_mass,
                             s1.link.inertia.mass ** (1 - sys.spring_mass_scale), rtol=1e-6)
  assert env.brax_env.sys is sys  # the true env is untouched


@pytest.mark.parametrize("kwargs, needle", [
    (dict(model_error="physics", model_error_scale=-0.1), "model_error_scale: must be a finite"),
    (dict(model_error="physics", model_error_scale=float("nan")), "model_error_scale"),
    (dict(model_error="none", model_error_scale=0.1), "model_error_scale: needs"),
    (dict(model_error="noise", model="learned"), "model_error: perturbs the oracle"),
    (dict(env="inverted_pendulum", model_error="noise"), "noise is not supported by env"),
])
def test_bad_values_are_named(kwargs, needle):
  base = dict(env="pendulum", expansion="critic", model="oracle", horizon=3)
  with pytest.raises(ConfigError, match=needle):
    resolve(Config(**{**base, **kwargs}))


def test_cli_refuses_unsupported_kind_before_compiling(tmp_path):
  out = tmp_path / "run"
  r = subprocess.run([sys.executable, "-m", "mvelab.cli", "train", "--env", "hopper",
                      "--expansion", "critic", "--model", "oracle", "--horizon", "1",
                      "--model_error", "noise", "--model_error_scale", "0.1", "--out",
                      str(out)], capture_output=True, text=True, timeout=120)
  assert r.returncode == 2, r.stderr
  assert "model_error: noise is not supported by env hopper" in r.stderr
  assert not out.exists()
