"""Value expansion inside the training program: wiring, H = 0 equivalences, finiteness."""

import numpy as np
import pytest

from mvelab import runner
from mvelab.config import Config

TINY = dict(env="pendulum", hidden_sizes=(32, 32), batch_size=64, warmup_steps=256,
            eval_every=250, total_steps=756, eval_episodes=4, replay_capacity=4096)
METRICS = ("eval_return", "critic_loss", "actor_loss", "alpha", "entropy", "q_mean",
           "target_mean")


def _run(**kw):
  return runner.train(Config(**TINY, **kw), seeds=[0, 1], progress=False)


@pytest.fixture(scope="module")
def sac():
  return _run()


@pytest.mark.parametrize("kw", [dict(expansion="critic", model="oracle", horizon=0),
                                dict(expansion="retrace", horizon=0)],
                         ids=["critic-oracle-H0", "retrace-H0"])
def test_horizon_zero_is_sac(sac, kw):
  """The reference paper's validation steps (b) and (c): H = 0 reproduces SAC."""
  other = _run(**kw)
  for a, b in zip(sac.rows, other.rows):
    for k in METRICS:
      if np.isnan(a[k]):
        assert np.isnan(b[k])
      else:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_dyna_with_real_ratio_one_is_sac_bit_for_bit(sac):
  """Dyna draws every batch row from the real buffer: no model work, SAC's numbers."""
  other = _run(expansion="dyna", model="learned", horizon=3, dyna_real_ratio=1.0,
               dyna_rollouts=4, dyna_retain=2, model_hidden_sizes=(32, 32), model_members=2)
  for a, b in zip(sac.rows, other.rows):
    for k in METRICS:
      np.testing.assert_array_equal(b[k], a[k], err_msg=k)
  assert np.isnan(other.rows[-1]["model_loss"])  # the model was not even trained


@pytest.mark.parametrize("kw", [
    dict(expansion="critic", model="learned", horizon=2, model_hidden_sizes=(32, 32),
         model_members=3, model_warmup_updates=50),
    dict(expansion="actor", model="oracle", horizon=2),
    dict(expansion="retrace", horizon=3, agent="ddpg"),
    dict(expansion="critic", model="oracle", horizon=3, ce_values="direct"),
    dict(expansion="steve", model="learned", horizon=2, model_hidden_sizes=(32, 32),
         model_members=3, model_warmup_updates=50),
    dict(expansion="dyna", model="learned", horizon=2, model_hidden_sizes=(32, 32),
         model_members=3, model_warmup_updates=50, dyna_real_ratio=0.5, dyna_rollouts=8,
         dyna_retain=10),
], ids=["critic-learned-H2", "actor-oracle-H2", "ddpg-retrace-H3", "critic-oracle-H3-direct",
        "steve-learned-H2", "dyna-learned-k2"])
def test_expansion_variants_train_and_log(kw):
  result = _run(**kw)
  last = result.rows[-1]
  assert last["updates"] == 500 and not last["diverged"]
  for k in ("critic_loss", "actor_loss", "target_mean", "eval_return"):
    assert np.isfinite(last[k]), k
  if kw.get("model") == "learned":
    # Held-out model error is logged and the model learned something after warm-up.
    assert np.isfinite(last["model_obs_mse"]) and np.isfinite(last["model_loss"])
    assert last["model_obs_mse"] < 1.0
  else:
    assert np.isnan(last["model_obs_mse"])
  if kw.get("agent") == "ddpg":
    assert last["alpha"] == 0.0
  if kw["expansion"] == "steve":
    assert 0.0 <= last["model_use"] <= 1.0 and 0.0 <= last["steve_mean_horizon"] <= 2.0
    # The mean weight per horizon (metrics.csv columns steve_w0 .. steve_wH).
    w = np.array([last[f"steve_w{i}"] for i in range(3)])
    assert "steve_w3" not in last and np.all(w >= 0) and w.sum() == pytest.approx(1, abs=1e-5)
    assert last["model_use"] == pytest.approx(1 - w[0], abs=1e-6)
    assert last["steve_mean_horizon"] == pytest.approx(w @ np.arange(3), abs=1e-5)
    assert list(result.dataframe().columns[-4:]) == [
        "steve_w0", "steve_w1", "steve_w2", "wall_time_s"]
  else:
    assert np.isnan(last["model_use"]) and "steve_w0" not in last
  if kw["expansion"] == "dyna":
    assert last["dyna_real_fraction"] == 0.5 and last["model_buffer_fill"] == 1.0
    assert 1.0 <= last["dyna_rollout_length"] <= 2.0
  else:
    assert np.isnan(last["dyna_rollout_length"])
