"""Brax's own SAC trainer on a paper task (peer check of mvelab's SAC on the same system).

Wraps an mvelab env (default ``paper_inverted_pendulum``) in Brax's ``envs.Env`` interface
(the simulator state is the pipeline state, ``step_sim`` the physics) and trains it with
``brax.training.agents.sac.train`` at the paper's settings where Brax has them: 10k steps,
1 env, 1 update per step, batch 256, Adam 3e-4, gamma 0.95, 512 warm-up steps, observation
normalisation, 128 evaluation episodes. Brax's own choices stay: log-alpha with Adam 3e-4
(mvelab paper preset: 5e-5), target entropy -0.5 |A| (as the paper), biases 0, std
softplus + 0.001. Brax's evaluator runs each episode once to its end; with
``--deterministic-eval`` it uses the mean action, else the stochastic policy (the paper's
protocol).

  python benchmarks/brax_sac_paper_task.py [--env paper_inverted_pendulum] [--seeds 0,1,2,3,4]
      [--steps 10000] [--evals 21] [--deterministic-eval] [--out FILE.md]

Prints one row per seed and evaluation (return, alpha, policy entropy is not logged by
Brax) and a final table.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import jax
import jax.numpy as jnp

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import log, md_table, parse_list, write_out  # noqa: E402


def _patch_brax_for_jax_0_10() -> None:
  """Brax 0.14's trainers call ``jax.device_put_replicated``, removed in jax 0.10."""
  def replicated(x, devices):
    return jax.tree.map(lambda a: jax.device_put(jnp.stack([a] * len(devices))), x)
  jax.device_put_replicated = replicated


def brax_env_of(name: str):
  """An mvelab env behind Brax's ``envs.Env`` interface (no time limit: Brax wraps it)."""
  from brax.envs import base
  from mvelab import envs
  env = envs.make(name)

  class Wrapped(base.Env):
    def reset(self, rng):
      sim = env.init_sim(rng)
      zero = jnp.zeros((), jnp.float32)
      return base.State(pipeline_state=sim, obs=env.observe(sim), reward=zero, done=zero,
                        metrics={}, info={})

    def step(self, state, action):
      sim, reward, terminated = env.step_sim(state.pipeline_state, action)
      return state.replace(pipeline_state=sim, obs=env.observe(sim), reward=reward,
                           done=terminated.astype(jnp.float32))

    @property
    def observation_size(self):
      return env.obs_size

    @property
    def action_size(self):
      return env.action_size

    @property
    def backend(self):
      return env.backend

  return Wrapped(), env


def run(name: str, seed: int, steps: int, evals: int, deterministic: bool) -> list:
  from brax.training.agents.sac import train as sac
  wrapped, env = brax_env_of(name)
  rows = []
  t0 = time.perf_counter()

  def progress(step, metrics):
    rows.append(dict(seed=seed, step=int(step), ret=float(metrics["eval/episode_reward"]),
                     alpha=float(metrics.get("training/alpha", float("nan"))),
                     wall=time.perf_counter() - t0))
    log(f"seed {seed} step {int(step):6d} return {rows[-1]['ret']:7.1f} "
        f"alpha {rows[-1]['alpha']:.3f}")

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sac.train(environment=wrapped, num_timesteps=steps, episode_length=env.episode_length,
              num_envs=1, num_eval_envs=128, learning_rate=3e-4, discounting=0.95,
              seed=seed, batch_size=256, num_evals=evals, normalize_observations=True,
              reward_scaling=1.0, tau=0.005, min_replay_size=512, max_replay_size=steps,
              grad_updates_per_step=1, deterministic_eval=deterministic,
              progress_fn=progress)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--env", default="paper_inverted_pendulum")
  parser.add_argument("--seeds", default="0,1,2,3,4")
  parser.add_argument("--steps", type=int, default=10_000)
  parser.add_argument("--evals", type=int, default=21)
  parser.add_argument("--deterministic-eval", action="store_true")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  _patch_brax_for_jax_0_10()
  jax.config.update("jax_default_matmul_precision", "highest")
  all_rows = []
  for seed in parse_list(args.seeds, int):
    all_rows += run(args.env, seed, args.steps, args.evals, args.deterministic_eval)
  table = []
  for seed in sorted({r["seed"] for r in all_rows}):
    rs = [r for r in all_rows if r["seed"] == seed]
    first = next((r["step"] for r in rs if r["ret"] >= 200), None)
    table.append([str(seed), f"{rs[-1]['step']}", f"{rs[-1]['ret']:.1f}",
                  f"{max(r['ret'] for r in rs):.1f}", str(first), f"{rs[-1]['alpha']:.3f}",
                  f"{rs[-1]['wall']:.0f}"])
  what = "deterministic (mean action)" if args.deterministic_eval else "stochastic"
  text = (f"Brax SAC on {args.env}, {what} evaluation, 128 episodes\n\n"
          + md_table(["seed", "final step", "final return", "max return", "first step >= 200",
                      "final alpha", "wall s"], table) + "\n")
  log(text)
  write_out(text, args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
