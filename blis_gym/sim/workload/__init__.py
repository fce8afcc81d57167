"""Workloads: arrival processes, length distributions, clients and the request source."""
from .distributions import (Constant, ConstantArrivals, Empirical, Exponential, GammaArrivals, Gaussian,
                            LogNormal, PoissonArrivals, WeibullArrivals)
from .source import Client, Workload, WorkloadSource

__all__ = ["Client", "Constant", "ConstantArrivals", "Empirical", "Exponential", "GammaArrivals", "Gaussian",
           "LogNormal", "PoissonArrivals", "WeibullArrivals", "Workload", "WorkloadSource"]
