"""What a workload is, as the simulator takes it: clients (open-loop, multi-turn sessions,
closed-loop users, trace replays), their SLO classes and priorities, and how the aggregate rate
is shared among them. `source.WorkloadSource` turns a `Workload` into requests; builders.py
(BLIS specs, inference-perf) and traces.py build one, as does the scenario schema's `workload:`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import ConfigError
from .distributions import PoissonArrivals, ThinkTime, TimeVarying, Windows

# SLO classes and their llm-d priorities (higher is more important; sheddable iff < 0).
PRIORITY = {"critical": 4, "standard": 3, "batch": -1, "sheddable": -2, "background": -3}


@dataclass(frozen=True)
class SessionConfig:
    """Multi-turn sessions: each open-loop arrival starts a session of `turns` turns; turn k+1
    arrives at turn k's completion + think time. With `accumulate`, the next prompt is the
    previous prompt + its output + a new question (so the previous turn's KV blocks are hit).
    A turn that does not complete (timed out, dropped, rejected) ends the session. With
    `single`, only the client's first arrival starts a session (BLIS's single_session). With
    `open_loop`, turns do not wait for each other (BLIS's closed_loop: false): turn k+1 arrives
    at turn k's arrival + think time + 1 µs per output token of turn k, whatever became of turn k."""
    turns: int
    think_time: ThinkTime | float = 0.0          # seconds, or a ThinkTime distribution
    accumulate: bool = True
    single: bool = False
    open_loop: bool = False
    turns_dist: object = None          # per-session turns in [1, turns] (session_turns.py); None: `turns`
    new_input: object = None           # length distribution of turns 2.. (tool results); None: the input's


@dataclass(frozen=True)
class ClosedLoop:
    """`users` virtual users: user u sends its first request at u·mean_think/users, and each
    next one at the previous one's completion (or failure) + think time."""
    users: int
    think_time: ThinkTime | float = 0.0


@dataclass
class Client:
    name: str
    arrival: object = None            # an arrival process; None or rate None: a share of Workload.rate
    input: object = None              # length distribution of the prompt (after any prefix)
    output: object = None             # length distribution of the output
    rate_fraction: float = 1.0
    slo_class: str = "standard"
    tenant: str = ""
    prefix_group: str = ""            # "" with prefix_tokens > 0: a group named after the client
    prefix_tokens: int = 0
    timeout_us: int = 0               # client deadline after arrival; 0 = none
    session: SessionConfig | None = None
    closed_loop: ClosedLoop | None = None
    trace: object = None              # a TraceData: replay its rows instead of sampling
    cycle: tuple = ()                 # ((prefix_group, tenant), ...): request k uses entry k % len
    repeat_prompts: bool = False      # with cycle: each entry re-sends one fixed question
    adapters: object = None           # an AdapterSet: the LoRA adapters its requests name (None: base model)
    windows: Windows | None = None    # open-loop: arrivals only inside these [start, end) windows

    @property
    def kind(self) -> str:
        if self.trace is not None:
            return "trace"
        if self.closed_loop is not None:
            return "closed-loop"
        return "open-loop"


@dataclass
class Workload:
    clients: list[Client]
    num_requests: int = 0             # 0 = until the horizon (counts every generated request)
    horizon_us: int = 0               # 0 = until num_requests
    priorities: dict = field(default_factory=lambda: dict(PRIORITY))
    rate: float = 0.0                 # aggregate req/s, split over clients by rate_fraction
    profile: object = None            # aggregate time-varying rate (Stages/Diurnal/Spike)
    slo_targets: dict = field(default_factory=dict)   # class -> {ttft_ms, itl_ms, e2e_ms}

    def priority(self, slo_class: str) -> int:
        return int(self.priorities.get(slo_class, 0))

    def sheddable(self, slo_class: str) -> bool:
        return self.priority(slo_class) < 0

    def arrivals(self) -> list:
        """Each client's arrival process with its rate resolved (None for trace and closed-loop
        clients): a client whose process has no rate gets rate·fraction/Σfractions of the
        workload's rate or profile (Σ over such clients; with activity windows, over those whose
        windows overlap the client's, as BLIS normalises per phase)."""
        rel = [c for c in self.clients if c.kind == "open-loop" and _relative(c.arrival)]
        out = []
        for c in self.clients:
            if c.kind != "open-loop":
                out.append(None)
                continue
            a = c.arrival if c.arrival is not None else PoissonArrivals()
            if not _relative(a):
                out.append(a)
                continue
            if c.rate_fraction <= 0:
                raise ConfigError(f"clients.{c.name}.rate_fraction", "must be > 0")
            share = c.rate_fraction / sum(o.rate_fraction for o in rel if _co_active(c, o))
            if self.profile is not None:
                out.append(TimeVarying(a, self.profile.scaled(share)))
            elif self.rate and self.rate > 0:
                out.append(a.with_rate(self.rate * share))
            else:
                raise ConfigError(f"clients.{c.name}.arrival",
                                  "no rate: give the client's arrival a rate or the workload a rate")
        return out

    @property
    def finite(self) -> bool:
        """Whether the workload ends by itself (traces, finite stages, activity windows, single
        sessions, and sessions of those)."""
        for c, a in zip(self.clients, self.arrivals()):
            if c.kind == "closed-loop":
                return False
            if c.kind == "open-loop" and c.windows is None and not (c.session and c.session.single):
                prof = a.profile if isinstance(a, TimeVarying) else None
                if prof is None or not getattr(prof, "finite", False):
                    return False
        return True

    def validate(self) -> None:
        """Raise ConfigError for a workload that cannot run."""
        names = [c.name for c in self.clients]
        if not self.clients:
            raise ConfigError("workload.clients", "give at least one client")
        for n in names:
            if names.count(n) > 1:
                raise ConfigError("workload.clients", f"client name {n!r} is used twice")
        for c in self.clients:
            if c.slo_class not in self.priorities:
                raise ConfigError(f"clients.{c.name}.slo_class",
                                  f"unknown class {c.slo_class!r}; use one of {list(self.priorities)}")
            if c.kind != "trace" and (c.input is None or c.output is None):
                raise ConfigError(f"clients.{c.name}", "give input and output length distributions")
            if c.session is not None and c.closed_loop is not None:
                raise ConfigError(f"clients.{c.name}", "a client has either session or closed_loop, not both")
            if c.session is not None and c.session.turns < 1:
                raise ConfigError(f"clients.{c.name}.session.turns", "must be >= 1")
            if c.closed_loop is not None and c.closed_loop.users < 1:
                raise ConfigError(f"clients.{c.name}.closed_loop.users", "must be >= 1")
            if c.windows is not None and c.kind != "open-loop":
                raise ConfigError(f"clients.{c.name}.windows", "activity windows gate the arrivals of "
                                                               "open-loop clients; a closed loop or trace has none")
        self.arrivals()
        if not self.num_requests and not self.horizon_us and not self.finite:
            raise ConfigError("workload", "give num_requests or horizon_s (or both)")


def _relative(a) -> bool:
    return a is None or (not isinstance(a, TimeVarying) and getattr(a, "rate", None) is None)


def _co_active(c: Client, other: Client) -> bool:
    """Whether two clients' activity windows overlap (a client without windows is always active)."""
    return c.windows is None or c.windows.overlaps(other.windows)
