"""Sweep files: a base scenario and the axes to vary, validated and expanded into points.

Every point is checked as a whole scenario before anything runs, so a bad sweep file fails
at once with one line naming the axis (`grid.tp: input should be a valid integer (got 'x')`).
The format is documented in docs/sweeps.md.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, model_validator

from ..errors import ConfigError, pydantic_error, read_yaml
from ..sim.limits import MAX_SEED

# Every point is validated (and its scenario kept) before anything runs, so the number of
# points is bounded before any is built: about a minute of validation and 1 GB at most.
MAX_POINTS = 100_000
Int64 = Annotated[int, Field(ge=-(1 << 63), le=(1 << 63) - 1)]     # what numpy draws integers in
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomAxis(_Strict):
    """One randomly sampled axis: exactly one of the four."""
    uniform: Optional[tuple[FiniteFloat, FiniteFloat]] = None
    loguniform: Optional[tuple[FiniteFloat, FiniteFloat]] = None
    randint: Optional[tuple[Int64, Int64]] = None          # both ends included
    choice: Optional[list[Any]] = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self):
        given = [k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform: [lo, hi], loguniform: [lo, hi], randint: [lo, hi], "
                             "choice: [values]")
        lo_hi = getattr(self, given[0]) if given[0] != "choice" else None
        if lo_hi is not None and lo_hi[0] > lo_hi[1]:
            raise ValueError(f"{given[0]}: the low end exceeds the high end")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform: both ends must be > 0")
        if self.uniform is not None and not math.isfinite(self.uniform[1] - self.uniform[0]):
            raise ValueError("uniform: the range high - low must be a finite number")
        return self

    def sample(self, rng):
        if self.uniform is not None:
            return float(rng.uniform(*self.uniform))
        if self.loguniform is not None:
            lo, hi = self.loguniform
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if self.randint is not None:
            return int(rng.integers(self.randint[0], self.randint[1], endpoint=True))
        return self.choice[int(rng.integers(len(self.choice)))]


class RandomSpec(_Strict):
    samples: int = Field(gt=0, le=MAX_POINTS)
    seed: Seed = 0
    axes: dict[str, RandomAxis] = Field(min_length=1)


class ParetoSpec(_Strict):
    """The frontier drawn after the sweep: `throughput` (higher is better) against `latency`
    (lower is better) among the points using at most each `budget`."""
    latency: str = "ttft_p90_ms"
    throughput: str = "output_tokens_per_s"
    budget: str = "gpus"
    slo: Optional[float] = Field(default=None, gt=0)        # in the latency column's unit
    tiers: Optional[list[float]] = Field(default=None, min_length=1)   # default: every budget swept


class ChartSpec(_Strict):
    """A KPI (`y`) against a column (`x`): a line per value of `by`, a panel per value of `panel`."""
    x: str
    y: str
    by: Optional[str] = None
    panel: Optional[str] = None
    logy: bool = False
    title: str = ""


class SweepSpec(_Strict):
    name: str = ""
    description: str = ""
    base: Optional[str] = None                  # a bundled scenario name or a path (relative to this file)
    scenario: Optional[dict] = None             # or the base scenario inline
    set: dict[str, Any] = Field(default_factory=dict)       # applied to every point
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # every combination
    points: list[dict[str, Any]] = Field(default_factory=list)  # explicit points (x the grid)
    random: Optional[RandomSpec] = None         # random samples (x the grid and the points)
    seeds: Union[list[Seed], int, None] = None   # a list, or a count from the scenario's seed on
    pareto: Optional[ParetoSpec] = ParetoSpec()   # null: no frontier, no plot
    charts: list[ChartSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _base(self):
        if (self.base is None) == (self.scenario is None):
            raise ValueError("give either base (a bundled scenario name or a path) or scenario (inline)")
        return self


@dataclass(frozen=True)
class Point:
    """One simulation of the sweep: its varied values (by dotted path), the full scenario
    mapping it runs, and the key that names its result."""
    params: dict
    data: dict
    key: str


@dataclass(frozen=True)
class Sweep:
    spec: SweepSpec
    points: list[Point]
    columns: list[str]          # the varied paths, in the order of the sweep file
    base_dir: str               # relative paths in the scenario (traces) start here


def set_path(data: dict, path: str, value, field: str) -> None:
    """data[a][b][c] = value for path 'a.b.c' (list items by index: 'pools.0.instances');
    missing mappings on the way are created."""
    parts = path.split(".")
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(field, f"{'.'.join(parts[:i]) or path} has {len(node)} items; "
                                         f"{part!r} is not one of their indices")
            part = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(field, f"{'.'.join(parts[:i])} is not a mapping")
        if last:
            node[part] = copy.deepcopy(value)     # YAML aliases share one object; points must not
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


def _get_path(data, path: str):
    for part in path.split("."):
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def _scalar(value):
    return None if isinstance(value, (dict, list)) else value


def point_key(scenario) -> str:
    """A stable name for a validated scenario: the hash of all its fields (seed included)."""
    text = json.dumps(scenario.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_base(spec: SweepSpec, where: Path) -> tuple[dict, Path]:
    """The base scenario mapping and the folder its relative paths start from."""
    if spec.scenario is not None:
        data = json.loads(json.dumps(spec.scenario))
        data.setdefault("name", spec.name)
        return data, where
    from ..resources import bundled_scenarios, suggest

    name = spec.base
    bundled = bundled_scenarios()
    path = where / name                   # a path is relative to the sweep file
    if not path.is_file():
        if name not in bundled:
            raise ConfigError("base", f"no bundled scenario or file {name!r}; {suggest(name, bundled)}")
        path = bundled[name]
    data = read_yaml(path, "base", mapping=True)
    data.setdefault("name", path.stem)
    return data, path.parent


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and expand a sweep file, or a bundled study by name (`capacity`);
    raises one ConfigError naming the axis."""
    from ..resources import bundled_studies

    studies = bundled_studies()
    path = Path(path) if Path(path).is_file() or str(path) not in studies else studies[str(path)]
    if not path.is_file():
        raise ConfigError("sweep", f"no such file or bundled study: {path} (bundled: {', '.join(studies)})")
    raw = read_yaml(path, "sweep", mapping=True)
    raw.setdefault("name", path.stem)
    return parse_sweep(raw, path.parent)


def parse_sweep(raw: dict, where: Path) -> Sweep:
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise pydantic_error(e, root=SweepSpec, whole="sweep") from None
    for axis, values in spec.grid.items():
        if not values:
            raise ConfigError(f"grid.{axis}", "empty axis; give at least one value")
    if isinstance(spec.seeds, int) and not 1 <= spec.seeds <= MAX_POINTS:
        raise ConfigError("seeds", f"must be a count from 1 to {MAX_POINTS:,} or a list of seeds, not {spec.seeds}")
    if isinstance(spec.seeds, list) and not spec.seeds:
        raise ConfigError("seeds", "empty list; give at least one seed")
    _check_size(spec)
    base, base_dir = resolve_base(spec, where)
    for path, value in spec.set.items():
        set_path(base, path, value, f"set.{path}")
    try:        # the base alone may lack what the axes give (a rate, say): then points tell
        defaults, base_error = _validate(base, {f"set.{p}": p for p in spec.set}, "base scenario"), None
        defaults = defaults.model_dump(mode="json")
    except ConfigError as e:
        defaults, base_error = base, e
    points, seen = [], set()
    for params, sections in _combinations(spec):
        data = json.loads(json.dumps(base))
        for (path, value), section in zip(params.items(), sections):
            set_path(data, path, value, f"{section}.{path}")
        for seed in _seeds(spec.seeds, data):
            data_s = {**data, "seed": seed}
            scenario = _validate(data_s, {f"{s}.{p}": p for p, s in zip(params, sections)}, "point", base_error)
            key = point_key(scenario)
            if key not in seen:           # the same scenario twice runs once
                seen.add(key)
                points.append(Point(params=dict(params), data=data_s, key=key))
    columns = list(dict.fromkeys([*spec.grid, *(p for pt in spec.points for p in pt),
                                  *(spec.random.axes if spec.random else ())]))
    # a point that leaves an axis alone shows the base's value there (None if the base has
    # none, or if it is a whole mapping or list: that would only repeat the base)
    points = [Point({c: p.params[c] if c in p.params else _scalar(_get_path(defaults, c)) for c in columns},
                    p.data, p.key) for p in points]
    return Sweep(spec=spec, points=points, columns=columns, base_dir=str(base_dir))


def _check_size(spec: SweepSpec) -> None:
    """At most MAX_POINTS points, counted before any is built."""
    sizes = {"grid": math.prod(len(v) for v in spec.grid.values()), "points": len(spec.points) or 1,
             "random.samples": spec.random.samples if spec.random else 1,
             "seeds": len(spec.seeds) if isinstance(spec.seeds, list) else spec.seeds or 1}
    total = math.prod(sizes.values())
    if total > MAX_POINTS:
        parts = " x ".join(f"{n:,} ({name})" for name, n in sizes.items() if n > 1)
        raise ConfigError("sweep", f"{parts} = {total:,} points; at most {MAX_POINTS:,} per sweep (split it)")


def _combinations(spec: SweepSpec):
    """(params, section of each param) for grid x points x random samples, in file order."""
    grid = [dict(zip(spec.grid, values)) for values in itertools.product(*spec.grid.values())]
    explicit = [dict(p) for p in spec.points] or [{}]
    samples = [{}]
    if spec.random is not None:
        import numpy as np
        rng = np.random.default_rng(spec.random.seed)
        samples = [{axis: a.sample(rng) for axis, a in spec.random.axes.items()}
                   for _ in range(spec.random.samples)]
    for g, e, r in itertools.product(grid, explicit, samples):
        params = {**g, **e, **r}
        sections = [("random" if p in r else "points" if p in e else "grid") for p in params]
        yield params, sections


def _seeds(seeds, data: dict) -> list[int]:
    first = data.get("seed", 42)
    if seeds is None:
        return [first]
    if isinstance(seeds, int):
        return [first + i for i in range(seeds)]
    return list(seeds)


def _validate(data: dict, axes: dict[str, str], what: str, base_error: ConfigError | None = None):
    """The validated scenario; an error names the axis whose value is wrong when it can."""
    from ..schema.scenario import parse_scenario
    try:
        return parse_scenario(data)
    except ConfigError as e:
        for name, path in axes.items():
            if e.field == path or e.field.startswith(path + ".") or path.startswith(e.field + "."):
                raise ConfigError(name, e.message) from None
        if axes and (base_error is None or base_error.field != e.field):   # these values broke it
            raise ConfigError(", ".join(axes), f"{e.field}: {e.message}") from None
        raise ConfigError(f"base scenario: {e.field}", e.message) from None
