"""vLLM v1 semantics of one instance: chunked prefill, prefix reuse, preemption, queue order,
guards and timeouts, with the simulator's invariants checked at every event."""
from __future__ import annotations

import pytest

from blis_gym.sim.engine import State
from helpers import group_prefix, request, simulate


def records(sim):
    a = sim.metrics.arrays()
    out = {}
    for i in range(len(a["id"])):
        out[int(a["id"][i])] = {k: (v[i].item() if hasattr(v[i], "item") else v[i]) for k, v in a.items()}
    return out


def first_token_step(log, rid):
    """Index of the step whose chunk completes the prompt of request rid."""
    idx = [i for i, (_, _, chunks, _) in enumerate(log) if any(r == rid for r, _ in chunks)]
    return idx


def test_long_prompt_prefilled_in_three_chunks():
    sim, s = simulate([request(0, 0, 5000, 4)], log=True)
    log = sim.instances[0].step_log
    chunks = [n for _, _, cs, _ in log for rid, n in cs if rid == 0]
    assert chunks == [2048, 2048, 904]
    # the first token comes out of the third step; then 3 decode steps for 4 outputs
    assert len(log) == 3 + 3
    start, dt, _, _ = log[2]
    assert records(sim)[0]["ttft"] == start + dt + sim.instances[0].model.output_token_us
    assert s["completed_requests"] == 1


def test_long_prefill_threshold_caps_each_chunk():
    sim, _ = simulate([request(0, 0, 1000, 2)], log=True, long_prefill_token_threshold=256)
    chunks = [n for _, _, cs, _ in sim.instances[0].step_log for _, n in cs]
    assert chunks == [256, 256, 256, 232]


def test_decodes_are_served_before_new_prefills():
    # Request 0 decodes; request 1 (3000 tokens) is admitted with the budget left after decode.
    reqs = [request(0, 0, 100, 50), request(1, 40_000, 3000, 2)]
    sim, _ = simulate(reqs, log=True)
    mixed = [(cs, nd) for _, _, cs, nd in sim.instances[0].step_log if cs and nd]
    assert mixed, "expected a step mixing decode and prefill"
    cs, nd = mixed[0]
    assert nd == 1 and cs == [(1, 2047)]


def test_shared_prefix_reuses_64_blocks():
    prefix = group_prefix(1024)
    reqs = [request(0, 0, 1024 + 100, 10, prefix), request(1, 500_000, 1024 + 80, 10, prefix)]
    sim, s = simulate(reqs, log=True)
    rec = records(sim)
    assert rec[0]["cached"] == 0
    assert rec[1]["cached"] == 64 * 16
    chunks = {rid: n for _, _, cs, _ in sim.instances[0].step_log for rid, n in cs}
    assert chunks[1] == 80          # only the unique question is computed
    assert s["prefix_cache_hit_rate"] == pytest.approx(1024 / (1124 + 1104))


def test_prefix_hit_never_covers_the_last_prompt_token():
    # A prompt that is exactly the cached prefix still recomputes its last block (vLLM caps hits
    # at prompt - 1 tokens).
    prefix = group_prefix(1024)
    reqs = [request(0, 0, 1024 + 50, 5, prefix), request(1, 400_000, 1024, 5, prefix)]
    sim, _ = simulate(reqs)
    assert records(sim)[1]["cached"] == 63 * 16


def test_identical_prompts_in_flight_share_published_prefix_blocks():
    prefix = group_prefix(2048)
    reqs = [request(i, 0, 2048 + 30, 20, prefix) for i in range(4)]
    sim, _ = simulate(reqs)
    rec = records(sim)
    # the first request computes the prefix; the others arrive at the same time and hit the
    # blocks it published when they were allocated (vLLM hashes full blocks at allocation)
    assert rec[0]["cached"] == 0
    assert all(rec[i]["cached"] == 2048 for i in (1, 2, 3))


def test_without_prefix_caching_every_prompt_is_computed_in_full():
    prefix = group_prefix(1024)
    reqs = [request(0, 0, 1024 + 100, 10, prefix), request(1, 500_000, 1024 + 80, 10, prefix)]
    sim, s = simulate(reqs, log=True, prefix_caching=False)
    assert [r["cached"] for r in records(sim).values()] == [0, 0]
    chunks = {rid: n for _, _, cs, _ in sim.instances[0].step_log for rid, n in cs}
    assert chunks[1] == 1024 + 80
    assert s["prefix_cache_hit_rate"] == 0


def test_without_prefix_caching_heavy_load_keeps_invariants():
    prefix = group_prefix(600)
    reqs = [request(i, i * 20_000, 700 + (i * 37) % 900, 50 + (i * 53) % 400, prefix if i % 2 else None)
            for i in range(150)]
    sim, s = simulate(reqs, blocks=400, check=True, max_num_seqs=32, prefix_caching=False)
    assert s["preemption_count"] > 0 and s["completed_requests"] == 150
    assert all(r["cached"] == 0 for r in records(sim).values())


def test_kv_exhaustion_preempts_newest_and_it_completes_with_its_first_ttft():
    # 100 blocks (99 usable, 1584 tokens). Two requests of 500 + 600 tokens each fit at
    # first (64 blocks) but not when both have decoded ~300 tokens: the newest is preempted.
    reqs = [request(0, 0, 500, 600), request(1, 1000, 500, 600)]
    small, _ = simulate(reqs, blocks=100)
    big, _ = simulate([request(0, 0, 500, 600), request(1, 1000, 500, 600)])
    rs, rb = records(small), records(big)
    assert rs[0]["preempt"] == 0 and rs[1]["preempt"] >= 1
    assert rs[1]["state"] == State.COMPLETED and rs[1]["out"] == 600
    # its first token was emitted before the preemption: the TTFT the client saw stands
    assert rs[1]["ttft"] == rb[1]["ttft"]
    # the recompute costs it time: it finishes later than without preemption
    assert rs[1]["e2e"] > rb[1]["e2e"]
    assert small.instances[0].preemptions == rs[1]["preempt"]


def test_preempted_request_hits_its_own_cached_blocks_on_readmission():
    reqs = [request(0, 0, 500, 600), request(1, 1000, 500, 600)]
    sim, s = simulate(reqs, blocks=100, log=True)
    # after the preemption the victim re-prefills prompt + outputs, mostly from its cached blocks
    rs = records(sim)
    assert rs[1]["cached"] > 0
    assert s["preemption_count"] >= 1


@pytest.mark.parametrize("policy, expected", [
    ("fcfs", [0, 1, 2, 3]),
    ("priority", [0, 2, 3, 1]),     # most important first, then arrival
    ("sjf", [0, 3, 2, 1]),          # shortest prompt first
])
def test_queue_order(policy, expected):
    reqs = [request(0, 0, 400, 3, priority=3),
            request(1, 10, 900, 3, priority=-2),
            request(2, 20, 700, 3, priority=4),
            request(3, 30, 300, 3, priority=3)]
    sim, _ = simulate(reqs, max_num_seqs=1, scheduler=policy)
    rec = records(sim)
    order = sorted(rec, key=lambda i: rec[i]["sched"] + rec[i]["arrival"])
    assert order == expected


def test_priority_preemption_evicts_least_urgent():
    reqs = [request(0, 0, 500, 600, priority=-2), request(1, 1000, 500, 600, priority=4)]
    sim, _ = simulate(reqs, blocks=100, preemption="priority")
    rec = records(sim)
    assert rec[0]["preempt"] >= 1 and rec[1]["preempt"] == 0


def test_unservable_requests_are_dropped_with_a_reason():
    reqs = [request(0, 0, 5000, 10), request(1, 10, 200, 10), request(2, 20, 1500, 200)]
    sim, s = simulate(reqs, blocks=100, max_model_len=4096)
    rec = records(sim)
    names = sim.metrics.strings.names
    assert rec[0]["state"] == State.DROPPED and "max_model_len" in names[rec[0]["reason"]]
    assert rec[2]["state"] == State.DROPPED and "KV blocks" in names[rec[2]["reason"]]
    assert rec[1]["state"] == State.COMPLETED
    assert s["dropped_requests"] == 2


def test_client_deadline_times_out_queued_and_running_requests():
    # max_num_seqs 1: request 1 waits behind request 0 and gives up; request 0 runs too long.
    reqs = [request(0, 0, 500, 400, deadline=2_000_000), request(1, 10, 500, 10, deadline=1_000_000),
            request(2, 20, 100, 5, deadline=0)]
    sim, s = simulate(reqs, max_num_seqs=1)
    rec = records(sim)
    assert rec[0]["state"] == State.TIMED_OUT and rec[0]["ttft"] > 0
    assert rec[1]["state"] == State.TIMED_OUT and rec[1]["sched"] == -1
    assert rec[2]["state"] == State.COMPLETED
    assert s["timed_out_requests"] == 2
    assert s["injected_requests"] == s["completed_requests"] + s["timed_out_requests"]


def test_heavy_load_keeps_invariants_and_conserves_requests():
    prefix = group_prefix(600)
    reqs = []
    for i in range(150):
        p = prefix if i % 2 else None
        reqs.append(request(i, i * 20_000, 700 + (i * 37) % 900, 50 + (i * 53) % 400, p,
                            priority=(3, -2, 4)[i % 3], deadline=20_000_000 if i % 5 == 0 else 0))
    sim, s = simulate(reqs, blocks=400, check=True, max_num_seqs=32)
    assert s["preemption_count"] > 0
    total = (s["completed_requests"] + s["timed_out_requests"] + s["dropped_requests"]
             + s["still_queued"] + s["still_running"])
    assert total == s["injected_requests"] == 150
    rec = records(sim)
    for r in rec.values():
        if r["state"] == State.COMPLETED:
            assert 0 <= r["sched"] <= r["ttft"] <= r["e2e"]


def test_kv_usage_as_vllm_reports_it():
    sim, _ = simulate([request(0, 0, 512, 100)], blocks=101)
    kv = sim.instances[0].kv
    assert kv.usable == 100
    assert kv.usage() == 0.0                  # everything freed (cached blocks count as free)
    assert kv.peak_used == -(-(512 + 99) // 16)


def test_single_token_outputs_complete_at_the_prefill_step_and_free_their_kv():
    sim, s = simulate([request(i, i * 1000, 700, 1) for i in range(20)], check=True)
    assert s["completed_requests"] == 20 and s["itl_mean_ms"] is None
    assert sim.instances[0].kv.used == 0


@pytest.mark.parametrize("scenario", ["default", "overload-gaie-legacy", "autoscale-bursty"])
def test_planned_decode_runs_give_the_same_result_as_stepping_one_by_one(scenario, monkeypatch):
    """Runs of identical decode steps are laid out at once and materialised lazily; every
    output must be byte-identical to stepping one boundary at a time."""
    import json

    from blis_gym.schema.scenario import build, load_scenario
    from blis_gym.sim.engine.instance import Instance
    from blis_gym.sim.simulation import Simulation
    from test_cli import SCENARIOS

    sc = load_scenario(SCENARIOS / f"{scenario}.yaml")
    if scenario == "autoscale-bursty":
        sc = sc.model_copy(update={"workload": sc.workload.model_copy(update={"horizon_s": 700})})
    out = []
    for multi in (False, True):
        monkeypatch.setattr(Instance, "MULTI_STEP", multi)
        sim = Simulation(build(sc))
        summary = sim.run()
        out.append((json.dumps(summary, sort_keys=True), sim.metrics.arrays()["e2e"].tobytes(), sim.loop.events))
    assert out[0][:2] == out[1][:2]
    assert out[1][2] < out[0][2]          # and it saves events


def test_distinct_groups_never_share_block_hashes():
    # CPython hashes -1 like -2, so key -1 would make two groups' chains identical
    from blis_gym.sim.engine import Content
    with pytest.raises(ValueError):
        Content(None, ((-1, 64),), shared=True)
    groups = [Content(None, ((-k, 64),), shared=True) for k in range(2, 40)]
    firsts = {g.block_hash(0) for g in groups}
    assert len(firsts) == len(groups)


@pytest.mark.parametrize("scenario", ["cluster-4xh100-default", "cluster-4xh100-round-robin", "pd-chat-threshold16"])
def test_group_prefixes_moved_whole_give_the_same_result_as_block_by_block(scenario, monkeypatch):
    """Group prefixes held whole (one count per holder) and freed whole (one free-queue entry)
    must give exactly what per-block counting gives, evictions and preemptions included."""
    import json

    from blis_gym.schema.scenario import build, load_scenario
    from blis_gym.sim.engine.kv import KVStore
    from blis_gym.sim.simulation import Simulation
    from test_cli import SCENARIOS

    sc = load_scenario(SCENARIOS / f"{scenario}.yaml")
    horizon = 40 if "round-robin" in scenario else 25      # round robin: long enough to evict
    sc = sc.model_copy(update={"workload": sc.workload.model_copy(update={"horizon_s": horizon})})
    out = []
    for runs in (False, True):
        monkeypatch.setattr(KVStore, "RUNS", runs)
        sim = Simulation(build(sc, check_invariants=True))
        out.append(json.dumps(sim.run(), sort_keys=True))
    assert out[0] == out[1]


def test_deadlines_expire_each_as_its_own_event_in_arrival_order():
    # One timer instead of an event per request must not change what happens: equal deadlines
    # (two timeouts) expire in arrival order, each as its own event (work an expiry schedules at
    # the same time with a higher priority runs before the next expiry), and finished requests
    # never expire.
    from blis_gym.sim.core import P_ARRIVAL, P_STEP, EventLoop
    from blis_gym.sim.deadlines import Deadlines

    loop, seen = EventLoop(), []

    def expire(r, now):
        seen.append((r.id, now))
        r.state = State.TIMED_OUT
        loop.at(now, P_STEP, lambda _a, t: seen.append(("step", t)))

    dl = Deadlines(loop, expire)
    reqs = [request(0, 0, 16, 4, deadline=100), request(1, 40, 16, 4, deadline=100),
            request(2, 50, 16, 4, deadline=150), request(3, 60, 16, 4, deadline=90)]
    for r in reqs:
        loop.at(r.arrival, P_ARRIVAL, dl.add, r)
    loop.at(120, P_ARRIVAL, lambda _a, t: setattr(reqs[2], "state", State.COMPLETED))
    loop.run()
    assert seen == [(3, 90), ("step", 90), (0, 100), ("step", 100), (1, 100), ("step", 100)]
    assert not dl.queues and dl.armed == -1
