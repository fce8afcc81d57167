"""Decision points: an external agent answering with the built-in policy's choice reproduces the
built-in run exactly; invalid actions get a clear error and change nothing."""
from __future__ import annotations

import json

import pytest

from blis_gym.schema.scenario import build, load_scenario
from blis_gym.sim.simulation import Simulation
from test_cli import SCENARIOS


def drive(sim):
    d = sim.run_until_decision()
    n = 0
    while d is not None:
        n += 1
        d = sim.decide(d.default())
    return n, sim.summary()


@pytest.mark.parametrize("name, slot", [("cluster-4xh100-default", "router"), ("pd-chat-threshold16", "pd"),
                                        ("autoscale-bursty", "autoscaler")])
def test_agent_playing_the_builtin_policy_reproduces_the_run(name, slot):
    sc = load_scenario(SCENARIOS / f"{name}.yaml")
    if name == "pd-chat-threshold16":
        sc = sc.model_copy(update={"workload": sc.workload.model_copy(update={"horizon_s": 120})})
    inside = Simulation(build(sc)).run()
    n, outside = drive(Simulation(build(sc), external={slot}))
    assert n > 0
    assert json.dumps(inside, sort_keys=True) == json.dumps(outside, sort_keys=True)


def test_invalid_router_actions_are_refused_and_nothing_changes():
    sc = load_scenario(SCENARIOS / "cluster-4xh100-default.yaml")
    sim = Simulation(build(sc), external={"router"})
    d = sim.run_until_decision()
    assert d.slot == "router" and d.mask == [True] * 4
    for bad in (7, -1, 1.5, "two", None):
        with pytest.raises(ValueError, match="router action"):
            sim.decide(bad)
        assert sim.pending is d
    sim.gateway.pods[2].available = False        # e.g. draining
    d2 = sim.decide(0)
    if d2.mask[2] is False:
        with pytest.raises(ValueError, match="cannot take requests"):
            sim.decide(2)


def test_unknown_slot_is_a_config_error():
    from blis_gym.errors import ConfigError
    sc = load_scenario(SCENARIOS / "single-request.yaml")
    with pytest.raises(ConfigError, match="decision slot"):
        Simulation(build(sc), external={"scheduler"})
