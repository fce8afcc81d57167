"""Workload builders: inference-perf shared-prefix runs and BLIS workload-spec v2 files."""
from __future__ import annotations

import math
from pathlib import Path

from ...errors import ConfigError, read_yaml
from ..limits import (MAX_DURATION_S, MAX_NUMBER, MAX_RATE, MAX_REQUESTS, MAX_TOKENS, MAX_TURNS, MAX_USERS,
                       MIN_DURATION_S, MIN_RATE)
from .adapters import AdapterSet
from .cohorts import diurnal_windows, drain_windows, members
from .distributions import (Constant, ConstantArrivals, Empirical, Exponential, GammaArrivals, Gaussian, LogNormal,
                            Multimodal, ParetoLogNormal, PoissonArrivals, Stages, TimeVarying, WeibullArrivals, Windows,
                            weibull_cv)
from .clients import PRIORITY, Client, ClosedLoop, SessionConfig, Workload


def _stage_list(stages) -> list[tuple[float, float]]:
    out = []
    for s in stages:
        if isinstance(s, dict):
            out.append((float(s["rate"]), float(s.get("duration_s", s.get("duration")))))
        else:
            r, d = s
            out.append((float(r), float(d)))
    return out


def inference_perf_client(num_groups: int, prompts_per_group: int, system_prompt_len: int, question_len: int,
                          output_len: int, stages, *, repeat_questions: bool = False, slo_class: str = "standard",
                          timeout_us: int = 0, name: str = "inference-perf", load_type: str = "constant") -> Client:
    """The client of an inference-perf `shared_prefix` run (`load.type` constant or poisson).

    One shared system prompt of `system_prompt_len` tokens per group; requests cycle over the
    (group, prompt) users group by group (g0p0, g0p1, …, g1p0, …); each request is its group's
    system prompt + a question of `question_len` tokens (unique per request, or with
    `repeat_questions` one fixed question per user, as inference-perf's fixed prompt list) and
    outputs exactly `output_len` tokens. With load_type "constant" (inference-perf's default)
    arrivals are deterministic: 1/rate apart within a stage, stages back to back, Σ rate·duration
    requests in all; with "poisson" they are a Poisson process at each stage's rate (so they
    change with the seed). Tenant = `prompt-<group>`.
    """
    if load_type not in ("constant", "poisson"):
        raise ConfigError("inference_perf.load_type", f"unknown {load_type!r}; allowed: constant, poisson")
    if num_groups < 1 or prompts_per_group < 1:
        raise ConfigError("inference_perf", "num_groups and prompts_per_group must be >= 1")
    if num_groups * prompts_per_group > MAX_USERS:
        raise ConfigError("inference_perf", f"num_groups x prompts_per_group must be at most {MAX_USERS}")
    if question_len < 1 or output_len < 1 or system_prompt_len < 0:
        raise ConfigError("inference_perf", "question_len and output_len must be >= 1, system_prompt_len >= 0")
    cycle = tuple((f"{name}/group-{g}", f"prompt-{g}") for g in range(num_groups) for _ in range(prompts_per_group))
    shape = ConstantArrivals() if load_type == "constant" else PoissonArrivals()
    return Client(name, arrival=TimeVarying(shape, Stages(_stage_list(stages))),
                  input=Constant(question_len), output=Constant(output_len), slo_class=slo_class,
                  prefix_tokens=system_prompt_len, timeout_us=timeout_us, cycle=cycle,
                  repeat_prompts=repeat_questions)


def inference_perf_chat_clients(num_groups: int, prompts_per_group: int, system_prompt_len: int, question_len: int,
                                output_len: int, stages) -> list[Client]:
    """BLIS's inference-perf `enable_multi_turn_chat`: each stage's ⌊rate·duration⌋ requests are
    split evenly (the first ones one more) over the groups × prompts users, and each user is one
    conversation of that many turns: it starts at a Poisson time (rate/users; with several
    stages, inside its stage), and each next turn comes users/rate seconds after the previous
    one completes. Turns carry the group's system prompt and a fresh question (no context
    growth, as inference-perf sends a fixed-length prompt); tenant and prefix group `prompt-<g>`.
    Several stages give each stage its own users, `stage-<s>-prompt-<g>-user-<u>`."""
    stages = _stage_list(stages)
    n = num_groups * prompts_per_group
    clients, start = [], 0.0
    for s, (rate, duration) in enumerate(stages):
        total = int(rate * duration)
        if total < 1:
            raise ConfigError("inference_perf", f"stage {s}: rate {rate:g} x duration {duration:g} s gives no request")
        window = Windows([(round(start * 1e6), round((start + duration) * 1e6))]) if len(stages) > 1 else None
        think = int(n / rate * 1e6) / 1e6
        for j in range(n):
            turns = total // n + (j < total % n)
            if turns == 0:
                continue
            g, u = divmod(j, prompts_per_group)
            name = f"prompt-{g}-user-{u}" if window is None else f"stage-{s}-prompt-{g}-user-{u}"
            clients.append(Client(name, arrival=PoissonArrivals(rate / n), input=Constant(question_len),
                                  output=Constant(output_len), tenant=f"prompt-{g}", prefix_group=f"prompt-{g}",
                                  prefix_tokens=system_prompt_len, timeout_us=300_000_000,
                                  session=SessionConfig(turns, think, accumulate=False, single=True), windows=window))
        start += duration
    return clients


def inference_perf_total(stages) -> int:
    """Number of requests of constant arrivals over the stages: Σ rate·duration (floored)."""
    return int(math.floor(sum(r * d for r, d in _stage_list(stages)) + 1e-9))


def inference_perf_workload(num_groups: int, prompts_per_group: int, system_prompt_len: int, question_len: int,
                            output_len: int, stages, **kw) -> Workload:
    """A Workload of one inference-perf shared-prefix client (see inference_perf_client);
    `stages` is a list of (rate, duration_s) or {rate, duration_s} dicts."""
    c = inference_perf_client(num_groups, prompts_per_group, system_prompt_len, question_len, output_len,
                              stages, **kw)
    return Workload(clients=[c], num_requests=inference_perf_total(stages))


# ---- BLIS workload-spec v2 ------------------------------------------------------------------------
_TOP = {"version", "seed", "category", "aggregate_rate", "num_requests", "horizon", "clients", "cohorts",
        "servegen_data", "inference_perf", "goodput_slo_targets"}
_CLIENT = {"id", "tenant_id", "slo_class", "model", "adapter", "rate_fraction", "concurrency", "think_time_us",
           "arrival", "input_distribution", "output_distribution", "prefix_group", "prefix_length", "streaming",
           "network", "lifecycle", "multimodal", "reasoning", "timeout", "slo_target_us", "closed_loop"}
BLIS_ADAPTER_RANK = 16           # a BLIS spec names an adapter without its rank
_COHORT = (_CLIENT - {"concurrency", "think_time_us", "lifecycle"}) | {"population", "prefix_sharing", "diurnal",
                                                                         "spike", "drain"}
MAX_COHORT_MEMBERS = 1000      # cohort members (and multi-turn chat users): each a client with its own streams
_MODALITIES = ("image", "audio", "video")
_WINDOW_OVERRIDES = ("trace_rate", "arrival", "input_distribution", "output_distribution")
# Parts of BLIS's language this simulator refuses, each with the reason (one line).
_PER_WINDOW = ("per-window rates and distributions (BLIS's time-varying path, which rescales gaps to fill "
               "each window) are not simulated")
REASONS = {
    "servegen_data": "BLIS's ServeGen import draws day periods and SLO classes per chunk with its own RNG "
                     "and yields per-window rates and distributions, which are not simulated",
    "model": "one model per cluster; multi-model routing is not simulated",
    "slo_target_us": "BLIS orders its slo-deadline gateway queue by it; flow control here orders by the "
                     "llm-d request TTL (the client's timeout), so it would change nothing",
    "window": _PER_WINDOW,
    "absolute": "absolute-rate mode (aggregate_rate 0) needs per-window trace_rate: " + _PER_WINDOW,
    "context_growth": "only accumulate and empty are defined (BLIS reads any other value as empty: write \"\")",
    "concurrency_multi_turn": "a client is either concurrent users or multi-turn sessions "
                              "(BLIS refuses even mixing the two in one spec)",
    "multimodal_turns": "BLIS draws multi-turn rounds and concurrency requests from input_distribution "
                        "and ignores multimodal",
    "windows_closed": "lifecycle windows gate arrivals; BLIS's concurrency users have none",
}
_V1_CLASSES = {"realtime": "critical", "interactive": "standard", "": "standard"}


class _Spec:
    """Reads a BLIS spec mapping, naming the file and key in every error."""

    def __init__(self, where: str):
        self.where = where

    def err(self, key: str, msg: str) -> ConfigError:
        return ConfigError("trace", f"{self.where}: {key}: {msg}")

    def refused(self, key: str, why: str) -> ConfigError:
        return ConfigError("trace", f"{self.where}: {key}: not supported: {REASONS[why]}")

    def mapping(self, d, key: str, allowed=None) -> dict:
        if d is None:
            return {}
        if not isinstance(d, dict):
            raise self.err(key, "must be a mapping")
        if allowed is not None:
            for k in d:
                if k not in allowed:
                    raise self.err(f"{key}.{k}" if key else str(k), "unknown field")
        return d

    def num(self, d: dict, k: str, key: str, default=None, lo=None, hi=None):
        v = d.get(k, default)
        if v is None:
            raise self.err(f"{key}.{k}", "required field is missing")
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.err(f"{key}.{k}", f"must be a number (got {v!r})")
        if not -MAX_NUMBER <= v <= MAX_NUMBER:           # also NaN
            raise self.err(f"{key}.{k}", f"must be a finite number of magnitude at most {MAX_NUMBER:g} (got {v})")
        if lo is not None and v < lo:
            raise self.err(f"{key}.{k}", f"must be >= {lo} (got {v})")
        if hi is not None and v > hi:
            raise self.err(f"{key}.{k}", f"must be <= {hi} (got {v})")
        return v

    def dist(self, d, key: str):
        d = self.mapping(d, key, {"type", "params"})
        if not d:
            raise self.err(key, "required field is missing")
        kind = d.get("type")
        p = self.mapping(d.get("params"), f"{key}.params")
        k = f"{key}.params"
        lo_hi = (int(self.num(p, "min", k, 1, 1, 1 << 30)), int(self.num(p, "max", k, 1 << 30, 1, 1 << 30)))
        if kind == "gaussian":
            mean, sd = self.num(p, "mean", k), self.num(p, "std_dev", k, 0.0, 0)
            if "min" in p and p.get("min") == p.get("max"):
                return Constant(max(1, int(p["min"])))
            return Gaussian(float(mean), float(sd), *lo_hi)
        if kind == "exponential":
            return Exponential(float(self.num(p, "mean", k, lo=0)), *lo_hi)
        if kind == "constant":
            return Constant(max(1, int(self.num(p, "value", k, lo=0, hi=MAX_TOKENS))))
        if kind == "lognormal":
            return LogNormal(float(self.num(p, "mu", k, lo=-50, hi=50)), float(self.num(p, "sigma", k, lo=0, hi=10)),
                             *lo_hi)
        if kind == "pareto_lognormal":
            alpha, xm = self.num(p, "alpha", k), self.num(p, "xm", k, lo=0)
            if alpha <= 0:
                raise self.err(f"{k}.alpha", f"must be > 0 (got {alpha})")
            return ParetoLogNormal(float(alpha), float(xm), float(self.num(p, "mu", k, lo=-50, hi=50)),
                                   float(self.num(p, "sigma", k, lo=0, hi=10)),
                                   float(self.num(p, "mix_weight", k, lo=0, hi=1)), *lo_hi)
        if kind == "empirical":
            try:
                items = sorted((int(float(v)), float(pr)) for v, pr in p.items())
            except (TypeError, ValueError):
                raise self.err(k, "empirical params map token counts to probabilities") from None
            if not items or sum(pr for _, pr in items) <= 0:
                raise self.err(k, "empirical needs at least one token count with a positive probability")
            return Empirical(tuple(v for v, _ in items), tuple(pr for _, pr in items))
        raise self.err(f"{key}.type", f"unknown {kind!r}; allowed: constant, empirical, exponential, gaussian, "
                                      "lognormal, pareto_lognormal")

    def arrival(self, d, key: str):
        d = self.mapping(d, key, {"process", "cv", "shape", "scale"})
        proc = d.get("process", "poisson") or "poisson"
        if d.get("shape") is not None or d.get("scale") is not None:
            return self.fitted(d, proc, key)
        cv = float(self.num(d, "cv", key, 1.0, 0.01))
        if proc == "poisson":
            return PoissonArrivals()
        if proc == "constant":
            return ConstantArrivals()
        if proc == "gamma":
            return GammaArrivals(None, cv)
        if proc == "weibull":
            if not 0.01 <= cv <= 10.4:
                raise self.err(f"{key}.cv", "weibull cv must be in [0.01, 10.4]")
            return WeibullArrivals(None, cv)
        raise self.err(f"{key}.process", f"unknown {proc!r}; allowed: constant, gamma, poisson, weibull")

    def fitted(self, d: dict, proc: str, key: str):
        """Gamma (shape α, scale θ µs) or Weibull (shape k, scale λ µs) gaps as given, as BLIS
        does for MLE-fitted parameters: the client's own rate, 1/mean gap, whatever its fraction."""
        if proc not in ("gamma", "weibull"):
            raise self.err(f"{key}.shape", f"shape and scale apply to gamma and weibull arrivals, not {proc}")
        shape = float(self.num(d, "shape", key, lo=1e-3, hi=1e3))
        scale = float(self.num(d, "scale", key, lo=1e-3))
        if proc == "gamma":
            mean_us, cv = shape * scale, 1 / math.sqrt(shape)
        else:
            mean_us, cv = scale * math.gamma(1 + 1 / shape), weibull_cv(shape)
            if not 0.01 <= cv <= 10.4:
                raise self.err(f"{key}.shape", f"weibull shape {shape:g} gives cv {cv:.3g}, outside [0.01, 10.4]")
        rate = 1e6 / mean_us
        if not MIN_RATE <= rate <= MAX_RATE:
            raise self.err(f"{key}.scale", f"the mean gap of {mean_us:g} µs is a rate of {rate:g} req/s, "
                                          f"outside [{MIN_RATE:g}, {MAX_RATE:g}]")
        return GammaArrivals(rate, cv) if proc == "gamma" else WeibullArrivals(rate, cv)

    def lifecycle(self, d, key: str) -> Windows:
        d = self.mapping(d, key, {"windows"})
        ws = d.get("windows")
        if not isinstance(ws, list) or not ws:
            raise self.err(f"{key}.windows", "give at least one {start_us, end_us}")
        spans = []
        for j, w in enumerate(ws):
            wk = f"{key}.windows[{j}]"
            w = self.mapping(w, wk, {"start_us", "end_us", *_WINDOW_OVERRIDES})
            for o in _WINDOW_OVERRIDES:
                if w.get(o) is not None:
                    raise self.refused(f"{wk}.{o}", "window")
            start = int(self.num(w, "start_us", wk, lo=0))
            end = int(self.num(w, "end_us", wk, lo=0))
            if end <= start:
                raise self.err(f"{wk}.end_us", f"must be after start_us ({end} <= {start})")
            spans.append((start, end))
        return Windows(spans)

    def multimodal(self, d, key: str) -> Multimodal:
        fields = {"text_distribution"} | {f"{m}{x}" for m in _MODALITIES for x in ("_distribution",
                                                                                  "_count_distribution")}
        d = self.mapping(d, key, fields)
        items = []
        for m in _MODALITIES:
            tk, ck = f"{m}_distribution", f"{m}_count_distribution"
            if (d.get(tk) is None) != (d.get(ck) is None):
                raise self.err(f"{key}.{ck if d.get(ck) is None else tk}", f"give {tk} and {ck} together")
            if d.get(tk) is not None:
                items.append((m, self.dist(d[ck], f"{key}.{ck}"), self.dist(d[tk], f"{key}.{tk}")))
        text = self.dist(d["text_distribution"], f"{key}.text_distribution") if d.get("text_distribution") else None
        if text is None and not items:
            raise self.err(key, "give text_distribution or a modality's distribution and count distribution")
        return Multimodal(text, tuple(items))

    def reasoning(self, d, key: str, open_loop: bool) -> SessionConfig | None:
        """The session of a client's `reasoning` (None without multi_turn)."""
        rs = self.mapping(d, key, {"reason_ratio_distribution", "multi_turn"})
        if rs.get("reason_ratio_distribution") is not None:
            # the share of output tokens that are reasoning: they are output tokens all the same,
            # so it changes no timing; read only to check it
            self.dist(rs["reason_ratio_distribution"], f"{key}.reason_ratio_distribution")
        if rs.get("multi_turn") is None:
            return None
        mk = f"{key}.multi_turn"
        mt = self.mapping(rs["multi_turn"], mk, {"max_rounds", "think_time_us", "context_growth", "single_session"})
        growth = mt.get("context_growth") or ""
        if growth not in ("", "accumulate"):
            raise self.refused(f"{mk}.context_growth = {growth}", "context_growth")
        return SessionConfig(int(self.num(mt, "max_rounds", mk, lo=1, hi=MAX_TURNS)),
                             float(self.num(mt, "think_time_us", mk, 0, 0)) / 1e6, growth == "accumulate",
                             single=bool(mt.get("single_session")), open_loop=open_loop)

    def client(self, d, i: int, key: str = "") -> Client:
        key = key or f"clients[{i}]"
        d = self.mapping(d, key, _CLIENT)
        for k in ("model", "slo_target_us"):
            if d.get(k):
                raise self.refused(f"{key}.{k}", k)
        name = str(d.get("id") or f"client-{i}")
        slo = d.get("slo_class") or ""
        slo = _V1_CLASSES.get(slo, slo)
        if slo not in PRIORITY:
            raise self.err(f"{key}.slo_class", f"unknown class {slo!r}; use one of {list(PRIORITY)}")
        group = str(d.get("prefix_group") or "")
        plen = d.get("prefix_length")
        plen = int(self.num(d, "prefix_length", key, lo=0, hi=MAX_TOKENS)) if plen is not None else (50 if group else 0)
        closed = None
        think_us = d.get("think_time_us")
        session = self.reasoning(d.get("reasoning"), f"{key}.reasoning", open_loop=d.get("closed_loop") is False)
        conc = d.get("concurrency")
        if conc:
            if session is not None:
                raise self.refused(f"{key}.concurrency with reasoning.multi_turn", "concurrency_multi_turn")
            closed = ClosedLoop(int(self.num(d, "concurrency", key, lo=1, hi=MAX_USERS)),
                                float(self.num(d, "think_time_us", key, 0, 0)) / 1e6)
        elif think_us:
            raise self.err(f"{key}.think_time_us", "applies to concurrency clients only (a session's think time "
                                                  "is reasoning.multi_turn.think_time_us)")
        timeout = d.get("timeout")
        if timeout is None:
            timeout_us = 300_000_000 if (session is not None or closed is not None) else 0
        else:
            timeout_us = int(self.num(d, "timeout", key, lo=0))
        frac = float(self.num(d, "rate_fraction", key, 1.0, hi=1e6))
        if closed is None and frac <= 0:
            raise self.err(f"{key}.rate_fraction", "must be > 0")
        windows = None
        if d.get("lifecycle") is not None:
            if closed is not None:
                raise self.refused(f"{key}.lifecycle with concurrency", "windows_closed")
            windows = self.lifecycle(d["lifecycle"], f"{key}.lifecycle")
        if d.get("multimodal") is not None:
            if session is not None or closed is not None:
                raise self.refused(f"{key}.multimodal with {'reasoning.multi_turn' if session else 'concurrency'}",
                                   "multimodal_turns")
            inp = self.multimodal(d["multimodal"], f"{key}.multimodal")
        else:
            inp = self.dist(d.get("input_distribution"), f"{key}.input_distribution")
        return Client(name, arrival=None if closed else self.arrival(d.get("arrival"), f"{key}.arrival"),
                      input=inp, output=self.dist(d.get("output_distribution"), f"{key}.output_distribution"),
                      rate_fraction=frac if frac > 0 else 1.0, slo_class=slo, tenant=str(d.get("tenant_id") or ""),
                      prefix_group=group if plen else "", prefix_tokens=plen, timeout_us=timeout_us,
                      session=session, closed_loop=closed, adapters=self.adapter(d, key),
                      windows=windows)

    def adapter(self, d: dict, key: str):
        """The client's LoRA adapter (`adapter: NAME`), of rank BLIS_ADAPTER_RANK."""
        name = d.get("adapter")
        if name is None or name == "":
            return None
        if not isinstance(name, str):
            raise self.err(f"{key}.adapter", f"must be an adapter name (got {name!r})")
        return AdapterSet.many([name], BLIS_ADAPTER_RANK)

    def cohorts(self, raw) -> list[Client]:
        if not isinstance(raw, list):
            raise self.err("cohorts", "must be a list")
        out, total = [], 0
        for i, d in enumerate(raw):
            key = f"cohorts[{i}]"
            d = self.mapping(d, key, _COHORT)
            if not d.get("id"):
                raise self.err(f"{key}.id", "required field is missing")
            pop = int(self.num(d, "population", key, lo=1, hi=MAX_COHORT_MEMBERS))
            total += pop
            if total > MAX_COHORT_MEMBERS:
                raise self.err(f"{key}.population", f"cohorts have at most {MAX_COHORT_MEMBERS} members in all "
                                                    "(each member is a client with its own streams)")
            if self.num(d, "rate_fraction", key, lo=0, hi=1e6) <= 0:
                raise self.err(f"{key}.rate_fraction", "must be > 0")
            sharing = d.get("prefix_sharing") or "shared"
            if sharing not in ("shared", "per_member"):
                raise self.err(f"{key}.prefix_sharing", f"unknown {sharing!r}; allowed: shared, per_member")
            windows = []
            if d.get("diurnal") is not None:
                dk = f"{key}.diurnal"
                dd = self.mapping(d["diurnal"], dk, {"peak_hour", "peak_to_trough_ratio"})
                windows += diurnal_windows(int(self.num(dd, "peak_hour", dk, 0, 0, 23)),
                                           float(self.num(dd, "peak_to_trough_ratio", dk, lo=1)))
            if d.get("spike") is not None:
                sk = f"{key}.spike"
                sp = self.mapping(d["spike"], sk, {"start_time_us", "duration_us", "trace_rate"})
                if sp.get("trace_rate") is not None:
                    raise self.refused(f"{sk}.trace_rate", "window")
                start = int(self.num(sp, "start_time_us", sk, lo=0))
                windows.append((start, start + int(self.num(sp, "duration_us", sk, lo=1))))
            if d.get("drain") is not None:
                dk = f"{key}.drain"
                dr = self.mapping(d["drain"], dk, {"start_time_us", "ramp_duration_us"})
                windows += drain_windows(int(self.num(dr, "start_time_us", dk, lo=0)),
                                         int(self.num(dr, "ramp_duration_us", dk, lo=1)))
            out += [self.client(m, j, key) for j, m in enumerate(members(d, pop, windows))]
        return out

    def inference_perf(self, d) -> list[Client]:
        key = "inference_perf"
        d = self.mapping(d, key, {"stages", "shared_prefix"})
        stages = d.get("stages")
        if not isinstance(stages, list) or not stages:
            raise self.err(f"{key}.stages", "give at least one {rate, duration}")
        st = []
        for j, s in enumerate(stages):
            s = self.mapping(s, f"{key}.stages[{j}]", {"rate", "duration"})
            where = f"{key}.stages[{j}]"
            st.append((float(self.num(s, "rate", where, lo=0, hi=MAX_RATE)),
                       float(self.num(s, "duration", where, lo=MIN_DURATION_S, hi=MAX_DURATION_S))))
        sk = f"{key}.shared_prefix"
        sp = self.mapping(d.get("shared_prefix"), sk,
                          {"num_unique_system_prompts", "num_users_per_system_prompt", "num_groups",
                           "num_prompts_per_group", "system_prompt_len", "question_len", "output_len",
                           "enable_multi_turn_chat"})
        gk = "num_unique_system_prompts" if "num_unique_system_prompts" in sp else "num_groups"
        uk = "num_users_per_system_prompt" if "num_users_per_system_prompt" in sp else "num_prompts_per_group"
        if sp.get(gk) is None or sp.get(uk) is None:
            raise self.err(sk, "give num_unique_system_prompts and num_users_per_system_prompt")
        groups, users = int(self.num(sp, gk, sk, lo=1, hi=MAX_USERS)), int(self.num(sp, uk, sk, lo=1, hi=MAX_USERS))
        self._ip_total = inference_perf_total(st)
        lengths = (int(self.num(sp, "system_prompt_len", sk, 0, 0, MAX_TOKENS)),
                   int(self.num(sp, "question_len", sk, lo=1, hi=MAX_TOKENS)),
                   int(self.num(sp, "output_len", sk, lo=1, hi=MAX_TOKENS)))
        if sp.get("enable_multi_turn_chat"):
            if groups * users * len(st) > MAX_COHORT_MEMBERS:
                raise self.err(f"{sk}.enable_multi_turn_chat", f"at most {MAX_COHORT_MEMBERS} conversations "
                                                               "(users x stages; each is a client of its own)")
            return inference_perf_chat_clients(groups, users, *lengths, st)
        return [inference_perf_client(groups, users, *lengths, st)]

    def workload(self, data) -> Workload:
        if not isinstance(data, dict):
            raise self.err("spec", "must be a YAML mapping")
        if data.get("servegen_data"):
            raise self.refused("servegen_data", "servegen_data")
        self.mapping(data, "", _TOP)
        version = str(data.get("version", "2"))
        if version not in ("1", "2"):
            raise self.err("version", f"must be \"1\" or \"2\" (got {version!r})")
        clients_raw = data.get("clients") or []
        if not isinstance(clients_raw, list):
            raise self.err("clients", "must be a list")
        clients = [self.client(c, i) for i, c in enumerate(clients_raw)]
        if data.get("cohorts") is not None:
            clients += self.cohorts(data["cohorts"])
        num = int(self.num(data, "num_requests", "spec", 0, 0, MAX_REQUESTS))
        if data.get("inference_perf") is not None:
            clients += self.inference_perf(data["inference_perf"])
            if not num and not clients_raw:
                num = self._ip_total
        if not clients:
            raise self.err("clients", "give at least one client (or cohorts, or inference_perf)")
        rate = float(self.num(data, "aggregate_rate", "spec", 0.0, 0, MAX_RATE))
        if rate <= 0 and any(c.kind == "open-loop" and c.arrival is not None and c.arrival.rate is None
                             and not isinstance(c.arrival, TimeVarying) for c in clients):
            raise self.refused("aggregate_rate = 0", "absolute")
        targets = {}
        for cls, t in self.mapping(data.get("goodput_slo_targets"), "goodput_slo_targets").items():
            t = self.mapping(t, f"goodput_slo_targets.{cls}", {"ttft_ms", "itl_ms", "e2e_ms"})
            targets[str(cls)] = {k: float(self.num(t, k, f"goodput_slo_targets.{cls}", lo=0)) for k in t}
        return Workload(clients=clients, num_requests=num,
                        horizon_us=int(self.num(data, "horizon", "spec", 0, 0)), rate=rate, slo_targets=targets)


def from_blis_spec(data: dict, where: str = "spec") -> Workload:
    """A Workload from a parsed BLIS workload-spec (v2, or v1 with its class names upgraded).
    Parts it refuses (model, slo_target_us, servegen_data, per-window rates, …) raise one ConfigError
    naming the key and the reason."""
    return _Spec(where).workload(data)


def load_blis_spec(path: str | Path) -> Workload:
    p = Path(path)
    if not p.is_file():
        raise ConfigError("trace", f"no such file: {p}")
    data = read_yaml(p, "trace")
    if data is None:
        raise ConfigError("trace", f"{p}: empty file")
    return from_blis_spec(data, str(p))
