"""KV offload tiers (vLLM's offloading connector, llm-d's tiered prefix cache): tier invariants,
the load time of a reload, the asynchronous load before scheduling, determinism, the bundled
scenario's gain, tiered precise scoring and bad input."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.resources import scenario_path
from blis_gym.schema.scenario import build, load_scenario, parse_scenario
from blis_gym.sim.cluster.gateway import GatewayContext
from blis_gym.sim.engine import BLOCK_SIZE, State
from blis_gym.sim.engine.offload import OffloadConfig, OffloadTiers
from blis_gym.sim.latency import load_model
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved, group_prefix, request, simulate

CPU = OffloadConfig(cpu_blocks=800, cpu_us_per_block=50.0)


def test_tiers_keep_budgets_and_conserve_blocks():
    t = OffloadTiers(OffloadConfig(cpu_blocks=5, cpu_us_per_block=1.0, fs_blocks=4, fs_us_per_block=10.0))
    t.store(list(range(10)))                 # 10 blocks into 5: the chain's tail spills first
    assert set(t.cpu) == {0, 1, 2, 3, 4} and set(t.fs) == {5, 6, 7, 8}     # 9 fell out of both
    t.check()
    assert (t.stored, t.spilled, t.dropped) == (10, 5, 1)
    assert t.lookup([0, 1, 2, 3, 4, 5, 6, 9, 7]) == (5, 2)   # consecutive from the start: stops at 9
    us = t.load([5, 6], 0, 2)                 # filesystem blocks are promoted into the CPU tier
    assert us == 20 and {5, 6} <= set(t.cpu) and len(t.cpu) == 5
    t.check()
    t.store([100, 101, 102])                  # a store of blocks already offloaded only touches them
    t.store([100])
    assert t.stored == 13
    t.check()


def test_reload_time_is_bytes_over_bandwidth():
    """70B at TP4: one GPU's share of a 16-token block is 80 layers x 2 x 2 KV heads x 128 x 2 B
    x 16 = 1,310,720 B; at 25 GB/s that is 52.43 µs, so 125 blocks load in 6,554 µs."""
    sc = load_scenario(scenario_path("kv-offload-cpu"))
    cfg = build(sc).instances[0].engine.offload
    model = load_model("meta-llama/Llama-3.1-70B-Instruct")
    shard = model.kv_bytes_per_token(4) * BLOCK_SIZE
    assert shard == 1_310_720
    assert cfg.cpu_us_per_block == pytest.approx(shard / 25e3)
    assert cfg.cpu_blocks == 64 * 2**30 // (4 * shard) == 13_107
    t = OffloadTiers(cfg)
    t.store(list(range(125)))
    assert t.load(list(range(125)), 125, 0) == round(125 * shard / 25e3) == 6554


def _revisits(n_groups=6, rounds=3, prefix_len=1600, gap_us=150_000):
    """Groups of long prefixes revisited in turn, more than the GPU holds."""
    groups = [group_prefix(prefix_len, key=-2 - g) for g in range(n_groups)]
    reqs = []
    for i in range(n_groups * rounds):
        reqs.append(request(i, i * gap_us, prefix_len + 64, 8, groups[i % n_groups]))
    return reqs


def test_evicted_prefix_is_reloaded_with_its_cost_before_its_prefill():
    reqs = _revisits()
    sim, s = simulate(reqs, blocks=300, check=True, log=True, offload=CPU)
    assert_conserved(sim, s)
    off = s["kv_offload"]
    inst = sim.instances[0]
    t = inst.offload
    assert t.loads > 0 and off["blocks_reloaded"] == t.loaded_cpu > 0
    assert off["reload_time_ms_total"] == pytest.approx(t.loaded_cpu * 50.0 / 1000, abs=1e-3)
    # a revisit finds its group's 100 prefix blocks in the CPU tier, not on the GPU
    r = next(r for r in reqs if r.id == 6)
    assert r.hit_blocks == 100
    # its first chunk starts after the prefix (not recomputed), one load after it arrived
    log = inst.step_log
    chunk = next((start, c) for start, _, chunks, _ in log for rid, c in chunks if rid == 6)
    assert chunk[1] == 64
    assert chunk[0] >= r.enqueued + 100 * 50
    parts = (off["gpu_hit_rate"], off["cpu_hit_rate"], off["fs_hit_rate"], off["miss_rate"])
    assert sum(parts) == pytest.approx(1.0) and min(parts) >= 0
    assert off["cpu_hit_rate"] > 0


def test_a_request_sharing_blocks_being_loaded_waits_for_that_load_instead_of_loading_again():
    reqs = _revisits(rounds=2)
    twin = request(100, reqs[6].arrival + 1, 1600 + 64, 8, reqs[6].content.parent)
    sim, s = simulate(reqs + [twin], blocks=300, check=True, log=True, offload=CPU)
    assert_conserved(sim, s)
    t = sim.instances[0].offload
    assert t.loaded_cpu == 6 * 100               # each revisited prefix loaded once, the twin's not again
    first = {rid: start for start, _, chunks, _ in reversed(sim.instances[0].step_log) for rid, _ in chunks}
    arrived = reqs[6].enqueued + 100 * 50        # the load of group 0's prefix ends here
    assert first[6] >= arrived and first[100] >= arrived
    assert twin.hit_blocks == 100


def test_without_the_tier_the_same_revisits_recompute_their_prefix():
    sim, s = simulate(_revisits(), blocks=300, check=True)
    assert "kv_offload" not in s
    with_tier = simulate(_revisits(), blocks=300, check=True, offload=CPU)[1]
    assert with_tier["kv_offload"]["cpu_hit_rate"] > 0.5
    assert s["prefix_cache_hit_rate"] < 0.1


@pytest.mark.parametrize("mode", ["prompt", "full"])
def test_prompt_mode_offloads_no_generated_block(mode):
    reqs = [request(i, i * 400_000, 320, 200) for i in range(4)]
    cfg = OffloadConfig(cpu_blocks=1000, cpu_us_per_block=1.0, prompt_only=mode == "prompt")
    sim, s = simulate(reqs, blocks=300, check=True, offload=cfg)
    per_request = 320 // BLOCK_SIZE if mode == "prompt" else (320 + 199) // BLOCK_SIZE
    assert s["kv_offload"]["blocks_offloaded"] == 4 * per_request


def test_heavy_load_with_timeouts_keeps_invariants_and_is_deterministic():
    prefix = [group_prefix(900, key=-2 - g) for g in range(5)]
    reqs = [request(i, i * 15_000, 1000 + (i * 37) % 300, 20 + (i * 53) % 200, prefix[i % 5],
                    deadline=3_000_000 if i % 4 == 0 else 0) for i in range(160)]
    cfg = OffloadConfig(cpu_blocks=200, cpu_us_per_block=400.0, fs_blocks=150, fs_us_per_block=2000.0,
                        prompt_only=False)
    runs = [simulate(reqs if k == 0 else [request(r.id, r.arrival, r.input_len, r.output_len,
                                                  r.content.parent, deadline=r.deadline) for r in reqs],
                     blocks=420, check=True, max_num_seqs=32, offload=cfg) for k in range(2)]
    (sim, s), (_, s2) = runs
    assert_conserved(sim, s)
    assert s["kv_offload"]["blocks_reloaded"] > 0 and s["kv_offload"]["fs_hit_rate"] > 0
    assert s["timed_out_requests"] > 0
    assert json.dumps(s, sort_keys=True) == json.dumps(s2, sort_keys=True)
    inst = sim.instances[0]
    assert not inst.reloading and inst.n_loading == 0
    assert all(r.state in (State.COMPLETED, State.TIMED_OUT) for r in reqs)


def test_bundled_scenario_raises_hit_rate_and_lowers_ttft():
    out = {}
    for name in ("kv-offload-cpu", "kv-offload-none"):
        sim = Simulation(build(load_scenario(scenario_path(name))))
        out[name] = sim.run()
    on, off = out["kv-offload-cpu"], out["kv-offload-none"]
    hit_on = on["kv_offload"]["gpu_hit_rate"] + on["kv_offload"]["cpu_hit_rate"]
    assert hit_on > off["prefix_cache_hit_rate"] + 0.3
    assert on["ttft_mean_ms"] < off["ttft_mean_ms"] and on["ttft_p90_ms"] < off["ttft_p90_ms"]
    assert on["completed_requests"] == off["completed_requests"] == on["injected_requests"]


def test_precise_scorer_sees_cpu_tier_blocks_at_a_lower_weight():
    reqs = _revisits(rounds=2)
    sim, _ = simulate(reqs, blocks=300, offload=CPU)
    inst = sim.instances[0]
    probe = request(99, 0, 1600 + 64, 8, reqs[0].content.parent)
    gpu = inst.lookup_prefix(probe)
    cpu = inst.offload.cpu_prefix(probe.kv_content.prefix_hashes(100)[gpu:])
    assert cpu > 0
    assert inst.lookup_prefix_tiered(probe) == pytest.approx(gpu + 0.8 * cpu)
    ctx = GatewayContext(None, sim.instances)   # what the precise prefix-cache scorer reads
    assert ctx.cached_blocks(probe, 0) == pytest.approx(gpu + 0.8 * cpu)


BASE = yaml.safe_load(scenario_path("kv-offload-cpu").read_text())


@pytest.mark.parametrize("offload, needle", [
    ({"cpu_bandwidth_gb_s": 25}, "vllm.kv_offload: give exactly one of cpu_gib and cpu_blocks"),
    ({"cpu_gib": 8, "cpu_blocks": 100}, "vllm.kv_offload: give exactly one of cpu_gib and cpu_blocks"),
    ({"cpu_gib": -1}, "vllm.kv_offload.cpu_gib"),
    ({"cpu_gib": 8, "mode": "decode"}, "vllm.kv_offload.mode"),
    ({"cpu_gib": 8, "fs_bandwidth_gb_s": 0}, "vllm.kv_offload.fs_bandwidth_gb_s"),
    ({"cpu_gib": 8, "bandwidth": 3}, "vllm.kv_offload.bandwidth"),
])
def test_bad_offload_fields_get_one_line(tmp_path, offload, needle):
    data = {**BASE, "vllm": {**BASE["vllm"], "kv_offload": offload}}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(main, ["run", str(p), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output


def test_offload_fields_parse_per_pool():
    data = {**BASE, "pools": [{"name": "a", "vllm": {"kv_offload": {"cpu_blocks": 64, "fs_gib": 1}}}]}
    cfg = build(parse_scenario(data)).instances[0].engine.offload
    assert cfg.cpu_blocks == 64 and cfg.fs_blocks == 2**30 // (4 * 1_310_720)
