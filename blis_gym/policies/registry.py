"""One registry of the built-in (and added) policies of every slot, by name.

Slots (their interfaces are the Protocols of `blis_gym.sim.slots`):

    step_time   StepTimeModel     latency_model: trained-physics | roofline | calibrated
    admission   AdmissionPolicy   gateway.admission.policy
    router      Router            router.policy, pd.prefill_router.policy
    pd          PDDecider         pd.decider.policy
    autoscaler  Autoscaler        pools[*].autoscaler.policy
    scorer      routing Scorer    router.scorers[*].name (a weighted profile's parts)

A registered entry is a factory called as `factory(params, field)`: a function, or a class with
a classmethod `from_params(params, field)`. `params` is the spec mapping without its `policy`
(or `name`) key (for an autoscaler: the pool's validated `AutoscalerSpec`; for a step-time
model: `{model, hw, tp}`); `field` names the spec in error messages (raise `ConfigError(field + ".x",
...)` for a bad parameter). `create(slot, name, params, field)` resolves a name (an unknown one
is one ConfigError listing `names(slot)`) and builds the policy.

Adding a policy: write a class that satisfies the slot's Protocol, decorate it, and import its
module from `_BUILTIN_MODULES` below (or anywhere before the scenario is built):

    from blis_gym.policies.registry import register

    @register("pd", "my-decider")
    class MyDecider:
        def __init__(self, threshold: int):
            self.threshold = threshold

        @classmethod
        def from_params(cls, params, field):
            return cls(number(f"{field}.threshold", params.get("threshold", 16), lo=0, integer=True))

        def disaggregate(self, req, cached_tokens):
            return req.input_len - cached_tokens >= self.threshold

Then `pd: {decider: {policy: my-decider, threshold: 32}}` selects it in a scenario.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from blis_gym.errors import ConfigError

SLOTS = ("step_time", "admission", "router", "pd", "autoscaler", "scorer")
# What an unknown name is called in error messages.
WHAT = {"step_time": "latency model", "admission": "admission policy", "router": "policy",
        "pd": "P/D decider", "autoscaler": "autoscaler", "scorer": "scorer"}
# Modules whose import registers the built-ins.
_BUILTIN_MODULES = ("blis_gym.policies.admission", "blis_gym.policies.routing", "blis_gym.policies.pd",
                    "blis_gym.policies.autoscaling", "blis_gym.policies.wva_v2", "blis_gym.policies.step_time")

_TABLES: dict[str, dict[str, Any]] = {slot: {} for slot in SLOTS}
_loaded = False


def _check_slot(slot: str) -> None:
    if slot not in _TABLES:
        raise ValueError(f"unknown slot {slot!r}; slots: {', '.join(SLOTS)}")


def register(slot: str, name: str) -> Callable:
    """Decorator: register a policy class (with `from_params`) or a factory function under a name."""
    _check_slot(slot)

    def deco(obj):
        table = _TABLES[slot]
        if name in table and table[name] is not obj:
            raise ValueError(f"{slot} policy {name!r} is already registered")
        table[name] = obj
        return obj
    return deco


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def names(slot: str) -> list[str]:
    """Every registered name of a slot, sorted (the built-ins included)."""
    _check_slot(slot)
    _load_builtins()
    return sorted(_TABLES[slot])


def get(slot: str, name, field: str | None = None):
    """The registered entry of `name`; an unknown name is a ConfigError at `field` listing the names."""
    _check_slot(slot)
    _load_builtins()
    entry = _TABLES[slot].get(name) if isinstance(name, str) else None
    if entry is None:
        raise ConfigError(field or slot, f"unknown {WHAT[slot]} {name!r}; allowed: {', '.join(names(slot))}")
    return entry


def table(slot: str) -> dict[str, Any]:
    """The live name -> entry mapping of a slot (for modules that register into it; read only)."""
    _check_slot(slot)
    return _TABLES[slot]


def create(slot: str, name: str, params=None, field: str | None = None):
    """Build the policy `name` of `slot` from its parameters (see the module docstring)."""
    where = field or slot
    entry = get(slot, name, f"{where}.policy")
    build = getattr(entry, "from_params", entry)
    return build({} if params is None else params, where)
