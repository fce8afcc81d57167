"""Scenario files: YAML validated with pydantic, then built into a simulator configuration.

Every field and its default is documented in docs/scenarios.md. A wrong field gets one
ConfigError naming it and what is allowed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import Field, ValidationError, field_validator, model_validator

from .bounded import (Count, CountOrZero, Instances, InstancesOrZero, Millis, PositiveMillis, SampleInterval, Seconds,
                      Seed, Strict, Tokens, TokensOrZero)
from ..errors import ConfigError, pydantic_error, read_yaml
from ..sim.limits import MAX_DURATION_S, MAX_INSTANCES, MAX_WINDOW_TICKS, MIN_AUTOSCALER_INTERVAL_S
from .workload import WorkloadSpec, build_workload

PositiveFloat = Annotated[float, Field(gt=0)]
TP = Annotated[int, Field(gt=0, le=64)]      # GPUs of one instance (and of one node)


class KVOffloadSpec(Strict):
    """KV offload tiers below the GPU (vLLM's OffloadingConnector; see docs/scenarios.md)."""
    cpu_gib: Optional[PositiveFloat] = None               # vLLM --kv-offloading-size (all GPUs of an instance)
    cpu_blocks: Optional[Count] = None                    # or the CPU tier in blocks (vLLM's num_cpu_blocks)
    cpu_bandwidth_gb_s: PositiveFloat = 25.0              # host <-> GPU per GPU (PCIe 4.0 x16 ~25, 5.0 ~50)
    fs_gib: Annotated[float, Field(ge=0)] = 0.0           # a filesystem tier under the CPU tier (0 = none)
    fs_bandwidth_gb_s: PositiveFloat = 5.0                # its read bandwidth for one instance (NVMe ~5-7)
    mode: Literal["prompt", "full"] = "prompt"            # prompt: vLLM's offload_prompt_only; full: also outputs

    @model_validator(mode="after")
    def _one_size(self):
        if (self.cpu_gib is None) == (self.cpu_blocks is None):
            raise ValueError("give exactly one of cpu_gib and cpu_blocks (the CPU tier's size)")
        return self


class SpeculativeSpec(Strict):
    """vLLM's --speculative-config: K draft tokens per step and how many of them are accepted."""
    method: Literal["mtp", "eagle", "eagle3", "ngram", "draft_model"]
    num_tokens: Annotated[int, Field(ge=1, le=16)]                   # num_speculative_tokens (K)
    # the draft acceptance rate (accepted / drafted tokens), or one probability per position
    acceptance: Union[Annotated[float, Field(ge=0, le=1)], Annotated[list[float], Field(min_length=1, max_length=16)]]

    @model_validator(mode="after")
    def _profile(self):
        from ..sim.engine.speculative import acceptance_profile
        acceptance_profile(self.acceptance, self.num_tokens)        # ValueError: what is allowed
        return self


class VLLMSpec(Strict):
    max_num_seqs: Optional[Count] = None                  # None: vLLM's default for the GPU
    max_num_batched_tokens: Optional[Tokens] = None
    long_prefill_token_threshold: TokensOrZero = 0
    max_model_len: Optional[Tokens] = None                # None: the model's, capped by KV capacity
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    total_kv_blocks: Optional[Annotated[int, Field(ge=2, le=1 << 31)]] = None
    scheduling_policy: Literal["fcfs", "priority", "sjf"] = "fcfs"
    preemption_policy: Literal["fcfs", "priority"] = "fcfs"
    enable_prefix_caching: bool = True                    # False: no prompt block is reused
    kv_offload: Optional[KVOffloadSpec] = None            # None: no tier below the GPU
    # LoRA (vLLM's --enable-lora, --max-loras, --max-lora-rank, --max-cpu-loras) and its costs
    enable_lora: bool = False
    max_loras: Annotated[int, Field(gt=0, le=1024)] = 1
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = 16
    max_cpu_loras: Optional[Annotated[int, Field(gt=0, le=100_000)]] = None   # None: max_loras
    lora_load_ms: Optional[Annotated[float, Field(ge=0, le=600_000)]] = None  # None: base + size / bandwidth
    lora_load_base_ms: Annotated[float, Field(ge=0, le=60_000)] = 1.5
    lora_load_bandwidth_gb_s: Annotated[float, Field(ge=1e-3, le=1e4)] = 2.0
    lora_step_overhead: Optional[Annotated[float, Field(ge=0, le=10)]] = None  # None: by rank (BLIS tiers)
    # the 2026 engine (docs/scenarios.md#the-2026-engine); each off by default
    speculative: Optional[SpeculativeSpec] = None          # --speculative-config (None: no drafts)
    enable_expert_parallel: bool = False                   # --enable-expert-parallel (MoE, dp x tp GPUs)
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"] = "auto"   # --kv-cache-dtype
    reserve_full_prompt: bool = False                      # admit only when the whole prompt's KV fits
    kv_watermark: Annotated[float, Field(ge=0, lt=1)] = 0.0    # share of KV blocks an admission must leave free

    @model_validator(mode="after")
    def _lora(self):
        lora = [k for k in sorted(self.model_fields_set) if k.startswith(("max_lora", "max_cpu_lora", "lora_"))]
        if lora and not self.enable_lora:
            raise ValueError(f"{lora[0]} applies with enable_lora: true")
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras})")
        return self


class SaturationSpec(Strict):
    """Flow control's pool saturation detector (llm-d utilization-detector by default)."""
    detector: Literal["utilization", "concurrency"] = "utilization"
    queue_threshold: PositiveFloat = 5
    kv_threshold: PositiveFloat = 0.8
    staleness_ms: Millis = 200
    max_concurrency: Count = 100


class EvictionSpec(Strict):
    """In-flight eviction of sheddable requests (llm-d-router's enableEviction; off when absent)."""
    max_per_decision: Annotated[int, Field(ge=1, le=1000)] = 2
    interval_ms: Millis = 100.0


class FlowControlSpec(Strict):
    per_band_capacity: CountOrZero = 5000
    max_queue: CountOrZero = 0
    ttl_s: Seconds = 60.0
    fairness: Literal["global-strict", "round-robin"] = "global-strict"
    ordering: Literal["fcfs", "edf"] = "fcfs"
    usage_limits: Optional[dict] = None
    saturation: SaturationSpec = SaturationSpec()
    dispatch_tick_ms: PositiveMillis = 1.0
    eviction: Optional[EvictionSpec] = None


class GatewaySpec(Strict):
    admission: Union[str, dict] = "always-admit"
    flow_control: Optional[FlowControlSpec] = None


class PeerPullSpec(Strict):
    """KV pulled from the peer pod with the longest cached prefix (llm-d's P2P KV sharing)."""
    min_tokens: Annotated[int, Field(ge=1, le=1 << 24)] = 16   # llm-d's minCachedTokenDelta (block granularity)
    bandwidth_gb_s: Annotated[float, Field(ge=1e-6, le=1e6)] = 25.0   # per GPU, as P/D transfers
    base_latency_ms: Millis = 0.05
    contention: bool = True                                # pulls from one source share its NIC


class ClusterSpec(Strict):
    instances: Instances = 1
    scrape_interval_ms: Millis = 50.0                     # 0 = oracle signals
    trace_decisions: bool = False
    peer_pull: Optional[PeerPullSpec] = None              # None: off (llm-d's default)


class DelaySpec(Strict):
    """A delay in seconds: a constant, or gaussian (mean, std, clamped at 0) or exponential."""
    dist: Literal["constant", "gaussian", "exponential"] = "constant"
    value: Seconds = 0.0
    mean: Seconds = 0.0
    std: Seconds = 0.0


Delay = Union[Seconds, DelaySpec]


class AutoscalerSpec(Strict):
    """A periodic autoscaler for one pool (see docs/pd-and-autoscaling.md)."""
    policy: str = "hpa"          # a registered autoscaler: hpa, wva, external, or one of yours
    interval_s: Annotated[float, Field(ge=MIN_AUTOSCALER_INTERVAL_S, le=MAX_DURATION_S)] = 15.0
    # hpa (KEDA on EPP metrics): desired = ceil(total / target) for waiting/running,
    # ceil(replicas * saturation / target) for saturation; the max over the listed metrics
    metrics: dict[Literal["waiting", "running", "saturation"], PositiveFloat] = Field(
        default_factory=lambda: {"waiting": 1.0, "running": 16.0})
    scale_up_stabilization_s: Seconds = 0.0
    scale_down_stabilization_s: Seconds = 300.0
    max_scale_up_per_tick: Instances = 4
    # wva (saturation-based): a replica is saturated at kv >= kv_threshold or waiting >= queue_threshold
    kv_threshold: Annotated[float, Field(gt=0, le=1)] = 0.8
    queue_threshold: PositiveFloat = 5.0
    spare_kv: Annotated[float, Field(ge=0, le=1)] = 0.1
    spare_queue: Annotated[float, Field(ge=0)] = 3.0
    scale_to_zero_after_s: Seconds = 600.0
    # wva-tokens, wva-throughput, wva-v2 (WVA's 2026 analyzers; docs/pd-and-autoscaling.md)
    up_threshold: Annotated[float, Field(gt=0, le=1)] = 0.85
    down_threshold: Annotated[float, Field(gt=0, le=1)] = 0.70
    kv_fraction: Annotated[float, Field(gt=0, le=1)] = 0.8
    compute_tokens: Optional[Tokens] = None                # a replica's compute bound in tokens (None: KV only)
    window_s: Annotated[float, Field(gt=0, le=MAX_DURATION_S)] = 60.0
    replica_rps: Optional[PositiveFloat] = None            # a replica's supply before one is observed
    analyzers: Annotated[list[Literal["saturation", "tokens", "throughput"]], Field(min_length=1)] = Field(
        default_factory=lambda: ["saturation", "tokens", "throughput"])

    @field_validator("policy")
    @classmethod
    def _registered(cls, name: str) -> str:
        from ..policies.registry import names
        if name not in names("autoscaler"):
            raise ValueError(f"unknown autoscaler {name!r}; allowed: {', '.join(names('autoscaler'))}")
        return name

    @model_validator(mode="after")
    def _windows(self):
        # a stabilization window holds one recommendation per tick, scanned at every tick
        for name in ("scale_up_stabilization_s", "scale_down_stabilization_s"):
            if getattr(self, name) > MAX_WINDOW_TICKS * self.interval_s:
                raise ValueError(f"{name} must be at most {MAX_WINDOW_TICKS} intervals "
                                 f"({MAX_WINDOW_TICKS * self.interval_s:g} s at interval_s {self.interval_s:g})")
        if self.down_threshold >= self.up_threshold:
            raise ValueError(f"down_threshold ({self.down_threshold:g}) must be below up_threshold "
                             f"({self.up_threshold:g})")
        return self


class PoolSpec(Strict):
    name: str
    role: Literal["both", "prefill", "decode"] = "both"
    instances: InstancesOrZero = 1                        # at the start
    hardware: Optional[str] = None                         # default: the scenario's
    tp: Optional[TP] = None
    dp: Optional[TP] = None                                # data-parallel ranks of a MoE engine
    latency_model: Optional[Literal["trained-physics", "roofline", "calibrated", "hybrid"]] = None
    vllm: dict = Field(default_factory=dict)               # overrides of the scenario's vllm fields
    min_instances: Optional[InstancesOrZero] = None
    max_instances: Optional[Instances] = None
    autoscaler: Optional[AutoscalerSpec] = None
    gpus_per_node: Optional[TP] = None                   # default: tp (one instance per node)
    provisioning_delay_s: Delay = 0.0                      # a new node, before an instance can load
    load_time_s: Delay = 0.0                               # model load + warm-up before serving
    price_per_gpu_hour: Optional[Annotated[float, Field(ge=0)]] = None   # default: the GPU's (hardware.json)

    @model_validator(mode="after")
    def _bounds(self):
        lo = self.min_instances if self.min_instances is not None else min(self.instances, 1)
        hi = self.max_instances if self.max_instances is not None else max(self.instances, 1)
        if lo > hi:
            raise ValueError(f"min_instances ({lo}) must not exceed max_instances ({hi})")
        if not lo <= self.instances <= hi:
            raise ValueError(f"instances ({self.instances}) must lie in [min_instances, max_instances] = [{lo}, {hi}]")
        if hi == 0 or (self.instances == 0 and self.autoscaler is None):
            raise ValueError("a pool with no instances (and no autoscaler to add some) serves nothing")
        if self.autoscaler is not None and self.max_instances is None:
            raise ValueError("an autoscaled pool needs max_instances (how far it may grow)")
        return self


class TransferSpec(Strict):
    bandwidth_gb_s: Annotated[float, Field(ge=1e-6, le=1e6)] = 25.0                   # per GPU (NIXL RDMA)
    base_latency_ms: Millis = 0.05
    contention: bool = True                                # transfers from one prefill pod share its NIC


class PDSpec(Strict):
    decider: Union[str, dict] = "never"
    prefill_router: dict = Field(default_factory=lambda: {"policy": "default"})
    transfer: TransferSpec = TransferSpec()
    stage_order: Literal["decode-first", "prefill-first"] = "decode-first"   # llm-d's stageOrder

    @model_validator(mode="after")
    def _order(self):
        if self.stage_order == "prefill-first" and "decider" in self.model_fields_set:
            raise ValueError("stage_order prefill-first takes no decider: the prefill profile runs for every "
                             "request, as llm-d's disagg-profile-handler (remove pd.decider)")
        return self


class Scenario(Strict):
    name: str = ""
    description: str = ""
    seed: Seed = 42
    model: str
    hardware: str = "H100"
    tp: TP = 1
    dp: TP = 1                   # data-parallel ranks of a MoE model stepping as one engine (vLLM DP)
    latency_model: Literal["trained-physics", "roofline", "calibrated", "hybrid"] = "trained-physics"
    vllm: VLLMSpec = VLLMSpec()
    workload: WorkloadSpec
    cluster: ClusterSpec = ClusterSpec()
    gateway: GatewaySpec = GatewaySpec()
    router: dict = Field(default_factory=lambda: {"policy": "default"})
    pools: Optional[Annotated[list[PoolSpec], Field(min_length=1)]] = None
    pd: PDSpec = PDSpec()
    sample_interval_s: SampleInterval = 1.0              # 0: no time series

    @field_validator("model", "hardware")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _pools(self):
        if self.pools is None:
            return self
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError("pools: names must be unique")
        if not all(n.strip() for n in names):
            raise ValueError("pools: a pool name must not be empty")
        slots = sum(max(p.instances, p.max_instances or 0) for p in self.pools)
        if slots > MAX_INSTANCES:
            raise ValueError(f"pools: {slots} instances in all (at their maximum), more than {MAX_INSTANCES}")
        if "instances" in self.cluster.model_fields_set:
            raise ValueError("cluster.instances: give either cluster.instances or pools, not both")
        roles = {p.role for p in self.pools}
        if "prefill" in roles and not roles & {"decode", "both"}:
            raise ValueError("pools: a prefill pool needs a decode (or both) pool to hand its requests to")
        if "decode" in roles and not roles & {"prefill", "both"}:
            raise ValueError("pools: a decode pool needs a prefill (or both) pool")
        return self


# ---- loading --------------------------------------------------------------------------------
def _first_error(e: ValidationError) -> ConfigError:
    return pydantic_error(e, root=Scenario, whole="scenario")


def parse_scenario(data, overrides: dict | None = None) -> Scenario:
    """Validate a scenario mapping (raises one ConfigError naming the field)."""
    if not isinstance(data, dict):
        raise ConfigError("scenario", "must be a YAML mapping of fields")
    if "model" not in data and data.keys() & {"base", "grid", "points", "random"}:
        raise ConfigError("scenario", "this is a sweep file (base, grid, points); run it with blis-gym sweep")
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
    sc = parse_scenario(read_yaml(p, "scenario"), overrides)
    if not sc.name:
        sc = sc.model_copy(update={"name": p.stem})
    return sc


# ---- building the simulator configuration ------------------------------------------------------
def build(sc: Scenario, check_invariants: bool = False, base_dir: Path | str | None = None):
    """Turn a validated scenario into a SimConfig (raises ConfigError for impossible setups).
    Trace paths in the workload are relative to `base_dir` (default: the current folder)."""
    from ..sim.latency import load_model
    from ..sim.simulation import SimConfig

    from ..sim.workload.adapters import workload_adapters

    model = load_model(sc.model)
    specs = sc.pools or [PoolSpec(name="default", instances=sc.cluster.instances)]
    workload = build_workload(sc.workload, Path(base_dir or "."))
    adapters = workload_adapters(workload.clients)
    instances, pools = [], []
    mml = None
    for k, p in enumerate(specs):
        where = f"pools[{k}]" if sc.pools else ""
        pool_cfg, pool_instances, pool_mml = _pool(sc, p, model, where, first_index=len(instances),
                                                   prefix=None if sc.pools else "instance", adapters=adapters)
        instances += pool_instances
        pools.append(pool_cfg)
        if p.role != "prefill":
            mml = pool_mml if mml is None else min(mml, pool_mml)
    _check_prompts_fit(workload, mml)
    return SimConfig(instances=instances, workload=workload, seed=sc.seed, gateway=_gateway(sc),
                     pools=pools, horizon_us=workload.horizon_us,
                     sample_interval_us=int(sc.sample_interval_s * 1e6), check_invariants=check_invariants,
                     name=sc.name)


def _pool(sc: Scenario, p: PoolSpec, model, where: str, first_index: int, prefix: str | None, adapters=()):
    """One pool's instance slots (its maximum size) and its sim-side configuration."""
    from ..policies.autoscaling import make_autoscaler
    from ..sim.cluster.pools import PoolConfig
    from ..sim.engine import BLOCK_SIZE, EngineConfig
    from ..sim.latency import kv_blocks_per_instance, load_hardware, make_step_model, validate_tp
    from ..sim.latency.deployment import DEFAULT
    from ..sim.latency.hardware import vllm_batch_defaults
    from ..sim.simulation import InstanceConfig

    def field(name: str) -> str:
        return f"{where}.{name}" if where else name

    try:
        hw = load_hardware(p.hardware or sc.hardware)
    except ConfigError as e:
        raise ConfigError(field("hardware"), e.message) from None
    tp = p.tp or sc.tp
    dp = p.dp or sc.dp
    try:
        validate_tp(model, tp)
        merged = {**sc.vllm.model_dump(exclude_unset=True), **p.vllm}
        try:
            v = VLLMSpec.model_validate(merged)
        except ValidationError as e:
            err = _first_error(e)
            raise ConfigError(field(f"vllm.{err.field}"), err.message) from None
        gpn = p.gpus_per_node or (tp * dp if tp * dp <= hw.gpus_per_node else hw.gpus_per_node)
        dep = deployment(v, tp, dp, gpn, hw)
        blocks = v.total_kv_blocks or kv_blocks_per_instance(model, hw, tp, v.gpu_memory_utilization, dp=dp,
                                                             kv_cache_bytes=dep.kv_cache_bytes)
        lora = _lora(v, model, tp, adapters, field)
        if lora is not None and not v.total_kv_blocks:
            blocks = _lora_reserve(blocks, lora, model, tp, field)
    except ConfigError as e:
        if not where or e.field.startswith(where):
            raise
        raise ConfigError(field(e.field), e.message) from None
    seqs_default, tokens_default = vllm_batch_defaults(hw)
    seqs_default, tokens_default = seqs_default * dp, tokens_default * dp   # a DP group: every rank's batch
    capacity = (blocks - 1) * BLOCK_SIZE
    if v.max_model_len and v.max_model_len > capacity:
        raise ConfigError(field("vllm.max_model_len"), f"{v.max_model_len} tokens do not fit in the KV cache "
                          f"({blocks} blocks = {capacity} tokens); lower it or raise total_kv_blocks")
    mml = min(v.max_model_len or model.max_model_len, capacity)
    engine = EngineConfig(max_num_seqs=v.max_num_seqs or seqs_default,
                          max_num_batched_tokens=v.max_num_batched_tokens or tokens_default,
                          long_prefill_token_threshold=v.long_prefill_token_threshold, max_model_len=mml,
                          scheduler=v.scheduling_policy, preemption=v.preemption_policy,
                          prefix_caching=v.enable_prefix_caching,
                          offload=_offload_config(v.kv_offload, model, tp), lora=lora,
                          speculative=_speculative(v.speculative), reserve_full_prompt=v.reserve_full_prompt,
                          watermark_blocks=int(v.kv_watermark * blocks))
    kind = p.latency_model or sc.latency_model
    lo = p.min_instances if p.min_instances is not None else min(p.instances, 1)
    hi = p.max_instances if p.max_instances is not None else max(p.instances, 1)
    if p.autoscaler is None:
        lo = hi = p.instances
    n_slots = hi
    prefix = prefix or p.name
    # one step model per instance: the calibrated model keeps per-instance state (its last step)
    try:
        models = [make_step_model(kind, model, hw, tp, **({"deployment": dep} if dep != DEFAULT else {}))
                  for _ in range(n_slots)]
    except ConfigError as e:
        raise ConfigError(field(e.field), e.message) from None
    instances = [InstanceConfig(name=f"{prefix}-{j}", engine=engine, step_model=models[j],
                                total_kv_blocks=blocks, role=p.role, pool=p.name,
                                kv_bytes_per_token=model.kv_bytes_per_token(tp, dep.kv_cache_bytes))
                 for j in range(n_slots)]
    gpus = tp * dp                             # one engine's GPUs
    if gpn % gpus and gpus % gpn:
        raise ConfigError(field("gpus_per_node"), f"must be a multiple or a divisor of tp x dp = {gpus} (an engine "
                                                  "fills whole nodes or shares one)")
    gpn = max(gpn, gpus)                       # an engine larger than a node is billed as its nodes together
    price = p.price_per_gpu_hour if p.price_per_gpu_hour is not None else hw.price_per_gpu_hour
    cfg = PoolConfig(name=p.name, role=p.role, slots=list(range(first_index, first_index + n_slots)),
                     initial=p.instances, min=lo, max=hi, tp=gpus, gpus_per_node=gpn, price_per_gpu_hour=price,
                     provisioning_delay=_delay(p.provisioning_delay_s), load_time=_delay(p.load_time_s),
                     autoscaler=make_autoscaler(p.autoscaler, field("autoscaler")),
                     external=p.autoscaler is not None and p.autoscaler.policy == "external")
    return cfg, instances, mml


def deployment(v: VLLMSpec, tp: int, dp: int, gpus_per_node: int, hw):
    """The step models' Deployment of an engine (DEFAULT when no 2026 setting is on and the
    engine fits in one node)."""
    from ..sim.latency.deployment import DEFAULT, Deployment
    spec = v.speculative
    dep = Deployment(dp=dp, expert_parallel=v.enable_expert_parallel, gpus_per_node=gpus_per_node,
                     kv_cache_bytes=1 if v.kv_cache_dtype.startswith("fp8") else 0,
                     verify_tokens=1 + (spec.num_tokens if spec is not None else 0))
    plain = Deployment(gpus_per_node=gpus_per_node)
    return DEFAULT if dep == plain and tp * dp <= hw.gpus_per_node else dep


def _speculative(spec):
    if spec is None:
        return None
    from ..sim.engine.speculative import SpecConfig, acceptance_profile
    return SpecConfig(spec.method, spec.num_tokens, acceptance_profile(spec.acceptance, spec.num_tokens))


def _lora(v: VLLMSpec, model, tp: int, adapters, field):
    """The engine's LoraConfig (None without enable_lora), after checking that the workload's
    adapters can be served: LoRA is on and no adapter's rank exceeds max_lora_rank."""
    from ..sim.engine.lora import LoraConfig, bytes_per_rank

    if not v.enable_lora:
        if adapters:
            client, a = adapters[0]
            raise ConfigError(field("vllm.enable_lora"), f"the workload names LoRA adapters (client {client!r}: "
                                                         f"{a.name!r}); set enable_lora: true")
        return None
    for client, a in adapters:
        if a.rank > v.max_lora_rank:
            raise ConfigError(field("vllm.max_lora_rank"), f"{v.max_lora_rank} is below the rank {a.rank} of adapter "
                                                           f"{a.name!r} (client {client!r}); raise it to {a.rank}")
    return LoraConfig(max_loras=v.max_loras, max_lora_rank=v.max_lora_rank,
                      max_cpu_loras=v.max_cpu_loras or v.max_loras, load_base_us=int(round(v.lora_load_base_ms * 1000)),
                      bytes_per_rank=bytes_per_rank(model), load_bytes_per_us=v.lora_load_bandwidth_gb_s * 1000,
                      load_us_fixed=None if v.lora_load_ms is None else int(round(v.lora_load_ms * 1000)),
                      step_overhead=v.lora_step_overhead)


def _lora_reserve(blocks: int, lora, model, tp: int, field) -> int:
    """KV blocks left once vLLM has reserved GPU memory for max_loras adapters of
    max_lora_rank (its LoRA slots, split over the TP GPUs)."""
    from ..sim.engine import BLOCK_SIZE
    per_block = model.kv_bytes_per_token(tp) * BLOCK_SIZE
    reserved = -(-lora.max_loras * lora.max_lora_rank * lora.bytes_per_rank // tp)
    left = blocks - int(-(-reserved // per_block))
    if left < 2:
        raise ConfigError(field("vllm.max_loras"), f"the LoRA slots ({reserved / 2**30:.1f} GiB per GPU) leave no "
                                                   "room for the KV cache; lower max_loras or max_lora_rank")
    return left


def _offload_config(spec: KVOffloadSpec | None, model, tp: int):
    """The tiers of a `kv_offload` section, sized from the model's bytes per block."""
    if spec is None:
        return None
    from ..sim.engine import BLOCK_SIZE
    from ..sim.engine.offload import offload_config
    return offload_config(model.kv_bytes_per_token(tp) * BLOCK_SIZE, tp, cpu_blocks=spec.cpu_blocks,
                          cpu_gib=spec.cpu_gib, cpu_bandwidth_gb_s=spec.cpu_bandwidth_gb_s, fs_gib=spec.fs_gib,
                          fs_bandwidth_gb_s=spec.fs_bandwidth_gb_s, prompt_only=spec.mode == "prompt")


def _delay(spec):
    """A sampler of µs from a delay spec (seconds)."""
    if not isinstance(spec, DelaySpec):
        us = int(float(spec) * 1e6)
        return (lambda rng: us) if us else None
    if spec.dist == "constant":
        us = int(spec.value * 1e6)
        return (lambda rng: us) if us else None
    if spec.dist == "gaussian":
        return lambda rng: max(0, int(rng.normal(spec.mean, spec.std) * 1e6))
    return lambda rng: int(rng.exponential(spec.mean) * 1e6)


def _gateway(sc: Scenario):
    from ..policies.admission import concurrency_saturation, make_admission, role_saturation, utilization_saturation
    from ..policies.routing import make_router
    from ..sim.cluster import FlowControl, GatewayConfig
    from ..sim.cluster.eviction import EvictionConfig

    fc = None
    saturation = None
    eviction = None
    f = sc.gateway.flow_control
    if f is not None:
        fc = FlowControl(per_band_capacity=f.per_band_capacity, max_queue=f.max_queue, ttl_us=int(f.ttl_s * 1e6),
                         usage_limits=f.usage_limits, fairness=f.fairness, ordering=f.ordering)
        d = f.saturation
        if d.detector == "utilization":
            def detect(pods, now):
                return role_saturation(pods, lambda ps: utilization_saturation(
                    ps, now, d.queue_threshold, d.kv_threshold, int(d.staleness_ms * 1000)))
        else:
            def detect(pods, now):
                return role_saturation(pods, lambda ps: concurrency_saturation(ps, d.max_concurrency))
        saturation = detect
        if f.eviction is not None:
            eviction = EvictionConfig(max_per_decision=f.eviction.max_per_decision,
                                      interval_us=int(f.eviction.interval_ms * 1000))
    from ..policies.pd import make_decider
    t = sc.pd.transfer
    return GatewayConfig(admission=make_admission(sc.gateway.admission, field="gateway.admission"),
                         router=make_router(sc.router, field="router"), flow_control=fc,
                         eviction=eviction,
                         prefill_router=make_router(sc.pd.prefill_router, field="pd.prefill_router"),
                         decider=make_decider(sc.pd.decider, field="pd.decider"), pd_stage_order=sc.pd.stage_order,
                         transfer_bandwidth_gb_s=t.bandwidth_gb_s,
                         transfer_base_latency_us=int(t.base_latency_ms * 1000), transfer_contention=t.contention,
                         scrape_interval_us=int(sc.cluster.scrape_interval_ms * 1000),
                         dispatch_tick_us=int(f.dispatch_tick_ms * 1000) if f else 1000,
                         saturation=saturation, trace_decisions=sc.cluster.trace_decisions,
                         peer_pull=_peer_pull(sc.cluster.peer_pull))


def _peer_pull(spec: PeerPullSpec | None):
    if spec is None:
        return None
    from ..sim.cluster.peer_pull import PeerPullConfig
    return PeerPullConfig(min_tokens=spec.min_tokens, bandwidth_gb_s=spec.bandwidth_gb_s,
                          base_latency_us=int(spec.base_latency_ms * 1000), contention=spec.contention)


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
