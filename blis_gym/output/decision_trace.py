"""What-if traces of routing decisions: the counterfactual regret of the router's alternatives.

At a traced routing decision the simulation is forked (a deep copy of the whole `Simulation`:
event heap, instances, KV caches, router state and random streams), the request is sent to
another pod in the fork, and the fork runs forward, with the built-in policies deciding
everything after, until that request reaches a final state. The chosen pod is forked and run
the same way, so both outcomes are measured identically and the chosen pod's regret against
itself is exactly 0. The main run never sees a fork: its outputs are the same with and without
tracing.

The main run is driven through the router's decision point (`Simulation(cfg,
external={"router"})`) and answers every decision with the built-in router's own `pick`, which
reproduces the untraced run exactly (tests/test_decisions.py).

Rows (decision_trace.csv, see docs/routing-and-admission.md): one per (traced decision,
candidate pod). Regret is the alternative's outcome minus the chosen pod's, in ms, for the
request's TTFT and E2E: positive means the router's choice was better by that much; negative
means the alternative would have served this request faster.
"""
from __future__ import annotations

import copy
import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..sim.engine import State
from ..sim.metrics.collector import STATE_NAMES

COLUMNS = ("decision", "time_s", "request_id", "pod", "chosen", "rank", "total", "scores", "simulated",
           "state", "ttft_ms", "e2e_ms", "ttft_regret_ms", "e2e_regret_ms",
           "others", "others_ttft_regret_ms", "others_e2e_regret_ms")


@dataclass(frozen=True)
class Sampling:
    """Which routing decisions to trace: every `every`-th (the 1st, the (1+every)-th, ...), at
    most `limit` of them (0: no limit), each with its `top_k` best-scored alternatives; with
    `window_us`, also the effect on the requests in the system or arriving within that window."""
    top_k: int = 2
    every: int = 1
    limit: int = 0
    window_us: int = 0

    def traced(self, decision: int, done: int) -> bool:
        return decision % self.every == 0 and (not self.limit or done < self.limit)


@dataclass(frozen=True)
class Outcome:
    """A request's end in one branch: its state name and latencies (µs; -1 when it has none),
    and the (TTFT, E2E) of the other requests of the window that completed, by request."""
    state: str
    ttft_us: int
    e2e_us: int
    others: dict


def check_traceable(cfg, field: str = "--decision-trace") -> None:
    """A ConfigError unless the scenario routes requests between pods."""
    if cfg.gateway is None or len(cfg.instances) < 2:
        raise ConfigError(field, "the scenario has a single pod: there is no routing decision to trace")


def run_traced(sim, sampling: Sampling, progress=None) -> tuple[dict, list[tuple]]:
    """Run `sim` (built with external={"router"} and nothing else external) to the end with
    the built-in router deciding; returns its summary and the decision-trace rows."""
    if set(sim.external) != {"router"}:
        raise ValueError("run_traced needs a Simulation whose only external slot is the router")
    total = getattr(sim.cfg.workload, "num_requests", 0) or 0
    rows: list[tuple] = []
    decision = done = 0
    p = sim.run_until_decision()
    while p is not None:
        r = p.request
        chosen = p.default()                     # the router's pick, as the untraced run makes it
        if chosen is not None and sampling.traced(decision, done):
            rows += explain(sim, chosen, sampling.top_k, decision, sampling.window_us)
            done += 1
        p = _route(sim, r, chosen)
        decision += 1
        if progress is not None and decision % 64 == 0:
            progress(sim.finished, total)
    return sim.summary(), rows


def _route(sim, r, pod):
    """Send the pending request to `pod` (None: rejected, no endpoint) exactly as the built-in
    router's choice is applied, then advance to the next decision."""
    sim.pending = None
    sim.gateway.apply_route(r, pod, sim.loop.now)
    return sim.run_until_decision()


def _fork(sim):
    """An independent copy of the simulation whose built-in policies decide everything. The
    main run's final-state hooks (observers such as an export's request log) are dropped: a
    branch is not part of the run."""
    f = copy.deepcopy(sim)
    f.external = frozenset()
    f.pending = None
    f.final_hooks = []
    return f


def explain(sim, chosen: int, top_k: int = 2, decision: int = 0, window_us: int = 0) -> list[tuple]:
    """The decision-trace rows of `sim`'s pending routing decision (see COLUMNS) if the request
    goes to pod `chosen`: each candidate's scores, and the outcomes of `chosen` and of the
    `top_k` best-scored other candidates, each simulated in its own fork. With `window_us`, each
    branch also runs until every request in the system or arriving within `window_us` after
    the decision has ended, and their latencies are compared. `sim` is unchanged."""
    p = sim.pending
    if p is None or p.slot != "router":
        raise ValueError("explain needs a pending routing decision")
    r, mask = p.request, p.mask
    now = sim.loop.now
    base = _fork(sim)
    scored = base.gateway.router.scores(base.live[r.id], base.gateway.pods if not base.gateway.pd_mode
                                        else base.gateway.decode_pods, base.gateway.ctx)
    scored = [s for s in scored if mask[s[0]]]
    if not any(i == chosen for i, _, _ in scored):          # e.g. the filters' random exploration
        scored.append((chosen, float("nan"), {}))
    # best total first, ties by pod order, NaN (unscored) last; tied totals share a rank
    order = sorted(scored, key=lambda s: (s[1] != s[1], -s[1] if s[1] == s[1] else 0.0, s[0]))
    rank = {i: 1 + sum(1 for _, t, _ in scored if t > total) if total == total else ""
            for i, total, _ in scored}
    alternatives = [i for i, _, _ in order if i != chosen][:top_k]
    until = now + window_us if window_us else -1
    outcomes = {chosen: _branch(base, r.id, chosen, until, last=not alternatives)}
    for n, i in enumerate(alternatives):
        outcomes[i] = _branch(base, r.id, i, until, last=n == len(alternatives) - 1)
    mine = outcomes[chosen]
    names = [p.name for p in sim.gateway.pods]
    rows = []
    for i, total, parts in sorted(scored, key=lambda s: s[0]):
        o = outcomes.get(i)
        detail = ";".join(f"{k}={v:.6g}" for k, v in parts.items())
        row = (decision, f"{now / 1e6:.6f}", r.id, names[i], int(i == chosen), rank[i], _num(total), detail,
               int(o is not None))
        if o is None:
            row += ("",) * 8
        else:
            row += (o.state, _ms(o.ttft_us), _ms(o.e2e_us), _diff(o.ttft_us, mine.ttft_us),
                    _diff(o.e2e_us, mine.e2e_us)) + _others(o, mine, window_us)
        rows.append(row)
    return rows


def _others(o: Outcome, mine: Outcome, window_us: int) -> tuple:
    """(count, Σ TTFT regret ms, Σ E2E regret ms) over the window's other requests that
    completed in both branches (matched by id, arrival and length: a session's follow-up
    numbered differently in the two branches is left out)."""
    if not window_us:
        return "", "", ""
    both = [k for k in o.others if k in mine.others]
    ttft = sum(o.others[k][0] - mine.others[k][0] for k in both)
    e2e = sum(o.others[k][1] - mine.others[k][1] for k in both)
    return len(both), f"{ttft / 1000:.3f}", f"{e2e / 1000:.3f}"


def _branch(base, rid: int, pod: int, until: int, last: bool) -> Outcome:
    """Route request `rid` to `pod` in a copy of `base` (or in `base` itself when no other
    branch needs it) and run until the request reaches a final state or the run ends; with a
    window (`until` >= 0), until every request that arrived by `until` has ended too."""
    f = base if last else _fork(base)
    r = f.live[rid]
    end: list = []
    others: dict = {}

    def stop(req, state, now):
        if req is r:
            end.append(state)
        elif req.arrival <= until and state is State.COMPLETED:
            others[(req.id, req.arrival, req.input_len)] = (req.first_token - req.arrival, req.finished - req.arrival)
        if end and (until < 0 or (now > until and all(x.arrival > until for x in f.live.values()))):
            f.loop.halt = True

    f.final_hooks.append(stop)
    f.gateway.apply_route(r, pod, f.loop.now)
    limit = f.cfg.horizon_us or None
    f.loop.halt = False                          # (the run was halted at the decision)
    while not f.loop.halt and f.loop.run(until_us=limit, max_events=1 << 20):
        pass
    state = r.state
    ttft = r.first_token - r.arrival if r.first_token >= 0 else -1
    e2e = r.finished - r.arrival if state is State.COMPLETED else -1
    return Outcome(STATE_NAMES[state], ttft, e2e, others)      # still_* when the horizon came first


def _ms(us: int) -> str:
    return f"{us / 1000:.3f}" if us >= 0 else ""


def _diff(alt_us: int, chosen_us: int) -> str:
    return f"{(alt_us - chosen_us) / 1000:.3f}" if alt_us >= 0 and chosen_us >= 0 else ""


def _num(x: float) -> str:
    return "" if x != x else f"{x:.6g}"


def write_decision_trace(rows: list[tuple], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return path
