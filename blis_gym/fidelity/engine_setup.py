"""From a measured run to the simulator: which engine a row describes (model, GPU, TP, DP + expert
parallelism, vLLM batch limits, KV blocks) and which step-time model prices it, resolved with
vLLM's defaults; what cannot be simulated is refused with the reason."""
from __future__ import annotations

from collections.abc import Mapping

from blis_gym.errors import ConfigError
from blis_gym.sim.limits import MAX_COUNT, MAX_TOKENS

from ..sim.latency.calibrated import CalibratedPhysics
from ..sim.latency.hybrid import HYBRID_PARAMS, HybridPhysics, load_hybrid
from .measured import TEMPLATE_TOKENS, Experiment


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
