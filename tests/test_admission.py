"""Gateway admission policies and the flow-control queue.

Expected numbers come from llm-d's EPP (utilization detector, and the probabilistic admitter's
p = min(sat^5 * 300, 1), i.e. shed rates 2.3% / 9.6% / 73% / 100% at saturation 0.15 / 0.20 /
0.30 / 0.34: https://github.com/llm-d/llm-d-inference-scheduler) and BLIS's admission policies and
gateway queue (token bucket, tier-shed; https://github.com/inference-sim/inference-sim).
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest

from blis_gym.errors import ConfigError
from blis_gym.policies.admission import (
    ADMISSION_POLICIES,
    Decision,
    GaieLegacy,
    Probabilistic,
    TokenBucket,
    concurrency_saturation,
    make_admission,
    role_saturation,
    utilization_saturation,
)
from blis_gym.sim.cluster.flow_control import FlowControl
from blis_gym.sim.cluster.signals import PodSignals
from blis_gym.sim.engine.request import Content, Request

NOW = 10_000_000


def pod(i=0, q=0, kv=0.0, scraped=NOW, running=0, in_flight=0, role="both") -> PodSignals:
    return PodSignals(index=i, name=f"p{i}", role=role, waiting=q, running=running, kv_usage=kv,
                      scraped_at=scraped, in_flight=in_flight)


_rid = iter(range(1, 10**9))


def req(priority=0, tenant="", input_len=100, rid=None) -> Request:
    return Request(next(_rid) if rid is None else rid, 0, input_len, 10, Content(None, ((1, input_len),)),
                   priority=priority, tenant=tenant)


def pods_at(sat: float) -> list[PodSignals]:
    """Two fresh pods whose utilization saturation is `sat` (through kv only)."""
    return [pod(0, kv=0.8 * sat), pod(1, kv=0.8 * sat)]


# --------------------------------------------------------------------------------------------
# saturation detectors
# --------------------------------------------------------------------------------------------

def test_utilization_worked_example():
    pods = [pod(0, q=5, kv=0.0), pod(1, q=0, kv=0.4)]
    assert utilization_saturation(pods, NOW) == pytest.approx(0.75)


def test_utilization_stale_and_never_scraped_count_one():
    fresh = pod(0, q=0, kv=0.0)
    stale = pod(1, q=0, kv=0.0, scraped=NOW - 200_001)
    edge = pod(2, q=0, kv=0.0, scraped=NOW - 200_000)        # exactly 200 ms: still fresh
    never = pod(3, q=0, kv=0.0, scraped=-1)
    assert utilization_saturation([fresh, stale], NOW) == pytest.approx(0.5)
    assert utilization_saturation([fresh, edge], NOW) == 0.0
    assert utilization_saturation([never], NOW) == 1.0
    # fail-open knob: stale / never scraped pods use their snapshot
    assert utilization_saturation([stale, never], NOW, stale_counts_saturated=False) == 0.0
    # staleness check off: stale pod uses its values, never-scraped still 1.0
    assert utilization_saturation([stale, never], NOW, staleness_us=None) == pytest.approx(0.5)
    # custom thresholds
    assert utilization_saturation([pod(0, q=2, kv=0.45)], NOW, queue_threshold=4, kv_threshold=0.9) == pytest.approx(0.5)


def test_utilization_empty_and_uncapped():
    assert utilization_saturation([], NOW) == 1.0
    assert utilization_saturation([pod(0, q=10), pod(1, kv=1.2)], NOW) == pytest.approx((2.0 + 1.5) / 2)


def test_concurrency_saturation():
    assert concurrency_saturation([pod(0, in_flight=50), pod(1, in_flight=150)]) == pytest.approx(1.0)
    assert concurrency_saturation([pod(0, in_flight=30)], max_concurrency=60) == pytest.approx(0.5)
    assert concurrency_saturation([]) == 1.0


def test_role_saturation_max_over_prefill_and_decode():
    det = lambda ps: utilization_saturation(ps, NOW)
    unified = [pod(0, q=5), pod(1)]
    assert role_saturation(unified, det) == pytest.approx(0.5)
    pd = [pod(0, q=5, role="prefill"), pod(1, q=0, role="decode"), pod(2, q=5, role="decode")]
    assert role_saturation(pd, det) == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# policies
# --------------------------------------------------------------------------------------------

def test_always_admit_default_and_no_endpoints():
    pol = make_admission({})
    assert pol.admit(req(-5), pods_at(5.0), NOW, random.Random(0)) == Decision(True, 200, "")
    assert make_admission(None).admit(req(), [pod()], NOW, None).admit
    d = pol.admit(req(), [], NOW, None)
    assert d == Decision(False, 503, "rejected-no-endpoints")


def test_reject_all():
    d = make_admission({"policy": "reject-all"}).admit(req(10), [pod()], NOW, None)
    assert not d.admit and d.status == 429


def test_gaie_legacy():
    pol = make_admission({"policy": "gaie-legacy"})
    assert isinstance(pol, GaieLegacy)
    for sat in (0.0, 0.99, 1.0, 7.0):
        for prio in (0, 1, 100):
            assert pol.admit(req(prio), pods_at(sat), NOW, None).admit, (sat, prio)
    # sheddable: admitted below 1, rejected at >= 1 with 429
    assert pol.admit(req(-1), [pod(0, q=4), pod(1, q=5)], NOW, None).admit           # 0.9
    d = pol.admit(req(-1), [pod(0, q=5), pod(1, q=5)], NOW, None)                    # exactly 1.0
    assert d == Decision(False, 429, "rejected-saturated")
    assert not pol.admit(req(-3), pods_at(2.0), NOW, None).admit
    # stale pods count as saturated (fail closed)
    stale = [pod(0, scraped=NOW - 250_000), pod(1, scraped=NOW - 300_000)]
    assert not pol.admit(req(-1), stale, NOW, None).admit
    assert pol.admit(req(0), stale, NOW, None).admit
    # thresholds and staleness are parameters
    loose = make_admission({"policy": "gaie-legacy", "queue_threshold": 10, "staleness_ms": 500})
    assert loose.admit(req(-1), [pod(0, q=5, scraped=NOW - 300_000)], NOW, None).admit
    # concurrency detector variant
    conc = make_admission({"policy": "gaie-legacy", "detector": "concurrency", "max_concurrency": 10})
    assert not conc.admit(req(-1), [pod(0, in_flight=10)], NOW, None).admit
    assert conc.admit(req(-1), [pod(0, in_flight=9)], NOW, None).admit


def _shed_rate(pol, sat, n=20_000, seed=1234, prio=-1):
    rng = random.Random(seed)
    pods = pods_at(sat)
    shed = 0
    for _ in range(n):
        d = pol.admit(req(prio), pods, NOW, rng)
        if not d.admit:
            assert d == Decision(False, 500, "rejected-probabilistic")
            shed += 1
    return shed / n


@pytest.mark.parametrize("sat,quoted", [(0.15, 0.023), (0.20, 0.096), (0.30, 0.73)])
def test_probabilistic_shed_rate(sat, quoted):
    pol = make_admission({"policy": "probabilistic"})
    p = min(sat ** 5 * 300, 1.0)
    assert p == pytest.approx(quoted, abs=0.002)
    rate = _shed_rate(pol, sat)
    tol = 4 * math.sqrt(p * (1 - p) / 20_000)
    assert abs(rate - p) < tol, (rate, p)


def test_probabilistic_extremes_and_priority():
    pol = make_admission({"policy": "probabilistic"})
    assert _shed_rate(pol, 0.0, n=5000) == 0.0
    assert _shed_rate(pol, 0.34, n=5000) == 1.0
    assert _shed_rate(pol, 0.9, n=2000) == 1.0
    for prio in (0, 1, 5):
        assert _shed_rate(pol, 5.0, n=2000, prio=prio) == 0.0
    # no staleness check: stale-but-idle pods are not saturated; never-scraped ones are 1.0
    stale_idle = [pod(0, scraped=NOW - 10_000_000)]
    assert all(pol.admit(req(-1), stale_idle, NOW, random.Random(s)).admit for s in range(200))
    assert not pol.admit(req(-1), [pod(0, scraped=-1)], NOW, random.Random(0)).admit
    # parameters: k = 0 never sheds
    assert _shed_rate(make_admission({"policy": "probabilistic", "k": 0}), 3.0, n=1000) == 0.0


def test_probabilistic_draws_exactly_once_per_sheddable_decision():
    pol = Probabilistic()
    for sat in (0.0, 0.2, 5.0):
        rng, ref = random.Random(7), random.Random(7)
        for _ in range(10):
            pol.admit(req(-1), pods_at(sat), NOW, rng)
            ref.random()
        pol.admit(req(0), pods_at(sat), NOW, rng)          # non-sheddable: no draw
        assert rng.random() == ref.random(), sat
    # numpy Generators work too
    g = np.random.default_rng(3)
    assert not pol.admit(req(-1), pods_at(1.0), NOW, g).admit


def test_token_bucket_worked_example():
    pol = make_admission({"policy": "token-bucket", "capacity": 1000, "refill_rate": 100})
    pods = [pod()]
    t = 0
    assert pol.admit(req(input_len=600), pods, t, None).admit
    assert pol.admit(req(input_len=400), pods, t, None).admit
    d = pol.admit(req(input_len=1), pods, t, None)
    assert d == Decision(False, 429, "rejected-token-bucket")
    assert not pol.admit(req(input_len=1), pods, t + 9_999, None).admit      # 0.9999 tokens
    assert pol.admit(req(input_len=1), pods, t + 10_000, None).admit         # 10 ms → 1 token
    assert not pol.admit(req(input_len=1), pods, t + 10_000, None).admit
    # refill is capped at capacity: after a long idle, 1000 fits but 1001 does not
    assert not pol.admit(req(input_len=1001), pods, t + 100_000_000, None).admit
    assert pol.admit(req(input_len=1000), pods, t + 100_000_000, None).admit
    # priority does not matter
    assert not pol.admit(req(priority=100, input_len=1), pods, t + 100_000_000, None).admit


def test_token_bucket_defaults():
    pol = make_admission({"policy": "token-bucket"})
    assert isinstance(pol, TokenBucket) and pol.capacity == 10_000 and pol.refill_rate == 1_000
    assert pol.admit(req(input_len=10_000), [pod()], 0, None).admit
    assert not pol.admit(req(input_len=1), [pod()], 0, None).admit
    assert pol.admit(req(input_len=1), [pod()], 1_000, None).admit       # 1 ms at 1000/s = 1 token


def test_tier_shed():
    pol = make_admission({"policy": "tier-shed"})
    idle = [pod(0), pod(1)]
    busy = [pod(0), pod(1, q=1)]
    for prio in (-1, 0, 2, 3, 4):
        assert pol.admit(req(prio), idle, NOW, None).admit
    assert pol.admit(req(3), busy, NOW, None).admit
    assert pol.admit(req(4), busy, NOW, None).admit
    d = pol.admit(req(2), busy, NOW, None)
    assert d == Decision(False, 429, "rejected-tier-shed")
    assert not pol.admit(req(-1), busy, NOW, None).admit
    # load = waiting + running + in_flight, max over pods (not the sum)
    pol = make_admission({"policy": "tier-shed", "threshold": 5, "min_priority": 0})
    assert pol.admit(req(-1), [pod(0, q=2, running=2, in_flight=1), pod(1, q=5)], NOW, None).admit
    assert not pol.admit(req(-1), [pod(0, q=2, running=2, in_flight=2)], NOW, None).admit
    assert pol.admit(req(0), [pod(0, q=2, running=2, in_flight=2)], NOW, None).admit


def test_queue_guard_turns_critical_away_only_when_every_pod_is_full():
    pol = make_admission({"policy": "probabilistic-queue-guard"})
    one_free = [pod(0, q=3), pod(1, q=0, kv=0.94)]
    all_full = [pod(0, q=3), pod(1, q=0, kv=0.95)]         # a queue, or a KV cache at critical_kv
    all_queue = [pod(0, q=3), pod(1, q=1)]
    for prio in (0, 2):
        assert pol.admit(req(prio), one_free, NOW, random.Random(0)).admit
        for full in (all_full, all_queue):
            assert pol.admit(req(prio), full, NOW, random.Random(0)) == Decision(False, 429, "rejected-queue-guard")
    deeper = make_admission({"policy": "probabilistic-queue-guard", "critical_queue": 2, "critical_kv": 1.01})
    assert deeper.admit(req(0), all_queue, NOW, random.Random(0)).admit           # pod 1 has only 1 waiting
    assert deeper.admit(req(0), [pod(0, q=1, kv=1.0)], NOW, random.Random(0)).admit   # KV test off above 1
    # a sheddable request is decided by probabilistic, with the same single rng draw
    plain = make_admission({"policy": "probabilistic"})
    for sat in (0.2, 0.9, 1.0, 1.2):
        for seed in range(20):
            a, b = random.Random(seed), random.Random(seed)
            assert pol.admit(req(-1), pods_at(sat), NOW, a) == plain.admit(req(-1), pods_at(sat), NOW, b)
            assert a.random() == b.random()


def test_queue_guard_bad_parameter_is_one_line():
    with pytest.raises(ConfigError, match="critical_queue"):
        make_admission({"policy": "probabilistic-queue-guard", "critical_queue": 0})
    with pytest.raises(ConfigError, match="critical_kv"):
        make_admission({"policy": "probabilistic-queue-guard", "critical_kv": 0})


def test_registry_and_factory():
    assert set(ADMISSION_POLICIES) == {"always-admit", "token-bucket", "gaie-legacy", "probabilistic",
                                       "probabilistic-queue-guard", "tier-shed", "reject-all"}
    for name in ADMISSION_POLICIES:
        assert make_admission({"policy": name}).name == name
    assert make_admission("gaie-legacy").name == "gaie-legacy"
    pol = make_admission({"policy": "probabilistic", "power": 2, "k": 1.5})
    assert pol.probability(0.5) == pytest.approx(0.375)
    assert pol.probability(10.0) == 1.0


@pytest.mark.parametrize("spec,field,needle", [
    ({"policy": "nope"}, "gateway.admission.policy", "gaie-legacy"),
    ({"policy": 3}, "gateway.admission.policy", "always-admit"),
    ({"policy": "gaie-legacy", "queue_threshold": -1}, "gateway.admission.queue_threshold", ">"),
    ({"policy": "gaie-legacy", "kv_threshold": 0}, "gateway.admission.kv_threshold", ">"),
    ({"policy": "gaie-legacy", "staleness_ms": -5}, "gateway.admission.staleness_ms", ">="),
    ({"policy": "gaie-legacy", "detector": "magic"}, "gateway.admission.detector", "utilization"),
    ({"policy": "gaie-legacy", "power": 5}, "gateway.admission.power", "queue_threshold"),
    ({"policy": "probabilistic", "k": -1}, "gateway.admission.k", ">="),
    ({"policy": "probabilistic", "k": "300"}, "gateway.admission.k", "number"),
    ({"policy": "probabilistic", "power": float("nan")}, "gateway.admission.power", "finite"),
    ({"policy": "token-bucket", "capacity": 0}, "gateway.admission.capacity", ">"),
    ({"policy": "token-bucket", "refill_rate": -1}, "gateway.admission.refill_rate", ">="),
    ({"policy": "token-bucket", "capacity": True}, "gateway.admission.capacity", "number"),
    ({"policy": "tier-shed", "threshold": -1}, "gateway.admission.threshold", ">="),
    ({"policy": "tier-shed", "min_priority": 1.5}, "gateway.admission.min_priority", "integer"),
    ({"policy": "always-admit", "threshold": 1}, "gateway.admission.threshold", "none"),
    ([1, 2], "gateway.admission", "mapping"),
])
def test_make_admission_errors(spec, field, needle):
    with pytest.raises(ConfigError) as ei:
        make_admission(spec)
    assert ei.value.field == field
    assert needle in ei.value.message


def test_make_admission_custom_field_prefix():
    with pytest.raises(ConfigError) as ei:
        make_admission({"policy": "x"}, field="pools.a.admission")
    assert ei.value.field == "pools.a.admission.policy"


# --------------------------------------------------------------------------------------------
# flow control
# --------------------------------------------------------------------------------------------

def drain(fc, sat=0.0, now=0):
    out = []
    while (r := fc.dispatch(sat, now)) is not None:
        out.append(r)
    return out


def test_fc_fcfs_within_band_and_higher_band_first():
    fc = FlowControl()
    a, b, c = req(0, "t1"), req(0, "t2"), req(0, "t1")
    hi1, hi2 = req(5, "t3"), req(5, "t1")
    low = req(-1)
    for i, r in enumerate((a, low, b, hi1, c, hi2)):
        assert fc.enqueue(r, i) == Decision(True, 200, "")
    assert len(fc) == 6
    assert fc.band_sizes() == {5: 2, 0: 3, -1: 1}
    assert list(fc.band_sizes()) == [5, 0, -1]
    assert drain(fc) == [hi1, hi2, a, b, c, low]
    assert len(fc) == 0 and fc.dispatch(0.0, 10) is None


def test_fc_one_per_call():
    fc = FlowControl()
    rs = [req(0) for _ in range(3)]
    for r in rs:
        fc.enqueue(r, 0)
    assert fc.dispatch(0.0, 1) is rs[0]
    assert len(fc) == 2


def test_fc_head_of_line_stop_static():
    fc = FlowControl()
    r = req(0)
    fc.enqueue(r, 0)
    assert fc.dispatch(1.0, 1) is None          # sat >= 1.0 stops
    assert fc.dispatch(1.7, 1) is None
    assert len(fc) == 1
    assert fc.dispatch(0.999, 1) is r
    # static ceiling parameter
    fc = FlowControl(usage_limits={"policy": "static", "ceiling": 0.5})
    fc.enqueue(r, 0)
    assert fc.dispatch(0.5, 1) is None and fc.dispatch(0.49, 1) is r


def test_fc_hol_no_lower_band_tried():
    # per-band ceilings: the top band (empty or not) blocks every lower band when sat >= its ceiling
    fc = FlowControl(usage_limits={"policy": "per-band", "ceilings": {5: 0.3, 0: 0.9}})
    top, low = req(5), req(0)
    fc.enqueue(top, 0)
    fc.enqueue(low, 0)
    assert fc.dispatch(0.5, 1) is None               # top band blocked → low band not tried
    assert fc.dispatch(0.2, 1) is top
    assert fc.dispatch(0.5, 1) is None               # top band empty but still gates
    assert fc.dispatch(0.25, 1) is low


def test_fc_priority_holdback_ceilings():
    fc = FlowControl(usage_limits={"policy": "priority-holdback", "min_ceiling": 0.5})
    r10 = req(10)
    fc.enqueue(r10, 0)
    assert fc.ceilings() == {10: 1.0}                 # a single band gets max_ceiling
    r0, rm5 = req(0), req(-5)
    fc.enqueue(r0, 0)
    fc.enqueue(rm5, 0)
    assert fc.ceilings() == pytest.approx({10: 1.0, 0: 0.75, -5: 0.5})
    assert fc.dispatch(0.8, 1) is r10
    assert fc.dispatch(0.8, 1) is None                # band 0's ceiling 0.75 ≤ 0.8: HoL stop
    assert fc.dispatch(0.6, 1) is r0
    assert fc.dispatch(0.6, 1) is None                # band −5's ceiling 0.5
    assert fc.dispatch(0.49, 1) is rm5
    # spacing by priority value
    fc = FlowControl(usage_limits={"policy": "priority-holdback", "min_ceiling": 0.2, "spacing": "priority"})
    for p in (10, 8, 0):
        fc.enqueue(req(p), 0)
    assert fc.ceilings() == pytest.approx({10: 1.0, 8: 0.84, 0: 0.2})


def test_fc_band_capacity_and_global_limit():
    fc = FlowControl(per_band_capacity=2)
    assert fc.enqueue(req(0), 0).admit and fc.enqueue(req(0), 0).admit
    d = fc.enqueue(req(0), 0)
    assert d == Decision(False, 429, "rejected-saturated")
    assert fc.enqueue(req(0), 0, no_endpoints=True) == Decision(False, 503, "rejected-no-endpoints")
    assert fc.enqueue(req(1), 0).admit                # another band has room
    fc.dispatch(0.0, 1)                                # frees band 1
    fc.dispatch(0.0, 1)                                # frees one slot in band 0
    assert fc.enqueue(req(0), 1).admit
    assert fc.band_sizes() == {1: 0, 0: 2}
    g = FlowControl(max_queue=2)
    assert g.enqueue(req(0), 0).admit and g.enqueue(req(3), 0).admit
    assert not g.enqueue(req(9), 0).admit
    assert FlowControl(per_band_capacity=0).enqueue(req(0), 0).admit   # 0 = unlimited


def test_fc_ttl_expiry_exact():
    fc = FlowControl(ttl_us=1_000)
    a, b, c = req(0), req(0), req(-1)
    fc.enqueue(a, 100)
    fc.enqueue(b, 300)
    fc.enqueue(c, 200)
    assert fc.next_expiry() == 1_100
    assert list(fc.expire(1_099)) == []
    assert list(fc.expire(1_100)) == [a]                    # exactly enqueue + ttl
    assert fc.next_expiry() == 1_200
    assert list(fc.expire(5_000)) == [c, b]                 # oldest first
    assert fc.next_expiry() is None and len(fc) == 0
    # dispatched / removed requests do not expire
    fc.enqueue(a, 0)
    fc.enqueue(b, 10)
    assert fc.dispatch(0.0, 5) is a
    assert fc.remove(b)
    assert list(fc.expire(10**9)) == [] and fc.next_expiry() is None
    # default TTL is 60 s
    fc = FlowControl()
    fc.enqueue(a, 7)
    assert fc.next_expiry() == 60_000_007
    assert FlowControl(ttl_us=0).next_expiry() is None


def test_fc_remove():
    fc = FlowControl()
    rs = [req(0) for _ in range(5)]
    for r in rs:
        fc.enqueue(r, 0)
    assert fc.remove(rs[0]) and fc.remove(rs[2])
    assert not fc.remove(rs[2]) and not fc.remove(req(0))
    assert len(fc) == 3 and fc.band_sizes() == {0: 3}
    assert drain(fc) == [rs[1], rs[3], rs[4]]
    # a removed request may be enqueued again (new position at the tail)
    x, y = req(0), req(0)
    fc.enqueue(x, 0)
    fc.enqueue(y, 0)
    fc.remove(x)
    fc.enqueue(x, 1)
    assert drain(fc) == [y, x]
    fc.enqueue(y, 0)
    with pytest.raises(ValueError):
        fc.enqueue(y, 0)                              # already queued


def test_fc_remove_many_compacts_and_stays_correct():
    for fairness in ("global-strict", "round-robin"):
        fc = FlowControl(fairness=fairness)
        rs = [req(i % 3 - 1, tenant=f"t{i % 4}") for i in range(3000)]
        for i, r in enumerate(rs):
            fc.enqueue(r, i)
        keep = [r for i, r in enumerate(rs) if i % 7 == 0]
        for i, r in enumerate(rs):
            if i % 7:
                assert fc.remove(r)
        assert len(fc) == len(keep)
        assert sum(b.entries for b in fc._bands.values()) <= 2 * len(keep) + 3 * 65
        out = drain(fc)
        assert sorted(r.id for r in out) == sorted(r.id for r in keep)
        assert [r.priority for r in out] == sorted((r.priority for r in out), reverse=True)
        assert len(fc._heap) <= 2 * len(fc) + 64


def test_fc_round_robin_fairness():
    fc = FlowControl(fairness="round-robin")
    a = [req(0, "alice") for _ in range(3)]
    b = [req(0, "bob") for _ in range(2)]
    c = [req(0, "carol")]
    d = [req(0, "") for _ in range(1)]               # empty tenant → "default-flow"
    for r in a + b + c + d:                           # alice floods first
        fc.enqueue(r, 0)
    got = drain(fc)
    # sorted tenants: alice, bob, carol, default-flow; cursor cycles
    assert got == [a[0], b[0], c[0], d[0], a[1], b[1], a[2]]
    # global-strict with the same arrivals: pure FCFS
    fc = FlowControl(fairness="global-strict")
    for r in a + b + c + d:
        fc.enqueue(r, 0)
    assert drain(fc) == a + b + c + d


def test_fc_round_robin_cursor_survives_new_tenants():
    fc = FlowControl(fairness="round-robin")
    b1, b2, d1 = req(0, "b"), req(0, "b"), req(0, "d")
    for r in (b1, b2, d1):
        fc.enqueue(r, 0)
    assert fc.dispatch(0.0, 0) is b1                  # cursor after "b"
    a1, c1 = req(0, "a"), req(0, "c")
    fc.enqueue(a1, 1)
    fc.enqueue(c1, 1)
    assert drain(fc) == [c1, d1, a1, b2]


def test_fc_band_gc_changes_ranks():
    fc = FlowControl(usage_limits={"policy": "priority-holdback", "min_ceiling": 0.0}, band_gc_us=1_000)
    old, r0 = req(9), req(0)
    fc.enqueue(old, 0)
    assert fc.dispatch(0.0, 0) is old
    fc.enqueue(r0, 10)
    assert fc.ceilings() == {9: 1.0, 0: 0.0}
    assert fc.dispatch(0.5, 500) is None              # band 9 still exists: band 0 ceiling 0
    assert fc.dispatch(0.5, 1_000) is r0              # band 9 collected: band 0 alone → 1.0
    assert list(fc.band_sizes()) == [0]


@pytest.mark.parametrize("kwargs,field", [
    ({"fairness": "lottery"}, "gateway.flow_control.fairness"),
    ({"per_band_capacity": -1}, "gateway.flow_control.per_band_capacity"),
    ({"ttl_us": 1.5}, "gateway.flow_control.ttl_us"),
    ({"usage_limits": {"policy": "soft"}}, "gateway.flow_control.usage_limits.policy"),
    ({"usage_limits": {"policy": "priority-holdback"}}, "gateway.flow_control.usage_limits.min_ceiling"),
    ({"usage_limits": {"policy": "priority-holdback", "min_ceiling": 2.0}},
     "gateway.flow_control.usage_limits.min_ceiling"),
    ({"usage_limits": {"policy": "static", "min_ceiling": 0.5}}, "gateway.flow_control.usage_limits.min_ceiling"),
])
def test_fc_config_errors(kwargs, field):
    with pytest.raises(ConfigError) as ei:
        FlowControl(**kwargs)
    assert ei.value.field == field


class _NaiveFC:
    """Reference model: plain lists, O(n) everything."""

    def __init__(self, ttl, rr):
        self.items = []          # (enqueue time, seq, req)
        self.ttl, self.rr, self.seq, self.last = ttl, rr, 0, {}

    def enqueue(self, r, now):
        self.seq += 1
        self.items.append((now, self.seq, r))

    def dispatch(self, sat, now):
        if sat >= 1.0 or not self.items:
            return None
        top = max(r.priority for _, _, r in self.items)
        band = [e for e in self.items if e[2].priority == top]
        if self.rr:
            tenants = sorted({e[2].tenant or "default-flow" for e in band})
            last = self.last.get(top)
            nxt = [t for t in tenants if last is None or t > last]
            t = nxt[0] if nxt else tenants[0]
            self.last[top] = t
            band = [e for e in band if (e[2].tenant or "default-flow") == t]
        e = min(band, key=lambda e: e[1])
        self.items.remove(e)
        return e[2]

    def expire(self, now):
        out = sorted((e for e in self.items if e[0] + self.ttl <= now), key=lambda e: (e[0] + self.ttl, e[1]))
        for e in out:
            self.items.remove(e)
        return [e[2] for e in out]

    def remove(self, r):
        for e in self.items:
            if e[2] is r:
                self.items.remove(e)
                return True
        return False


@pytest.mark.parametrize("fairness", ["global-strict", "round-robin"])
def test_fc_matches_naive_model(fairness):
    rng = random.Random(42)
    ttl = 5_000
    fc = FlowControl(ttl_us=ttl, fairness=fairness, band_gc_us=0, per_band_capacity=0)
    ref = _NaiveFC(ttl, fairness == "round-robin")
    queued: list[Request] = []
    now = 0
    for _ in range(20_000):
        now += rng.randrange(0, 40)
        op = rng.random()
        if op < 0.45:
            r = req(rng.choice((-1, 0, 0, 2)), tenant=rng.choice(("a", "b", "c", "")))
            fc.enqueue(r, now)
            ref.enqueue(r, now)
            queued.append(r)
        elif op < 0.75:
            sat = rng.choice((0.0, 0.5, 1.0))
            assert fc.dispatch(sat, now) is ref.dispatch(sat, now)
        elif op < 0.9 and queued:
            r = queued[rng.randrange(len(queued))]
            assert fc.remove(r) == ref.remove(r)
        else:
            assert [r.id for r in fc.expire(now)] == [r.id for r in ref.expire(now)]
        assert len(fc) == len(ref.items)
        exp = min((e[0] + ttl for e in ref.items), default=None)
        assert fc.next_expiry() == exp
