"""The discrete-event core: an integer-microsecond clock, one event heap, named random streams.

Events are ordered by (time, priority, sequence). Lower priority values run first at the same
time; the sequence number keeps insertion order among equals, so the order never depends on
anything but the simulation itself.
"""
from __future__ import annotations

import heapq
import zlib
from typing import Any, Callable

import numpy as np

# Event priorities at equal time (lower runs first). A request that arrives at the same
# microsecond as a step boundary joins that step; a completion beats a same-time timeout.
P_NODE = -2
P_LOADED = -1
P_ARRIVAL = 0
P_ADMIT = 1
P_ROUTE = 2
P_ENQUEUE = 3
P_STEP = 4
P_TRANSFER = 5
P_TICK = 7
P_TIMEOUT = 8
P_SAMPLE = 9


class EventLoop:
    """A min-heap of (time_us, priority, seq, handler, arg); `now` never goes back."""

    __slots__ = ("heap", "now", "_seq", "events", "halt", "prio")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, int, Callable[[Any, int], None], Any]] = []
        self.now = 0
        self._seq = 0
        self.events = 0
        self.halt = False           # set by a handler to stop the loop after it (a decision point)
        self.prio = 0               # priority of the event being processed

    def at(self, time_us: int, priority: int, handler: Callable[[Any, int], None], arg: Any = None) -> None:
        if time_us < self.now:
            raise AssertionError(f"event scheduled in the past: {time_us} < {self.now}")
        self._seq += 1
        heapq.heappush(self.heap, (time_us, priority, self._seq, handler, arg))

    def run(self, until_us: int | None = None, max_events: int = 0) -> bool:
        """Process events in order until the heap is empty, the next event lies past
        `until_us`, `max_events` have run, or a handler set `halt`. Returns True if events remain
        within the limit."""
        heap = self.heap
        pop = heapq.heappop
        limit = until_us if until_us is not None else 1 << 62
        budget = max_events if max_events > 0 else 1 << 62
        n = 0
        while heap and n < budget:
            if heap[0][0] > limit:
                break
            t, prio, _, handler, arg = pop(heap)
            self.now = t
            self.prio = prio
            handler(arg, t)
            n += 1
            if self.halt:
                break
        self.events += n
        return bool(heap) and heap[0][0] <= limit

    def peek_time(self) -> int | None:
        return self.heap[0][0] if self.heap else None


def stream_seed(seed: int, name: str) -> np.random.SeedSequence:
    """The seed sequence of the stream `name`: independent of every other name, stable across
    processes and Python hash seeds (crc32, not hash())."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(name.encode()),))


class Streams:
    """Named, independent random streams spawned from one seed. Asking for a stream by name
    never shifts another stream, so changing a policy leaves the arrivals untouched."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._streams: dict[str, np.random.Generator] = {}

    def get(self, name: str) -> np.random.Generator:
        g = self._streams.get(name)
        if g is None:
            g = self._streams[name] = np.random.Generator(np.random.PCG64(stream_seed(self.seed, name)))
        return g
