"""Environment specs (`envs/*.yaml`) and their configuration dictionaries.

An environment spec names the Gymnasium id, the entry point, the decision slot the agent
controls and a `config` mapping: the scenario, the episode's length, the observation and the
reward. `gym.make(id, config={...})` merges the user's overrides into that mapping (nested
sections merge key by key); an unknown key is a `ConfigError` naming it.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError, pydantic_error, read_yaml
from ..sim.limits import MAX_DURATION_S, MAX_INSTANCES, MAX_REQUESTS
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
        # the extended layout (blis_gym.envs.load_features): per pod hardware and observed latency,
        # the arrival rate and the daily phase; false keeps the first layout (shipped checkpoints)
        "extended": False,
        "latency_ema": 0.2,           # weight of each completion in a pod's latency averages
        "ttft_per_token_scale_us": 50.0,
        "tpot_scale_us": 30000.0,
        "rate_scale": 32.0,           # arrivals per second: r / (r + scale)
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
        "ttft_weight": 0.0,           # reward units per second of TTFT, charged per completed request
    },
    "scale_step": 1,                 # autoscaler: actions are -scale_step..+scale_step replicas
    # per-request slots: the agent decides only requests of these SLO classes; the others get the
    # scenario's built-in policy without a step (null: the agent decides every request)
    "decide_classes": None,
    # residual: action 0 follows the scenario's built-in policy (set it to the strongest heuristic
    # in scenario_overrides), action k is the slot's action k - 1 (blis_gym.envs.base)
    "residual": False,
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


def _deleting_only_what_exists(over: dict, data) -> dict:
    """Overrides about to be applied to scenario data, without the Nones that have nothing to
    delete: a heuristic's `router: {scorers: null}` on a scenario without a router section must
    not become a null field of a new one. (Composed overrides keep their Nones: merge_data.)"""
    have = data if isinstance(data, dict) else {}
    return {k: _deleting_only_what_exists(v, have.get(k)) if isinstance(v, dict) else v
            for k, v in over.items() if v is not None or k in have}


def spec_path(name: str | Path) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    q = env_spec_dir() / f"{name}.yaml"
    if q.is_file():
        return q
    raise ConfigError("env_spec", f"no environment spec {str(name)!r} (looked in {env_spec_dir()})")


class EnvSpec(BaseModel):
    """An `envs/<name>.yaml` file."""
    model_config = ConfigDict(extra="forbid")
    id: str = Field(strict=True)
    entry_point: str = Field(strict=True)
    slot: Literal[SLOTS]
    description: str = ""
    config: Optional[dict] = None
    # train / eval scenarios and seeds: the evaluation harness's, which checks its contents
    split: Optional[dict] = None
    # the slot's primary KPI, secondary KPIs and guards (blis_gym.harness.claims checks them)
    kpi: Optional[dict] = None


def load_spec(name: str | Path) -> dict:
    """An environment spec: {id, entry_point, slot, description, config, split} with config complete."""
    p = spec_path(name)
    data = read_yaml(p, "env_spec", mapping=True)
    try:
        EnvSpec.model_validate(data)
    except ValidationError as e:
        err = pydantic_error(e, "env_spec", root=EnvSpec)
        raise ConfigError(err.field, f"{err.message} (in {p.name})") from None
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
    data = merge_data(data, _deleting_only_what_exists(over, data))
    if cfg.get("horizon_s") is not None:                # checked by check_config
        data["workload"] = {**data.get("workload", {}), "horizon_s": float(cfg["horizon_s"])}
    return data, base


# ---- value checks (pydantic, like scenarios) ------------------------------------------------
# Key names are checked by the merge above; these models check values, ignoring keys they do not
# know (the multi-agent environment adds `agents` and `rewards`). Every float is finite, every
# scale positive, and counts have upper bounds, so no setting can make an observation leave its
# space or a reward infinite.
def _num(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    bound = {"gt" if lo_open else "ge": lo} if lo is not None else {}
    return Annotated[float, Field(strict=True, allow_inf_nan=False, le=hi, **bound)]


def _count(hi: int, lo: int = 1):
    return Annotated[int, Field(strict=True, ge=lo, le=hi)]


Weight = _num(-1e6, 1e6)                   # a credit or penalty per request
Scale = _num(0, 1e12, lo_open=True)        # x / (x + scale): positive
TargetMs = _num(0, 1e9, lo_open=True)
CostWeight = _num(-1e9, 1e9)              # reward units per dollar
HorizonS = _num(0, MAX_DURATION_S, lo_open=True)   # simulated seconds, as a scenario's horizon


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TargetsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ttft_ms: Optional[TargetMs] = None
    itl_ms: Optional[TargetMs] = None
    e2e_ms: Optional[TargetMs] = None


class RewardConfig(_Section):
    class_weights: dict[str, Weight] = {}
    default_weight: Weight = 1.0
    targets: dict[str, TargetsConfig] = {}
    default_targets: TargetsConfig = TargetsConfig()
    penalties: dict[str, Weight] = {}
    default_penalty: Weight = 0.0
    penalize_sheddable: bool = Field(False, strict=True)
    cost_weight: CostWeight = 0.0
    ttft_weight: Weight = 0.0


class ObservationConfig(_Section):
    classes: list[Annotated[str, Field(strict=True)]] = []
    waiting_scale: Scale = 8.0
    running_scale: Scale = 32.0
    in_flight_scale: Scale = 32.0
    in_flight_tokens_scale: Scale = 16384.0
    queue_scale: Scale = 64.0
    backlog_scale: Scale = 256.0
    turn_scale: Scale = 4.0
    max_input_tokens: Scale = 32768
    time_scale_s: Scale = 600.0
    extended: bool = Field(False, strict=True)
    latency_ema: _num(0, 1, lo_open=True) = 0.2
    ttft_per_token_scale_us: Scale = 50.0
    tpot_scale_us: Scale = 30000.0
    rate_scale: Scale = 32.0


class EnvConfig(_Section):
    """The value constraints of an environment configuration (BASE_CONFIG documents each key)."""
    horizon_s: Optional[HorizonS] = None
    max_requests: Optional[_count(MAX_REQUESTS)] = None
    max_backlog: Optional[_count(MAX_REQUESTS)] = None
    max_pods: Optional[_count(MAX_INSTANCES)] = None
    observation: ObservationConfig = ObservationConfig()
    reward: RewardConfig = RewardConfig()
    scale_step: _count(1000) = 1
    decide_classes: Optional[list[Annotated[str, Field(strict=True)]]] = Field(None, min_length=1)
    info_default_action: bool = Field(False, strict=True)
    residual: bool = Field(False, strict=True)
    render_recent: _count(10_000, lo=0) = 8


def check_config(cfg: dict) -> None:
    """Value checks of the generic settings (types, finiteness and ranges), each naming its key."""
    try:
        EnvConfig.model_validate(cfg)
    except ValidationError as e:
        raise pydantic_error(e, "config", root=EnvConfig) from None


def load_scenario_for(cfg: dict):
    """(validated scenario, base folder, a built SimConfig) of an environment config; the
    environments need a gateway (every built scenario has one)."""
    from ..schema.scenario import build, parse_scenario
    data, base_dir = scenario_data(cfg)
    scenario = parse_scenario(data)
    probe = build(scenario, base_dir=base_dir)
    if probe.gateway is None:
        raise ConfigError("config.scenario", "the environments need a scenario with a gateway")
    return scenario, base_dir, probe
