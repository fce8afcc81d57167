"""The distributions a `workload:` section names, as pydantic models, and their conversion to
the simulator's (blis_gym.sim.workload.distributions):

- lengths (tokens): `{dist: constant|gaussian|exponential|lognormal|empirical, ...}`, the
  ranged ones clamped to [min, max];
- think times (seconds): a number, or `{dist: constant|exponential|gaussian|lognormal|uniform, ...}`;
- arrivals: `{process: poisson|constant|gamma|weibull, cv}` with at most one rate profile
  (`stages`, `diurnal` or `spike`).

One model per distribution, so a parameter the distribution does not use is an unknown field.
"""
from __future__ import annotations

import math
from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .bounded import Offset, PositiveSeconds, Rate, RateOrZero, Seconds, Strict, Tokens
from ..errors import ConfigError
from ..sim.limits import MAX_DURATION_S
from ..sim.workload import distributions as d

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
# lognormal parameters: bounded so that the mean exp(mu + sigma²/2) stays a finite float
LogMu = Annotated[float, Field(ge=-50, le=50)]
LogSigma = Annotated[float, Field(ge=0, le=10)]


class _Ranged(Strict):
    """A length distribution clamped to [min, max]."""
    min: Tokens = 1
    max: Tokens = 1 << 30

    @model_validator(mode="after")
    def _range(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


# ---- lengths --------------------------------------------------------------------------------
class ConstantLen(Strict):
    dist: Literal["constant"]
    value: Tokens


class GaussianLen(_Ranged):
    dist: Literal["gaussian"]
    mean: PositiveFloat
    std: NonNegFloat = 0.0


class ExponentialLen(_Ranged):
    dist: Literal["exponential"]
    mean: PositiveFloat


class LogNormalLen(_Ranged):
    """round(exp(mu + sigma·Z)) tokens."""
    dist: Literal["lognormal"]
    mu: LogMu
    sigma: LogSigma


class EmpiricalLen(Strict):
    """pmf: {tokens: probability} (normalised)."""
    dist: Literal["empirical"]
    pmf: dict[Tokens, NonNegFloat]

    @model_validator(mode="after")
    def _mass(self):
        if not self.pmf or sum(self.pmf.values()) <= 0:
            raise ValueError("pmf needs at least one token count with a positive probability")
        return self


LengthSpec = Annotated[ConstantLen | GaussianLen | ExponentialLen | LogNormalLen | EmpiricalLen,
                       Field(discriminator="dist")]


def length(spec):
    if spec.dist == "constant":
        return d.Constant(spec.value)
    if spec.dist == "gaussian":
        return d.Gaussian(spec.mean, spec.std, spec.min, spec.max)
    if spec.dist == "exponential":
        return d.Exponential(spec.mean, spec.min, spec.max)
    if spec.dist == "lognormal":
        return d.LogNormal(spec.mu, spec.sigma, spec.min, spec.max)
    items = sorted(spec.pmf.items())
    return d.Empirical(tuple(k for k, _ in items), tuple(v for _, v in items))


# ---- think times (seconds) --------------------------------------------------------------------
# One model per distribution, so a parameter the distribution does not use is an unknown field.
class _ThinkRange(Strict):
    """Draws clamped to [min, max] seconds (max: none)."""
    min: Seconds = 0.0
    max: Seconds | None = None

    @model_validator(mode="after")
    def _range(self):
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    def _think(self, dist: str, **params) -> d.ThinkTime:
        return d.ThinkTime(dist, min=self.min, max=math.inf if self.max is None else self.max, **params)


class ConstantThink(Strict):
    dist: Literal["constant"]
    value: Seconds

    def build(self) -> d.ThinkTime:
        return d.ThinkTime("constant", value=self.value)


class ExponentialThink(_ThinkRange):
    dist: Literal["exponential"]
    mean: Seconds

    def build(self) -> d.ThinkTime:
        return self._think("exponential", mean_=self.mean)


class GaussianThink(_ThinkRange):
    dist: Literal["gaussian"]
    mean: Seconds
    std: Seconds = 0.0

    def build(self) -> d.ThinkTime:
        return self._think("gaussian", mean_=self.mean, std=self.std)


class LogNormalThink(_ThinkRange):
    """exp(mu + sigma·Z) seconds."""
    dist: Literal["lognormal"]
    mu: LogMu
    sigma: LogSigma

    def build(self) -> d.ThinkTime:
        return self._think("lognormal", mu=self.mu, sigma=self.sigma)


class UniformThink(_ThinkRange):
    dist: Literal["uniform"]
    max: Seconds

    def build(self) -> d.ThinkTime:
        return self._think("uniform")


ThinkSpec = Union[Seconds, Annotated[ConstantThink | ExponentialThink | GaussianThink | LogNormalThink
                                     | UniformThink, Field(discriminator="dist")]]


def think(spec) -> d.ThinkTime:
    """The simulator's think time for a number of seconds or a distribution."""
    return d.ThinkTime.of(spec) if isinstance(spec, (int, float)) else spec.build()


# ---- arrivals ---------------------------------------------------------------------------------
class StageSpec(Strict):
    rate: RateOrZero
    duration_s: PositiveSeconds


class DiurnalSpec(Strict):
    """rate(t) = mean·(1 + amplitude·sin(2π(t − peak_offset_s)/period_s)); mean defaults to the rate."""
    amplitude: Annotated[float, Field(ge=0, le=1)]
    period_s: PositiveSeconds = 86400.0
    peak_offset_s: Offset = 0.0
    mean: Rate | None = None


class SpikeWindowSpec(Strict):
    start_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S)]
    duration_s: PositiveSeconds
    rate: RateOrZero


class SpikeSpec(Strict):
    """The base rate (defaults to the rate), replaced by each window's rate inside it."""
    base_rate: RateOrZero | None = None
    windows: Annotated[list[SpikeWindowSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _no_overlap(self):
        ws = sorted((w.start_s, w.start_s + w.duration_s) for w in self.windows)
        for (_, e), (s, _) in zip(ws, ws[1:]):
            if s < e:
                raise ValueError("spike windows must not overlap")
        return self


class ArrivalSpec(Strict):
    process: Literal["poisson", "constant", "gamma", "weibull"] = "poisson"
    cv: Annotated[float, Field(ge=0.01, le=100)] | None = None
    stages: Annotated[list[StageSpec], Field(min_length=1)] | None = None
    diurnal: DiurnalSpec | None = None
    spike: SpikeSpec | None = None

    @model_validator(mode="after")
    def _ok(self):
        if sum(x is not None for x in (self.stages, self.diurnal, self.spike)) > 1:
            raise ValueError("give at most one of stages, diurnal and spike")
        if self.cv is not None and self.process not in ("gamma", "weibull"):
            raise ValueError(f"cv applies to gamma and weibull arrivals, not {self.process}")
        if self.process == "weibull" and self.cv is not None and not 0.01 <= self.cv <= 10.4:
            raise ValueError("weibull cv must be in [0.01, 10.4]")
        return self

    @property
    def has_profile(self) -> bool:
        return self.stages is not None or self.diurnal is not None or self.spike is not None

    def shape(self, rate: float | None = None):
        return d.make_arrivals(self.process, rate, self.cv)

    def profile(self, rate: float | None, where: str):
        """The rate profile (None without one); diurnal/spike default to `rate`."""
        if self.stages is not None:
            return d.Stages([(s.rate, s.duration_s) for s in self.stages])
        if self.diurnal is not None:
            mean = self.diurnal.mean or rate
            if not mean:
                raise ConfigError(f"{where}.diurnal.mean", "give a mean (or a rate)")
            return d.Diurnal(mean, self.diurnal.amplitude, self.diurnal.period_s, self.diurnal.peak_offset_s)
        if self.spike is not None:
            base = self.spike.base_rate if self.spike.base_rate is not None else rate
            if base is None:
                raise ConfigError(f"{where}.spike.base_rate", "give a base_rate (or a rate)")
            return d.Spike(base, [(w.start_s, w.duration_s, w.rate) for w in self.spike.windows])
        return None
