"""KV pulled from a peer pod (llm-d's P2P KV sharing): the worked pull time, the direction of its
effect on TTFT, the summary's counts, invariants, and bad parameters."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from blis_gym.errors import ConfigError
from blis_gym.schema.scenario import build, parse_scenario
from blis_gym.sim.simulation import Simulation
from helpers import assert_conserved, with_fields

ROOT = Path(__file__).resolve().parent.parent
ON = yaml.safe_load((ROOT / "scenarios" / "kv-peer-pull.yaml").read_text())
OFF = yaml.safe_load((ROOT / "scenarios" / "kv-peer-pull-off.yaml").read_text())

# One conversation of two turns on two pods by round robin: turn 2 (8,000 + 100 + 8,000 tokens)
# lands on the pod that does not hold turn 1's 8,100 tokens.
TWO_TURNS = {
    "model": "Qwen/Qwen3-14B",
    "cluster": {"instances": 2, "peer_pull": {"bandwidth_gb_s": 50}},
    "router": {"policy": "round-robin"},
    "workload": {"rate": 0.1, "arrival": {"process": "constant"}, "horizon_s": 19,
                 "input": {"dist": "constant", "value": 8000}, "output": {"dist": "constant", "value": 100},
                 "session": {"turns": 2, "think_time_s": 1.0, "accumulate": True}},
}


def run(data: dict, check: bool = False):
    sim = Simulation(build(parse_scenario(data), check_invariants=check))
    return sim, sim.run()


def test_second_turn_pulls_the_first_turns_blocks_in_the_link_time():
    sim, s = run(TWO_TURNS, check=True)
    pull = s["kv_peer_pull"]
    assert s["completed_requests"] == 2
    assert pull["pulls"] == pull["pulls_completed"] == 1
    assert pull["pulled_tokens"] == 8100 // 16 * 16                 # the full blocks of prompt + output
    kv_bytes = 40 * 8 * 128 * 2 * 2              # Qwen3-14B per token: layers x KV heads x dim x (K, V) x bf16
    assert pull["pull_mean_ms"] == (50 + -(-8096 * kv_bytes // 50_000)) / 1000    # base + bytes / bandwidth
    _, off = run(with_fields(TWO_TURNS, cluster__peer_pull=None))
    assert "kv_peer_pull" not in off
    assert s["ttft_p99_ms"] < off["ttft_p99_ms"]                     # turn 2: pulled, not recomputed


def test_pulling_lowers_mean_ttft_on_the_scenario():
    sim, on = run(with_fields(ON, workload__horizon_s=30), check=True)
    _, off = run(with_fields(OFF, workload__horizon_s=30))
    assert on["kv_peer_pull"]["pulls"] > 0
    assert on["ttft_mean_ms"] < off["ttft_mean_ms"]
    assert_conserved(sim, on)


def test_no_pull_below_min_tokens():
    _, s = run(with_fields(TWO_TURNS, cluster__peer_pull__min_tokens=8200))   # the peer holds 8,096 more
    assert s["kv_peer_pull"]["pulls"] == 0


@pytest.mark.parametrize("field,value", [("bandwidth_gb_s", 0), ("min_tokens", 0), ("base_latency_ms", -1),
                                         ("source", "best")])
def test_bad_peer_pull_parameters_are_one_line_errors(field, value):
    with pytest.raises(ConfigError) as e:
        parse_scenario(with_fields(TWO_TURNS, **{f"cluster__peer_pull__{field}": value}))
    assert e.value.field == f"cluster.peer_pull.{field}"
    assert "\n" not in str(e.value)


def test_prefill_legs_pull_the_conversation_from_the_decode_pod():
    # P/D chat: a turn's context (the previous prompt + the output the decode pod generated) is
    # on a decode pod; the prefill pod computing the next turn pulls it (llm-d: the computing pod
    # is the prefill pod) instead of recomputing the previous output
    chat = yaml.safe_load((ROOT / "scenarios" / "pd-chat-always.yaml").read_text())
    data = with_fields(chat, workload__horizon_s=60)
    sim, on = run(with_fields(data, cluster__peer_pull={"bandwidth_gb_s": 25}), check=True)
    _, off = run(data)
    assert on["kv_peer_pull"]["pulls"] > 0
    assert on["ttft_mean_ms"] < off["ttft_mean_ms"]
    assert_conserved(sim, on)
