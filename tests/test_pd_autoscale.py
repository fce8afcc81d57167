"""P/D disaggregation, KV transfers, pools with autoscaling, node lifecycle and cost."""
from __future__ import annotations

import pytest
import yaml

from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.cluster.transfer import Transfers
from blis_gym.sim.core import EventLoop
from blis_gym.sim.engine import State
from blis_gym.sim.simulation import Simulation
from test_cli import cli

BASE = {
    "model": "Qwen/Qwen3-14B", "hardware": "H100", "tp": 1, "latency_model": "roofline", "seed": 3,
    "workload": {"rate": 4, "arrival": {"process": "poisson"}, "num_requests": 60,
                 "input": {"dist": "constant", "value": 700}, "output": {"dist": "constant", "value": 30}},
}


def simulate(extra: dict, check=True, log=False):
    sim = Simulation(build(parse_scenario({**BASE, **extra}), check_invariants=check))
    if log:
        for inst in sim.instances:
            inst.step_log = []
    return sim, sim.run()


PD = {"pools": [{"name": "p", "role": "prefill", "instances": 1}, {"name": "d", "role": "decode", "instances": 2}]}


# ---- KV transfer ----------------------------------------------------------------------------
def test_transfer_time_is_base_plus_bytes_over_bandwidth():
    loop = EventLoop()
    done = []
    t = Transfers(loop, bandwidth_bytes_per_us=25e3, base_latency_us=50, contention=False,
                  on_done=lambda p, now: done.append((p, now)))
    t.start("link", 83_886_080, "a", 0)        # Qwen3-14B, 512 tokens: 32 blocks x 16 x 163,840 B
    loop.run()
    assert done == [("a", 50 + 3356)]          # 83.9 MB at 25 GB/s = 3,355.4 µs, rounded up


def test_transfers_sharing_a_link_share_its_bandwidth():
    loop = EventLoop()
    done = {}
    t = Transfers(loop, bandwidth_bytes_per_us=1000.0, base_latency_us=0, contention=True,
                  on_done=lambda p, now: done.__setitem__(p, now))
    t.start("nic", 1_000_000, "a", 0)          # alone: 1,000 µs
    t.start("nic", 1_000_000, "b", 0)          # together: each at half speed, 2,000 µs
    t.start("other", 1_000_000, "c", 0)        # another link: unaffected
    loop.run()
    assert done["c"] == 1000
    assert done["a"] == done["b"] == 2000
    assert t.peak_concurrent == 3          # in flight at once, over all links


# ---- P/D -------------------------------------------------------------------------------------
def test_always_disaggregate_moves_prefill_off_the_decode_pods():
    sim, s = simulate({**PD, "pd": {"decider": "always"}}, log=True)
    assert s["pd"]["disaggregated_fraction"] == 1.0 and s["completed_requests"] == 60
    prefill = [i for i in sim.instances if i.role == "prefill"][0]
    decode = [i for i in sim.instances if i.role == "decode"]
    # the prefill pod computes whole prompts; decode pods compute one prompt token (to sample
    # the first output token from the transferred KV), never a prefill chunk
    assert any(n == 700 for _, _, chunks, _ in prefill.step_log for _, n in chunks)
    assert all(n == 1 for inst in decode for _, _, chunks, _ in inst.step_log for _, n in chunks)
    assert s["pd"]["transfers"] == 60 and s["pd"]["transfer_mean_ms"] > 0


def test_never_disaggregate_keeps_everything_on_decode_pods():
    sim, s = simulate({**PD, "pd": {"decider": "never"}})
    assert s["pd"]["disaggregated_requests"] == 0 and s["pd"]["transfers"] == 0
    assert s["per_instance"]["p-0"]["steps"] == 0


def test_prefix_threshold_skips_requests_whose_prompt_is_cached_on_the_decode_pod():
    wl = {"rate": 2, "arrival": {"process": "constant"}, "num_requests": 40, "prefix_tokens": 2048,
          "input": {"dist": "constant", "value": 8}, "output": {"dist": "constant", "value": 10}}
    _, s16 = simulate({**PD, "pd": {"decider": {"policy": "prefix-threshold", "threshold": 16}}, "workload": wl})
    _, big = simulate({**PD, "pd": {"decider": {"policy": "prefix-threshold", "threshold": 3000}}, "workload": wl})
    # 2,056-token prompts: only the first is cold; once the decode pod's prefix index holds the
    # 2,048-token system prompt, 8 tokens are uncached (< 16) and prefill stays local
    assert s16["pd"]["decided_requests"] == 40 and s16["pd"]["disaggregated_requests"] == 1
    # a threshold above the prompt length never disaggregates
    assert big["pd"]["disaggregated_requests"] == 0


def test_pd_transfer_is_part_of_ttft():
    _, never = simulate({**PD, "pd": {"decider": "never"}})
    _, always = simulate({**PD, "pd": {"decider": "always", "transfer": {"bandwidth_gb_s": 1, "contention": False}}})
    # 700 tokens x 163,840 B = 115 MB at 1 GB/s: about 117 ms of TTFT on top of the prefill
    assert always["ttft_mean_ms"] - never["ttft_mean_ms"] > 100


def test_conservation_through_pd_with_timeouts():
    wl = {**BASE["workload"], "rate": 40, "num_requests": 300, "timeout_s": 2,
          "input": {"dist": "constant", "value": 3000}}
    sim, s = simulate({**PD, "pd": {"decider": "always"}, "workload": wl}, check=True)
    assert s["timed_out_requests"] > 0
    total = sum(s[k] for k in ("completed_requests", "timed_out_requests", "dropped_requests", "rejected_requests",
                               "still_queued", "still_running", "still_in_transit", "still_in_gateway",
                               "still_in_pd_transfer"))
    assert total == s["injected_requests"] == 300
    assert all(p.in_flight == 0 for p in sim.gateway.pods)


# ---- pools, autoscaling, cost ------------------------------------------------------------------
def scaled(policy="hpa", **pool):
    return {"pools": [{"name": "web", "instances": 1, "min_instances": 1, "max_instances": 4,
                       "provisioning_delay_s": 40, "load_time_s": 20,
                       "autoscaler": {"policy": policy, "interval_s": 5, "metrics": {"running": 4},
                                      "scale_down_stabilization_s": 30}, **pool}],
            "workload": {"arrival": {"process": "poisson", "stages": [{"rate": 2, "duration_s": 30},
                                                                     {"rate": 30, "duration_s": 60},
                                                                     {"rate": 1, "duration_s": 200}]},
                         "input": {"dist": "constant", "value": 500}, "output": {"dist": "constant", "value": 200}}}


def test_scale_up_serves_only_after_provisioning_plus_load_time():
    sim, s = simulate(scaled(), check=False)
    pool = sim.pools[0]
    first_up = next(t for t, n in pool.scale_events if n > 1)
    names = sim.metrics.strings.names
    a = sim.metrics.arrays()
    new = [j for j in range(len(a["id"])) if names[a["inst"][j]] != "web-0" and a["sched"][j] >= 0]
    assert new, "the scaled-up replicas served nothing"
    earliest = min(a["arrival"][j] + a["sched"][j] for j in new)
    assert earliest >= first_up + 40_000_000 + 20_000_000
    assert s["cost"]["per_pool"]["web"]["peak_gpus"] > 1


def test_scale_down_drains_without_losing_requests():
    sim, s = simulate(scaled(), check=True)
    pool = sim.pools[0]
    assert any(n < m for (_, m), (_, n) in zip(pool.scale_events, pool.scale_events[1:])), "never scaled down"
    assert s["completed_requests"] == s["injected_requests"]
    assert s["timed_out_requests"] == s["dropped_requests"] == s["rejected_requests"] == 0


def test_wva_scales_up_under_load():
    sim, s = simulate(scaled("wva"), check=False)
    assert max(n for _, n in sim.pools[0].scale_events) > 1
    assert s["completed_requests"] == s["injected_requests"]


def test_cost_is_gpus_times_time_times_price():
    sim, s = simulate({"pools": [{"name": "fixed", "instances": 3, "tp": 2, "price_per_gpu_hour": 2.5}]})
    hours = s["duration_s"] / 3600
    assert s["cost"]["gpu_hours"] == pytest.approx(3 * 2 * hours, abs=1e-6)
    assert s["cost"]["dollars"] == pytest.approx(3 * 2 * hours * 2.5, abs=1e-5)
    assert s["cost"]["dollars_per_million_output_tokens"] == pytest.approx(
        s["cost"]["dollars"] / s["output_tokens"] * 1e6, rel=1e-3)


def test_nodes_pack_instances_and_are_billed_whole():
    _, s = simulate({"pools": [{"name": "n", "instances": 3, "tp": 2, "gpus_per_node": 8}]})
    # three TP2 instances fit one 8-GPU node, which is billed in full
    assert s["cost"]["gpu_hours"] == pytest.approx(8 * s["duration_s"] / 3600, abs=1e-6)


# ---- bad input ---------------------------------------------------------------------------------
BAD = [
    ("pool with no instances", {"pools": [{"name": "a", "instances": 0}]}, "pools.0"),
    ("unknown decider", {**PD, "pd": {"decider": "sometimes"}}, "pd.decider"),
    ("min above max", {"pools": [{"name": "a", "instances": 2, "min_instances": 5, "max_instances": 3,
                                  "autoscaler": {"policy": "hpa"}}]}, "pools.0"),
    ("negative provisioning delay", {"pools": [{"name": "a", "provisioning_delay_s": -5}]}, "pools.0.provisioning_delay_s"),
    ("negative load time", {"pools": [{"name": "a", "load_time_s": {"dist": "gaussian", "mean": -1}}]},
     "pools.0.load_time_s"),
    ("prefill pool alone", {"pools": [{"name": "a", "role": "prefill"}]}, "pools"),
    ("unknown autoscaler", {"pools": [{"name": "a", "autoscaler": {"policy": "magic"}}]}, "pools.0.autoscaler.policy"),
    ("gpus per node neither a multiple nor a divisor of tp", {"tp": 4, "pools": [{"name": "a", "gpus_per_node": 3}]},
     "pools[0].gpus_per_node"),
]


@pytest.mark.parametrize("label, extra, field", BAD, ids=[b[0] for b in BAD])
def test_bad_pool_and_pd_input(tmp_path, label, extra, field):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**BASE, **extra}))
    p = cli("run", path, "--out", tmp_path / "o", "--quiet")
    assert p.returncode == 2, (label, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert field in lines[0], lines[0]


def test_states_are_final_or_in_system():
    sim, s = simulate({**PD, "pd": {"decider": "always"}})
    assert {int(x) for x in sim.metrics.arrays()["state"]} <= {int(State.COMPLETED)}


def test_heterogeneous_pools_prefill_on_h100_decode_on_h200():
    sim, s = simulate({"pools": [{"name": "p", "role": "prefill", "instances": 1, "hardware": "H100"},
                                 {"name": "d", "role": "decode", "instances": 1, "hardware": "H200",
                                  "vllm": {"max_num_seqs": 64}}],
                       "pd": {"decider": "always"}})
    p, d = sim.instances
    assert p.kv.total < d.kv.total                    # 141 GB of HBM hold more KV than 80 GB
    assert d.cfg.max_num_seqs == 64 and p.cfg.max_num_seqs == 1024
    assert s["completed_requests"] == 60
    per = s["cost"]["per_pool"]
    assert per["p"]["price_per_gpu_hour"] != per["d"]["price_per_gpu_hour"]


def test_scale_to_zero_and_back_from_zero():
    extra = {"pools": [{"name": "z", "instances": 1, "min_instances": 0, "max_instances": 2, "load_time_s": 5,
                        "autoscaler": {"policy": "hpa", "interval_s": 5, "metrics": {"running": 8},
                                       "scale_down_stabilization_s": 10, "scale_to_zero_after_s": 30}}],
             "gateway": {"flow_control": {"ttl_s": 60}},
             "workload": {"arrival": {"process": "poisson", "stages": [{"rate": 4, "duration_s": 20},
                                                                      {"rate": 0, "duration_s": 100},
                                                                      {"rate": 4, "duration_s": 20}]},
                          "input": {"dist": "constant", "value": 300}, "output": {"dist": "constant", "value": 20}}}
    sim, s = simulate(extra, check=True)
    sizes = [n for _, n in sim.pools[0].scale_events]
    assert 0 in sizes, sizes                           # idle long enough: scaled to zero
    assert sizes[-1] >= 1 or sizes.index(0) < len(sizes) - 1   # and came back for the last burst
    # the flow-control queue held the requests that arrived at zero replicas: nothing lost
    assert s["completed_requests"] == s["injected_requests"]
