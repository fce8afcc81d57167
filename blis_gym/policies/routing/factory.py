"""Routers from their specs: `make_router(spec)`."""
from __future__ import annotations

from blis_gym.errors import ConfigError

from ..params import names, number, policy_spec, resolve, split_entry
from ..registry import create, register
from .filters import FILTER_ALIASES, FILTERS
from .pickers import PICKER_ALIASES, PICKERS
from .routers import LeastLoadedRouter, RandomRouter, RoundRobinRouter, Router, WeightedRouter
from .scorers import SCORER_ALIASES, SCORERS, Scorer

DEFAULT_PROFILE: tuple[tuple[str, float], ...] = (("queue", 2.0), ("kv-cache-utilization", 2.0), ("prefix-cache", 3.0))


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


def _check_keys(params: dict, policy: str, allowed: tuple[str, ...], field: str) -> None:
    for k in params:
        if k not in allowed:
            raise ConfigError(f"{field}.{k}", f"unknown key for policy {policy!r}; allowed: {', '.join(allowed)}")


def _simple(policy: str, cls: type[Router]):
    def build(params: dict, field: str) -> Router:
        _check_keys(params, policy, ("policy", "filters"), field)
        return cls(build_filters(params.get("filters"), f"{field}.filters"))
    build.__doc__ = cls.__doc__
    return build


def _weighted(policy: str):
    def build(params: dict, field: str) -> Router:
        _check_keys(params, policy, ("policy", "filters", "scorers", "picker"), field)
        filters = build_filters(params.get("filters"), f"{field}.filters")
        scorers_spec = params.get("scorers")
        if scorers_spec is None:
            scorers_spec = [{"name": n, "weight": w} for n, w in DEFAULT_PROFILE]
        scorers = build_scorers(scorers_spec, f"{field}.scorers")
        if not scorers:
            raise ConfigError(f"{field}.scorers", "a weighted profile needs at least one scorer; allowed: "
                              + names(SCORERS))
        picker = build_picker(params.get("picker"), f"{field}.picker")
        return WeightedRouter(scorers, filters, picker)
    build.__doc__ = WeightedRouter.__doc__
    return build


register("router", "round-robin")(_simple("round-robin", RoundRobinRouter))
register("router", "random")(_simple("random", RandomRouter))
register("router", "least-loaded")(_simple("least-loaded", LeastLoadedRouter))
register("router", "weighted")(_weighted("weighted"))
# llm-d's built-in profile: queue x2, kv-cache-utilization x2, prefix-cache x3, max-score
register("router", "default")(_weighted("default"))


@register("router", "predicted-latency")
def _predicted_latency(params: dict, field: str) -> Router:
    """llm-d's latency-aware scheduling: per-pod online TTFT/TPOT predictors, SLO headroom
    (blis_gym.policies.predicted_latency); the default profile until it has data."""
    from blis_gym.policies.predicted_latency import make_predicted_latency
    fallback = _weighted("default")({"filters": params.get("filters")}, field)
    return make_predicted_latency({k: v for k, v in params.items() if k not in ("policy", "filters")}, field,
                                  fallback)


def make_router(spec: dict | None = None, field: str = "router") -> Router:
    """Build a router from a spec (policies: `registry.names("router")`).

    {"policy": "round-robin" | "random" | "least-loaded", "filters": [...]}
    {"policy": "weighted", "scorers": [{"name": "queue", "weight": 2}, ...], "filters": [...],
     "picker": "max-score"}
    {"policy": "default"} or {}: queue x2, kv-cache-utilization x2, prefix-cache x3 (approximate),
    max-score (scorers/filters/picker may still be given to override).
    """
    spec = policy_spec(spec, field)
    policy = spec.get("policy", "default")
    if policy is None:
        policy = "default"
    return create("router", policy, spec, field)
