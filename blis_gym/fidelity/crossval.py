"""Leave-one-out cross-validation of the `calibrated` fit: the honest out-of-sample estimate.

Leave-one-model-out (`by="model"`): one fold per model architecture; the fold refits the
coefficients on every other model's experiments and traces and replays the held-out model's
ones with them. Leave-one-GPU-out (`by="gpu"`) does the same per GPU type. The held-out rows are
also replayed with `trained-physics` and `roofline` (fixed coefficients, nothing to refit), so the
three step-time models are scored on exactly the same rows. Scores are the whole-run APE of the
mean E2E, mean TTFT and ITL of full-length replays (no stage cap).
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
from .calibrate import REGULARISED, Procedure, fit
from .validate import TraceCase, _check_known, ape, run_experiment

__all__ = ["CV_BY", "CV_MAX_EVALS", "case_gpu", "case_model", "case_workload", "cross_validate", "cv_folds",
           "format_cv", "summarise_cv", "write_cv"]

CV_BY = ("model", "gpu")
CV_METRICS = ("e2e_mean", "ttft_mean", "itl_mean")
KINDS = ("calibrated", "trained-physics", "roofline")
#: evaluations per fold: the search stops early (the prior keeps the rest near its centre)
CV_MAX_EVALS = 40
#: load stages cut to this many seconds in the folds' fits (scoring replays run in full)
CV_STAGE_CAP_S = 90.0
GROUPS = {"gpu": "hardware", "model": "model", "workload": "workload"}
TRACE_WORKLOAD = "sharegpt trace"


def _model_id(case) -> str:
    return case.settings["model"] if isinstance(case, TraceCase) else case.model


def _gpu_id(case) -> str:
    return case.settings["hardware"] if isinstance(case, TraceCase) else case.hardware


def case_model(case) -> str:
    """The bundled architecture a case's model id resolves to (name variants are one model)."""
    from blis_gym.sim.latency.model_config import architecture_name
    return architecture_name(_model_id(case))


def case_gpu(case) -> str:
    from blis_gym.sim.latency import load_hardware
    return load_hardware(_gpu_id(case)).name


def case_workload(case) -> str:
    return TRACE_WORKLOAD if isinstance(case, TraceCase) else case.workload


def usable(cases: Sequence) -> tuple[list, list[dict]]:
    """(cases that can be fitted and replayed, [{exp_id, reason}] for the others)."""
    keep, skipped = [], []
    for c in cases:
        reason = "overloaded run (most requests failed)" if c.overloaded else _check_known(_model_id(c), _gpu_id(c))
        if reason:
            skipped.append({"exp_id": c.exp_id, "reason": reason})
        else:
            keep.append(c)
    return keep, skipped


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
                   stage_cap_s: float | None = CV_STAGE_CAP_S, workers: int = 1,
                   log: Callable[[str], None] | None = None) -> dict:
    """Refit per fold, replay the held-out cases with the fold's coefficients and with the two
    fixed models; {"by", "folds": [...], "rows": [...], "summary": ..., "skipped": [...]}."""
    cases, skipped = usable(cases)
    folds = cv_folds(cases, by)
    inter = dict(DEFAULT_INTERCONNECT)
    rows, fold_info = [], []
    for i, (key, train, test) in enumerate(folds, 1):
        if log:
            log(f"fold {i}/{len(folds)}: {by} {key} held out ({len(test)} cases), fitting on {len(train)}")
        params, obj, evals = fit(train, interconnect=inter, stage_cap_s=stage_cap_s, max_evals=max_evals,
                                 procedure=procedure, workers=workers)
        fold_info.append({"held_out": key, "trained_on": [c.exp_id for c in train], "scored": [c.exp_id for c in test],
                          "objective": round(obj, 4), "evaluations": evals,
                          "params": {k: round(v, 6) for k, v in params.items()}})
        for c in test:
            preds = {k: _predict(c, k, params, inter) for k in KINDS}      # the fixed models ignore params
            for m in CV_METRICS:
                measured = preds["calibrated"][m][1]
                row = {"fold": key, "exp_id": c.exp_id, "model": case_model(c), "hardware": case_gpu(c),
                       "workload": case_workload(c), "metric": m, "measured": measured}
                for k in KINDS:
                    row[f"pred_{k}"] = preds[k][m][0]
                    row[f"ape_{k}"] = ape(preds[k][m][0], measured)
                rows.append(row)
        if log:
            e2e = [r["ape_calibrated"] for r in rows if r["fold"] == key and r["metric"] == "e2e_mean"]
            log(f"fold {key}: {evals} evaluations, held-out E2E APE {', '.join(f'{x:.1f}' for x in e2e)}")
    return {"by": by, "folds": fold_info, "rows": rows, "summary": summarise_cv(rows), "skipped": skipped}


def _median(vals) -> float | None:
    v = [x for x in vals if x is not None and not math.isnan(x)]
    return round(float(np.median(v)), 2) if v else None


def _medians(rows: list[dict]) -> dict:
    return {k: {m: _median(r[f"ape_{k}"] for r in rows if r["metric"] == m) for m in CV_METRICS} for k in KINDS}


def summarise_cv(rows: list[dict]) -> dict:
    """Median APE per step-time model and metric over all held-out rows and per GPU, model and
    workload, plus the groups where the refitted `calibrated` is worse than trained-physics on E2E."""
    out: dict = {"median_ape": _medians(rows), "n": len({r["exp_id"] for r in rows})}
    worse = []
    for group, col in GROUPS.items():
        out[f"by_{group}"] = {}
        for g in dict.fromkeys(r[col] for r in rows):
            sel = [r for r in rows if r[col] == g]
            med = _medians(sel)
            out[f"by_{group}"][g] = {"n": len({r["exp_id"] for r in sel}), **med}
            cal, tp = med["calibrated"]["e2e_mean"], med["trained-physics"]["e2e_mean"]
            if cal is not None and tp is not None and cal > tp:
                worse.append({"group": group, "name": g, "calibrated": cal, "trained-physics": tp})
    out["calibrated_worse_than_trained_physics_e2e"] = worse
    return out


def format_cv(result: dict) -> list[str]:
    """The table as Markdown lines: one row per group, E2E / TTFT / ITL median APE per model."""
    s = result["summary"]
    head = "| rows | n | " + " | ".join(f"{k}{' (CV)' if k == 'calibrated' else ''}" for k in KINDS) + " |"
    lines = [head, "|" + "---|" * (2 + len(KINDS))]

    def cells(med: dict) -> str:
        return " | ".join(" / ".join("—" if med[k][m] is None else f"{med[k][m]:.1f}" for m in CV_METRICS)
                          for k in KINDS)
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
    doc = {k: result[k] for k in ("by", "summary", "folds", "skipped")}
    json_path.write_text(json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n")
    return [csv_path, json_path]
