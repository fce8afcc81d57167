"""The gateway's settings: admission, routing, flow control, signals and the P/D path."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..slots import AdmissionPolicy, PDDecider, Router
from .eviction import EvictionConfig
from .flow_control import FlowControl
from .peer_pull import PeerPullConfig


@dataclass
class GatewayConfig:
    admission: AdmissionPolicy
    router: Router
    flow_control: FlowControl | None = None  # None: llm-d's default (off)
    eviction: EvictionConfig | None = None  # in-flight eviction of sheddable requests (needs flow control)
    scrape_interval_us: int = 50_000        # 0 = oracle signals (read at every decision)
    dispatch_tick_us: int = 1_000           # flow-control dispatch cycle
    saturation: Callable[[list, int], float] | None = None   # (pods, now) -> saturation, for flow-control dispatch
    trace_decisions: bool = False
    # P/D disaggregation (used when some pods have role "prefill")
    prefill_router: Router | None = None    # the prefill profile's router
    decider: PDDecider | None = None
    pd_stage_order: str = "decode-first"     # or prefill-first: the prefill profile picks first, always
    transfer_bandwidth_gb_s: float = 25.0   # per-GPU NIC (NIXL RDMA)
    transfer_base_latency_us: int = 50
    transfer_contention: bool = True
    peer_pull: PeerPullConfig | None = None   # KV pulled from a peer pod (None: off, as llm-d's default)
    extra: dict = field(default_factory=dict)
