"""Flow control: the soft-reflective ceiling and EDF ordering (llm-d's soft-reflective-ceiling-policy
and edf-ordering-policy)."""
from __future__ import annotations

import pytest

from blis_gym.errors import ConfigError
from blis_gym.sim.cluster.flow_control import FlowControl
from test_admission import req
from test_pd_autoscale import simulate

SOFT = {"policy": "soft-reflective-ceiling"}


def opened(fc: FlowControl, sat: float, cycles: int) -> int:
    """Dispatches out of `cycles` cycles with a top band empty and the bottom band never empty."""
    n = 0
    for t in range(cycles):
        r = fc.dispatch(sat, t)
        if r is not None:
            n += 1
            fc.enqueue(req(-1), t)
    return n


def two_bands() -> FlowControl:
    fc = FlowControl(usage_limits=SOFT, band_gc_us=0)
    top = req(0)
    fc.enqueue(top, 0)
    fc.enqueue(req(-1), 0)
    assert fc.dispatch(0.0, 0) is top              # the top band is never gated below sat 1
    return fc


def test_reflective_ceilings_are_linear_in_rank_and_saturation():
    fc = FlowControl(usage_limits=SOFT)
    for p in (10, 0, -5):
        fc.enqueue(req(p), 0)
    fc.dispatch(0.4, 0)
    assert fc.ceilings() == pytest.approx({10: 1.0, 0: 0.8, -5: 0.6})   # 1 - i * 0.4 / 2


def test_a_gated_band_opens_once_every_round_sat_over_one_minus_sat_cycles():
    # 2 bands: band 1's reflective ceiling is 1 - sat, so it is gated from sat 0.5 up
    assert opened(two_bands(), 0.4, 60) == 60                  # below the ceiling: every cycle
    assert opened(two_bands(), 0.5, 60) == 60                  # period round(1) = 1
    assert opened(two_bands(), 0.75, 60) == 20                 # period 3
    assert opened(two_bands(), 0.9, 90) == 10                  # period 9
    assert opened(two_bands(), 1.0, 60) == 0                   # saturated: everything stops


def test_the_top_band_stops_only_at_saturation_one_and_nothing_is_rejected():
    fc = FlowControl(usage_limits=SOFT)
    rs = [req(0) for _ in range(5)]
    for r in rs:
        assert fc.enqueue(r, 0).admit
    assert fc.dispatch(0.99, 1) is rs[0]
    assert fc.dispatch(1.0, 1) is None
    assert fc.dispatch(0.999, 1) is rs[1]


def test_edf_dispatches_the_earliest_deadline_first_and_fcfs_on_ties():
    fc = FlowControl(ordering="edf", ttl_us=60_000_000)
    lax, strict, plain, strict2 = req(0), req(0), req(0), req(0)
    lax.deadline = 100_000_000                 # 100 s client timeout (arrival 0)
    strict.deadline = strict2.deadline = 2_000_000
    for r in (lax, plain, strict, strict2):    # plain: no client timeout, the queue's 60 s TTL
        fc.enqueue(r, 0)
    assert [fc.dispatch(0.0, 1) for _ in range(4)] == [strict, strict2, plain, lax]
    fcfs = FlowControl(ttl_us=60_000_000)
    for r in (lax, plain, strict, strict2):
        fcfs.enqueue(r, 0)
    assert [fcfs.dispatch(0.0, 1) for _ in range(4)] == [lax, plain, strict, strict2]


def test_edf_with_round_robin_and_removals():
    fc = FlowControl(ordering="edf", fairness="round-robin")
    a1, a2, b1 = req(0, tenant="a"), req(0, tenant="a"), req(0, tenant="b")
    a1.deadline, a2.deadline, b1.deadline = 9_000_000, 1_000_000, 5_000_000
    for r in (a1, a2, b1):
        fc.enqueue(r, 0)
    assert fc.remove(a2)
    assert [fc.dispatch(0.0, 1) for _ in range(2)] == [a1, b1]


def overload(usage_limits) -> dict:
    return {"cluster": {"instances": 1},
            "gateway": {"flow_control": {"usage_limits": usage_limits, "ttl_s": 600}},
            "workload": {"rate": 14, "arrival": {"process": "poisson"}, "num_requests": 600,
                         "input": {"dist": "constant", "value": 2000}, "output": {"dist": "constant", "value": 100},
                         "clients": [{"name": "critical", "rate_fraction": 0.3, "slo_class": "critical"},
                                     {"name": "sheddable", "rate_fraction": 0.7, "slo_class": "sheddable"}]}}


def test_soft_reflective_ceiling_protects_critical_ttft_under_overload_without_rejecting():
    _, static = simulate(overload(None), check=False)
    _, soft = simulate(overload(SOFT), check=False)
    assert soft["rejected_requests"] == static["rejected_requests"] == 0
    crit = lambda s: s["per_class"]["critical"]["ttft_p90_ms"]      # noqa: E731
    assert crit(soft) < 0.5 * crit(static)


@pytest.mark.parametrize("fc, field", [
    ({"usage_limits": {"policy": "soft-reflective-ceiling", "ceiling": 0.5}}, "usage_limits.ceiling"),
    ({"ordering": "lifo"}, "gateway.flow_control.ordering"),
])
def test_bad_flow_control_policies(fc, field):
    from blis_gym.schema.scenario import build, parse_scenario
    from test_pd_autoscale import BASE
    with pytest.raises(ConfigError) as e:
        build(parse_scenario({**BASE, "gateway": {"flow_control": fc}}))
    assert field in str(e.value), str(e.value)
