"""Summaries of a run: the same figures for the whole run, each SLO class and each tenant."""
from __future__ import annotations

import numpy as np

from ..engine.request import State
from .collector import PCTS, percentiles, sorted_weighted_percentiles, weighted_percentiles


def _r(v, nd=6):
    return None if v is None else round(float(v), nd)


def _weighted_itl(itl_ms: np.ndarray, weights: np.ndarray) -> dict:
    """Token-weighted statistics of per-request ITLs (each request counts N - 1 times)."""
    vals, inverse = np.unique(itl_ms, return_inverse=True)
    counts = np.bincount(inverse, weights=weights, minlength=len(vals)).astype(np.int64)
    return sorted_weighted_percentiles(vals, counts)


def latency_block(a: dict, mask: np.ndarray, dur_s: float, itl_hist: dict | None = None) -> dict:
    """Counts, throughput and latency statistics over the records selected by `mask`."""
    state = a["state"][mask]
    done_m = mask & (a["state"] == State.COMPLETED)
    out = {
        "injected_requests": int(mask.sum()),
        "completed_requests": int((state == State.COMPLETED).sum()),
        "timed_out_requests": int((state == State.TIMED_OUT).sum()),
        "dropped_requests": int((state == State.DROPPED).sum()),
        "rejected_requests": int((state == State.REJECTED).sum()),
        "input_tokens": int(a["inp"][done_m].sum()),
        "output_tokens": int(a["out"][done_m].sum()),
    }
    completed = out["completed_requests"]
    out["requests_per_s"] = _r(completed / dur_s) if dur_s else 0.0
    out["output_tokens_per_s"] = _r(out["output_tokens"] / dur_s) if dur_s else 0.0
    multi = done_m & (a["out"] > 1)
    per_req_itl = a["decode"][multi] / (a["out"][multi] - 1) / 1000
    if itl_hist is not None:
        itl = {k: (None if v is None else v / 1000) for k, v in weighted_percentiles(itl_hist).items()}
    else:
        itl = _weighted_itl(per_req_itl, a["out"][multi] - 1)
    sched = a["sched"][mask]
    for name, stats in (("ttft", percentiles(a["ttft"][done_m] / 1000)), ("itl", itl),
                        ("e2e", percentiles(a["e2e"][done_m] / 1000)),
                        ("scheduling_delay", percentiles(sched[sched >= 0] / 1000))):
        for k in ("mean", *(f"p{p}" for p in PCTS)):
            out[f"{name}_{k}_ms"] = _r(stats[k])
    out["tpot_mean_ms"] = _r(per_req_itl.mean()) if per_req_itl.size else None
    return out


def goodput(a: dict, mask: np.ndarray, dur_s: float, targets: dict | None) -> dict:
    """SLO attainment: a completed request is good iff it meets every target given for its
    class (TTFT, its mean ITL, E2E, in ms). Attainment is over all injected requests."""
    if not targets:
        return {}
    good = mask & (a["state"] == State.COMPLETED)
    if "ttft_ms" in targets:
        good &= a["ttft"] <= targets["ttft_ms"] * 1000
    if "e2e_ms" in targets:
        good &= a["e2e"] <= targets["e2e_ms"] * 1000
    if "itl_ms" in targets:
        n = np.maximum(a["out"] - 1, 1)
        good &= (a["decode"] / n) <= targets["itl_ms"] * 1000
    n_good = int(good.sum())
    injected = int(mask.sum())
    return {"good_requests": n_good, "goodput_rps": _r(n_good / dur_s) if dur_s else 0.0,
            "slo_attainment": _r(n_good / injected) if injected else None, "slo_targets": dict(targets)}


def jain(values) -> float:
    """Jain's fairness index (Σx)² / (n Σx²); 1 when all equal (or all zero)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0 or not np.any(x):
        return 1.0
    return float(x.sum() ** 2 / (x.size * (x * x).sum()))
