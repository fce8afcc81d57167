"""What a replay could not score, in words: requests the simulated engine never completed (and
why), and a validation in which no experiment was scored at all."""
from __future__ import annotations

from collections import Counter

import numpy as np

__all__ = ["nothing_scored", "unserved"]


def unserved(sim) -> str:
    """'' when every request of a finished Simulation completed, else one phrase: how many did
    not, by final state, with the engine's reason for the most common one ("3 of 12 requests
    not completed: 3 dropped (prompt of 10000000 tokens >= max_model_len 4096)")."""
    from blis_gym.sim.engine import State
    from blis_gym.sim.metrics.collector import STATE_NAMES

    a = sim.metrics.arrays()
    left = np.flatnonzero(a["state"] != int(State.COMPLETED))
    if not len(left):
        return ""
    names = sim.metrics.strings.names
    states = Counter(STATE_NAMES[State(int(a["state"][i]))] for i in left.tolist())
    reasons = Counter(names[a["reason"][i]] for i in left.tolist() if names[a["reason"][i]])
    parts = ", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda kv: (-kv[1], kv[0])))
    why = f" ({reasons.most_common(1)[0][0]})" if reasons else ""
    return f"{len(left)} of {len(a['state'])} requests not completed: {parts}{why}"


def nothing_scored(summary: dict) -> str:
    """'' if the validation scored at least one experiment, else the line that says why not."""
    if summary.get("_rows") or any(_counts(summary.get("n") or {})):
        return ""
    skipped = summary.get("skipped") or []
    if not skipped:
        return f"{summary.get('input', 'the file')}: no experiment to score"
    first = skipped[0]
    more = f" (and {len(skipped) - 1} more, reasons in summary.json)" if len(skipped) > 1 else ""
    return (f"{summary.get('input', 'the file')}: no experiment could be scored: "
            f"{first['exp_id']}: {first['reason']}{more}")


def _counts(n: dict):
    """The sample counts of a summary's `n` ({metric: n} or {latency model: {metric: n}})."""
    for v in n.values():
        if isinstance(v, dict):
            yield from v.values()
        else:
            yield v
