"""Leave-one-out cross-validation of the fitted step-time models: the honest out-of-sample estimate.

Leave-one-model-out (`by="model"`): one fold per model architecture; the fold refits the
`hybrid` (ridge least squares, fidelity/hybrid_fit.py) and `calibrated` (pattern search,
fidelity/calibrate.py) coefficients on every other model's experiments and traces and replays the
held-out model's ones with them. Leave-one-GPU-out (`by="gpu"`) does the same per GPU type. The
held-out rows are also replayed with `trained-physics` and `roofline` (fixed coefficients, nothing
to refit), so the step-time models are scored on exactly the same rows. Scores are the whole-run
APE of the mean E2E, mean TTFT, ITL, E2E p99 and TTFT p99 of full-length replays (no stage cap).
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from blis_gym.errors import ConfigError

from ..sim.latency.calibrated import DEFAULT_INTERCONNECT
from .calibrate import REGULARISED, Procedure, _gpu_id, _model_id, fit, usable
from .hybrid_fit import fit_hybrid, observe, prior_centre
from .replay import TraceCase, run_experiment
from .scoring import ape

__all__ = ["CV_BY", "CV_MAX_EVALS", "case_gpu", "case_model", "case_workload", "cross_validate", "cv_folds",
           "format_cv", "summarise_cv", "write_cv"]

CV_BY = ("model", "gpu")
CV_METRICS = ("e2e_mean", "ttft_mean", "itl_mean", "e2e_p99", "ttft_p99")
KINDS = ("hybrid", "calibrated", "trained-physics", "roofline")
FITTED = ("hybrid", "calibrated")           # refitted per fold; the others have fixed coefficients
#: evaluations per fold: the search stops early (the prior keeps the rest near its centre)
CV_MAX_EVALS = 40
#: load stages cut to this many seconds in the folds' fits (scoring replays run in full)
CV_STAGE_CAP_S = 90.0
GROUPS = {"gpu": "hardware", "model": "model", "workload": "workload"}
TRACE_WORKLOAD = "sharegpt trace"


def case_model(case) -> str:
    """The bundled architecture a case's model id resolves to (name variants are one model)."""
    from blis_gym.sim.latency.model_config import architecture_name
    return architecture_name(_model_id(case))


def case_gpu(case) -> str:
    from blis_gym.sim.latency import load_hardware
    return load_hardware(_gpu_id(case)).name


def case_workload(case) -> str:
    return TRACE_WORKLOAD if isinstance(case, TraceCase) else case.workload


def cv_folds(cases: Sequence, by: str) -> list[tuple[str, list, list]]:
    """[(held-out key, training cases, held-out cases)], one fold per model or GPU, in the
    order the keys first appear; a fold's training set never holds a held-out key's case."""
    if by not in CV_BY:
        raise ConfigError("--cv", f"{by!r} is not one of {', '.join(CV_BY)}")
    key = case_model if by == "model" else case_gpu
    keys = list(dict.fromkeys(key(c) for c in cases))
    if len(keys) < 2:
        found = keys[0] if keys else "none"
        raise ConfigError("--cv", f"leave-one-{by}-out needs experiments of at least two {by}s; the data has "
                                  f"only {found} (add --data files)")
    return [(k, [c for c in cases if key(c) != k], [c for c in cases if key(c) == k]) for k in keys]


def _predict(case, kind: str, params, inter) -> dict:
    """{metric: (predicted, measured)} of the whole run, full-length replay."""
    if isinstance(case, TraceCase):
        return {r["metric"]: (r["predicted"], r["actual"]) for r in case.replay(params, inter, kind)["rows"]
                if r["metric"] in CV_METRICS}
    pred = run_experiment(case, params, inter, latency_model=kind)
    return {m: (pred[-1][m], case.actual[-1][m]) for m in CV_METRICS}


def cross_validate(cases: Sequence, by: str, *, procedure: Procedure = REGULARISED, max_evals: int = CV_MAX_EVALS,
                   stage_cap_s: float | None = CV_STAGE_CAP_S, workers: int = 1, kinds: Sequence[str] = KINDS,
                   log: Callable[[str], None] | None = None) -> dict:
    """Refit the fitted models per fold, replay the held-out cases with the fold's coefficients
    and with the fixed models; {"by", "kinds", "folds": [...], "rows": [...], "summary": ...,
    "skipped": [...]}."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError("--latency-model", f"{', '.join(bad) or 'none'}: allowed: {', '.join(KINDS)}")
    kinds = [k for k in KINDS if k in kinds]
    cases, skipped = usable(cases)
    folds = cv_folds(cases, by)
    inter = dict(DEFAULT_INTERCONNECT)
    # every fold's hybrid fit starts from the same coefficients: observe each case there once
    first = {c.exp_id: observe(c, prior_centre()) for c in cases} if "hybrid" in kinds else {}
    rows, fold_info = [], []
    for i, (key, train, test) in enumerate(folds, 1):
        if log:
            log(f"fold {i}/{len(folds)}: {by} {key} held out ({len(test)} cases), fitting on {len(train)}")
        params: dict = {}
        info = {"held_out": key, "trained_on": [c.exp_id for c in train], "scored": [c.exp_id for c in test]}
        if "hybrid" in kinds:
            params["hybrid"] = fit_hybrid(train, first_rows=first)
            info["hybrid"] = {k: round(v, 6) for k, v in params["hybrid"].items()}
        if "calibrated" in kinds:
            p, obj, evals = fit(train, interconnect=inter, stage_cap_s=stage_cap_s, max_evals=max_evals,
                                procedure=procedure, workers=workers)
            params["calibrated"] = p
            info.update({"objective": round(obj, 4), "evaluations": evals,
                         "params": {k: round(v, 6) for k, v in p.items()}})
        fold_info.append(info)
        for c in test:
            preds = {k: _predict(c, k, params.get(k, {}), inter) for k in kinds}
            for m in CV_METRICS:
                measured = preds[kinds[0]][m][1]
                row = {"fold": key, "exp_id": c.exp_id, "model": case_model(c), "hardware": case_gpu(c),
                       "workload": case_workload(c), "metric": m, "measured": measured}
                for k in kinds:
                    row[f"pred_{k}"] = preds[k][m][0]
                    row[f"ape_{k}"] = ape(preds[k][m][0], measured)
                rows.append(row)
        if log:
            e2e = [r[f"ape_{kinds[0]}"] for r in rows if r["fold"] == key and r["metric"] == "e2e_mean"]
            log(f"fold {key}: held-out E2E APE ({kinds[0]}) {', '.join(f'{x:.1f}' for x in e2e)}")
    return {"by": by, "kinds": kinds, "folds": fold_info, "rows": rows, "summary": summarise_cv(rows, kinds),
            "skipped": skipped}


def _median(vals) -> float | None:
    v = [x for x in vals if x is not None and not math.isnan(x)]
    return round(float(np.median(v)), 2) if v else None


def _medians(rows: list[dict], kinds: Sequence[str]) -> dict:
    return {k: {m: _median(r[f"ape_{k}"] for r in rows if r["metric"] == m) for m in CV_METRICS} for k in kinds}


#: what the default model must not lose to (the issue's bar): (metric, other model)
BARS = (("e2e_mean", "trained-physics"), ("itl_mean", "trained-physics"), ("ttft_mean", "calibrated"))


def _worse(med: dict, kinds: Sequence[str]) -> list[dict]:
    """Where the first model's median is above another's, on the metrics BARS names."""
    out = []
    for m, other in BARS:
        if kinds[0] != other and other in kinds:
            a, b = med[kinds[0]][m], med[other][m]
            if a is not None and b is not None and a > b:
                out.append({"metric": m, kinds[0]: a, other: b})
    return out


def summarise_cv(rows: list[dict], kinds: Sequence[str] = KINDS) -> dict:
    """Median APE per step-time model and metric over all held-out rows and per GPU, model and
    workload, plus the groups where the first model (the default) is worse than trained-physics
    on E2E or ITL, or than calibrated on TTFT."""
    out: dict = {"median_ape": _medians(rows, kinds), "n": len({r["exp_id"] for r in rows})}
    worse = [{"group": "all", "name": "all held-out rows", **w} for w in _worse(out["median_ape"], kinds)]
    for group, col in GROUPS.items():
        out[f"by_{group}"] = {}
        for g in dict.fromkeys(r[col] for r in rows):
            sel = [r for r in rows if r[col] == g]
            med = _medians(sel, kinds)
            out[f"by_{group}"][g] = {"n": len({r["exp_id"] for r in sel}), **med}
            worse += [{"group": group, "name": g, **w} for w in _worse(med, kinds)]
    out["default_worse"] = worse
    return out


def format_cv(result: dict) -> list[str]:
    """The table as Markdown lines: one row per group, E2E / TTFT / ITL / E2E p99 / TTFT p99
    median APE per model."""
    s = result["summary"]
    kinds = result.get("kinds", KINDS)
    head = "| rows | n | " + " | ".join(f"{k}{' (CV)' if k in FITTED else ''}" for k in kinds) + " |"
    lines = [head, "|" + "---|" * (2 + len(kinds))]

    def cells(med: dict) -> str:
        return " | ".join(" / ".join("—" if med[k][m] is None else f"{med[k][m]:.1f}" for m in CV_METRICS)
                          for k in kinds)
    lines.append(f"| **all held-out rows** | {s['n']} | {cells(s['median_ape'])} |")
    for group in GROUPS:
        for g, med in s[f"by_{group}"].items():
            lines.append(f"| {group} {g} | {med['n']} | {cells(med)} |")
    return lines


def write_cv(out_dir: str | Path, result: dict) -> list[Path]:
    """OUT/cv_<by>.csv (one row per held-out case and metric) and OUT/cv_<by>.json (folds,
    coefficients per fold, summary)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by = result["by"]
    csv_path, json_path = out / f"cv_{by}.csv", out / f"cv_{by}.json"
    cols = list(result["rows"][0]) if result["rows"] else ["fold", "exp_id", "metric"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in result["rows"]:
            w.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    doc = {k: result[k] for k in ("by", "kinds", "summary", "folds", "skipped")}
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n")
    return [csv_path, json_path]
