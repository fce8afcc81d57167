"""Clients and the request source: requests are generated lazily, in arrival order.

Each client draws its inter-arrival gaps and token lengths from its own named streams
(`arrivals/<client>`, `lengths/<client>`), so adding a client or changing a policy never
shifts another client's requests.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..engine.request import Content, Request

# SLO classes and their llm-d priorities (higher is more important; sheddable iff < 0).
PRIORITY = {"critical": 4, "standard": 3, "batch": -1, "sheddable": -2, "background": -3}


@dataclass
class Client:
    name: str
    arrival: object                   # an arrival process (gaps_us)
    input: object                     # length distribution of the prompt (after any prefix)
    output: object                    # length distribution of the output
    rate_fraction: float = 1.0
    slo_class: str = "standard"
    tenant: str = ""
    prefix_group: str = ""
    prefix_tokens: int = 0
    timeout_us: int = 0               # client deadline after arrival; 0 = none


@dataclass
class Workload:
    clients: list[Client]
    num_requests: int = 0             # 0 = until the horizon
    horizon_us: int = 0               # 0 = until num_requests
    priorities: dict = field(default_factory=lambda: dict(PRIORITY))


class _ClientStream:
    def __init__(self, client: Client, index: int, streams, prefix: Content | None):
        self.c = client
        self.index = index
        self.rng_arr = streams.get(f"arrivals/{client.name}")
        self.rng_len = streams.get(f"lengths/{client.name}")
        self.prefix = prefix
        self.t = 0
        self._buf: list = []
        self._i = 0

    def next(self):
        """Next (arrival_us, input_tokens, output_tokens) of this client."""
        if self._i >= len(self._buf):
            n = 1024
            gaps = self.c.arrival.gaps_us(self.rng_arr, n)
            ins = self.c.input.sample(self.rng_len, n)
            outs = self.c.output.sample(self.rng_len, n)
            times = self.t + gaps.cumsum()
            self.t = int(times[-1])
            self._buf = list(zip(times.tolist(), ins.tolist(), outs.tolist()))
            self._i = 0
        item = self._buf[self._i]
        self._i += 1
        return item


class WorkloadSource:
    """Yields the workload's requests in arrival order (ties: client order)."""

    def __init__(self, workload: Workload, streams):
        self.w = workload
        self.count = 0
        groups: dict[str, Content] = {}
        self._heap: list = []
        for i, c in enumerate(workload.clients):
            prefix = None
            if c.prefix_group:
                prefix = groups.get(c.prefix_group)
                if prefix is None:
                    key = -(len(groups) + 1)
                    prefix = groups[c.prefix_group] = Content(None, ((key, c.prefix_tokens),), shared=True)
            s = _ClientStream(c, i, streams, prefix)
            t, a, b = s.next()
            self._heap.append((t, i, a, b, s))
        heapq.heapify(self._heap)

    def exhausted(self) -> bool:
        w = self.w
        if w.num_requests and self.count >= w.num_requests:
            return True
        if not self._heap:
            return True
        return bool(w.horizon_us) and self._heap[0][0] > w.horizon_us

    def finished(self, req: Request, now: int, completed: bool) -> list[Request]:
        """A request ended (completed, or not). Returns follow-up requests (next session turns,
        closed-loop users' next requests), each with its arrival time set."""
        return []

    def next(self) -> Request | None:
        if self.exhausted():
            return None
        t, i, n_in, n_out, s = self._heap[0]
        nt, na, nb = s.next()
        heapq.heapreplace(self._heap, (nt, i, na, nb, s))
        rid = self.count
        self.count += 1
        c = s.c
        n_in = max(1, int(n_in))
        n_out = max(1, int(n_out))
        content = Content(s.prefix, ((rid * 4 + 1, n_in),))
        req = Request(rid, int(t), content.length, n_out, content, slo_class=c.slo_class,
                      priority=self.w.priorities.get(c.slo_class, 0), tenant=c.tenant, client=c.name,
                      deadline=int(t) + c.timeout_us if c.timeout_us else 0)
        return req
