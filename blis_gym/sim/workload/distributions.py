"""Length distributions and arrival processes, sampled in vectorised chunks.

Every sampler draws from the numpy Generator it is given, so each client's lengths and
arrivals come from their own named streams.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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


# ---- arrival processes ------------------------------------------------------------------------
@dataclass(frozen=True)
class ConstantArrivals:
    """Inter-arrival times of exactly 1/rate (the first arrival at 1/rate)."""
    rate: float

    def gaps_us(self, rng, n):
        return np.full(n, max(1, int(1e6 / self.rate)), dtype=np.int64)


@dataclass(frozen=True)
class PoissonArrivals:
    rate: float

    def gaps_us(self, rng, n):
        return np.maximum(1, (rng.exponential(1e6 / self.rate, n)).astype(np.int64))


@dataclass(frozen=True)
class GammaArrivals:
    """Gamma inter-arrivals with the given coefficient of variation (burstier for cv > 1)."""
    rate: float
    cv: float

    def gaps_us(self, rng, n):
        shape = 1.0 / (self.cv ** 2)
        scale = (1e6 / self.rate) * self.cv ** 2
        return np.maximum(1, rng.gamma(shape, scale, n).astype(np.int64))


def weibull_shape_for_cv(cv: float) -> float:
    """Weibull shape k whose CV is `cv` (bisection; CV falls as k grows)."""
    def cv_of(k: float) -> float:
        g1 = math.gamma(1 + 1 / k)
        return math.sqrt(math.gamma(1 + 2 / k) / (g1 * g1) - 1)
    lo, hi = 0.1, 100.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if cv_of(mid) > cv:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class WeibullArrivals:
    rate: float
    cv: float

    def gaps_us(self, rng, n):
        k = weibull_shape_for_cv(self.cv)
        scale = (1e6 / self.rate) / math.gamma(1 + 1 / k)
        return np.maximum(1, (scale * rng.weibull(k, n)).astype(np.int64))
