"""KV transfers from prefill to decode pods (NIXL RDMA reads in llm-d).

A transfer of B bytes takes base_latency + B / bandwidth when it has its link to itself.
Transfers that share a link (the prefill pod's NIC) share its bandwidth equally (processor
sharing), so two concurrent transfers each progress at half speed.
"""
from __future__ import annotations

from ..core import P_TRANSFER


class Link:
    """One NIC: active transfers share `bandwidth` bytes/µs equally."""

    __slots__ = ("bw", "active", "last", "gen")

    def __init__(self, bandwidth_bytes_per_us: float):
        self.bw = bandwidth_bytes_per_us
        self.active: dict[int, list] = {}    # transfer id -> [remaining bytes, payload]
        self.last = 0
        self.gen = 0

    def advance(self, now: int) -> None:
        n = len(self.active)
        if n and now > self.last:
            done = (now - self.last) * self.bw / n
            for item in self.active.values():
                item[0] -= done
        self.last = now

    def next_finish(self, now: int) -> int | None:
        n = len(self.active)
        if not n:
            return None
        least = min(item[0] for item in self.active.values())
        return now + max(0, int(-(-least * n // self.bw)))


class Transfers:
    """All KV transfers of a cluster; `on_done(payload, now)` fires when one completes."""

    def __init__(self, loop, bandwidth_bytes_per_us: float, base_latency_us: int, contention: bool, on_done):
        self.loop = loop
        self.bw = bandwidth_bytes_per_us
        self.base = base_latency_us
        self.contention = contention
        self.on_done = on_done
        self.links: dict[object, Link] = {}
        self._id = 0
        self.started = 0
        self.active = 0                 # transfers in flight (all links)
        self.peak_concurrent = 0
        self.durations_us: list[int] = []   # of completed transfers only
        self._cancelled: set = set()          # payloads cancelled in their final base-latency wait

    def duration_alone_us(self, nbytes: int) -> int:
        return self.base + max(1, int(-(-nbytes // self.bw)))

    def start(self, link_key, nbytes: int, payload, now: int) -> None:
        self.started += 1
        self.active += 1
        self.peak_concurrent = max(self.peak_concurrent, self.active)
        if not self.contention:
            self.loop.at(now + self.duration_alone_us(nbytes), P_TRANSFER, self._finish_alone, (payload, now))
            return
        link = self.links.get(link_key)
        if link is None:
            link = self.links[link_key] = Link(self.bw)
        link.advance(now)
        self._id += 1
        link.active[self._id] = [float(max(1, nbytes)), (payload, now)]
        self._arm(link, now)

    def cancel(self, link_key, payload, now: int) -> None:
        """Abandon the transfer of `payload` (its client gave up): it frees its share of the
        link at once, never completes and is not counted among the transfers."""
        self.active -= 1
        link = self.links.get(link_key) if self.contention else None
        if link is not None:
            for k, item in link.active.items():
                if item[1][0] is payload:
                    link.advance(now)
                    del link.active[k]
                    self._arm(link, now)
                    return
        self._cancelled.add(payload)        # its completion event is already on the heap

    def _finish_alone(self, arg, now: int) -> None:
        payload, t0 = arg
        if payload in self._cancelled:
            self._cancelled.remove(payload)
            return
        self.active -= 1
        self.durations_us.append(now - t0)
        self.on_done(payload, now)

    def _arm(self, link: Link, now: int) -> None:
        link.gen += 1
        t = link.next_finish(now)
        if t is not None:
            self.loop.at(t, P_TRANSFER, self._tick, (link, link.gen))

    def _tick(self, arg, now: int) -> None:
        link, gen = arg
        if gen != link.gen:
            return
        link.advance(now)
        done = [k for k, item in link.active.items() if item[0] <= 1e-3]
        for k in done:
            _, (payload, t0) = link.active.pop(k)
            # the fixed latency (setup, notification) comes on top of the shared byte stream
            self.loop.at(now + self.base, P_TRANSFER, self._finish_alone, (payload, t0))
        self._arm(link, now)
