"""summary.json: a finished (or horizon-cut) simulation's figures, in one place.

The whole run, each SLO class and each tenant get the same latency block (`summary.py`); on top:
the requests still in the system, reasons, cost per pool, and the P/D counts.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..engine.request import BLOCK_SIZE, State
from .summary import goodput, jain, latency_block

if TYPE_CHECKING:
    from ..cluster.disagg import Disaggregation
    from ..cluster.gateway import Gateway
    from ..engine import Instance
    from .collector import Metrics


class FinishedRun(Protocol):
    """What summary.json reads of a simulation (`Simulation` satisfies it): the report sits below
    the simulation that calls it, so it names the view it needs instead of importing it."""
    cfg: object                        # the SimConfig: its name, seed and workload's SLO targets
    metrics: Metrics
    instances: list[Instance]
    gateway: Gateway | None
    pools: list                        # cluster.pools.Pool, read by cost_summary
    counts: dict[State, int]           # requests per final state
    drop_reasons: dict[str, int]
    injected: int
    in_transit: int

    def end_time_us(self) -> int: ...

    def in_instances(self) -> tuple[int, int]: ...

    def in_gateway(self) -> int: ...


def cost_summary(pools: list, end_us: int, output_tokens: int) -> dict:
    """GPU hours and dollars of each pool up to end_us, and the cost per million output tokens."""
    per = {}
    for p in pools:
        per[p.cfg.name] = {"gpu_hours": round(p.gpu_hours(end_us), 6), "dollars": round(p.dollars(end_us), 6),
                           "price_per_gpu_hour": p.cfg.price_per_gpu_hour, "gpus_per_node": p.cfg.gpus_per_node,
                           "peak_gpus": p.peak_gpus, "scale_events": len(p.scale_events)}
    gh = sum(v["gpu_hours"] for v in per.values())
    dollars = sum(v["dollars"] for v in per.values())
    return {"gpu_hours": round(gh, 6), "dollars": round(dollars, 6),
            "dollars_per_million_output_tokens": round(dollars / output_tokens * 1e6, 6) if output_tokens else None,
            "per_pool": per}


def pd_summary(pd: Disaggregation) -> dict:
    """Decisions, disaggregations and KV transfer times."""
    t = pd.transfers
    ms = np.asarray(t.durations_us, dtype=float) / 1000
    return {"decided_requests": pd.decided, "disaggregated_requests": pd.disaggregated,
            "disaggregated_fraction": round(pd.disaggregated / pd.decided, 6) if pd.decided else 0.0,
            "transfers": len(t.durations_us),
            "transfer_mean_ms": round(float(ms.mean()), 6) if ms.size else None,
            "transfer_p99_ms": round(float(np.percentile(ms, 99)), 6) if ms.size else None,
            "peak_concurrent_transfers": t.peak_concurrent}


def lora_summary(a: dict, names: list, intern, states: list, dur_s: float) -> dict:
    """Adapter loads over the LoRA instances, and each adapter's latency block with its loads
    (requests of the base model under "")."""
    loads: dict[str, int] = {}
    for st in states:
        for name, n in st.loads.items():
            loads[name] = loads.get(name, 0) + n
    codes = a["adapter"]
    per = {}
    for name in sorted({names[k] if k >= 0 else "" for k in codes.tolist()} | set(loads)):
        m = codes == (intern(name) if name else -1)
        block = latency_block(a, m, dur_s)
        block["adapter_loads"] = loads.get(name, 0)
        per[name] = block
    return {"adapter_loads": sum(loads.values()),
            "adapter_load_time_ms": round(sum(st.load_us_total for st in states) / 1000, 6),
            "peak_adapters_in_batch": max(st.peak_distinct for st in states),
            "max_loras": max(st.cfg.max_loras for st in states),
            "adapters": len([n for n in per if n]),
            "per_adapter": per}


def offload_summary(instances: list) -> dict | None:
    """KV offload tiers (None when no instance has one): where the prompt tokens looked up at
    admission were found (GPU, CPU tier, filesystem tier, nowhere), blocks stored and loaded."""
    tiers = [i.offload for i in instances if i.offload is not None]
    if not tiers:
        return None
    query = sum(i.kv.query_tokens for i in instances)
    gpu = sum(i.kv.hit_tokens for i in instances)
    cpu = sum(t.loaded_cpu for t in tiers) * BLOCK_SIZE
    fs = sum(t.loaded_fs for t in tiers) * BLOCK_SIZE
    loads = sum(t.loads for t in tiers)
    load_us = sum(t.load_us for t in tiers)

    def rate(n):
        return round(n / query, 6) if query else 0.0
    return {"gpu_hit_rate": rate(gpu), "cpu_hit_rate": rate(cpu), "fs_hit_rate": rate(fs),
            "miss_rate": rate(query - gpu - cpu - fs),
            "blocks_offloaded": sum(t.stored for t in tiers),
            "blocks_reloaded": sum(t.loaded_cpu + t.loaded_fs for t in tiers),
            "blocks_spilled_to_fs": sum(t.spilled for t in tiers),
            "blocks_dropped": sum(t.dropped for t in tiers),
            "loads": loads, "reload_time_ms_total": round(load_us / 1000, 6),
            "reload_time_ms_mean": round(load_us / loads / 1000, 6) if loads else None}


def eviction_summary(sim: FinishedRun, a: dict, out: dict) -> dict:
    """In-flight eviction (only with it on): requests evicted and decisions, and where every
    injected request ended (arrived = completed + rejected + evicted + dropped + timed out +
    unfinished, the last still in the system at the end)."""
    ev = sim.gateway.eviction
    evicted = sim.counts[State.EVICTED]
    unfinished = (out["still_queued"] + out["still_running"] + out["still_in_transit"] + out["still_in_gateway"]
                  + out["still_in_pd_transfer"])
    return {"evicted_requests": evicted, "decisions": ev.decisions, "max_per_decision": ev.cfg.max_per_decision,
            "accounting": {"arrived": sim.injected, "completed": sim.counts[State.COMPLETED],
                           "rejected": sim.counts[State.REJECTED], "evicted": evicted,
                           "dropped": sim.counts[State.DROPPED], "timed_out": sim.counts[State.TIMED_OUT],
                           "unfinished": unfinished}}


def run_summary(sim: FinishedRun) -> dict:
    """summary.json of a simulation (after run() or close())."""
    a = sim.metrics.arrays()
    names = sim.metrics.strings.names
    dur_us = sim.end_time_us()
    dur_s = dur_us / 1e6 if dur_us > 0 else 0.0
    everything = np.ones(len(a["id"]), dtype=bool)
    hist: dict[int, int] = {}
    for inst in sim.instances:
        for k, v in inst.itl_hist.items():
            hist[k] = hist.get(k, 0) + v
    hit = sum(i.kv.hit_tokens for i in sim.instances)
    query = sum(i.kv.query_tokens for i in sim.instances)
    out = {"scenario": sim.cfg.name, "seed": sim.cfg.seed, "duration_s": round(dur_s, 6)}
    out.update(latency_block(a, everything, dur_s, hist))
    out["injected_requests"] = sim.injected
    queued, running = sim.in_instances()
    out.update({
        "still_queued": queued,
        "still_running": running,
        "still_in_transit": sim.in_transit,
        "still_in_gateway": sim.in_gateway(),
        "still_in_pd_transfer": sim.gateway.pd.active if sim.gateway is not None else 0,
        "preemption_count": int(sum(i.preemptions for i in sim.instances)),
        "prefix_cache_hit_rate": round(hit / query, 6) if query else 0.0,
        "drop_reasons": dict(sorted(sim.drop_reasons.items())),
        "rejection_reasons": dict(sorted(sim.gateway.rejections.items())) if sim.gateway else {},
        "timeout_reasons": {"client deadline": sim.counts[State.TIMED_OUT]} if sim.counts[State.TIMED_OUT] else {},
        "steps": int(sum(i.steps for i in sim.instances)),
        "kv_usage_peak": round(max((i.kv.peak_used / i.kv.usable for i in sim.instances), default=0.0), 6),
        "instances": len(sim.instances),
    })
    targets = getattr(sim.cfg.workload, "slo_targets", None) or {}
    classes = sorted({names[c] for c in a["cls"].tolist()})
    if targets:
        good = 0
        for c in classes:
            g = goodput(a, a["cls"] == sim.metrics.strings(c), dur_s, targets.get(c))
            good += g.get("good_requests", 0)
        out["good_requests"] = good
        out["goodput_rps"] = round(good / dur_s, 6) if dur_s else 0.0
        out["slo_attainment"] = round(good / len(a["id"]), 6) if len(a["id"]) else None
    out["per_class"] = {}
    for c in classes:
        m = a["cls"] == sim.metrics.strings(c)
        block = latency_block(a, m, dur_s)
        block.update(goodput(a, m, dur_s, targets.get(c)))
        out["per_class"][c] = block
    tenants = sorted({names[t] for t in a["tenant"].tolist()})
    out["per_tenant"] = {}
    served = []
    for t in tenants:
        m = a["tenant"] == sim.metrics.strings(t)
        block = latency_block(a, m, dur_s)
        served.append(block["output_tokens"])
        out["per_tenant"][t] = block            # as given: requests without a tenant under ""
    out["tenant_fairness_jain"] = round(jain(served), 6)
    if sim.gateway is not None and sim.gateway.eviction is not None:
        evicted = a["state"] == State.EVICTED
        out["evicted_requests"] = int(evicted.sum())
        for c, block in out["per_class"].items():
            block["evicted_requests"] = int((evicted & (a["cls"] == sim.metrics.strings(c))).sum())
        out["eviction"] = eviction_summary(sim, a, out)
    if sim.pools:
        out["cost"] = cost_summary(sim.pools, dur_us, out["output_tokens"])
    if sim.gateway is not None and sim.gateway.pd_mode:
        out["pd"] = pd_summary(sim.gateway.pd)
    lora = [i.lora for i in sim.instances if i.lora is not None]
    if lora:
        out["lora"] = lora_summary(a, names, sim.metrics.strings, lora, dur_s)
    if sim.gateway is not None and sim.gateway.peer_pull is not None:
        out["kv_peer_pull"] = sim.gateway.peer_pull.summary()
    offload = offload_summary(sim.instances)
    if offload is not None:
        out["kv_offload"] = offload
    out["per_instance"] = {i.name: {"steps": i.steps, "preemptions": i.preemptions,
                                    "busy_fraction": round(i.busy_until(dur_us) / dur_us, 6) if dur_us else 0.0,
                                    "prefix_cache_hit_rate": round(i.kv.hit_tokens / i.kv.query_tokens, 6)
                                    if i.kv.query_tokens else 0.0}
                           for i in sim.instances}
    return out
