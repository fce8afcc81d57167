"""WVA's 2026 analyzers (token-based saturation, throughput, the multi-analyzer rule) as
autoscaler policies: worked decisions on hand-made pool views, the scenario, bad parameters."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from blis_gym.errors import ConfigError
from blis_gym.policies.autoscaling import make_autoscaler
from blis_gym.schema.scenario import AutoscalerSpec, build, parse_scenario
from blis_gym.sim.cluster.pools import PoolView
from blis_gym.sim.cluster.signals import PodSignals
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved, with_fields

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = yaml.safe_load((ROOT / "scenarios" / "autoscale-wva-v2.yaml").read_text())
BLOCKS = 1000                                   # 16,000 KV tokens per pod: capacity 12,800 at 0.8


def pods(n, kv=0.0, waiting=0, in_flight=0, in_flight_tokens=0):
    return [PodSignals(i, f"p{i}", kv_usage=kv, waiting=waiting, in_flight=in_flight,
                       in_flight_tokens=in_flight_tokens, num_kv_blocks=BLOCKS, scraped_at=0) for i in range(n)]


def view(ps, now=0, arrivals=0, completions=0, queue=0, starting=0, lo=1, hi=10):
    return PoolView("serving", len(ps) + starting, len(ps), starting, 0, lo, hi, ps, queue, now, -1,
                    arrivals, completions)


def policy(name, **fields):
    return make_autoscaler(AutoscalerSpec(policy=name, **fields))


def test_token_saturation_scales_to_the_threshold_and_down_with_room():
    a = policy("wva-tokens")
    # 2 pods, each 0.5 x 16,000 tokens in KV + 6,000 prompt tokens in flight: demand 28,000 over
    # a capacity of 2 x 12,800: 1.09 > 0.85 -> ceil(28,000 / (0.85 x 12,800)) = 3
    assert a.desired(view(pods(2, kv=0.5, in_flight=3, in_flight_tokens=6000)), 0) == 3
    # demand 2 x 8,000 = 16,000 = 0.625 of capacity: hold (3 pods: one fewer leaves 0.625 < 0.7 -> down)
    assert a.desired(view(pods(2, kv=0.5)), 0) == 2
    assert a.desired(view(pods(3, kv=0.5 * 2 / 3)), 0) == 2
    # a compute bound below the KV bound lowers the capacity: 16,000 / (2 x 8,000) = 1.0 > 0.85
    assert policy("wva-tokens", compute_tokens=8000).desired(view(pods(2, kv=0.5)), 0) == 3


def test_throughput_analyzer_scales_before_any_pod_is_saturated():
    tp, v1 = policy("wva-throughput", replica_rps=5.0, window_s=60), policy("wva")
    calm = pods(2, kv=0.5, waiting=0)              # nothing saturated: V1 holds
    tp.desired(view(calm, now=0), 0)
    # 1,200 arrivals in 60 s = 20 req/s against 5 req/s per replica at 0.85: ceil(4.7) = 5, capped +4
    assert tp.desired(view(calm, now=60_000_000, arrivals=1200), 60_000_000) == 5
    assert v1.desired(view(calm, now=60_000_000, arrivals=1200), 60_000_000) == 2


def test_throughput_analyzer_learns_supply_when_saturated_and_counts_the_backlog():
    tp = policy("wva-throughput", window_s=60)
    assert tp.desired(view(pods(1, kv=0.9), now=0), 0) == 1                       # no supply known: hold
    hot = pods(1, kv=0.9)
    # saturated: 600 completions in 60 s on one replica -> mu = 10 req/s; 600 arrivals + 300 waiting
    # -> lambda = 10 + 300 / 60 = 15 req/s -> ceil(15 / 8.5) = 2
    assert tp.desired(view(hot, now=60_000_000, arrivals=600, completions=600, queue=300), 0) == 2


def test_multi_analyzer_up_if_any_down_only_if_all():
    m = policy("wva-v2", analyzers=["saturation", "tokens"])
    # V1: every pod saturated (waiting 5) -> +1; tokens: no KV demand -> down. Any asks up: up.
    assert m.desired(view(pods(3, waiting=5)), 0) == 4
    # V1 holds (spare room, but too little to drop one), tokens asks down: not all agree -> hold
    assert m.desired(view(pods(2, kv=0.5)), 0) == 2
    # both ask down -> down
    assert m.desired(view(pods(3, kv=0.05)), 0) == 2


def test_scenario_runs_and_conserves_requests():
    data = with_fields(SCENARIO, workload__horizon_s=420)
    sim = Simulation(build(parse_scenario(data)))
    s = sim.run()
    assert_conserved(sim, s)
    assert s["cost"]["per_pool"]["serving"]["peak_gpus"] > 1          # the spike at 300 s scaled it up


@pytest.mark.parametrize("fields,where,message", [
    ({"down_threshold": 0.9}, "pools.0.autoscaler", "must be below up_threshold"),
    ({"analyzers": ["queue"]}, "pools.0.autoscaler.analyzers.0", "saturation"),
    ({"window_s": 0}, "pools.0.autoscaler.window_s", ""),
])
def test_bad_parameters_are_one_line_errors(fields, where, message):
    data = copy.deepcopy(SCENARIO)
    data["pools"][0]["autoscaler"].update(fields)
    with pytest.raises(ConfigError) as e:
        parse_scenario(data)
    assert e.value.field == where and message in e.value.message and "\n" not in str(e.value)
