"""The Gymnasium environments (blis_gym/envs): registration, checkers, heuristic parity, rewards
equal to their KPI, invalid actions, seeding and replay, render, vector envs, pickling."""
from __future__ import annotations

import json
import pickle
import random
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import blis_gym  # noqa: F401  (registers the ids)
from blis_gym.envs import episode_kpi, replay
from blis_gym.errors import ConfigError
from blis_gym.schema.scenario import build, load_scenario
from blis_gym.sim.simulation import Simulation

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
IDS = ["blis_gym/Router-v0", "blis_gym/Admission-v0", "blis_gym/PDDecider-v0", "blis_gym/Autoscaler-v0"]
SHORT = {"blis_gym/Router-v0": {"horizon_s": 20}, "blis_gym/Admission-v0": {"horizon_s": 5},
         "blis_gym/PDDecider-v0": {"horizon_s": 30}, "blis_gym/Autoscaler-v0": {"horizon_s": 300}}


def make(env_id, **config):
    return gym.make(env_id, config={**SHORT[env_id], **config})


def random_policy(env, seed=0):
    rng = random.Random(seed)

    def act(_obs):
        valid = np.flatnonzero(env.unwrapped.action_masks())
        return int(valid[int(rng.random() * len(valid))])
    return act


def run_episode(env, seed, policy, max_steps=10**9):
    obs, info = env.reset(seed=seed)
    total, steps, trace = 0.0, 0, []
    done = False
    while not done and steps < max_steps:
        a = policy(obs)
        obs, r, terminated, truncated, info = env.step(a)
        trace.append((a, r, obs.tobytes()))
        total += r
        steps += 1
        done = terminated or truncated
    return total, info, trace


# ---- registration and checkers --------------------------------------------------------------------
def test_registry_lists_the_four_environments():
    ids = [i for i in gym.registry if i.startswith("blis_gym/")]
    assert sorted(ids) == sorted(IDS)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_and_sb3_checkers_pass_without_warnings(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = make(env_id)
        check_env(env.unwrapped)
        sb3_check_env(env)
        for mode in ("ansi", "rgb_array"):
            check_env(gym.make(env_id, config=SHORT[env_id], render_mode=mode).unwrapped)
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize("env_id", IDS)
def test_observation_is_documented_and_bounded(env_id):
    env = make(env_id)
    obs, _ = env.reset(seed=0)
    names = env.unwrapped.observer.feature_names()
    assert len(names) == len(set(names)) == env.observation_space.shape[0]
    for _ in range(30):
        obs, _, terminated, truncated, _ = env.step(int(np.flatnonzero(env.unwrapped.action_masks())[-1]))
        assert obs.dtype == np.float32 and env.observation_space.contains(obs)
        if terminated or truncated:
            break


def test_unknown_config_key_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match=r"config\.rewrd"):
        gym.make("blis_gym/Router-v0", config={"rewrd": {}})
    with pytest.raises(ConfigError, match=r"config\.reward\.cost_wieght"):
        gym.make("blis_gym/Router-v0", config={"reward": {"cost_wieght": 1}})
    with pytest.raises(ConfigError, match=r"config\.max_pods"):
        gym.make("blis_gym/Router-v0", config={"max_pods": 2})
    with pytest.raises(ConfigError, match=r"config\.scenario"):
        gym.make("blis_gym/Router-v0", config={"scenario": "no-such-scenario"})


def test_default_config_and_overrides():
    from blis_gym.envs import RouterEnv
    d = RouterEnv.default_config()
    assert d["scenario"] == "router-shared-prefix" and d["reward"]["targets"]["standard"]["ttft_ms"] == 200
    env = gym.make("blis_gym/Router-v0", config={"max_pods": 8, "horizon_s": 5,
                                                 "scenario_overrides": {"router": {"policy": "round-robin"}}})
    assert env.action_space == gym.spaces.Discrete(8)
    env.reset(seed=0)
    m = env.unwrapped.action_masks()
    assert m.tolist() == [True] * 4 + [False] * 4
    assert type(env.unwrapped.sim.gateway.router).__name__ == "RoundRobinRouter"


# ---- heuristic parity -------------------------------------------------------------------------------
def test_router_env_with_the_default_profile_reproduces_the_builtin_run():
    seed = 7
    env = make("blis_gym/Router-v0")
    obs, info = env.reset(seed=seed)
    u = env.unwrapped
    done, n = False, 0
    while not done:
        obs, r, terminated, truncated, info = env.step(u.pending.default())
        done = terminated or truncated
        n += 1
    sc = load_scenario(SCENARIOS / "router-shared-prefix.yaml")
    sc = sc.model_copy(update={"seed": seed, "workload": sc.workload.model_copy(update={"horizon_s": 20})})
    inside = Simulation(build(sc)).run()
    assert n == inside["injected_requests"] > 100
    assert json.dumps(info["summary"], sort_keys=True) == json.dumps(inside, sort_keys=True)


# ---- rewards: the episode return is the KPI ------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["blis_gym/Router-v0", "blis_gym/Admission-v0", "blis_gym/Autoscaler-v0",
                                    "blis_gym/PDDecider-v0"])
def test_episode_return_equals_the_kpi_formula(env_id):
    env = make(env_id)
    total, info, trace = run_episode(env, 3, random_policy(env, 1))
    u = env.unwrapped
    kpi = episode_kpi(u.sim, u.config["reward"])
    assert total == pytest.approx(kpi, rel=1e-9, abs=1e-6)
    assert info["episode_return"] == pytest.approx(total)
    s = info["summary"]
    if env_id == "blis_gym/Admission-v0":       # penalties land: critical rejections are penalised
        assert s["rejected_requests"] > 0
    if env_id == "blis_gym/Autoscaler-v0":      # cost: the return includes cost_weight x the run's dollars
        good = episode_kpi(u.sim, {**u.config["reward"], "cost_weight": 0.0})
        assert total == pytest.approx(good - u.config["reward"]["cost_weight"] * s["cost"]["dollars"], abs=1e-3)
    if env_id == "blis_gym/PDDecider-v0":       # latency: the return falls by ttft_weight per second of TTFT
        w = u.config["reward"]["ttft_weight"]
        good = episode_kpi(u.sim, {**u.config["reward"], "ttft_weight": 0.0})
        ttft_s = s["ttft_mean_ms"] * s["completed_requests"] / 1000
        assert w > 0 and total == pytest.approx(good - w * ttft_s, rel=1e-6)


def test_unit_weights_make_the_return_the_goodput_count():
    # mappings merge into the spec's: set every class the spec names
    reward = {"class_weights": {"critical": 1.0}, "penalties": {"critical": 0.0, "standard": 0.0}}
    env = make("blis_gym/Admission-v0", reward=reward)     # both classes have slo_targets
    total, info, _ = run_episode(env, 5, random_policy(env, 2))
    assert total == info["summary"]["good_requests"] > 0


def test_rewards_land_when_requests_finish_not_when_routed():
    env = make("blis_gym/Router-v0")
    env.reset(seed=1)
    r0 = env.step(0)[1]                   # nothing can have completed 1 decision in
    assert r0 == 0.0


# ---- episodes --------------------------------------------------------------------------------------------
def test_horizon_truncates_and_final_info_has_kpis():
    env = make("blis_gym/Router-v0", horizon_s=5)
    total, info, trace = run_episode(env, 0, random_policy(env))
    assert info["end_reason"] == "horizon"
    s = info["summary"]
    for k in ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "itl_p99_ms", "e2e_p99_ms", "per_class",
              "rejection_reasons", "good_requests", "goodput_rps", "slo_attainment") if "good_requests" in s else (
              "ttft_p50_ms", "ttft_p99_ms", "itl_p99_ms", "e2e_p99_ms", "per_class", "rejection_reasons"):
        assert k in s
    assert "ttft_p90_ms" in s["per_class"]["standard"]


def test_drained_workload_terminates_and_limits_truncate():
    over = {"workload": {"inference_perf": None, "rate": 8, "input": {"dist": "constant", "value": 256},
                         "output": {"dist": "constant", "value": 16}, "num_requests": 50}}
    env = gym.make("blis_gym/Router-v0", config={"scenario_overrides": over})
    obs, info = env.reset(seed=0)
    done, n = False, 0
    while not done:
        obs, r, terminated, truncated, info = env.step(n % 4)
        done, n = terminated or truncated, n + 1
    assert terminated and not truncated and info["end_reason"] == "drained" and n == 50
    assert info["summary"]["completed_requests"] == 50
    env = gym.make("blis_gym/Router-v0", config={"scenario_overrides": over, "max_requests": 20})
    env.reset(seed=0)
    for k in range(20):
        _, _, terminated, truncated, info = env.step(0)
    assert truncated and not terminated and info["end_reason"] == "max_requests"
    assert info["summary"]["injected_requests"] == 21
    env = gym.make("blis_gym/Router-v0", config={"horizon_s": 30, "max_backlog": 30})
    total, info, trace = run_episode(env, 0, lambda o: 0)      # everything to one pod: the backlog runs away
    assert info["end_reason"] == "backlog" and len(trace) < 200
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(0)


# ---- invalid actions ----------------------------------------------------------------------------------
def test_invalid_actions_raise_clear_errors_and_change_nothing():
    env = make("blis_gym/Router-v0", max_pods=6)
    env.reset(seed=0)
    u = env.unwrapped
    p = u.pending
    for bad, msg in ((6, "out of range"), (-1, "out of range"), (5, "padding slot"), (4, "padding slot"),
                     (1.5, "must be an integer"), ("two", "must be an integer"), (None, "must be an integer"),
                     (True, "must be an integer"), (np.array([1, 2]), "must be an integer")):
        with pytest.raises(ValueError, match=msg):
            env.step(bad)
        assert u.pending is p and u.actions == []
    u.sim.gateway.pods[2].available = False      # e.g. draining: masked from the next decision on
    env.step(np.int64(0))
    assert u.action_masks()[2] == False  # noqa: E712
    with pytest.raises(ValueError, match="cannot take requests"):
        env.step(2)
    env.step(np.array(1))
    assert u.actions == [0, 1]
    env_a = make("blis_gym/Admission-v0")
    env_a.reset(seed=0)
    with pytest.raises(ValueError, match="out of range"):
        env_a.step(2)


# ---- seeds, common random numbers, replay ------------------------------------------------------------------
def test_same_seed_same_trajectory_and_unseeded_resets_are_reproducible():
    env1, env2 = make("blis_gym/Router-v0"), make("blis_gym/Router-v0")
    t1 = run_episode(env1, 11, random_policy(env1, 0), max_steps=300)[2]
    t2 = run_episode(env2, 11, random_policy(env2, 0), max_steps=300)[2]
    assert t1 == t2 and len(t1) == 300
    env1.reset(seed=4)
    env1.reset()
    env2.reset(seed=4)
    env2.reset()
    assert env1.unwrapped.sim_seed == env2.unwrapped.sim_seed != 4


def test_common_random_numbers_same_arrivals_whatever_the_policy():
    def arrivals(policy_env):
        env, policy = policy_env
        run_episode(env, 21, policy)
        a = env.unwrapped.sim.metrics.arrays()
        order = np.argsort(a["id"])
        return [(int(a["id"][i]), int(a["arrival"][i]), int(a["inp"][i])) for i in order]
    e1, e2 = make("blis_gym/Router-v0", horizon_s=8), make("blis_gym/Router-v0", horizon_s=8)
    x = arrivals((e1, lambda o: 0))
    y = arrivals((e2, random_policy(e2, 5)))
    assert x == y and len(x) > 100


def test_replay_reproduces_an_episode_bit_for_bit():
    env = make("blis_gym/Router-v0", horizon_s=10)
    total, info, _ = run_episode(env, 9, random_policy(env, 3))
    actions = list(env.unwrapped.actions)
    out = replay("blis_gym/Router-v0", 9, actions, config={"horizon_s": 10})
    assert out["return"] == total and out["steps"] == len(actions)
    assert json.dumps(out["info"]["summary"], sort_keys=True) == json.dumps(info["summary"], sort_keys=True)


def test_info_default_action_is_offered_on_request():
    env = make("blis_gym/Router-v0", info_default_action=True)
    obs, info = env.reset(seed=0)
    assert 0 <= info["default_action"] < 4
    obs, r, te, tr, info = env.step(info["default_action"])
    assert "default_action" in info



def test_decide_classes_leaves_other_requests_to_the_builtin_policy():
    # the agent steps only on critical requests; the sheddable ones get probabilistic's choice
    # between its steps, so playing the built-in on the critical ones reproduces the built-in run
    def play(**config):
        env = make("blis_gym/Admission-v0", info_default_action=True, horizon_s=10, **config)
        obs, info = env.reset(seed=3)
        classes, total = set(), 0.0
        while True:
            classes.add(env.unwrapped.pending.request.slo_class)
            obs, r, te, tr, info = env.step(info["default_action"])
            total += r
            if te or tr:
                return classes, len(env.unwrapped.actions), total, info["summary"]
    every, n_all, ret_all, summary_all = play()
    only, n_crit, ret_crit, summary_crit = play(decide_classes=["critical"])
    assert every == {"critical", "sheddable"} and only == {"critical"}
    assert 0 < n_crit < n_all
    assert ret_crit == ret_all and summary_crit == summary_all


def test_decide_classes_is_checked():
    with pytest.raises(ConfigError) as e:
        make("blis_gym/Admission-v0", decide_classes="critical")
    assert e.value.field.startswith("config.decide_classes")
    with pytest.raises(ConfigError) as e:
        make("blis_gym/Admission-v0", decide_classes=["no-such-class"]).reset(seed=0)
    assert e.value.field == "config.scenario" and "no-such-class" in e.value.message


# ---- render -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_render_ansi_and_rgb_array(env_id):
    env = gym.make(env_id, config=SHORT[env_id], render_mode="ansi")
    env.reset(seed=0)
    env.step(int(np.flatnonzero(env.unwrapped.action_masks())[0]))
    text = env.render()
    assert isinstance(text, str) and "recent decisions" in text and "pod" in text
    env = gym.make(env_id, config=SHORT[env_id], render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8


# ---- vector envs, SB3, pickling ----------------------------------------------------------------------------------
def test_dummy_vec_env_with_vec_normalize_and_maskable_ppo():
    from sb3_contrib import MaskablePPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize
    venv = make_vec_env("blis_gym/Router-v0", n_envs=2, seed=0, env_kwargs={"config": {"horizon_s": 5}})
    venv = VecNormalize(venv)
    venv.reset()
    for _ in range(5):
        masks = np.array(venv.env_method("action_masks"))
        acts = np.array([np.flatnonzero(m)[0] for m in masks])
        obs, rew, dones, infos = venv.step(acts)
        assert obs.shape == (2, venv.observation_space.shape[0])
    model = MaskablePPO("MlpPolicy", make_vec_env("blis_gym/Router-v0", n_envs=1, seed=0,
                                                  env_kwargs={"config": {"horizon_s": 5}}), n_steps=32,
                        batch_size=32, n_epochs=1, seed=0)
    model.learn(64)


def test_gymnasium_sync_vector_env():
    venv = gym.vector.SyncVectorEnv([lambda: make("blis_gym/Router-v0", horizon_s=3) for _ in range(2)])
    obs, info = venv.reset(seed=[0, 1])
    for _ in range(5):
        obs, rew, term, trunc, info = venv.step(np.array([0, 1]))
    assert obs.shape == (2, venv.single_observation_space.shape[0])
    venv.close()


def test_async_vector_env_and_subproc_vec_env():      # ~7 s: worker processes import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv
    venv = gym.vector.AsyncVectorEnv([lambda: make("blis_gym/Admission-v0") for _ in range(2)])
    venv.reset(seed=0)
    for _ in range(5):
        obs, rew, term, trunc, info = venv.step(np.array([1, 0]))
    venv.close()
    # "module:id" makes the worker processes import blis_gym (which registers the ids) first
    sv = make_vec_env("blis_gym:blis_gym/Router-v0", n_envs=2, seed=0, vec_env_cls=SubprocVecEnv,
                      env_kwargs={"config": {"horizon_s": 3}})
    sv.reset()
    for _ in range(5):
        sv.step(np.array([0, 1]))
    assert len(sv.env_method("action_masks")) == 2
    sv.close()


def test_environments_pickle_mid_episode():
    env = make("blis_gym/Router-v0", max_pods=6)
    env.reset(seed=2)
    pol = random_policy(env, 4)
    for _ in range(40):
        env.step(pol(None))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.actions == env.unwrapped.actions
    for _ in range(40):
        a = pol(None)
        o1, r1, *_ = env.step(a)
        o2, r2, *_ = clone.step(a)
        assert r1 == r2 and np.array_equal(o1, o2)
    fresh = pickle.loads(pickle.dumps(gym.make("blis_gym/Autoscaler-v0")))
    assert fresh.observation_space.shape == gym.make("blis_gym/Autoscaler-v0").observation_space.shape


@pytest.mark.parametrize("config,field,needle", [
    # issue 11 item 11: a NaN scale put observations outside their space; an infinite cost
    # weight made rewards infinite
    ({"observation": {"waiting_scale": float("nan")}}, "config.observation.waiting_scale", "finite"),
    ({"reward": {"cost_weight": float("inf")}}, "config.reward.cost_weight", "finite"),
    ({"horizon_s": float("inf")}, "config.horizon_s", "finite"),
    ({"horizon_s": 0}, "config.horizon_s", "greater than 0"),
    ({"observation": {"queue_scale": 0}}, "config.observation.queue_scale", "greater than 0"),
    ({"max_requests": True}, "config.max_requests", "integer"),
    ({"max_backlog": 10**12}, "config.max_backlog", "less than or equal"),
    ({"max_pods": 5000}, "config.max_pods", "less than or equal"),
    ({"reward": {"penalties": {"critical": "high"}}}, "config.reward.penalties.critical", "number"),
    ({"reward": {"targets": {"standard": {"ttft": 1}}}}, "config.reward.targets.standard.ttft",
     "unknown field; allowed: e2e_ms, itl_ms, ttft_ms"),
    ({"reward": {"default_targets": {"ttft_ms": float("nan")}}}, "config.reward.default_targets.ttft_ms", "finite"),
])
def test_config_values_are_checked(config, field, needle):
    with pytest.raises(ConfigError) as e:
        gym.make("blis_gym/Router-v0", config=config)
    assert e.value.field == field and needle in e.value.message and "\n" not in str(e.value)


def test_env_spec_accepts_a_split_section(tmp_path):
    from blis_gym.envs.config import load_spec
    spec = Path(load_spec("router")["path"]).read_text().split("\nsplit:")[0]     # the shipped split replaced
    text = spec + "\nsplit: {train: {scenarios: [router-shared-prefix], seeds: [0, 1]}}\n"
    (tmp_path / "router-split.yaml").write_text(text)
    assert load_spec(tmp_path / "router-split.yaml")["split"]["train"]["seeds"] == [0, 1]
    (tmp_path / "bad.yaml").write_text(text + "splits: {}\n")
    with pytest.raises(ConfigError, match=r"env_spec\.splits: unknown field"):
        load_spec(tmp_path / "bad.yaml")
