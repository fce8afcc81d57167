"""Serving pools on GPU nodes: instance lifecycle, autoscaling ticks and cost.

A pool owns a fixed set of instance slots (its maximum size). A slot is off, starting
(waiting for a node to be provisioned, then loading the model and warming up), active
(routable), or draining (not routable; its in-flight requests finish, then it stops). Instances
of `tp` GPUs are packed onto nodes of `gpus_per_node` GPUs; a node is billed from the moment it
is requested until it is released, which happens when it holds no instance and the pool keeps
more nodes than its minimum needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core import P_LOADED, P_NODE, P_TICK
from ..slots import Autoscaler
from .host import ClusterHost

OFF, STARTING, ACTIVE, DRAINING = "off", "starting", "active", "draining"


@dataclass
class PoolConfig:
    name: str
    role: str
    slots: list[int]                     # global instance indices owned by the pool
    initial: int
    min: int
    max: int
    tp: int
    gpus_per_node: int
    price_per_gpu_hour: float
    provisioning_delay: object = None    # callable(rng) -> µs
    load_time: object = None             # callable(rng) -> µs
    autoscaler: Autoscaler | None = None  # None = a fixed-size pool
    external: bool = False               # the autoscaler slot is an external agent's
    extra: dict = field(default_factory=dict)


@dataclass
class Node:
    requested: int                       # µs: billing starts
    ready_at: int
    free: int
    released: int = -1


@dataclass
class PoolView:
    """What an autoscaler sees at a tick."""
    name: str
    replicas: int                        # desired replicas so far (active + starting)
    active: int
    starting: int
    draining: int
    min: int
    max: int
    pods: list                           # PodSignals of active instances
    gateway_queue: int                   # requests waiting in the gateway for this pool
    now: int
    idle_since: int                      # µs since which the pool had no request in flight (-1: busy)
    arrivals: int = 0                    # requests that arrived at the gateway so far (all pools)
    completions: int = 0                 # requests completed so far (all pools)


class Pool:
    def __init__(self, cfg: PoolConfig, sim: ClusterHost, rng):
        self.cfg = cfg
        self.sim = sim
        self.loop = sim.loop
        self.rng = rng
        self.state = {i: OFF for i in cfg.slots}
        self.node_of: dict[int, Node] = {}
        self.nodes: list[Node] = []
        self.started_at: dict[int, int] = {}
        self.scale_events: list[tuple[int, int]] = []      # (time µs, desired replicas)
        self.idle_since = -1
        self.peak_gpus = 0
        for i in cfg.slots[: cfg.initial]:
            node = self._node_with_room(0, provision_now=True, ready_at=0)
            node.free -= cfg.tp
            self.node_of[i] = node
            self.state[i] = ACTIVE
        self._set_available()
        if cfg.autoscaler is not None:
            self.loop.at(0, P_TICK, self._tick)

    # ---- views --------------------------------------------------------------------------
    def count(self, st: str) -> int:
        return sum(1 for s in self.state.values() if s == st)

    def replicas(self) -> int:
        return self.count(ACTIVE) + self.count(STARTING)

    def view(self, now: int) -> PoolView:
        gw = self.sim.gateway
        pods = [gw.pods[i] for i in self.cfg.slots if self.state[i] == ACTIVE]
        busy = any(p.in_flight for p in pods) or (gw.queued() > 0)
        if busy:
            self.idle_since = -1
        else:
            # idle since the later of: the first idle tick, the latest arrival at the gateway
            self.idle_since = max(now if self.idle_since < 0 else self.idle_since, self.sim.last_arrival)
        return PoolView(self.cfg.name, self.replicas(), self.count(ACTIVE), self.count(STARTING),
                        self.count(DRAINING), self.cfg.min, self.cfg.max, pods, gw.queued(), now, self.idle_since,
                        self.sim.injected, self.sim.completed_requests())

    def gpus(self) -> int:
        return sum(self.cfg.gpus_per_node for n in self.nodes if n.released < 0)

    def gpu_hours(self, now: int) -> float:
        us = sum(((n.released if n.released >= 0 else now) - n.requested) * self.cfg.gpus_per_node for n in self.nodes)
        return us / 3.6e9

    def dollars(self, now: int) -> float:
        return self.gpu_hours(now) * self.cfg.price_per_gpu_hour

    # ---- scaling ------------------------------------------------------------------------
    def _tick(self, _arg, now: int) -> None:
        if self.sim.paused:             # the scaling decision reads fresh scrapes and may change the pool
            self.sim.wake(now)
        auto = self.cfg.autoscaler
        if self.cfg.external or "autoscaler" in self.sim.external:
            self.sim.autoscaler_decision(self, now)
        else:
            self.scale_to(auto.desired(self.view(now), now), now)
        if self.sim.active():
            self.loop.at(now + max(1, auto.interval_us), P_TICK, self._tick)   # never the same instant again

    def scale_to(self, n: int, now: int) -> None:
        n = max(self.cfg.min, min(self.cfg.max, int(n)))
        cur = self.replicas()
        if n == cur:
            return
        self.scale_events.append((now, n))
        if n > cur:
            for _ in range(n - cur):
                self._start_one(now)
        else:
            for _ in range(cur - n):
                self._stop_one(now)

    def ensure_one(self, now: int) -> None:
        """Scale from zero: a request is waiting and nothing serves or is starting."""
        if self.replicas() == 0 and self.cfg.max > 0:
            self.scale_to(1, now)

    def _start_one(self, now: int) -> None:
        # Reuse a draining instance first (it is warm), else start an off slot.
        for i in reversed(self.cfg.slots):
            if self.state[i] == DRAINING:
                self.state[i] = ACTIVE
                self._set_available()
                return
        i = next(i for i in self.cfg.slots if self.state[i] == OFF)
        node = self._node_with_room(now)
        node.free -= self.cfg.tp
        self.node_of[i] = node
        self.state[i] = STARTING
        self.started_at[i] = now
        ready = max(now, node.ready_at) + self._sample(self.cfg.load_time)
        self.loop.at(ready, P_LOADED, self._loaded, (i, now))

    def _stop_one(self, now: int) -> None:
        # Cancel a starting instance first (newest), else drain the newest active one.
        for st in (STARTING, ACTIVE):
            for i in reversed(self.cfg.slots):
                if self.state[i] == st:
                    if st == STARTING:
                        self.state[i] = OFF
                        self._free_slot(i, now)
                    else:
                        self.state[i] = DRAINING
                        self._set_available()
                        self.sim.instance_draining(i, now)
                    return

    def _loaded(self, arg, now: int) -> None:
        i, t0 = arg
        if self.state[i] != STARTING or self.started_at.get(i) != t0:
            return
        if self.sim.paused:
            self.sim.wake(now)
        self.state[i] = ACTIVE
        self.sim.instance_started(i, now)
        self._set_available()

    def drained(self, i: int, now: int) -> None:
        """A draining instance has finished its last request."""
        if self.state[i] == DRAINING:
            self.state[i] = OFF
            self._free_slot(i, now)
            self.sim.instance_stopped(i, now)

    # ---- nodes --------------------------------------------------------------------------
    def _node_with_room(self, now: int, provision_now: bool = False, ready_at: int | None = None) -> Node:
        for n in self.nodes:
            if n.released < 0 and n.free >= self.cfg.tp:
                return n
        delay = 0 if provision_now else self._sample(self.cfg.provisioning_delay)
        node = Node(requested=now, ready_at=now + delay if ready_at is None else ready_at,
                    free=self.cfg.gpus_per_node)
        self.nodes.append(node)
        self.peak_gpus = max(self.peak_gpus, self.gpus())
        if delay:
            self.loop.at(node.ready_at, P_NODE, self._noop)
        return node

    def _noop(self, _arg, now: int) -> None:
        """Marks a node becoming ready on the clock (nothing else happens)."""

    def _free_slot(self, i: int, now: int) -> None:
        node = self.node_of.pop(i)
        node.free += self.cfg.tp
        keep = -(-self.cfg.min * self.cfg.tp // self.cfg.gpus_per_node)
        live = [n for n in self.nodes if n.released < 0]
        if node.free == self.cfg.gpus_per_node and len(live) > keep:
            node.released = now

    def _sample(self, dist) -> int:
        return int(dist(self.rng)) if dist is not None else 0

    def _set_available(self) -> None:
        pods = self.sim.gateway.pods
        for i in self.cfg.slots:
            pods[i].available = self.state[i] == ACTIVE
