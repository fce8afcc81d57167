"""Running a sweep: each point as `blis-gym run` would run it, one result file per point.

DIR/points/<key>.json is written atomically (a temporary file, then os.replace) as each point
finishes, so a sweep killed at any moment loses at most the points in flight; run again, it
runs only the points without a file. DIR/results.parquet and results.csv are rebuilt from the
point files in the sweep's order, so they do not depend on which run finished which point,
on the worker count or on the backend.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from .spec import Point, Sweep, point_key, resolve_base, set_path

MANIFEST = "manifest.json"
POINTS = "points"
# summary parts left out of a row (one column per instance, tenant or pool would swamp the table)
_SKIP = {"per_instance", "per_tenant", "per_pool", "slo_targets"}


def run_point(scenario, overrides: dict | None = None, *, base_dir: str | Path | None = None) -> dict:
    """Run one scenario with `overrides` (dotted paths: {"tp": 4, "workload.rate": 20}) and
    return its row: the overrides, `key`, `seed`, `gpus`, `dollars_per_hour`, `reason`
    (None, or why the point cannot run) and the run's KPIs (summary.json, flattened with
    dots: `ttft_p90_ms`, `per_class.critical.e2e_mean_ms`, `cost.dollars`, ...).

    `scenario` is a bundled scenario name, a path to a scenario file, or a mapping. A point that
    cannot be built (weights that do not fit, a context too small for its prompts) is a row
    with a reason; a scenario that is not valid raises ConfigError."""
    from ..schema.scenario import parse_scenario
    from .spec import SweepSpec

    if isinstance(scenario, dict):
        data, where = json.loads(json.dumps(scenario)), Path(base_dir or ".")
    else:
        data, where = resolve_base(SweepSpec(base=str(scenario)), Path("."))
        where = Path(base_dir) if base_dir is not None else where
    for path, value in (overrides or {}).items():
        set_path(data, path, value, path)
    key = point_key(parse_scenario(data))
    return {**(overrides or {}), **simulate_point((data, str(where), key))}


def simulate_point(job: tuple[dict, str, str]) -> dict:
    """The row of one point (the job a worker runs): key, seed, derived columns, reason, KPIs."""
    from ..schema.scenario import build, parse_scenario
    from ..sim.simulation import Simulation

    data, base_dir, key = job
    sc = parse_scenario(data)
    row = {"key": key, "seed": sc.seed, **_gpus_and_price(sc), "reason": None}
    try:
        sim = Simulation(build(sc, base_dir=base_dir))
    except ConfigError as e:
        row["reason"] = str(e)
        return row
    row.update(_flatten(sim.run()))
    return row


def _gpus_and_price(sc) -> dict:
    """GPUs the deployment starts with (TP x instances over its pools) and their price per hour."""
    from ..schema.scenario import PoolSpec
    from ..sim.latency import load_hardware

    pools = sc.pools or [PoolSpec(name="default", instances=sc.cluster.instances)]
    gpus, dollars = 0, 0.0
    for p in pools:
        n = (p.tp or sc.tp) * p.instances
        gpus += n
        try:
            price = p.price_per_gpu_hour
            dollars += n * (price if price is not None else load_hardware(p.hardware or sc.hardware).price_per_gpu_hour)
        except ConfigError:        # an unknown GPU: the point's reason says so
            dollars = None
            break
    return {"gpus": gpus, "dollars_per_hour": None if dollars is None else round(dollars, 6)}


def _flatten(summary: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in summary.items():
        if k in _SKIP or isinstance(v, list):
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# ---- the sweep folder ----------------------------------------------------------------------
def pending_points(sweep: Sweep, out_dir: Path) -> list[Point]:
    """The points of `sweep` with no result file in out_dir yet."""
    done = {p.stem for p in (out_dir / POINTS).glob("*.json")}
    return [p for p in sweep.points if p.key not in done]


def run_sweep(sweep: Sweep, out_dir: str | Path, *, workers: int | None = None, backend: str = "process",
              address: str | None = None, quiet: bool = False,
              on_start: Callable[[int, int], None] | None = None) -> "pandas.DataFrame":  # noqa: F821
    """Run the points of `sweep` that out_dir does not hold yet, then rebuild and return the
    results table. `on_start(total, to_run)` is called before any point runs."""
    from ..parallel import run_jobs

    out_dir = Path(out_dir)
    points_dir = out_dir / POINTS
    try:
        points_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", f"cannot create {out_dir}: {e.strerror}") from None
    for stale in [*out_dir.glob("*.tmp"), *points_dir.glob("*.tmp")]:   # left by a run killed while writing
        stale.unlink()
    _write_atomic(out_dir / MANIFEST, json.dumps(
        {"name": sweep.spec.name, "columns": sweep.columns, "keys": [p.key for p in sweep.points],
         "params": {p.key: p.params for p in sweep.points},
         "pareto": sweep.spec.pareto.model_dump() if sweep.spec.pareto else None,
         "charts": [c.model_dump() for c in sweep.spec.charts]}, indent=1))
    todo = pending_points(sweep, out_dir)
    if on_start is not None:
        on_start(len(sweep.points), len(todo))
    jobs = [(p.data, sweep.base_dir, p.key) for p in todo]
    for i, row in run_jobs(simulate_point, jobs, workers=workers, backend=backend, address=address,
                           label="points", quiet=quiet):
        point = todo[i]
        record = {"key": point.key, "params": point.params, "scenario": point.data, "row": row}
        _write_atomic(points_dir / f"{point.key}.json", json.dumps(record, indent=1))
    table = load_results(out_dir)
    table.to_parquet(out_dir / "results.parquet", index=False)
    table.to_csv(out_dir / "results.csv", index=False)
    return table


def load_results(out_dir: str | Path) -> "pandas.DataFrame":  # noqa: F821
    """The results table of a sweep folder: one row per finished point, in the sweep's order
    (points still missing from an interrupted sweep are absent). Columns: the varied values
    (by dotted path), key, seed, gpus, dollars_per_hour, reason, then the KPIs."""
    import pandas as pd

    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        raise ConfigError("results", f"{out_dir} is not a sweep folder (no {MANIFEST})")
    meta = json.loads(manifest.read_text())
    rows = []
    for key in meta["keys"]:
        f = out_dir / POINTS / f"{key}.json"
        if f.is_file():
            record = json.loads(f.read_text())
            params = meta["params"][key]
            rows.append({**{c: _cell(params.get(c)) for c in meta["columns"]}, **record["row"]})
    table = pd.DataFrame(rows)
    for col in table.columns:        # a column mixing kinds (1 and "auto") is kept as text
        kinds = {type(v) for v in table[col] if v is not None and v == v}
        if len(kinds) > 1 and not kinds <= {int, float, bool}:
            table[col] = [None if v is None else str(v) for v in table[col]]
    return table


def _cell(value):
    """A varied value as a table cell: mappings and lists as compact JSON text."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
