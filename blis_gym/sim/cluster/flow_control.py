"""The gateway's flow-control queue (GIE/llm-d flow control; off by default in llm-d).

A pure data structure: the caller owns the clock and the events (a dispatch attempt on every
enqueue and on a 1 ms tick while the queue is non-empty, a TTL event at `next_expiry()`).

Topology (the flow-control layer of https://github.com/kubernetes-sigs/gateway-api-inference-extension,
as BLIS's `sim/cluster/gateway_queue.go` models it): one priority band per request priority, created
on demand; inside a band one FIFO flow per tenant (fairness ID; "" → "default-flow").

* Dispatch: at most one request per call. Bands are visited from the highest priority down;
  band i (rank 0 = highest, among the nb existing bands) has a ceiling from the usage-limit
  policy; if saturation >= ceiling the whole cycle stops (head-of-line: no lower band is tried);
  empty bands are skipped; otherwise the band's fairness policy picks the flow and the flow's
  ordering policy its head.
* Ordering: `fcfs` (enqueue order; llm-d's default) or `edf` (earliest deadline first, llm-d's
  edf-ordering-policy: deadline = enqueue time + the request's effective TTL, ties in enqueue
  order). The effective TTL is the request's own client timeout when it has one (its deadline
  minus its arrival), else the queue's `ttl_us` (none: last). Expiry still uses `ttl_us`.
* Fairness: `global-strict` (the band behaves as one FIFO across tenants, by enqueue order) or
  `round-robin` (tenants with queued requests are visited in sorted name order with a cursor).
* Usage limits: `None`/static → 1.0 for every band; `{"policy": "static", "ceiling": c}`;
  `{"policy": "priority-holdback", "min_ceiling": m, "max_ceiling": 1.0, "spacing": "rank"|"priority"}`
  → ceilings linear from max_ceiling (top band) down to min_ceiling (lowest existing band);
  `{"policy": "per-band", "ceilings": {priority: ceiling}}` → explicit (missing bands 1.0);
  `{"policy": "soft-reflective-ceiling"}` (no parameters; llm-d's soft-reflective-ceiling-policy)
  → band 0 has ceiling 1; band i of N has the reflective ceiling 1 − i·sat/(N−1): below it the
  band dispatches freely; at or above it (and sat < 1) the band is gated and opens on one
  dispatch cycle out of every round(sat/(1−sat)) (a counter per band priority, advanced on
  every cycle in which the band is gated, reset never: as llm-d's); at sat ≥ 1 every band
  stops (band 0 by its ceiling 1). It never rejects. With one band it is the static ceiling 1.
* Limits: per band `per_band_capacity` live requests (0 = unlimited), global `max_queue`
  (0 = unlimited); over a limit → 429 "rejected-saturated" on the spot.
* TTL: a request whose enqueue time + ttl <= now is expired (the caller answers 429
  "rejected-ttl-expired"). `ttl_us=0` disables it.
* Empty bands are garbage-collected after `band_gc_us` idle (llm-d: 10 min), which changes the
  band ranks seen by priority-holdback.

Removal (client timeout) is lazy: a live map keyed by request id marks what is still queued;
stale deque/heap entries are skipped when met and compacted when they outnumber live ones.
Every operation is O(1) or O(log n) amortised (O(#tenants) / O(#bands) for tiny lists).
"""
from __future__ import annotations

import heapq
from bisect import bisect_right, insort
from collections import deque
from collections.abc import Iterator
from typing import Any

from blis_gym.errors import ConfigError
from blis_gym.sim.cluster.signals import (
    HTTP_TOO_MANY, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS, REASON_SATURATED, Decision,
)

FAIRNESS_POLICIES = ("global-strict", "round-robin")
ORDERING_POLICIES = ("fcfs", "edf")
USAGE_LIMIT_POLICIES = ("static", "priority-holdback", "per-band", "soft-reflective-ceiling")
DEFAULT_FLOW = "default-flow"

_ADMITTED = Decision(True)
_FULL = Decision(False, HTTP_TOO_MANY, REASON_SATURATED)
_FULL_NO_ENDPOINTS = Decision(False, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS)

_COMPACT_MIN = 64


class _Band:
    __slots__ = ("priority", "live", "entries", "queue", "flows", "flow_live", "active", "last", "touched")

    def __init__(self, priority: int, now: int):
        self.priority = priority
        self.live = 0                  # live requests in the band
        self.entries = 0               # entries held in the deques (live + dead)
        self.queue: deque | list = deque()     # global-strict: one queue of (key, seq, req)
        self.flows: dict[str, deque | list] = {}   # round-robin: tenant -> queue of (key, seq, req)
        self.flow_live: dict[str, int] = {}
        self.active: list[str] = []    # round-robin: sorted tenants with live requests
        self.last: str | None = None   # round-robin cursor: tenant served last
        self.touched = now             # last enqueue or dispatch (for band GC)


class FlowControl:
    def __init__(self, per_band_capacity: int = 5000, max_queue: int = 0, ttl_us: int = 60_000_000,
                 usage_limits: dict | None = None, fairness: str = "global-strict",
                 band_gc_us: int = 600_000_000, ordering: str = "fcfs"):
        for name, v in (("per_band_capacity", per_band_capacity), ("max_queue", max_queue),
                        ("ttl_us", ttl_us), ("band_gc_us", band_gc_us)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"gateway.flow_control.{name}", f"must be an integer >= 0, got {v!r}")
        if fairness not in FAIRNESS_POLICIES:
            raise ConfigError("gateway.flow_control.fairness",
                              f"unknown fairness policy {fairness!r}; allowed: {', '.join(FAIRNESS_POLICIES)}")
        if ordering not in ORDERING_POLICIES:
            raise ConfigError("gateway.flow_control.ordering",
                              f"unknown ordering policy {ordering!r}; allowed: {', '.join(ORDERING_POLICIES)}")
        self.per_band_capacity = per_band_capacity
        self.max_queue = max_queue
        self.ttl_us = ttl_us
        self.fairness = fairness
        self.band_gc_us = band_gc_us
        self._limits = _parse_usage_limits(usage_limits)
        self._rr = fairness == "round-robin"
        self._edf = ordering == "edf"     # queues are heaps keyed by deadline, else FIFO deques
        self._gate_ticks: dict[int, int] = {}    # soft-reflective: band priority -> gated cycles
        self._last_sat = 0.0
        self._bands: dict[int, _Band] = {}
        self._order: list[int] = []           # band priorities, ascending
        self._desc: list[int] = []            # the same, highest first (visit order)
        self._live: dict[int, tuple[int, int, int]] = {}   # req.id -> (seq, band, enqueue time)
        self._heap: list[tuple[int, int, Any]] = []        # (expiry, seq, req)
        self._seq = 0

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, req) -> bool:
        return req.id in self._live

    def band_sizes(self) -> dict[int, int]:
        """Live requests per existing band, highest priority first."""
        return {p: self._bands[p].live for p in reversed(self._order)}

    def enqueue_time(self, req) -> int | None:
        e = self._live.get(req.id)
        return None if e is None else e[2]

    def ceilings(self) -> dict[int, float]:
        """Current usage-limit ceiling of each existing band, highest priority first."""
        prios = list(reversed(self._order))
        if self._limits["policy"] == "soft-reflective-ceiling":    # the reflective ceilings at the last dispatch
            return {p: self._reflective(i, len(prios), self._last_sat) for i, p in enumerate(prios)}
        return {p: self._ceiling(i, p, prios) for i, p in enumerate(prios)}

    def next_expiry(self) -> int | None:
        """Earliest enqueue + ttl among queued requests (None if empty or TTL off)."""
        if not self.ttl_us:
            return None
        heap = self._heap
        while heap and not self._is_live(heap[0][1], heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # -- mutations -----------------------------------------------------------------------------

    def enqueue(self, req, now: int, *, no_endpoints: bool = False) -> Decision:
        """Queue `req` in band req.priority. A full band (or a full queue) rejects it on the spot:
        429 "rejected-saturated" (503 "rejected-no-endpoints" if the caller says the pool is empty)."""
        if req.id in self._live:
            raise ValueError(f"request {req.id} is already queued")
        prio = req.priority
        band = self._bands.get(prio)
        if (self.max_queue and len(self._live) >= self.max_queue) or (
                self.per_band_capacity and band is not None and band.live >= self.per_band_capacity):
            return _FULL_NO_ENDPOINTS if no_endpoints else _FULL
        if band is None:
            band = self._bands[prio] = _Band(prio, now)
            band.queue = self._new_queue()
            insort(self._order, prio)
            self._desc = self._order[::-1]
        self._seq += 1
        seq = self._seq
        self._live[req.id] = (seq, prio, now)
        entry = (self._deadline(req, now) if self._edf else seq, seq, req)
        if self._rr:
            tenant = req.tenant or DEFAULT_FLOW
            flow = band.flows.get(tenant)
            if flow is None:
                flow = band.flows[tenant] = self._new_queue()
                band.flow_live[tenant] = 0
            self._push(flow, entry)
            band.flow_live[tenant] += 1
            if band.flow_live[tenant] == 1:
                insort(band.active, tenant)
        else:
            self._push(band.queue, entry)
        band.live += 1
        band.entries += 1
        band.touched = now
        if self.ttl_us:
            heapq.heappush(self._heap, (now + self.ttl_us, seq, req))
        return _ADMITTED

    def dispatch(self, saturation: float, now: int) -> Any | None:
        """Pop at most one request: highest band first, head-of-line stop when saturation >= the
        band's ceiling, empty bands skipped. Returns the request or None."""
        if self.band_gc_us:
            self._gc_bands(now)
        if not self._live:
            return None
        prios = self._desc
        static = self._limits.get("ceiling")          # None unless the static policy
        soft = self._soft_ceilings(saturation, prios) if self._limits["policy"] == "soft-reflective-ceiling" else None
        for i, p in enumerate(prios):
            if soft is not None:
                ceiling = soft[i]
            else:
                ceiling = static if static is not None else self._ceiling(i, p, prios)
            if saturation >= ceiling:
                return None
            band = self._bands[p]
            if band.live == 0:
                continue
            req = self._pop(band)
            band.touched = now
            self._maybe_compact_heap()
            return req
        return None

    def expire(self, now: int) -> Iterator:
        """Remove the requests whose enqueue time + ttl <= now, oldest first, yielding each as
        it leaves: the caller ends one before the next leaves, so no request is ever out of the
        queue without being ended (the simulation's invariants hold after every step)."""
        if not self.ttl_us:
            return
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, req = heapq.heappop(heap)
            if self._is_live(seq, req):
                self._drop(req)
                yield req

    def remove(self, req) -> bool:
        """Take a queued request out (client timeout / disconnect). False if it is not queued."""
        if req.id not in self._live:
            return False
        self._drop(req)
        return True

    # -- internals -----------------------------------------------------------------------------

    def _new_queue(self) -> deque | list:
        return [] if self._edf else deque()

    def _push(self, queue, entry) -> None:
        if self._edf:
            heapq.heappush(queue, entry)
        else:
            queue.append(entry)

    def _deadline(self, req, now: int) -> float:
        """EDF key: enqueue time + the request's effective TTL (its client timeout, else ttl_us)."""
        ttl = req.deadline - req.arrival if req.deadline > 0 else self.ttl_us
        return now + ttl if ttl > 0 else float("inf")

    @staticmethod
    def _reflective(i: int, n: int, saturation: float) -> float:
        return 1.0 if i == 0 or n <= 1 else 1.0 - i * saturation / (n - 1)

    def _soft_ceilings(self, saturation: float, prios: list[int]) -> list[float]:
        """Soft-reflective ceilings of this dispatch cycle (advances the gated bands' counters)."""
        self._last_sat = saturation
        n = len(prios)
        out = []
        for i, p in enumerate(prios):
            if saturation < self._reflective(i, n, saturation):
                out.append(1.0)                  # band 0, a single band, or below its ceiling
            elif saturation >= 1.0:
                out.append(0.0)
            else:
                period = max(1, round(saturation / (1.0 - saturation + 1e-9)))
                tick = self._gate_ticks.get(p, 0) + 1
                self._gate_ticks[p] = tick
                out.append(1.0 if tick % period == 0 else 0.0)
        return out

    def _is_live(self, seq: int, req) -> bool:
        e = self._live.get(req.id)
        return e is not None and e[0] == seq

    def _drop(self, req) -> None:
        """Mark a live request gone (its deque entry becomes dead)."""
        _, prio, _ = self._live.pop(req.id)
        band = self._bands[prio]
        band.live -= 1
        if self._rr:
            tenant = req.tenant or DEFAULT_FLOW
            band.flow_live[tenant] -= 1
            if band.flow_live[tenant] == 0:
                band.active.remove(tenant)
        dead = band.entries - band.live
        if dead > _COMPACT_MIN and dead > band.live:
            self._compact(band)
        self._maybe_compact_heap()

    def _maybe_compact_heap(self) -> None:
        heap = self._heap
        if len(heap) > 2 * len(self._live) + _COMPACT_MIN:
            heap[:] = [e for e in heap if self._is_live(e[1], e[2])]   # in place: expire() holds it
            heapq.heapify(heap)

    def _compact(self, band: _Band) -> None:
        if self._rr:
            for tenant in list(band.flows):
                flow = self._filtered(band.flows[tenant])
                if flow:
                    band.flows[tenant] = flow
                else:
                    del band.flows[tenant]
                    del band.flow_live[tenant]
        else:
            band.queue = self._filtered(band.queue)
        band.entries = band.live

    def _filtered(self, queue) -> deque | list:
        """The queue's live entries, in the same order (a valid heap for EDF)."""
        kept = [e for e in queue if self._is_live(e[1], e[2])]
        if self._edf:
            heapq.heapify(kept)
            return kept
        return deque(kept)

    def _pop(self, band: _Band):
        """Pop the next live request of a band with band.live > 0."""
        live = self._is_live
        if self._rr:
            active = band.active
            j = 0 if band.last is None else bisect_right(active, band.last)
            tenant = active[j if j < len(active) else 0]
            flow = band.flows[tenant]
            band.last = tenant
        else:
            flow = band.queue
        pop = heapq.heappop if self._edf else deque.popleft
        while True:
            _, seq, req = pop(flow)
            band.entries -= 1
            if live(seq, req):
                break
        self._live.pop(req.id)
        band.live -= 1
        if self._rr:
            band.flow_live[tenant] -= 1
            if band.flow_live[tenant] == 0:
                active.remove(tenant)
        return req

    def _gc_bands(self, now: int) -> None:
        gone = [p for p in self._order
                if self._bands[p].live == 0 and now - self._bands[p].touched >= self.band_gc_us]
        for p in gone:
            del self._bands[p]
            self._order.remove(p)
        if gone:
            self._desc = self._order[::-1]

    def _ceiling(self, i: int, prio: int, prios: list[int]) -> float:
        kind = self._limits["policy"]
        if kind == "static":
            return self._limits["ceiling"]
        if kind == "per-band":
            return self._limits["ceilings"].get(prio, 1.0)
        hi, lo = self._limits["max_ceiling"], self._limits["min_ceiling"]
        nb = len(prios)
        if nb <= 1:
            return hi
        if self._limits["spacing"] == "priority":
            top, bottom = prios[0], prios[-1]
            frac = (top - prio) / (top - bottom)
        else:
            frac = i / (nb - 1)
        return hi - frac * (hi - lo)


def _parse_usage_limits(spec: dict | None) -> dict:
    field = "gateway.flow_control.usage_limits"
    if spec is None:
        return {"policy": "static", "ceiling": 1.0}
    if not isinstance(spec, dict):
        raise ConfigError(field, f"must be a mapping, got {type(spec).__name__}")
    kind = spec.get("policy", "static")
    if kind not in USAGE_LIMIT_POLICIES:
        raise ConfigError(f"{field}.policy",
                          f"unknown usage-limit policy {kind!r}; allowed: {', '.join(USAGE_LIMIT_POLICIES)}")
    allowed = {"static": ("ceiling",), "priority-holdback": ("min_ceiling", "max_ceiling", "spacing"),
               "per-band": ("ceilings",), "soft-reflective-ceiling": ()}[kind]
    for key in spec:
        if key != "policy" and key not in allowed:
            raise ConfigError(f"{field}.{key}",
                              f"unknown parameter for {kind!r}; allowed: {', '.join(allowed) or 'none'}")

    def num(key: str, default=None) -> float:
        v = spec.get(key, default)
        if v is None:
            raise ConfigError(f"{field}.{key}", f"is required for {kind!r}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ConfigError(f"{field}.{key}", f"must be a number >= 0, got {v!r}")
        return float(v)

    if kind == "static":
        return {"policy": kind, "ceiling": num("ceiling", 1.0)}
    if kind == "soft-reflective-ceiling":
        return {"policy": kind}
    if kind == "per-band":
        raw = spec.get("ceilings", {})
        if not isinstance(raw, dict):
            raise ConfigError(f"{field}.ceilings", "must be a mapping priority -> ceiling")
        ceilings = {}
        for k, v in raw.items():
            if isinstance(k, bool) or not isinstance(k, int):
                raise ConfigError(f"{field}.ceilings", f"keys must be integer priorities, got {k!r}")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"{field}.ceilings.{k}", f"must be a number >= 0, got {v!r}")
            ceilings[k] = float(v)
        return {"policy": kind, "ceilings": ceilings}
    hi = num("max_ceiling", 1.0)
    lo = num("min_ceiling")
    if lo > hi:
        raise ConfigError(f"{field}.min_ceiling", f"must be <= max_ceiling ({hi}), got {lo}")
    spacing = spec.get("spacing", "rank")
    if spacing not in ("rank", "priority"):
        raise ConfigError(f"{field}.spacing", f"unknown spacing {spacing!r}; allowed: rank, priority")
    return {"policy": kind, "min_ceiling": lo, "max_ceiling": hi, "spacing": spacing}


__all__ = ["FlowControl", "FAIRNESS_POLICIES", "ORDERING_POLICIES", "USAGE_LIMIT_POLICIES", "DEFAULT_FLOW"]
