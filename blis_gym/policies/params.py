"""Checks for policy parameters, shared by routing, admission and the P/D deciders.

Every helper raises one `ConfigError` naming the field (e.g. `router.scorers[0].weight: must be
>= 0, got -1.0`), so each policy validates its own parameters in a line per parameter.
"""
from __future__ import annotations

import math

import numpy as np

from blis_gym.errors import ConfigError


def is_number(x) -> bool:
    """A real number (numpy scalars included), not a bool."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def number(field: str, x, lo: float | None = None, hi: float | None = None, integer: bool = False,
           lo_open: bool = False):
    """x as a finite float (an int with integer=True) within [lo, hi] (lo excluded with lo_open)."""
    if not is_number(x) or not math.isfinite(float(x)):
        raise ConfigError(field, f"must be a finite number, got {x!r}")
    if integer:
        if float(x) != int(x):
            raise ConfigError(field, f"must be an integer, got {x!r}")
        x = int(x)
    else:
        x = float(x)
    if lo is not None and (x <= lo if lo_open else x < lo):
        raise ConfigError(field, f"must be {'>' if lo_open else '>='} {lo}, got {x!r}")
    if hi is not None and x > hi:
        raise ConfigError(field, f"must be <= {hi}, got {x!r}")
    return x


def policy_spec(spec, field: str) -> dict:
    """A policy spec as a mapping: None is {} (the default policy), a bare name is {"policy": name}."""
    if spec is None:
        return {}
    if isinstance(spec, str):
        return {"policy": spec}
    if not isinstance(spec, dict):
        raise ConfigError(field, f"must be a policy name or a mapping with 'policy', got {type(spec).__name__}")
    return spec


def names(d) -> str:
    """The allowed names of a registry, sorted, for error messages."""
    return ", ".join(sorted(d))


def snake(name: str) -> str:
    """camelCase / kebab-case spelling -> snake_case (llm-d's YAML uses camelCase)."""
    out = []
    for ch in name.replace("-", "_"):
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out)


def take_params(field: str, params: dict, defaults: dict) -> dict:
    """User params merged over defaults; an unknown key is an error. Accepts camelCase spellings."""
    out = dict(defaults)
    for k, v in params.items():
        key = k if k in defaults else snake(k)
        if key not in defaults:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ConfigError(f"{field}.{k}", f"unknown parameter; allowed: {allowed}")
        out[key] = v
    return out


def split_entry(field: str, entry, reserved: tuple[str, ...]) -> tuple[str, dict, dict]:
    """An entry is "name", "name:weight" or a dict {"name": ..., <reserved keys>, "params": {...}
    or params inline}. Returns (name, reserved values, params)."""
    if isinstance(entry, str):
        name, _, w = entry.partition(":")
        extra: dict = {}
        if w:
            if "weight" not in reserved:
                raise ConfigError(f"{field}", f"'{entry}': a weight is not allowed here")
            try:
                extra["weight"] = float(w)
            except ValueError:
                raise ConfigError(f"{field}.weight", f"must be a number, got {w!r}") from None
        return name.strip(), extra, {}
    if not isinstance(entry, dict):
        raise ConfigError(field, f"must be a name or a mapping with 'name', got {type(entry).__name__}")
    if "name" not in entry and "type" not in entry:
        raise ConfigError(f"{field}.name", "is required")
    name = entry.get("name", entry.get("type"))
    if not isinstance(name, str):
        raise ConfigError(f"{field}.name", f"must be a string, got {name!r}")
    extra = {k: entry[k] for k in reserved if k in entry}
    params = {}
    if "params" in entry:
        p = entry["params"]
        if p is None:
            p = {}
        if not isinstance(p, dict):
            raise ConfigError(f"{field}.params", "must be a mapping")
        params.update(p)
    for k, v in entry.items():
        if k in ("name", "type", "params") or k in reserved:
            continue
        params[k] = v
    return name, extra, params


def resolve(name: str, registry: dict, aliases: dict, field: str, what: str) -> str:
    """The registry key of `name` or of its alias; an unknown name lists the allowed ones."""
    if name in registry:
        return name
    if name in aliases and aliases[name] in registry:
        return aliases[name]
    allowed = ", ".join(sorted(list(registry) + [a for a in aliases if aliases[a] in registry]))
    raise ConfigError(field, f"unknown {what} {name!r}; allowed: {allowed}")
