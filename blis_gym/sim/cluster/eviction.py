"""Flow control's in-flight eviction of sheddable requests (llm-d-router v0.10, `enableEviction`).

Off by default, as in llm-d. When on, the gateway tracks every dispatched request of priority
< 0 (llm-d's eviction-sheddable-filter) until it ends. When a flow-control dispatch cycle is
blocked by saturation (head-of-line: saturation at or above the ceiling) while requests wait in
a band of higher priority than some tracked request, flow control revokes up to
`max_per_decision` of them (llm-d: at most 2 revocations per decision), never more than the
blocked band holds; victims go lowest priority first, then the most recently dispatched (the
least work lost). A revoked request is aborted wherever it is (its pod's queue or batch, the
queueing overhead, a P/D leg) and ends in the final state EVICTED. Decisions are paced: at most
one every `interval_us` (the freed capacity shows up in saturation only at the next scrape).

llm-d sizes a decision from a saturation deficit against the mean footprint of a request and
keeps pending-reclaim debits; here the size is the cap alone (see docs/routing-and-admission.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ..engine.request import State

if TYPE_CHECKING:
    from ..engine import Request


@dataclass(frozen=True)
class EvictionConfig:
    max_per_decision: int = 2          # llm-d: at most 2 revocations per decision
    interval_us: int = 100_000         # pacing between decisions


class Eviction:
    """The tracked in-flight sheddable requests and the revocation decision."""

    def __init__(self, cfg: EvictionConfig, evict: Callable[[Request, int], None]):
        self.cfg = cfg
        self.evict = evict                               # the simulation's: abort and count as evicted
        self.tracked: dict[int, dict[int, Request]] = {}  # priority -> {id: request}, in dispatch order
        self.next_at = 0
        self.evicted = 0
        self.decisions = 0

    def dispatched(self, r: Request) -> None:
        if r.priority < 0:
            self.tracked.setdefault(r.priority, {})[r.id] = r

    def ended(self, r: Request) -> None:
        """r reached its final state (however): no longer a candidate."""
        d = self.tracked.get(r.priority)
        if d is not None and d.pop(r.id, None) is not None and not d:
            del self.tracked[r.priority]

    def blocked(self, demand_priority: int, demand: int, now: int) -> None:
        """A dispatch cycle was blocked with `demand` requests waiting in the band of priority
        `demand_priority` (the highest band with requests): revoke victims below it."""
        if now < self.next_at or not self.tracked:
            return
        n = min(self.cfg.max_per_decision, demand)
        victims = []
        for prio in sorted(self.tracked):
            if prio >= demand_priority or len(victims) >= n:
                break
            for r in reversed(self.tracked[prio].values()):     # most recently dispatched first
                if r.state is State.CREATED and r.instance is None:
                    continue                     # an agent is still routing it: not on a pod yet
                victims.append(r)
                if len(victims) >= n:
                    break
        if not victims:
            return
        self.decisions += 1
        self.next_at = now + self.cfg.interval_us
        for r in victims:
            self.evicted += 1
            self.evict(r, now)                           # ends it: `ended` untracks it
