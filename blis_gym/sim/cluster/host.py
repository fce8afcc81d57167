"""What the cluster layer (gateway, P/D state machine, pools) calls back on the simulation.

The `Simulation` satisfies `ClusterHost` (and the engines' `EngineSink`); the gateway, the P/D
state machine and the pools are typed with it, so the calls that go back up a layer are listed
here and nowhere else.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..core import EventLoop, Streams
    from ..engine import Instance, Request, State
    from .signals import Pending, PodSignals


class GatewayView(Protocol):
    """What a pool reads of the gateway (`gateway.Gateway`): its pods and its queue."""
    pods: list[PodSignals]

    def queued(self) -> int: ...


class ClusterHost(Protocol):
    """The simulation as the gateway, the P/D state machine and the pools see it."""
    loop: EventLoop
    streams: Streams
    instances: list[Instance]
    external: frozenset[str]          # the decision slots bound to an agent
    gateway: GatewayView | None
    zero_pools: list                  # pools (`pools.Pool`) that may scale to zero
    last_arrival: int                 # µs of the latest arrival
    paused: list                      # periodic observers paused while the system is empty
    final_hooks: list                 # callables(r, state, now) run on every final state
    injected: int                     # requests that arrived so far

    def active(self) -> bool:
        """Requests remain in the system or are still to come (periodic events keep going)."""

    def busy(self) -> bool:
        """Requests are in the system."""

    def wake(self, now: int) -> None:
        """Something may change at `now`: paused periodic observers catch up and resume."""

    # the request lifecycle
    def dispatch(self, r: Request, inst: Instance, now: int) -> None: ...

    def reject(self, r: Request, now: int) -> None: ...

    def fail(self, r: Request, now: int, state: State) -> None: ...

    def evict(self, r: Request, now: int) -> None:
        """Abort r (dispatched, not finished) wherever it is; it ends EVICTED."""

    # decision points bound to an agent
    def hand_over(self, pending: Pending) -> None: ...

    def autoscaler_decision(self, pool, now: int) -> None:
        """Hand `pool` (a `pools.Pool`) to the agent bound to the autoscaler slot."""

    # pods and pools
    def pod_idle(self, i: int, now: int) -> None:
        """Pod i has nothing in flight (a draining pod may stop)."""

    def scale_from_zero(self, now: int) -> None: ...

    def completed_requests(self) -> int: ...

    def instance_started(self, i: int, now: int) -> None: ...

    def instance_draining(self, i: int, now: int) -> None: ...

    def instance_stopped(self, i: int, now: int) -> None: ...
