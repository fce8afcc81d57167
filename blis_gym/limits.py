"""The bounds of every scenario field, as pydantic types (documented in docs/scenarios.md).

The simulator keeps time in whole microseconds, so a duration is either 0 (where 0 has a
meaning: no timeout, oracle signals, no delay) or between 1 µs and MAX_DURATION_S; anything
shorter would round to 0 and could reschedule a periodic event at the same instant forever.
Counts and sizes have upper bounds that keep a run inside memory and time, and every float
is finite (the models set `allow_inf_nan=False`).
"""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

MAX_DURATION_S = 1e7           # about 116 days of simulated time
MIN_DURATION_S = 1e-6          # the simulator's tick
MIN_SAMPLE_INTERVAL_S = 1e-3   # time-series rows: at most 1,000 per simulated second
MIN_AUTOSCALER_INTERVAL_S = 0.1   # a control loop, not a per-request decision
MAX_WINDOW_TICKS = 100_000     # an autoscaler's stabilization window, in ticks
MIN_RATE = 1e-3                # requests per second (one every ~17 minutes)
MAX_RATE = 1e6                 # one request per microsecond
MAX_INSTANCES = 4096           # per pool (slots up to max_instances) and cluster.instances
MAX_USERS = 1_000_000          # closed-loop users of one client
MAX_TURNS = 10_000             # turns of one session
MAX_REQUESTS = 100_000_000     # about 300 bytes of memory per request
MAX_TOKENS = 1 << 30           # a prompt or output length
MAX_COUNT = 1 << 31            # other integer sizes (KV blocks, queue capacities, batch limits)
MAX_SEED = (1 << 63) - 1


def _duration(unit: str, scale: float, zero_ok: bool, low_s: float = MIN_DURATION_S):
    lo, hi = low_s * scale, MAX_DURATION_S * scale

    def check(v: float) -> float:
        if v == 0 and zero_ok:
            return v
        if not lo <= v <= hi:
            zero = "0 or " if zero_ok else ""
            raise ValueError(f"must be {zero}between {lo:g} and {hi:g} {unit} (got {v:g})")
        return v
    return Annotated[float, AfterValidator(check)]


Seconds = _duration("s", 1.0, zero_ok=True)              # 0 or [1 µs, MAX_DURATION_S]
PositiveSeconds = _duration("s", 1.0, zero_ok=False)
Millis = _duration("ms", 1e3, zero_ok=True)
PositiveMillis = _duration("ms", 1e3, zero_ok=False)
SampleInterval = _duration("s", 1.0, zero_ok=True, low_s=MIN_SAMPLE_INTERVAL_S)
Offset = Annotated[float, Field(ge=-MAX_DURATION_S, le=MAX_DURATION_S)]   # seconds, either sign

Rate = Annotated[float, Field(ge=MIN_RATE, le=MAX_RATE)]                # req/s, > 0


def _rate_or_zero(v: float) -> float:
    if v != 0 and not MIN_RATE <= v <= MAX_RATE:
        raise ValueError(f"must be 0 or between {MIN_RATE:g} and {MAX_RATE:g} req/s (got {v:g})")
    return v


RateOrZero = Annotated[float, AfterValidator(_rate_or_zero)]             # a stage or window may be idle
Tokens = Annotated[int, Field(gt=0, le=MAX_TOKENS)]
TokensOrZero = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Count = Annotated[int, Field(gt=0, le=MAX_COUNT)]
CountOrZero = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Instances = Annotated[int, Field(gt=0, le=MAX_INSTANCES)]
InstancesOrZero = Annotated[int, Field(ge=0, le=MAX_INSTANCES)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
