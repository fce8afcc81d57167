"""The scenario schema's base model and bounded field types (pydantic), built from the numbers
in blis_gym.sim.limits."""
from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ..sim.limits import (MAX_COUNT, MAX_DURATION_S, MAX_INSTANCES, MAX_RATE, MAX_SEED, MAX_TOKENS, MIN_DURATION_S,
                     MIN_RATE, MIN_SAMPLE_INTERVAL_S)


class Strict(BaseModel):
    """A scenario section: unknown fields are errors, every float is finite, -0.0 is 0 (numpy
    refuses a scale of -0.0) and every string is valid Unicode (it is written to CSV and JSON)."""
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _clean(cls, v):
        if isinstance(v, float) and v == 0:
            return 0.0
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
        return v


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
