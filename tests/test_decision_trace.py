"""What-if traces (`run --decision-trace`) and run export (`run --export-trace`): the regret of
the router's own choice is 0 and its branch reproduces the run; an overloaded alternative has a
positive regret; forks leave the main run byte-identical; traces are deterministic across
processes; an exported open-loop run replays to the same per-request results."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.output.decision_trace import COLUMNS, explain
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.simulation import Simulation

ROOT = Path(__file__).resolve().parent.parent

# four replicas behind llm-d's default profile; 48 shared prefixes over 4 s of Poisson arrivals
SHARED_PREFIX = {
    "name": "whatif", "seed": 3, "model": "Qwen/Qwen3-14B", "hardware": "H100", "tp": 1,
    "cluster": {"instances": 4, "scrape_interval_ms": 50}, "router": {"policy": "default"},
    "workload": {"inference_perf": {"num_groups": 12, "prompts_per_group": 4, "system_prompt_len": 3000,
                                    "question_len": 200, "output_len": 100, "load_type": "poisson",
                                    "stages": [{"rate": 20, "duration_s": 4}]}},
}


def write(tmp_path: Path, data: dict, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def run(*args) -> None:
    res = CliRunner().invoke(main, ["run", *map(str, args), "--quiet"])
    assert res.exit_code == 0, res.output


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """The scenario run plain, and run with every 7th decision traced (3 alternatives) and exported."""
    d = tmp_path_factory.mktemp("whatif")
    scenario = write(d, SHARED_PREFIX)
    run(scenario, "--out", d / "plain")
    run(scenario, "--out", d / "traced", "--decision-trace", "--every", "7", "--top-k", "3", "--export-trace")
    return d


def test_tracing_leaves_the_main_run_byte_identical(traced):
    for name in ("summary.json", "requests.csv", "timeseries.csv"):
        assert (traced / "plain" / name).read_bytes() == (traced / "traced" / name).read_bytes(), name


def test_the_chosen_branch_reproduces_the_run_and_has_zero_regret(traced):
    trace = rows(traced / "traced" / "decision_trace.csv")
    assert tuple(trace[0]) == COLUMNS
    requests = {r["request_id"]: r for r in rows(traced / "plain" / "requests.csv")}
    decisions = {}
    for row in trace:
        decisions.setdefault(row["decision"], []).append(row)
    assert sorted(map(int, decisions)) == list(range(0, 7 * len(decisions), 7))
    some_regret = False
    for group in decisions.values():
        assert len(group) == 4                                  # every candidate pod, scored
        (mine,) = [r for r in group if r["chosen"] == "1"]
        assert sum(r["simulated"] == "1" for r in group) == 4  # chosen + 3 alternatives
        assert mine["ttft_regret_ms"] == mine["e2e_regret_ms"] == "0.000"
        req = requests[mine["request_id"]]
        assert (mine["state"], mine["ttft_ms"], mine["e2e_ms"]) == (req["state"], req["ttft_ms"], req["e2e_ms"])
        assert req["instance"] == mine["pod"]
        for r in group:
            total = sum(2 * float(v) if k in ("queue", "kv-cache-utilization") else 3 * float(v)
                        for k, v in (kv.split("=") for kv in r["scores"].split(";")))
            assert float(r["total"]) == pytest.approx(total, rel=1e-5)
            some_regret |= r["e2e_regret_ms"] not in ("", "0.000")
    assert some_regret                                          # the alternatives are really simulated


def test_an_overloaded_alternative_has_positive_regret():
    """Two replicas: an agent sends 40 requests to pod 0, then least-loaded picks the idle pod 1
    (TTFT 47 ms, E2E 4.33 s); sending the request to the overloaded pod 0 (36 running, 4
    waiting) instead would have cost it 174 ms of TTFT and 1.38 s of E2E."""
    data = {"name": "overload", "seed": 1, "model": "Qwen/Qwen3-14B", "hardware": "H100", "tp": 1,
            "cluster": {"instances": 2, "scrape_interval_ms": 0}, "router": {"policy": "least-loaded"},
            "workload": {"rate": 40, "num_requests": 60, "input": {"dist": "constant", "value": 4000},
                         "output": {"dist": "constant", "value": 200}}}
    sim = Simulation(build(parse_scenario(data)), external={"router"})
    p = sim.run_until_decision()
    for _ in range(40):
        p = sim.decide(0)
    chosen = p.default()
    assert chosen == 1
    now, heap = sim.loop.now, list(sim.loop.heap)
    trace = {r[3]: dict(zip(COLUMNS, r)) for r in explain(sim, chosen, top_k=1, decision=40)}
    assert sim.loop.now == now and sim.loop.heap == heap and sim.pending is p     # forks only
    assert trace["instance-1"]["chosen"] == 1 and trace["instance-1"]["ttft_regret_ms"] == "0.000"
    bad = trace["instance-0"]
    assert bad["simulated"] == 1 and bad["state"] == "completed"
    assert float(bad["ttft_regret_ms"]) > 100 and float(bad["e2e_regret_ms"]) > 1000
    assert bad["rank"] == 2 and trace["instance-1"]["rank"] == 1
    assert bad["others"] == ""                                   # no window asked for
    # a 500 ms window: the 40 requests in flight and the 20 arriving by then, less this one; the
    # extra request on pod 0 slows the others there by 2.2 s of E2E in total
    window = {r[3]: dict(zip(COLUMNS, r)) for r in explain(sim, chosen, top_k=1, decision=40, window_us=500_000)}
    assert window["instance-1"]["others"] == window["instance-0"]["others"] == 59
    assert window["instance-1"]["others_e2e_regret_ms"] == "0.000"
    assert float(window["instance-0"]["others_e2e_regret_ms"]) > 1000
    assert window["instance-0"]["e2e_regret_ms"] == bad["e2e_regret_ms"]


def test_trace_is_the_same_in_another_process_and_hash_seed(traced, tmp_path):
    out = tmp_path / "again"
    subprocess.run([sys.executable, "-m", "blis_gym.cli", "run", str(traced / "s.yaml"), "--quiet", "--out",
                    str(out), "--decision-trace", "--every", "7", "--top-k", "3"], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONHASHSEED": "123"}, capture_output=True, timeout=300)
    assert (out / "decision_trace.csv").read_bytes() == (traced / "traced" / "decision_trace.csv").read_bytes()


def test_sampling_every_and_max_decisions(tmp_path):
    out = tmp_path / "o"
    run(write(tmp_path, SHARED_PREFIX), "--out", out, "--decision-trace", "--every", "5", "--max-decisions", "3",
        "--top-k", "1", "--window-ms", "300")
    trace = rows(out / "decision_trace.csv")
    assert sorted({int(r["decision"]) for r in trace}) == [0, 5, 10]
    assert all(sum(r["simulated"] == "1" for r in trace if r["decision"] == d) == 2 for d in ("0", "5", "10"))
    simulated = [r for r in trace if r["simulated"] == "1"]
    assert all(int(r["others"]) >= 1 for r in simulated)
    assert all(r["others_e2e_regret_ms"] == "0.000" for r in simulated if r["chosen"] == "1")


def test_exported_open_loop_run_replays_to_the_same_requests(traced, tmp_path):
    exported = traced / "traced" / "trace.csv"
    header = exported.read_text().splitlines()[0].split(",")
    assert header[:8] == ["arrival_s", "input_tokens", "output_tokens", "prefix_group", "prefix_tokens",
                          "session", "slo_class", "tenant"]
    assert "ttft_ms" in header and "e2e_ms" in header
    replay = {**SHARED_PREFIX, "name": "replay", "workload": {"trace": {"path": str(exported)}}}
    run(write(tmp_path, replay), "--out", tmp_path / "replay")
    before = rows(traced / "plain" / "requests.csv")
    after = rows(tmp_path / "replay" / "requests.csv")
    assert len(after) == len(before) > 50
    for a, b in zip(before, after):
        assert b.pop("client") == "trace"
        a.pop("client")
        assert a == b
    results = {r["request_id"]: r for r in rows(exported)}
    assert all(results[r["request_id"]]["e2e_ms"] == r["e2e_ms"] for r in before)


def test_exported_multi_client_run_replays_to_the_same_requests(tmp_path):
    """Clients with their own rates, classes, tenants and a prefix group shared by two of them,
    at a load that queues (priorities and shared prefixes then shape every latency)."""
    data = {"name": "mix", "seed": 11, "model": "Qwen/Qwen3-14B", "hardware": "H100", "tp": 1,
            "cluster": {"instances": 2}, "router": {"policy": "default"},
            "workload": {"rate": 30, "num_requests": 150, "input": {"dist": "gaussian", "mean": 500, "std": 200,
                                                                     "min": 10, "max": 2000},
                         "output": {"dist": "exponential", "mean": 80, "min": 1, "max": 400},
                         "clients": [
                             {"name": "chat", "rate_fraction": 2, "slo_class": "critical", "tenant": "t1",
                              "prefix_group": "sys", "prefix_tokens": 2000},
                             {"name": "batch", "slo_class": "sheddable", "tenant": "t2", "prefix_group": "sys",
                              "prefix_tokens": 2000},
                             {"name": "solo", "rate": 5, "prefix_tokens": 700}]}}
    run(write(tmp_path, data), "--out", tmp_path / "o", "--export-trace")
    trace = rows(tmp_path / "o" / "trace.csv")
    assert {(t["client"], t["prefix_group"], t["prefix_tokens"], t["slo_class"], t["tenant"]) for t in trace} == {
        ("chat", "sys", "2000", "critical", "t1"), ("batch", "sys", "2000", "sheddable", "t2"),
        ("solo", "solo", "700", "standard", "")}
    replay = {**data, "workload": {"trace": {"path": str(tmp_path / "o" / "trace.csv")}}}
    run(write(tmp_path, replay, "r.yaml"), "--out", tmp_path / "r")
    before, after = rows(tmp_path / "o" / "requests.csv"), rows(tmp_path / "r" / "requests.csv")
    assert len(before) == 150 and any(float(r["cached_tokens"]) > 0 for r in before)
    for a, b in zip(before, after):
        a.pop("client"), b.pop("client")
        assert a == b


def test_exported_sessions_keep_their_requests(tmp_path):
    """Sessions replay open-loop at their recorded arrival times: the same requests arrive (the
    turns no longer wait for the previous turn, so latencies may differ)."""
    data = {"name": "chat", "seed": 5, "model": "Qwen/Qwen3-14B", "hardware": "H100", "tp": 1,
            "cluster": {"instances": 2}, "router": {"policy": "default"},
            "workload": {"rate": 4, "num_requests": 40, "input": {"dist": "constant", "value": 300},
                         "output": {"dist": "constant", "value": 50},
                         "session": {"turns": 3, "think_time_s": 1.0}}}
    run(write(tmp_path, data), "--out", tmp_path / "o", "--export-trace")
    trace = rows(tmp_path / "o" / "trace.csv")
    assert len(trace) == 40 and all(t["session"] for t in trace)
    replay = {**data, "workload": {"trace": {"path": str(tmp_path / "o" / "trace.csv")}}}
    run(write(tmp_path, replay, "r.yaml"), "--out", tmp_path / "r")
    key = lambda r: (r["arrival_s"], r["input_tokens"])  # noqa: E731
    assert sorted(map(key, rows(tmp_path / "r" / "requests.csv"))) == sorted(map(key, trace))


@pytest.mark.parametrize("args, needle", [
    (["--decision-trace", "--top-k", "0"], "--top-k"),
    (["--every", "3"], "--every: only with --decision-trace"),
    (["--window-ms", "100"], "--window-ms: only with --decision-trace"),
    (["--decision-trace", "--every", "0"], "--every"),
])
def test_bad_trace_options_get_one_line(tmp_path, args, needle):
    res = CliRunner().invoke(main, ["run", str(write(tmp_path, SHARED_PREFIX)), "--quiet", "--out",
                                    str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert needle in res.output and len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_single_pod_and_repeated_questions_are_refused_in_one_line(tmp_path):
    res = CliRunner().invoke(main, ["run", str(ROOT / "scenarios" / "single-request.yaml"), "--quiet",
                                    "--out", str(tmp_path / "a"), "--decision-trace"])
    assert res.exit_code == 2 and "--decision-trace: the scenario has a single pod" in res.output
    data = {**SHARED_PREFIX, "workload": {"inference_perf": {**SHARED_PREFIX["workload"]["inference_perf"],
                                                             "repeat_questions": True}}}
    res = CliRunner().invoke(main, ["run", str(write(tmp_path, data)), "--quiet", "--out", str(tmp_path / "b"),
                                    "--export-trace"])
    assert res.exit_code == 2 and "--export-trace: client" in res.output and "repeat_questions" in res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("stem, horizon_s", [("pd-chat-edpp", 30), ("autoscale-bursty", 200),
                                             ("overload-gaie-legacy", 10)])
def test_forks_are_faithful_with_pd_autoscaling_and_flow_control(tmp_path, stem, horizon_s):
    """P/D, pools that start and stop replicas, and flow control: the main run is unchanged and
    each chosen branch ends its request exactly as the run did (or, cut by the horizon, leaves it
    in the same still_* state)."""
    data = yaml.safe_load((ROOT / "scenarios" / f"{stem}.yaml").read_text())
    data["workload"]["horizon_s"] = horizon_s
    scenario = write(tmp_path, data)
    run(scenario, "--out", tmp_path / "plain")
    run(scenario, "--out", tmp_path / "traced", "--decision-trace", "--every", "50")
    for name in ("summary.json", "requests.csv"):
        assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "traced" / name).read_bytes()
    requests = {r["request_id"]: r for r in rows(tmp_path / "plain" / "requests.csv")}
    chosen = [r for r in rows(tmp_path / "traced" / "decision_trace.csv") if r["chosen"] == "1"]
    assert len(chosen) > 3
    for r in chosen:
        req = requests[r["request_id"]]
        assert (r["state"], r["ttft_ms"], r["e2e_ms"]) == (req["state"], req["ttft_ms"], req["e2e_ms"])
