"""Routers from their specs: `make_router(spec)`."""
from __future__ import annotations

from blis_gym.errors import ConfigError

from ..params import names, number, resolve, split_entry
from .filters import FILTER_ALIASES, FILTERS
from .pickers import PICKER_ALIASES, PICKERS
from .routers import LeastLoadedRouter, RandomRouter, RoundRobinRouter, Router, WeightedRouter
from .scorers import SCORER_ALIASES, SCORERS, Scorer

DEFAULT_PROFILE: tuple[tuple[str, float], ...] = (("queue", 2.0), ("kv-cache-utilization", 2.0), ("prefix-cache", 3.0))

ROUTING_POLICIES: dict[str, str] = {
    "round-robin": "uniform cycle over available candidates",
    "random": "uniform random candidate",
    "least-loaded": "min waiting + running + in_flight, random tie-break",
    "weighted": "llm-d scheduling profile: filters, weighted scorers, picker",
    "default": "llm-d built-in profile: queue x2, kv-cache-utilization x2, prefix-cache x3, max-score",
}

SIMPLE = {"round-robin": RoundRobinRouter, "random": RandomRouter, "least-loaded": LeastLoadedRouter}


def build_filters(spec_filters, field: str) -> list:
    if spec_filters is None:
        return []
    if not isinstance(spec_filters, (list, tuple)):
        raise ConfigError(field, "must be a list of filter names or mappings")
    out = []
    for i, entry in enumerate(spec_filters):
        f = f"{field}[{i}]"
        name, _, params = split_entry(f, entry, ())
        name = resolve(name, FILTERS, FILTER_ALIASES, f"{f}.name", "filter")
        out.append(FILTERS[name](name, params, f))
    return out


def build_scorers(spec_scorers, field: str) -> list[tuple[str, float, Scorer]]:
    if not isinstance(spec_scorers, (list, tuple)):
        raise ConfigError(field, "must be a list of scorer names or mappings")
    out = []
    for i, entry in enumerate(spec_scorers):
        f = f"{field}[{i}]"
        name, extra, params = split_entry(f, entry, ("weight",))
        name = resolve(name, SCORERS, SCORER_ALIASES, f"{f}.name", "scorer")
        w = extra.get("weight", 1.0)
        if w is None:
            w = 1.0
        w = number(f"{f}.weight", w, lo=0)
        scorer = SCORERS[name](params, f)
        out.append((name, w, scorer))
    return out


def build_picker(spec_picker, field: str) -> str:
    if spec_picker is None:
        return "max-score"
    name, _, params = split_entry(field, spec_picker, ())
    if params:
        raise ConfigError(f"{field}.{next(iter(params))}", "unknown parameter; allowed: none")
    return resolve(name, PICKERS, PICKER_ALIASES, f"{field}" if isinstance(spec_picker, str) else f"{field}.name",
                   "picker")


def make_router(spec: dict | None = None, field: str = "router") -> Router:
    """Build a router from a spec (see the package docstring and ROUTING_POLICIES).

    {"policy": "round-robin" | "random" | "least-loaded", "filters": [...]}
    {"policy": "weighted", "scorers": [{"name": "queue", "weight": 2}, ...], "filters": [...],
     "picker": "max-score"}
    {"policy": "default"} or {}: queue x2, kv-cache-utilization x2, prefix-cache x3 (approximate),
    max-score (scorers/filters/picker may still be given to override).
    """
    if spec is None:
        spec = {}
    if isinstance(spec, str):
        spec = {"policy": spec}
    if not isinstance(spec, dict):
        raise ConfigError(field, f"must be a mapping, got {type(spec).__name__}")
    policy = spec.get("policy", "default")
    if policy is None:
        policy = "default"
    if not isinstance(policy, str) or policy not in ROUTING_POLICIES:
        raise ConfigError(f"{field}.policy", f"unknown policy {policy!r}; allowed: {names(ROUTING_POLICIES)}")
    if policy in SIMPLE:
        allowed = ("policy", "filters")
    else:
        allowed = ("policy", "filters", "scorers", "picker")
    for k in spec:
        if k not in allowed:
            raise ConfigError(f"{field}.{k}", f"unknown key for policy {policy!r}; allowed: {', '.join(allowed)}")
    filters = build_filters(spec.get("filters"), f"{field}.filters")
    if policy in SIMPLE:
        return SIMPLE[policy](filters)
    scorers_spec = spec.get("scorers")
    if scorers_spec is None:
        scorers_spec = [{"name": n, "weight": w} for n, w in DEFAULT_PROFILE]
    scorers = build_scorers(scorers_spec, f"{field}.scorers")
    if not scorers:
        raise ConfigError(f"{field}.scorers", "a weighted profile needs at least one scorer; allowed: "
                          + names(SCORERS))
    picker = build_picker(spec.get("picker"), f"{field}.picker")
    return WeightedRouter(scorers, filters, picker)
