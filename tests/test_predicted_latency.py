"""The predicted-latency router: online per-pod TTFT/TPOT regressions, SLO headroom, fallback."""
from __future__ import annotations

import json

import numpy as np
import pytest

from blis_gym.errors import ConfigError
from blis_gym.policies.routing import make_router
from test_cli import cli
from test_routing import ctx_, pods_, req_


def train(router, pods, n, ttft_per_waiting_us=10_000):
    """n completed requests per pod whose TTFT is 10 ms x the pod's waiting queue + 5 ms."""
    ctx = ctx_()
    for k in range(n):
        for p in pods:
            p.waiting = k % 7
            r = req_(1000 + k * len(pods) + p.index, prefix=0)
            router._predict(r, [p], ctx, False)
            router.observe(r, p.index, ctx)
            r.first_token = 5_000 + ttft_per_waiting_us * p.waiting
            r.finished = r.first_token + 9 * 20_000          # 10 output tokens, 20 ms apart
            router.release(r, p.index)


def test_it_routes_with_the_default_profile_until_every_pod_has_data():
    pl = make_router({"policy": "predicted-latency", "min_samples": 8})
    default = make_router({"policy": "default"})
    pods = pods_(3, waiting=[4, 0, 2], kv_usage=[0.1, 0.5, 0.2])
    r = req_(1)
    assert pl.pick(r, pods, ctx_()) == default.pick(r, pods, ctx_())
    train(pl, pods[:2], 8)                                   # pod 2 has no model yet
    assert pl.pick(r, pods, ctx_()) == default.pick(r, pods, ctx_())


def test_the_models_learn_the_latency_surface_and_the_pick_follows_it():
    pl = make_router({"policy": "predicted-latency", "min_samples": 8, "epsilon": 0})
    pods = pods_(3)
    train(pl, pods, 40)
    m = pl.models[0]
    X = np.array([[1.0, 0.0, 0.1, q, 0.0, 0.0, 0.0] for q in (0, 3, 6)])
    ttft, tpot = m.predict(X)
    assert ttft == pytest.approx([5_000, 35_000, 65_000], rel=0.02)
    assert tpot == pytest.approx([20_000] * 3, rel=0.02)
    for p, q in zip(pods, (5, 1, 3)):
        p.waiting = q
    assert pl.pick(req_(7, prefix=0), pods, ctx_()) == 1     # the shortest predicted TTFT


def test_headroom_least_packs_and_most_spreads_within_the_slo():
    picks = {}
    for strategy in ("least", "most"):
        pl = make_router({"policy": "predicted-latency", "min_samples": 8, "epsilon": 0, "strategy": strategy,
                          "ttft_slo_ms": 50, "tpot_slo_ms": 100})
        pods = pods_(3)
        train(pl, pods, 40)
        for p, q in zip(pods, (2, 0, 9)):                    # predicted TTFT 25, 5, 95 ms
            p.waiting = q
        picks[strategy] = pl.pick(req_(7, prefix=0), pods, ctx_())
    assert picks == {"least": 0, "most": 1}                  # pod 2 misses the 50 ms SLO


def test_no_pod_meets_the_slo_then_the_least_deficit_wins():
    pl = make_router({"policy": "predicted-latency", "min_samples": 8, "epsilon": 0,
                      "ttft_slo_ms": 1, "tpot_slo_ms": 1})
    pods = pods_(3)
    train(pl, pods, 40)
    for p, q in zip(pods, (4, 6, 3)):
        p.waiting = q
    assert pl.pick(req_(7, prefix=0), pods, ctx_()) == 2


def test_the_affinity_gate_keeps_pods_holding_the_prompt():
    pl = make_router({"policy": "predicted-latency", "min_samples": 8, "epsilon": 0})
    pods = pods_(3)
    train(pl, pods, 40)
    warm = req_(50, prefix=4096, own=64)
    pl.observe(warm, 2, ctx_())                              # pod 2's prefix index holds the prompt
    pods[2].waiting, pods[0].waiting = 6, 0
    assert pl.pick(req_(51, prefix=4096, own=64), pods, ctx_()) == 2
    explore = make_router({"policy": "predicted-latency", "min_samples": 8, "epsilon": 1})
    train(explore, pods_(3), 40)
    explore.observe(warm, 2, ctx_())
    assert explore.pick(req_(51, prefix=4096, own=64), pods, ctx_()) == 0


@pytest.mark.parametrize("spec, field", [
    ({"epsilon": 2}, "router.epsilon"),
    ({"strategy": "best"}, "router.strategy"),
    ({"ttft_slo_ms": 100}, "router.ttft_slo_ms"),
    ({"window": 8, "min_samples": 16}, "router.min_samples"),
    ({"scorers": []}, "router.scorers"),
])
def test_bad_parameters_name_the_field(spec, field):
    with pytest.raises(ConfigError) as e:
        make_router({"policy": "predicted-latency", **spec})
    assert str(e.value).startswith(field), str(e.value)


def test_bad_parameter_on_the_cli_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps({"model": "Qwen/Qwen3-14B", "hardware": "H100", "cluster": {"instances": 2},
                                "router": {"policy": "predicted-latency", "affinity_tau": -1},
                                "workload": {"rate": 1, "num_requests": 2, "input": {"dist": "constant", "value": 10},
                                             "output": {"dist": "constant", "value": 10}}}))
    p = cli("run", path, "--out", tmp_path / "o", "--quiet")
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "router.affinity_tau" in lines[0], p.stderr
