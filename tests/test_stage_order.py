"""llm-d's disagg-profile-handler stageOrder: prefill-first runs the prefill profile first, for
every request (no decider), then the decode profile; a request that finds no prefill pod fails."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blis_gym.errors import ConfigError
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved, with_fields

ROOT = Path(__file__).resolve().parent.parent
CHAT = yaml.safe_load((ROOT / "scenarios" / "pd-chat-always.yaml").read_text())


def prefill_first(data: dict) -> dict:
    d = with_fields(data, pd__stage_order="prefill-first")
    del d["pd"]["decider"]
    return d


def run(data: dict):
    sim = Simulation(build(parse_scenario(data), check_invariants=True))
    return sim, sim.run()


def test_prefill_first_disaggregates_every_request_as_always_does():
    data = with_fields(CHAT, workload__horizon_s=40)
    _, always = run(data)
    sim, first = run(prefill_first(data))
    assert_conserved(sim, first)
    assert first["pd"]["disaggregated_requests"] == first["pd"]["decided_requests"] == first["injected_requests"]
    # the two profiles score without ties here: picking the prefill pod first changes nothing else
    assert first["ttft_mean_ms"] == always["ttft_mean_ms"]


def test_without_a_ready_prefill_pod_prefill_first_fails_where_decode_first_prefills_locally():
    # the prefill pool starts empty and its first replica needs 20 s to load
    pools = [{"name": "prefill", "role": "prefill", "instances": 0, "min_instances": 0, "max_instances": 1,
              "load_time_s": 20, "autoscaler": {"policy": "external"}},
             {"name": "decode", "role": "decode", "instances": 3}]
    data = with_fields(CHAT, workload__horizon_s=15, pools=pools)
    _, always = run(data)
    _, first = run(prefill_first(data))
    assert always["rejected_requests"] == 0 and always["pd"]["disaggregated_requests"] == 0
    assert first["rejected_requests"] == first["injected_requests"] > 0
    assert first["rejection_reasons"] == {"503 rejected-no-endpoints": first["injected_requests"]}


def test_prefill_first_with_a_decider_is_a_one_line_error():
    with pytest.raises(ConfigError) as e:
        parse_scenario(with_fields(CHAT, pd__stage_order="prefill-first"))
    assert e.value.field == "pd" and "takes no decider" in e.value.message and "\n" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_scenario(with_fields(CHAT, pd__stage_order="prefill-last"))
    assert e.value.field == "pd.stage_order"
