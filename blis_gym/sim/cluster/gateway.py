"""The llm-d data plane in front of the instances: metrics scraper, gateway admission, the
flow-control queue and the EPP router.

Admission and routing read only `PodSignals`: scraped snapshots (every `scrape_interval_us`,
stale on purpose) plus the router's own in-flight counts. They never read engine state,
except the precise prefix scorer, which in llm-d reads the instances' KV events.
"""
from __future__ import annotations

from ..core import P_ROUTE, P_TICK
from ..engine import Request, State
from ..observers import PausingObserver
from .config import GatewayConfig
from .host import ClusterHost
from .disagg import Disaggregation
from .eviction import Eviction
from .peer_pull import PeerPull
from .signals import (HTTP_TOO_MANY, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS, REASON_TTL_EXPIRED, Pending, PodSignals,
                      int_action)


class GatewayContext:
    """The gateway's RouterContext (blis_gym.sim.slots): what a router may ask beyond the signals: the time, its random stream, and (for the
    precise prefix scorer) the instances' real prefix-cache contents."""

    __slots__ = ("now", "rng", "instances")

    def __init__(self, rng, instances):
        self.now = 0
        self.rng = rng
        self.instances = instances

    def cached_blocks(self, req: Request, pod_index: int) -> float:
        """The request's leading blocks in the pod's KV cache; with KV offload, blocks in the CPU
        tier continue the run at a lower weight (llm-d's tiered scoring)."""
        return self.instances[pod_index].lookup_prefix_tiered(req)


class Gateway:
    def __init__(self, sim: ClusterHost, cfg: GatewayConfig):
        self.sim = sim
        self.loop = sim.loop
        self.cfg = cfg
        self.instances = sim.instances
        self.pods = [PodSignals(i, inst.name, role=inst.role, num_kv_blocks=inst.kv.total)
                     for i, inst in enumerate(self.instances)]
        self.pd_mode = any(p.role == "prefill" for p in self.pods)
        self.lora_pods = [i for i, inst in enumerate(self.instances) if inst.lora is not None]
        self.single = len(self.pods) == 1 and self.pods[0].role == "both"
        self.decode_pods = [p for p in self.pods if p.role != "prefill"]
        self.admission = cfg.admission
        self.router = cfg.router
        self.fc = cfg.flow_control
        self.rng_admit = sim.streams.get("admission")
        self.ctx = GatewayContext(sim.streams.get("router"), self.instances)
        self.index = {inst: i for i, inst in enumerate(self.instances)}
        self.pd = Disaggregation(self, cfg)
        self.peer_pull = PeerPull(cfg.peer_pull, self.loop, self.pods, self.instances) if cfg.peer_pull else None
        self.eviction = None
        if cfg.eviction is not None and self.fc is not None:
            self.eviction = Eviction(cfg.eviction, sim.evict)
            sim.final_hooks.append(lambda r, state, now: self.eviction.ended(r))
        self.rejections: dict[str, int] = {}
        self.decisions: list[tuple] = [] if cfg.trace_decisions else None
        self._tick_pending = False
        self._ttl_at = -1
        self.oracle = cfg.scrape_interval_us <= 0
        if not self.oracle:
            PausingObserver(self.loop, cfg.scrape_interval_us, P_TICK, self._refresh, sim.busy, sim.active,
                            sim.paused)

    # ---- signals ----------------------------------------------------------------------
    def _refresh(self, now: int) -> None:
        for p, inst in zip(self.pods, self.instances):
            p.waiting, p.running, p.kv_usage = inst.scrape()
            p.scraped_at = now
        for i in self.lora_pods:
            p = self.pods[i]
            p.lora_running, p.lora_waiting, p.max_lora = self.instances[i].lora_info()

    def signals(self, now: int) -> list[PodSignals]:
        if self.oracle:
            self._refresh(now)
        return self.pods

    # ---- the request path -------------------------------------------------------------
    def arrive(self, r: Request, now: int) -> None:
        if self.sim.zero_pools:
            self.sim.scale_from_zero(now)
        pods = self.signals(now)
        if "admission" in self.sim.external:
            self._ask_admission(r, pods, now)
            return
        if self.fc is None:
            d = self.admission.admit(r, pods, now, self.rng_admit)
            if not d.admit:
                self.reject(r, now, d.status, d.reason)
                return
            self.route(r, now)
            return
        self._enqueue_fc(r, pods, now)

    def _enqueue_fc(self, r: Request, pods, now: int) -> None:
        d = self.fc.enqueue(r, now, no_endpoints=not any(p.available for p in pods))
        if not d.admit:
            self.reject(r, now, d.status, d.reason)
            return
        r.state = State.GATEWAY
        self._dispatch(now)
        self._arm(now)

    def _ask_admission(self, r: Request, pods, now: int) -> None:
        """Admission bound to an agent: 0 reject (429), 1 admit, 2 queue (flow control on)."""
        def resume(action):
            a = int_action(action, "admission")
            if a not in (0, 1, 2) or (a == 2 and self.fc is None):
                allowed = "0 (reject), 1 (admit), 2 (queue)" if self.fc else "0 (reject), 1 (admit)"
                raise ValueError(f"admission action must be one of {allowed}, got {action!r}")
            t = self.loop.now
            if a == 0:
                self.reject(r, t, HTTP_TOO_MANY, "rejected-by-agent")
            elif a == 1:
                self.route(r, t)
            else:
                self._enqueue_fc(r, self.signals(t), t)

        def default():
            if self.fc is not None:
                return 2
            return 1 if self.admission.admit(r, pods, now, self.rng_admit).admit else 0

        self.sim.hand_over(Pending("admission", now, r, pods, None, resume, default))

    def route(self, r: Request, now: int) -> None:
        if self.single and "router" not in self.sim.external:
            self._dispatch_to(r, 0, now)          # one pod, forever: nothing to choose
            return
        pods = self.signals(now)
        ctx = self.ctx
        ctx.now = now
        if self.pd_mode:
            pods = self.decode_pods
            if self.pd.prefill_first and not self.pd.pick_first(r):
                self.reject(r, now, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS)   # llm-d: the required prefill found no pod
                return
        if self.decisions is not None:
            self.decisions.append((now, r.id, self.router.scores(r, pods, ctx)))
        if "router" in self.sim.external:
            self._ask_router(r, pods, now)
            return
        i = self.router.pick(r, pods, ctx)
        self.apply_route(r, i, now)

    def apply_route(self, r: Request, i, now: int) -> None:
        """Carry out a routing choice: pod index `i` (on to P/D when the scenario disaggregates),
        or None, no endpoint (HTTP 503). Decision traces call it on their forks of the run."""
        if i is None:
            if self.pd_mode:
                self.pd.first_picks.pop(r.id, None)
            self.reject(r, now, HTTP_UNAVAILABLE, REASON_NO_ENDPOINTS)
            return
        if self.pd_mode:
            pd = self.pd
            if pd.prefill_first:
                pd.start_picked(r, i, now)
                return
            if "pd" in self.sim.external and pd.applies(r):
                pd.ask(r, i, now)
                return
            if pd.decide(r, i):
                pd.to_prefill(r, i, now)
                return
        self.send(r, i, now)

    def route_mask(self, pods) -> list[bool]:
        """Which pod indices the router may choose now (available, and role-compatible)."""
        mask = [False] * len(self.pods)
        for p in pods:
            if p.available:
                mask[p.index] = True
        return mask

    def _ask_router(self, r: Request, pods, now: int) -> None:
        mask = self.route_mask(pods)

        def resume(action):
            i = int_action(action, "router")
            if not 0 <= i < len(self.pods):
                raise ValueError(f"router action {action!r} out of range: pods are 0..{len(self.pods) - 1}")
            if not mask[i]:
                raise ValueError(f"router action {i}: pod {self.pods[i].name} cannot take requests now "
                                 f"(absent, not ready, draining, or the wrong role); see action_masks()")
            self.apply_route(r, i, self.loop.now)

        def default():
            return self.router.pick(r, pods, self.ctx)

        if not any(mask):
            self.apply_route(r, None, now)
            return
        self.sim.hand_over(Pending("router", now, r, pods, mask, resume, default))

    def send(self, r: Request, i: int, now: int) -> None:
        """Dispatch to pod i (the router's or an agent's choice); updates router state."""
        self.router.observe(r, i, self.ctx)
        self.record_choice(i)
        self._dispatch_to(r, i, now)

    def record_choice(self, i: int) -> None:
        """The pod the last traced routing decision went to (decisions.csv's `chosen`)."""
        if self.decisions is not None:
            t, rid, scores = self.decisions[-1]
            self.decisions[-1] = (t, rid, scores, i)

    def _dispatch_to(self, r: Request, i: int, now: int) -> None:
        p = self.pods[i]
        p.in_flight += 1
        p.in_flight_tokens += r.input_len
        if self.peer_pull is not None:
            self.peer_pull.choose(r, i)
        self.sim.dispatch(r, self.instances[i], now)

    def reject(self, r: Request, now: int, status: int, reason: str) -> None:
        key = f"{status} {reason}"
        self.rejections[key] = self.rejections.get(key, 0) + 1
        r.reason = key
        self.sim.reject(r, now)

    # ---- feedback from instances ------------------------------------------------------
    def first_token(self, r: Request) -> None:
        self.pods[self.index[r.instance]].in_flight_tokens -= r.input_len
        if self.pd_mode and self.pd.first_token_hook is not None:
            self.pd.first_token_hook(r, r.pd is not None)

    def finished(self, r: Request, now: int) -> None:
        """A routed request reached a final state: release the router's in-flight counts."""
        p = self.pods[self.index[r.instance]]
        p.in_flight -= 1
        if r.first_token < 0:
            p.in_flight_tokens -= r.input_len
        self.router.release(r, p.index)
        if self.pd_mode and self.pd.finished_hook is not None:
            self.pd.finished_hook(r)
        if p.in_flight == 0 and not p.available:
            self.sim.pod_idle(p.index, now)

    def replaced(self, i: int) -> None:
        """Slot i got a fresh instance (cold cache): drop router state about it."""
        self.index = {inst: k for k, inst in enumerate(self.instances)}
        self.router.forget(i)
        self.pd.forget(i)

    def withdraw(self, r: Request) -> None:
        """A request still in the flow-control queue gave up (client deadline)."""
        self.fc.remove(r)

    # ---- flow control -----------------------------------------------------------------
    def _dispatch(self, now: int) -> None:
        fc = self.fc
        while len(fc):
            # saturation over the pods that can serve (none: 1.0, so requests wait for one)
            sat = self.cfg.saturation([p for p in self.signals(now) if p.available], now)
            r = fc.dispatch(sat, now)
            if r is None:
                if self.eviction is not None:
                    self._revoke(now)
                return
            r.state = State.CREATED
            self.loop.at(now, P_ROUTE, self._route_event, r)
            return      # one request per cycle

    def _revoke(self, now: int) -> None:
        """Dispatch is blocked: in-flight eviction may make room for the highest waiting band."""
        for prio, n in self.fc.band_sizes().items():     # highest priority first
            if n:
                self.eviction.blocked(prio, n, now)
                return

    def _route_event(self, r: Request, now: int) -> None:
        if r.state is State.CREATED:
            if self.eviction is not None:
                self.eviction.dispatched(r)
            self.route(r, now)

    def _arm(self, now: int) -> None:
        fc = self.fc
        if len(fc) and not self._tick_pending:
            self._tick_pending = True
            self.loop.at(now + max(1, self.cfg.dispatch_tick_us), P_TICK, self._tick)   # never the same instant
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
