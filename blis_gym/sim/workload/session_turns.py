"""How many turns a session has, when that varies from session to session (agent sessions):
each sampler draws integers in [min, max] (max sizes the turns drawn ahead for a session)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UniformTurns:
    min: int
    max: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.min, self.max + 1, n)


@dataclass(frozen=True)
class GeometricTurns:
    """The agent stops after each turn with probability 1/mean (mean turns before the cap)."""
    mean: float
    max: int
    min: int = 1

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.clip(rng.geometric(1.0 / self.mean, n), self.min, self.max)
