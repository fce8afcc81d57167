"""Client deadlines with one pending event, not one per request.

Requests with the same timeout (a client's) expire in arrival order, so each timeout keeps a FIFO queue, and
a single event waits at the earliest deadline of a request still in the system. Requests that
finished are skipped when the timer is re-armed, so a run in which nothing times out costs about
one event per timeout period. Every expiry still runs as its own event at (deadline, P_TIMEOUT),
in arrival order among equal deadlines, exactly as if each request had scheduled its own.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from .core import P_TIMEOUT
from .engine.request import FINAL_STATES, Request


class Deadlines:
    def __init__(self, loop, expire: Callable[[Request, int], None]):
        self.loop = loop
        self.expire = expire                      # called with a live request at its deadline
        self.queues: dict[int, deque] = {}        # timeout (µs) -> (deadline, order, request)
        self.order = 0
        self.armed = -1                           # deadline the pending event waits for; -1: none
        self.gen = 0                              # generation of the pending event

    def add(self, r: Request, now: int) -> None:
        timeout = r.deadline - now
        q = self.queues.get(timeout)
        if q is None:
            q = self.queues[timeout] = deque()
        self.order += 1
        q.append((r.deadline, self.order, r))
        if self.armed < 0 or r.deadline < self.armed:
            self._arm(r.deadline)

    def _arm(self, t: int) -> None:
        self.gen += 1
        self.armed = t
        self.loop.at(t, P_TIMEOUT, self._fire, self.gen)

    def _head(self):
        """The queue whose live head expires first (dropping finished heads), or None."""
        best = None
        empty = []
        for timeout, q in self.queues.items():
            while q and q[0][2].state in FINAL_STATES:
                q.popleft()
            if not q:
                empty.append(timeout)
            elif best is None or q[0][:2] < best[0][:2]:
                best = q
        for timeout in empty:
            del self.queues[timeout]
        return best

    def _fire(self, gen: int, now: int) -> None:
        if gen != self.gen:
            return                                # superseded by an earlier deadline
        self.armed = -1
        q = self._head()
        if q is not None and q[0][0] <= now:
            self.expire(q.popleft()[2], now)
            q = self._head()
        if q is not None:
            self._arm(q[0][0])
