"""Reading measured vLLM runs: the aggregates of inference-perf load stages (one `Experiment` per
exp_id) and per-request traces with their `*_meta.json` (a `TraceCase`); every value checked
against its bounds, one line naming the row and column when it is not."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blis_gym.errors import ConfigError
from blis_gym.schema.trace_meta import parse_trace_meta
from blis_gym.sim.limits import MAX_COUNT, MAX_DURATION_S, MAX_RATE, MAX_TOKENS, MAX_USERS, MIN_DURATION_S

MIN_LATENCY_MS, MAX_LATENCY_MS = 1e-3, MAX_DURATION_S * 1e3      # a measured latency: 1 µs and up
SHORT_STAGE_REQUESTS = 1500
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


#: inference-perf's completion prompt is system prompt + question + ~25 template/BOS tokens
#: (measured prompt_len mean 592 for codegen 100+466, 575 for general 100+447).
TEMPLATE_TOKENS = 25


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


def is_trace(path: str | Path) -> bool:
    """Whether a CSV is a per-request trace (else an aggregates file)."""
    header = _read_header(Path(path))
    return not ("exp_id" in header or "stage_index" in header) and all(c in header for c in TRACE_REQUIRED)


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
