"""BLIS cohorts: a population of identical clients, and the activity windows of their patterns.

A cohort of `population` members becomes clients `<id>-0 … <id>-<population-1>`, each with
rate_fraction / population (so the cohort as a whole keeps its fraction) and, with
`prefix_sharing: per_member`, its own prefix group `<group>-<j>`. Its patterns become activity
windows [start, end) in µs, the same for every member (their union where several are given):

- diurnal {peak_hour, peak_to_trough_ratio R}: 24 one-hour windows from t = 0; in hour h the
  members are active for the first m(h) of the hour, m(h) = (1 + cos(2π(h − peak)/24))/2 · (1 − 1/R)
  + 1/R, so the hourly volume follows the cosine (a square wave within each hour);
- spike {start_time_us, duration_us}: one window;
- drain {start_time_us, ramp_duration_us}: active from 0 to the start, then 10 equal segments
  of the ramp active for 100 %, 90 %, …, 10 % of their length (a stepwise linear ramp-down).
"""
from __future__ import annotations

import math

US_PER_HOUR = 3_600_000_000
DRAIN_SEGMENTS = 10


def diurnal_windows(peak_hour: int, peak_to_trough: float) -> list[tuple[int, int]]:
    out = []
    for h in range(24):
        m = (1 + math.cos(2 * math.pi * (h - peak_hour) / 24)) / 2 * (1 - 1 / peak_to_trough) + 1 / peak_to_trough
        active = min(US_PER_HOUR, max(1, int(US_PER_HOUR * m)))
        out.append((h * US_PER_HOUR, h * US_PER_HOUR + active))
    return out


def drain_windows(start_us: int, ramp_us: int) -> list[tuple[int, int]]:
    out = [(0, start_us)] if start_us > 0 else []
    seg = max(1, ramp_us // DRAIN_SEGMENTS)
    for i in range(DRAIN_SEGMENTS):
        s = start_us + i * seg
        out.append((s, s + max(1, int(seg * (DRAIN_SEGMENTS - i) / DRAIN_SEGMENTS))))
    return out


def members(cohort: dict, population: int, windows: list[tuple[int, int]]) -> list[dict]:
    """The member clients of a cohort, as BLIS client mappings (cohort-only keys removed)."""
    base = {k: v for k, v in cohort.items()
            if k not in ("id", "population", "prefix_sharing", "diurnal", "spike", "drain")}
    base["rate_fraction"] = float(cohort.get("rate_fraction", 1.0)) / population
    if windows:
        base["lifecycle"] = {"windows": [{"start_us": s, "end_us": e} for s, e in windows]}
    per_member = cohort.get("prefix_sharing") == "per_member" and cohort.get("prefix_group")
    out = []
    for j in range(population):
        m = dict(base, id=f"{cohort['id']}-{j}")
        if per_member:
            m["prefix_group"] = f"{cohort['prefix_group']}-{j}"
        out.append(m)
    return out
