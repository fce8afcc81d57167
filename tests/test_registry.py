"""The policy registry: every built-in listed by slot, names resolved with one-line errors, and
a policy added by name usable from a scenario."""
from __future__ import annotations

import pytest

from blis_gym.errors import ConfigError
from blis_gym.policies import registry
from blis_gym.policies.admission import make_admission
from blis_gym.policies.pd import make_decider
from blis_gym.policies.routing import make_router


def test_names_list_every_builtin():
    assert registry.names("router") == ["default", "least-loaded", "predicted-latency", "random", "round-robin",
                                        "weighted"]
    assert registry.names("admission") == ["always-admit", "gaie-legacy", "probabilistic",
                                           "probabilistic-queue-guard", "reject-all", "tier-shed", "token-bucket"]
    assert registry.names("pd") == ["always", "edpp", "never", "prefix-threshold"]
    assert registry.names("autoscaler") == ["external", "hpa", "wva", "wva-throughput", "wva-tokens", "wva-v2"]
    assert registry.names("step_time") == ["calibrated", "hybrid", "roofline", "trained-physics"]
    assert "prefix-cache" in registry.names("scorer")


@pytest.mark.parametrize("build,spec,field", [
    (make_router, {"policy": "telepathy"}, "router.policy"),
    (make_admission, {"policy": ["x"]}, "gateway.admission.policy"),
    (make_decider, {"policy": []}, "pd.decider.policy"),             # issue 11 item 10: no TypeError
])
def test_unknown_names_are_one_line_errors(build, spec, field):
    with pytest.raises(ConfigError) as e:
        build(spec)
    assert e.value.field == field and "allowed:" in str(e.value) and "\n" not in str(e.value)


def test_unknown_slot_is_refused():
    with pytest.raises(ValueError, match="unknown slot"):
        registry.names("scheduler")


def test_a_registered_decider_runs_in_a_scenario():
    from blis_gym.schema.scenario import build, parse_scenario
    from blis_gym.sim.simulation import Simulation

    class EveryOther:
        def __init__(self):
            self.n = 0

        @classmethod
        def from_params(cls, params, field):
            return cls()

        def disaggregate(self, req, cached_tokens):
            self.n += 1
            return self.n % 2 == 0

    registry.register("pd", "test-every-other")(EveryOther)
    try:
        assert "test-every-other" in registry.names("pd")
        sc = parse_scenario({"name": "pd-every-other", "model": "Qwen/Qwen3-14B", "hardware": "H100",
                             "pools": [{"name": "p", "role": "prefill", "instances": 1},
                                       {"name": "d", "role": "decode", "instances": 1}],
                             "pd": {"decider": {"policy": "test-every-other"}},
                             "workload": {"rate": 5, "num_requests": 10,
                                          "input": {"dist": "constant", "value": 300},
                                          "output": {"dist": "constant", "value": 5}}})
        s = Simulation(build(sc)).run()
        assert s["pd"]["decided_requests"] == 10 and s["pd"]["disaggregated_requests"] == 5
        with pytest.raises(ValueError, match="already registered"):
            registry.register("pd", "test-every-other")(object)
    finally:
        registry.table("pd").pop("test-every-other")


AUTOSCALED = {"name": "autoscaled", "model": "Qwen/Qwen3-14B", "hardware": "H100",
              "pools": [{"name": "p", "instances": 1, "max_instances": 3,
                         "autoscaler": {"policy": "test-always-three", "interval_s": 1}}],
              "workload": {"rate": 5, "num_requests": 20, "input": {"dist": "constant", "value": 300},
                           "output": {"dist": "constant", "value": 5}}}


def test_a_registered_autoscaler_is_named_in_a_scenario():
    from blis_gym.schema.scenario import build, parse_scenario
    from blis_gym.sim.simulation import Simulation

    class AlwaysThree:
        def __init__(self, spec):
            self.interval_us = int(spec.interval_s * 1e6)

        def desired(self, view, now: int) -> int:
            return 3

    registry.register("autoscaler", "test-always-three")(lambda spec, field: AlwaysThree(spec))
    try:
        sim = Simulation(build(parse_scenario(AUTOSCALED)))   # the name is checked when parsed
        sim.run()
        assert max(active + starting for _, _, active, starting, *_ in sim.metrics.pool_samples) == 3
    finally:
        registry.table("autoscaler").pop("test-always-three")


def test_an_unknown_autoscaler_names_the_pool():
    from blis_gym.schema.scenario import parse_scenario
    with pytest.raises(ConfigError) as e:
        parse_scenario(AUTOSCALED)
    assert e.value.field == "pools.0.autoscaler.policy" and "allowed: external, hpa, wva" in str(e.value)
