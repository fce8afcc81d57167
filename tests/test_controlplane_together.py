"""The control-plane features of 2026 together (agent sessions, in-flight eviction, peer pulls,
P/D under flow control's stage-aware saturation, session affinity with a TTL, client timeouts):
every request ends exactly once and the invariants hold after every event, on several seeds."""
from __future__ import annotations

import pytest

from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved

SESSION = {"turns": {"dist": "geometric", "mean": 4, "max": 8}, "think_time_s": {"dist": "exponential", "mean": 0.5},
           "new_input": {"dist": "lognormal", "mu": 6.0, "sigma": 0.6, "min": 16, "max": 3000}}
SCENARIO = {
    "model": "Qwen/Qwen3-14B",
    "pools": [{"name": "prefill", "role": "prefill", "instances": 1}, {"name": "decode", "role": "decode",
                                                                        "instances": 3}],
    "pd": {"decider": {"policy": "prefix-threshold", "threshold": 512}},
    "router": {"policy": "weighted", "scorers": [{"name": "session-affinity", "weight": 2, "ttl_s": 1.0},
                                                 {"name": "queue", "weight": 1}]},
    "cluster": {"peer_pull": {"bandwidth_gb_s": 25}},
    # a low queue threshold holds critical requests back often, so eviction has work
    "gateway": {"flow_control": {"ttl_s": 5, "saturation": {"queue_threshold": 1, "kv_threshold": 0.5},
                                 "eviction": {"max_per_decision": 2, "interval_ms": 50}}},
    "workload": {"rate": 14, "horizon_s": 20, "timeout_s": 4, "prefix_tokens": 1000,
                 "input": {"dist": "gaussian", "mean": 1500, "std": 300, "min": 200, "max": 4000},
                 "output": {"dist": "gaussian", "mean": 150, "std": 50, "min": 8, "max": 400},
                 "clients": [{"name": "agents", "rate_fraction": 0.6, "slo_class": "sheddable", "session": SESSION},
                             {"name": "chat", "rate_fraction": 0.4, "slo_class": "critical"}]},
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_request_ends_once_with_every_feature_on(seed):
    sim = Simulation(build(parse_scenario({**SCENARIO, "seed": seed}), check_invariants=True))
    s = sim.run()
    assert_conserved(sim, s)
    acc = s["eviction"]["accounting"]
    assert acc["arrived"] == sum(v for k, v in acc.items() if k != "arrived")
    assert s["evicted_requests"] > 0 and s["timed_out_requests"] > 0
    assert s["kv_peer_pull"]["pulls"] > 0 and s["pd"]["disaggregated_requests"] > 0
