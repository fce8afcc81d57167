"""Regression tests for counting bugs and crashes found by fuzzing (issue 11): each builds the
reported reproducer and checks that every request is counted exactly once."""
from __future__ import annotations

from blis_gym.scenario import build, parse_scenario
from blis_gym.sim.simulation import Simulation

from helpers import assert_conserved

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
