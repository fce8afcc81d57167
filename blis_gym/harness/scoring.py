"""Honest scoring of an episode the environment cut short.

An environment cuts an episode when its backlog (or request count) passes the configured limit
(`max_backlog`, `max_requests`): a policy that lets the queue explode stops being simulated.
Scored on the part that ran, such an episode looks better than it was: the requests that were
still to come are never counted and the pool's bill stops at the cut. So `blis-gym eval`
scores a cut episode **to its horizon**:

- every request the run never served counts as missed: those still in the system at the cut
  (they are already in the records, not completed) and those that would have arrived between
  the cut and the horizon (drawn from the scenario's own arrival stream, which is the same for
  every policy on a seed, so the count is exact for open-loop workloads; follow-up turns of
  sessions that never ran cannot be known and are not counted);
- the run lasts to the horizon: the scenario's (or the env's `horizon_s`), or without one the
  last of those arrivals, so goodput is requests within SLO per second of the whole episode;
- the cost runs to the horizon at the GPUs held at the cut (a policy that had scaled up keeps
  paying, one that had scaled down keeps its small bill; nothing better is known).

Why not score a cut episode as failed (zero)? A policy cut late in a long episode did serve
most of it; zero would rank it below one that served nothing. Counting the unserved requests
as missed keeps the KPI's meaning (requests within SLO per second of the episode) for every
episode, cut or not, and a cut can only lower it. The episode's `return` column stays what the
agent was paid (the environment's rewards); the verdict is on the KPIs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CUT_REASONS = ("backlog", "max_requests")     # the env's end reasons that cut a run short


@dataclass(frozen=True)
class Unserved:
    """What a cut episode did not run: requests per SLO class, up to `end_us`, and the GPU-hours
    and dollars its pools would have accrued from the cut to then."""
    cut_us: int
    end_us: int
    requests: dict = field(default_factory=dict)     # class -> requests that never arrived
    gpu_hours: float = 0.0
    dollars: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.requests.values())


def unserved(episode) -> Unserved:
    """The rest of a cut episode (`blis_gym.envs.core.Episode` after `_stop`)."""
    sim = episode.sim
    cut = sim.end_time_us()
    horizon = episode.planned_horizon_us or 0
    counts: dict[str, int] = {}
    last = cut

    def count(r) -> None:
        nonlocal last
        counts[r.slo_class] = counts.get(r.slo_class, 0) + 1
        last = max(last, r.arrival)

    # arrivals already scheduled on the event heap (the next open-loop one, follow-up turns)
    for _t, _p, _s, handler, arg in sorted(sim.loop.heap, key=lambda e: e[2]):
        if handler == sim._arrive or handler == sim._arrive_followup:
            if not horizon or arg.arrival <= horizon:
                count(arg)
    # the rest of the open-loop stream, up to the horizon
    while (r := sim.source.next()) is not None:
        if horizon and r.arrival > horizon:
            break
        count(r)
    end = max(horizon, last, cut) if horizon else max(last, cut)
    hours = sum(p.gpus() for p in sim.pools) * (end - cut) / 3.6e9 if sim.pools else 0.0
    dollars = sum(p.gpus() * p.cfg.price_per_gpu_hour for p in sim.pools) * (end - cut) / 3.6e9
    return Unserved(cut, end, dict(sorted(counts.items())), hours, dollars)
