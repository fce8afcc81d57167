"""Workloads: arrival processes, length distributions, clients, sessions, closed loops, traces
and the request source."""
from .builders import from_blis_spec, inference_perf_client, inference_perf_workload, load_blis_spec
from .distributions import (Constant, ConstantArrivals, Diurnal, Empirical, Exponential, GammaArrivals, Gaussian,
                            LogNormal, Multimodal, ParetoLogNormal, PoissonArrivals, Spike, Stages, ThinkTime,
                            TimeVarying, WeibullArrivals, Windows, make_arrivals)
from .clients import PRIORITY, Client, ClosedLoop, SessionConfig, Workload
from .source import Session, TraceSession, WorkloadSource
from .traces import TraceData, load_trace, read_trace

__all__ = ["Client", "ClosedLoop", "Constant", "ConstantArrivals", "Diurnal", "Empirical", "Exponential",
           "GammaArrivals", "Gaussian", "LogNormal", "Multimodal", "PRIORITY", "ParetoLogNormal", "PoissonArrivals",
           "Session", "SessionConfig", "Spike", "Stages", "ThinkTime", "TimeVarying", "TraceData", "TraceSession",
           "WeibullArrivals", "Windows", "Workload", "WorkloadSource", "from_blis_spec", "inference_perf_client",
           "inference_perf_workload", "load_blis_spec", "load_trace", "make_arrivals", "read_trace"]
