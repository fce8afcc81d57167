"""Regression tests for counting bugs and crashes found by fuzzing (issue 11): each builds the
reported reproducer and checks that every request is counted exactly once."""
from __future__ import annotations

import pytest

from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.simulation import Simulation

from helpers import assert_conserved, group_prefix, request, simulate

CONST = {"dist": "constant"}


def _run(data: dict):
    sim = Simulation(build(parse_scenario({"name": "repro", "model": "Qwen/Qwen3-14B", "hardware": "H100",
                                           **data}), check_invariants=True))
    return sim, sim.run()


def test_pd_request_timing_out_during_its_transfer_is_counted_once_and_its_transfer_cancelled():
    sim, s = _run({"pools": [{"name": "prefill", "role": "prefill", "instances": 1},
                             {"name": "decode", "role": "decode", "instances": 1}],
                   "pd": {"decider": "always", "transfer": {"bandwidth_gb_s": 0.001}},
                   "workload": {"rate": 1, "num_requests": 5, "timeout_s": 1,
                                "input": {**CONST, "value": 512}, "output": {**CONST, "value": 10}}})
    assert_conserved(sim, s)
    assert s["timed_out_requests"] == 5 and s["still_in_pd_transfer"] == 0
    assert s["pd"]["disaggregated_requests"] == 5
    assert s["pd"]["transfers"] == 0            # every transfer was cancelled, none completed
    assert sim.gateway.pd.transfers.active == 0


def test_pd_cancelled_transfer_frees_its_link_without_contention_too():
    sim, s = _run({"pools": [{"name": "prefill", "role": "prefill", "instances": 1},
                             {"name": "decode", "role": "decode", "instances": 1}],
                   "pd": {"decider": "always", "transfer": {"bandwidth_gb_s": 0.001, "contention": False}},
                   "workload": {"rate": 1, "num_requests": 5, "timeout_s": 1,
                                "input": {**CONST, "value": 512}, "output": {**CONST, "value": 10}}})
    assert_conserved(sim, s)
    assert s["timed_out_requests"] == 5 and s["pd"]["transfers"] == 0
    assert sim.gateway.pd.transfers.active == 0


def test_request_timing_out_in_transit_is_not_still_in_transit_at_the_horizon():
    sim, s = _run({"workload": {"rate": 1, "arrival": {"process": "constant"}, "horizon_s": 1.01,
                                "timeout_s": 0.005, "input": {**CONST, "value": 100},
                                "output": {**CONST, "value": 10}}})
    assert_conserved(sim, s)
    assert (s["injected_requests"], s["timed_out_requests"], s["still_in_transit"]) == (1, 1, 0)


ENV_IDS = ("blis_gym/Router-v0", "blis_gym/Admission-v0", "blis_gym/PDDecider-v0", "blis_gym/Autoscaler-v0")


def _summary_of_cut_episode(env_id: str, config: dict):
    import gymnasium as gym

    import blis_gym.envs  # noqa: F401  (registers the environments)
    env = gym.make(env_id, config={"horizon_s": 120, **config})
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        mask = env.unwrapped.action_masks() if hasattr(env.unwrapped, "action_masks") else None
        action = int(mask.argmax()) if mask is not None else 0
        _, _, term, trunc, info = env.step(action)
        done = term or trunc
    return env.unwrapped.episode.sim, info


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("limit", [{"max_requests": 3}, {"max_backlog": 2}])
def test_request_awaiting_the_agents_decision_is_counted_when_the_episode_is_cut(env_id, limit):
    sim, info = _summary_of_cut_episode(env_id, limit)
    s = info["summary"]
    assert_conserved(sim, s)
    if info["end_reason"] in ("max_requests", "backlog") and "Autoscaler" not in env_id:
        # cut at a decision about a request: it is still at the gateway (the autoscaler's are
        # about no request)
        assert sim.held == 1 and s["still_in_gateway"] >= 1


def test_router_max_requests_3_reproducer():
    import gymnasium as gym

    import blis_gym.envs  # noqa: F401
    env = gym.make("blis_gym/Router-v0", config={"max_requests": 3})
    env.reset(seed=0)
    done, info = False, {}
    while not done:
        _, _, term, trunc, info = env.step(0)
        done = term or trunc
    s = info["summary"]
    assert info["end_reason"] == "max_requests"
    assert s["injected_requests"] == 4 and s["still_in_gateway"] == 1
    assert_conserved(env.unwrapped.episode.sim, s)


@pytest.mark.parametrize("limit", [{"max_requests": 3}, {"max_backlog": 2}])
def test_multi_agent_episode_cut_counts_the_request_awaiting_a_decision(limit):
    from blis_gym.envs import multi_agent_env
    env = multi_agent_env(config={"horizon_s": 60, **limit})
    env.reset(seed=0)
    summary = None
    for agent in env.agent_iter():
        _, _, term, trunc, info = env.last()
        if term or trunc:
            summary = info["summary"]
            env.step(None)
        else:
            env.step(int(info["action_mask"].argmax()))
    assert_conserved(env.episode.sim, summary)


def test_tenants_empty_and_default_are_distinct_in_per_tenant():
    sim, s = _run({"workload": {"rate": 20, "num_requests": 40, "input": {**CONST, "value": 64},
                                "output": {**CONST, "value": 4},
                                "clients": [{"name": "anon", "rate_fraction": 1},
                                            {"name": "named", "rate_fraction": 1, "tenant": "default"}]}})
    assert_conserved(sim, s)
    tenants = s["per_tenant"]
    assert set(tenants) == {"", "default"}
    a = sim.metrics.arrays()
    for name, block in tenants.items():
        assert block["injected_requests"] == int((a["tenant"] == sim.metrics.strings(name)).sum()) > 0
    assert sum(b["injected_requests"] for b in tenants.values()) == s["injected_requests"]


@pytest.mark.parametrize("horizon_s", [0.05, 0.2])
def test_busy_fraction_counts_a_step_cut_by_the_horizon_only_up_to_the_horizon(horizon_s):
    sim, s = _run({"workload": {"rate": 50, "num_requests": 200, "horizon_s": horizon_s,
                                "input": {**CONST, "value": 6000}, "output": {**CONST, "value": 200}}})
    inst = sim.instances[0]
    h = int(horizon_s * 1e6)
    assert inst.step_end > h                    # the horizon cuts a step
    busy = s["per_instance"]["instance-0"]["busy_fraction"]
    assert 0 < busy <= 1
    assert busy == round((inst.busy_us - (inst.step_end - h)) / h, 6)
    if s["steps"] == 1:                         # one step, from its start to the horizon
        assert busy == round((h - inst.step_started) / h, 6)


def _shared_group_scenario(lengths, kv_blocks=None):
    clients = [{"name": f"c{i}", "rate_fraction": 1, "prefix_group": "sys", "prefix_tokens": n}
               for i, n in enumerate(lengths)]
    data = {"workload": {"rate": 30, "num_requests": 300, "clients": clients,
                         "input": {"dist": "exponential", "mean": 100, "min": 10, "max": 300},
                         "output": {"dist": "exponential", "mean": 40, "min": 1, "max": 100}}}
    if kv_blocks:
        data["vllm"] = {"total_kv_blocks": kv_blocks}
    return data


@pytest.mark.parametrize("lengths", [(100, 300), (300, 100), (5000, 1000, 16, 17, 33)])
@pytest.mark.parametrize("kv_blocks", [None, 400])
def test_clients_sharing_a_prefix_group_with_different_lengths_share_the_common_blocks(
        lengths, kv_blocks, monkeypatch):
    # The group's prefixes are one token stream cut at different lengths: requests of one
    # length hit the blocks that another length computed, up to the shorter one. Moving the
    # longer/shorter prefix whole or block by block gives the same run (invariants checked at
    # every event, under KV pressure too).
    import json

    from blis_gym.sim.engine.kv import KVStore
    out = []
    for runs in (False, True):
        monkeypatch.setattr(KVStore, "RUNS", runs)
        sim, s = _run(_shared_group_scenario(lengths, kv_blocks))
        assert_conserved(sim, s)
        assert s["completed_requests"] == 300
        out.append(json.dumps(s, sort_keys=True))
    assert out[0] == out[1]


def test_common_blocks_of_two_prefix_lengths_are_hit():
    # One group's prefix cut at 100 and at 300 tokens: the 300-token request that comes after
    # the 100-token one finds the 6 full blocks (96 tokens) they have in common, and the next
    # 100-token request finds them too (now held by the longer prefix's blocks).
    short, long_ = group_prefix(100), group_prefix(300)
    reqs = [request(0, 0, 120, 2, short), request(1, 1_000_000, 320, 2, long_),
            request(2, 2_000_000, 120, 2, short)]
    sim, s = simulate(reqs)
    assert_conserved(sim, s)
    a = sim.metrics.arrays()
    assert dict(zip(a["id"].tolist(), a["cached"].tolist())) == {0: 0, 1: 96, 2: 96}


def test_csv_trace_rows_of_one_group_with_different_prefix_tokens(tmp_path):
    rows = ["arrival_s,input_tokens,output_tokens,prefix_group,prefix_tokens"]
    for i in range(60):
        n = (100, 300, 40)[i % 3]
        rows.append(f"{i * 0.05:.2f},{n + 30},8,sys,{n}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    sc = parse_scenario({"name": "trace", "model": "Qwen/Qwen3-14B", "hardware": "H100",
                         "workload": {"trace": {"path": "t.csv", "format": "csv"}}})
    sim = Simulation(build(sc, check_invariants=True, base_dir=tmp_path))
    s = sim.run()
    assert_conserved(sim, s)
    assert s["completed_requests"] == 60 and s["prefix_cache_hit_rate"] > 0


# ---- issue 30: cost follows activity, not simulated idle time -----------------------------------
def _closed_loop(think_s: float, n: int, users: int = 1) -> dict:
    return {"workload": {"num_requests": n, "clients": [{"name": "u", "closed_loop": {"users": users, "think_time_s": think_s},
                                                         "input": {**CONST, "value": 100},
                                                         "output": {**CONST, "value": 10}}]}}


def test_a_long_idle_stretch_costs_neither_events_nor_rows(tmp_path):
    # one user thinking 10,000 s between 20 requests: 190,000 s simulated; before, 3.8M scrapes
    # and 190,000 rows per file (4.8 s, 15 MB); now a minute of rows per stretch and its last
    from blis_gym.output.files import write_run
    from blis_gym.sim.observers import IDLE_ROWS
    sim, s = _run(_closed_loop(10_000, 20))
    assert s["completed_requests"] == 20 and sim.loop.now > 190_000 * 10**6
    assert sim.loop.events < 20 * (4 * IDLE_ROWS + 100)
    write_run(sim, s, tmp_path)
    rows = (tmp_path / "timeseries.csv").read_text().splitlines()[1:]
    assert len(rows) <= 20 * (IDLE_ROWS + 3)
    assert sum(f.stat().st_size for f in tmp_path.iterdir()) < 200_000
    times = [float(r.split(",")[0]) for r in rows]
    assert times == sorted(times) and all(t == int(t) for t in times)      # on the 1 s grid
    # each stretch ends with the row of the last second before the next arrival
    arrivals = sorted(float(r.split(",")[7]) for r in (tmp_path / "requests.csv").read_text().splitlines()[1:])
    for a in arrivals[1:]:
        assert float(int(a) if a != int(a) else a - 1) in times


def test_pausing_the_scrape_leaves_what_the_router_sees_unchanged(monkeypatch):
    # the scrape paused over idle stretches catches up before anything reads it: each arrival
    # sees the same snapshots (values and their time) as when scraping through, the same run
    import json

    from blis_gym.sim.cluster.gateway import Gateway
    from blis_gym.sim.observers import PausingObserver
    seen, arrive = [], Gateway.arrive

    def recording(self, r, now):
        seen.append([(p.scraped_at, p.waiting, p.running, p.kv_usage) for p in self.pods])
        arrive(self, r, now)
    monkeypatch.setattr(Gateway, "arrive", recording)
    data = {**_closed_loop(0.4, 60, users=3), "cluster": {"instances": 3, "scrape_interval_ms": 50},
            "router": {"policy": "default"}}
    _, paused = _run(data)
    paused_seen, seen[:] = list(seen), []
    monkeypatch.setattr(PausingObserver, "_tick", _never_pausing_tick)
    sim, ticking = _run(data)
    assert sim.paused == [] and paused_seen == seen and len(seen) == 60
    assert json.dumps(paused, sort_keys=True) == json.dumps(ticking, sort_keys=True)


def _never_pausing_tick(self, _arg, now):
    self.observe(now)
    if self.more():
        self.loop.at(now + self.interval, self.priority, self._tick)


def test_cached_tokens_never_exceed_the_prompt_after_recompute_preemption(tmp_path):
    # 1-token prompts generating 400 tokens in 64 KV blocks: preempted requests re-admit and
    # hit their own generated tokens' blocks (208 tokens): those are no prompt cache hits
    from blis_gym.output.files import write_run
    sim, s = _run({"vllm": {"total_kv_blocks": 64},
                   "workload": {"rate": 100, "num_requests": 4, "input": {**CONST, "value": 1},
                                "output": {**CONST, "value": 400}}})
    assert s["preemption_count"] > 0 and s["completed_requests"] == 4
    write_run(sim, s, tmp_path)
    rows = (tmp_path / "requests.csv").read_text().splitlines()
    col = rows[0].split(",")
    for row in rows[1:]:
        r = dict(zip(col, row.split(",")))
        assert 0 <= int(r["cached_tokens"]) <= int(r["input_tokens"])
    assert s["prefix_cache_hit_rate"] > 0        # the re-admission's hits still count there, as vLLM's


def test_requests_expiring_together_in_the_flow_control_queue_keep_the_invariants():
    # two requests reach their TTL at the same instant: each is rejected before the next leaves
    # the queue, so the invariant check after each rejection counts every request (found by
    # the property suite: the second was out of the queue and not yet rejected)
    sim, s = _run({"workload": {"rate": 50, "horizon_s": 0.1, "arrival": {"process": "constant"},
                                "input": {**CONST, "value": 1}, "output": {**CONST, "value": 3},
                                "clients": [{"name": "a", "rate_fraction": 0.5},
                                            {"name": "b", "rate_fraction": 0.5, "session": {"turns": 1}}]},
                   "router": {"policy": "round-robin"},
                   "gateway": {"admission": "always-admit",
                               "flow_control": {"max_queue": 0, "per_band_capacity": 0, "dispatch_tick_ms": 0.5,
                                                "ttl_s": 0.01, "saturation": {"detector": "concurrency",
                                                                              "max_concurrency": 1}}}})
    assert_conserved(sim, s)
    assert s["rejection_reasons"] == {"429 rejected-ttl-expired": 2}
