"""Replay of recorded agent sessions: the Mooncake trace format with session fields.

One JSON object per line (JSONL), one line per model call:

    {"session_id": "s1", "timestamp": 0, "input_length": 5000, "output_length": 300, "hash_ids": [0, 1, ...]}
    {"session_id": "s1", "delay": 1500, "input_length": 6800, "output_length": 250, "hash_ids": [0, 1, ...]}

- `input_length`, `output_length`: the call's prompt (its whole context) and output tokens;
- `hash_ids`: one id per `block_tokens` (512, Mooncake's) of the prompt; equal leading ids mean
  the same leading tokens (a shared system prompt, or the conversation so far);
- `timestamp` (ms): when a session's first call arrives; `delay` (ms): the time between a call's
  end and the next call of its session (the tool call, or the agent's own work, in between).
  Lines without `session_id` are one-call sessions.

Replay is closed-loop: a session's first call arrives at its timestamp, each next one at the
previous one's completion + its delay (a call that fails ends the session, as a generated
session). A later call's prompt is the previous prompt + the previous output + new tokens
(input_length − previous input − previous output, at least 1: the tool result), so it hits the
previous call's cached blocks where they still are. First calls that share leading hash ids
share those blocks (a group prefix per distinct run of ids held by two sessions or more).
A malformed file raises ConfigError("trace", "<file>:<line>: <problem>").
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import ConfigError
from ..engine.request import Content, Request, prompt_key
from ..limits import MAX_DURATION_S, MAX_TOKENS
from .source import Session

BLOCK_TOKENS = 512           # Mooncake's tokens per hash id


@dataclass
class AgentSession:
    name: str
    arrival_us: int
    first_input: int
    first_output: int
    hash_ids: tuple
    ins: list = field(default_factory=list)       # new tokens of calls 2.. (the tool results)
    outs: list = field(default_factory=list)
    thinks: list = field(default_factory=list)    # µs between a call's end and the next
    last_input: int = 0
    last_output: int = 0


@dataclass
class AgenticTrace:
    path: str
    sessions: list                                # AgentSession, in arrival order
    block_tokens: int = BLOCK_TOKENS

    def __len__(self) -> int:
        return sum(1 + len(s.ins) for s in self.sessions)

    def duration_s(self) -> float:
        return self.sessions[-1].arrival_us / 1e6 if self.sessions else 0.0

    def stream(self, src, c):
        return _AgentStream(self, src, c)


def _err(path, line: int, msg: str) -> ConfigError:
    return ConfigError("trace", f"{Path(path).name}:{line}: {msg}")


def _int(path, line: int, row: dict, key: str, lo: int, hi: int, default=None) -> int:
    v = row.get(key, default)
    if v is None:
        raise _err(path, line, f"missing {key}")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not lo <= v <= hi:
        raise _err(path, line, f"{key} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)


def read_agentic_trace(path: str | Path, block_tokens: int = BLOCK_TOKENS) -> AgenticTrace:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("trace.path", f"no such file: {p}")
    sessions: dict[str, AgentSession] = {}
    max_ms = int(MAX_DURATION_S * 1000)
    with p.open(encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise _err(p, line, f"not a JSON object ({e.msg})") from None
            if not isinstance(row, dict):
                raise _err(p, line, "not a JSON object")
            n_in = _int(p, line, row, "input_length", 1, MAX_TOKENS)
            n_out = _int(p, line, row, "output_length", 1, MAX_TOKENS)
            ids = row.get("hash_ids", [])
            if not isinstance(ids, list) or any(isinstance(h, bool) or not isinstance(h, int) for h in ids):
                raise _err(p, line, "hash_ids must be a list of integers")
            name = str(row.get("session_id", f"line-{line}"))
            s = sessions.get(name)
            if s is None:
                t = _int(p, line, row, "timestamp", 0, max_ms)
                s = sessions[name] = AgentSession(name, t * 1000, n_in, n_out, tuple(ids))
            else:
                if "timestamp" in row and "delay" not in row:
                    raise _err(p, line, f"session {name!r} continues: give its delay (ms after the "
                                        "previous call ended), not a timestamp")
                s.thinks.append(_int(p, line, row, "delay", 0, max_ms) * 1000)
                s.ins.append(max(1, n_in - s.last_input - s.last_output))
                s.outs.append(n_out)
            s.last_input, s.last_output = n_in, n_out
    if not sessions:
        raise ConfigError("trace", f"{p.name}: no calls")
    ordered = sorted(sessions.values(), key=lambda s: s.arrival_us)      # stable: file order among ties
    return AgenticTrace(str(p), ordered, block_tokens)


class _AgentStream:
    """First calls of the recorded sessions in arrival order; later calls come as session turns
    (`WorkloadSource.finished`)."""

    def __init__(self, trace: AgenticTrace, src, c):
        self.trace = trace
        self.c = c
        self.priority = src.w.priority(c.slo_class)
        self.i = 0
        self.prefixes = self._shared_prefixes(src)
        self.t = trace.sessions[0].arrival_us if trace.sessions else None

    def _shared_prefixes(self, src) -> dict:
        """A shared Content per run of leading hash ids that two first calls or more begin with
        (chained, so that runs that extend one another share their common blocks)."""
        counts: dict[tuple, int] = {}
        for s in self.trace.sessions:
            for k in range(1, len(s.hash_ids) + 1):
                key = s.hash_ids[:k]
                counts[key] = counts.get(key, 0) + 1
        nodes: dict[tuple, Content] = {}
        bt = self.trace.block_tokens
        for s in self.trace.sessions:
            parent = None
            for k in range(1, len(s.hash_ids) + 1):
                key = s.hash_ids[:k]
                if counts[key] < 2 or k * bt >= s.first_input:
                    break               # its own from here (the last prompt token is never shared)
                node = nodes.get(key)
                if node is None:
                    node = nodes[key] = Content(parent, ((src.new_key(), bt),),
                                                shared=True)
                parent = node
        return nodes

    def pop(self, src, rid: int) -> Request:
        s = self.trace.sessions[self.i]
        c = self.c
        prefix = None
        for k in range(len(s.hash_ids), 0, -1):
            prefix = self.prefixes.get(s.hash_ids[:k])
            if prefix is not None:
                break
        own = s.first_input - (prefix.length if prefix is not None else 0)
        content = Content(prefix, ((prompt_key(rid), own),))
        turns = 1 + len(s.ins)
        sess = Session(src.new_session_id(), c.name, turns, s.ins, s.outs, s.thinks, True, prefix, c.tenant)
        req = Request(rid, s.arrival_us, content.length, s.first_output, content, slo_class=c.slo_class,
                      priority=self.priority, tenant=c.tenant, client=c.name, session=sess, turn=0,
                      deadline=s.arrival_us + c.timeout_us if c.timeout_us else 0)
        req.rehash = turns > 1
        src.live += 1
        self.i += 1
        self.t = self.trace.sessions[self.i].arrival_us if self.i < len(self.trace.sessions) else None
        return req
