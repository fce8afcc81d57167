"""Flow control's in-flight eviction of sheddable requests: victim order, the direction of its
effect on critical TTFT, the accounting of evicted requests, and bad parameters."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from blis_gym.cli import main
from blis_gym.errors import ConfigError
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.cluster.eviction import Eviction, EvictionConfig
from blis_gym.sim.engine.request import State
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved, with_fields

ROOT = Path(__file__).resolve().parent.parent
ON = yaml.safe_load((ROOT / "scenarios" / "overload-evict-sheddable.yaml").read_text())
OFF = yaml.safe_load((ROOT / "scenarios" / "overload-evict-sheddable-off.yaml").read_text())


def run(data: dict, horizon_s: float = 20, check: bool = False):
    data = with_fields(data, workload__horizon_s=horizon_s)
    sim = Simulation(build(parse_scenario(data), check_invariants=check))
    return sim, sim.run()


class Tracked:
    def __init__(self, rid, priority, state=State.RUNNING):
        self.id, self.priority, self.state, self.instance = rid, priority, state, object()


def test_victims_lowest_priority_first_then_most_recently_dispatched():
    evicted = []
    ev = Eviction(EvictionConfig(max_per_decision=3, interval_us=100), lambda r, now: (evicted.append(r.id),
                                                                                         ev.ended(r)))
    for rid, prio in ((1, -1), (2, -2), (3, -1), (4, -2), (5, 0), (6, -1)):
        ev.dispatched(Tracked(rid, prio))
    ev.blocked(demand_priority=4, demand=5, now=0)
    assert evicted == [4, 2, 6]                  # priority -2 newest first, then -1's newest
    ev.blocked(demand_priority=4, demand=5, now=50)
    assert evicted == [4, 2, 6]                  # paced: the next decision waits interval_us
    ev.blocked(demand_priority=4, demand=1, now=100)
    assert evicted == [4, 2, 6, 3]               # never more than the blocked band holds
    ev.blocked(demand_priority=-1, demand=9, now=300)
    assert evicted == [4, 2, 6, 3]               # only requests below the demand band's priority
    assert ev.evicted == 4 and ev.decisions == 2          # a decision without victims is none


def test_eviction_cuts_critical_ttft_and_accounts_for_every_request():
    sim_on, on = run(ON)
    _, off = run(OFF)
    assert on["evicted_requests"] > 0 and "evicted_requests" not in off and "eviction" not in off
    assert on["per_class"]["critical"]["ttft_p90_ms"] < off["per_class"]["critical"]["ttft_p90_ms"]
    assert on["per_class"]["critical"]["evicted_requests"] == 0       # only sheddable requests are revoked
    assert on["per_class"]["sheddable"]["evicted_requests"] == on["evicted_requests"]
    acc = on["eviction"]["accounting"]
    assert acc["arrived"] == on["injected_requests"] == sum(v for k, v in acc.items() if k != "arrived")
    assert acc["evicted"] == on["evicted_requests"]
    assert_conserved(sim_on, on)
    assert (sim_on.metrics.arrays()["state"] == State.EVICTED).sum() == on["evicted_requests"]


def test_invariants_hold_while_evicting():
    _, s = run(ON, horizon_s=4, check=True)         # conservation and KV accounting after every event
    assert s["evicted_requests"] > 0


def test_evicted_is_a_final_state_in_requests_csv(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(with_fields(ON, workload__horizon_s=5)))
    res = CliRunner().invoke(main, ["run", str(scenario), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((tmp_path / "out" / "requests.csv").open()))
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    states = [r["state"] for r in rows]
    assert states.count("evicted") == summary["evicted_requests"] > 0
    assert "evicted in flight" in res.output


@pytest.mark.parametrize("field,value,message", [
    ("max_per_decision", 0, "greater than or equal to 1"),
    ("interval_ms", -1, ""),
    ("burst", 3, "Extra inputs"),
])
def test_bad_eviction_parameters_are_one_line_errors(field, value, message):
    data = with_fields(ON, **{f"gateway__flow_control__eviction__{field}": value})
    with pytest.raises(ConfigError) as e:
        parse_scenario(data)
    assert e.value.field == f"gateway.flow_control.eviction.{field}"
    assert "\n" not in str(e.value)
