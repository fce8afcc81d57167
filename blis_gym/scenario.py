"""Scenario files: YAML validated with pydantic, then built into a simulator configuration.

Every field and its default is documented in docs/scenarios.md. A wrong field gets one
ConfigError naming it and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .workload_spec import WorkloadSpec, build_workload

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VLLMSpec(_Strict):
    max_num_seqs: Optional[PositiveInt] = None            # None: vLLM's default for the GPU
    max_num_batched_tokens: Optional[PositiveInt] = None
    long_prefill_token_threshold: Annotated[int, Field(ge=0)] = 0
    max_model_len: Optional[PositiveInt] = None           # None: the model's, capped by KV capacity
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    total_kv_blocks: Optional[Annotated[int, Field(ge=2)]] = None
    scheduling_policy: Literal["fcfs", "priority", "sjf"] = "fcfs"
    preemption_policy: Literal["fcfs", "priority"] = "fcfs"


class SaturationSpec(_Strict):
    """Flow control's pool saturation detector (llm-d utilization-detector by default)."""
    detector: Literal["utilization", "concurrency"] = "utilization"
    queue_threshold: PositiveFloat = 5
    kv_threshold: PositiveFloat = 0.8
    staleness_ms: Annotated[float, Field(ge=0)] = 200
    max_concurrency: PositiveInt = 100


class FlowControlSpec(_Strict):
    per_band_capacity: Annotated[int, Field(ge=0)] = 5000
    max_queue: Annotated[int, Field(ge=0)] = 0
    ttl_s: Annotated[float, Field(ge=0)] = 60.0
    fairness: Literal["global-strict", "round-robin"] = "global-strict"
    usage_limits: Optional[dict] = None
    saturation: SaturationSpec = SaturationSpec()
    dispatch_tick_ms: PositiveFloat = 1.0


class GatewaySpec(_Strict):
    admission: Union[str, dict] = "always-admit"
    flow_control: Optional[FlowControlSpec] = None


class ClusterSpec(_Strict):
    instances: PositiveInt = 1
    scrape_interval_ms: Annotated[float, Field(ge=0)] = 50.0     # 0 = oracle signals
    trace_decisions: bool = False


class Scenario(_Strict):
    name: str = ""
    description: str = ""
    seed: int = 42
    model: str
    hardware: str = "H100"
    tp: PositiveInt = 1
    latency_model: Literal["trained-physics", "roofline"] = "trained-physics"
    vllm: VLLMSpec = VLLMSpec()
    workload: WorkloadSpec
    cluster: ClusterSpec = ClusterSpec()
    gateway: GatewaySpec = GatewaySpec()
    router: dict = Field(default_factory=lambda: {"policy": "default"})
    sample_interval_s: Annotated[float, Field(ge=0)] = 1.0

    @field_validator("model", "hardware")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v


# ---- loading --------------------------------------------------------------------------------
_UNION_TAGS = ("constant", "gaussian", "exponential", "lognormal", "empirical", "ThinkDist", "float", "str", "dict")


def _allowed_fields(loc: tuple) -> list[str]:
    """Field names allowed at the mapping that holds loc[-1] (for 'unknown field' messages)."""
    model = Scenario
    for part in loc[:-1]:
        if not isinstance(part, str) or model is None:
            return []
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return sorted(model.model_fields) if model is not None else []


def _first_error(e: ValidationError) -> ConfigError:
    err = e.errors()[0]
    parts = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
    loc = ".".join(str(p) for p in parts)
    msg = err["msg"]
    got = err.get("input")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if err["type"] == "extra_forbidden":
        allowed = _allowed_fields(parts)
        msg = "unknown field" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif isinstance(got, (int, float, str)) and not isinstance(got, bool) and "got" not in msg:
        msg = f"{msg[0].lower()}{msg[1:]} (got {got!r})"
    return ConfigError(loc or "scenario", msg)


def parse_scenario(data, overrides: dict | None = None) -> Scenario:
    """Validate a scenario mapping (raises one ConfigError naming the field)."""
    if not isinstance(data, dict):
        raise ConfigError("scenario", "must be a YAML mapping of fields")
    if overrides:
        data = {**data, **overrides}
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise _first_error(e) from None


def load_scenario(path: str | Path, overrides: dict | None = None) -> Scenario:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("scenario", f"no such file: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("scenario", f"{p} is not valid YAML{where}") from None
    sc = parse_scenario(data, overrides)
    if not sc.name:
        sc = sc.model_copy(update={"name": p.stem})
    return sc


# ---- building the simulator configuration ------------------------------------------------------
def vllm_batch_defaults(hw) -> tuple[int, int]:
    """`vllm serve` defaults: GPUs with >= 70 GiB that are not A100 get 1024 seqs / 8192
    tokens per step; others 256 / 2048 (vllm/engine/arg_utils.py get_batch_defaults)."""
    if hw.memory_gib >= 70 and not hw.name.upper().startswith("A100"):
        return 1024, 8192
    return 256, 2048


def build(sc: Scenario, check_invariants: bool = False, base_dir: Path | str | None = None):
    """Turn a validated scenario into a SimConfig (raises ConfigError for impossible setups).
    Trace paths in the workload are relative to `base_dir` (default: the current folder)."""
    from .sim.engine import EngineConfig
    from .sim.latency import kv_blocks_per_instance, load_hardware, load_model, make_step_model, validate_tp
    from .sim.simulation import InstanceConfig, SimConfig

    model = load_model(sc.model)
    hw = load_hardware(sc.hardware)
    validate_tp(model, sc.tp)
    v = sc.vllm
    blocks = v.total_kv_blocks or kv_blocks_per_instance(model, hw, sc.tp, v.gpu_memory_utilization)
    seqs_default, tokens_default = vllm_batch_defaults(hw)
    mml = v.max_model_len or model.max_model_len
    capacity = (blocks - 1) * 16
    if v.max_model_len and v.max_model_len > capacity:
        raise ConfigError("vllm.max_model_len", f"{v.max_model_len} tokens do not fit in the KV cache "
                          f"({blocks} blocks = {capacity} tokens); lower it or raise total_kv_blocks")
    mml = min(mml, capacity)
    engine = EngineConfig(
        max_num_seqs=v.max_num_seqs or seqs_default,
        max_num_batched_tokens=v.max_num_batched_tokens or tokens_default,
        long_prefill_token_threshold=v.long_prefill_token_threshold,
        max_model_len=mml,
        scheduler=v.scheduling_policy,
        preemption=v.preemption_policy,
    )
    step_model = make_step_model(sc.latency_model, model, hw, sc.tp)

    workload = build_workload(sc.workload, Path(base_dir or "."))
    _check_prompts_fit(workload, mml)
    instances = [InstanceConfig(name=f"instance-{i}", engine=engine, step_model=step_model, total_kv_blocks=blocks)
                 for i in range(sc.cluster.instances)]
    return SimConfig(instances=instances, workload=workload, seed=sc.seed, gateway=_gateway(sc),
                     horizon_us=workload.horizon_us,
                     sample_interval_us=int(sc.sample_interval_s * 1e6), check_invariants=check_invariants,
                     name=sc.name)


def _gateway(sc: Scenario):
    from .policies.admission import concurrency_saturation, make_admission, role_saturation, utilization_saturation
    from .policies.routing import make_router
    from .sim.cluster import FlowControl, GatewayConfig

    fc = None
    saturation = None
    f = sc.gateway.flow_control
    if f is not None:
        fc = FlowControl(per_band_capacity=f.per_band_capacity, max_queue=f.max_queue, ttl_us=int(f.ttl_s * 1e6),
                         usage_limits=f.usage_limits, fairness=f.fairness)
        d = f.saturation
        if d.detector == "utilization":
            def detect(pods, now):
                return role_saturation(pods, lambda ps: utilization_saturation(
                    ps, now, d.queue_threshold, d.kv_threshold, int(d.staleness_ms * 1000)))
        else:
            def detect(pods, now):
                return role_saturation(pods, lambda ps: concurrency_saturation(ps, d.max_concurrency))
        saturation = detect
    return GatewayConfig(admission=make_admission(sc.gateway.admission, field="gateway.admission"),
                         router=make_router(sc.router, field="router"), flow_control=fc,
                         scrape_interval_us=int(sc.cluster.scrape_interval_ms * 1000),
                         dispatch_tick_us=int(f.dispatch_tick_ms * 1000) if f else 1000,
                         saturation=saturation, trace_decisions=sc.cluster.trace_decisions)


def _check_prompts_fit(workload, mml: int) -> None:
    """A client none of whose prompts fit max_model_len is a mistake, not a workload."""
    for c in workload.clients:
        dist = getattr(c, "input", None)
        if dist is None or getattr(c, "trace", None) is not None:
            continue
        low = getattr(dist, "value", None)
        if low is None:
            low = getattr(dist, "min", None)
        if low is None and hasattr(dist, "values"):
            low = min(dist.values)
        if low is not None and low + c.prefix_tokens >= mml:
            where = "workload.input" if len(workload.clients) == 1 else f"workload.clients.{c.name}.input"
            raise ConfigError(where, f"every prompt is at least {low + c.prefix_tokens} tokens, "
                                     f"not below max_model_len {mml}")
