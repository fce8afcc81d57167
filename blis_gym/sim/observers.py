"""Periodic observers (the gateway's metrics scrape, the time-series sampling) that pause while
the system is empty.

With no request anywhere in the system, nothing they observe can change (engines idle, queues
empty, KV use constant), so ticking every interval through a long idle stretch (closed-loop
users thinking for hours) would cost wall time and repeat identical rows. An observer pauses
after `patience` ticks in a row that find the system empty (the scrape at once; the time series
keeps IDLE_ROWS rows of each idle stretch, so short lulls are written in full). When something
happens (a request arrives, a pool
ticks, an instance comes up) the simulation wakes it before acting: it observes once at the
last tick it skipped, so the latest observation is exactly what it would have been, and resumes
on its own grid (the times it would have ticked anyway). Everything after is as if it had never
paused; the only difference is the observations skipped in between, which repeated the one
taken when it paused.
"""
from __future__ import annotations

from typing import Callable

from .core import EventLoop

IDLE_ROWS = 60      # time-series rows written of an idle stretch before its last one (a minute at 1 s)


class PausingObserver:
    """Calls `observe(t)` at t = 0, interval, 2·interval, ... while `busy()` (requests are in
    the system); after `patience` ticks in a row that are not busy it pauses until `wake(now)`;
    it stops when not `more()` (nothing is left to come). `paused` is the host's list of paused
    observers, the ones `wake` concerns."""

    __slots__ = ("loop", "interval", "priority", "observe", "busy", "more", "paused", "patience", "idle",
                 "paused_at")

    def __init__(self, loop: EventLoop, interval_us: int, priority: int, observe: Callable[[int], None],
                 busy: Callable[[], bool], more: Callable[[], bool], paused: list, patience: int = 1):
        self.loop, self.interval, self.priority = loop, interval_us, priority
        self.observe, self.busy, self.more, self.paused = observe, busy, more, paused
        self.patience = patience
        self.idle = 0                   # ticks in a row that found the system empty
        self.paused_at = -1
        loop.at(0, priority, self._tick)

    def _tick(self, _arg, now: int) -> None:
        self.observe(now)
        self.idle = 0 if self.busy() else self.idle + 1
        if not self.idle:
            self.loop.at(now + self.interval, self.priority, self._tick)
        elif self.more():
            if self.idle < self.patience:
                self.loop.at(now + self.interval, self.priority, self._tick)
            else:
                self.paused_at = now
                self.paused.append(self)

    def wake(self, now: int) -> None:
        """Something may change at `now`: observe at the last tick skipped before it, and
        resume at the first tick at or after it (a tick at `now` runs after what woke it)."""
        last = self.catch_up(now - 1)
        self.paused_at = -1
        self.loop.at(last + self.interval, self.priority, self._tick)

    def catch_up(self, until: int) -> int:
        """Observe at the last tick skipped up to `until` (inclusive), if any; that tick's time."""
        last = self.paused_at + max(0, until - self.paused_at) // self.interval * self.interval
        if last > self.paused_at:
            self.observe(last)
        return last
