"""Environment specs (`envs/*.yaml`) and their configuration dictionaries.

An environment spec names the Gymnasium id, the entry point, the decision slot the agent
controls and a `config` mapping: the scenario, the episode's length, the observation and the
reward. `gym.make(id, config={...})` merges the user's overrides into that mapping (nested
sections merge key by key); an unknown key is a `ConfigError` naming it.
"""
from __future__ import annotations

import copy
from pathlib import Path


from ..errors import ConfigError, read_yaml
from ..resources import env_spec_dir, scenario_path
from ..sim.simulation import SLOTS

# Sections whose keys are free (class names, scenario fields): merged, never checked for names.
FREE_KEYS = {("scenario_overrides",), ("reward", "class_weights"), ("reward", "targets"),
             ("reward", "default_targets"), ("reward", "penalties")}

# The configuration every environment understands (a spec's `config` overrides these).
BASE_CONFIG: dict = {
    # the scenario: a name in scenarios/, a path to a YAML file, or an inline mapping
    "scenario": "cluster-4xh100-default",
    # fields merged (recursively) into the scenario before it is built; a null value deletes a key.
    # This is how the other slots get their built-in policies, e.g. {"gateway": {"admission": "probabilistic"}}
    "scenario_overrides": {},
    # episode length: the scenario's workload horizon replaced by horizon_s (simulated seconds; the
    # simulator stops there and the episode is truncated); max_requests truncates the episode at the
    # first decision after that many requests arrived; null = no limit
    "horizon_s": None,
    "max_requests": None,
    # truncate early when more than this many requests are in the system (arrived, not finished)
    "max_backlog": None,
    # observation
    "max_pods": None,            # pod slots in the observation and the router's action space (null: the scenario's)
    "observation": {
        "classes": ["critical", "standard", "sheddable"],   # one-hot order of SLO classes (+ one "other" flag)
        "waiting_scale": 8.0,         # x / (x + scale) for each count-like signal
        "running_scale": 32.0,
        "in_flight_scale": 32.0,
        "in_flight_tokens_scale": 16384.0,
        "queue_scale": 64.0,
        "backlog_scale": 256.0,
        "turn_scale": 4.0,
        "max_input_tokens": 32768,    # log1p(input) / log1p(max_input_tokens), clipped to 1
        "time_scale_s": 600.0,        # elapsed time t / (t + scale) when there is no horizon
    },
    # reward (see blis_gym.envs.rewards)
    "reward": {
        "class_weights": {},          # class -> credit for a completion within its targets
        "default_weight": 1.0,
        "targets": {},                # class -> {ttft_ms, itl_ms, e2e_ms}; over the scenario's slo_targets
        "default_targets": {},        # for classes with targets nowhere else
        "penalties": {},              # class -> penalty for a rejected or timed-out request
        "default_penalty": 0.0,
        "penalize_sheddable": False,  # also penalise classes with priority < 0
        "cost_weight": 0.0,           # reward units per dollar of GPU cost
    },
    "scale_step": 1,                 # autoscaler: actions are -scale_step..+scale_step replicas
    "info_default_action": False,    # put the built-in policy's choice in info (consumes its random draws)
    "render_recent": 8,              # decisions listed by render()
}


def _merge_free(base: dict, over: dict) -> dict:
    """Recursive merge of free-form mappings (None values are kept: they delete scenario keys later)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_free(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge(base: dict, over: dict, path: tuple = ()) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        where = ".".join(str(p) for p in (*path, k))
        if k not in base:
            allowed = ", ".join(sorted(str(x) for x in base))
            raise ConfigError(f"config.{where}", f"unknown key; allowed: {allowed}")
        if (*path, k) in FREE_KEYS:
            if not isinstance(v, dict):
                raise ConfigError(f"config.{where}", f"must be a mapping, got {v!r}")
            out[k] = _merge_free(base[k], v)
        elif isinstance(base[k], dict):
            if not isinstance(v, dict):
                raise ConfigError(f"config.{where}", f"must be a mapping, got {v!r}")
            out[k] = _merge(base[k], v, (*path, k))
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_config(base: dict, over: dict | None) -> dict:
    """`over` merged into `base`; keys outside `base` are ConfigErrors naming the key."""
    if over is None:
        return copy.deepcopy(base)
    if not isinstance(over, dict):
        raise ConfigError("config", f"must be a mapping of settings, got {type(over).__name__}")
    return _merge(base, over)


def merge_data(base: dict, over: dict) -> dict:
    """Recursive merge of plain data (scenario overrides); a None value deletes the key."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_data(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def spec_path(name: str | Path) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    q = env_spec_dir() / f"{name}.yaml"
    if q.is_file():
        return q
    raise ConfigError("env_spec", f"no environment spec {str(name)!r} (looked in {env_spec_dir()})")


def load_spec(name: str | Path) -> dict:
    """An environment spec: {id, entry_point, slot, description, config} with config complete."""
    p = spec_path(name)
    data = read_yaml(p, "env_spec", mapping=True)
    allowed = {"id", "entry_point", "slot", "description", "config"}
    for k in data:
        if k not in allowed:
            raise ConfigError(f"env_spec.{k}", f"unknown field in {p.name}; allowed: {', '.join(sorted(allowed))}")
    if data.get("slot") not in SLOTS:
        raise ConfigError("env_spec.slot", f"{p.name}: must be one of {', '.join(SLOTS)}, got {data.get('slot')!r}")
    for k in ("id", "entry_point"):
        if not isinstance(data.get(k), str):
            raise ConfigError(f"env_spec.{k}", f"{p.name}: required string")
    data["config"] = merge_config(BASE_CONFIG, data.get("config") or {})
    data["path"] = str(p)
    return data


def scenario_data(cfg: dict) -> tuple[dict, Path]:
    """The scenario mapping of a config (overrides applied) and the folder its paths are relative to."""
    sc = cfg["scenario"]
    if isinstance(sc, dict):
        data, base = dict(sc), Path(".")
    elif isinstance(sc, (str, Path)):
        p = scenario_path(sc, "config.scenario")
        data = read_yaml(p, "config.scenario", mapping=True)
        data.setdefault("name", p.stem)
        base = p.parent
    else:
        raise ConfigError("config.scenario", f"a scenario name, path or mapping, got {type(sc).__name__}")
    over = cfg.get("scenario_overrides") or {}
    if not isinstance(over, dict):
        raise ConfigError("config.scenario_overrides", "must be a mapping of scenario fields")
    data = merge_data(data, over)
    if cfg.get("horizon_s") is not None:
        h = cfg["horizon_s"]
        if not isinstance(h, (int, float)) or isinstance(h, bool) or h <= 0:
            raise ConfigError("config.horizon_s", f"must be a positive number of seconds, got {h!r}")
        data["workload"] = {**data.get("workload", {}), "horizon_s": float(h)}
    return data, base


def check_config(cfg: dict) -> None:
    """Value checks of the generic settings (types and ranges), each naming its key."""
    for key in ("max_requests", "max_backlog", "max_pods"):
        v = cfg.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ConfigError(f"config.{key}", f"must be a positive integer or null, got {v!r}")
    r = cfg["reward"]
    for k in ("default_weight", "default_penalty", "cost_weight"):
        if not isinstance(r[k], (int, float)) or isinstance(r[k], bool):
            raise ConfigError(f"config.reward.{k}", f"must be a number, got {r[k]!r}")
    for section in ("class_weights", "penalties"):
        for c, v in r[section].items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"config.reward.{section}.{c}", f"must be a number, got {v!r}")
    for c, t in [*r["targets"].items(), ("<default>", r["default_targets"])]:
        where = "config.reward.default_targets" if c == "<default>" else f"config.reward.targets.{c}"
        if not isinstance(t, dict):
            raise ConfigError(where, "must be a mapping of ttft_ms, itl_ms, e2e_ms")
        for k, v in t.items():
            if k not in ("ttft_ms", "itl_ms", "e2e_ms"):
                raise ConfigError(f"{where}.{k}", "unknown target; allowed: e2e_ms, itl_ms, ttft_ms")
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
                raise ConfigError(f"{where}.{k}", f"must be a positive number of ms, got {v!r}")
    o = cfg["observation"]
    if not isinstance(o["classes"], list) or not all(isinstance(c, str) for c in o["classes"]):
        raise ConfigError("config.observation.classes", "must be a list of SLO class names")
    for k, v in o.items():
        if k != "classes" and (not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0):
            raise ConfigError(f"config.observation.{k}", f"must be a positive number, got {v!r}")
    if not isinstance(cfg["scale_step"], int) or isinstance(cfg["scale_step"], bool) or cfg["scale_step"] < 1:
        raise ConfigError("config.scale_step", f"must be a positive integer, got {cfg['scale_step']!r}")
    if not isinstance(cfg["render_recent"], int) or cfg["render_recent"] < 0:
        raise ConfigError("config.render_recent", "must be a non-negative integer")
    if not isinstance(cfg["info_default_action"], bool):
        raise ConfigError("config.info_default_action", "must be true or false")


def load_scenario_for(cfg: dict):
    """(validated scenario, base folder, a built SimConfig) of an environment config; the
    environments need a gateway (every built scenario has one)."""
    from ..scenario import build, parse_scenario
    data, base_dir = scenario_data(cfg)
    scenario = parse_scenario(data)
    probe = build(scenario, base_dir=base_dir)
    if probe.gateway is None:
        raise ConfigError("config.scenario", "the environments need a scenario with a gateway")
    return scenario, base_dir, probe
