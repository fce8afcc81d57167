"""The KPIs an evaluation reports (results.csv's columns) and which way each is better; env
specs' claims name them (`harness.claims`)."""
from __future__ import annotations

# KPI columns of results.csv (besides the per-class ones): name -> higher is better
KPIS: dict[str, bool] = {
    "return": True, "goodput_rps": True, "slo_attainment": True,
    "ttft_mean_ms": False, "ttft_p90_ms": False, "ttft_p99_ms": False,
    "itl_mean_ms": False, "itl_p90_ms": False, "itl_p99_ms": False,
    "e2e_mean_ms": False, "e2e_p90_ms": False, "e2e_p99_ms": False,
    "rejected_requests": False, "timed_out_requests": False, "dropped_requests": False,
    "gpu_hours": False, "dollars": False, "rejection_rate": False,
}
# per SLO class: `<class>.<kpi>`
CLASS_KPIS = ("goodput_rps", "slo_attainment", "ttft_p90_ms", "rejection_rate")
# written only for an env whose claim (`kpi:` in its spec) names them, so the other slots'
# results.csv keep their columns. dollars_per_good_request: the GPU bill per request served
# within its SLO (with none served, the whole bill), money and SLO in one figure.
OPTIONAL_KPIS: dict[str, bool] = {"dollars_per_good_request": False}


def higher_is_better(kpi: str) -> bool:
    base = kpi.rsplit(".", 1)[-1]
    return KPIS[base] if base in KPIS else OPTIONAL_KPIS[base]


def has_range(kpi: str) -> bool:
    """A fraction or a latency (percentile): its interval must stay in range (bootstrap)."""
    base = kpi.rsplit(".", 1)[-1]
    return base.endswith("_ms") or base in ("slo_attainment", "rejection_rate")
