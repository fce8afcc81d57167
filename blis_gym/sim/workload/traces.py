"""Trace replay: request traces read in full into arrays, replayed by a trace client.

Formats (`load_trace(path, format)`):

- `csv`: a header row, then one request per row. Columns `arrival_s, input_tokens, output_tokens`
  and optionally `prefix_group, prefix_tokens, session, slo_class, tenant` (other columns are
  ignored). Arrival times are absolute seconds (not rebased) and must not go backwards. A shared
  prefix of `prefix_tokens` is part of `input_tokens`. Rows of one `session` replay as turns:
  when a turn's input is longer than the previous turn's input + output, it is taken to extend
  that context (so the previous turn's KV blocks can be hit).
- `azure`: the public Azure LLM inference trace: `TIMESTAMP` (e.g. `2023-11-16 18:15:46.6805900`,
  taken relative to the first row), `ContextTokens`, `GeneratedTokens`.
- `blis-v2`: a BLIS workload-spec v2 YAML file (see builders.from_blis_spec): a whole workload.
- `mooncake`: recorded agent sessions, one JSON object per model call (Mooncake's input_length,
  output_length, hash_ids, timestamp, plus session_id and delay), replayed closed-loop
  (`agentic_trace.py`).

A malformed trace raises ConfigError("trace", "<file>:<line>: <problem>").
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from ...errors import ConfigError
from ..limits import MAX_DURATION_S, MAX_TOKENS

FORMATS = ("csv", "azure", "blis-v2", "mooncake")


@dataclass
class TraceData:
    """A trace held as arrays, one entry per request in arrival order. Index columns are -1 where
    the row gives no value; *_names hold the distinct strings in order of first appearance."""
    path: str
    arrival_us: np.ndarray
    input: np.ndarray
    output: np.ndarray
    group: np.ndarray
    prefix: np.ndarray
    session: np.ndarray
    slo: np.ndarray
    tenant: np.ndarray
    group_names: list
    session_names: list
    slo_names: list
    tenant_names: list
    lines: np.ndarray              # file line of each row (for messages)

    def __len__(self) -> int:
        return len(self.arrival_us)

    def where(self, row: int) -> str:
        return f"{self.path}:{int(self.lines[row])}"

    def duration_s(self) -> float:
        return float(self.arrival_us[-1] - self.arrival_us[0]) / 1e6 if len(self) else 0.0


def _err(msg: str) -> ConfigError:
    return ConfigError("trace", msg)


def _read_rows(path: Path, required: tuple[str, ...]):
    """Header -> column index map, data rows and their line numbers (blank lines skipped)."""
    if not path.is_file():
        raise _err(f"no such file: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = None
        rows, lines = [], []
        for row in reader:
            if not row or all(not x.strip() for x in row):
                continue
            if header is None:
                header = [h.strip() for h in row]
                continue
            if len(row) < len(header):
                raise _err(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)}")
            rows.append(row)
            lines.append(reader.line_num)
    if header is None:
        raise _err(f"{path}: empty file")
    cols = {h: i for i, h in enumerate(header)}
    for r in required:
        if r not in cols:
            raise _err(f"{path}: missing column {r!r} (columns: {', '.join(header)})")
    if not rows:
        raise _err(f"{path}: empty file (a header but no requests)")
    return cols, rows, np.asarray(lines, dtype=np.int64)


def _numbers(path, rows, lines, col: int, name: str) -> np.ndarray:
    vals = [r[col].strip() for r in rows]
    try:
        x = np.asarray(vals, dtype=float)
        bad = ~np.isfinite(x)
    except ValueError:
        x = None
    if x is None or bad.any():
        for i, v in enumerate(vals):
            try:
                ok = np.isfinite(float(v))
            except ValueError:
                ok = False
            if not ok:
                raise _err(f"{path}:{lines[i]}: {name} is not a number ({v!r})")
    return x


def _tokens(path, rows, lines, col: int, name: str) -> np.ndarray:
    x = _numbers(path, rows, lines, col, name)
    neg = np.flatnonzero(x < 0)
    if neg.size:
        i = int(neg[0])
        raise _err(f"{path}:{lines[i]}: negative {name} ({rows[i][col].strip()})")
    big = np.flatnonzero(x > MAX_TOKENS)
    if big.size:
        i = int(big[0])
        raise _err(f"{path}:{lines[i]}: {name} ({rows[i][col].strip()}) above the limit of {MAX_TOKENS} tokens")
    return np.rint(x).astype(np.int64)


def _labels(rows, col: int | None, n: int):
    """Index array (-1 for empty) and the distinct names in order of first appearance."""
    if col is None:
        return np.full(n, -1, dtype=np.int64), []
    names: dict[str, int] = {}
    idx = np.empty(n, dtype=np.int64)
    for i, r in enumerate(rows):
        v = r[col].strip()
        idx[i] = names.setdefault(v, len(names)) if v else -1
    return idx, list(names)


def _check_order(path, lines, t: np.ndarray, name: str, shown) -> None:
    back = np.flatnonzero(np.diff(t) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise _err(f"{path}:{lines[i]}: {name} goes backwards ({shown(i)} after {shown(i - 1)})")


def read_csv_trace(path: str | Path) -> TraceData:
    path = Path(path)
    cols, rows, lines = _read_rows(path, ("arrival_s", "input_tokens", "output_tokens"))
    n = len(rows)
    t = _numbers(path, rows, lines, cols["arrival_s"], "arrival_s")
    neg = np.flatnonzero(t < 0)
    if neg.size:
        raise _err(f"{path}:{lines[int(neg[0])]}: negative arrival_s")
    late = np.flatnonzero(t > MAX_DURATION_S)
    if late.size:
        raise _err(f"{path}:{lines[int(late[0])]}: arrival_s above the limit of {MAX_DURATION_S:g} s")
    _check_order(path, lines, t, "arrival_s", lambda i: rows[i][cols["arrival_s"]].strip())
    inp = _tokens(path, rows, lines, cols["input_tokens"], "input_tokens")
    out = _tokens(path, rows, lines, cols["output_tokens"], "output_tokens")
    if "prefix_tokens" in cols:
        c = cols["prefix_tokens"]
        empty = [i for i, r in enumerate(rows) if not r[c].strip()]
        if empty:
            for i in empty:
                rows[i][c] = "0"
        pre = _tokens(path, rows, lines, c, "prefix_tokens")
        over = np.flatnonzero(pre > inp)
        if over.size:
            i = int(over[0])
            raise _err(f"{path}:{lines[i]}: prefix_tokens ({pre[i]}) exceed input_tokens ({inp[i]}); "
                       "the prefix is part of the input")
    else:
        pre = np.zeros(n, dtype=np.int64)
    group, group_names = _labels(rows, cols.get("prefix_group"), n)
    session, session_names = _labels(rows, cols.get("session"), n)
    slo, slo_names = _labels(rows, cols.get("slo_class"), n)
    tenant, tenant_names = _labels(rows, cols.get("tenant"), n)
    return TraceData(str(path), np.rint(t * 1e6).astype(np.int64), inp, out, group, pre, session, slo, tenant,
                     group_names, session_names, slo_names, tenant_names, lines)


def _parse_time(s: str) -> datetime:
    s = s.strip()
    frac = ""
    main = s
    if "." in s:
        main, rest = s.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tz = rest[:digits], rest[digits:]
        main = main + (("." + (frac + "000000")[:6]) if frac else "") + tz
    return datetime.fromisoformat(main)


def read_azure_trace(path: str | Path) -> TraceData:
    path = Path(path)
    cols, rows, lines = _read_rows(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))
    n = len(rows)
    c = cols["TIMESTAMP"]
    us = np.empty(n, dtype=np.int64)
    t0 = None
    for i, r in enumerate(rows):
        try:
            dt = _parse_time(r[c])
        except ValueError:
            raise _err(f"{path}:{lines[i]}: TIMESTAMP is not a date and time ({r[c].strip()!r})") from None
        if t0 is None:
            t0 = dt
        try:
            d = dt - t0
        except TypeError:
            raise _err(f"{path}:{lines[i]}: TIMESTAMP mixes time zones ({r[c].strip()!r})") from None
        us[i] = (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds
        if us[i] > MAX_DURATION_S * 1e6:
            raise _err(f"{path}:{lines[i]}: TIMESTAMP more than {MAX_DURATION_S:g} s after the first row")
    _check_order(path, lines, us, "TIMESTAMP", lambda i: rows[i][c].strip())
    inp = _tokens(path, rows, lines, cols["ContextTokens"], "ContextTokens")
    out = _tokens(path, rows, lines, cols["GeneratedTokens"], "GeneratedTokens")
    none = np.full(n, -1, dtype=np.int64)
    return TraceData(str(path), us, inp, out, none, np.zeros(n, dtype=np.int64), none, none, none,
                     [], [], [], [], lines)


def read_trace(path: str | Path, format: str = "csv") -> TraceData:
    """The rows of a csv or azure trace."""
    if format == "csv":
        return read_csv_trace(path)
    if format == "azure":
        return read_azure_trace(path)
    raise ConfigError("trace.format", f"{format!r} is not a request trace; use csv or azure")


def load_trace(path: str | Path, format: str = "csv", name: str = "trace", **client_fields):
    """A Workload from a trace: csv/azure -> one trace client `name` (extra keyword arguments set
    Client fields: slo_class, tenant, timeout_us, prefix_group...); blis-v2 -> the spec's clients."""
    from .clients import Client, Workload
    if format not in FORMATS:
        raise ConfigError("trace.format", f"unknown format {format!r}; use one of {', '.join(FORMATS)}")
    if format == "blis-v2":
        from .builders import load_blis_spec
        return load_blis_spec(path)
    if format == "mooncake":
        from .agentic_trace import read_agentic_trace
        data = read_agentic_trace(path)
    else:
        data = read_trace(path, format)
    return Workload(clients=[Client(name, trace=data, **client_fields)])
