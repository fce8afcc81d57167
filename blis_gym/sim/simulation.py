"""A simulation: a workload driving instances on one shared clock, with metrics.

Request path: arrival -> (route) -> the instance's queueing overhead α0 -> its waiting queue
-> batches -> completion. Every injected request ends in exactly one state: completed, timed
out, dropped as unservable, rejected, or still in the system when the horizon cuts the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .cluster.gateway import Gateway, GatewayConfig
from .cluster.pools import DRAINING, Pool, PoolConfig
from .cluster.signals import Pending, int_action
from .core import P_ARRIVAL, P_ENQUEUE, P_SAMPLE, EventLoop, Streams
from .deadlines import Deadlines
from .engine import BLOCK_SIZE, EngineConfig, Instance, Request, State
from .metrics import Metrics
from .metrics.report import run_summary
from .observers import IDLE_ROWS, PausingObserver
from .slots import StepTimeModel
from .workload import Workload, WorkloadSource


@dataclass
class InstanceConfig:
    name: str
    engine: EngineConfig
    step_model: StepTimeModel
    total_kv_blocks: int
    role: str = "both"                      # both | prefill | decode
    pool: str = "default"
    kv_bytes_per_token: int = 0             # per GPU; sizes P/D KV transfers


@dataclass
class SimConfig:
    instances: list[InstanceConfig]
    workload: Workload
    seed: int = 42
    horizon_us: int = 0                     # 0 = run until every request is finished
    sample_interval_us: int = 1_000_000     # time-series sampling period
    check_invariants: bool = False          # verify the invariants at every event (slow)
    name: str = ""
    gateway: GatewayConfig | None = None    # None = plain round-robin
    pools: list[PoolConfig] | None = None   # one per pool (needs a gateway)
    extra: dict = field(default_factory=dict)


SLOTS = ("admission", "router", "pd", "autoscaler")


class Simulation:
    """Wiring (event loop, random streams, instances, gateway, pools) and the request lifecycle;
    satisfies `cluster.host.ClusterHost` and `engine.instance.EngineSink`."""

    def __init__(self, cfg: SimConfig, external=()):
        self.cfg = cfg
        unknown = [s for s in external if s not in SLOTS]
        if unknown:
            from ..errors import ConfigError
            raise ConfigError("external", f"unknown decision slot {unknown[0]!r}; slots: {', '.join(SLOTS)}")
        self.external = frozenset(external)
        self.pending: Pending | None = None
        self.last_arrival = 0
        self.scheduled_arrivals = 0              # arrival events on the heap, not yet injected
        self.final_hooks: list = []             # callables(r, state, now) on every final state
        self.paused: list[PausingObserver] = []  # periodic observers waiting for activity (wake)
        self.loop = EventLoop()
        self.deadlines = Deadlines(self.loop, self._timeout)
        self.streams = Streams(cfg.seed)
        self.metrics = Metrics()
        self.instances = [self._instance(ic) for ic in cfg.instances]
        # A Workload description, or any ready source with next() / exhausted() / finished().
        w = cfg.workload
        self.source = w if hasattr(w, "next") else WorkloadSource(w, self.streams)
        self.injected = 0
        self.finished = 0
        self.in_transit = 0
        self.held = 0                            # a request left awaiting an agent's decision by a cut run
        self.counts = {s: 0 for s in (State.COMPLETED, State.TIMED_OUT, State.DROPPED, State.REJECTED, State.EVICTED)}
        self.drop_reasons: dict[str, int] = {}
        self._rr = 0
        self._last_time = 0
        self.gateway = Gateway(self, cfg.gateway) if cfg.gateway is not None else None
        self.live: dict[int, Request] = {}       # injected and not yet final, in injection order
        self.pools: list[Pool] = []
        self.slot_pool: dict[int, Pool] = {}
        self.zero_pools: list[Pool] = []         # pools that may scale to zero (scale-from-zero on demand)
        for pc in cfg.pools or []:
            pool = Pool(pc, self, self.streams.get(f"pools/{pc.name}"))
            self.pools.append(pool)
            for i in pc.slots:
                self.slot_pool[i] = pool
            if pc.min == 0:
                self.zero_pools.append(pool)
        self._closed = False
        self._next_arrival()
        if cfg.sample_interval_us > 0:
            PausingObserver(self.loop, cfg.sample_interval_us, P_SAMPLE, self._sample, self.busy, self.active,
                            self.paused, patience=IDLE_ROWS)

    def _instance(self, ic: InstanceConfig) -> Instance:
        inst = Instance(ic.name, self.loop, ic.engine, ic.step_model, ic.total_kv_blocks, self)
        inst.role = ic.role
        inst.pool = ic.pool
        inst.kv_bytes_per_token = ic.kv_bytes_per_token
        if ic.engine.speculative is not None:
            inst.enable_speculative(self.streams.get(f"speculative/{ic.name}"))
        return inst

    # ---- request path -----------------------------------------------------------------
    def _next_arrival(self) -> None:
        r = self.source.next()
        if r is not None:
            if self.cfg.horizon_us and r.arrival > self.cfg.horizon_us:
                return
            self.scheduled_arrivals += 1
            self.loop.at(r.arrival, P_ARRIVAL, self._arrive, r)

    def _arrive(self, r: Request, now: int) -> None:
        self._next_arrival()
        self._inject(r, now)

    def _arrive_followup(self, r: Request, now: int) -> None:
        self._inject(r, now)

    def _inject(self, r: Request, now: int) -> None:
        if self.paused:
            self.wake(now)
        self.scheduled_arrivals -= 1
        self.injected += 1
        self.last_arrival = now
        self.live[r.id] = r
        if r.deadline:
            self.deadlines.add(r, now)
        if self.gateway is not None:
            self.gateway.arrive(r, now)
        else:
            self.dispatch(r, self.instances[self._rr % len(self.instances)], now)
            self._rr += 1

    def busy(self) -> bool:
        """Requests are in the system."""
        return self.injected > self.finished

    def wake(self, now: int) -> None:
        """Something may change at `now` (a request arrives, a pool acts): the periodic
        observers paused while the system was empty catch up and resume."""
        paused, self.paused[:] = list(self.paused), []
        for observer in paused:
            observer.wake(now)

    def active(self) -> bool:
        """Requests remain in the system or are still to come."""
        return self.injected > self.finished or self.scheduled_arrivals > 0 or not self.source.exhausted()

    def reject(self, r: Request, now: int) -> None:
        self._final(r, State.REJECTED, now)

    def dispatch(self, r: Request, inst: Instance, now: int) -> None:
        """Send r to `inst`: after the instance's queueing overhead α0 it joins the queue."""
        r.instance = inst
        if r.parent is None:
            self.in_transit += 1
        self.loop.at(now + inst.model.queueing_us, P_ENQUEUE, self._enqueue, r)

    def _enqueue(self, r: Request, now: int) -> None:
        if r.state is not State.CREATED:        # timed out during the queueing overhead (and
            return                              # left in_transit then)
        if r.parent is None:
            self.in_transit -= 1
        r.instance.enqueue(r, now)
        if self.cfg.check_invariants:
            self.check(now)

    def _timeout(self, r: Request, now: int) -> None:
        """r (still in the system) reached its client deadline."""
        self._withdraw(r, now)
        r.reason = "client deadline"
        self._final(r, State.TIMED_OUT, now)

    def evict(self, r: Request, now: int) -> None:
        """Flow control revoked r, dispatched and not finished: aborted where it is, counted
        as evicted (its own final state)."""
        self._withdraw(r, now)
        r.reason = "evicted"
        self._final(r, State.EVICTED, now)

    def _withdraw(self, r: Request, now: int) -> None:
        """Take r out of wherever it is (a pod's queue or batch, the gateway, a P/D leg)."""
        if r.state in (State.QUEUED, State.RUNNING):
            r.instance.abort(r, now)
        elif r.state is State.GATEWAY:
            self.gateway.withdraw(r)
        elif r.state is State.TRANSFER:
            self.gateway.pd.cancel(r, now)
        elif r.instance is not None:            # dispatched, in the queueing overhead α0
            self.in_transit -= 1

    # ---- ClusterHost: called by the gateway, the P/D state machine and the pools ---------
    def instance_started(self, i: int, now: int) -> None:
        """Slot i finished loading: a fresh engine with an empty cache takes it."""
        self.instances[i] = self._instance(self.cfg.instances[i])
        self.gateway.replaced(i)

    def instance_draining(self, i: int, now: int) -> None:
        if self.gateway.pods[i].in_flight == 0:
            self.slot_pool[i].drained(i, now)

    def instance_stopped(self, i: int, now: int) -> None:
        pass

    def pod_idle(self, i: int, now: int) -> None:
        pool = self.slot_pool.get(i)
        if pool is not None and pool.state[i] == DRAINING:
            pool.drained(i, now)

    def completed_requests(self) -> int:
        return self.counts[State.COMPLETED]

    def scale_from_zero(self, now: int) -> None:
        for pool in self.zero_pools:
            pool.ensure_one(now)

    def autoscaler_decision(self, pool: Pool, now: int) -> None:
        """A tick of a pool whose autoscaler is external. With the `autoscaler` slot bound to an
        agent, the agent picks the change in replicas (an integer; the pool clamps the result to
        its bounds); otherwise the pool's built-in policy (holding, for policy 'external') decides."""
        def builtin():
            return pool.cfg.autoscaler.desired(pool.view(now), now) - pool.replicas()

        if "autoscaler" not in self.external:
            pool.scale_to(pool.replicas() + builtin(), now)
            return

        def resume(action):
            pool.scale_to(pool.replicas() + int_action(action, "autoscaler"), self.loop.now)

        self.hand_over(Pending("autoscaler", now, None, self.gateway.pods, None, resume, builtin, pool))

    # ---- EngineSink: called by instances ------------------------------------------------
    def first_token(self, r: Request, now: int) -> None:
        if self.gateway is not None and r.parent is None:
            self.gateway.first_token(r)

    def completed(self, r: Request, now: int) -> None:
        if r.parent is not None:                # a P/D prefill leg: its KV is ready to move
            r.state = State.COMPLETED
            self.gateway.pd.leg_done(r, now, True)
            return
        m = r.instance.model
        done = now + r.output_len * m.output_token_us + m.post_decode_us
        e2e = done - r.arrival
        decode = e2e - (r.first_token - r.arrival) - m.post_decode_us
        r.finished = done
        self._final(r, State.COMPLETED, now, e2e, decode)

    def start_pull(self, r: Request, inst: Instance, source: int, tokens: int, now: int) -> None:
        self.gateway.peer_pull.start(r, inst, source, tokens, now)

    def fail(self, r: Request, now: int, state: State) -> None:
        self._final(r, state, now)

    def dropped(self, r: Request, now: int, reason: str) -> None:
        r.reason = reason
        if r.parent is not None:
            r.state = State.DROPPED
            self.gateway.pd.leg_done(r, now, False)
            return
        self.drop_reasons[reason] = self.drop_reasons.get(reason, 0) + 1
        self._final(r, State.DROPPED, now)

    def _final(self, r: Request, state: State, now: int, e2e: int = -1, decode: int = -1) -> None:
        if self.gateway is not None and r.instance is not None:
            self.gateway.finished(r, now)
        r.state = state
        r.gen += 1
        del self.live[r.id]
        self.counts[state] += 1
        self.finished += 1
        self._last_time = max(self._last_time, now)
        self.metrics.record(r, state, e2e, decode)
        for hook in self.final_hooks:
            hook(r, state, now)
        for f in self.source.finished(r, r.finished if state is State.COMPLETED else now, state is State.COMPLETED):
            if not self.cfg.horizon_us or f.arrival <= self.cfg.horizon_us:
                self.scheduled_arrivals += 1
                self.loop.at(f.arrival, P_ARRIVAL, self._arrive_followup, f)
        if self.cfg.check_invariants:
            self.check(now)

    # ---- time series ------------------------------------------------------------------
    def _sample(self, now: int) -> None:
        for i, inst in enumerate(self.instances):
            pool = self.slot_pool.get(i)
            if pool is not None and pool.state[i] == "off":
                continue
            self.metrics.sample(now, inst.name, *inst.scrape())
        for pool in self.pools:
            self.metrics.sample_pool(now, pool.cfg.name, pool.count("active"), pool.count("starting"),
                                     pool.count("draining"), pool.gpus(), pool.gpu_hours(now), pool.dollars(now))

    # ---- decision points ----------------------------------------------------------------
    def hand_over(self, pending: Pending) -> None:
        """A slot bound to an external agent must decide: stop the loop after this event."""
        self.pending = pending
        self.loop.halt = True

    def run_until_decision(self) -> Pending | None:
        """Advance until an external slot must decide (returned) or the run ends (None)."""
        limit = self.cfg.horizon_us or None
        while self.pending is None:
            self.loop.halt = False
            more = self.loop.run(until_us=limit, max_events=1 << 20)
            if self.pending is None and not more:
                self.close()
                return None
        return self.pending

    def decide(self, action) -> Pending | None:
        """Answer the pending decision and advance to the next one (None when the run ends)."""
        p = self.pending
        if p is None:
            raise RuntimeError("no decision is pending; call run_until_decision() first")
        self.pending = None
        try:
            p.resume(action)
        except ValueError:
            self.pending = p
            raise
        return self.run_until_decision()

    def run(self, progress=None, chunk_events: int = 50_000) -> dict:
        """Run to the end (or the horizon). `progress(finished, total)` is called now and then."""
        limit = self.cfg.horizon_us or None
        total = getattr(self.cfg.workload, "num_requests", 0) or 0
        while self.loop.run(until_us=limit, max_events=chunk_events):
            if progress is not None:
                progress(self.finished, total)
        if progress is not None:
            progress(self.finished, total)
        self.close()
        return self.summary()

    def close(self) -> None:
        """Record the requests still in the system (horizon), once, in their current state."""
        if self._closed:
            return
        self._closed = True
        p = self.pending
        if p is not None and p.request is not None and p.request.state is State.CREATED:
            # cut while an agent was deciding about it: it is still at the gateway, not yet routed
            p.request.state = State.GATEWAY
            self.held = 1
        end = self.cfg.horizon_us or self.loop.now
        for observer in self.paused:        # the rows an idle stretch up to the end would have repeated
            observer.catch_up(end)
        for inst in self.instances:
            inst._advance(end)
        for r in self.live.values():
            self.metrics.record(r, r.state)

    def end_time_us(self) -> int:
        """The horizon, or else the time the last request finished (stale timeouts popped
        after that do not count)."""
        if self.cfg.horizon_us:
            return self.cfg.horizon_us
        return self._last_time

    def in_instances(self) -> tuple[int, int]:
        """Requests waiting and running in instances (P/D prefill legs excluded)."""
        queued = sum(1 for i in self.instances for r in i.waiting if r.parent is None)
        # requests loading their prefix from a KV offload tier are waiting too (as in vLLM)
        queued += sum(1 for i in self.instances for r in i.loading() if r.parent is None)
        running = sum(1 for i in self.instances for r in i.running if r.parent is None)
        return queued, running

    def in_gateway(self) -> int:
        """Requests held at the gateway: in its flow-control queue, or awaiting an agent's
        decision when an episode was cut (max_requests, max_backlog)."""
        return (self.gateway.queued() if self.gateway is not None else 0) + self.held

    # ---- checks -----------------------------------------------------------------------
    def check(self, now: int) -> None:
        """The simulator's invariants: conservation, timestamp order, KV accounting, LoRA
        adapter counts."""
        queued, running = self.in_instances()
        gw = self.in_gateway()
        pd = self.gateway.pd.active if self.gateway is not None else 0
        assert self.injected == self.finished + queued + running + self.in_transit + gw + pd, \
            (self.injected, self.finished, queued, running, self.in_transit, gw, pd)
        for inst in self.instances:
            inst.sync()
            private = 0
            holders: dict[int, int] = {}
            runs: dict = {}
            for r in inst.running:
                assert r.state is State.RUNNING
                assert r.arrival <= r.enqueued <= r.scheduled <= now
            for r, n in inst.kv_holders():
                private += -(-n // BLOCK_SIZE) - inst.kv.shared_count(r)
                for h in r.shared_blocks:
                    holders[h] = holders.get(h, 0) + 1
                if r.shared_run is not None:
                    runs[r.shared_run] = runs.get(r.shared_run, 0) + 1
            inst.kv.check(private, holders, runs)
            if inst.offload is not None:
                inst.offload.check()
            if inst.lora is not None:
                # a request whose prefix is being loaded from a lower tier still waits
                inst.lora.check(inst.running, [*inst.waiting, *inst.loading()])

    # ---- results ----------------------------------------------------------------------
    def summary(self) -> dict:
        """The run's summary.json (see blis_gym.sim.metrics.report)."""
        return run_summary(self)
