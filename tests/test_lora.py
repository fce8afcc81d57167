"""LoRA adapters: vLLM's max_loras batch limit and adapter cache, cold-load and per-step costs,
GAIE's lora-affinity scorer, per-adapter metrics, the lora-affinity scenario, and bad input."""
from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError
from blis_gym.policies.routing.scorers import LoraAffinityScorer
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.cluster.signals import PodSignals
from blis_gym.sim.engine.lora import Adapter, LoraConfig, bytes_per_rank, overhead
from blis_gym.sim.latency import load_model
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved, request, simulate, with_fields

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = yaml.safe_load((ROOT / "scenarios" / "lora-affinity.yaml").read_text())
QWEN_LOAD_US = 1500 + -(-16 * bytes_per_rank(load_model("Qwen/Qwen3-14B")) // 2000)   # rank 16 at 2 GB/s


def lora_scenario(requests: int = 600, **vllm) -> dict:
    d = copy.deepcopy(SCENARIO)
    d["workload"]["num_requests"] = requests
    d["vllm"].update(vllm)
    return d


def with_adapter(r, a):
    r.adapter = a
    return r


# ---- the engine ----------------------------------------------------------------------------------
def test_a_cold_adapter_costs_one_load_and_every_step_its_overhead():
    """Worked number: one rank-16 request on Qwen3-14B / H100. Its first step lasts the base
    step x 1.035 (one adapter in the batch) + the load (1.5 ms + 16 x 8,028,160 B at 2 GB/s)."""
    assert bytes_per_rank(load_model("Qwen/Qwen3-14B")) == 8_028_160
    assert QWEN_LOAD_US == 65_726
    cfg = LoraConfig(max_loras=1, bytes_per_rank=8_028_160)
    assert cfg.load_us(16) == 65_726
    sim_b, base = simulate([request(0, 0, 512, 4)], log=True)
    plain = [dt for _, dt, _, _ in sim_b.instances[0].step_log]
    a = Adapter("a", 16)
    sim, s = simulate([with_adapter(request(0, 0, 512, 4), a)], log=True, lora=cfg)
    steps = [dt for _, dt, _, _ in sim.instances[0].step_log]
    assert steps[0] == int(plain[0] * 1.035) + 65_726
    assert steps[1:] == [int(dt * 1.035) for dt in plain[1:]]
    assert sim.instances[0].lora.loads == {"a": 1}
    assert s["ttft_mean_ms"] > base["ttft_mean_ms"] + 65.7


def test_load_time_is_charged_once_per_cold_load():
    """Two adapters of rank 8 and 32 share max_cpu_loras 1: a, a, b, a in turn loads a, b, a
    (three loads), and the time charged is exactly their load times."""
    cfg = LoraConfig(max_loras=1, max_cpu_loras=1, bytes_per_rank=1_000_000)
    a, b = Adapter("a", 8), Adapter("b", 32)
    reqs = [with_adapter(request(i, i * 2_000_000, 200, 4), x) for i, x in enumerate((a, a, b, a))]
    sim, _ = simulate(reqs, lora=cfg)
    st = sim.instances[0].lora
    assert st.loads == {"a": 2, "b": 1}
    assert st.load_us_total == 2 * cfg.load_us(8) + cfg.load_us(32) == 2 * (1500 + 4000) + (1500 + 16000)


def test_a_request_whose_adapter_finds_no_slot_waits_and_those_behind_it_go_ahead():
    """max_loras 1: a runs; b (another adapter) is skipped; the second a request, behind b in the
    queue, joins the batch at once (vLLM skips, it does not block); b runs once a is done."""
    a, b = Adapter("a", 16), Adapter("b", 16)
    reqs = [with_adapter(request(0, 0, 100, 50), a), with_adapter(request(1, 1000, 100, 50), b),
            with_adapter(request(2, 1000, 100, 50), a)]
    sim, s = simulate(reqs, lora=LoraConfig(max_loras=1, max_cpu_loras=2, bytes_per_rank=1000))
    r0, r1, r2 = sorted(reqs, key=lambda r: r.id)
    assert s["completed_requests"] == 3
    assert r2.scheduled < r0.finished <= r1.scheduled
    assert sim.instances[0].lora.peak_distinct == 1


def _checked_run(d: dict):
    """Run a scenario with the simulator's invariants checked at every event (LoRA's included:
    adapter counts match the requests, at most max_loras in a batch, running adapters loaded),
    recording the distinct adapters of each batch formed."""
    sim = Simulation(build(parse_scenario(d), check_invariants=True))
    seen = []
    for inst in sim.instances:
        form = inst._form_step

        def recorded(now, inst=inst, form=form):
            form(now)
            seen.append(len({r.adapter for r in inst.running}))
        inst._form_step = recorded
    return sim, seen, sim.run()


def test_never_more_than_max_loras_adapters_in_a_batch():
    _, seen, s = _checked_run(lora_scenario(300, max_loras=2, max_cpu_loras=3))
    assert max(seen) == 2
    assert s["completed_requests"] == 300


def test_preempted_requests_keep_their_adapter_counts_right():
    d = lora_scenario(300, max_loras=3, total_kv_blocks=400)
    d["workload"]["rate"] = 40
    sim, _, _ = _checked_run(d)
    assert sum(i.preemptions for i in sim.instances) > 0


# ---- the scorer ---------------------------------------------------------------------------------
def test_lora_affinity_scores_active_then_room_then_waiting_then_none():
    """GAIE's order: 1.0 running here; 0.8 room for one more adapter; 0.6 waiting here; else 0."""
    pods = [PodSignals(0, "active", lora_running=("x", "y"), lora_waiting=("z",), max_lora=3),
            PodSignals(1, "room", lora_running=("y",), lora_waiting=(), max_lora=3),
            PodSignals(2, "waiting", lora_running=("y", "z"), lora_waiting=("x",), max_lora=3),
            PodSignals(3, "full", lora_running=("y", "z"), lora_waiting=("w",), max_lora=3),
            PodSignals(4, "no-lora")]
    req = with_adapter(request(0, 0, 10, 1), Adapter("x", 16))
    assert LoraAffinityScorer().score(req, pods, None) == [1.0, 0.8, 0.6, 0.0, 0.0]
    # a base-model request matches no adapter: room counts, nothing else
    assert LoraAffinityScorer().score(request(1, 0, 10, 1), pods, None) == [0.0, 0.8, 0.0, 0.0, 0.0]


def test_lora_affinity_is_a_registered_scorer_with_the_llm_d_alias():
    d = lora_scenario(50)
    d["router"]["scorers"][-1] = {"name": "lora-affinity-scorer", "weight": 1}
    assert build(parse_scenario(d)).gateway.router is not None


# ---- scenario, metrics, determinism ----------------------------------------------------------------
def _summary(d: dict) -> dict:
    sim = Simulation(build(parse_scenario(d)))
    return sim.run()


def test_lora_affinity_beats_the_default_profile_on_many_adapters():
    with_aff = lora_scenario(1500)
    without = copy.deepcopy(with_aff)
    without["router"] = {"policy": "default"}
    a, b = _summary(with_aff), _summary(without)
    assert a["lora"]["adapter_loads"] < 0.7 * b["lora"]["adapter_loads"]
    assert a["ttft_mean_ms"] < 0.5 * b["ttft_mean_ms"]


def test_per_adapter_metrics_add_up():
    s = _summary(lora_scenario(400))
    lora = s["lora"]
    per = lora["per_adapter"]
    assert "" not in per                     # every request names an adapter
    assert sum(b["injected_requests"] for b in per.values()) == s["injected_requests"] == 400
    assert sum(b["adapter_loads"] for b in per.values()) == lora["adapter_loads"] > 0
    assert lora["peak_adapters_in_batch"] <= lora["max_loras"] == 8
    # zipf: adapter-0 is the most requested
    assert max(per, key=lambda n: per[n]["injected_requests"]) == "adapter-0"


def test_requests_csv_and_the_exported_trace_name_the_adapter_and_the_terminal_shows_loads(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(lora_scenario(100)))
    res = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "out"), "--export-trace"],
                             terminal_width=80)
    assert res.exit_code == 0, res.output
    assert "LoRA adapter loads" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    header = (tmp_path / "out" / "requests.csv").read_text().splitlines()[0]
    assert header.endswith(",adapter")
    with open(tmp_path / "out" / "requests.csv", newline="") as f:
        named = {r["request_id"]: r["adapter"] for r in csv.DictReader(f)}
    with open(tmp_path / "out" / "trace.csv", newline="") as f:
        trace = list(csv.DictReader(f))
    assert len(trace) == 100 and {t["request_id"]: t["adapter"] for t in trace} == named
    assert all(a.startswith("adapter-") for a in named.values())


def test_lora_runs_are_deterministic_across_processes(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(lora_scenario(300)))
    outs = []
    for hs in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hs, "PYTHONPATH": str(ROOT)}
        out = tmp_path / f"out{hs}"
        subprocess.run([sys.executable, "-m", "blis_gym.cli", "run", str(path), "--out", str(out), "--quiet"],
                       check=True, env=env, cwd=ROOT)
        outs.append(((out / "summary.json").read_text(), (out / "requests.csv").read_text()))
    assert outs[0] == outs[1]
    assert json.loads(outs[0][0])["lora"]["adapter_loads"] > 0


def test_a_group_prefix_is_not_shared_across_adapters():
    """vLLM salts block hashes with the adapter: two adapters never hit each other's prefix."""
    d = lora_scenario(200)
    d["cluster"]["instances"] = 1
    d["workload"]["prefix_tokens"] = 1024
    one = copy.deepcopy(d)
    one["workload"]["adapters"]["count"] = 1
    two = copy.deepcopy(d)
    two["workload"]["adapters"] = {"count": 2, "rank": 16}
    assert _summary(two)["prefix_cache_hit_rate"] < _summary(one)["prefix_cache_hit_rate"]


def test_a_blis_v2_client_adapter_is_accepted(tmp_path):
    (tmp_path / "w.yaml").write_text("""version: "2"
aggregate_rate: 5
num_requests: 20
clients:
  - id: a
    adapter: support-bot
    input_distribution: {type: constant, params: {value: 100}}
    output_distribution: {type: constant, params: {value: 10}}
""")
    d = lora_scenario(20)
    d["workload"] = {"trace": {"path": "w.yaml", "format": "blis-v2"}}
    sim = Simulation(build(parse_scenario(d), base_dir=tmp_path))
    s = sim.run()
    assert list(s["lora"]["per_adapter"]) == ["support-bot"] and s["completed_requests"] == 20


def test_no_adapters_no_lora_section():
    d = lora_scenario(50)
    del d["workload"]["adapters"]
    s = _summary(d)
    assert s["lora"]["adapter_loads"] == 0 and list(s["lora"]["per_adapter"]) == [""]
    d["vllm"] = {}
    d["router"] = {"policy": "default"}
    assert "lora" not in _summary(d)


def test_overhead_tiers():
    assert [overhead(r) for r in (1, 8, 16, 32, 64)] == [0.02, 0.02, 0.035, 0.06, 0.12]


# ---- bad input ----------------------------------------------------------------------------------
BAD = [
    ("adapters without enable_lora", with_fields(lora_scenario(), vllm={}), "vllm.enable_lora"),
    ("rank above max_lora_rank", with_fields(lora_scenario(), workload__adapters={"count": 2, "rank": 64}),
     "vllm.max_lora_rank"),
    ("max_lora_rank not a vLLM value", lora_scenario(max_lora_rank=12), "vllm.max_lora_rank"),
    ("max_cpu_loras below max_loras", lora_scenario(max_cpu_loras=2), "vllm: max_cpu_loras (2) must be >= max_loras"),
    ("max_loras without enable_lora", with_fields(lora_scenario(), vllm={"max_loras": 4}, workload__adapters=None),
     "vllm: max_loras applies with enable_lora"),
    ("zero max_loras", lora_scenario(max_loras=0), "vllm.max_loras"),
    ("negative load time", lora_scenario(lora_load_ms=-1), "vllm.lora_load_ms"),
    ("adapter and adapters", with_fields(lora_scenario(), workload__adapter="x"), "workload: give adapter or adapters"),
    ("zero adapters", with_fields(lora_scenario(), workload__adapters={"count": 0}), "workload.adapters.count"),
    ("zipf_s with uniform", with_fields(lora_scenario(), workload__adapters={"count": 3, "zipf_s": 2}),
     "workload.adapters: zipf_s applies"),
    ("unknown distribution", with_fields(lora_scenario(), workload__adapters={"count": 3, "distribution": "pareto"}),
     "workload.adapters.distribution"),
    ("empty adapter name", with_fields(lora_scenario(), workload__adapters=None, workload__adapter=" "),
     "workload: adapter: the name must not be empty"),
    ("one adapter with two ranks", with_fields(lora_scenario(), workload__adapters=None, workload__clients=[
        {"name": "a", "adapter": {"name": "x", "rank": 8}}, {"name": "b", "adapter": {"name": "x", "rank": 16}}]),
     "workload.clients.b.adapter"),
    ("adapters on a csv trace", with_fields(lora_scenario(), workload={"trace": {"path": "t.csv"}, "adapter": "x"}),
     "workload.adapter"),
]


@pytest.mark.parametrize("label, data, field", BAD, ids=[b[0] for b in BAD])
def test_bad_lora_input_gets_one_line_naming_the_field(tmp_path, label, data, field):
    (tmp_path / "t.csv").write_text("arrival_s,input_tokens,output_tokens\n0,10,5\n")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    assert field in lines[0], lines[0]
    with pytest.raises(ConfigError):
        build(parse_scenario(data), base_dir=tmp_path)


def _source(workload: dict):
    from blis_gym.sim.core import Streams
    from blis_gym.sim.workload import WorkloadSource
    from blis_gym.schema.workload import build_workload, parse_workload
    return WorkloadSource(build_workload(parse_workload(workload)), Streams(7))


LENGTHS = {"input": {"dist": "constant", "value": 100}, "output": {"dist": "constant", "value": 10}}


def test_a_session_and_a_closed_loop_user_keep_their_adapter():
    src = _source({**LENGTHS, "rate": 5, "num_requests": 200, "session": {"turns": 3},
                   "adapters": {"count": 5}})
    first = [src.next() for _ in range(20)]
    assert len({r.adapter.name for r in first}) > 1
    for r in first:
        (nxt,) = src.finished(r, r.arrival + 1000, True)
        assert nxt.adapter is r.adapter
    src = _source({**LENGTHS, "closed_loop": {"users": 6}, "num_requests": 100, "adapters": {"count": 3}})
    users = [src.next() for _ in range(6)]
    for r in users:
        (nxt,) = src.finished(r, r.arrival + 1000, True)
        assert nxt.adapter is r.adapter


def test_adapters_draw_from_their_own_stream():
    """Adding adapters leaves every arrival time and length unchanged."""
    def reqs(**extra):
        src = _source({**LENGTHS, "input": {"dist": "exponential", "mean": 300}, "rate": 5, "num_requests": 50,
                       **extra})
        return [(r.arrival, r.input_len, r.output_len) for r in iter(src.next, None)]
    assert reqs() == reqs(adapters={"count": 4, "distribution": "zipf"})


def test_lora_with_a_cpu_kv_tier_conserves_requests_and_keeps_invariants():
    """Both features at once: kv-offload-cpu's revisited prefixes (evicted from the GPU,
    reloaded from the CPU tier) with three adapters and max_loras 2, so a request whose prefix
    was loaded can find the batch's adapter slots taken and be skipped, and timeouts abort
    requests while they wait or load. Simulation.check (KV, offload and LoRA invariants, a
    loading request counted as waiting) runs at every event; every request ends in one state."""
    d = yaml.safe_load((ROOT / "scenarios" / "kv-offload-cpu.yaml").read_text())
    d["vllm"].update(total_kv_blocks=1200, enable_lora=True, max_loras=2, max_cpu_loras=3, lora_load_ms=20)
    d["workload"]["inference_perf"].update(num_groups=20, stages=[{"rate": 6, "duration_s": 20}])
    d["workload"].update(adapters={"count": 3}, timeout_s=10)
    sim = Simulation(build(parse_scenario(d), check_invariants=True))
    s = sim.run()
    assert_conserved(sim, s)
    assert s["injected_requests"] == 120
    assert s["completed_requests"] + s["timed_out_requests"] == 120
    assert s["completed_requests"] > 60 and s["timed_out_requests"] > 0
    assert s["kv_offload"]["cpu_hit_rate"] > 0 and s["kv_offload"]["blocks_reloaded"] > 0
    assert s["lora"]["adapter_loads"] >= 3 and s["lora"]["peak_adapters_in_batch"] == 2
    inst = sim.instances[0]
    assert not inst.reloading and inst.n_loading == 0
    assert not inst.lora.running and not inst.lora.waiting


def test_a_request_back_from_its_kv_load_waits_for_an_adapter_slot_holding_its_blocks():
    """max_loras 1, no GPU prefix caching, a CPU tier. P (adapter b) leaves its prefix's 100
    blocks in the CPU tier. Later B (adapter b, same prefix) starts loading them (5 ms); C
    (adapter c) arrives meanwhile and takes the batch's only adapter slot. Back from its load,
    B is skipped (max_loras) while keeping its loaded blocks, joins once C completes, and its
    prefill starts after those blocks: they are loaded once and never recomputed."""
    from blis_gym.sim.engine.offload import OffloadConfig
    from helpers import group_prefix

    prefix = group_prefix(1600)
    b, c = Adapter("b", 16), Adapter("c", 16)
    p = with_adapter(request(0, 0, 1664, 4, prefix), b)
    late = with_adapter(request(1, 2_000_000, 1664, 4, prefix), b)
    other = with_adapter(request(2, 2_000_001, 64, 300), c)
    sim, s = simulate([p, late, other], log=True, check=True, prefix_caching=False,
                      offload=OffloadConfig(cpu_blocks=800, cpu_us_per_block=50.0),
                      lora=LoraConfig(max_loras=1, max_cpu_loras=2, load_us_fixed=1000))
    assert_conserved(sim, s)
    assert s["completed_requests"] == 3
    inst = sim.instances[0]
    assert inst.offload.loaded_cpu == 100                    # B's prefix, loaded once
    assert late.hit_blocks == 100
    m = inst.model
    c_left = other.finished - other.output_len * m.output_token_us - m.post_decode_us   # C's last step ends
    assert late.scheduled >= c_left > 2_005_000              # skipped while C held the slot
    first = next(c for _, _, chunks, _ in inst.step_log for rid, c in chunks if rid == 1)
    assert first == 64                                       # only its own tokens are computed
    assert inst.lora.loads == {"b": 1, "c": 1}               # b stays loaded (max_cpu_loras 2)
