"""Export a run as a request trace that `blis-gym run` replays (the csv format of
blis_gym.sim.workload.traces), with each request's results beside its workload columns.

The workload columns (`arrival_s, input_tokens, output_tokens, prefix_group, prefix_tokens,
session, slo_class, tenant`) are the ones the csv trace loader reads; the result columns are
requests.csv's, `adapter` included when the run had LoRA adapters (the loader ignores them, so
a replay sends base-model requests). Rows are in arrival order. See docs/workloads.md,
"Exporting a run as a trace", for what replays identically.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import ConfigError

WORKLOAD_COLUMNS = ("arrival_s", "input_tokens", "output_tokens", "prefix_group", "prefix_tokens", "session",
                    "slo_class", "tenant")
# requests.csv columns carried as results (output_tokens there is the generated count)
RESULT_COLUMNS = ("request_id", "client", "instance", "state", "reason", "cached_tokens", "generated_tokens",
                  "ttft_ms", "itl_ms", "e2e_ms", "scheduling_delay_ms", "preemptions")


def check_exportable(workload, field: str = "--export-trace") -> None:
    """A ConfigError for workloads a csv trace cannot express."""
    for c in getattr(workload, "clients", ()):
        if getattr(c, "repeat_prompts", False):
            raise ConfigError(field, f"client {c.name!r} re-sends fixed questions (repeat_questions), "
                                     "which a csv trace cannot express")


class RequestLog:
    """Keeps every request the simulation injects (read when it ends): a final-state hook, so
    a run without export pays nothing."""

    def __init__(self, sim):
        self.sim = sim
        self.done: list = []
        sim.final_hooks.append(lambda r, state, now: self.done.append(r))

    def requests(self) -> list:
        """Every injected request, final or still in the system, in arrival order."""
        return sorted([*self.done, *self.sim.live.values()], key=lambda r: (r.arrival, r.id))


def write_trace(sim, log: RequestLog, requests_csv: Path, path: Path) -> Path:
    """Write the run's trace to `path`, joining each request with its row of `requests_csv`."""
    with open(requests_csv, newline="") as f:
        reader = csv.DictReader(f)
        results = {row["request_id"]: row for row in reader}
    # requests.csv has an adapter column only when requests named LoRA adapters; it is carried
    # as a result (the csv loader does not read it: a replay sends base-model requests)
    columns = RESULT_COLUMNS + (("adapter",) if "adapter" in (reader.fieldnames or ()) else ())
    names = getattr(sim.source, "group_names", None)          # a source built in code may have none
    groups = names() if names is not None else {}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(WORKLOAD_COLUMNS + columns)
        for r in log.requests():
            res = results[str(r.id)]
            res["generated_tokens"] = res["output_tokens"]
            w.writerow((f"{r.arrival / 1e6:.6f}", r.input_len, r.output_len, *_prefix(r, groups), _session(r),
                        r.slo_class, r.tenant, *(res[c] for c in columns)))
    return path


def _prefix(r, groups: dict) -> tuple[str, int | str]:
    """The request's shared group prefix: (group name, tokens), or empty cells."""
    root = r.content.root
    if root is None:
        return "", ""
    return groups.get(root.segments[0][0], f"group{-root.segments[0][0]}"), root.length


def _session(r) -> str:
    """A conversation id for turns that extend the previous turn's context, else empty (a turn
    with a fresh prompt replays as an independent request)."""
    s = r.session
    if s is None:
        return ""
    name = getattr(s, "name", None)
    if name is not None:                          # a replayed trace's own session id
        return name
    if not s.accumulate or s.turns < 2:
        return ""
    return f"{s.client}/{s.id}"
