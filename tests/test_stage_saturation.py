"""Stage-aware P/D saturation for admission (llm-d-router v0.10): max(S_prefill, S_decode)
instead of the mean over every pod, so a saturated prefill pool is not hidden by idle decoders."""
from __future__ import annotations

import pytest

from blis_gym.errors import ConfigError
from blis_gym.policies.admission import make_admission
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.cluster.signals import PodSignals
from blis_gym.sim.simulation import Simulation
from helpers import with_fields


class Fixed:
    def __init__(self, u):
        self.u = u

    def random(self):
        return self.u


class Req:
    priority = -1


def pods(prefill_waiting: int):
    out = [PodSignals(0, "p0", role="prefill", waiting=prefill_waiting, scraped_at=0)]
    return out + [PodSignals(i, f"d{i}", role="decode", scraped_at=0) for i in range(1, 4)]


def test_gaie_legacy_reads_the_saturated_stage():
    ps = pods(prefill_waiting=10)                      # S_prefill = 10/5 = 2.0, S_decode = 0: mean 0.5
    mean = make_admission({"policy": "gaie-legacy"})
    staged = make_admission({"policy": "gaie-legacy", "stage_aware": True})
    assert mean.saturation(ps, 0) == pytest.approx(0.5) and staged.saturation(ps, 0) == pytest.approx(2.0)
    assert mean.admit(Req(), ps, 0, None).admit and not staged.admit(Req(), ps, 0, None).admit


def test_probabilistic_sheds_with_the_stage_saturation():
    ps = pods(prefill_waiting=1)                       # S_prefill 0.2: p = 0.2^5 x 300 = 0.096; mean 0.05: 9e-5
    mean = make_admission({"policy": "probabilistic"})
    staged = make_admission({"policy": "probabilistic", "stage_aware": True})
    assert staged.probability(staged.saturation(ps, 0)) == pytest.approx(0.096)
    assert mean.admit(Req(), ps, 0, Fixed(0.05)).admit and not staged.admit(Req(), ps, 0, Fixed(0.05)).admit


PD = {
    "model": "Qwen/Qwen3-14B",
    "pools": [{"name": "prefill", "role": "prefill", "instances": 1}, {"name": "decode", "role": "decode",
                                                                        "instances": 3}],
    "pd": {"decider": "always"},
    "gateway": {"admission": {"policy": "gaie-legacy", "stage_aware": True}},
    "workload": {"rate": 40, "horizon_s": 20, "input": {"dist": "gaussian", "mean": 4000, "std": 500, "min": 1000,
                                                       "max": 8000},
                 "output": {"dist": "constant", "value": 32},
                 "clients": [{"name": "critical", "rate_fraction": 0.3, "slo_class": "critical"},
                             {"name": "sheddable", "rate_fraction": 0.7, "slo_class": "sheddable"}]},
}


def test_a_saturated_prefill_pool_sheds_sheddable_traffic_and_protects_critical_ttft():
    staged = Simulation(build(parse_scenario(PD))).run()
    mean = Simulation(build(parse_scenario(with_fields(PD, gateway__admission__stage_aware=False)))).run()
    assert staged["per_class"]["sheddable"]["rejected_requests"] > mean["per_class"]["sheddable"]["rejected_requests"]
    assert staged["per_class"]["critical"]["rejected_requests"] == 0
    assert staged["per_class"]["critical"]["ttft_p90_ms"] < mean["per_class"]["critical"]["ttft_p90_ms"]


@pytest.mark.parametrize("policy", ["gaie-legacy", "probabilistic", "probabilistic-queue-guard"])
def test_stage_aware_must_be_a_boolean(policy):
    with pytest.raises(ConfigError) as e:
        make_admission({"policy": policy, "stage_aware": "yes"})
    assert e.value.field == "gateway.admission.stage_aware" and "true or false" in e.value.message
