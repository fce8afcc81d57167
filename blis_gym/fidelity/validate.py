"""Sim-to-real validation: replay measured vLLM experiments and report the error.

Two inputs (detected from the CSV header):

* aggregates (the columns of BLIS's training runs, ``h100_trainval_aggregates.csv``; see
  docs/fidelity.md): one row per (experiment, stage); each experiment is rebuilt as a scenario
  (model, GPU, TP, vLLM batch limits, KV blocks or gpu_mem_util, the inference-perf
  shared-prefix workload with deterministic arrivals and its stages back to back) and run; the
  predicted E2E/TTFT mean, p90, p99 and ITL of every load stage and of the whole run are
  compared with the measured ones;
* a per-request trace (``*_requests.csv``: ``queued_s, input_tokens, output_tokens, ttft_ms,
  e2e_ms``; engine settings from the sibling ``*_meta.json`` or arguments): replayed at the
  engine arrival times; aggregate errors plus per-request Pearson r.

Outputs: ``validation.csv`` (one row per experiment, stage and metric), ``summary.json`` (median
and mean APE overall, per split, by model, hardware and workload), ``validation.svg`` (predicted
against measured).

This module runs the stages in order; each lives in its own: reading the files (`measured.py`),
resolving the engine and step-time model (`engine_setup.py`), replaying (`replay.py`), scoring
(`scoring.py`) and writing the report (`report.py`).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from blis_gym.errors import ConfigError
from blis_gym.sim.limits import MAX_DURATION_S, MIN_DURATION_S

from ..sim.latency.calibrated import load_calibration
from .engine_setup import DEFAULT_LATENCY_MODEL, LATENCY_MODELS, _check_known, _unsupported, _unsupported_trace
from .fit_record import fit_record, split_of
from .measured import (AGG_REQUIRED, TEMPLATE_TOKENS, TRACE_REQUIRED, Experiment, _read_header, load_experiments,
                       resolve_measurements)
from .replay import load_trace, run_experiment
from .report import write_outputs
from .scoring import METRICS, _grouped, compare_rows, summarise

__all__ = [
    "METRICS",
    "TEMPLATE_TOKENS",
    "Experiment",
    "load_experiments",
    "run_experiment",
    "summarise",
    "validate_aggregates",
    "validate_file",
    "validate_trace",
]


def _latency_models(latency_model: str) -> tuple[str, ...]:
    key = str(latency_model or DEFAULT_LATENCY_MODEL).strip().lower().replace("_", "-")
    if key == "all":
        return LATENCY_MODELS
    if key not in LATENCY_MODELS:
        raise ConfigError("--latency-model", f"{latency_model!r} is not one of {', '.join(LATENCY_MODELS)}, all")
    return (key,)


def _aggregates_summary(rows: list[dict]) -> dict:
    return {**summarise(rows), "stages": summarise(rows, stage_level=True), "by_split": _grouped(rows, "split"),
            "by_model": _grouped(rows, "model"), "by_hardware": _grouped(rows, "hardware"),
            "by_workload": _grouped(rows, "workload")}


def validate_aggregates(path: str | Path, out_dir: str | Path | None = None, *,
                        calibration: str | Path | None = None, stage_cap_s: float | None = None,
                        only: list[str] | None = None, progress: Callable | None = None,
                        plot: bool = True, latency_model: str = DEFAULT_LATENCY_MODEL,
                        model_config: str | Path | None = None) -> dict:
    """Validate every experiment of an aggregates CSV with one step-time model, or with each
    (`latency_model="all"`, on the same experiments); writes validation.csv, summary.json and a
    plot to out_dir (if given) and returns the summary."""
    kinds = _latency_models(latency_model)
    stage_cap_s = check_stage_cap(stage_cap_s)
    exps = load_experiments(path)
    if only:
        exps = [e for e in exps if e.exp_id in only]
        if not exps:
            raise ConfigError("--only", f"no experiment with id in {only}")
    params, inter = load_calibration(calibration)
    fits = {k: fit_record(k, calibration) for k in kinds}
    mc = str(model_config) if model_config else None
    rows: list[dict] = []
    skipped: list[dict] = []
    per_exp: dict = {}
    todo = []
    for e in exps:
        reason = _check_known(e.model, e.hardware, mc) or _unsupported(e, mc)
        if not reason and e.overloaded:
            reason = "overloaded run: " + e.notes
        if reason:
            skipped.append({"exp_id": e.exp_id, "reason": reason})
        else:
            todo.append(e)
    total = sum(e.num_requests(stage_cap_s) for e in todo) * len(kinds)
    done = 0
    for kind in kinds:
        for e in list(todo):
            label = f"{kind} {e.exp_id}" if len(kinds) > 1 else e.exp_id
            cb = (lambda n, _t, base=done, lab=label: progress(base + n, total, lab)) if progress else None
            pred = run_experiment(e, params, inter, stage_cap_s=stage_cap_s, progress=cb, latency_model=kind,
                                  model_config=mc)
            done += e.num_requests(stage_cap_s)
            if progress:
                progress(done, total, label)
            if not pred["_completed"]:       # the engine can serve none of its requests
                skipped.append({"exp_id": e.exp_id, "reason": pred["_unserved"]})
                todo.remove(e)
                continue
            split = split_of(fits[kind], Path(path).name, e.exp_id)
            rows += [{**r, "latency_model": kind} for r in compare_rows(e, pred, split)]
            per_exp.setdefault(e.exp_id, {"model": e.model, "workload": e.workload, "tp": e.tp, "dp": e.dp,
                                          "split": {}, "completed": {}, "injected": pred["_injected"]})
            per_exp[e.exp_id]["completed"][kind] = pred["_completed"]
            per_exp[e.exp_id]["split"][kind] = split
            if pred["_unserved"]:
                per_exp[e.exp_id]["unserved"] = pred["_unserved"]
    summary = {
        "input": path.name if isinstance(path, Path) else Path(path).name, "kind": "aggregates",
        "calibration": str(calibration or "bundled calibrated.yaml"),
        "stage_cap_s": stage_cap_s, "experiments": len(todo), "skipped": skipped,
    }
    if len(kinds) == 1:
        summary["latency_model"] = kinds[0]
        summary.update(_aggregates_summary(rows))
    else:
        by_kind = {k: _aggregates_summary([r for r in rows if r["latency_model"] == k]) for k in kinds}
        summary["latency_model"] = "all"
        for key in ("median_ape", "mean_ape", "n"):          # {latency model: {metric: value}}
            summary[key] = {k: by_kind[k][key] for k in kinds}
        summary["by_latency_model"] = by_kind
    summary["per_experiment"] = per_exp
    summary["note"] = ("median_ape/mean_ape: over experiments (whole-run rows, stage_index -1), in percent "
                       "(per latency model when latency_model is all); `stages`: over load stages.")
    if out_dir is not None:
        write_outputs(Path(out_dir), rows, summary, plot=plot)
    summary["_rows"] = rows
    return summary


def check_stage_cap(stage_cap_s):
    """None (full-length stages) or a stage length in seconds, checked."""
    if stage_cap_s is None:
        return None
    ok = isinstance(stage_cap_s, (int, float)) and not isinstance(stage_cap_s, bool)
    if not ok or not MIN_DURATION_S <= stage_cap_s <= MAX_DURATION_S:   # NaN fails both comparisons
        raise ConfigError("--stage-cap", f"must be a number of seconds in [{MIN_DURATION_S:g}, {MAX_DURATION_S:g}] "
                                         f"(got {stage_cap_s!r})")
    return float(stage_cap_s)


def validate_trace(path: str | Path, out_dir: str | Path | None = None, *, calibration=None,
                   overrides: Mapping | None = None, progress: Callable | None = None, plot: bool = True,
                   latency_model: str = DEFAULT_LATENCY_MODEL, model_config: str | Path | None = None) -> dict:
    """Replay a per-request trace at its engine arrival times and compare request by request
    (with one step-time model, or with each when latency_model is "all")."""
    kinds = _latency_models(latency_model)
    path = Path(path)
    case = load_trace(path, overrides)
    st = case.settings
    mc = str(model_config) if model_config else None
    name = f"{path.stem}"
    reason = _check_known(st["model"], st["hardware"], mc) or _unsupported_trace(st, mc)
    if reason:
        summary = {"input": path.name, "kind": "per_request", "skipped": [{"exp_id": name, "reason": reason}]}
        if out_dir is not None:
            write_outputs(Path(out_dir), [], summary, plot=False)
        return summary
    lines = case.lines
    params, inter = load_calibration(calibration)
    results = {k: case.replay(params, inter, k, mc, progress) for k in kinds}
    for k, res in results.items():        # whether the model's coefficients were fitted on this trace
        split = split_of(fit_record(k, calibration), path.name, path.stem, trace=True)
        res["rows"] = [{**r, "split": split} for r in res["rows"]]
    never = next((res["unserved"] for res in results.values() if not res["completed"]), "")
    if never:                            # the engine can serve none of its requests
        summary = {"input": path.name, "kind": "per_request", "settings": dict(st), "requests": len(case.lines),
                   "completed": 0, "skipped": [{"exp_id": name, "reason": never}]}
        if out_dir is not None:
            write_outputs(Path(out_dir), [], summary, plot=False)
        return summary
    common = {"input": path.name, "kind": "per_request", "settings": {k: v for k, v in st.items()},
              "calibration": str(calibration or "bundled calibrated.yaml"), "requests": len(lines), "skipped": [],
              "note": "APE of the aggregate statistics in percent; per_request_mape = mean over requests of "
                      f"|sim - real| / real; replayed at {case.t_col}"
                      f"{' (engine arrival)' if case.t_col == 'queued_s' else ''}."}
    rows = [r for res in results.values() for r in res["rows"]]
    if len(kinds) == 1:
        res = results[kinds[0]]
        summary = {**common, "latency_model": kinds[0], "completed": res["completed"], **summarise(res["rows"]),
                   "pearson_r": res["pearson_r"], "per_request_mape": res["per_request_mape"]}
    else:
        by_kind = {k: {"completed": res["completed"], **summarise(res["rows"]), "pearson_r": res["pearson_r"],
                       "per_request_mape": res["per_request_mape"]} for k, res in results.items()}
        summary = {**common, "latency_model": "all", "by_latency_model": by_kind,
                   **{key: {k: by_kind[k][key] for k in kinds} for key in ("median_ape", "mean_ape", "n")}}
    if out_dir is not None:
        write_outputs(Path(out_dir), rows, summary, plot=plot)
    summary["_rows"] = rows
    summary["_per_request"] = results[kinds[0]]["per_request"]
    return summary


def validate_file(path: str | Path, out_dir=None, **kw) -> dict:
    """Aggregates CSV or per-request trace, detected from the header (a bare file name of a
    shipped measurements file is found in the package)."""
    path = resolve_measurements(path)
    check_stage_cap(kw.get("stage_cap_s"))
    header = _read_header(path)
    if "exp_id" in header or "stage_index" in header:
        kw.pop("overrides", None)
        return validate_aggregates(path, out_dir, **kw)
    if all(c in header for c in TRACE_REQUIRED):
        for k in ("stage_cap_s", "only"):
            kw.pop(k, None)
        return validate_trace(path, out_dir, **kw)
    raise ConfigError("file", f"{path}: neither an aggregates CSV (columns {', '.join(AGG_REQUIRED[:3])}, ...) "
                              f"nor a per-request trace (columns {', '.join(TRACE_REQUIRED)})")

