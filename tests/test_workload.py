"""Workloads: arrival processes and rate profiles, lengths, clients and fractions, determinism,
inference-perf, sessions, closed loops, trace formats and the workload spec."""
from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from blis_gym.errors import ConfigError
from blis_gym.sim.core import Streams
from blis_gym.sim.engine import Content, EngineConfig
from blis_gym.sim.engine.request import BLOCK_SIZE
from blis_gym.sim.latency import load_hardware, load_model, make_step_model
from blis_gym.sim.simulation import InstanceConfig, SimConfig, Simulation
from blis_gym.sim.workload import (Client, ClosedLoop, Constant, ConstantArrivals, Diurnal, Empirical, Exponential,
                                   GammaArrivals, Gaussian, LogNormal, PoissonArrivals, SessionConfig, Spike,
                                   Stages, ThinkTime, TimeVarying, WeibullArrivals, Workload, WorkloadSource,
                                   inference_perf_workload, load_trace, make_arrivals)
from blis_gym.schema.workload import build_workload, parse_workload

C100 = Constant(100)


def drain(w: Workload, seed: int = 7, limit: int = 10 ** 7):
    src = WorkloadSource(w, Streams(seed))
    out = []
    while len(out) < limit:
        r = src.next()
        if r is None:
            break
        out.append(r)
    return out


def one(arrival, n=20000, horizon_us=0, **kw) -> Workload:
    return Workload(clients=[Client("c", arrival, C100, C100, **kw)], num_requests=n, horizon_us=horizon_us)


def gaps_s(reqs):
    t = np.array([r.arrival for r in reqs], dtype=float) / 1e6
    return np.diff(np.concatenate(([0.0], t)))


def blocks(content: Content) -> list[int]:
    return [content.block_hash(i) for i in range(content.length // BLOCK_SIZE)]


# ---- arrival processes ------------------------------------------------------------------------------
@pytest.mark.parametrize("proc,cv", [(PoissonArrivals(25.0), 1.0), (GammaArrivals(25.0, 2.0), 2.0),
                                     (GammaArrivals(25.0, 0.5), 0.5), (WeibullArrivals(25.0, 2.5), 2.5),
                                     (WeibullArrivals(25.0, 0.4), 0.4)])
def test_mean_gap_and_cv_of_each_process(proc, cv):
    g = gaps_s(drain(one(proc)))
    assert len(g) == 20000
    assert g.mean() == pytest.approx(1 / 25.0, rel=0.05 * max(1, cv))
    assert g.std() / g.mean() == pytest.approx(cv, rel=0.10)


def test_constant_arrivals_are_exact():
    reqs = drain(one(ConstantArrivals(8.0), n=100))
    assert [r.arrival for r in reqs] == [125_000 * (i + 1) for i in range(100)]


@pytest.mark.parametrize("proc", ["poisson", "gamma", "weibull"])
def test_time_varying_process_keeps_mean_and_cv(proc):
    # one long stage: the rescaled process must look like the stationary one
    a = make_arrivals(proc, cv=None if proc == "poisson" else 2.0, stages=[(40.0, 600.0)])
    g = gaps_s(drain(one(a, n=0)))
    assert len(g) == pytest.approx(24000, rel=0.05)
    assert g.mean() == pytest.approx(1 / 40, rel=0.05)
    assert g.std() / g.mean() == pytest.approx(1.0 if proc == "poisson" else 2.0, rel=0.10)


def test_poisson_stages_produce_the_right_counts_per_stage():
    stages = [(50.0, 20.0), (200.0, 10.0), (0.0, 5.0), (100.0, 10.0)]
    t = np.array([r.arrival for r in drain(one(make_arrivals("poisson", stages=stages), n=0))]) / 1e6
    edges = np.cumsum([0.0] + [d for _, d in stages])
    counts = np.histogram(t, bins=edges)[0]
    for (rate, dur), n in zip(stages, counts):
        mu = rate * dur
        assert abs(n - mu) <= 4 * math.sqrt(mu) + 1e-9, (rate, dur, n)
    assert t.max() <= edges[-1]            # nothing after the last stage


def test_constant_stages_are_back_to_back_and_exact():
    reqs = drain(one(make_arrivals("constant", stages=[(8, 600), (20, 600)]), n=0))
    t = [r.arrival for r in reqs]
    assert len(t) == 8 * 600 + 20 * 600
    assert t[0] == 125_000 and t[4799] == 600_000_000 and t[4800] == 600_050_000 and t[-1] == 1_200_000_000
    assert set(np.diff(t[:4800]).tolist()) == {125_000}
    assert set(np.diff(t[4800:]).tolist()) == {50_000}


def test_diurnal_rate_follows_the_sine():
    prof = Diurnal(mean=200.0, amplitude=0.8, period_s=100.0, peak_offset_s=0.0)
    t = np.array([r.arrival for r in drain(one(TimeVarying(PoissonArrivals(), prof), n=0,
                                                                   horizon_us=200_000_000))]) / 1e6
    t = t[t < 200]
    edges = np.arange(0, 201, 10.0)
    counts = np.histogram(t, bins=edges)[0]
    expect = np.diff(prof.cumulative(edges))
    assert np.all(np.abs(counts - expect) <= 4 * np.sqrt(expect) + 1)
    # the sin peaks at t = period/4 (+ k·period), the trough at 3/4
    assert counts[2] > 3 * counts[7]


def test_spike_windows_replace_the_base_rate():
    prof = Spike(10.0, [(20.0, 5.0, 400.0)])
    t = np.array([r.arrival for r in drain(one(TimeVarying(PoissonArrivals(), prof), n=0,
                                                                   horizon_us=60_000_000))]) / 1e6
    t = t[t < 60]
    inside = ((t >= 20) & (t < 25)).sum()
    outside = len(t) - inside
    assert abs(inside - 2000) <= 4 * math.sqrt(2000)
    assert abs(outside - 550) <= 4 * math.sqrt(550)


# ---- lengths ---------------------------------------------------------------------------------------
def test_length_distributions_clamps_and_means():
    rng = np.random.default_rng(3)
    g = Gaussian(500, 300, 100, 800).sample(rng, 50_000)
    assert g.min() >= 100 and g.max() <= 800 and (g == 100).any() and (g == 800).any()
    e = Exponential(200).sample(rng, 50_000)
    assert e.min() >= 1 and e.mean() == pytest.approx(200, rel=0.03)
    ec = Exponential(200, 50, 300).sample(rng, 1000)
    assert ec.min() >= 50 and ec.max() <= 300
    ln = LogNormal(5.0, 0.5).sample(rng, 50_000)
    assert ln.mean() == pytest.approx(LogNormal(5.0, 0.5).mean, rel=0.03)
    emp = Empirical((10, 20, 30), (0.2, 0.3, 0.5)).sample(rng, 50_000)
    assert set(np.unique(emp).tolist()) == {10, 20, 30}
    assert (emp == 30).mean() == pytest.approx(0.5, abs=0.015)
    assert set(Constant(7).sample(rng, 10).tolist()) == {7}


def test_think_time_in_seconds_sampled_as_microseconds():
    rng = np.random.default_rng(0)
    assert ThinkTime.of(0.25).sample_us(rng, 3).tolist() == [250_000] * 3
    x = ThinkTime("exponential", mean_=2.0).sample_us(rng, 20_000)
    assert x.min() >= 0 and x.mean() == pytest.approx(2e6, rel=0.05)


# ---- clients and fractions ----------------------------------------------------------------------
def test_rate_fractions_split_counts_and_aggregate_rate():
    w = Workload(clients=[Client("a", None, C100, C100, rate_fraction=1, slo_class="critical"),
                          Client("b", GammaArrivals(cv=2.0), C100, C100, rate_fraction=3, slo_class="batch")],
                 rate=40.0, horizon_us=500_000_000)
    reqs = [r for r in drain(w) if r.arrival <= w.horizon_us]
    n_a = sum(r.client == "a" for r in reqs)
    n_b = sum(r.client == "b" for r in reqs)
    assert n_a == pytest.approx(5000, rel=0.06) and n_b == pytest.approx(15000, rel=0.10)
    assert {(r.client, r.priority) for r in reqs} == {("a", 4), ("b", -1)}
    assert w.sheddable("batch") and not w.sheddable("critical")


def test_same_seed_same_requests_other_seed_differs():
    def w():
        return Workload(clients=[Client("a", PoissonArrivals(50), Gaussian(300, 100, 10, 900), Exponential(80),
                                        prefix_tokens=64)], num_requests=2000)
    sig = [[(r.id, r.arrival, r.input_len, r.output_len) for r in drain(w(), seed=s)] for s in (1, 1, 2)]
    assert sig[0] == sig[1] and sig[0] != sig[2]


def test_changing_client_b_leaves_client_a_identical():
    def run(b: Client, extra=()):
        a = Client("a", GammaArrivals(cv=1.5), Gaussian(300, 100, 10, 900), Exponential(80), rate_fraction=1)
        w = Workload(clients=[a, b, *extra], rate=100.0, horizon_us=30_000_000)
        return [(r.arrival, r.input_len, r.output_len) for r in drain(w) if r.client == "a"
                and r.arrival <= w.horizon_us]
    base = run(Client("b", PoissonArrivals(), C100, C100, rate_fraction=1))
    changed = run(Client("b", WeibullArrivals(cv=3.0), Exponential(900), Gaussian(5, 1), rate_fraction=1,
                         slo_class="batch", prefix_tokens=500, session=SessionConfig(3, 1.0)))
    added = run(Client("b", PoissonArrivals(), C100, C100, rate_fraction=1),
                extra=[Client("c", PoissonArrivals(500.0), C100, C100)])        # own absolute rate
    assert len(base) > 1000 and base == changed == added


def test_unknown_class_and_missing_rate_are_config_errors():
    with pytest.raises(ConfigError, match="slo_class"):
        WorkloadSource(one(PoissonArrivals(1), slo_class="gold"), Streams(1))
    with pytest.raises(ConfigError, match="no rate"):
        WorkloadSource(one(PoissonArrivals()), Streams(1))
    with pytest.raises(ConfigError, match="num_requests or horizon"):
        WorkloadSource(one(PoissonArrivals(1), n=0), Streams(1))


# ---- inference-perf ------------------------------------------------------------------------------
def test_inference_perf_builder():
    w = inference_perf_workload(num_groups=3, prompts_per_group=2, system_prompt_len=100, question_len=447,
                                output_len=248, stages=[(4, 15), {"rate": 10, "duration_s": 3}])
    reqs = drain(w)
    assert len(reqs) == w.num_requests == 4 * 15 + 10 * 3
    assert [r.arrival for r in reqs[:3]] == [250_000, 500_000, 750_000]
    assert reqs[59].arrival == 15_000_000 and reqs[60].arrival == 15_100_000 and reqs[-1].arrival == 18_000_000
    assert {(r.input_len, r.output_len) for r in reqs} == {(547, 248)}
    # users cycle group by group: g0p0 g0p1 g1p0 g1p1 g2p0 g2p1 g0p0 ...
    assert [r.tenant for r in reqs[:7]] == ["prompt-0", "prompt-0", "prompt-1", "prompt-1", "prompt-2", "prompt-2",
                                            "prompt-0"]
    by_group: dict[str, list] = {}
    for r in reqs:
        by_group.setdefault(r.tenant, []).append(r)
    prefixes = {g: {tuple(blocks(r.content.parent)) for r in rs} for g, rs in by_group.items()}
    assert all(len(p) == 1 for p in prefixes.values())              # one shared prefix per group
    assert len({next(iter(p)) for p in prefixes.values()}) == 3     # and groups differ
    assert all(r.content.parent.shared and r.content.parent.length == 100 for r in reqs)
    # questions are unique: the first block past the prefix differs between requests of a group
    g0 = by_group["prompt-0"]
    assert g0[0].content.block_hash(7) != g0[1].content.block_hash(7)


def test_inference_perf_from_spec_and_repeat_questions():
    spec = parse_workload({"inference_perf": {"num_groups": 2, "prompts_per_group": 2, "system_prompt_len": 32,
                                              "question_len": 64, "output_len": 5, "repeat_questions": True,
                                              "stages": [{"rate": 2, "duration_s": 10}]}})
    w = build_workload(spec)
    reqs = drain(w)
    assert len(reqs) == 20 and w.num_requests == 20
    # with repeat_questions every 4th request re-sends the same prompt
    assert blocks(reqs[0].content) == blocks(reqs[4].content) != blocks(reqs[1].content)


def test_inference_perf_poisson_load_varies_with_the_seed():
    # load_type constant: the same arrivals whatever the seed; poisson (inference-perf's
    # load.type: poisson): a Poisson process per stage, different for every seed, ending with the
    # last stage.
    def spec(load_type):
        return parse_workload({"inference_perf": {"num_groups": 2, "prompts_per_group": 2, "system_prompt_len": 32,
                                                  "question_len": 64, "output_len": 5, "load_type": load_type,
                                                  "stages": [{"rate": 50, "duration_s": 20}]}})
    const = [[r.arrival for r in drain(build_workload(spec("constant")), seed=s)] for s in (1, 2)]
    assert const[0] == const[1] and len(const[0]) == 1000
    pois = [[r.arrival for r in drain(build_workload(spec("poisson")), seed=s)] for s in (1, 2)]
    assert pois[0] != pois[1]
    for arrivals in pois:
        assert abs(len(arrivals) - 1000) < 4 * math.sqrt(1000) and arrivals[-1] <= 20_000_000
        assert np.diff(arrivals).std() / np.diff(arrivals).mean() == pytest.approx(1.0, rel=0.15)
    with pytest.raises(ValueError, match="load_type"):
        spec("bursty")


# ---- sessions -----------------------------------------------------------------------------------
def session_workload(accumulate=True, think=2.0, turns=3):
    return Workload(clients=[Client("chat", PoissonArrivals(5), Gaussian(100, 30, 20, 200), Gaussian(40, 10, 5, 80),
                                    prefix_group="sys", prefix_tokens=64, timeout_us=10_000_000,
                                    session=SessionConfig(turns, think, accumulate))], num_requests=1000)


def test_session_follow_up_at_completion_plus_think_with_accumulated_content():
    src = WorkloadSource(session_workload(), Streams(5))
    r0 = src.next()
    assert r0.turn == 0 and r0.session is not None and r0.rehash
    done = r0.arrival + 3_000_000
    (r1,) = src.finished(r0, done, True)
    assert r1.arrival == done + 2_000_000 and r1.turn == 1 and r1.session is r0.session
    assert r1.deadline == r1.arrival + 10_000_000
    prev_full = Content(r0.content, ((r0.id * 4 + 2, r0.output_len),))
    n = prev_full.length // BLOCK_SIZE
    assert blocks(r1.content)[:n] == blocks(prev_full)       # the previous prompt + output is hit
    assert blocks(r1.content)[:r0.content.length // BLOCK_SIZE] == blocks(r0.content)
    assert r1.input_len == prev_full.length + r1.content.segments[0][1]
    assert r1.content.parent.parent.parent.shared             # group prefix at the root
    (r2,) = src.finished(r1, r1.arrival + 1_000_000, True)
    assert r2.turn == 2 and not r2.rehash                     # the last turn need not publish its blocks
    assert src.finished(r2, r2.arrival + 1_000_000, True) == []   # turns exhausted


def test_failed_turn_ends_session_and_no_accumulation_option():
    src = WorkloadSource(session_workload(), Streams(5))
    r0 = src.next()
    assert src.finished(r0, r0.arrival + 1000, False) == []
    src = WorkloadSource(session_workload(accumulate=False), Streams(5))
    r0 = src.next()
    (r1,) = src.finished(r0, r0.arrival + 1000, True)
    assert r1.content.parent is r0.content.parent and r1.input_len == 64 + r1.content.segments[0][1]


def test_session_turns_do_not_depend_on_completion_order():
    def follow_ups(order):
        src = WorkloadSource(session_workload(think=ThinkTime("exponential", mean_=1.0)), Streams(9))
        first = [src.next() for _ in range(5)]
        out = {}
        for i in order:
            (f,) = src.finished(first[i], 50_000_000, True)
            out[first[i].session.id] = (f.arrival, f.input_len - first[i].content.length - first[i].output_len,
                                        f.output_len)
        return out
    assert follow_ups([0, 1, 2, 3, 4]) == follow_ups([4, 2, 0, 3, 1])


class RecordingSource(WorkloadSource):
    """Keeps every request it hands out (open-loop and follow-ups)."""

    def __init__(self, *a):
        super().__init__(*a)
        self.seen = []

    def next(self):
        r = super().next()
        if r is not None:
            self.seen.append(r)
        return r

    def finished(self, r, now, completed):
        out = super().finished(r, now, completed)
        self.seen.extend(out)
        return out


def make_sim(workload, monkeypatch, horizon_us=0, blocks=20000):
    from blis_gym.sim import simulation
    monkeypatch.setattr(simulation, "WorkloadSource", RecordingSource)
    model = load_model("Qwen/Qwen3-14B")
    hw = load_hardware("H100")
    inst = InstanceConfig("instance-0", EngineConfig(max_num_seqs=64, max_num_batched_tokens=2048),
                          make_step_model("trained-physics", model, hw, 1), blocks)
    sim = Simulation(SimConfig(instances=[inst], workload=workload, seed=3, horizon_us=horizon_us,
                               sample_interval_us=0, check_invariants=True))
    return sim, sim.source.seen


def test_sessions_in_a_simulation_hit_the_previous_turns_blocks(monkeypatch):
    w = session_workload()
    w.num_requests = 90
    sim, seen = make_sim(w, monkeypatch)
    s = sim.run()
    assert s["completed_requests"] == len(seen) == 90
    later = [r for r in seen if r.turn > 0]
    assert later and all(r.hit_blocks * BLOCK_SIZE >= r.content.parent.length - BLOCK_SIZE for r in later)
    for r in later:     # every follow-up arrived think time after its previous turn finished
        prev = next(p for p in seen if p.session is r.session and p.turn == r.turn - 1)
        assert r.arrival == prev.finished + 2_000_000
    assert sim.source.exhausted()


def test_closed_loop_keeps_at_most_users_in_flight(monkeypatch):
    users, think = 4, 0.05
    w = Workload(clients=[Client("loop", None, Gaussian(300, 100, 50, 600), Gaussian(50, 20, 5, 100),
                                 closed_loop=ClosedLoop(users, think))], num_requests=80)
    sim, seen = make_sim(w, monkeypatch)
    s = sim.run()
    assert len(seen) == 80 and s["completed_requests"] == 80
    assert sorted(r.arrival for r in seen)[:users] == [int(u * think * 1e6 / users) for u in range(users)]
    events = sorted([(r.arrival, 1) for r in seen] + [(r.finished, -1) for r in seen])
    level = np.cumsum([e for _, e in events])
    assert level.max() == users
    # each user's next request arrives think time after its previous one finished
    finishes = sorted(r.finished for r in seen)
    later = sorted(r.arrival for r in seen)[users:]
    assert all(any(a == f + 50_000 for f in finishes) for a in later)


# ---- traces ------------------------------------------------------------------------------------------
def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def test_csv_trace_replays_rows_with_groups_sessions_classes(tmp_path):
    p = write(tmp_path, "t.csv", """
        arrival_s,input_tokens,output_tokens,prefix_group,prefix_tokens,session,slo_class,tenant,extra
        0.5,300,20,sys,256,,critical,t1,x
        0.75,400,30,sys,256,,batch,t2,x
        1.0,100,10,,,s1,,,x
        2.0,150,10,,,s1,,,x
    """)
    w = load_trace(p, "csv", timeout_us=5_000_000)
    reqs = drain(w)
    assert [(r.arrival, r.input_len, r.output_len) for r in reqs] == [
        (500_000, 300, 20), (750_000, 400, 30), (1_000_000, 100, 10), (2_000_000, 150, 10)]
    assert [r.slo_class for r in reqs] == ["critical", "batch", "standard", "standard"]
    assert [r.priority for r in reqs] == [4, -1, 3, 3] and reqs[1].tenant == "t2"
    assert reqs[0].content.parent is reqs[1].content.parent and reqs[0].content.parent.length == 256
    assert reqs[0].deadline == 5_500_000
    # session rows: turn 2 extends turn 1's prompt + output (100 + 10 <= 150)
    assert reqs[2].session is reqs[3].session and (reqs[2].turn, reqs[3].turn) == (0, 1)
    full = Content(reqs[2].content, ((reqs[2].id * 4 + 2, 10),))
    assert blocks(reqs[3].content)[:len(blocks(full))] == blocks(full)


def test_azure_trace_times_are_relative_to_the_first_row(tmp_path):
    p = write(tmp_path, "azure.csv", """
        TIMESTAMP,ContextTokens,GeneratedTokens
        2023-11-16 18:15:46.6805900,374,44
        2023-11-16 18:15:50.9951690,396,109
        2023-11-16 18:16:00.0000000,879,0
    """)
    reqs = drain(load_trace(p, "azure"))
    assert [(r.arrival, r.input_len, r.output_len) for r in reqs] == [
        (0, 374, 44), (4_314_579, 396, 109), (13_319_410, 879, 1)]


def test_blis_v2_spec_maps_clients(tmp_path):
    p = write(tmp_path, "spec.yaml", """
        version: "2"
        seed: 42
        aggregate_rate: 100.0
        num_requests: 300
        goodput_slo_targets:
          critical: {ttft_ms: 200, e2e_ms: 5000}
        clients:
          - id: heavy
            tenant_id: tenant-A
            slo_class: batch
            rate_fraction: 0.75
            arrival: {process: gamma, cv: 3.0}
            input_distribution: {type: gaussian, params: {mean: 400, std_dev: 120, min: 100, max: 800}}
            output_distribution: {type: exponential, params: {mean: 120}}
            prefix_group: sys
            prefix_length: 512
          - id: chat
            slo_class: critical
            rate_fraction: 0.25
            streaming: true
            input_distribution: {type: empirical, params: {"64": 0.5, "128": 0.5}}
            output_distribution: {type: constant, params: {value: 16}}
            reasoning:
              multi_turn: {max_rounds: 3, think_time_us: 500000, context_growth: accumulate}
    """)
    w = load_trace(p, "blis-v2")
    heavy, chat = w.clients
    assert (w.rate, w.num_requests) == (100.0, 300)
    assert w.slo_targets == {"critical": {"ttft_ms": 200.0, "e2e_ms": 5000.0}}
    assert heavy.arrival == GammaArrivals(None, 3.0) and heavy.prefix_tokens == 512 and heavy.tenant == "tenant-A"
    assert heavy.input == Gaussian(400.0, 120.0, 100, 800) and heavy.timeout_us == 0
    assert chat.session == SessionConfig(3, 0.5, True) and chat.timeout_us == 300_000_000
    reqs = drain(w)
    assert len(reqs) == 300
    assert {r.input_len for r in reqs if r.client == "chat"} == {64, 128}


def test_blis_v2_unsupported_keys_are_named(tmp_path):
    p = write(tmp_path, "c.yaml", """
        version: "2"
        aggregate_rate: 10
        servegen_data: {path: data/}
    """)
    with pytest.raises(ConfigError, match="servegen_data: not supported: BLIS's ServeGen import"):
        load_trace(p, "blis-v2")
    p = write(tmp_path, "l.yaml", """
        aggregate_rate: 10
        clients:
          - id: a
            input_distribution: {type: zipf, params: {s: 1}}
            output_distribution: {type: constant, params: {value: 1}}
    """)
    with pytest.raises(ConfigError, match=r"clients\[0\].input_distribution.type: unknown 'zipf'; allowed: constant"):
        load_trace(p, "blis-v2")


@pytest.mark.parametrize("text,fmt,pattern", [
    ("arrival_s,input_tokens\n0,1\n", "csv", r"missing column 'output_tokens'"),
    ("arrival_s,input_tokens,output_tokens\n0,10,5\n1,abc,5\n", "csv", r"t\.csv:3: input_tokens is not a number"),
    ("arrival_s,input_tokens,output_tokens\n0,10,5\n1,10,5\n2,10,-3\n", "csv",
     r"t\.csv:4: negative output_tokens"),
    ("arrival_s,input_tokens,output_tokens\n0,10,5\n2,10,5\n1,10,5\n", "csv",
     r"t\.csv:4: arrival_s goes backwards"),
    ("", "csv", r"empty file"),
    ("arrival_s,input_tokens,output_tokens\n", "csv", r"empty file"),
    ("arrival_s,input_tokens,output_tokens,prefix_tokens\n0,10,5,20\n", "csv", r"t\.csv:2: prefix_tokens"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1,1\nyesterday,1,1\n", "azure",
     r"t\.csv:3: TIMESTAMP is not a date"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,1,1\n2023-11-16 18:15:40,1,1\n", "azure",
     r"t\.csv:3: TIMESTAMP goes backwards"),
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,1\n", "azure", r"missing column 'GeneratedTokens'"),
])
def test_malformed_traces_raise_one_clear_config_error(tmp_path, text, fmt, pattern):
    p = tmp_path / "t.csv"
    p.write_text(text)
    with pytest.raises(ConfigError, match=pattern) as e:
        load_trace(p, fmt)
    assert "\n" not in str(e.value)


# ---- the spec ----------------------------------------------------------------------------------------
def test_single_client_spec_is_backward_compatible():
    spec = parse_workload({"rate": 5, "arrival": {"process": "constant"}, "input": {"dist": "constant", "value": 64},
                           "output": {"dist": "gaussian", "mean": 20, "std": 5, "min": 1, "max": 40},
                           "prefix_tokens": 32, "num_requests": 10, "timeout_s": 30, "slo_class": "batch"})
    w = build_workload(spec)
    (c,) = w.clients
    assert c == Client(name="default", arrival=ConstantArrivals(5.0), input=Constant(64),
                       output=Gaussian(20.0, 5.0, 1, 40), slo_class="batch", prefix_group="shared",
                       prefix_tokens=32, timeout_us=30_000_000)
    assert (w.num_requests, w.horizon_us) == (10, 0)
    reqs = drain(w)
    assert [r.arrival for r in reqs] == [200_000 * (i + 1) for i in range(10)]
    assert all(r.input_len == 96 and r.priority == -1 for r in reqs)


def test_multi_client_spec_with_profile_sessions_closed_loop_and_trace(tmp_path):
    write(tmp_path, "tr.csv", "arrival_s,input_tokens,output_tokens\n1,10,2\n2,20,3\n")
    spec = parse_workload({
        "rate": 20, "arrival": {"process": "gamma", "cv": 2, "stages": [{"rate": 20, "duration_s": 10},
                                                                         {"rate": 40, "duration_s": 10}]},
        "input": {"dist": "lognormal", "mu": 5, "sigma": 0.3}, "output": {"dist": "empirical", "pmf": {8: 1, 16: 3}},
        "horizon_s": 60, "trace": {"path": "tr.csv"},
        "clients": [{"name": "a", "rate_fraction": 1, "slo_class": "critical", "prefix_group": "g",
                     "prefix_tokens": 48},
                    {"name": "b", "rate_fraction": 3, "prefix_group": "g", "prefix_tokens": 48,
                     "session": {"turns": 2, "think_time_s": {"dist": "exponential", "mean": 1.5}}},
                    {"name": "c", "closed_loop": {"users": 3, "think_time_s": 0.5}},
                    {"name": "d", "rate": 2.0, "arrival": {"process": "constant"}}],
        "slo_targets": {"critical": {"ttft_ms": 100, "itl_ms": 20}},
        "priorities": {"batch": -5}})
    w = build_workload(spec, tmp_path)
    assert [c.name for c in w.clients] == ["trace", "a", "b", "c", "d"]
    assert w.slo_targets == {"critical": {"ttft_ms": 100.0, "itl_ms": 20.0}}
    assert w.priorities["batch"] == -5 and w.horizon_us == 60_000_000
    a, b = w.arrivals()[1:3]
    assert a.profile == Stages([(5.0, 10.0), (10.0, 10.0)]) and b.profile == Stages([(15.0, 10.0), (30.0, 10.0)])
    reqs = drain(w)
    by = {n: [r for r in reqs if r.client == n] for n in "abcd"}
    assert len([r for r in reqs if r.client == "trace"]) == 2
    assert len(by["c"]) == 3 and [r.arrival for r in by["d"]][:2] == [500_000, 1_000_000]
    assert by["a"][0].content.parent is by["b"][0].content.parent       # groups shared across clients
    assert max(r.arrival for r in by["a"] + by["b"]) <= 20_000_000      # stages end


@pytest.mark.parametrize("data,pattern", [
    ({"rate": 1, "input": {"dist": "constant", "value": 1}, "output": {"dist": "constant", "value": 1}},
     "num_requests or horizon_s"),
    ({"rate": 1, "input": {"dist": "constant", "value": 1}, "output": {"dist": "constant", "value": 1},
      "num_requests": 1, "arrival": {"process": "poisson", "cv": 2}}, "cv applies to gamma"),
    ({"num_requests": 1, "clients": [{"name": "a", "input": {"dist": "constant", "value": 1},
                                      "output": {"dist": "constant", "value": 1}}]}, "no rate"),
    ({"rate": 1, "num_requests": 1, "input": {"dist": "constant", "value": 1},
      "output": {"dist": "constant", "value": 1}, "arrival": {"stages": [{"rate": 1, "duration_s": 1}],
                                                               "diurnal": {"amplitude": 0.5}}}, "at most one"),
    ({"trace": {"path": "x.csv", "format": "parquet"}}, "trace.format"),
    ({"rate": 1, "horizon_s": 1, "input": {"dist": "constant", "value": 1},
      "output": {"dist": "constant", "value": 1}, "slo_class": "gold"}, "unknown SLO class 'gold'"),
])
def test_spec_errors(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_workload(data)


def test_block_hashes_depend_on_tokens_not_on_how_content_is_built():
    # The same 200 tokens as one Content with two segments, as a parent and a child, and hashed
    # all at once or block by block: the same chained block hashes (vLLM hashes token IDs).
    flat = Content(None, ((5, 100), (6, 100)))
    parent = Content(None, ((5, 100),))
    child = Content(parent, ((6, 100),))
    stepwise = Content(Content(None, ((5, 100),)), ((6, 100),))
    by_block = [stepwise.block_hash(i) for i in range(200 // BLOCK_SIZE)]
    assert blocks(flat) == blocks(child) == by_block
    assert child.prefix_hashes(12) == blocks(flat)
    assert blocks(Content(None, ((5, 100), (7, 100))))[6:] != blocks(flat)[6:]   # other tokens differ
    assert blocks(Content(None, ((5, 100), (7, 100))))[:6] == blocks(flat)[:6]   # from where they differ
