"""Scoring predictions against measurements: absolute and signed percentage errors per metric, and
their medians and means overall, per split and per model, GPU and workload."""
from __future__ import annotations

import math

import numpy as np

from .measured import Experiment


METRICS = ("e2e_mean", "e2e_p90", "e2e_p99", "ttft_mean", "ttft_p90", "ttft_p99", "itl_mean")


def ape(pred: float, actual: float) -> float:
    if actual is None or pred is None or not actual or math.isnan(actual) or math.isnan(pred):
        return float("nan")
    return abs(pred - actual) / abs(actual) * 100.0


def signed(pred: float, actual: float) -> float:
    if not actual or math.isnan(actual) or math.isnan(pred):
        return float("nan")
    return (pred - actual) / abs(actual) * 100.0


# ---- aggregation -----------------------------------------------------------------------------
def _agg(vals: list[float]) -> dict:
    v = np.array([x for x in vals if not math.isnan(x)], float)
    if not len(v):
        return {"median": None, "mean": None, "n": 0}
    return {"median": round(float(np.median(v)), 3), "mean": round(float(v.mean()), 3), "n": len(v)}


def summarise(rows: list[dict], stage_level: bool = False) -> dict:
    """median/mean APE per metric over the rows (whole-run rows by default; stage rows if
    stage_level)."""
    sel = [r for r in rows if (r["stage_index"] >= 0 if stage_level else r["stage_index"] == -1)]
    out: dict = {"median_ape": {}, "mean_ape": {}, "n": {}}
    for m in METRICS:
        a = _agg([r["ape"] for r in sel if r["metric"] == m])
        out["median_ape"][m], out["mean_ape"][m], out["n"][m] = a["median"], a["mean"], a["n"]
    return out


def _grouped(rows: list[dict], key: str) -> dict:
    keys = sorted({r[key] for r in rows})
    return {k: summarise([r for r in rows if r[key] == k]) for k in keys}


def _round(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def compare_rows(e: Experiment, pred: dict, split: str) -> list[dict]:
    rows = []
    for si in sorted(k for k in pred if isinstance(k, int)):
        act = e.actual.get(si)
        if act is None:
            continue
        for m in METRICS:
            p, a = pred[si][m], act[m]
            if math.isnan(a):
                continue
            rows.append({"exp_id": e.exp_id, "stage_index": si, "metric": m, "predicted": p, "actual": a,
                         "ape": ape(p, a), "signed_error_pct": signed(p, a), "model": e.model,
                         "hardware": e.hardware, "workload": e.workload, "tp": e.tp, "split": split})
    return rows
