"""The `workload:` section of a scenario: pydantic models and `build_workload`.

Forms (they combine: a trace or inference_perf plus extra `clients`):

- single client (backward compatible): `rate, arrival, input, output, prefix_tokens, num_requests,
  horizon_s, timeout_s, slo_class` (+ `tenant, prefix_group, session, closed_loop`);
- several clients: `rate` (aggregate req/s) and `clients: [{name, rate_fraction, input, output,
  slo_class, tenant, prefix_group, prefix_tokens, timeout_s, arrival, rate, session,
  closed_loop, windows, multimodal}]`; a client's unset fields default to the workload-level
  ones. A client without its own `rate` (or arrival profile) gets rate·rate_fraction/Σrate_fraction;
- `arrival: {process: poisson|constant|gamma|weibull, cv, stages | diurnal | spike}`: at workload
  level a profile gives the aggregate rate over time (split by fractions); in a client it gives
  that client's own rates;
- `trace: {path, format: csv|azure|blis-v2|mooncake}` (path relative to the scenario's folder);
- `inference_perf: {num_groups, prompts_per_group, system_prompt_len, question_len, output_len,
  stages: [{rate, duration_s}], load_type: constant | poisson}`;
- `slo_targets: {class: {ttft_ms, itl_ms, e2e_ms}}` and `priorities: {class: int}` overrides;
- LoRA (workload level or per client): `adapter: NAME | {name, rank}` (every request names it)
  or `adapters: {count, distribution: uniform|zipf, zipf_s, rank, name_prefix}` (one drawn per
  request, per session or per closed-loop user).

The length, think-time and arrival models the fields above name are in distributions.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, ValidationError, model_validator

from .bounded import PositiveSeconds, Rate, Seconds, Strict, Tokens, TokensOrZero
from ..errors import ConfigError, pydantic_error
from ..sim.limits import MAX_DURATION_S, MAX_REQUESTS, MAX_USERS
from ..sim.workload import distributions as d
from ..sim.workload.adapters import AdapterSet, intern_adapters
from ..sim.workload.builders import inference_perf_client, inference_perf_total
from ..sim.workload.clients import PRIORITY, Client, ClosedLoop, Workload
from ..sim.workload.traces import load_trace
from .distributions import ArrivalSpec, LengthSpec, StageSpec, ThinkSpec, length, think
from .sessions import TurnsSpec, session_config


# ---- sessions, closed loops, traces, inference-perf --------------------------------------------
class SessionSpec(Strict):
    turns: TurnsSpec              # a number, or a distribution per session (agent sessions)
    new_input: LengthSpec | None = None   # new tokens of turns 2.. (a tool result); default: input
    think_time_s: ThinkSpec = 0.0
    accumulate: bool = True
    single: bool = False          # only the client's first arrival starts a session
    open_loop: bool = False       # turn k+1 at turn k's arrival + think + 1 µs per output token


class ClosedLoopSpec(Strict):
    users: Annotated[int, Field(gt=0, le=MAX_USERS)]
    think_time_s: ThinkSpec = 0.0


class TraceSpec(Strict):
    path: str
    format: Literal["csv", "azure", "blis-v2", "mooncake"] = "csv"


class InferencePerfSpec(Strict):
    num_groups: Annotated[int, Field(gt=0, le=MAX_USERS)]
    prompts_per_group: Annotated[int, Field(gt=0, le=MAX_USERS)]
    system_prompt_len: TokensOrZero
    question_len: Tokens
    output_len: Tokens
    stages: Annotated[list[StageSpec], Field(min_length=1)]
    repeat_questions: bool = False       # True: one fixed question per (group, prompt) user
    slo_class: str = "standard"
    load_type: Literal["constant", "poisson"] = "constant"   # inference-perf's load.type

    @model_validator(mode="after")
    def _users(self):
        if self.num_groups * self.prompts_per_group > MAX_USERS:
            raise ValueError(f"num_groups x prompts_per_group must be at most {MAX_USERS} "
                             f"(got {self.num_groups * self.prompts_per_group})")
        return self


class SloTargetSpec(Strict):
    ttft_ms: Annotated[float, Field(gt=0, le=MAX_DURATION_S * 1e3)] | None = None
    itl_ms: Annotated[float, Field(gt=0, le=MAX_DURATION_S * 1e3)] | None = None
    e2e_ms: Annotated[float, Field(gt=0, le=MAX_DURATION_S * 1e3)] | None = None


class WindowSpec(Strict):
    """An activity window [start_s, end_s): the client's arrivals outside its windows are dropped."""
    start_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S)]
    end_s: PositiveSeconds

    @model_validator(mode="after")
    def _ok(self):
        if round(self.end_s * 1e6) <= round(self.start_s * 1e6):
            raise ValueError(f"end_s ({self.end_s:g}) must be at least 1 µs after start_s ({self.start_s:g})")
        return self


class ItemsSpec(Strict):
    """`count` items of a modality per request, each of `tokens` tokens (both at least 1)."""
    count: LengthSpec
    tokens: LengthSpec


class MultimodalSpec(Strict):
    """A prompt of text tokens plus image, audio and video items (replaces `input`)."""
    text: LengthSpec | None = None
    image: ItemsSpec | None = None
    audio: ItemsSpec | None = None
    video: ItemsSpec | None = None

    @model_validator(mode="after")
    def _ok(self):
        if self.text is None and self.image is None and self.audio is None and self.video is None:
            raise ValueError("give text or at least one of image, audio, video")
        return self

    def build(self) -> d.Multimodal:
        items = tuple((m, length(x.count), length(x.tokens)) for m in ("image", "audio", "video")
                      if (x := getattr(self, m)) is not None)
        return d.Multimodal(length(self.text) if self.text is not None else None, items)


# ---- LoRA adapters ------------------------------------------------------------------------------
LoraRank = Annotated[int, Field(gt=0, le=512)]
MAX_ADAPTERS = 100_000


class AdapterSpec(Strict):
    """One adapter every request names."""
    name: str
    rank: LoraRank = 16

    @model_validator(mode="after")
    def _named(self):
        if not self.name.strip():
            raise ValueError("name must not be empty")
        return self


class AdaptersSpec(Strict):
    """`count` adapters `<name_prefix><k>` (k = 0 .. count-1) of one rank; each request (session,
    closed-loop user) draws one: uniformly, or adapter k with probability ∝ 1/(k+1)^zipf_s."""
    count: Annotated[int, Field(gt=0, le=MAX_ADAPTERS)]
    distribution: Literal["uniform", "zipf"] = "uniform"
    zipf_s: Annotated[float, Field(gt=0, le=10)] = 1.0
    rank: LoraRank = 16
    name_prefix: str = "adapter-"

    @model_validator(mode="after")
    def _ok(self):
        if "zipf_s" in self.model_fields_set and self.distribution != "zipf":
            raise ValueError("zipf_s applies to distribution: zipf")
        return self


def _adapter_set(adapter, adapters) -> AdapterSet | None:
    if adapter is not None:
        a = AdapterSpec(name=adapter) if isinstance(adapter, str) else adapter
        return AdapterSet.many([a.name], a.rank)
    if adapters is not None:
        names = [f"{adapters.name_prefix}{k}" for k in range(adapters.count)]
        return AdapterSet.many(names, adapters.rank, adapters.distribution, adapters.zipf_s)
    return None


class ClientSpec(Strict):
    name: str
    rate_fraction: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    rate: Rate | None = None           # absolute req/s for this client (ignores fractions)
    arrival: ArrivalSpec | None = None
    input: LengthSpec | None = None
    output: LengthSpec | None = None
    slo_class: str | None = None
    tenant: str | None = None
    prefix_group: str = ""
    prefix_tokens: TokensOrZero = 0
    timeout_s: Seconds | None = None
    session: SessionSpec | None = None
    closed_loop: ClosedLoopSpec | None = None
    windows: Annotated[list[WindowSpec], Field(min_length=1)] | None = None
    multimodal: MultimodalSpec | None = None
    adapter: Union[str, AdapterSpec, None] = None
    adapters: AdaptersSpec | None = None

    @model_validator(mode="after")
    def _ok(self):
        if not self.name.strip():
            raise ValueError("name must not be empty")
        if self.session is not None and self.closed_loop is not None:
            raise ValueError("give session or closed_loop, not both")
        if self.windows is not None and self.closed_loop is not None:
            raise ValueError("windows gate arrivals; a closed loop has none")
        if self.multimodal is not None and self.input is not None:
            raise ValueError("give input or multimodal (which makes the prompt), not both")
        _one_adapter_form(self)
        return self


def _one_adapter_form(spec) -> None:
    if spec.adapter is not None and spec.adapters is not None:
        raise ValueError("give adapter or adapters, not both")
    if isinstance(spec.adapter, str) and not spec.adapter.strip():
        raise ValueError("adapter: the name must not be empty")


class WorkloadSpec(Strict):
    rate: Rate | None = Field(None, description="requests per second (aggregate)")
    arrival: ArrivalSpec = ArrivalSpec()
    input: LengthSpec | None = None
    output: LengthSpec | None = None
    prefix_tokens: TokensOrZero = 0
    prefix_group: str = ""
    num_requests: Annotated[int, Field(gt=0, le=MAX_REQUESTS)] | None = None
    horizon_s: PositiveSeconds | None = None
    timeout_s: Seconds = 300.0
    slo_class: str = "standard"
    tenant: str = ""
    session: SessionSpec | None = None
    closed_loop: ClosedLoopSpec | None = None
    clients: Annotated[list[ClientSpec], Field(min_length=1)] | None = None
    trace: TraceSpec | None = None
    inference_perf: InferencePerfSpec | None = None
    slo_targets: dict[str, SloTargetSpec] = {}
    priorities: dict[str, Annotated[int, Field(ge=-1000, le=1000)]] = {}
    adapter: Union[str, AdapterSpec, None] = None      # LoRA: the default of every client
    adapters: AdaptersSpec | None = None

    @model_validator(mode="after")
    def _ok(self):
        _one_adapter_form(self)
        classes = {**PRIORITY, **self.priorities}
        used = [("slo_class", self.slo_class)] + [(f"clients.{c.name}.slo_class", c.slo_class)
                                                  for c in self.clients or [] if c.slo_class is not None]
        if self.inference_perf is not None:
            used.append(("inference_perf.slo_class", self.inference_perf.slo_class))
        for where, cls in used + [(f"slo_targets.{k}", k) for k in self.slo_targets]:
            if cls not in classes:
                raise ValueError(f"{where}: unknown SLO class {cls!r}; use one of {list(classes)}")
        names = [c.name for c in self.clients or []]
        if len(set(names)) != len(names):
            raise ValueError("client names must be unique")
        single = self.clients is None and self.trace is None and self.inference_perf is None
        if single:
            if self.input is None or self.output is None:
                raise ValueError("give input and output (or clients, trace or inference_perf)")
            if self.rate is None and not self.arrival.has_profile and self.closed_loop is None:
                raise ValueError("give a rate (or arrival stages/diurnal/spike, or closed_loop)")
        else:
            if self.session is not None or self.closed_loop is not None:
                raise ValueError("with clients, trace or inference_perf, put session/closed_loop in a client")
            if self.clients is None:
                self._nothing_unread()
        for c in self.clients or []:
            if (c.input or c.multimodal or self.input) is None or (c.output or self.output) is None:
                raise ValueError(f"clients.{c.name}: give input and output (here or at workload level)")
            own = c.rate is not None or (c.arrival is not None and c.arrival.has_profile)
            if not own and c.closed_loop is None and self.rate is None and not self.arrival.has_profile:
                raise ValueError(f"clients.{c.name}: no rate: give the workload a rate or the client one")
        if self.num_requests is None and self.horizon_s is None and not self._finite():
            raise ValueError("give num_requests or horizon_s (or both)")
        return self

    def _nothing_unread(self) -> None:
        """A trace or inference_perf workload without clients reads none of the single client's
        fields (rate, arrival, lengths, prefix): setting one would silently change nothing."""
        kind = "an inference_perf" if self.inference_perf is not None else "a trace"
        ip = {"rate": "inference_perf.stages", "arrival": "inference_perf.load_type and stages",
              "input": "inference_perf.system_prompt_len and question_len", "output": "inference_perf.output_len",
              "prefix_tokens": "inference_perf.num_groups and system_prompt_len",
              "prefix_group": "inference_perf.num_groups"}
        lives = ip if self.inference_perf is not None else dict.fromkeys(ip, "the trace file's rows")
        for name, where in lives.items():
            if name in self.model_fields_set:
                raise ValueError(f"{kind} workload never reads workload.{name} (its value lives in {where}); "
                                 f"remove it, or add clients that use it")

    def _finite(self) -> bool:
        """Whether the workload ends by itself (then num_requests/horizon_s may be omitted)."""
        def open_finite(arrival: ArrivalSpec | None, closed, session, windows=None) -> bool:
            if closed is not None:
                return False
            if windows is not None or (session is not None and session.single):
                return True
            a = arrival if arrival is not None and arrival.has_profile else self.arrival
            return a.stages is not None
        if self.clients is None and self.trace is None and self.inference_perf is None:
            return open_finite(self.arrival, self.closed_loop, self.session)
        return all(open_finite(c.arrival, c.closed_loop, c.session, c.windows) for c in self.clients or [])


# ---- building ---------------------------------------------------------------------------------
def _client(spec: WorkloadSpec, c: ClientSpec, where: str) -> Client:
    w_shape = spec.arrival
    a = c.arrival
    shape_spec = a if a is not None else w_shape
    if a is not None and a.has_profile:
        arrival = d.TimeVarying(a.shape(), a.profile(c.rate, where + ".arrival"))
    elif c.rate is not None:
        arrival = shape_spec.shape(c.rate)
    else:
        arrival = shape_spec.shape(None)            # a share of the workload's rate or profile
    sess = c.session
    cl = c.closed_loop
    timeout = spec.timeout_s if c.timeout_s is None else c.timeout_s
    group = c.prefix_group or ("shared" if c.prefix_tokens and c.name == "default" else "")
    if c.adapter is not None or c.adapters is not None:
        adapters = _adapter_set(c.adapter, c.adapters)
    else:
        adapters = _adapter_set(spec.adapter, spec.adapters)
    return Client(
        name=c.name, arrival=None if cl else arrival, adapters=adapters,
        input=c.multimodal.build() if c.multimodal else length(c.input or spec.input),
        output=length(c.output or spec.output),
        rate_fraction=c.rate_fraction, slo_class=c.slo_class or spec.slo_class,
        tenant=spec.tenant if c.tenant is None else c.tenant,
        prefix_group=group, prefix_tokens=c.prefix_tokens, timeout_us=int(round(timeout * 1e6)),
        session=session_config(sess, think, length) if sess else None,
        closed_loop=ClosedLoop(cl.users, think(cl.think_time_s)) if cl else None,
        windows=d.Windows([(round(w.start_s * 1e6), round(w.end_s * 1e6)) for w in c.windows]) if c.windows else None)


def build_workload(spec: WorkloadSpec, base_dir: Path | str = ".") -> Workload:
    """The simulator's Workload for a validated spec; trace paths are relative to base_dir."""
    clients: list[Client] = []
    num = spec.num_requests or 0
    targets: dict[str, dict[str, float]] = {}
    priorities = {**PRIORITY, **spec.priorities}
    rate = spec.rate or 0.0
    profile = spec.arrival.profile(spec.rate, "workload.arrival")
    if spec.trace is not None:
        p = Path(spec.trace.path)
        if not p.is_absolute():
            p = Path(base_dir) / p
        try:
            tw = load_trace(p, spec.trace.format, timeout_us=int(round(spec.timeout_s * 1e6))) \
                if spec.trace.format != "blis-v2" else load_trace(p, "blis-v2")
        except ConfigError as e:
            field = e.field if e.field.startswith("workload") else f"workload.{e.field}"
            raise ConfigError(field, e.message) from None
        if spec.trace.format != "blis-v2":
            c = tw.clients[0]
            c.slo_class, c.tenant = spec.slo_class, spec.tenant
        clients += tw.clients
        num = num or tw.num_requests
        targets.update(tw.slo_targets)
        if tw.rate:
            if spec.rate is not None or profile is not None:
                raise ConfigError("workload.rate", "a blis-v2 trace has its own aggregate_rate")
            rate = tw.rate
        horizon = tw.horizon_us
    else:
        horizon = 0
    if spec.inference_perf is not None:
        ip = spec.inference_perf
        stages = [(s.rate, s.duration_s) for s in ip.stages]
        clients.append(inference_perf_client(ip.num_groups, ip.prompts_per_group, ip.system_prompt_len,
                                             ip.question_len, ip.output_len, stages,
                                             repeat_questions=ip.repeat_questions, slo_class=ip.slo_class,
                                             timeout_us=int(round(spec.timeout_s * 1e6)), load_type=ip.load_type))
        clients[-1].adapters = _adapter_set(spec.adapter, spec.adapters)
        if spec.num_requests is None and spec.trace is None and spec.clients is None and ip.load_type == "constant":
            num = inference_perf_total(stages)   # (poisson: until the last stage ends)
    if spec.clients is not None:
        clients += [_client(spec, c, f"workload.clients.{c.name}") for c in spec.clients]
    elif spec.trace is None and spec.inference_perf is None:
        single = ClientSpec(name="default", prefix_group=spec.prefix_group, prefix_tokens=spec.prefix_tokens,
                            session=spec.session, closed_loop=spec.closed_loop)
        if profile is None and spec.rate is not None:
            # the original single-client form: the process at the workload's rate
            single = single.model_copy(update={"rate": spec.rate})
        clients.append(_client(spec, single, "workload"))
    if spec.trace is not None and spec.trace.format != "blis-v2" and (spec.adapter or spec.adapters):
        raise ConfigError("workload.adapter", f"a {spec.trace.format} trace names no adapters; "
                                              "give them to clients (workload.clients)")
    intern_adapters(clients)
    for k, t in spec.slo_targets.items():
        targets[k] = {m: v for m, v in t.model_dump().items() if v is not None}
    w = Workload(clients=clients, num_requests=num,
                 horizon_us=int(round(spec.horizon_s * 1e6)) if spec.horizon_s else horizon,
                 priorities=priorities, rate=rate, profile=profile, slo_targets=targets)
    w.validate()
    return w


# ---- parsing with one clear error -------------------------------------------------------------------
def parse_workload(data) -> WorkloadSpec:
    """Validate a `workload:` mapping, raising one ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError("workload", "must be a mapping of fields")
    try:
        return WorkloadSpec.model_validate(data)
    except ValidationError as e:
        raise pydantic_error(e, prefix="workload", root=WorkloadSpec) from None
