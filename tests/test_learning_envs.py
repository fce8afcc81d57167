"""What the environments give a learner for the regimes where fixed heuristics fail: the
scenario families in every split, the extended observation (per pod hardware and observed
latency, arrival rates and their trend, the daily phase), and the first layout kept for old
checkpoints."""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest

import blis_gym  # noqa: F401
from blis_gym.envs.load_features import LOAD_FEATURES, POD_EXTRA, LoadFeatures, find_period
from blis_gym.envs.observations import POD_FEATURES
from blis_gym.harness.split import spec_split

ROOT = Path(__file__).resolve().parent.parent
ROUTER = "blis_gym/Router-v0"
# scenario-name prefixes of each env's heuristic-defeating families (docs/envs.md#scenario-families)
FAMILIES = {
    ROUTER: ("mixed-", "bursty-|flash-crowd", "lora-", "slo-mix-"),
    "blis_gym/Admission-v0": ("flash-", "mixed-sizes-"),
    "blis_gym/PDDecider-v0": ("rag-", "codegen-"),
    "blis_gym/Autoscaler-v0": ("diurnal-provision-", "flash-"),
}
MIXED = {"cluster": {"instances": None, "scrape_interval_ms": 50},
         "pools": [{"name": "h100", "instances": 2}, {"name": "a100", "instances": 1, "hardware": "A100-80GB"},
                   {"name": "l40s", "instances": 1, "hardware": "L40S", "tp": 2}],
         "workload": {"inference_perf": {"stages": [{"rate": 16, "duration_s": 40}]}}}


def _in(family: str, name: str) -> bool:
    return any(name.startswith(f) for f in family.split("|"))


@pytest.mark.parametrize("env_id", list(FAMILIES))
def test_every_split_part_has_its_own_variant_of_every_family(env_id):
    split = spec_split(env_id)
    parts = {"train": split.train.scenarios, "validation": split.validation.scenarios,
             "eval": split.eval.scenarios}
    seen = []
    for part, entries in parts.items():
        assert entries, f"{env_id}: no {part} scenarios"
        for family in FAMILIES[env_id]:
            variants = [e for e in entries if _in(family, e.name)]
            assert variants, f"{env_id}: no {family} scenario in {part}"
            seen += [(e.scenario, repr(e.overrides)) for e in variants]
    assert len(seen) == len(set(seen)), f"{env_id}: a family variant is shared between parts"


def test_validation_plays_its_own_scenarios_when_the_split_names_them():
    from blis_gym.envs.config import load_spec
    from blis_gym.harness.recipe import Recipe
    from blis_gym.harness.training_envs import train_configs, validation_configs
    recipe = Recipe(env_id=ROUTER, algo="maskableppo", steps=1, env_config={"horizon_s": 30})
    spec, split = load_spec("router"), spec_split(ROUTER)
    train = train_configs(recipe, spec, split)
    val = validation_configs(recipe, spec, split, train)
    assert len(val) == len(split.validation.scenarios) and val != train
    assert all(c["horizon_s"] == 30 for c in val)
    assert validation_configs(recipe, spec, None, train) == train


# ---- the extended observation ------------------------------------------------------------------
def test_the_default_layout_is_unchanged_and_the_extended_one_is_opt_in():
    old = gym.make(ROUTER).unwrapped
    names = old.observer.feature_names()
    assert len(names) == 4 * len(POD_FEATURES) + 15 and not any(n.startswith("load.") for n in names)
    new = gym.make(ROUTER, config={"observation": {"extended": True}}).unwrapped
    names = new.observer.feature_names()
    assert names[:len(POD_FEATURES) + len(POD_EXTRA)] == [f"pod0.{f}" for f in (*POD_FEATURES, *POD_EXTRA)]
    assert names[-len(LOAD_FEATURES):] == [f"load.{f}" for f in LOAD_FEATURES]
    assert len(names) == new.observation_space.shape[0] == 4 * (len(POD_FEATURES) + len(POD_EXTRA)) + 15 + 7


def _play(env, steps):
    obs, _ = env.reset(seed=3000)
    for _ in range(steps):
        obs, _, term, trunc, _ = env.step(env.pending.default())
        assert env.observation_space.contains(obs)
        if term or trunc:
            break
    return dict(zip(env.observer.feature_names(), obs.tolist()))


def test_a_router_sees_each_pods_hardware_and_how_slow_it_has_been():
    env = gym.make(ROUTER, config={"scenario_overrides": MIXED, "observation": {"extended": True}}).unwrapped
    f = _play(env, 500)
    # dense TFLOPS x TP relative to one H100 (989.5), as x / (x + 1)
    a100, l40s = 312.0 / 989.5, 2 * 362.05 / 989.5
    assert f["pod0.compute"] == pytest.approx(0.5) and f["pod1.compute"] == pytest.approx(0.5)
    assert f["pod2.compute"] == pytest.approx(a100 / (a100 + 1), abs=1e-6)
    assert f["pod3.compute"] == pytest.approx(l40s / (l40s + 1), abs=1e-6)
    assert f["pod2.bandwidth"] == pytest.approx((2.039 / 3.35) / (2.039 / 3.35 + 1), abs=1e-6)
    assert (f["pod0.tp"], f["pod3.tp"]) == (pytest.approx(1 / 8), pytest.approx(2 / 8))
    # the A100 decodes slower than an H100: its observed time per output token says so
    assert f["pod2.tpot"] > f["pod0.tpot"] > 0 and f["pod2.tpot"] > f["pod1.tpot"]
    assert f["load.arrivals_10s"] > f["load.arrivals_300s"] > 0 and f["load.arrival_trend"] > 0.5
    assert f["load.has_period"] == 0.0


def test_latency_averages_follow_the_completions_on_each_pod():
    lf = LoadFeatures({"latency_ema": 0.5, "ttft_per_token_scale_us": 50.0, "tpot_scale_us": 30000.0,
                       "rate_scale": 32.0})
    pods = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    cols = {"ttft": [], "inp": [], "decode": [], "out": []}
    configs = [SimpleNamespace(step_model=None)] * 2
    sim = SimpleNamespace(instances=pods, cfg=SimpleNamespace(instances=configs, workload=SimpleNamespace(
        profile=None, clients=[])), metrics=SimpleNamespace(cols=cols), final_hooks=[], injected=0)
    lf.attach(sim)
    from blis_gym.sim.engine.request import State

    def done(pod, ttft, inp, decode, out):
        for k, v in zip(cols, (ttft, inp, decode, out)):
            cols[k].append(v)
        sim.final_hooks[0](SimpleNamespace(instance=pods[pod]), State.COMPLETED, 0)
    done(1, 100_000, 1000, 2_000_000, 101)           # 100 µs per prompt token, 20 ms per output token
    assert lf.ttft_tok.tolist() == [0.0, 100.0] and lf.tpot.tolist() == [0.0, 20_000.0]
    done(1, 50_000, 1000, 4_000_000, 101)            # 50 µs, 40 ms: halfway there (weight 0.5)
    assert lf.ttft_tok[1] == pytest.approx(75.0) and lf.tpot[1] == pytest.approx(30_000.0)
    cols["ttft"].append(1)
    sim.final_hooks[0](SimpleNamespace(instance=pods[0]), State.REJECTED, 0)    # not a completion
    assert lf.ttft_tok[0] == 0.0
    col = lf.pod_columns()
    assert col[1, 3] == pytest.approx(75 / 125) and col[1, 4] == pytest.approx(0.5)


def test_arrival_rates_over_three_windows_and_their_trend():
    lf = LoadFeatures({"latency_ema": 0.2, "ttft_per_token_scale_us": 50.0, "tpot_scale_us": 30000.0,
                       "rate_scale": 10.0})
    sim = SimpleNamespace(instances=[], cfg=SimpleNamespace(instances=[], workload=SimpleNamespace(
        profile=None, clients=[])), metrics=SimpleNamespace(cols={}), final_hooks=[], injected=0)
    lf.attach(sim)
    for k in range(1, 1001):                          # 10 req/s for 100 s, one observation per arrival
        sim.injected = k
        out = lf.load_block(k * 100_000)
    r10, r60, r300 = (10 * (1 - math.exp(-100 / w)) for w in (10, 60, 300))
    assert lf.rates == pytest.approx([r10, r60, r300], rel=0.02)
    assert out[0] == pytest.approx(lf.rates[0] / (lf.rates[0] + 10))
    assert out[3] == pytest.approx(0.5 + 0.5 * (lf.rates[0] - lf.rates[2]) / (lf.rates[0] + lf.rates[2]))
    assert out[3] > 0.5                               # the load rose from nothing: trending up


def test_the_daily_phase_where_the_scenario_has_a_period():
    cfg = {"scenario_overrides": {"workload": {"arrival": {"spike": None, "diurnal": {
        "mean": 12, "amplitude": 0.9, "period_s": 2000, "peak_offset_s": 500}}}}, "observation": {"extended": True}}
    env = gym.make("blis_gym/Autoscaler-v0", config=cfg).unwrapped
    env.reset(seed=0)
    d = find_period(env.sim.cfg.workload)
    assert (d.period_s, d.peak_offset_s) == (2000, 500)
    out = env.observer.load.load_block(1_000_000_000)            # t = 1000 s: a quarter period after 500
    assert out[4:] == pytest.approx([1.0, 1.0, 0.5])
    f = _play(gym.make("blis_gym/Autoscaler-v0", config={"observation": {"extended": True}}).unwrapped, 3)
    assert f["load.has_period"] == 0.0 and f["load.phase_sin"] == 0.0    # the base scenario: bursts, no cycle


def test_an_old_checkpoint_is_played_on_the_first_layout_and_refused_on_the_extended_one():
    from blis_gym.errors import ConfigError
    from blis_gym.harness.policies import parse_policy
    p = parse_policy(str(ROOT / "agents" / "router_maskableppo.zip"), "router")
    cfg = gym.make(ROUTER).unwrapped.config
    assert p.env_config(cfg)["observation"]["extended"] is False
    p.check(gym.make(ROUTER))
    with pytest.raises(ConfigError, match="the checkpoint expects observations of shape"):
        p.check(gym.make(ROUTER, config={"observation": {"extended": True}}))


def test_a_checkpoint_trained_extended_is_played_extended(tmp_path):
    import shutil

    import yaml
    from blis_gym.harness.policies import parse_policy
    zip_ = tmp_path / "r.zip"
    shutil.copy(ROOT / "agents" / "router_maskableppo.zip", zip_)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"algo": "maskableppo",
                                                     "env_config": {"observation": {"extended": True}}}))
    p = parse_policy(str(zip_), "router")
    assert p.env_config(gym.make(ROUTER).unwrapped.config)["observation"]["extended"] is True


# ---- residual: choose between the heuristic's decision and the alternatives ----------------------
PL = {"router": {"policy": "predicted-latency", "scorers": None, "picker": None}}


def _episode(env, act, seed=1000):
    obs, info = env.reset(seed=seed)
    done, n = False, 0
    while not done:
        obs, _, term, trunc, info = env.step(act(env, obs, info))
        done, n = term or trunc, n + 1
    return info["summary"], n


@pytest.mark.parametrize("env_id,over", [(ROUTER, PL), ("blis_gym/Admission-v0", {}),
                                         ("blis_gym/PDDecider-v0", {}), ("blis_gym/Autoscaler-v0", {})])
def test_residual_action_0_plays_exactly_the_heuristic(env_id, over):
    short = {ROUTER: {"horizon_s": 20}, "blis_gym/Admission-v0": {"horizon_s": 10},
             "blis_gym/PDDecider-v0": {"horizon_s": 30}, "blis_gym/Autoscaler-v0": {"horizon_s": 300}}[env_id]
    base = {**short, "scenario_overrides": over}
    plain = gym.make(env_id, config=base).unwrapped
    res = gym.make(env_id, config={**base, "residual": True}).unwrapped
    assert res.action_space.n == plain.action_space.n + 1
    want = _episode(plain, lambda e, o, i: e._from_sim(e.pending.default()))
    assert _episode(res, lambda e, o, i: 0) == want


def test_residual_router_marks_the_heuristics_pod_and_action_k_is_pod_k_minus_1():
    cfg = {"horizon_s": 20, "scenario_overrides": PL}
    res = gym.make(ROUTER, config={**cfg, "residual": True}).unwrapped
    obs, info = res.reset(seed=1000)
    names = res.observer.feature_names()
    targets = [obs[names.index(f"pod{i}.target")] for i in range(4)]
    assert targets == [float(i == info["heuristic_action"]) for i in range(4)] and info["default_action"] == 0
    assert res.action_masks().tolist() == [True] * 5
    # overriding: 1 + i routes to pod i, as the plain env's action i
    plain = gym.make(ROUTER, config=cfg).unwrapped
    assert _episode(res, lambda e, o, i: 1 + (e.sim.injected % 4)) == \
        _episode(plain, lambda e, o, i: e.sim.injected % 4)
    res.reset(seed=1000)
    with pytest.raises(ValueError, match="out of range"):
        res.step(5)


def test_a_residual_checkpoint_plays_with_the_builtin_its_recipe_set(tmp_path):
    import shutil

    import yaml
    from blis_gym.harness.policies import parse_policy
    zip_ = tmp_path / "r.zip"
    shutil.copy(ROOT / "agents" / "router_maskableppo.zip", zip_)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"algo": "maskableppo", "env_config": {
        "residual": True, "scenario_overrides": PL}}))
    p = parse_policy(str(zip_), "router")
    base = gym.make(ROUTER).unwrapped.config
    cfg = p.env_config({**base, "scenario_overrides": {"workload": {"inference_perf": {"num_groups": 96}}}})
    assert cfg["residual"] is True
    assert cfg["scenario_overrides"] == {"workload": {"inference_perf": {"num_groups": 96}}, **PL}


def test_the_per_pod_network_has_a_follow_logit_for_a_residual_router_and_replays_on_more_pods(tmp_path):
    pytest.importorskip("sb3_contrib")
    import yaml
    from sb3_contrib import MaskablePPO

    from blis_gym.harness.pod_network import PodPolicy, pod_policy_kwargs
    from blis_gym.harness.policies import parse_policy
    cfg = {"horizon_s": 5, "residual": True, "scenario_overrides": PL, "observation": {"extended": True}}
    env = gym.make(ROUTER, config=cfg)
    kw = pod_policy_kwargs(env)
    assert kw["residual"] is True
    model = MaskablePPO(PodPolicy, env, policy_kwargs=kw, n_steps=32, batch_size=32, n_epochs=1, seed=0)
    obs, _ = env.reset(seed=1000)
    logits = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0]).distribution.logits
    assert logits.shape == (1, 5)                     # follow + 4 pods
    model.save(tmp_path / "r.zip")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"algo": "maskableppo", "env_config": cfg}))
    p = parse_policy(str(tmp_path / "r.zip"), "router")
    six = {**cfg, "scenario_overrides": {**PL, "cluster": {"instances": 6}}}
    big = gym.make(ROUTER, config=p.env_config({**gym.make(ROUTER).unwrapped.config, **six}))
    act = p.actor(big, 1000)
    obs, info = big.reset(seed=1000)
    assert big.action_space.n == 7 and 0 <= act(obs, info) < 7


def test_a_heuristic_replaces_the_router_a_recipe_already_overrides():
    from blis_gym.harness.policies import parse_policy
    cfg = {**gym.make(ROUTER).unwrapped.config, "scenario": "lora-affinity", "scenario_overrides": PL}
    for name in ("predicted-latency", "round-robin"):
        env = gym.make(ROUTER, config=parse_policy(name, "router").env_config(cfg)).unwrapped
        assert env._scenario.router["policy"] == name         # lora-affinity's scorers gone, no error
