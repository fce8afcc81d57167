"""Replaying a measured run in the simulator: an aggregates experiment stage by stage, a trace at
its engine arrival times; the predicted latencies as the measured ones are summarised."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from blis_gym.errors import ConfigError

from ..sim.latency.calibrated import load_calibration
from .engine_setup import _model_source, coefficients_for, sim_config
from .measured import TEMPLATE_TOKENS, TRACE_REQUIRED, Experiment, _read_header, _trace_columns, _trace_settings
from .outcome import unserved
from .scoring import METRICS, ape, signed


def _stats(ttft_us: np.ndarray, e2e_us: np.ndarray, out_len: float) -> dict:
    if len(e2e_us) == 0:
        return {m: float("nan") for m in METRICS}
    t = ttft_us / 1000.0
    e = e2e_us / 1000.0
    r = {"e2e_mean": float(e.mean()), "e2e_p90": float(np.percentile(e, 90)), "e2e_p99": float(np.percentile(e, 99)),
         "ttft_mean": float(t.mean()), "ttft_p90": float(np.percentile(t, 90)),
         "ttft_p99": float(np.percentile(t, 99))}
    r["itl_mean"] = (r["e2e_mean"] - r["ttft_mean"]) / (out_len - 1) if out_len > 1 else float("nan")
    return r


def run_experiment(e: Experiment, params: Mapping[str, float] | None = None,
                   interconnect: Mapping[str, float] | None = None, stage_cap_s: float | None = None,
                   template_tokens: int = TEMPLATE_TOKENS, progress: Callable | None = None,
                   latency_model: str = "calibrated", model_config: str | None = None,
                   with_sim: Callable | None = None) -> dict:
    """Predicted metrics per stage index (-1 = whole run) for experiment e (`with_sim` is handed
    the Simulation before it runs)."""
    from blis_gym.sim.engine import State
    from blis_gym.sim.simulation import Simulation
    from blis_gym.sim.workload.builders import inference_perf_workload

    if params is None or interconnect is None:
        p0, i0 = load_calibration()
        params = params or p0
        interconnect = interconnect or i0
    params = coefficients_for(latency_model, params)
    stages = list(zip([r for r, _ in e.stages], e.stage_durations(stage_cap_s)))
    # inference-perf's shared_prefix generator builds groups x prompts fixed prompts and cycles
    # through them (every prompt is re-sent); request_timeout is null (no client deadline).
    workload = inference_perf_workload(e.num_groups, e.prompts_per_group, e.system_prompt_len,
                                       e.question_len + template_tokens, e.output_len, stages,
                                       repeat_questions=True, timeout_us=0)
    cfg = sim_config(_model_source(e.model, model_config), e.hardware, e.tp, workload, params, interconnect,
                     max_num_seqs=e.max_num_seqs, max_num_batched_tokens=e.max_num_batched_tokens,
                     total_kv_blocks=e.total_kv_blocks, gpu_mem_util=e.gpu_mem_util, name=f"validate-{e.exp_id}",
                     dp=e.dp, vllm_version=e.vllm_version, latency_model=latency_model,
                     cpu_kv_blocks=e.cpu_kv_blocks, expert_parallel=e.expert_parallel)
    sim = Simulation(cfg)
    if with_sim:
        with_sim(sim)
    sim.run(progress=progress)
    a = sim.metrics.arrays()
    ok = a["state"] == int(State.COMPLETED)
    arr, ttft, e2e = a["arrival"][ok], a["ttft"][ok], a["e2e"][ok]
    out = {-1: _stats(ttft, e2e, e.output_len)}
    ends = np.cumsum([d * 1e6 for _r, d in stages])
    stage = np.minimum(np.searchsorted(ends + 0.5, arr, side="left"), len(ends) - 1)
    for i in range(len(e.stages)):
        sel = stage == i
        out[i] = _stats(ttft[sel], e2e[sel], e.output_len)
    out["_completed"] = int(ok.sum())
    out["_injected"] = len(a["state"])
    out["_unserved"] = unserved(sim)
    return out


def _trace_stats(ttft_ms: np.ndarray, e2e_ms: np.ndarray, itl_ms: np.ndarray) -> dict:
    """Mean and tail of TTFT and E2E, mean ITL; NaN for what has no samples."""
    def stat(x, q=None):
        return float("nan") if not len(x) else float(x.mean() if q is None else np.percentile(x, q))
    return {"e2e_mean": stat(e2e_ms), "e2e_p90": stat(e2e_ms, 90), "e2e_p99": stat(e2e_ms, 99),
            "ttft_mean": stat(ttft_ms), "ttft_p90": stat(ttft_ms, 90), "ttft_p99": stat(ttft_ms, 99),
            "itl_mean": stat(itl_ms)}


def _replay_trace(path: Path, st: Mapping, cols: dict, lines: np.ndarray, t_col: str, params, inter, kind: str,
                  model_config: str | None, progress: Callable | None, with_sim: Callable | None = None) -> dict:
    """One replay of a per-request trace with step-time model `kind`: comparison rows, Pearson r,
    per-request MAPE and the per-request latencies."""
    from blis_gym.sim.engine import State
    from blis_gym.sim.simulation import Simulation
    from blis_gym.sim.workload import Client, Workload
    from blis_gym.sim.workload.traces import TraceData

    name = path.stem
    arr, inp, outl, ttft_real, e2e_real = (cols[c] for c in (t_col,) + TRACE_REQUIRED)
    n = len(arr)
    order = np.argsort(arr, kind="stable")
    # Engine-clock measurements (in-process AsyncLLM, no HTTP): TTFT and E2E start at the engine
    # queue, so the API-server overhead and the post-stream overhead are not part of them. An HTTP
    # client's recording (`blis-gym observe`, meta "clock": "client") includes them.
    params = coefficients_for(kind, params)
    p = dict(params) if st.get("clock") == "client" else {**params, "api_us": 0.0, "final_us": 0.0}
    # arrival times at the trace's microsecond resolution (as a csv trace of them would read)
    arrival_us = np.rint(np.array([float(f"{t:.6f}") for t in arr[order]]) * 1e6).astype(np.int64)
    none = np.full(n, -1, dtype=np.int64)
    trace = TraceData(str(path), arrival_us, inp[order], outl[order], none, np.zeros(n, dtype=np.int64), none,
                      none, none, [], [], [], [], lines[order])
    workload = Workload(clients=[Client("trace", trace=trace, timeout_us=0)], num_requests=n)
    cfg = sim_config(_model_source(st["model"], model_config), st["hardware"], st["tp"], workload, p, inter,
                     max_num_seqs=st.get("max_num_seqs"), max_num_batched_tokens=st.get("max_num_batched_tokens"),
                     total_kv_blocks=st.get("total_kv_blocks"), gpu_mem_util=st.get("gpu_mem_util"),
                     max_model_len=st.get("max_model_len"), name=name, latency_model=kind, dp=st.get("dp", 1),
                     cpu_kv_blocks=st.get("cpu_kv_blocks") or 0, expert_parallel=bool(st.get("expert_parallel")))
    sim = Simulation(cfg)
    if with_sim:
        with_sim(sim)
    sim.run(progress=(lambda k, _t: progress(k, n, name)) if progress else None)
    a = sim.metrics.arrays()
    idx = np.argsort(a["id"], kind="stable")
    state = a["state"][idx]
    ok = state == int(State.COMPLETED)
    ttft_sim = np.full(n, np.nan)
    e2e_sim = np.full(n, np.nan)
    ttft_sim[order[: len(idx)][ok]] = a["ttft"][idx][ok] / 1000.0
    e2e_sim[order[: len(idx)][ok]] = a["e2e"][idx][ok] / 1000.0
    good = ~np.isnan(e2e_sim)
    sel = outl > 1
    pred = _trace_stats(ttft_sim[good], e2e_sim[good], (e2e_sim - ttft_sim)[sel & good] / (outl[sel & good] - 1))
    act = _trace_stats(ttft_real, e2e_real, (e2e_real - ttft_real)[sel] / (outl[sel] - 1))
    out_rows = []
    for m in METRICS:
        out_rows.append({"exp_id": name, "stage_index": -1, "metric": m, "predicted": float(pred[m]),
                         "actual": float(act[m]), "ape": ape(float(pred[m]), float(act[m])),
                         "signed_error_pct": signed(float(pred[m]), float(act[m])), "model": st["model"],
                         "hardware": st["hardware"], "workload": "per-request trace", "tp": int(st["tp"]),
                         "split": "trace", "latency_model": kind})

    def pearson(x, y):
        x, y = x[good], y[good]
        return None if len(x) < 3 or x.std() == 0 or y.std() == 0 else round(float(np.corrcoef(x, y)[0, 1]), 4)

    def mape(sim_ms, real_ms):       # None when nothing completed (measured latencies are > 0)
        return round(float(np.mean(np.abs(sim_ms[good] - real_ms[good]) / real_ms[good]) * 100), 3) \
            if good.any() else None

    return {"rows": out_rows, "completed": int(good.sum()), "unserved": unserved(sim),
            "pearson_r": {"ttft": pearson(ttft_sim, ttft_real), "e2e": pearson(e2e_sim, e2e_real)},
            "per_request_mape": {"ttft": mape(ttft_sim, ttft_real), "e2e": mape(e2e_sim, e2e_real)},
            "per_request": {"ttft_sim": ttft_sim, "ttft_real": ttft_real, "e2e_sim": e2e_sim, "e2e_real": e2e_real}}


@dataclass
class TraceCase:
    """A per-request trace read and checked once, ready to be replayed with any coefficients
    (what `validate` and `calibrate` replay)."""
    path: Path
    settings: dict
    cols: dict
    lines: np.ndarray
    t_col: str
    overloaded = False

    @property
    def exp_id(self) -> str:
        return self.path.stem

    def replay(self, params, interconnect, kind: str = "calibrated", model_config: str | None = None,
               progress: Callable | None = None, with_sim: Callable | None = None) -> dict:
        return _replay_trace(self.path, self.settings, self.cols, self.lines, self.t_col, params, interconnect,
                             kind, model_config, progress, with_sim)


def load_trace(path: str | Path, overrides: Mapping | None = None) -> TraceCase:
    """A per-request trace and its engine settings (from the sibling *_meta.json and overrides)."""
    path = Path(path)
    header = _read_header(path)
    missing = [c for c in TRACE_REQUIRED if c not in header]
    t_col = "queued_s" if "queued_s" in header else ("arrival_s" if "arrival_s" in header else None)
    if t_col is None:
        missing.append("queued_s (or arrival_s)")
    if missing:
        raise ConfigError("file", f"{path}: missing column(s) {', '.join(missing)}")
    st = _trace_settings(path, overrides or {})
    cols, lines = _trace_columns(path, header, t_col)
    return TraceCase(path, st, cols, lines, t_col)
