"""Small builders shared by the tests: a fixed list of requests on one instance, scenario
mappings with fields set."""
from __future__ import annotations

import copy

from blis_gym.sim.engine import Content, EngineConfig, Request
from blis_gym.sim.latency import load_hardware, load_model, make_step_model
from blis_gym.sim.simulation import InstanceConfig, SimConfig, Simulation


class ListSource:
    """Yields given requests in arrival order."""

    def __init__(self, requests):
        self.reqs = sorted(requests, key=lambda r: (r.arrival, r.id))
        self.i = 0
        self.num_requests = len(self.reqs)

    def exhausted(self) -> bool:
        return self.i >= len(self.reqs)

    def next(self):
        if self.exhausted():
            return None
        r = self.reqs[self.i]
        self.i += 1
        return r

    def finished(self, req, now, completed):
        return []


def request(rid, arrival_us, n_in, n_out, prefix: Content | None = None, priority=3, deadline=0,
            slo_class="standard"):
    own = n_in - (prefix.length if prefix else 0)
    content = Content(prefix, ((rid * 4 + 1, own),))
    return Request(rid, arrival_us, content.length, n_out, content, slo_class=slo_class, priority=priority,
                   deadline=deadline)


def group_prefix(n_tokens: int, key: int = -2) -> Content:
    return Content(None, ((key, n_tokens),), shared=True)


def simulate(requests, blocks=15909, latency="trained-physics", check=True, log=False, **engine):
    model = load_model("Qwen/Qwen3-14B")
    hw = load_hardware("H100")
    cfg = EngineConfig(**{"max_num_seqs": 256, "max_num_batched_tokens": 2048, **engine})
    inst = InstanceConfig("instance-0", cfg, make_step_model(latency, model, hw, 1), blocks)
    sim = Simulation(SimConfig(instances=[inst], workload=ListSource(requests), check_invariants=check,
                               sample_interval_us=0))
    if log:
        sim.instances[0].step_log = []
    summary = sim.run()
    return sim, summary


SUMMARY_STATES = ("completed_requests", "timed_out_requests", "dropped_requests", "rejected_requests",
                  "still_queued", "still_running", "still_in_transit", "still_in_gateway", "still_in_pd_transfer")


def assert_conserved(sim, summary) -> None:
    """Every injected request is in exactly one state: the summary's counts are non-negative and
    add up to the injected requests, and each request has exactly one record."""
    counts = {k: summary[k] for k in SUMMARY_STATES}
    counts["evicted_requests"] = summary.get("evicted_requests", 0)     # only with in-flight eviction on
    assert all(v >= 0 for v in counts.values()), counts
    assert sum(counts.values()) == summary["injected_requests"], (summary["injected_requests"], counts)
    ids = sim.metrics.arrays()["id"]
    assert len(ids) == summary["injected_requests"] == len(set(ids.tolist()))


def with_fields(data: dict, **fields) -> dict:
    """A deep copy of a scenario mapping with fields set (`a__b` is the nested field a.b; None
    removes the field)."""
    d = copy.deepcopy(data)
    for path, value in fields.items():
        *parents, last = path.split("__")
        node = d
        for k in parents:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return d
