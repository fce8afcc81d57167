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
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blis_gym.errors import ConfigError
from blis_gym.output.finite_json import dumps as json_dumps
from blis_gym.schema.trace_meta import parse_trace_meta
from blis_gym.sim.limits import MAX_COUNT, MAX_DURATION_S, MAX_RATE, MAX_TOKENS, MAX_USERS, MIN_DURATION_S

from ..sim.latency.calibrated import CalibratedPhysics, load_calibration
from ..sim.latency.hybrid import HYBRID_PARAMS, HybridPhysics, load_hybrid
from .fit_record import fit_record, split_of
from .outcome import unserved

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

METRICS = ("e2e_mean", "e2e_p90", "e2e_p99", "ttft_mean", "ttft_p90", "ttft_p99", "itl_mean")
#: inference-perf's completion prompt is system prompt + question + ~25 template/BOS tokens
#: (measured prompt_len mean 592 for codegen 100+466, 575 for general 100+447).
TEMPLATE_TOKENS = 25
SHORT_STAGE_REQUESTS = 1500
MIN_LATENCY_MS, MAX_LATENCY_MS = 1e-3, MAX_DURATION_S * 1e3      # a measured latency: 1 µs and up

AGG_REQUIRED = ("exp_id", "model", "hardware", "tp", "max_num_batched_tokens", "max_num_seqs", "stage_index",
                "stage_rate_rps", "stage_duration_s", "sp_num_groups", "sp_prompts_per_group",
                "sp_system_prompt_len", "sp_question_len", "sp_output_len", "e2e_mean_ms", "ttft_mean_ms")
TRACE_REQUIRED = ("input_tokens", "output_tokens", "ttft_ms", "e2e_ms")


# ---- experiments -----------------------------------------------------------------------------
@dataclass
class Experiment:
    exp_id: str
    name: str
    model: str
    hardware: str
    precision: str
    tp: int
    max_num_batched_tokens: int | None      # None: vLLM's default for the version and GPU
    max_num_seqs: int | None
    gpu_mem_util: float | None
    total_kv_blocks: int | None
    cpu_kv_blocks: int
    workload: str
    num_groups: int
    prompts_per_group: int
    system_prompt_len: int
    question_len: int
    output_len: int
    stages: list = field(default_factory=list)            # [(rate, duration_s)]
    actual: dict = field(default_factory=dict)            # stage_index -> {metric: ms}
    notes: str = ""
    dp: int = 1                                            # data-parallel replicas (empty = 1)
    expert_parallel: bool = False
    vllm_version: str = ""

    @property
    def overloaded(self) -> bool:
        return self.notes.strip().upper().startswith("OVERLOADED")

    def stage_durations(self, stage_cap_s: float | None = None) -> list[float]:
        """Stage durations, each cut to stage_cap_s unless the stage has at most
        SHORT_STAGE_REQUESTS requests (then it runs in full: slow stages need their length
        to reach steady state)."""
        return [d if not stage_cap_s or r * d <= SHORT_STAGE_REQUESTS else min(d, stage_cap_s)
                for r, d in self.stages]

    def num_requests(self, stage_cap_s: float | None = None) -> int:
        return int(sum(r * d for (r, _), d in zip(self.stages, self.stage_durations(stage_cap_s))))


def _number(v: str, key: str, cast=float, where: str = "", lo: float = 0, hi: float = MAX_COUNT):
    """The cell `v` as a finite number in [lo, hi] (an int if cast is int), else one ConfigError."""
    try:
        x = float(v)
    except ValueError:
        raise ConfigError(key, f"{where}: not a number: {v!r}") from None
    if not math.isfinite(x):
        raise ConfigError(key, f"{where}: not a finite number: {v!r}")
    if not lo <= x <= hi:
        raise ConfigError(key, f"{where}: {v.strip()} is outside [{lo:g}, {hi:g}]")
    return int(x) if cast is int else x


def _num(row: Mapping, key: str, cast=float, default=None, where: str = "", lo: float = 0,
         hi: float = MAX_COUNT, as_float: bool = False):
    """The cell `key` checked as a number; an empty cell (or a missing optional column) gives
    `default`, or is an error when there is no default and cast is not None. cast=None: an
    optional engine setting (an integer unless as_float), None when empty."""
    v = (row.get(key) or "").strip()
    if v == "":
        if default is not None or cast is None:
            return default
        raise ConfigError(key, f"{where}: empty value")
    if cast is None:
        cast = float if as_float else int
    if cast is int:
        x = _number(v, key, float, where, lo, hi)
        if not float(x).is_integer():
            raise ConfigError(key, f"{where}: not a whole number: {v!r}")
        return int(x)
    return _number(v, key, cast, where, lo, hi)


_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def _flag(row: Mapping, key: str, where: str) -> bool:
    v = (row.get(key) or "").strip().lower()
    if v not in _TRUE | _FALSE:
        raise ConfigError(key, f"{where}: expected true or false, got {v!r}")
    return v in _TRUE


def _csv_rows(path: Path):
    """(line number, cells) of each non-blank row of a CSV file; one ConfigError naming the file
    (and line) for a missing file, undecodable bytes or a malformed row (a field over csv's size
    limit)."""
    if not path.is_file():
        raise ConfigError("file", f"no such file: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            for row in reader:
                if any(x.strip() for x in row):
                    yield reader.line_num, row
        except UnicodeDecodeError:
            raise ConfigError("file", f"{path} is not UTF-8 text") from None
        except csv.Error as e:
            raise ConfigError("file", f"{path}:{reader.line_num}: {e}") from None


def _read_header(path: Path) -> list[str]:
    for _, header in _csv_rows(path):
        return [h.strip() for h in header]
    raise ConfigError("file", f"{path}: empty file (no header)")


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """The header and each row as {column: cell} (aggregates CSVs: a few hundred rows)."""
    rows = _csv_rows(path)
    header = next(([h.strip() for h in r] for _, r in rows), None)
    if not header:
        raise ConfigError("file", f"{path}: empty file (no header)")
    return header, [dict(zip(header, r)) for _, r in rows]


def _actual_metrics(row: Mapping, out_len: int, where: str) -> dict:
    a = {}
    for m in ("e2e_mean", "e2e_p90", "e2e_p99", "ttft_mean", "ttft_p90", "ttft_p99"):
        v = _num(row, f"{m}_ms", float, default=float("nan"), where=where, lo=MIN_LATENCY_MS, hi=MAX_LATENCY_MS)
        a[m] = v
    # The server generates exactly sp_output_len tokens (ignore_eos): the mean decode time per
    # token is (E2E - TTFT) / (N - 1). (The CSV's itl_derived_mean_ms divides by the re-tokenised
    # client-side output length, ~25% too high for Llama-2-7B.)
    if out_len > 1 and not math.isnan(a["e2e_mean"]) and not math.isnan(a["ttft_mean"]):
        a["itl_mean"] = (a["e2e_mean"] - a["ttft_mean"]) / (out_len - 1)
    else:
        a["itl_mean"] = float("nan")
    return a


def load_experiments(path: str | Path) -> list[Experiment]:
    """Experiments of an aggregates CSV, in file order (raises ConfigError on missing columns)."""
    path = Path(path)
    header, rows = _read_csv(path)
    missing = [c for c in AGG_REQUIRED if c not in header]
    if missing:
        raise ConfigError("file", f"{path}: missing column(s) {', '.join(missing)}")
    exps: dict[str, Experiment] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{path.name}:{i}"
        eid = row["exp_id"].strip()
        out_len = _num(row, "sp_output_len", int, where=where, lo=1, hi=MAX_TOKENS)
        e = exps.get(eid)
        if e is None:
            e = Experiment(
                exp_id=eid, name=row.get("experiment", eid).strip() or eid, model=row["model"].strip(),
                hardware=row["hardware"].strip(), precision=(row.get("precision") or "").strip(),
                tp=_num(row, "tp", int, where=where, lo=1, hi=64),
                # an empty engine setting is vLLM's default (resolved in sim_config)
                max_num_batched_tokens=_num(row, "max_num_batched_tokens", None, where=where, lo=1, hi=MAX_TOKENS),
                max_num_seqs=_num(row, "max_num_seqs", None, where=where, lo=1),
                gpu_mem_util=_num(row, "gpu_mem_util", None, where=where, lo=0.01, hi=1, as_float=True),
                total_kv_blocks=_num(row, "total_kv_blocks", None, where=where, lo=2),
                cpu_kv_blocks=_num(row, "cpu_kv_blocks", int, default=0, where=where),
                dp=_num(row, "dp", int, default=1, where=where, lo=1, hi=64),
                expert_parallel=_flag(row, "expert_parallel", where),
                vllm_version=(row.get("vllm_version") or "").strip(),
                workload=(row.get("workload") or "").strip(),
                num_groups=_num(row, "sp_num_groups", int, where=where, lo=1, hi=MAX_USERS),
                prompts_per_group=_num(row, "sp_prompts_per_group", int, where=where, lo=1, hi=MAX_USERS),
                system_prompt_len=_num(row, "sp_system_prompt_len", int, where=where, hi=MAX_TOKENS),
                question_len=_num(row, "sp_question_len", int, where=where, lo=1, hi=MAX_TOKENS),
                output_len=out_len, notes=(row.get("notes") or "").strip())
            exps[eid] = e
        si = _num(row, "stage_index", int, where=where, lo=-1)
        if si >= 0:
            e.stages.append((si, _num(row, "stage_rate_rps", float, where=where, hi=MAX_RATE),
                             _num(row, "stage_duration_s", float, where=where, lo=MIN_DURATION_S, hi=MAX_DURATION_S)))
        e.actual[si] = _actual_metrics(row, out_len, where)
    for e in exps.values():
        e.stages = [(r, d) for _, r, d in sorted(e.stages)]
        if not e.stages:
            raise ConfigError("stage_index", f"{path.name}: experiment {e.exp_id} has no load stage rows (>= 0)")
    return list(exps.values())


# ---- building and running --------------------------------------------------------------------
def _model_source(model: str, model_config: str | None):
    """What to build the architecture from: the model id when it resolves to a bundled
    architecture, else the --model-config file (when given)."""
    if not model_config:
        return model
    from blis_gym.sim.latency import load_model
    try:
        load_model(model)
        return model
    except ConfigError:
        return str(model_config)


def _check_known(model: str, hardware: str, model_config: str | None = None) -> str:
    """'' if the model and GPU are known, else the reason to skip."""
    from blis_gym.sim.latency import load_hardware, load_model
    try:
        load_model(_model_source(model, model_config))
    except ConfigError as e:
        return f"unknown model {model!r} ({e.message})"
    try:
        load_hardware(hardware)
    except ConfigError as e:
        return f"unknown hardware {hardware!r} ({e.message})"
    return ""


def _unsupported_trace(settings: Mapping, model_config: str | None = None) -> str:
    return _ep_reason(settings.get("model"), bool(settings.get("expert_parallel")), model_config)


def _ep_reason(model: str, expert_parallel: bool, model_config: str | None = None) -> str:
    """'' if the run's parallelism is simulated, else why not (expert parallelism needs experts)."""
    if not expert_parallel:
        return ""
    from blis_gym.sim.latency import load_model
    if not load_model(_model_source(model, model_config)).is_moe:
        return f"expert parallelism on {model}, which has no experts"
    return ""


def _unsupported(e: Experiment, model_config: str | None = None) -> str:
    """'' if the experiment's parallelism is simulated, else what is missing."""
    return _ep_reason(e.model, e.expert_parallel, model_config)


def experiment_scenario(e: Experiment, stage_cap_s: float | None = None,
                        template_tokens: int = TEMPLATE_TOKENS) -> dict:
    """The scenario mapping that replays experiment `e` (stages optionally cut to stage_cap_s)."""
    stages = [{"rate": r, "duration_s": d} for (r, _), d in zip(e.stages, e.stage_durations(stage_cap_s))]
    vllm: dict = {k: v for k, v in (("max_num_seqs", e.max_num_seqs),
                                     ("max_num_batched_tokens", e.max_num_batched_tokens)) if v is not None}
    if e.total_kv_blocks:
        vllm["total_kv_blocks"] = e.total_kv_blocks
    if e.cpu_kv_blocks:
        vllm["kv_offload"] = {"cpu_blocks": e.cpu_kv_blocks}
    elif e.gpu_mem_util:
        vllm["gpu_memory_utilization"] = e.gpu_mem_util
    return {
        "name": f"validate-{e.exp_id}", "seed": 42, "model": e.model, "hardware": e.hardware, "tp": e.tp,
        "vllm": vllm, "sample_interval_s": 0,
        "workload": {
            "timeout_s": 0,           # inference-perf request_timeout: null
            "inference_perf": {
                "num_groups": e.num_groups, "prompts_per_group": e.prompts_per_group,
                "system_prompt_len": e.system_prompt_len, "question_len": e.question_len + template_tokens,
                "output_len": e.output_len, "stages": stages,
                # inference-perf's shared_prefix data generator builds groups x prompts fixed
                # prompts and cycles through them: every prompt is re-sent.
                "repeat_questions": True,
            },
        },
    }


def _setting(name: str, v, lo: float, hi: float = MAX_COUNT, int_: bool = True):
    """An engine setting (from a *_meta.json, an aggregates row or an option) checked: None, or a
    number in [lo, hi] (an integer unless int_ is False)."""
    if v is None:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (not int_ or float(v).is_integer())
    if not ok or not lo <= v <= hi:
        kind = "an integer" if int_ else "a number"
        raise ConfigError(name, f"must be {kind} in [{lo:g}, {hi:g}] (got {v!r})")
    return int(v) if int_ else float(v)


#: step-time models `validate --latency-model` accepts (`all` = every one on the same rows)
LATENCY_MODELS = ("hybrid", "calibrated", "trained-physics", "roofline")
#: what validate replays with when no --latency-model is given (docs/fidelity.md: the cross-validated table)
DEFAULT_LATENCY_MODEL = "hybrid"


def coefficients_for(kind: str, params):
    """The coefficients a replay with step-time model `kind` uses: `params` when they are that
    model's (a fit in progress), else its bundled ones (the calibrated model's default is the
    caller's --calibration file)."""
    if kind == "hybrid":
        return dict(params) if params and set(HYBRID_PARAMS) <= set(params) else load_hybrid()
    return params


def step_model(kind: str, m, hw, tp: int, params=None, interconnect=None, deployment=None):
    """A fresh step-time model of `kind` (one per instance: the calibrated and hybrid models
    keep state). `kind` may also be a factory (model, hw, tp, params) -> step model (the hybrid
    fit's recording model)."""
    extra = {"deployment": deployment} if deployment is not None else {}
    if callable(kind):
        return kind(m, hw, tp, params, **extra)
    if kind == "calibrated":
        return CalibratedPhysics(m, hw, tp, params=params, interconnect=interconnect, **extra)
    if kind == "hybrid":
        return HybridPhysics(m, hw, tp, params=coefficients_for(kind, params), **extra)
    from blis_gym.sim.latency import make_step_model
    return make_step_model(kind, m, hw, tp, **extra)


def sim_config(model: str, hardware: str, tp: int, workload, params, interconnect, *, max_num_seqs=None,
               max_num_batched_tokens=None, total_kv_blocks=None, gpu_mem_util=None, max_model_len=None,
               name: str = "validate", dp: int = 1, vllm_version: str = "", latency_model: str = "calibrated",
               cpu_kv_blocks: int = 0, expert_parallel: bool = False):
    """A SimConfig of `dp` identical vLLM instances (data-parallel replicas, requests dealt
    round-robin) with the given step model; settings left None take vLLM's defaults for the
    GPU and version (the same settings a scenario's `vllm:` section gives; built directly so
    validation does not depend on the scenario layer). cpu_kv_blocks > 0: vLLM's CPU offloading
    connector with that many blocks (the defaults of a scenario's `kv_offload`). With
    expert_parallel (a MoE model) the dp ranks are one engine stepping in lockstep, its experts
    spread over the dp x tp GPUs, as a scenario's `dp` and `enable_expert_parallel` build it."""
    from blis_gym.sim.engine import BLOCK_SIZE, EngineConfig
    from blis_gym.sim.latency import kv_blocks_per_instance, load_hardware, load_model
    from blis_gym.sim.latency.hardware import vllm_batch_defaults
    from blis_gym.sim.simulation import InstanceConfig, SimConfig

    tp, max_num_seqs, max_num_batched_tokens, total_kv_blocks, max_model_len, gpu_mem_util, dp = (
        _setting("tp", tp, 1, 64), _setting("max_num_seqs", max_num_seqs, 1),
        _setting("max_num_batched_tokens", max_num_batched_tokens, 1, MAX_TOKENS),
        _setting("total_kv_blocks", total_kv_blocks, 2), _setting("max_model_len", max_model_len, 1, MAX_TOKENS),
        _setting("gpu_mem_util", gpu_mem_util, 0.01, 1, int_=False), _setting("dp", dp, 1, 64))
    m = load_model(model)
    hw = load_hardware(hardware)
    if expert_parallel and (dp or 1) > 1:
        return _dp_group_config(m, hw, tp, dp, workload, params, interconnect, max_num_seqs, max_num_batched_tokens,
                                total_kv_blocks, gpu_mem_util, max_model_len, name, vllm_version, latency_model)
    # vLLM's default gpu_memory_utilization: 0.9 up to the versions measured here (0.15, 0.19); later 0.92
    blocks = int(total_kv_blocks) if total_kv_blocks else kv_blocks_per_instance(m, hw, tp, gpu_mem_util or 0.9)
    seqs_default, tokens_default = vllm_batch_defaults(hw, vllm_version)
    mml = min(int(max_model_len or m.max_model_len), (blocks - 1) * BLOCK_SIZE)
    offload = None
    if cpu_kv_blocks:
        from blis_gym.sim.engine.offload import offload_config
        offload = offload_config(m.kv_bytes_per_token(tp) * BLOCK_SIZE, tp,
                                 cpu_blocks=_setting("cpu_kv_blocks", cpu_kv_blocks, 1))
    engine = EngineConfig(max_num_seqs=int(max_num_seqs or seqs_default),
                          max_num_batched_tokens=int(max_num_batched_tokens or tokens_default),
                          max_model_len=mml, offload=offload)
    from blis_gym.sim.latency.deployment import Deployment
    dep = Deployment(expert_parallel=True) if expert_parallel else None     # experts over the TP group
    instances = [InstanceConfig(name=f"instance-{j}", engine=engine, total_kv_blocks=blocks,
                                step_model=step_model(latency_model, m, hw, tp, params, interconnect, dep))
                 for j in range(dp or 1)]
    return SimConfig(instances=instances, workload=workload, seed=42, sample_interval_us=0, name=name)


def _dp_group_config(m, hw, tp, dp, workload, params, interconnect, max_num_seqs, max_num_batched_tokens,
                     total_kv_blocks, gpu_mem_util, max_model_len, name, vllm_version, latency_model):
    """The DP + EP engine: one instance holding every rank's KV blocks (vLLM logs them per rank)
    and batch limits, with a step model that prices one rank's lockstep step and the all-to-all."""
    from blis_gym.sim.engine import BLOCK_SIZE, EngineConfig
    from blis_gym.sim.latency import kv_blocks_per_instance
    from blis_gym.sim.latency.deployment import Deployment
    from blis_gym.sim.latency.hardware import vllm_batch_defaults
    from blis_gym.sim.simulation import InstanceConfig, SimConfig

    dep = Deployment(dp=dp, expert_parallel=True)
    blocks = int(total_kv_blocks) * dp if total_kv_blocks else kv_blocks_per_instance(m, hw, tp, gpu_mem_util or 0.9,
                                                                                      dp=dp)
    seqs_default, tokens_default = vllm_batch_defaults(hw, vllm_version)
    mml = min(int(max_model_len or m.max_model_len), (blocks // dp - 1) * BLOCK_SIZE)
    engine = EngineConfig(max_num_seqs=int(max_num_seqs or seqs_default) * dp,
                          max_num_batched_tokens=int(max_num_batched_tokens or tokens_default) * dp, max_model_len=mml)
    inst = InstanceConfig(name="instance-0", engine=engine, total_kv_blocks=blocks,
                          step_model=step_model(latency_model, m, hw, tp, params, interconnect, dep))
    return SimConfig(instances=[inst], workload=workload, seed=42, sample_interval_us=0, name=name)


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


def write_outputs(out: Path, rows: list[dict], summary: dict, plot: bool = True) -> list[str]:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", f"cannot create {out}: {e.strerror}") from None
    cols = ("exp_id", "stage_index", "metric", "predicted", "actual", "ape", "signed_error_pct", "model",
            "hardware", "workload", "tp", "split", "latency_model")
    with open(out / "validation.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow([_round(r[c]) if isinstance(r.get(c), float) else r.get(c, "") for c in cols])
    s = {k: v for k, v in summary.items() if not k.startswith("_")}
    (out / "summary.json").write_text(json_dumps(s) + "\n")
    written = ["validation.csv", "summary.json"]
    if plot and rows:
        first = rows[0].get("latency_model")        # one model per plot: the first compared
        write_svg_plot(out / "validation.svg", [r for r in rows if r.get("latency_model") == first])
        written.append("validation.svg")
    return written


# ---- per-request traces ----------------------------------------------------------------------
_GPU_NAMES = (("RTX PRO 6000", "RTX-PRO-6000"), ("RTX 4090", "RTX-4090"), ("H100", "H100"), ("H200", "H200"),
              ("A100", "A100-80GB"), ("L40S", "L40S"))


def _meta_for(path: Path) -> dict:
    name = path.name
    for suffix in ("_requests.csv", ".csv"):
        if name.endswith(suffix):
            m = path.with_name(name[: -len(suffix)] + "_meta.json")
            if m.is_file():
                try:
                    data = json.loads(m.read_text(encoding="utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise ConfigError("file", f"{m}: not valid JSON") from None
                return parse_trace_meta(data, m.name)
    return parse_trace_meta({}, "")


def _trace_settings(path: Path, overrides: Mapping) -> dict:
    meta = _meta_for(path)
    kw, kv = meta["engine_kwargs"], meta["kv_cache"]
    dev = str(meta["hardware"].get("device_name") or "")
    hw = next((v for k, v in _GPU_NAMES if k.lower() in dev.lower()), dev or None)
    if not hw:                      # no device in the meta file: try the file name's first token
        from blis_gym.sim.latency import load_hardware
        try:
            hw = load_hardware(path.name.split("_")[0]).name
        except ConfigError:
            hw = None
    s = {"model": meta.get("model") or kw.get("model"), "hardware": hw,
         "tp": kw.get("tensor_parallel_size") or 1, "max_num_seqs": kw.get("max_num_seqs"),
         "max_num_batched_tokens": kw.get("max_num_batched_tokens"), "total_kv_blocks": kv.get("num_gpu_blocks"),
         "cpu_kv_blocks": kv.get("num_cpu_blocks") or 0,
         "gpu_mem_util": kv.get("gpu_memory_utilization") or 0.9, "max_model_len": kw.get("max_model_len"),
         "dp": kw.get("data_parallel_size") or 1, "expert_parallel": bool(kw.get("enable_expert_parallel")),
         "clock": "client" if meta.get("clock") == "client" else "engine"}
    s.update({k: v for k, v in overrides.items() if v is not None})
    for k in ("model", "hardware"):
        if not s.get(k):
            raise ConfigError(f"--{k}", f"{path.name}: no {k} in a *_meta.json next to the trace; give --{k}")
    return s


def _trace_columns(path: Path, header: list[str], t_col: str) -> tuple[dict, np.ndarray]:
    """The columns a per-request trace replay needs, as checked arrays (one pass over the file,
    keeping only these columns), and each row's line number."""
    limits = {t_col: (0, MAX_DURATION_S, float), "input_tokens": (0, MAX_TOKENS, int),
              "output_tokens": (0, MAX_TOKENS, int), "ttft_ms": (MIN_LATENCY_MS, MAX_LATENCY_MS, float),
              "e2e_ms": (MIN_LATENCY_MS, MAX_LATENCY_MS, float)}
    index = {c: header.index(c) for c in limits}
    # a recording's failed requests (`blis-gym observe`: status other than ok) have no latency
    status = header.index("status") if "status" in header else None
    cols: dict[str, list] = {c: [] for c in limits}
    lines = []
    rows = _csv_rows(path)
    next(rows)                                           # the header
    for line, row in rows:
        if status is not None and (row[status].strip() if status < len(row) else "") != "ok":
            continue
        where = f"{path.name}:{line}"
        for c, (lo, hi, cast) in limits.items():
            cell = row[index[c]].strip() if index[c] < len(row) else ""
            if not cell:
                raise ConfigError(c, f"{where}: empty value")
            cols[c].append(_number(cell, c, cast, where, lo, hi))
        lines.append(line)
    if not lines:
        raise ConfigError("file", f"{path}: no requests (a header but no rows"
                                  f"{' with status ok' if status is not None else ''})")
    arrays = {c: np.asarray(v, dtype=np.int64 if limits[c][2] is int else float) for c, v in cols.items()}
    return arrays, np.asarray(lines, dtype=np.int64)


def _trace_stats(ttft_ms: np.ndarray, e2e_ms: np.ndarray, itl_ms: np.ndarray) -> dict:
    """Mean and tail of TTFT and E2E, mean ITL; NaN for what has no samples."""
    def stat(x, q=None):
        return float("nan") if not len(x) else float(x.mean() if q is None else np.percentile(x, q))
    return {"e2e_mean": stat(e2e_ms), "e2e_p90": stat(e2e_ms, 90), "e2e_p99": stat(e2e_ms, 99),
            "ttft_mean": stat(ttft_ms), "ttft_p90": stat(ttft_ms, 90), "ttft_p99": stat(ttft_ms, 99),
            "itl_mean": stat(itl_ms)}


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


def is_trace(path: str | Path) -> bool:
    """Whether a CSV is a per-request trace (else an aggregates file)."""
    header = _read_header(Path(path))
    return not ("exp_id" in header or "stage_index" in header) and all(c in header for c in TRACE_REQUIRED)


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


def shipped_measurements() -> list[str]:
    """File names of the measurement sets shipped in blis_gym/data/measurements/."""
    from importlib import resources
    folder = resources.files("blis_gym").joinpath("data", "measurements")
    return sorted(p.name for p in folder.iterdir() if p.name.endswith("_requests.csv"))


def resolve_measurements(path: str | Path) -> Path:
    """`path`, or the shipped measurements file of that name when no such file exists."""
    path = Path(path)
    if not path.exists() and path.name in shipped_measurements() and path.name == str(path):
        from importlib import resources
        return Path(str(resources.files("blis_gym").joinpath("data", "measurements", path.name)))
    return path


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


# ---- plot (plain SVG: no plotting dependency) -------------------------------------------------
def write_svg_plot(path: Path, rows: list[dict]) -> None:
    """Predicted against measured on log-log axes, one panel per metric family."""
    panels = (("E2E (ms)", ("e2e_mean", "e2e_p90", "e2e_p99")), ("TTFT (ms)", ("ttft_mean", "ttft_p90", "ttft_p99")),
              ("ITL (ms)", ("itl_mean",)))
    colours = {"train": "#1f77b4", "holdout": "#d62728", "trace": "#2ca02c", "unseen": "#9467bd"}
    markers = {"mean": "circle", "p90": "square", "p99": "diamond"}
    W, H, pad = 330, 330, 48
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * 3}" height="{H + 40}" '
              f'font-family="sans-serif" font-size="11">'), '<rect width="100%" height="100%" fill="white"/>']
    for pi, (title, metrics) in enumerate(panels):
        pts = [r for r in rows if r["metric"] in metrics and r["predicted"] > 0 and r["actual"] > 0
               and not math.isnan(r["predicted"])]
        x0 = pi * W
        parts.append(f'<text x="{x0 + W / 2}" y="16" text-anchor="middle" font-weight="bold">{title}: '
                     f'predicted vs measured</text>')
        if not pts:
            continue
        vals = [r["predicted"] for r in pts] + [r["actual"] for r in pts]
        lo, hi = math.log10(min(vals)) - 0.05, math.log10(max(vals)) + 0.05

        def sx(v, x0=x0, lo=lo, hi=hi):
            return x0 + pad + (math.log10(v) - lo) / (hi - lo) * (W - pad - 12)

        def sy(v, lo=lo, hi=hi):
            return 24 + (H - pad) - (math.log10(v) - lo) / (hi - lo) * (H - pad - 12)
        a, b = 10 ** lo, 10 ** hi
        parts.append(f'<rect x="{x0 + pad}" y="{24 + 12}" width="{W - pad - 12}" height="{H - pad - 12}" '
                     f'fill="none" stroke="#888"/>')
        parts.append(f'<line x1="{sx(a):.1f}" y1="{sy(a):.1f}" x2="{sx(b):.1f}" y2="{sy(b):.1f}" stroke="#aaa" '
                     f'stroke-dasharray="4,3"/>')
        for f_ in (0.9, 1.1):
            parts.append(f'<line x1="{sx(a):.1f}" y1="{sy(a * f_):.1f}" x2="{sx(b / f_):.1f}" y2="{sy(b):.1f}" '
                         f'stroke="#ddd"/>' if f_ > 1 else
                         f'<line x1="{sx(a / f_):.1f}" y1="{sy(a):.1f}" x2="{sx(b):.1f}" y2="{sy(b * f_):.1f}" '
                         f'stroke="#ddd"/>')
        for k in range(math.ceil(lo), math.floor(hi) + 1):
            v = 10 ** k
            parts.append(f'<text x="{sx(v):.1f}" y="{H + 2}" text-anchor="middle">{v:g}</text>')
            parts.append(f'<text x="{x0 + pad - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        parts.append(f'<text x="{x0 + W / 2}" y="{H + 18}" text-anchor="middle">measured</text>')
        parts.append(f'<text x="{x0 + 12}" y="{24 + H / 2}" transform="rotate(-90 {x0 + 12} {24 + H / 2})" '
                     f'text-anchor="middle">predicted</text>')
        for r in pts:
            c = colours.get(r.get("split", "train"), "#1f77b4")
            x, y = sx(r["actual"]), sy(r["predicted"])
            kind = markers[r["metric"].split("_")[1]]
            tip = (f'<title>{r["exp_id"]} stage {r["stage_index"]} {r["metric"]}: predicted {r["predicted"]:.1f}, '
                   f'measured {r["actual"]:.1f} ({r["signed_error_pct"]:+.1f}%)</title>')
            if kind == "circle":
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{c}" fill-opacity="0.7">{tip}</circle>')
            elif kind == "square":
                parts.append(f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="none" '
                             f'stroke="{c}">{tip}</rect>')
            else:
                parts.append(f'<path d="M{x:.1f},{y - 4:.1f} L{x + 4:.1f},{y:.1f} L{x:.1f},{y + 4:.1f} '
                             f'L{x - 4:.1f},{y:.1f} Z" fill="none" stroke="{c}">{tip}</path>')
    parts.append(f'<text x="8" y="{H + 36}">filled circle = mean, square = p90, diamond = p99; blue = fitted '
                 f'experiments, red = held out, purple = not seen by the fit, green = per-request trace; '
                 f'dashed = exact, grey = ±10%</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")
