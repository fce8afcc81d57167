"""Sweeps: many scenarios varied along axes, run in parallel, resumable, with a Pareto view.

    from blis_gym.sweep import run_point, load_results
    row = run_point("overload-probabilistic", {"workload.rate": 60})   # one row: the values, KPIs
    table = load_results("results/sweeps/capacity")                    # a pandas DataFrame

The sweep-file format and the command (`blis-gym sweep`) are documented in docs/sweeps.md.
"""
__all__ = ["load_results", "load_sweep", "parse_sweep", "run_point", "run_sweep"]


def __getattr__(name):
    # imported on first use: `blis-gym --help` loads this package without pydantic or pandas
    if name in ("load_results", "run_point", "run_sweep"):
        from . import runner
        return getattr(runner, name)
    if name in ("load_sweep", "parse_sweep"):
        from . import spec
        return getattr(spec, name)
    raise AttributeError(name)
