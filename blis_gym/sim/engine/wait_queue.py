"""vLLM v1's waiting queue (the scheduler's `waiting`): FIFO with preempted requests put back at
the front under `--scheduling-policy fcfs`, a heap under `priority` (most important first, then
arrival) and `sjf` (this simulator's shortest-prompt-first)."""
from __future__ import annotations

import heapq
from collections import deque

from .request import Request, State


class WaitQueue:
    """The waiting queue: FIFO with preempted requests at the front (fcfs), or ordered by a
    key (priority: most important first, then arrival; sjf: shortest prompt first).
    Entries whose request left (timed out) are dropped lazily when they reach the head."""

    def __init__(self, policy: str):
        self.policy = policy
        self.fifo: deque[Request] = deque()
        self.heap: list[tuple] = []
        self.n = 0
        self._seq = 0

    def _key(self, r: Request) -> tuple:
        if self.policy == "priority":
            return (-r.priority, r.arrival, r.id)
        return (r.target, r.arrival, r.id)

    def push(self, r: Request, front: bool = False) -> None:
        self.n += 1
        if self.policy == "fcfs":
            if front:
                self.fifo.appendleft(r)
            else:
                self.fifo.append(r)
        else:
            heapq.heappush(self.heap, (self._key(r), r))

    def head(self, owner) -> Request | None:
        if self.policy == "fcfs":
            q = self.fifo
            while q:
                r = q[0]
                if r.state is State.QUEUED and r.instance is owner:
                    return r
                q.popleft()
        else:
            h = self.heap
            while h:
                r = h[0][1]
                if r.state is State.QUEUED and r.instance is owner:
                    return r
                heapq.heappop(h)
        return None

    def pop(self) -> None:
        self.n -= 1
        if self.policy == "fcfs":
            self.fifo.popleft()
        else:
            heapq.heappop(self.heap)

    def removed(self) -> None:
        """A queued request left without being popped (its entry is skipped later)."""
        self.n -= 1

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        items = self.fifo if self.policy == "fcfs" else (r for _, r in sorted(self.heap, key=lambda e: e[0]))
        return (r for r in items if r.state is State.QUEUED)
