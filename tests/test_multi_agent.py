"""The PettingZoo AEC environment (blis_gym/envs/multi.py): PettingZoo's api_test and seed_test,
turns and per-agent rewards, parity with the built-in simulation, invalid actions, configuration."""
from __future__ import annotations

import json
import pickle
import warnings
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("pettingzoo")

from pettingzoo.test import api_test, seed_test  # noqa: E402

from blis_gym.envs import episode_kpi, multi_agent_env  # noqa: E402
from blis_gym.envs.multi import MultiAgentEnv, default_scenario, env as pz_env, raw_env  # noqa: E402
from blis_gym.errors import ConfigError  # noqa: E402
from blis_gym.schema.scenario import build, parse_scenario  # noqa: E402
from blis_gym.sim.simulation import Simulation  # noqa: E402

SHORT = {"horizon_s": 40}


def default_action(env, agent):
    """The built-in policy's choice as this agent's action (the autoscaler's clipped to ±scale_step)."""
    u = env.unwrapped
    d = u.pending.default()
    if agent == "autoscaler":
        k = u.scale_step
        return int(max(-k, min(k, int(d)))) + k
    return int(d)


def play(env, seed, policy):
    """One episode; returns (turns per agent, rewards summed per agent from last(), final infos)."""
    env.reset(seed=seed)
    turns, got, final = Counter(), Counter(), {}
    for agent in env.agent_iter():
        obs, reward, terminated, truncated, info = env.last()
        got[agent] += reward
        if terminated or truncated:
            final[agent] = info
            env.step(None)
            continue
        assert env.observation_space(agent).contains(obs)
        turns[agent] += 1
        env.step(policy(env, agent, obs, info))
    return turns, got, final


def random_policy(seed):
    rng = np.random.default_rng(seed)

    def act(env, agent, obs, info):
        return int(rng.choice(np.flatnonzero(info["action_mask"])))
    return act


# ---- PettingZoo's own checks ----------------------------------------------------------------------------
def test_pettingzoo_api_test_passes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # style hints (agent names, different observation sizes)
        api_test(multi_agent_env(config=SHORT), num_cycles=300)


def test_pettingzoo_seed_test_passes():
    seed_test(lambda: multi_agent_env(config=SHORT), num_cycles=200)


def test_factories_follow_pettingzoo_idioms():
    e = pz_env(config=SHORT)
    assert type(e.unwrapped) is raw_env is MultiAgentEnv
    assert str(e) == "blis_gym_multi_v0"
    assert MultiAgentEnv.metadata["render_modes"] == ["ansi", "rgb_array"]
    r = raw_env(config=SHORT)
    r.reset(seed=0)
    assert r.agent_selection in r.agents


# ---- agents, turns, rewards ------------------------------------------------------------------------------
def test_default_scenario_has_all_four_agents_and_each_gets_turns():
    env = multi_agent_env(config=SHORT)
    assert env.possible_agents == ["admission", "router", "pd", "autoscaler"]
    u = env.unwrapped
    shapes = {a: env.observation_space(a).shape[0] for a in env.possible_agents}
    assert shapes["admission"] == shapes["router"] < shapes["pd"] < shapes["autoscaler"]
    assert [env.action_space(a).n for a in env.possible_agents] == [2, u.n_pods, 2, 3]
    turns, got, final = play(env, 3, random_policy(0))
    assert set(turns) == set(env.possible_agents)
    assert turns["admission"] > turns["router"] > 20 and turns["autoscaler"] >= 2   # random admission rejects some
    assert env.agents == []                        # everyone stepped None once at the end


def test_rewards_accrue_per_agent_and_equal_each_agents_kpi():
    env = multi_agent_env(config=SHORT)
    turns, got, final = play(env, 5, random_policy(1))
    u = env.unwrapped
    for agent in env.possible_agents:
        kpi = episode_kpi(u.sim, u.config["rewards"][agent])
        assert got[agent] == pytest.approx(kpi, rel=1e-9, abs=1e-6)
        assert final[agent]["episode_return"] == pytest.approx(kpi, rel=1e-9, abs=1e-6)
        assert final[agent]["summary"]["injected_requests"] > 0
    # the rewards differ: the autoscaler pays for GPU time, the router has its own targets
    assert got["autoscaler"] < got["router"]
    assert u.config["rewards"]["router"]["targets"] != u.config["rewards"]["pd"]["targets"]
    cost = final["autoscaler"]["summary"]["cost"]["dollars"]
    w = u.config["rewards"]["autoscaler"]["cost_weight"]
    no_cost = episode_kpi(u.sim, {**u.config["rewards"]["autoscaler"], "cost_weight": 0.0})
    assert got["autoscaler"] == pytest.approx(no_cost - w * cost, abs=1e-3)


def test_waiting_agents_observe_without_a_request_and_have_an_empty_mask():
    env = multi_agent_env(config=SHORT)
    env.reset(seed=0)
    cur = env.agent_selection
    for agent in env.agents:
        m = env.infos[agent]["action_mask"]
        assert m.dtype == np.int8 and m.shape == (env.action_space(agent).n,)
        assert m.any() == (agent == cur)
        obs = env.observe(agent)
        names = env.unwrapped.observers[agent].feature_names()
        has = agent == cur and env.unwrapped.pending.request is not None    # an autoscaler tick has none
        assert obs[names.index("request.has_request")] == (1.0 if has else 0.0)


# ---- parity: every agent plays the built-in policy -------------------------------------------------------
def test_builtin_actions_reproduce_the_builtin_simulation():
    seed = 11
    # scale_step 4: the autoscaler's action covers any change the built-in HPA can make in a 2-4 pool
    env = multi_agent_env(config={**SHORT, "scale_step": 4})
    turns, got, final = play(env, seed, lambda e, agent, obs, info: default_action(e, agent))
    sc = parse_scenario(default_scenario())
    sc = sc.model_copy(update={"seed": seed, "workload": sc.workload.model_copy(update={"horizon_s": 40})})
    inside = Simulation(build(sc)).run()
    assert turns["router"] == turns["pd"] > 100 and turns["autoscaler"] >= 2
    s = final["router"]["summary"]
    assert s["pd"]["disaggregated_fraction"] == 1.0          # llm-d's N = 16 decider
    assert json.dumps(s, sort_keys=True) == json.dumps(inside, sort_keys=True)


def test_parity_with_a_subset_of_agents():
    seed = 2
    env = multi_agent_env(config={**SHORT, "agents": ["router", "pd"]})
    assert env.possible_agents == ["router", "pd"]
    turns, got, final = play(env, seed, lambda e, agent, obs, info: default_action(e, agent))
    assert set(turns) == {"router", "pd"}
    sc = parse_scenario(default_scenario())
    sc = sc.model_copy(update={"seed": seed, "workload": sc.workload.model_copy(update={"horizon_s": 40})})
    inside = Simulation(build(sc)).run()
    assert json.dumps(final["pd"]["summary"], sort_keys=True) == json.dumps(inside, sort_keys=True)


def test_scenario_decides_which_agents_exist():
    env = multi_agent_env(config={"scenario": "cluster-4xh100-default", "horizon_s": 5})
    assert env.possible_agents == ["admission", "router"]           # no prefill pool, no autoscaler
    env = multi_agent_env(config={"scenario": "autoscale-bursty", "horizon_s": 60})
    assert env.possible_agents == ["admission", "router", "autoscaler"]
    assert env.action_space("admission").n == 3                     # flow control: 2 = queue
    with pytest.raises(ConfigError, match=r"config\.agents.*'pd'.*prefill"):
        multi_agent_env(config={"scenario": "cluster-4xh100-default", "agents": ["router", "pd"]})
    with pytest.raises(ConfigError, match=r"config\.agents.*unknown agent 'scheduler'"):
        multi_agent_env(config={"agents": ["scheduler"]})
    with pytest.raises(ConfigError, match=r"config\.rewards\.router\.cost_wieght"):
        multi_agent_env(config={"rewards": {"router": {"cost_wieght": 1}}})
    with pytest.raises(ConfigError, match=r"config\.rewards\.critic"):
        multi_agent_env(config={"rewards": {"critic": {}}})
    with pytest.raises(ConfigError, match=r"config\.horizn_s"):
        multi_agent_env(config={"horizn_s": 5})
    e = multi_agent_env(config={**SHORT, "rewards": {"router": {"class_weights": {"standard": 3.0}}}})
    assert e.unwrapped.config["rewards"]["router"]["class_weights"]["standard"] == 3.0
    assert e.unwrapped.config["rewards"]["pd"]["class_weights"]["standard"] == 1.0


# ---- invalid actions --------------------------------------------------------------------------------------
def test_invalid_actions_raise_clearly_and_change_nothing():
    env = multi_agent_env(config={**SHORT, "max_pods": 7})     # pods: prefill-0, decode-0..3 (decode-3 off)
    env.reset(seed=0)
    u = env.unwrapped
    while env.agent_selection != "router":
        env.step(default_action(env, env.agent_selection))
    p, n = u.pending, len(u.actions)
    mask = env.infos["router"]["action_mask"].tolist()
    assert mask[0] == 0 and mask[5:] == [0, 0] and 1 in mask[1:5]      # the prefill pod and padding masked
    off = next(i for i in range(1, 5) if not mask[i])                   # a decode pod the autoscaler removed
    for bad, msg in ((7, "out of range"), (-1, "out of range"), (6, "padding slot"), (5, "padding slot"),
                     (1.5, "must be an integer"), ("two", "must be an integer"), (True, "must be an integer"),
                     (None, "only for a terminated or truncated agent"), (off, f"decode-{off - 1} cannot take requests"),
                     (0, "prefill-0 cannot take requests")):
        with pytest.raises(ValueError, match=msg):
            env.step(bad)
        assert u.pending is p and len(u.actions) == n and env.agent_selection == "router"
    env.step(np.int64(default_action(env, "router")))
    assert env.agent_selection == "pd"
    with pytest.raises(ValueError, match="pd action 2 is out of range"):
        env.step(2)


# ---- seeding, pickling, render ----------------------------------------------------------------------------
def test_same_seed_same_episode_and_unseeded_resets_continue_the_stream():
    a = play(multi_agent_env(config=SHORT), 4, random_policy(2))
    b = play(multi_agent_env(config=SHORT), 4, random_policy(2))
    assert a[0] == b[0] and a[1] == b[1]
    e1, e2 = multi_agent_env(config=SHORT), multi_agent_env(config=SHORT)
    for e in (e1, e2):
        e.reset(seed=9)
        e.reset()
    assert e1.unwrapped.sim_seed == e2.unwrapped.sim_seed != 9


def test_pickles_mid_episode_by_replay():
    env = raw_env(config=SHORT)
    env.reset(seed=1)
    pol = random_policy(3)
    for _ in range(50):
        env.step(pol(env, env.agent_selection, None, env.infos[env.agent_selection]))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.actions == env.actions and clone.agent_selection == env.agent_selection
    for _ in range(50):
        a = pol(env, env.agent_selection, None, env.infos[env.agent_selection])
        env.step(a)
        clone.step(a)
        ag = env.agent_selection
        assert np.array_equal(env.observe(ag), clone.observe(ag)) and env.rewards == clone.rewards


def test_render_ansi_and_rgb_array():
    env = multi_agent_env(config=SHORT, render_mode="ansi")
    env.reset(seed=0)
    for _ in range(5):
        env.step(default_action(env, env.agent_selection))
    text = env.render()
    assert "turn:" in text and "returns:" in text and "recent decisions" in text
    env = multi_agent_env(config=SHORT, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.ndim == 3 and frame.dtype == np.uint8
