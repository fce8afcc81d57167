"""What a workload's seed decides: the random parts of its clients.

A workload of constant arrivals and fixed lengths (inference-perf's shared-prefix kind at a
constant load, say) sends the same requests for every seed, so asking for several seeds of it
repeats one experiment; the command line says so (`run --seed`, sweep `seeds`, `eval`). Only
what is surely deterministic counts as such: a distribution this module does not know is random.
"""
from __future__ import annotations

from .distributions import Constant, ConstantArrivals, Gaussian, ThinkTime, TimeVarying


def random_parts(workload) -> list[str]:
    """The random parts of the workload's requests ("arrivals", "lengths", "think times",
    "adapters"), each named once; empty when every seed sends the same requests."""
    parts: list[str] = []
    for c in workload.clients:
        if c.trace is not None:                       # a replayed trace: its rows as recorded
            continue
        if c.closed_loop is not None:
            if not _fixed_think(c.closed_loop.think_time):
                parts.append("think times")
        elif not _fixed_arrivals(c.arrival):
            parts.append("arrivals")
        if not (_fixed_length(c.input) and _fixed_length(c.output)):
            parts.append("lengths")
        if c.session is not None and not _fixed_think(c.session.think_time):
            parts.append("think times")
        if c.adapters is not None and len(c.adapters.adapters) > 1:
            parts.append("adapters")
    return list(dict.fromkeys(parts))


def _fixed_arrivals(arrival) -> bool:
    if isinstance(arrival, TimeVarying):              # a rate profile over a process's shape
        arrival = arrival.process
    return isinstance(arrival, ConstantArrivals)


def _fixed_length(dist) -> bool:
    return isinstance(dist, Constant) or (isinstance(dist, Gaussian) and dist.std == 0)


def _fixed_think(think) -> bool:
    return ThinkTime.of(think).dist == "constant"


def seed_note(label: str, workload) -> str | None:
    """The one line to say when seeds are asked of a workload that no seed changes, else None."""
    if random_parts(workload):
        return None
    kinds = {"a replayed trace" if c.trace is not None else "constant arrivals, fixed lengths" for c in workload.clients}
    return (f"{label} has no random element in its workload ({'; '.join(sorted(kinds))}): every seed "
            f"sends the same requests, so runs differ only where a policy or the engine draws at random")
