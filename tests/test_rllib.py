"""Training on Ray RLlib (`backend: rllib`) and the exported policies `blis-gym eval` plays.

The exported-policy and recipe checks run in the default suite (torch only); the RLlib runs
(a short single-agent training played by eval, one multi-agent iteration) are in the slow one."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "agents" / "router_rllib.yaml"


class _Fixed(torch.nn.Module):
    """Logits that prefer pod 0, then 1, ...: the greedy policy picks the first allowed pod."""

    def __init__(self, n):
        super().__init__()
        self.register_buffer("logits", -torch.arange(n, dtype=torch.float32))

    def forward(self, obs):
        return self.logits.expand(obs.shape[0], -1) + 0 * obs[:, :1]


def _export(path, obs_dim=59, n_actions=4, max_pods=4):
    from blis_gym.harness import exported
    exported.save(_Fixed(n_actions), path, obs_dim=obs_dim, n_actions=n_actions, max_pods=max_pods,
                  env_id="blis_gym/Router-v0")
    exported.load.cache_clear()
    return path


def test_exported_policy_plays_the_best_allowed_action(tmp_path):
    from blis_gym.harness import exported
    act = exported.greedy(str(_export(tmp_path / "p.pt2")))
    obs = np.zeros(59, np.float32)
    assert act(obs, np.array([True, True, True, True])) == 0
    assert act(obs, np.array([False, False, True, True])) == 2           # a masked pod is never picked


def test_eval_pads_observations_to_the_exported_policy_pods_and_refuses_another_env(tmp_path):
    import gymnasium as gym

    import blis_gym.envs  # noqa: F401
    from blis_gym.errors import ConfigError
    from blis_gym.harness.policies import parse_policy
    p = parse_policy(str(_export(tmp_path / "six.pt2", obs_dim=81, n_actions=6, max_pods=6)), "router")
    cfg = p.env_config({"horizon_s": 5})
    assert cfg["max_pods"] == 6
    with gym.make("blis_gym/Router-v0", config=cfg) as env:                  # 4 pods padded to 6 slots
        p.check(env)
    with gym.make("blis_gym/Admission-v0") as env:
        with pytest.raises(ConfigError, match=r"--policy: .*expects observations of shape \(81,\)"):
            p.check(env)
    (tmp_path / "junk.pt2").write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match=r"--policy: .*junk\.pt2: cannot load it as an exported policy"):
        parse_policy(str(tmp_path / "junk.pt2"), "router").env_config({})


@pytest.mark.parametrize("change, field", [
    ({"algo": "maskableppo"}, "algo"),
    ({"n_envs": 2}, "n_envs"),
    ({"policy": "pod"}, "policy"),
    ({"warm_start": {"policy": "default"}}, "warm_start"),
])
def test_rllib_recipe_refuses_what_it_does_not_take(tmp_path, change, field):
    pytest.importorskip("ray.rllib")
    from blis_gym.errors import ConfigError
    from blis_gym.harness.recipe import Recipe
    from blis_gym.harness.train import train
    recipe = Recipe.model_validate({**yaml.safe_load(RECIPE.read_text()), **change})
    with pytest.raises(ConfigError) as e:
        train(recipe, tmp_path / "X", quiet=True)
    assert e.value.field == field
    assert not (tmp_path / "X").exists()


def test_sb3_recipe_refuses_rllib_settings(tmp_path):
    from blis_gym.errors import ConfigError
    from blis_gym.harness.recipe import load_recipe
    from blis_gym.harness.train import train
    recipe = load_recipe(None, env_id="blis_gym/Admission-v0", algo="ppo", steps=10)
    recipe = recipe.model_copy(update={"rllib": yaml.safe_load(RECIPE.read_text())["rllib"]})
    with pytest.raises(ConfigError, match="rllib: settings for backend: rllib"):
        train(recipe, tmp_path / "X", quiet=True)


@pytest.mark.slow
def test_rllib_recipe_trains_and_eval_plays_its_exported_policy(tmp_path):
    pytest.importorskip("ray.rllib")
    from click.testing import CliRunner

    from blis_gym.cli import main
    r = CliRunner().invoke(main, ["train", "--config", str(RECIPE), "--steps", "2000", "--out", str(tmp_path / "X"),
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    for f in ("model.pt2", "last.pt2", "train.yaml", "progress.csv", "rllib_checkpoint"):
        assert (tmp_path / "X" / f).exists(), f
    r = CliRunner().invoke(main, ["eval", "blis_gym/Router-v0", "--policy", str(tmp_path / "X" / "model.pt2"),
                                  "--policy", "llm-d-default", "--seeds", "1000", "--scenario", "router-shared-prefix",
                                  "--workers", "1", "--out", str(tmp_path / "eval"), "--quiet"])
    assert r.exit_code == 0, r.output
    import pandas as pd
    rows = pd.read_csv(tmp_path / "eval" / "results.csv")
    mine = rows[rows.policy.str.endswith("model.pt2")]
    assert len(mine) == 1
    assert all(math.isfinite(mine[k].iloc[0]) for k in ("return", "ttft_mean_ms"))


@pytest.mark.slow
def test_multi_agent_env_trains_one_policy_per_agent_under_rllib():
    pytest.importorskip("ray.rllib")
    import ray

    from blis_gym.harness.rllib import _start_ray, multi_agent_ppo
    started = _start_ray()
    try:
        config = (multi_agent_ppo({"scenario": "pd-chat-threshold16", "horizon_s": 10}, {"fcnet_hiddens": [16]})
                  .env_runners(num_env_runners=0)
                  .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
                  .debugging(seed=0))
        algo = config.build_algo()
        result = algo.train()
        algo.stop()
    finally:
        if started:
            ray.shutdown()
    assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 200
    assert set(result["env_runners"]["agent_episode_returns_mean"]) == {"admission", "router", "pd"}
