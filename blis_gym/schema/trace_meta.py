"""The `*_meta.json` beside a per-request trace (`blis-gym validate`, `blis-gym observe`): the
shape of the sections validate reads. Other keys (vLLM's resolved config, provenance, ...) are
kept as they are; the sections and settings validate uses must have the right type, so a
malformed file is one line naming the key, not a traceback. Ranges (a TP degree of 0, too few
KV blocks) are checked where the engine is built."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, ValidationError

from blis_gym.errors import ConfigError, pydantic_error

__all__ = ["TraceMeta", "parse_trace_meta"]


class _Section(BaseModel):
    """A section of the meta file: other keys are allowed (vLLM writes many), NaN is not."""
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


class EngineKwargs(_Section):
    model: Optional[StrictStr] = None
    tensor_parallel_size: Optional[StrictInt] = None
    data_parallel_size: Optional[StrictInt] = None
    enable_expert_parallel: Optional[StrictBool] = None
    max_num_seqs: Optional[StrictInt] = None
    max_num_batched_tokens: Optional[StrictInt] = None
    max_model_len: Optional[StrictInt] = None


class KVCache(_Section):
    num_gpu_blocks: Optional[StrictInt] = None
    num_cpu_blocks: Optional[StrictInt] = None
    gpu_memory_utilization: Optional[float] = None


class HardwareInfo(_Section):
    device_name: Optional[StrictStr] = None


class TraceMeta(_Section):
    model: Optional[StrictStr] = None
    clock: Optional[StrictStr] = None
    engine_kwargs: Optional[EngineKwargs] = None
    kv_cache: Optional[KVCache] = None
    hardware: Optional[HardwareInfo] = None


def parse_trace_meta(data, name: str) -> dict:
    """The meta file's content checked (`name` is the file, for the message); sections left
    out or null come back as empty mappings."""
    if not isinstance(data, dict):
        raise ConfigError(name, f"must be a JSON object (got {type(data).__name__})")
    try:
        meta = TraceMeta.model_validate(data)
    except ValidationError as e:
        err = pydantic_error(e, prefix=name, root=TraceMeta)
        if "valid dictionary" in err.message:          # a section that is not an object
            err = ConfigError(err.field, "must be a JSON object")
        raise err from None
    out = meta.model_dump()
    for section in ("engine_kwargs", "kv_cache", "hardware"):
        out[section] = out[section] or {}
    return out
