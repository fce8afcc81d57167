"""A run's output folder, written atomically.

Every file of a run is written into a hidden temporary folder beside `--out`, which is then
renamed into place, replacing an earlier run's folder wholly. A run killed at any moment leaves
either the earlier folder, no folder, or the complete new one: never a summary.json beside a
half-written requests.csv, nor a decisions.csv from an earlier run. (A kill can leave a hidden
`.<name>.partial-*` or `.<name>.old-*` folder beside it, which is safe to delete.) This guards
against a killed or failing process, not a power cut (nothing is fsync'ed).

`check_out_dir` runs before simulating, so a bad `--out` costs one line, not a wasted run. An
existing folder is replaced only if it holds nothing but run outputs, so a mistyped `--out`
never deletes other files.
"""
from __future__ import annotations

import csv
import os
import secrets
import shutil
from pathlib import Path

from . import finite_json
from ..errors import ConfigError

RUN_FILES = ("summary.json", "requests.csv", "timeseries.csv", "pools.csv", "decisions.csv",
             "decision_trace.csv", "trace.csv",      # run --decision-trace, --export-trace
             # blis_gym.output.plots draws these into a run folder (run --plot, plot RUN_DIR)
             "latency_cdf.png", "waiting.png", "kv_usage.png", "pools.png")


def check_out_dir(out_dir: Path, field: str = "--out") -> None:
    """A ConfigError naming `field` unless `out_dir` can be (re)written: its parent can be
    created and written, and an existing `out_dir` is a folder holding only run outputs."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ConfigError(field, f"{out_dir} exists and is not a folder")
        try:
            other = sorted(p.name for p in out_dir.iterdir() if p.name not in RUN_FILES)
        except OSError as e:
            raise ConfigError(field, f"cannot read {out_dir}: {e.strerror}") from None
        if other:
            raise ConfigError(field, f"{out_dir} holds files that are not run outputs ({', '.join(other[:3])}"
                                     f"{', ...' if len(other) > 3 else ''}); it would be replaced wholly: "
                                     "choose an empty or new folder")
    try:
        parent = _parent(out_dir)
        parent.mkdir(parents=True, exist_ok=True)
        _sibling(out_dir, "probe").rmdir()
    except OSError as e:
        raise ConfigError(field, f"cannot write {out_dir}: {e.strerror or e}") from None


def write_run(sim, summary: dict, out_dir: Path, extra=None) -> list[str]:
    """Write the run's files (summary.json, requests.csv, timeseries.csv, and pools.csv /
    decisions.csv when it has them) into `out_dir`, atomically; returns the file names.
    `extra(folder)`, if given, adds files derived from those (e.g. plots) before the folder is
    renamed into place, and returns their paths."""
    out_dir = Path(out_dir)
    parent = _parent(out_dir)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out_dir, "partial")
    try:
        written = _write_files(sim, summary, tmp)
        if extra is not None:
            written += [Path(p).name for p in extra(tmp)]
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _parent(out_dir: Path) -> Path:
    return out_dir.resolve().parent


def _sibling(out_dir: Path, kind: str) -> Path:
    """A new hidden folder beside out_dir (made with the usual permissions, unlike mkdtemp's 0700)."""
    while True:
        p = _parent(out_dir) / f".{out_dir.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            p.mkdir()
            return p
        except FileExistsError:
            continue


def _write_files(sim, summary: dict, folder: Path) -> list[str]:
    sim.metrics.write_requests_csv(folder / "requests.csv")
    sim.metrics.write_timeseries_csv(folder / "timeseries.csv")
    written = ["summary.json", "requests.csv", "timeseries.csv"]
    if sim.pools:
        sim.metrics.write_pools_csv(folder / "pools.csv")
        written.append("pools.csv")
    if sim.gateway is not None and sim.gateway.decisions is not None:
        write_decisions(sim.gateway, folder / "decisions.csv")
        written.append("decisions.csv")
    (folder / "summary.json").write_text(finite_json.dumps(summary) + "\n")   # inf/NaN -> null
    return written


def _replace_dir(new: Path, out_dir: Path) -> None:
    """Rename `new` to `out_dir`; an existing `out_dir` is first renamed aside, then deleted."""
    target = out_dir.resolve()
    old = None
    if target.exists():
        old = _sibling(target, "old")
        os.rename(target, old / "run")
    os.rename(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_decisions(gateway, path: Path) -> None:
    """One row per (routing decision, candidate pod): its total, scorer scores, and whether chosen."""
    names = [p.name for p in gateway.pods]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("time_s", "request_id", "pod", "total", "chosen", "scores"))
        for rec in gateway.decisions:
            t, rid, scores = rec[:3]
            chosen = rec[3] if len(rec) > 3 else -1
            for i, total, parts in scores:
                detail = ";".join(f"{k}={v:.6g}" for k, v in parts.items())
                w.writerow((f"{t / 1e6:.6f}", rid, names[i], f"{total:.6g}", int(i == chosen), detail))
