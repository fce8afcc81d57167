"""P/D disaggregation: the state machine of a request whose prefill runs on another pod.

llm-d's `disagg-profile-handler`: the decode profile picks a decode pod, the decider (or an agent
bound to the `pd` slot) says whether to prefill elsewhere; if so, the prefill profile picks a
prefill pod. With `stageOrder: prefill-first` the prefill profile picks first, for every request
(no decider), then the decode profile. The request goes

    decided -> prefill leg (a copy with max_tokens = 1 on the prefill pod)
            -> KV transfer (prefill pod's NIC -> decode pod; `transfer.Transfers`)
            -> decode on the decode pod, continuing from the first token

A client deadline may cancel it in the leg or the transfer (`cancel`). The request is in state
TRANSFER from the decision until it is dispatched to the decode pod.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..engine import BLOCK_SIZE, Request, State
from .signals import Pending, int_action
from .transfer import Transfers

if TYPE_CHECKING:
    from ..core import EventLoop
    from ..engine import Instance
    from ..slots import Router, RouterContext
    from .config import GatewayConfig
    from .host import ClusterHost
    from .signals import PodSignals


class GatewaySide(Protocol):
    """What the P/D path uses of the gateway that owns it (`gateway.Gateway`): the decode
    profile's router and context, the pods, and sending a request to its decode pod."""
    sim: ClusterHost
    loop: EventLoop
    pods: list[PodSignals]
    instances: list[Instance]
    router: Router
    ctx: RouterContext
    peer_pull: object                    # peer_pull.PeerPull, or None

    def send(self, r: Request, i: int, now: int) -> None: ...

    def record_choice(self, i: int) -> None: ...


class PDState:
    """Bookkeeping of one disaggregated request."""
    __slots__ = ("leg", "decode", "prefill", "transfer_start", "transfer_us", "cancelled")

    def __init__(self, leg: Request, decode: int, prefill: int):
        self.leg = leg
        self.decode = decode
        self.prefill = prefill
        self.transfer_start = -1
        self.transfer_us = -1
        self.cancelled = False


class Disaggregation:
    """The P/D path of one gateway: decisions, prefill legs, KV transfers, and their counts."""

    def __init__(self, gateway: GatewaySide, cfg: GatewayConfig):
        self.gw = gateway
        self.sim = gateway.sim
        self.loop = gateway.loop
        self.pods = gateway.pods
        self.instances = gateway.instances
        self.prefill_pods = [p for p in self.pods if p.role != "decode"]
        self.router = cfg.prefill_router         # the prefill profile
        self.decider = cfg.decider
        # optional parts of a decider (EDPP has them): a decision that also reads the chosen
        # decode pod and the prefill pods, and feedback on first tokens and ends
        self._on_pods = getattr(cfg.decider, "disaggregate_on", None)
        self.first_token_hook = getattr(cfg.decider, "first_token", None)
        self.finished_hook = getattr(cfg.decider, "finished", None)
        self.prefill_first = cfg.pd_stage_order == "prefill-first"
        self.first_picks: dict[int, int] = {}    # prefill-first: request id -> its prefill pod, until decode is picked
        self.decided = 0
        self.disaggregated = 0
        self.active = 0                          # requests in a prefill leg or a transfer
        self.transfers = Transfers(self.loop, cfg.transfer_bandwidth_gb_s * 1e3, cfg.transfer_base_latency_us,
                                   cfg.transfer_contention, self._transfer_done)

    # ---- the decision ---------------------------------------------------------------------
    def applies(self, r: Request) -> bool:
        """Can the request be disaggregated now (a prefill pod is available)?"""
        return any(p.available for p in self.prefill_pods)

    def cached_tokens(self, r: Request, i: int) -> int:
        """Prompt tokens the decode profile believes pod i holds: its prefix index (llm-d's
        decider reads it), or the real cache without one."""
        gw = self.gw
        index = gw.router.prefix_index
        if index is not None:
            return index.cached_tokens(r, self.pods[i], gw.ctx)
        return gw.ctx.cached_blocks(r, i) * BLOCK_SIZE

    def decide(self, r: Request, i: int) -> bool:
        """The built-in decider's answer for r routed to decode pod i (counted)."""
        self.decided += 1
        return self._answer(r, i)

    def _answer(self, r: Request, i: int) -> bool:
        cached = self.cached_tokens(r, i)
        if self._on_pods is not None:
            return bool(self._on_pods(r, cached, self.pods[i], self.prefill_pods))
        return bool(self.decider.disaggregate(r, cached))

    def ask(self, r: Request, i: int, now: int) -> None:
        """The `pd` slot is an agent's: 0 prefill locally, 1 disaggregate."""
        def resume(action):
            a = int_action(action, "pd")
            if a not in (0, 1):
                raise ValueError(f"pd action must be 0 (prefill locally) or 1 (disaggregate), got {action!r}")
            t = self.loop.now
            self.decided += 1
            if a:
                self.to_prefill(r, i, t)
            else:
                self.gw.send(r, i, t)

        def default():
            return int(self._answer(r, i))

        self.sim.hand_over(Pending("pd", now, r, self.pods, None, resume, default, pool=i))

    def to_prefill(self, r: Request, decode: int, now: int) -> None:
        """Disaggregate r (decode pod chosen): the prefill profile picks its prefill pod (none
        available: r is prefilled locally after all)."""
        p = self.router.pick(r, self.prefill_pods, self.gw.ctx)
        if p is None:
            self.gw.send(r, decode, now)
        else:
            self.start(r, decode, p, now)

    def pick_first(self, r: Request) -> bool:
        """prefill-first: the prefill profile picks r's prefill pod before the decode profile
        runs (False: no prefill pod, and llm-d then fails the request)."""
        p = self.router.pick(r, self.prefill_pods, self.gw.ctx)
        if p is None:
            return False
        self.first_picks[r.id] = p
        return True

    def start_picked(self, r: Request, decode: int, now: int) -> None:
        """prefill-first: the decode pod is picked; r goes to the prefill pod picked first."""
        self.decided += 1
        self.start(r, decode, self.first_picks.pop(r.id), now)

    # ---- the legs -------------------------------------------------------------------------
    def start(self, r: Request, decode: int, prefill: int, now: int) -> None:
        """A prefill leg (max_tokens = 1) on pod `prefill`, then the KV moves to pod `decode`,
        which continues from the first token."""
        gw = self.gw
        self.disaggregated += 1
        self.active += 1
        gw.router.observe(r, decode, gw.ctx)
        self.router.observe(r, prefill, gw.ctx)
        leg = Request(r.id, now, r.input_len, 1, r.content, slo_class=r.slo_class, priority=r.priority,
                      tenant=r.tenant, client=r.client)
        leg.parent = r
        leg.adapter = r.adapter
        r.pd = PDState(leg, decode, prefill)
        r.state = State.TRANSFER
        d, p = self.pods[decode], self.pods[prefill]
        d.in_flight += 1
        d.in_flight_tokens += r.input_len
        p.in_flight += 1
        p.in_flight_tokens += r.input_len
        gw.record_choice(decode)
        if gw.peer_pull is not None:            # llm-d: the pod computing the prompt is the prefill pod
            gw.peer_pull.choose(leg, prefill)
        self.sim.dispatch(leg, self.instances[prefill], now)

    def leg_done(self, leg: Request, now: int, ok: bool) -> None:
        """The prefill leg ended: start the KV transfer (or fail the request)."""
        r = leg.parent
        st = r.pd
        p = self.pods[st.prefill]
        p.in_flight -= 1
        p.in_flight_tokens -= r.input_len
        if p.in_flight == 0 and not p.available:
            self.sim.pod_idle(p.index, now)
        if st.cancelled:
            return
        if r.scheduled < 0:                     # its first enqueue and admission were the leg's
            r.enqueued = leg.enqueued
            r.scheduled = leg.scheduled
        if not ok:
            self.active -= 1
            r.reason = leg.reason
            self.sim.fail(r, now, State.DROPPED)
            return
        nbytes = self.transfer_blocks(r, st.decode) * BLOCK_SIZE * self.instances[st.prefill].kv_bytes_per_token
        st.transfer_start = now
        self.transfers.start(st.prefill, nbytes, r, now)

    def transfer_blocks(self, r: Request, decode: int) -> int:
        """KV blocks to move: the prompt's blocks beyond the decode pod's local prefix-cache hit
        when the transfer starts (vLLM's KV connectors load only what the local cache lacks)."""
        return max(0, -(-r.input_len // BLOCK_SIZE) - self.instances[decode].lookup_prefix(r))

    def _transfer_done(self, r: Request, now: int) -> None:
        st = r.pd
        self.active -= 1
        st.transfer_us = now - st.transfer_start
        r.remote = True
        r.state = State.CREATED
        self.sim.dispatch(r, self.instances[st.decode], now)

    def cancel(self, r: Request, now: int) -> None:
        """The client gave up while the request was in its prefill leg or transfer."""
        st = r.pd
        st.cancelled = True
        self.active -= 1
        leg = st.leg
        if leg.state in (State.CREATED, State.QUEUED, State.RUNNING):
            if leg.state is not State.CREATED:
                leg.instance.abort(leg, now)
            leg.state = State.TIMED_OUT
            self.leg_done(leg, now, False)
        elif st.transfer_start >= 0:            # its KV was on the wire: the transfer stops
            self.transfers.cancel(st.prefill, r, now)
        r.instance = self.instances[st.decode]

    def forget(self, i: int) -> None:
        """Slot i got a fresh instance: the prefill profile forgets it."""
        if self.router is not None:
            self.router.forget(i)
