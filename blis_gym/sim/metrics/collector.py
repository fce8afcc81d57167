"""Streaming metrics: one compact record per finished request, sampled time series, summaries.

Records are columns of machine integers (strings interned to small codes), so a run of a
million requests keeps tens of megabytes, not a million Python objects.
"""
from __future__ import annotations

import csv
from array import array

import numpy as np

from ..engine.request import BLOCK_SIZE, Request, State

STATE_NAMES = {State.COMPLETED: "completed", State.TIMED_OUT: "timed_out", State.DROPPED: "dropped",
               State.REJECTED: "rejected", State.QUEUED: "still_queued", State.RUNNING: "still_running",
               State.CREATED: "in_transit", State.GATEWAY: "still_in_gateway", State.TRANSFER: "in_transfer",
               State.EVICTED: "evicted"}
PCTS = (50, 90, 95, 99)


def percentiles(values) -> dict:
    """mean, p50, p90, p95, p99 with linear interpolation (rank = p/100 (n-1)); None if empty."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"mean": None, **{f"p{p}": None for p in PCTS}}
    qs = np.percentile(a, PCTS)
    return {"mean": float(a.mean()), **{f"p{p}": float(q) for p, q in zip(PCTS, qs)}}


def weighted_percentiles(hist: dict) -> dict:
    """The same statistics over a histogram {value: count}, as if every sample were listed."""
    vals = sorted(hist)
    return sorted_weighted_percentiles(np.array(vals, dtype=float), np.array([hist[v] for v in vals], dtype=np.int64))


def sorted_weighted_percentiles(vals: np.ndarray, counts: np.ndarray) -> dict:
    """`weighted_percentiles` of distinct sorted values `vals` seen `counts` times each."""
    if not len(vals):
        return {"mean": None, **{f"p{p}": None for p in PCTS}}
    n = int(counts.sum())
    cum = np.cumsum(counts)
    out = {"mean": float(np.dot(vals, counts) / n)}
    for p in PCTS:
        rank = p / 100 * (n - 1)
        lo = int(np.floor(rank))
        hi = min(lo + 1, n - 1)
        v_lo = vals[np.searchsorted(cum, lo, side="right")]
        v_hi = vals[np.searchsorted(cum, hi, side="right")]
        out[f"p{p}"] = float(v_lo + (v_hi - v_lo) * (rank - lo))
    return out


class _Interner:
    def __init__(self):
        self.codes: dict[str, int] = {}
        self.names: list[str] = []

    def __call__(self, s: str) -> int:
        c = self.codes.get(s)
        if c is None:
            c = self.codes[s] = len(self.names)
            self.names.append(s)
        return c


COLUMNS = ("request_id", "client", "slo_class", "tenant", "instance", "state", "reason", "arrival_s",
           "input_tokens", "output_tokens", "cached_tokens", "ttft_ms", "itl_ms", "e2e_ms",
           "scheduling_delay_ms", "preemptions")


class Metrics:
    def __init__(self):
        self.strings = _Interner()
        self.cols = {
            "id": array("q"), "client": array("l"), "cls": array("l"), "tenant": array("l"),
            "inst": array("l"), "state": array("b"), "reason": array("l"), "arrival": array("q"),
            "inp": array("q"), "out": array("q"), "cached": array("q"), "ttft": array("q"),
            "e2e": array("q"), "decode": array("q"), "sched": array("q"), "preempt": array("l"),
            "adapter": array("l"),           # the LoRA adapter's name code; -1: the base model
        }
        self.samples = {"time_us": array("q"), "inst": array("l"), "waiting": array("l"),
                        "running": array("l"), "kv": array("d")}
        self.pool_samples: list[tuple] = []

    def record(self, r: Request, state: State, e2e_us: int = -1, decode_us: int = -1) -> None:
        """One finished request. `decode_us`: time from its first to its last token."""
        c = self.cols
        s = self.strings
        c["id"].append(r.id)
        c["client"].append(s(r.client))
        c["cls"].append(s(r.slo_class))
        c["tenant"].append(s(r.tenant))
        c["inst"].append(s(r.instance.name) if r.instance is not None else s(""))
        c["state"].append(int(state))
        c["reason"].append(s(r.reason))
        c["arrival"].append(r.arrival)
        c["inp"].append(r.input_len)
        c["out"].append(r.generated)
        # prompt tokens only: a re-admission after a recompute preemption looks up prompt and
        # generated tokens, and hits on the generated ones are no prompt cache hits
        c["cached"].append(min(r.hit_blocks * BLOCK_SIZE, r.input_len))
        c["ttft"].append(r.first_token - r.arrival if r.first_token >= 0 else -1)
        c["e2e"].append(e2e_us)
        c["decode"].append(decode_us)
        c["sched"].append(r.scheduled - r.arrival if r.scheduled >= 0 else -1)
        c["preempt"].append(r.preemptions)
        a = r.adapter
        c["adapter"].append(-1 if a is None else s(a.name))

    def sample(self, t: int, inst_name: str, waiting: int, running: int, kv: float) -> None:
        s = self.samples
        s["time_us"].append(t)
        s["inst"].append(self.strings(inst_name))
        s["waiting"].append(waiting)
        s["running"].append(running)
        s["kv"].append(kv)

    def sample_pool(self, t: int, pool: str, active: int, starting: int, draining: int, gpus: int,
                    gpu_hours: float, dollars: float) -> None:
        self.pool_samples.append((t, pool, active, starting, draining, gpus, gpu_hours, dollars))

    def write_pools_csv(self, path) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("time_s", "pool", "active", "starting", "draining", "gpus", "gpu_hours", "dollars"))
            for t, pool, a, s, d, g, gh, usd in self.pool_samples:
                w.writerow((f"{t / 1e6:.3f}", pool, a, s, d, g, f"{gh:.6f}", f"{usd:.6f}"))

    # ---- tables -------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.frombuffer(v, dtype=v.typecode) if len(v) else np.zeros(0, dtype=v.typecode)
                for k, v in self.cols.items()}

    def write_requests_csv(self, path) -> None:
        a = self.arrays()
        names = self.strings.names
        state_names = {int(k): v for k, v in STATE_NAMES.items()}
        order = np.argsort(a["id"], kind="stable")
        lora = bool(len(a["adapter"])) and int(a["adapter"].max()) >= 0   # the column only with adapters
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS + ("adapter",) if lora else COLUMNS)
            for i in order.tolist():
                out = int(a["out"][i])
                ttft = int(a["ttft"][i])
                e2e = int(a["e2e"][i])
                done = a["state"][i] == State.COMPLETED
                itl = ""
                if done and out > 1:
                    itl = _ms(a["decode"][i] / (out - 1))
                row = (int(a["id"][i]), names[a["client"][i]], names[a["cls"][i]], names[a["tenant"][i]],
                       names[a["inst"][i]], state_names[int(a["state"][i])], names[a["reason"][i]],
                       f"{a['arrival'][i] / 1e6:.6f}", int(a["inp"][i]), out, int(a["cached"][i]),
                       _ms(ttft) if ttft >= 0 else "", itl, _ms(e2e) if done else "",
                       _ms(a["sched"][i]) if a["sched"][i] >= 0 else "", int(a["preempt"][i]))
                if lora:
                    k = int(a["adapter"][i])
                    row += (names[k] if k >= 0 else "",)
                w.writerow(row)

    def write_timeseries_csv(self, path) -> None:
        s = self.samples
        names = self.strings.names
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(("time_s", "instance", "waiting", "running", "kv_usage"))
            for t, i, q, r, kv in zip(s["time_us"], s["inst"], s["waiting"], s["running"], s["kv"]):
                w.writerow((f"{t / 1e6:.3f}", names[i], q, r, f"{kv:.6f}"))


def _ms(us) -> str:
    return f"{us / 1000:.3f}"
