"""KV pulled from a peer pod instead of recomputed (llm-d's P2P KV cache sharing, 2026).

llm-d: the EPP's `p2p-source-producer` names, in a header, the candidate pod that holds the
most cached prefix tokens of the request when it holds at least `minCachedTokenDelta` more than
the pod chosen to compute the prompt; that pod's vLLM connector then pulls those blocks from the
peer (NIXL over RDMA) instead of recomputing them. Here, when the router has picked pod i, the
pod with the longest cached prefix of the prompt (read from the instances' caches, as the precise
prefix producer would; ties to the pod with the shorter queue, then the lower index) becomes the
source if it holds at least `min_tokens` more than pod i. Pod i's engine allocates the blocks
when the request reaches the head of its queue, takes it out of the queue while they move, and
then computes only the rest of the prompt. A pull of B bytes uses the P/D transfer model
(`transfer.Transfers`): base latency + B / bandwidth, pulls from one source sharing its NIC.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..engine import BLOCK_SIZE
from .transfer import Transfers

if TYPE_CHECKING:
    from ..engine import Instance, Request


@dataclass(frozen=True)
class PeerPullConfig:
    min_tokens: int = BLOCK_SIZE          # llm-d's minCachedTokenDelta, at block granularity
    bandwidth_gb_s: float = 25.0          # per GPU, as P/D transfers
    base_latency_us: int = 50
    contention: bool = True               # pulls from one source share its NIC


class PeerPull:
    def __init__(self, cfg: PeerPullConfig, loop, pods, instances):
        self.cfg = cfg
        self.pods = pods
        self.instances = instances
        self.transfers = Transfers(loop, cfg.bandwidth_gb_s * 1e3, cfg.base_latency_us, cfg.contention,
                                   self._arrived)
        self.pulled_tokens = 0

    def choose(self, r: Request, i: int) -> None:
        """r goes to pod i: name the peer it should pull its prefix from, if any (r.pull)."""
        own = self.instances[i].lookup_prefix(r)
        best, best_pod = own, None
        for p in self.pods:
            if p.index == i or not p.available:
                continue
            n = self.instances[p.index].lookup_prefix(r)
            if n > best or (n == best and best_pod is not None and p.waiting < best_pod.waiting):
                best, best_pod = n, p
        if best_pod is not None and (best - own) * BLOCK_SIZE >= self.cfg.min_tokens:
            r.pull = (best_pod.index, best)

    def start(self, r: Request, inst: Instance, source: int, tokens: int, now: int) -> None:
        nbytes = tokens * self.instances[source].kv_bytes_per_token
        self.pulled_tokens += tokens
        self.transfers.start(("peer", source), nbytes, (r, inst), now)

    def _arrived(self, payload, now: int) -> None:
        r, inst = payload
        inst.kv_arrived(r, now)

    def summary(self) -> dict:
        """summary.json's `kv_peer_pull` block."""
        t = self.transfers
        ms = np.asarray(t.durations_us, dtype=float) / 1000
        return {"pulls": t.started, "pulls_completed": len(t.durations_us), "pulled_tokens": self.pulled_tokens,
                "pull_mean_ms": round(float(ms.mean()), 6) if ms.size else None,
                "pull_p99_ms": round(float(np.percentile(ms, 99)), 6) if ms.size else None,
                "peak_concurrent_pulls": t.peak_concurrent}
