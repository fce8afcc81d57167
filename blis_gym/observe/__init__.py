"""`blis-gym observe`: drive a real OpenAI-compatible server (vLLM, llm-d's gateway) with a
scenario's workload and record per-request latencies in the trace format `blis-gym validate`
replays (see docs/observe.md)."""
from .runner import ObserveConfig, observe

__all__ = ["ObserveConfig", "observe"]
