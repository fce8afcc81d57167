"""A simulation: a workload driving instances on one shared clock, with metrics.

Request path: arrival -> (route) -> the instance's queueing overhead α0 -> its waiting queue
-> batches -> completion. Every injected request ends in exactly one state: completed, timed
out, dropped as unservable, rejected, or still in the system when the horizon cuts the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .cluster.gateway import Gateway, GatewayConfig
from .cluster.pools import DRAINING, Pool, PoolConfig
from .cluster.signals import Pending
from .core import P_ARRIVAL, P_ENQUEUE, P_SAMPLE, EventLoop, Streams
from .deadlines import Deadlines
from .engine import EngineConfig, Instance, Request, State
from .metrics import Metrics
from .metrics.summary import goodput, jain, latency_block
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
        self.counts = {s: 0 for s in (State.COMPLETED, State.TIMED_OUT, State.DROPPED, State.REJECTED)}
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
            self.loop.at(0, P_SAMPLE, self._sample)

    def _instance(self, ic: InstanceConfig) -> Instance:
        inst = Instance(ic.name, self.loop, ic.engine, ic.step_model, ic.total_kv_blocks, self)
        inst.role = ic.role
        inst.pool = ic.pool
        inst.kv_bytes_per_token = ic.kv_bytes_per_token
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
        if r.parent is None:
            self.in_transit -= 1
        if r.state is not State.CREATED:        # timed out during the queueing overhead
            return
        r.instance.enqueue(r, now)
        if self.cfg.check_invariants:
            self.check(now)

    def _timeout(self, r: Request, now: int) -> None:
        """r (still in the system) reached its client deadline."""
        if r.state in (State.QUEUED, State.RUNNING):
            r.instance.abort(r, now)
        elif r.state is State.GATEWAY:
            self.gateway.withdraw(r)
        elif r.state is State.TRANSFER:
            self.gateway.cancel_pd(r, now)
        r.reason = "client deadline"
        self._final(r, State.TIMED_OUT, now)

    # ---- sink: called by instances ----------------------------------------------------
    # ---- pools --------------------------------------------------------------------------
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
            from .cluster.gateway import _int_action
            pool.scale_to(pool.replicas() + _int_action(action, "autoscaler"), self.loop.now)

        self.hand_over(Pending("autoscaler", now, None, self.gateway.pods, None, resume, builtin, pool))

    # ---- sink: called by instances ----------------------------------------------------
    def first_token(self, r: Request, now: int) -> None:
        if self.gateway is not None and r.parent is None:
            self.gateway.first_token(r)

    def completed(self, r: Request, now: int) -> None:
        if r.parent is not None:                # a P/D prefill leg: its KV is ready to move
            r.state = State.COMPLETED
            self.gateway.leg_done(r, now, True)
            return
        m = r.instance.model
        done = now + r.output_len * m.output_token_us + m.post_decode_us
        e2e = done - r.arrival
        decode = e2e - (r.first_token - r.arrival) - m.post_decode_us
        r.finished = done
        self._final(r, State.COMPLETED, now, e2e, decode)

    def fail(self, r: Request, now: int, state: State) -> None:
        self._final(r, state, now)

    def dropped(self, r: Request, now: int, reason: str) -> None:
        r.reason = reason
        if r.parent is not None:
            r.state = State.DROPPED
            self.gateway.leg_done(r, now, False)
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
    def _sample(self, _arg, now: int) -> None:
        for i, inst in enumerate(self.instances):
            pool = self.slot_pool.get(i)
            if pool is not None and pool.state[i] == "off":
                continue
            self.metrics.sample(now, inst.name, *inst.scrape())
        for pool in self.pools:
            self.metrics.sample_pool(now, pool.cfg.name, pool.count("active"), pool.count("starting"),
                                     pool.count("draining"), pool.gpus(), pool.gpu_hours(now), pool.dollars(now))
        if self.active():
            self.loop.at(now + self.cfg.sample_interval_us, P_SAMPLE, self._sample)

    # ---- running ----------------------------------------------------------------------
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
        end = self.cfg.horizon_us or self.loop.now
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

    def _cost(self, end_us: int, output_tokens: int) -> dict:
        per = {}
        for p in self.pools:
            per[p.cfg.name] = {"gpu_hours": round(p.gpu_hours(end_us), 6), "dollars": round(p.dollars(end_us), 6),
                               "price_per_gpu_hour": p.cfg.price_per_gpu_hour, "gpus_per_node": p.cfg.gpus_per_node,
                               "peak_gpus": p.peak_gpus, "scale_events": len(p.scale_events)}
        gh = sum(v["gpu_hours"] for v in per.values())
        dollars = sum(v["dollars"] for v in per.values())
        return {"gpu_hours": round(gh, 6), "dollars": round(dollars, 6),
                "dollars_per_million_output_tokens": round(dollars / output_tokens * 1e6, 6) if output_tokens else None,
                "per_pool": per}

    def _pd_summary(self) -> dict:
        g = self.gateway
        t = g.transfers
        ms = np.asarray(t.durations_us, dtype=float) / 1000
        return {"decided_requests": g.pd_decided, "disaggregated_requests": g.pd_disaggregated,
                "disaggregated_fraction": round(g.pd_disaggregated / g.pd_decided, 6) if g.pd_decided else 0.0,
                "transfers": len(t.durations_us),
                "transfer_mean_ms": round(float(ms.mean()), 6) if ms.size else None,
                "transfer_p99_ms": round(float(np.percentile(ms, 99)), 6) if ms.size else None,
                "peak_concurrent_transfers": t.peak_concurrent}

    def in_instances(self) -> tuple[int, int]:
        """Requests waiting and running in instances (P/D prefill legs excluded)."""
        queued = sum(1 for i in self.instances for r in i.waiting if r.parent is None)
        running = sum(1 for i in self.instances for r in i.running if r.parent is None)
        return queued, running

    # ---- checks -----------------------------------------------------------------------
    def check(self, now: int) -> None:
        """The simulator's invariants: conservation, timestamp order, KV accounting."""
        queued, running = self.in_instances()
        gw = self.gateway.queued() if self.gateway is not None else 0
        pd = self.gateway.pd_active if self.gateway is not None else 0
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
                n = inst.tokens_in_kv(r)
                private += -(-n // 16) - inst.kv.shared_count(r)
                for h in r.shared_blocks:
                    holders[h] = holders.get(h, 0) + 1
                if r.shared_run is not None:
                    runs[r.shared_run] = runs.get(r.shared_run, 0) + 1
            inst.kv.check(private, holders, runs)

    # ---- results ----------------------------------------------------------------------
    def summary(self) -> dict:
        a = self.metrics.arrays()
        names = self.metrics.strings.names
        dur_us = self.end_time_us()
        dur_s = dur_us / 1e6 if dur_us > 0 else 0.0
        everything = np.ones(len(a["id"]), dtype=bool)
        hist: dict[int, int] = {}
        for inst in self.instances:
            for k, v in inst.itl_hist.items():
                hist[k] = hist.get(k, 0) + v
        hit = sum(i.kv.hit_tokens for i in self.instances)
        query = sum(i.kv.query_tokens for i in self.instances)
        out = {"scenario": self.cfg.name, "seed": self.cfg.seed, "duration_s": round(dur_s, 6)}
        out.update(latency_block(a, everything, dur_s, hist))
        out["injected_requests"] = self.injected
        queued, running = self.in_instances()
        out.update({
            "still_queued": queued,
            "still_running": running,
            "still_in_transit": self.in_transit,
            "still_in_gateway": self.gateway.queued() if self.gateway is not None else 0,
            "still_in_pd_transfer": self.gateway.pd_active if self.gateway is not None else 0,
            "preemption_count": int(sum(i.preemptions for i in self.instances)),
            "prefix_cache_hit_rate": round(hit / query, 6) if query else 0.0,
            "drop_reasons": dict(sorted(self.drop_reasons.items())),
            "rejection_reasons": dict(sorted(self.gateway.rejections.items())) if self.gateway else {},
            "timeout_reasons": {"client deadline": self.counts[State.TIMED_OUT]} if self.counts[State.TIMED_OUT] else {},
            "steps": int(sum(i.steps for i in self.instances)),
            "kv_usage_peak": round(max((i.kv.peak_used / i.kv.usable for i in self.instances), default=0.0), 6),
            "instances": len(self.instances),
        })
        targets = getattr(self.cfg.workload, "slo_targets", None) or {}
        classes = sorted({names[c] for c in a["cls"].tolist()})
        if targets:
            good = 0
            for c in classes:
                g = goodput(a, a["cls"] == self.metrics.strings(c), dur_s, targets.get(c))
                good += g.get("good_requests", 0)
            out["good_requests"] = good
            out["goodput_rps"] = round(good / dur_s, 6) if dur_s else 0.0
            out["slo_attainment"] = round(good / len(a["id"]), 6) if len(a["id"]) else None
        out["per_class"] = {}
        for c in classes:
            m = a["cls"] == self.metrics.strings(c)
            block = latency_block(a, m, dur_s)
            block.update(goodput(a, m, dur_s, targets.get(c)))
            out["per_class"][c] = block
        tenants = sorted({names[t] for t in a["tenant"].tolist()})
        out["per_tenant"] = {}
        served = []
        for t in tenants:
            m = a["tenant"] == self.metrics.strings(t)
            block = latency_block(a, m, dur_s)
            served.append(block["output_tokens"])
            out["per_tenant"][t or "default"] = block
        out["tenant_fairness_jain"] = round(jain(served), 6)
        if self.pools:
            out["cost"] = self._cost(dur_us, out["output_tokens"])
        if self.gateway is not None and self.gateway.pd_mode:
            out["pd"] = self._pd_summary()
        out["per_instance"] = {i.name: {"steps": i.steps, "preemptions": i.preemptions,
                                        "busy_fraction": round(i.busy_us / dur_us, 6) if dur_us else 0.0,
                                        "prefix_cache_hit_rate": round(i.kv.hit_tokens / i.kv.query_tokens, 6)
                                        if i.kv.query_tokens else 0.0}
                               for i in self.instances}
        return out
