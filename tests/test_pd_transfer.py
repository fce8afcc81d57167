"""P/D KV transfers ship only the prompt blocks the decode pod does not already cache."""
from __future__ import annotations

from collections import Counter

from test_pd_autoscale import PD, simulate


def test_transfer_moves_only_the_blocks_beyond_the_decode_pods_prefix_hit():
    # Qwen3-14B TP1: 163,840 B of KV per token; 1 GB/s, no contention, 50 µs base latency.
    # Prompts: a shared 2,048-token prefix + 8 own tokens = 129 blocks of 16.
    wl = {"rate": 2, "arrival": {"process": "constant"}, "num_requests": 20, "prefix_tokens": 2048,
          "input": {"dist": "constant", "value": 8}, "output": {"dist": "constant", "value": 10}}
    sim, s = simulate({**PD, "pd": {"decider": "always", "transfer": {"bandwidth_gb_s": 1, "contention": False}},
                       "workload": wl})
    assert s["pd"]["transfers"] == 20 and s["completed_requests"] == 20
    # the first request finds a cold decode pod: all 129 blocks (338.2 MB, 338,166 µs + 50);
    # the others land where the prefix (128 blocks) is cached: one block (2.6 MB, 2,622 + 50 µs)
    assert Counter(sim.gateway.pd.transfers.durations_us) == {50 + 338_166: 1, 50 + 2_622: 19}
