"""Request routing: llm-d's EPP scheduling pipeline (filters -> weighted scorers -> picker).

A router sees each pod only through `PodSignals` (blis_gym.sim.cluster.signals) plus the
`RouterContext` handed in by the caller (the simulated time, the router's own RNG stream and a
precise view of each pod's prefix cache). The pipeline follows llm-d's scheduler profile (the EPP's
filters, scorers, pickers and default weights in https://github.com/llm-d/llm-d-inference-scheduler):

    candidates = available pods -> filters (in order)
    total(pod) = sum_k  w_k * clamp(score_k(pod), 0, 1)        (absolute weights, default 1.0)
    choice     = picker(candidates, totals)

The package: `context` (RouterContext, SimpleContext), `prefix` (PrefixIndex, the router's view
of the pods' prefix caches, which the gateway and the environments query too), `scorers`,
`filters`, `pickers`, `routers` and `factory` (make_router). Build routers with
`make_router(spec)`; routers and scorers are registered by name in
`blis_gym.policies.registry` (slots "router" and "scorer"); filters and pickers: FILTERS, PICKERS.
Determinism: no set is iterated and nothing depends on hash() ordering; per-pod state lives in
insertion-ordered dicts keyed by pod index; every random draw comes from ctx.rng.
"""
from .context import RouterContext, SimpleContext
from .factory import DEFAULT_PROFILE, make_router
from .filters import FILTER_ALIASES, FILTERS, PrefixAffinityFilter, UtilizationFilter
from .pickers import PICKER_ALIASES, PICKERS
from .prefix import PrefixIndex
from .routers import LeastLoadedRouter, RandomRouter, RoundRobinRouter, Router, WeightedRouter
from .scorers import SCORER_ALIASES, SCORERS, PrefixCacheScorer, Scorer

__all__ = [
    "RouterContext", "SimpleContext", "Router", "WeightedRouter", "RoundRobinRouter", "RandomRouter",
    "LeastLoadedRouter", "Scorer", "PrefixCacheScorer", "PrefixIndex", "PrefixAffinityFilter",
    "UtilizationFilter", "make_router", "SCORERS", "SCORER_ALIASES",
    "FILTERS", "FILTER_ALIASES", "PICKERS", "PICKER_ALIASES", "DEFAULT_PROFILE",
]
