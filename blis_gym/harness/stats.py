"""Confidence intervals over evaluation seeds.

- Per policy and scenario, each KPI's mean over seeds with a 95% interval: Student t
  (mean ± t(0.975, n−1) · s / √n) for unbounded KPIs; for KPIs with a range (fractions such as
  SLO attainment, latencies and their percentiles, which cannot be negative) the percentile
  bootstrap of the mean (same resamples and generator seed as below), which always stays
  within the values seen and so within the KPI's range: a skewed latency (one seed at 23 s, the
  rest near 0.1 s) gets a wide interval above 0, not a negative lower bound.
- Per policy against the baseline, paired by seed (both played the same arrivals): the mean of
  the per-seed differences (policy − baseline), a 95% percentile-bootstrap interval of that mean
  (10,000 resamples of the seeds, from a fixed generator seed, so the interval is
  reproducible), and the win rate: the fraction of seeds on which the policy did better (a tie
  counts one half), "better" meaning higher or lower according to the KPI.

Seeds on which a KPI is undefined (e.g. no request completed, so no TTFT) are left out of
that KPI's statistics; `n` says how many seeds remain.
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 20261201

# Student t quantiles t(0.975, df), df = 1..30; beyond, interpolated in 1/df towards 1.95996.
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010,
         2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739,
         2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959964


def t975(df: int) -> float:
    if df <= len(_T975):
        return _T975[df - 1]
    return _Z975 + (_T975[-1] - _Z975) * len(_T975) / df


def _clean(x) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def mean_ci(values, bounded: bool = False) -> dict:
    """{"mean", "ci95": [lo, hi], "n"} of the finite values (None where undefined); `bounded`:
    the bootstrap interval (within the values' range) instead of Student t."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    m = float(v.mean())
    if n == 1:
        return {"mean": m, "ci95": [m, m], "n": 1}
    if bounded:
        lo, hi = _bootstrap_mean(v)
        return {"mean": m, "ci95": [lo, hi], "n": n}
    half = t975(n - 1) * float(v.std(ddof=1)) / math.sqrt(n)
    return {"mean": m, "ci95": [m - half, m + half], "n": n}


def _bootstrap_mean(v: np.ndarray) -> tuple[float, float]:
    """The 2.5 and 97.5 percentiles of the mean of `v` over the bootstrap resamples."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = v[rng.integers(0, len(v), size=(BOOTSTRAP_SAMPLES, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired(policy_values, baseline_values, higher_is_better: bool) -> dict:
    """Paired difference (policy − baseline) per seed: mean, bootstrap 95% CI, win rate."""
    pairs = [(a, b) for a, b in zip(policy_values, baseline_values)
             if _clean(a) is not None and _clean(b) is not None]
    if not pairs:
        return {"diff_mean": None, "ci95": [None, None], "win_rate": None, "n": 0,
                "better": "higher" if higher_is_better else "lower"}
    d = np.array([a - b for a, b in pairs], dtype=float)
    lo, hi = _bootstrap_mean(d)
    signed = d if higher_is_better else -d
    wins = float(np.sum(signed > 0) + 0.5 * np.sum(signed == 0)) / len(d)
    return {"diff_mean": float(d.mean()), "ci95": [lo, hi], "win_rate": wins, "n": len(d),
            "better": "higher" if higher_is_better else "lower"}
