"""llm-d-router's session affinity with the `session_id` strategy: a session's requests go back
to the pod that served it until the binding's TTL lapses."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blis_gym.errors import ConfigError
from blis_gym.policies.routing import make_router
from blis_gym.policies.routing.scorers import SessionAffinityScorer
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.cluster.signals import PodSignals
from blis_gym.sim.simulation import Simulation
from helpers import with_fields

ROOT = Path(__file__).resolve().parent.parent
AGENTIC = yaml.safe_load((ROOT / "scenarios" / "agentic-sessions.yaml").read_text())


class Ctx:
    now = 0


class Sess:
    id = 7


class Req:
    session = Sess()


PODS = [PodSignals(i, f"p{i}") for i in range(3)]


def test_binding_holds_within_the_ttl_and_lapses_after_it():
    s, ctx = SessionAffinityScorer({"ttl_s": 300}), Ctx()
    s.observe(Req(), 2, ctx)
    ctx.now = 299_999_999
    assert s.score(Req(), PODS, ctx) == [0.0, 0.0, 1.0]
    ctx.now = 300_000_000
    assert s.score(Req(), PODS, ctx) == [0.0, 0.0, 0.0]             # lapsed: routed afresh
    s.observe(Req(), 1, ctx)                                        # a new binding, renewed TTL
    ctx.now = 500_000_000
    assert s.score(Req(), PODS, ctx) == [0.0, 1.0, 0.0]
    forever = SessionAffinityScorer()
    forever.observe(Req(), 0, ctx)
    ctx.now = 10**15
    assert forever.score(Req(), PODS, ctx) == [1.0, 0.0, 0.0]       # no ttl_s: bindings last


def test_a_ttl_shorter_than_the_tool_latency_loses_the_session_cache():
    router = {"policy": "weighted", "scorers": [{"name": "session-affinity", "weight": 3, "ttl_s": 300},
                                                {"name": "queue", "weight": 1}]}
    data = with_fields(AGENTIC, workload__horizon_s=60, router=router)
    pinned = Simulation(build(parse_scenario(data))).run()
    router["scorers"][0]["ttl_s"] = 0.1                            # tool calls take ~1.6 s: every binding lapses
    loose = Simulation(build(parse_scenario(with_fields(data, router=router)))).run()
    assert pinned["prefix_cache_hit_rate"] > loose["prefix_cache_hit_rate"] + 0.05


@pytest.mark.parametrize("ttl", [0, -5, "long"])
def test_bad_ttl_is_a_one_line_error(ttl):
    with pytest.raises(ConfigError) as e:
        make_router({"policy": "weighted", "scorers": [{"name": "session-affinity", "ttl_s": ttl}]})
    assert e.value.field.endswith("ttl_s") and "\n" not in str(e.value)
