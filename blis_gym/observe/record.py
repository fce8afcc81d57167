"""The files `blis-gym observe` writes, each valid at every moment of a run:

- `observed_requests.csv`: one row per request as it ends (flushed row by row), in the
  per-request trace format `blis-gym validate` replays (arrival_s, input_tokens, output_tokens,
  ttft_ms, e2e_ms), with its status; validate replays the rows whose status is `ok`;
- `observed_meta.json`: the engine settings validate needs (model, GPU, TP, batch limits) and the
  run's own (URL, API, scenario, seed, counts), replaced atomically;
- `observed_itl.jsonl`: each request's inter-token times (one JSON object a line);
- `metrics.csv`: the server's Prometheus samples (`vllm:*` and the rest, no histogram buckets),
  one row per sample and scrape.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from ..errors import ConfigError
from ..output.finite_json import dumps as json_dumps

REQUESTS, META, ITL, METRICS = "observed_requests.csv", "observed_meta.json", "observed_itl.jsonl", "metrics.csv"
FILES = (REQUESTS, META, ITL, METRICS)
COLUMNS = ("request_id", "client", "slo_class", "tenant", "session", "turn", "intended_arrival_s", "arrival_s",
           "input_tokens", "output_tokens", "intended_input_tokens", "intended_output_tokens", "ttft_ms", "e2e_ms",
           "tpot_ms", "status", "http_status", "error")


def check_out_dir(out: Path) -> None:
    """A ConfigError unless `out` is a folder that can hold a recording: new, empty, or holding
    only an earlier recording's files (which are replaced)."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError("--out", f"{out} exists and is not a folder")
        other = sorted(p.name for p in out.iterdir() if p.name not in FILES and not p.name.endswith(".tmp"))
        if other:
            raise ConfigError("--out", f"{out} holds other files ({', '.join(other[:3])}); choose an empty or "
                                       "new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("--out", f"cannot create {out}: {e.strerror or e}") from None


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json_dumps(data) + "\n")
    os.replace(tmp, path)


def _cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6f}" if abs(v) < 1e6 else repr(v)
    return v


class Recorder:
    """Appends each finished request to the CSV and the JSONL, flushing both, so an interrupted
    run leaves whole rows only."""

    def __init__(self, out: Path):
        self.out = out
        for name in FILES:                       # an earlier recording in this folder goes
            (out / name).unlink(missing_ok=True)
        self._csv_file = open(out / REQUESTS, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._csv_file)
        self._csv.writerow(COLUMNS)
        self._csv_file.flush()
        self._itl = open(out / ITL, "w", encoding="utf-8")
        self._metrics_file = None
        self.counts: dict[str, int] = {}

    def request(self, row: dict, itl_ms: list[float]) -> None:
        self._csv.writerow([_cell(row.get(c)) for c in COLUMNS])
        self._csv_file.flush()
        self._itl.write(json.dumps({"request_id": row["request_id"], "status": row["status"],
                                    "ttft_ms": row.get("ttft_ms"), "itl_ms": [round(x, 4) for x in itl_ms]},
                                   allow_nan=False) + "\n")
        self._itl.flush()
        self.counts[row["status"]] = self.counts.get(row["status"], 0) + 1

    def metrics(self, t_s: float, samples: list[tuple[str, str, float]]) -> None:
        if self._metrics_file is None:
            self._metrics_file = open(self.out / METRICS, "w", newline="", encoding="utf-8")
            self._metrics = csv.writer(self._metrics_file)
            self._metrics.writerow(("t_s", "metric", "labels", "value"))
        for name, labels, value in samples:
            self._metrics.writerow((f"{t_s:.3f}", name, labels, repr(value)))
        self._metrics_file.flush()

    def close(self) -> None:
        for f in (self._csv_file, self._itl, self._metrics_file):
            if f is not None and not f.closed:
                f.flush()
                os.fsync(f.fileno())
                f.close()


def parse_prometheus(text: str) -> list[tuple[str, str, float]]:
    """(metric, labels, value) of each sample in Prometheus' text format, except histogram
    buckets; lines that do not parse are skipped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            labels, _, tail = rest.rpartition("}")
        else:
            name, _, tail = line.partition(" ")
            labels = ""
        fields = tail.split()
        if not fields or name.endswith("_bucket"):
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            out.append((name.strip(), labels, value))
    return out
