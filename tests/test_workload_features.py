"""BLIS's workload features beyond clients and sessions: activity windows (lifecycle), cohorts
and their diurnal/spike/drain patterns, multimodal prompts, fitted gamma/weibull arrivals,
single-session clients, and the one-line reason for every part still refused."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import yaml

from blis_gym.errors import ConfigError
from blis_gym.sim.core import Streams
from blis_gym.sim.engine.request import BLOCK_SIZE
from blis_gym.sim.workload import (Client, Constant, Empirical, GammaArrivals, Multimodal, PoissonArrivals,
                                   SessionConfig, WeibullArrivals, Windows, Workload, WorkloadSource, from_blis_spec)
from blis_gym.sim.workload.cohorts import US_PER_HOUR, diurnal_windows, drain_windows
from blis_gym.schema.workload import build_workload, parse_workload

C10 = Constant(10)
S = 1_000_000


def drain(w: Workload, seed: int = 7) -> list:
    src = WorkloadSource(w, Streams(seed))
    out = []
    while (r := src.next()) is not None:
        out.append(r)
    return out


def const(v) -> dict:
    return {"type": "constant", "params": {"value": v}}


IO = {"input_distribution": const(100), "output_distribution": const(10)}


def spec(top: dict, *clients: dict, **kw) -> Workload:
    """A BLIS spec of clients (each with constant lengths unless given) and top-level fields."""
    data = dict(top, **kw)
    if clients:
        data["clients"] = [dict(IO, **c) for c in clients]
    return from_blis_spec(data, "w.yaml")


# ---- activity windows ---------------------------------------------------------------------------
def test_arrivals_only_inside_windows_and_none_after_the_last():
    w = Workload([Client("a", PoissonArrivals(), C10, C10, windows=Windows([(1 * S, 2 * S), (3 * S, 4 * S)]))],
                 rate=500.0)
    assert w.finite                          # ends by itself: no num_requests or horizon needed
    t = np.array([r.arrival for r in drain(w)])
    inside = ((t >= 1 * S) & (t < 2 * S)) | ((t >= 3 * S) & (t < 4 * S))
    assert inside.all()
    per_window = [int(((t >= s) & (t < s + S)).sum()) for s in (1 * S, 3 * S)]
    assert all(abs(n - 500) < 5 * 500 ** 0.5 for n in per_window), per_window     # the rate is kept inside


def test_windows_merge_and_answer_membership():
    w = Windows([(5, 9), (0, 3), (2, 4)])
    assert w.spans == ((0, 4), (5, 9)) and w.end == 9
    assert w.active(np.array([0, 3, 4, 5, 8, 9])).tolist() == [True, True, False, True, True, False]
    assert w.overlaps(Windows([(3, 6)])) and not w.overlaps(Windows([(4, 5)])) and w.overlaps(None)


def test_fractions_are_normalised_over_co_active_clients():
    """BLIS's per-phase normalisation: two clients in disjoint phases each get the whole rate;
    an always-on client shares with both."""
    def rates(*clients):
        return [a.rate for a in Workload(list(clients), rate=100.0, num_requests=1).arrivals()]
    day, night = Windows([(0, 10 * S)]), Windows([(10 * S, 20 * S)])
    assert rates(Client("d", None, C10, C10, windows=day), Client("n", None, C10, C10, windows=night)) == [100, 100]
    assert rates(Client("d", None, C10, C10, windows=day), Client("n", None, C10, C10, windows=night),
                 Client("on", None, C10, C10)) == [50, 50, pytest.approx(100 / 3)]
    assert rates(Client("a", None, C10, C10), Client("b", None, C10, C10, rate_fraction=3)) == [25, 75]


def test_windows_are_deterministic_under_a_seed():
    w = Workload([Client("a", PoissonArrivals(), C10, C10, windows=Windows([(S, 2 * S)]))], rate=50.0)
    one = [(r.arrival, r.input_len) for r in drain(w, 3)]
    assert one == [(r.arrival, r.input_len) for r in drain(w, 3)]
    assert one != [(r.arrival, r.input_len) for r in drain(w, 4)]


def test_blis_lifecycle_windows_gate_a_client():
    window = {"start_us": 500_000, "end_us": 1_500_000}
    w = spec({"aggregate_rate": 200}, {"id": "a", "lifecycle": {"windows": [window]}})
    t = [r.arrival for r in drain(w)]
    assert t and min(t) >= 500_000 and max(t) < 1_500_000


# ---- cohorts --------------------------------------------------------------------------------------
def test_diurnal_windows_follow_the_cosine():
    ws = diurnal_windows(peak_hour=14, peak_to_trough=4.0)
    assert len(ws) == 24 and all(s == h * US_PER_HOUR for h, (s, _) in enumerate(ws))
    active = [(e - s) / US_PER_HOUR for s, e in ws]
    assert active[14] == 1.0 and active[2] == pytest.approx(0.25)          # peak: whole hour; trough: 1/R
    assert active[8] == pytest.approx((1 + np.cos(2 * np.pi * -6 / 24)) / 2 * 0.75 + 0.25, abs=1e-6)


def test_drain_windows_ramp_down_in_ten_steps():
    ws = drain_windows(start_us=1_000, ramp_us=10_000)
    assert ws[0] == (0, 1_000) and len(ws) == 11
    assert [e - s for s, e in ws[1:]] == [1_000, 900, 800, 700, 600, 500, 400, 300, 200, 100]
    assert [s for s, _ in ws[1:]] == list(range(1_000, 11_000, 1_000))


def test_cohort_expands_to_members_with_shared_fraction_prefix_and_pattern():
    w = spec({"aggregate_rate": 100, "horizon": 5_000_000,
              "cohorts": [dict(IO, id="users", population=4, rate_fraction=0.4, prefix_group="history",
                               prefix_length=64, prefix_sharing="per_member",
                               spike={"start_time_us": 1_000_000, "duration_us": 2_000_000})]},
             {"id": "solo", "rate_fraction": 0.6})
    names = [c.name for c in w.clients]
    assert names == ["solo", "users-0", "users-1", "users-2", "users-3"]
    members = w.clients[1:]
    assert [c.rate_fraction for c in members] == [0.1] * 4
    assert [c.prefix_group for c in members] == ["history-0", "history-1", "history-2", "history-3"]
    assert all(c.windows == Windows([(1_000_000, 3_000_000)]) for c in members)
    reqs = drain(w)
    by = collections.Counter(r.client for r in reqs)
    assert set(by) == set(names)
    assert all(1_000_000 <= r.arrival < 3_000_000 for r in reqs if r.client != "solo")
    # co-active in the spike: solo 0.6, members 0.1 each, out of 1.0 -> 10 req/s each over 2 s
    assert all(5 <= by[n] <= 40 for n in names[1:]), by


def test_shared_cohort_prefix_is_one_group():
    w = spec({"aggregate_rate": 10, "num_requests": 20,
              "cohorts": [dict(IO, id="u", population=3, rate_fraction=1, prefix_group="sys", prefix_length=32)]})
    assert {c.prefix_group for c in w.clients} == {"sys"} and all(c.windows is None for c in w.clients)


# ---- multimodal -----------------------------------------------------------------------------------
def test_multimodal_prompt_is_text_plus_items():
    mm = Multimodal(Constant(10), (("image", Constant(2), Constant(100)), ("audio", Constant(1), Constant(7))))
    assert mm.sample(np.random.default_rng(0), 5).tolist() == [217] * 5 and mm.mean == 217
    mm = Multimodal(None, (("image", Empirical((1, 3), (0.5, 0.5)), Constant(50)),))
    x = mm.sample(np.random.default_rng(1), 4000)
    assert set(x.tolist()) == {50, 150} and abs(x.mean() - 100) < 5
    floor = Multimodal(None, (("video", Empirical((0,), (1.0,)), Constant(0)),))
    assert floor.sample(np.random.default_rng(0), 3).tolist() == [1, 1, 1]      # counts and items at least 1


def test_multimodal_tokens_extend_the_prompt_and_are_not_shared_between_requests():
    w = Workload([Client("v", PoissonArrivals(), Multimodal(Constant(16), (("image", Constant(2), Constant(64)),)),
                         C10, prefix_group="sys", prefix_tokens=128)], rate=10.0, num_requests=2)
    a, b = drain(w)
    assert a.input_len == b.input_len == 128 + 16 + 128
    ha = [a.content.block_hash(i) for i in range(a.input_len // BLOCK_SIZE)]
    hb = [b.content.block_hash(i) for i in range(b.input_len // BLOCK_SIZE)]
    shared = sum(x == y for x, y in zip(ha, hb))
    assert shared == 128 // BLOCK_SIZE                 # only the group prefix is common


def test_blis_multimodal_client_replaces_the_input_distribution():
    w = from_blis_spec({"aggregate_rate": 10, "num_requests": 50, "clients": [{
        "id": "vision", "output_distribution": const(10),
        "multimodal": {"text_distribution": const(20), "image_distribution": const(576),
                       "image_count_distribution": {"type": "empirical", "params": {"1": 0.5, "2": 0.5}}}}]})
    assert {r.input_len for r in drain(w)} == {596, 1172}


def test_scenario_clients_take_windows_and_multimodal():
    w = build_workload(parse_workload({
        "rate": 20, "output": {"dist": "constant", "value": 8}, "input": {"dist": "constant", "value": 50},
        "clients": [{"name": "cam", "windows": [{"start_s": 1, "end_s": 2}, {"start_s": 4, "end_s": 5}],
                     "multimodal": {"text": {"dist": "constant", "value": 10},
                                    "video": {"count": {"dist": "constant", "value": 3},
                                              "tokens": {"dist": "constant", "value": 30}}}}]}))
    reqs = drain(w)
    assert reqs and {r.input_len for r in reqs} == {100}
    assert all(1 * S <= r.arrival < 2 * S or 4 * S <= r.arrival < 5 * S for r in reqs)


# ---- fitted arrivals, single sessions, reasoning ratio ----------------------------------------------
def test_gamma_and_weibull_shape_scale_give_the_fitted_process():
    w = spec({"aggregate_rate": 1, "num_requests": 20000},
             {"id": "g", "arrival": {"process": "gamma", "shape": 0.25, "scale": 4000}},
             {"id": "w", "arrival": {"process": "weibull", "shape": 2.0, "scale": 10000}})
    g, wb = w.arrivals()
    assert g == GammaArrivals(pytest.approx(1000.0), pytest.approx(2.0))         # mean 1 ms, cv 1/sqrt(0.25)
    assert isinstance(wb, WeibullArrivals) and wb.rate == pytest.approx(1e6 / (10000 * 0.886226925))
    t = np.array([r.arrival for r in drain(w) if r.client == "g"], dtype=float)
    gaps = np.diff(t)
    assert abs(gaps.mean() - 1000) < 100 and abs(gaps.std() / gaps.mean() - 2.0) < 0.3


def test_single_session_client_starts_one_conversation():
    w = spec({"aggregate_rate": 50, "horizon": 100_000_000},
             {"id": "s", "reasoning": {"reason_ratio_distribution": const(30),
                                       "multi_turn": {"max_rounds": 4, "think_time_us": 1000, "single_session": True}}})
    assert w.clients[0].session == SessionConfig(4, 0.001, False, single=True)
    src = WorkloadSource(w, Streams(1))
    first = src.next()
    assert first is not None and src.next() is None          # one open-loop arrival: the session's first turn
    follow = src.finished(first, first.arrival + 5000, True)
    assert len(follow) == 1 and follow[0].turn == 1 and follow[0].arrival == first.arrival + 6000


def test_open_loop_turns_are_pre_scheduled_and_do_not_wait():
    """closed_loop: false: turn k+1 at turn k's arrival + think + 1 µs per output token, even if
    turn k failed; the context still accumulates."""
    w = spec({"aggregate_rate": 10, "num_requests": 9},
             {"id": "o", "closed_loop": False, "output_distribution": const(50),
              "reasoning": {"multi_turn": {"max_rounds": 3, "think_time_us": 1000, "context_growth": "accumulate"}}})
    src = WorkloadSource(w, Streams(2))
    reqs = []
    while (r := src.next()) is not None:
        assert src.finished(r, r.arrival + 10 ** 9, completed=False) == []     # nothing waits for completion
        reqs.append(r)
    assert len(reqs) == 9 and src.exhausted()
    by_session = collections.defaultdict(list)
    for r in reqs:
        by_session[r.session.id].append(r)
    for turns in by_session.values():
        assert [r.turn for r in turns] == [0, 1, 2]
        assert [r.arrival - turns[0].arrival for r in turns] == [0, 1050, 2100]
        assert [r.input_len for r in turns] == [100, 250, 400]
        assert turns[1].content.block_hash(5) == turns[0].content.block_hash(5)   # turn 0's blocks reused


def test_inference_perf_multi_turn_chat_users_are_single_conversations():
    ip = {"stages": [{"rate": 4, "duration": 10}, {"rate": 8, "duration": 5}],
          "shared_prefix": {"num_unique_system_prompts": 2, "num_users_per_system_prompt": 3, "system_prompt_len": 64,
                            "question_len": 32, "output_len": 8, "enable_multi_turn_chat": True}}
    w = from_blis_spec({"inference_perf": ip})
    stage0, stage1 = w.clients[:6], w.clients[6:]
    assert [c.session.turns for c in stage0] == [7, 7, 7, 7, 6, 6]            # 40 requests over 6 users
    assert [c.session.turns for c in stage1] == [7, 7, 7, 7, 6, 6]
    assert {c.session.think_time for c in stage0} == {1.5} and {c.session.think_time for c in stage1} == {0.75}
    assert stage1[4].name == "stage-1-prompt-1-user-1" and stage1[4].prefix_group == "prompt-1"
    assert all(not c.session.accumulate and c.session.single for c in w.clients) and w.finite
    starts = drain(w)
    assert len(starts) == 12                                  # one conversation per user
    assert all((r.arrival < 10 * S) == r.client.startswith("stage-0") for r in starts)


# ---- refusals: one line with the reason -----------------------------------------------------------
def _client(extra: str) -> str:
    """A one-client spec in YAML with `extra` (flow-style lines) added to the client."""
    lines = "".join(f"    {ln}\n" for ln in extra.splitlines())
    return ("aggregate_rate: 10\nnum_requests: 5\nclients:\n  - id: a\n"
            "    input_distribution: {type: constant, params: {value: 100}}\n"
            "    output_distribution: {type: constant, params: {value: 10}}\n" + lines)


@pytest.mark.parametrize("text, needle", [
    ("aggregate_rate: 10\nservegen_data: {path: x}\n", "servegen_data: not supported: BLIS's ServeGen import draws"),
    (_client("model: llama"), "clients[0].model: not supported: one model per cluster"),
    (_client("slo_target_us: 500000"), "clients[0].slo_target_us: not supported: BLIS orders its slo-deadline"),
    (_client("lifecycle: {windows: [{start_us: 0, end_us: 5, trace_rate: 3}]}"),
     "lifecycle.windows[0].trace_rate: not supported: per-window rates"),
    (_client("reasoning: {multi_turn: {max_rounds: 2, context_growth: reset}}"),
     "context_growth = reset: not supported: only accumulate and empty are defined"),
    (_client("concurrency: 2\nrate_fraction: 0\nreasoning: {multi_turn: {max_rounds: 2}}"),
     "concurrency with reasoning.multi_turn: not supported: a client is either"),
    (_client("reasoning: {multi_turn: {max_rounds: 2}}\nmultimodal: {text_distribution: "
             "{type: constant, params: {value: 3}}}"), "multimodal with reasoning.multi_turn: not supported: BLIS"),
    (_client("think_time_us: 5"), "think_time_us: applies to concurrency clients only (a session's"),
    ("aggregate_rate: 10\ncohorts: [{id: c, population: 2, rate_fraction: 1, spike: {start_time_us: 0, "
     "duration_us: 5, trace_rate: 9}}]\n", "cohorts[0].spike.trace_rate: not supported: per-window"),
])
def test_refused_parts_say_why_in_one_line(text, needle):
    with pytest.raises(ConfigError) as e:
        from_blis_spec(yaml.safe_load(text), "w.yaml")
    msg = str(e.value)
    assert needle in msg and "\n" not in msg, msg


@pytest.mark.parametrize("text, needle", [
    (_client("lifecycle: {windows: [{start_us: 5, end_us: 5}]}"),
     "clients[0].lifecycle.windows[0].end_us: must be after start_us"),
    (_client("lifecycle: {windows: []}"), "clients[0].lifecycle.windows: give at least one"),
    (_client("multimodal: {image_distribution: {type: constant, params: {value: 3}}}"),
     "clients[0].multimodal.image_count_distribution: give image_distribution and image_count_distribution"),
    (_client("multimodal: {}"), "clients[0].multimodal: give text_distribution or"),
    (_client("arrival: {process: poisson, shape: 2, scale: 3}"), "arrival.shape: shape and scale apply to gamma"),
    (_client("arrival: {process: gamma, shape: 2}"), "clients[0].arrival.scale: required field is missing"),
    ("aggregate_rate: 10\ncohorts: [{id: c, population: 5000, rate_fraction: 1}]\n",
     "cohorts[0].population: must be <= 1000"),
    ("aggregate_rate: 10\ncohorts: [{id: c, population: 2, rate_fraction: 1, prefix_sharing: each}]\n",
     "cohorts[0].prefix_sharing: unknown 'each'"),
    ("aggregate_rate: 10\ncohorts: [{id: c, population: 2, rate_fraction: 1, diurnal: {peak_hour: 30, "
     "peak_to_trough_ratio: 2}}]\n", "cohorts[0].diurnal.peak_hour: must be <= 23"),
])
def test_bad_feature_input_names_the_field(text, needle):
    with pytest.raises(ConfigError) as e:
        from_blis_spec(yaml.safe_load(text), "w.yaml")
    assert needle in str(e.value), str(e.value)


# ---- end to end ----------------------------------------------------------------------------------
def test_a_scenario_with_windows_and_multimodal_runs_and_repeats_itself():
    """Through the simulator: the windowed multimodal client's requests all complete inside the
    run, carry their image tokens into prefill (longer TTFT than text alone), and one seed
    gives the same summary twice."""
    from pathlib import Path

    from blis_gym.schema.scenario import build, parse_scenario
    from blis_gym.sim.simulation import Simulation

    base = yaml.safe_load((Path(__file__).resolve().parent.parent / "scenarios" / "single-request.yaml").read_text())
    text = {"dist": "constant", "value": 64}

    def run(multimodal: bool) -> dict:
        client = {"name": "cam", "windows": [{"start_s": 1, "end_s": 3}]}
        client.update({"multimodal": {"text": text, "image": {"count": {"dist": "constant", "value": 2},
                                                              "tokens": {"dist": "constant", "value": 1024}}}}
                      if multimodal else {"input": text})
        base["workload"] = {"rate": 2.0, "output": {"dist": "constant", "value": 16}, "clients": [client]}
        return Simulation(build(parse_scenario(base))).run()

    mm, plain = run(True), run(False)
    assert mm == run(True)
    assert mm["completed_requests"] == plain["completed_requests"] == mm["injected_requests"] > 0
    assert mm["input_tokens"] == plain["input_tokens"] + 2048 * mm["injected_requests"]
    assert mm["ttft_mean_ms"] > plain["ttft_mean_ms"]


def test_a_window_beyond_the_horizon_ends_the_client_at_the_horizon():
    far = Windows([(10 ** 12, 10 ** 12 + S)])           # 11.6 days away at 10,000 req/s: never reached
    w = Workload([Client("a", PoissonArrivals(), C10, C10, windows=far),
                  Client("b", PoissonArrivals(1.0), C10, C10)], rate=10_000.0, horizon_us=2 * S)
    assert {r.client for r in drain(w)} == {"b"}


def test_scenario_sessions_take_single_and_open_loop():
    w = build_workload(parse_workload({
        "rate": 5, "input": {"dist": "constant", "value": 40}, "output": {"dist": "constant", "value": 20},
        "clients": [{"name": "one", "session": {"turns": 3, "think_time_s": 0.5, "single": True, "open_loop": True}}]}))
    assert w.finite                                   # a single session ends by itself
    reqs = drain(w)
    assert [r.turn for r in reqs] == [0, 1, 2]
    assert [r.arrival - reqs[0].arrival for r in reqs] == [0, 500_020, 1_000_040]
