"""Length distributions and arrival processes, sampled in vectorised chunks.

Every sampler draws from the numpy Generator it is given, so each client's lengths and
arrivals come from their own named streams.

Arrival processes have a shape (poisson, constant, gamma or weibull with a CV) and a rate. The
rate is either a constant (`rate`; None means "a share of the workload's rate", filled in by the
source) or a time-varying profile (`Stages`, `Diurnal`, `Spike`) wrapped with `TimeVarying`.

Time variation is implemented by *time rescaling*: the process is run at unit rate in
"operational time" L, and each arrival is mapped back to wall time t = Λ⁻¹(L), where
Λ(t) = ∫₀ᵗ rate(s) ds. For Poisson arrivals this is exactly an inhomogeneous Poisson process
(equivalent to thinning at the peak rate, without discarding draws); for constant arrivals the
spacing is exactly 1/rate inside each piece of constant rate (stages back to back: Σ rate·duration
arrivals, the first at 1/rate, the last at the stage end); gamma and weibull keep their CV locally.
Λ⁻¹ is exact for the piecewise-constant profiles and a vectorised bisection for the diurnal sine.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..limits import MAX_DURATION_S

CHUNK = 1024


# ---- token lengths --------------------------------------------------------------------------
@dataclass(frozen=True)
class Constant:
    value: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)

    @property
    def mean(self) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Gaussian:
    """round(clamp(N(mean, std), min, max))."""
    mean_: float
    std: float
    min: int = 1
    max: int = 1 << 30

    def sample(self, rng, n):
        x = rng.normal(self.mean_, self.std, n) if self.std > 0 else np.full(n, self.mean_)
        return np.rint(np.clip(x, self.min, self.max)).astype(np.int64)

    @property
    def mean(self) -> float:
        return float(self.mean_)


@dataclass(frozen=True)
class Exponential:
    """round(Exp(mean)), clamped to [min, max] (min at least 1)."""
    mean_: float
    min: int = 1
    max: int = 1 << 30

    def sample(self, rng, n):
        x = np.rint(rng.exponential(self.mean_, n))
        return np.clip(x, max(1, self.min), self.max).astype(np.int64)

    @property
    def mean(self) -> float:
        return float(self.mean_)


@dataclass(frozen=True)
class LogNormal:
    """round(exp(mu + sigma Z)), clamped to [min, max]."""
    mu: float
    sigma: float
    min: int = 1
    max: int = 1 << 30

    def sample(self, rng, n):
        x = np.rint(rng.lognormal(self.mu, self.sigma, n))
        return np.clip(x, max(1, self.min), self.max).astype(np.int64)

    @property
    def mean(self) -> float:
        return math.exp(self.mu + self.sigma ** 2 / 2)


@dataclass(frozen=True)
class Empirical:
    """Values with given probabilities (normalised), drawn by inverse CDF."""
    values: tuple[int, ...]
    probs: tuple[float, ...]

    def sample(self, rng, n):
        p = np.asarray(self.probs, dtype=float)
        cdf = np.cumsum(p / p.sum())
        idx = np.searchsorted(cdf, rng.random(n), side="right")
        return np.asarray(self.values, dtype=np.int64)[np.minimum(idx, len(self.values) - 1)]

    @property
    def mean(self) -> float:
        p = np.asarray(self.probs, dtype=float)
        return float(np.dot(self.values, p / p.sum()))


@dataclass(frozen=True)
class ParetoLogNormal:
    """BLIS's mixture: with probability mix_weight Pareto(alpha, xm), else lognormal(mu, sigma)."""
    alpha: float
    xm: float
    mu: float
    sigma: float
    mix_weight: float
    min: int = 1
    max: int = 1 << 30

    def sample(self, rng, n):
        u = rng.random(n)
        pareto = self.xm / np.power(1.0 - rng.random(n), 1.0 / self.alpha)
        logn = rng.lognormal(self.mu, self.sigma, n)
        x = np.rint(np.where(u < self.mix_weight, pareto, logn))
        return np.clip(x, max(1, self.min), self.max).astype(np.int64)

    @property
    def mean(self) -> float:
        pm = self.alpha * self.xm / (self.alpha - 1) if self.alpha > 1 else math.inf
        return self.mix_weight * pm + (1 - self.mix_weight) * math.exp(self.mu + self.sigma ** 2 / 2)


@dataclass(frozen=True)
class Multimodal:
    """BLIS's multimodal prompt, used as an input-length distribution: text tokens plus, for each
    modality (image, audio, video), a count of items each of a drawn number of tokens. The
    counts, like every length, are at least 1 (BLIS's samplers floor at 1); the whole prompt too.
    `items` is ((modality, count distribution, tokens-per-item distribution), ...)."""
    text: object = None
    items: tuple = ()

    def sample(self, rng, n):
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        total = self.text.sample(rng, n) if self.text is not None else np.zeros(n, dtype=np.int64)
        for _, count, tokens in self.items:
            k = np.maximum(1, count.sample(rng, n))
            per_item = np.maximum(1, tokens.sample(rng, int(k.sum())))
            total = total + np.add.reduceat(per_item, np.concatenate(([0], np.cumsum(k)[:-1])))
        return np.maximum(1, total)

    @property
    def mean(self) -> float:
        text = self.text.mean if self.text is not None else 0.0
        return text + sum(max(1.0, c.mean) * max(1.0, t.mean) for _, c, t in self.items)


# ---- think times ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThinkTime:
    """A think-time distribution in seconds, sampled as whole microseconds (never negative).

    dist: constant (value) | exponential (mean) | gaussian (mean, std) | lognormal (mu, sigma of
    ln seconds) | uniform (min, max); min/max clamp the others.
    """
    dist: str = "constant"
    value: float = 0.0
    mean_: float = 0.0
    std: float = 0.0
    mu: float = 0.0
    sigma: float = 0.0
    min: float = 0.0
    max: float = math.inf

    @staticmethod
    def of(x) -> ThinkTime:
        """A ThinkTime from a number of seconds (constant) or a ThinkTime."""
        if isinstance(x, ThinkTime):
            return x
        return ThinkTime("constant", value=float(x))

    def sample_us(self, rng: np.random.Generator, n: int) -> np.ndarray:
        d = self.dist
        if d == "constant":
            x = np.full(n, self.value)
        elif d == "exponential":
            x = rng.exponential(self.mean_, n)
        elif d == "gaussian":
            x = rng.normal(self.mean_, self.std, n)
        elif d == "lognormal":
            x = rng.lognormal(self.mu, self.sigma, n)
        elif d == "uniform":
            x = rng.uniform(self.min, self.max, n)
        else:
            raise ValueError(f"unknown think-time distribution {d!r}")
        x = np.clip(x, max(0.0, self.min), min(self.max, MAX_DURATION_S))
        return np.rint(x * 1e6).astype(np.int64)

    @property
    def mean(self) -> float:
        """Mean in seconds (before clamping)."""
        d = self.dist
        if d == "constant":
            return self.value
        if d in ("exponential", "gaussian"):
            return self.mean_
        if d == "lognormal":
            return math.exp(self.mu + self.sigma ** 2 / 2)
        return (self.min + self.max) / 2


# ---- arrival processes ------------------------------------------------------------------------
def _need_rate(p) -> float:
    if p.rate is None or p.rate <= 0:
        raise ValueError(f"{type(p).__name__} has no rate: give it one, or give the workload a rate")
    return p.rate


class _Stationary:
    """Shared by the four stationary processes: a fixed `rate` (or None: a share of the workload's)."""

    def with_rate(self, rate: float):
        return replace(self, rate=rate)

    def clock(self) -> _Clock:
        return _StationaryClock(self)


@dataclass(frozen=True)
class ConstantArrivals(_Stationary):
    """Inter-arrival times of exactly 1/rate (the first arrival at 1/rate)."""
    rate: float | None = None

    def gaps_us(self, rng, n):
        return np.full(n, max(1, int(1e6 / _need_rate(self))), dtype=np.int64)

    def unit_gaps(self, rng, n):
        return np.ones(n)


@dataclass(frozen=True)
class PoissonArrivals(_Stationary):
    rate: float | None = None

    def gaps_us(self, rng, n):
        return np.maximum(1, (rng.exponential(1e6 / _need_rate(self), n)).astype(np.int64))

    def unit_gaps(self, rng, n):
        return rng.exponential(1.0, n)


@dataclass(frozen=True)
class GammaArrivals(_Stationary):
    """Gamma inter-arrivals with the given coefficient of variation (burstier for cv > 1)."""
    rate: float | None = None
    cv: float = 1.0

    def gaps_us(self, rng, n):
        shape = 1.0 / (self.cv ** 2)
        scale = (1e6 / _need_rate(self)) * self.cv ** 2
        return np.maximum(1, rng.gamma(shape, scale, n).astype(np.int64))

    def unit_gaps(self, rng, n):
        return rng.gamma(1.0 / self.cv ** 2, self.cv ** 2, n)


def weibull_cv(k: float) -> float:
    """The coefficient of variation of a Weibull distribution of shape k."""
    g1 = math.gamma(1 + 1 / k)
    return math.sqrt(math.gamma(1 + 2 / k) / (g1 * g1) - 1)


def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k whose CV is `cv` (bisection; CV falls as k grows)."""
    lo, hi = 0.1, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if weibull_cv(mid) > cv:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class WeibullArrivals(_Stationary):
    rate: float | None = None
    cv: float = 1.0

    def gaps_us(self, rng, n):
        k = weibull_shape_for_cv(self.cv)
        scale = (1e6 / _need_rate(self)) / math.gamma(1 + 1 / k)
        return np.maximum(1, (scale * rng.weibull(k, n)).astype(np.int64))

    def unit_gaps(self, rng, n):
        k = weibull_shape_for_cv(self.cv)
        return rng.weibull(k, n) / math.gamma(1 + 1 / k)


# ---- activity windows -------------------------------------------------------------------------
class Windows:
    """A client's activity windows [start, end) in µs (BLIS's lifecycle windows), merged where
    they overlap: arrivals outside them are dropped, and none come after the last one ends."""

    def __init__(self, windows):
        merged: list[list[int]] = []
        for s, e in sorted((int(s), int(e)) for s, e in windows):
            if e <= s:
                raise ValueError(f"window [{s}, {e}) µs is empty: end must be after start")
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        if not merged:
            raise ValueError("give at least one window")
        self.spans = tuple((s, e) for s, e in merged)
        self._starts = np.array([s for s, _ in merged], dtype=np.int64)
        self._ends = np.array([e for _, e in merged], dtype=np.int64)
        self.end = int(self._ends[-1])

    def active(self, t: np.ndarray) -> np.ndarray:
        """Which times (µs) fall inside a window."""
        i = np.searchsorted(self._starts, t, side="right") - 1
        return (i >= 0) & (t < self._ends[np.maximum(i, 0)])

    def overlaps(self, other: Windows | None) -> bool:
        """Whether some window of each overlaps (None: always active, overlaps everything)."""
        return other is None or any(a < d and c < b for a, b in self.spans for c, d in other.spans)

    def __eq__(self, other):
        return isinstance(other, Windows) and other.spans == self.spans

    def __repr__(self):
        return f"Windows({list(self.spans)})"


# ---- time-varying rate profiles ---------------------------------------------------------------
class _Piecewise:
    """A piecewise-constant rate: segment k runs from starts[k] at rates[k]; `end` (seconds) is
    where the last segment stops (math.inf: it never does)."""

    def _setup(self, starts, rates, end):
        self._starts = np.asarray(starts, dtype=float)
        self._rates = np.asarray(rates, dtype=float)
        ends = np.append(self._starts[1:], end)
        widths = np.where(np.isinf(ends), 0.0, ends - self._starts)
        self._cum = np.concatenate(([0.0], np.cumsum(self._rates * widths)))[:-1]
        self._end = end
        self._total = self._cum[-1] + self._rates[-1] * (end - self._starts[-1]) if math.isfinite(end) else math.inf

    def invert(self, L: np.ndarray) -> np.ndarray:
        """Wall time (s) at which the cumulative rate reaches L (inf past the end)."""
        idx = np.clip(np.searchsorted(self._cum, L, side="left") - 1, 0, len(self._cum) - 1)
        r = self._rates[idx]
        safe = np.where(r > 0, r, 1.0)
        t = np.where(r > 0, self._starts[idx] + (L - self._cum[idx]) / safe, self._starts[idx])
        if math.isfinite(self._total):
            t = np.where(L > self._total * (1 + 1e-12), np.inf, np.minimum(t, self._end))
        elif self._rates[-1] <= 0:
            t = np.where(L > self._cum[-1], np.inf, t)
        return t

    def total(self) -> float:
        """Expected number of arrivals over the whole profile (inf if unbounded)."""
        return self._total

    @property
    def finite(self) -> bool:
        return math.isfinite(self._total)


class Stages(_Piecewise):
    """Rates held for durations, back to back from t = 0; no arrivals after the last stage."""

    def __init__(self, stages):
        self.stages = tuple((float(r), float(d)) for r, d in stages)
        if not self.stages:
            raise ValueError("stages: give at least one {rate, duration_s}")
        if any(r < 0 or d <= 0 for r, d in self.stages):
            raise ValueError("stages: rates must be >= 0 and durations > 0")
        starts = np.concatenate(([0.0], np.cumsum([d for _, d in self.stages])))
        self._setup(starts[:-1], [r for r, _ in self.stages], float(starts[-1]))

    def scaled(self, f: float) -> Stages:
        return Stages([(r * f, d) for r, d in self.stages])

    def __eq__(self, other):
        return isinstance(other, Stages) and other.stages == self.stages

    def __repr__(self):
        return f"Stages({list(self.stages)})"


class Spike(_Piecewise):
    """A base rate, replaced by `rate` inside each window (start_s, duration_s, rate)."""

    def __init__(self, base: float, windows):
        self.base = float(base)
        self.windows = tuple(sorted((float(s), float(d), float(r)) for s, d, r in windows))
        starts, rates = [0.0], [self.base]
        t = 0.0
        for s, d, r in self.windows:
            if s < t or d <= 0 or r < 0 or s < 0:
                raise ValueError("spike windows must not overlap and need duration_s > 0, rate >= 0")
            if s > t:
                starts.append(s)
                rates.append(r)
            else:                       # window at t == 0 (or back to back): replace the last piece
                rates[-1] = r
            starts.append(s + d)
            rates.append(self.base)
            t = s + d
        self._setup(starts, rates, math.inf)

    def scaled(self, f: float) -> Spike:
        return Spike(self.base * f, [(s, d, r * f) for s, d, r in self.windows])

    def __eq__(self, other):
        return isinstance(other, Spike) and (other.base, other.windows) == (self.base, self.windows)

    def __repr__(self):
        return f"Spike({self.base}, {list(self.windows)})"


@dataclass(frozen=True)
class Diurnal:
    """rate(t) = mean·(1 + amplitude·sin(2π(t − peak_offset_s)/period_s)), amplitude in [0, 1]."""
    mean: float
    amplitude: float
    period_s: float = 86400.0
    peak_offset_s: float = 0.0

    finite = False

    def scaled(self, f: float) -> Diurnal:
        return replace(self, mean=self.mean * f)

    def rate(self, t):
        return self.mean * (1 + self.amplitude * np.sin(2 * np.pi * (np.asarray(t) - self.peak_offset_s)
                                                        / self.period_s))

    def cumulative(self, t):
        w = 2 * np.pi / self.period_s
        c0 = math.cos(-w * self.peak_offset_s)
        return self.mean * (t + self.amplitude / w * (c0 - np.cos(w * (np.asarray(t) - self.peak_offset_s))))

    def invert(self, L: np.ndarray) -> np.ndarray:
        L = np.asarray(L, dtype=float)
        if self.mean <= 0:
            return np.full(L.shape, np.inf)
        if self.amplitude == 0:
            return L / self.mean
        slack = self.amplitude * self.period_s / np.pi + 1.0
        lo = np.maximum(0.0, L / self.mean - slack)
        hi = L / self.mean + slack
        for _ in range(64):                 # Λ is non-decreasing: bisection, all targets at once
            mid = (lo + hi) / 2
            below = self.cumulative(mid) < L
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
        return hi

    def total(self) -> float:
        return math.inf


@dataclass(frozen=True)
class TimeVarying:
    """A process shape (its rate is ignored) driven by a rate profile, by time rescaling."""
    process: object
    profile: object
    rate = None                         # an absolute profile: never filled in from the workload

    def clock(self) -> _Clock:
        return _RescaledClock(self)

    def with_rate(self, rate: float):
        raise ValueError("a time-varying arrival process has its own rates")


class _Clock:
    done = False


class _StationaryClock(_Clock):
    """Cumulative sums of the process's µs gaps (the draws of the original generator)."""

    def __init__(self, proc):
        self.proc = proc
        self.t = 0

    def take(self, rng, n: int) -> np.ndarray:
        times = self.t + self.proc.gaps_us(rng, n).cumsum()
        self.t = int(times[-1])
        return times


class _RescaledClock(_Clock):
    def __init__(self, tv: TimeVarying):
        self.tv = tv
        self.L = 0.0

    def take(self, rng, n: int) -> np.ndarray:
        if self.done:
            return np.empty(0, dtype=np.int64)
        L = self.L + np.cumsum(self.tv.process.unit_gaps(rng, n))
        self.L = float(L[-1])
        t = self.tv.profile.invert(L)
        ok = np.isfinite(t)
        if not ok.all():
            self.done = True
            t = t[:int(np.argmin(ok))]
        return np.rint(t * 1e6).astype(np.int64)


_PROCESSES = {"poisson": PoissonArrivals, "constant": ConstantArrivals, "gamma": GammaArrivals,
              "weibull": WeibullArrivals}


def make_arrivals(process: str = "poisson", rate: float | None = None, cv: float | None = None,
                  stages=None, diurnal: Diurnal | None = None, spike: Spike | None = None):
    """An arrival process from its parts. `stages` is a list of (rate, duration_s); `diurnal` and
    `spike` are profiles; with none of them, `rate` (None: a share of the workload's rate)."""
    cls = _PROCESSES.get(process)
    if cls is None:
        raise ValueError(f"unknown arrival process {process!r}; use one of {sorted(_PROCESSES)}")
    shape = cls(rate) if cls in (PoissonArrivals, ConstantArrivals) else cls(rate, 1.0 if cv is None else cv)
    profiles = [p for p in (Stages(stages) if stages else None, diurnal, spike) if p is not None]
    if len(profiles) > 1:
        raise ValueError("give at most one of stages, diurnal and spike")
    return TimeVarying(shape, profiles[0]) if profiles else shape
