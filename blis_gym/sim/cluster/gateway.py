"""The llm-d data plane in front of the instances: metrics scraper, gateway admission, the
flow-control queue and the EPP router.

Admission and routing read only `PodSignals`: scraped snapshots (every `scrape_interval_us`,
stale on purpose) plus the router's own in-flight counts. They never read engine state,
except the precise prefix scorer, which in llm-d reads the instances' KV events.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core import P_ROUTE, P_TICK
from ..engine import Request, State
from .signals import HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS, REASON_TTL_EXPIRED, HTTP_TOO_MANY, PodSignals


@dataclass
class GatewayConfig:
    admission: object                       # AdmissionPolicy (blis_gym.policies.admission)
    router: object                          # Router (blis_gym.policies.routing)
    flow_control: object | None = None      # FlowControl, or None (llm-d's default: off)
    scrape_interval_us: int = 50_000        # 0 = oracle signals (read at every decision)
    dispatch_tick_us: int = 1_000           # flow-control dispatch cycle
    saturation: object | None = None        # callable(pods, now) -> float, for flow-control dispatch
    trace_decisions: bool = False
    extra: dict = field(default_factory=dict)


class RouterContext:
    """What a router may ask beyond the signals: the time, its random stream, and (for the
    precise prefix scorer) the instances' real prefix-cache contents."""

    __slots__ = ("now", "rng", "instances")

    def __init__(self, rng, instances):
        self.now = 0
        self.rng = rng
        self.instances = instances

    def cached_blocks(self, req: Request, pod_index: int) -> int:
        return self.instances[pod_index].kv.cached_prefix_blocks(req)


class Gateway:
    def __init__(self, sim, cfg: GatewayConfig):
        self.sim = sim
        self.loop = sim.loop
        self.cfg = cfg
        self.instances = sim.instances
        self.pods = [PodSignals(i, inst.name, num_kv_blocks=inst.kv.total) for i, inst in enumerate(self.instances)]
        self.admission = cfg.admission
        self.router = cfg.router
        self.fc = cfg.flow_control
        self.rng_admit = sim.streams.get("admission")
        self.ctx = RouterContext(sim.streams.get("router"), self.instances)
        self.index = {inst: i for i, inst in enumerate(self.instances)}
        self.rejections: dict[str, int] = {}
        self.decisions: list[tuple] = [] if cfg.trace_decisions else None
        self._tick_pending = False
        self._ttl_at = -1
        self.oracle = cfg.scrape_interval_us <= 0
        if not self.oracle:
            self.loop.at(0, P_TICK, self._scrape)

    # ---- signals ----------------------------------------------------------------------
    def _scrape(self, _arg, now: int) -> None:
        self._refresh(now)
        if self.sim.active():
            self.loop.at(now + self.cfg.scrape_interval_us, P_TICK, self._scrape)

    def _refresh(self, now: int) -> None:
        for p, inst in zip(self.pods, self.instances):
            p.waiting = inst.num_waiting()
            p.running = inst.num_running()
            p.kv_usage = inst.kv.usage()
            p.scraped_at = now

    def signals(self, now: int) -> list[PodSignals]:
        if self.oracle:
            self._refresh(now)
        return self.pods

    # ---- the request path -------------------------------------------------------------
    def arrive(self, r: Request, now: int) -> None:
        pods = self.signals(now)
        if self.fc is None:
            d = self.admission.admit(r, pods, now, self.rng_admit)
            if not d.admit:
                self.reject(r, now, d.status, d.reason)
                return
            self.route(r, now)
            return
        d = self.fc.enqueue(r, now, no_endpoints=not any(p.available for p in pods))
        if not d.admit:
            self.reject(r, now, d.status, d.reason)
            return
        r.state = State.GATEWAY
        self._dispatch(now)
        self._arm(now)

    def route(self, r: Request, now: int) -> None:
        pods = self.signals(now)
        ctx = self.ctx
        ctx.now = now
        if self.decisions is not None:
            self.decisions.append((now, r.id, self.router.scores(r, pods, ctx)))
        i = self.router.pick(r, pods, ctx)
        if i is None:
            self.reject(r, now, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS)
            return
        self.send(r, i, now)

    def send(self, r: Request, i: int, now: int) -> None:
        """Dispatch to pod i (the router's or an agent's choice); updates router state."""
        self.router.observe(r, i, self.ctx)
        p = self.pods[i]
        p.in_flight += 1
        p.in_flight_tokens += r.input_len
        if self.decisions is not None:
            t, rid, scores = self.decisions[-1]
            self.decisions[-1] = (t, rid, scores, i)
        self.sim.dispatch(r, self.instances[i], now)

    def reject(self, r: Request, now: int, status: int, reason: str) -> None:
        key = f"{status} {reason}"
        self.rejections[key] = self.rejections.get(key, 0) + 1
        r.reason = key
        self.sim.reject(r, now)

    # ---- feedback from instances ------------------------------------------------------
    def first_token(self, r: Request) -> None:
        self.pods[self.index[r.instance]].in_flight_tokens -= r.input_len

    def finished(self, r: Request) -> None:
        """A routed request reached a final state: release the router's in-flight counts."""
        p = self.pods[self.index[r.instance]]
        p.in_flight -= 1
        if r.first_token < 0:
            p.in_flight_tokens -= r.input_len
        self.router.release(r, p.index)

    def withdraw(self, r: Request) -> None:
        """A request still in the flow-control queue gave up (client deadline)."""
        self.fc.remove(r)

    # ---- flow control -----------------------------------------------------------------
    def _dispatch(self, now: int) -> None:
        fc = self.fc
        while len(fc):
            sat = self.cfg.saturation(self.signals(now), now)
            r = fc.dispatch(sat, now)
            if r is None:
                return
            r.state = State.CREATED
            self.loop.at(now, P_ROUTE, self._route_event, r)
            return      # one request per cycle

    def _route_event(self, r: Request, now: int) -> None:
        if r.state is State.CREATED:
            self.route(r, now)

    def _arm(self, now: int) -> None:
        fc = self.fc
        if len(fc) and not self._tick_pending:
            self._tick_pending = True
            self.loop.at(now + self.cfg.dispatch_tick_us, P_TICK, self._tick)
        nxt = fc.next_expiry()
        if nxt is not None and (self._ttl_at < now or nxt < self._ttl_at):
            self._ttl_at = nxt
            self.loop.at(max(nxt, now), P_TICK, self._expire)

    def _tick(self, _arg, now: int) -> None:
        self._tick_pending = False
        self._dispatch(now)
        self._arm(now)

    def _expire(self, _arg, now: int) -> None:
        if now < self._ttl_at:
            return
        self._ttl_at = -1
        for r in self.fc.expire(now):
            self.reject(r, now, HTTP_TOO_MANY, REASON_TTL_EXPIRED)
        self._arm(now)

    def queued(self) -> int:
        return len(self.fc) if self.fc is not None else 0
