"""What the caller hands a router on every call (`RouterContext`), and a plain one for tests,
notebooks and external agents (`SimpleContext`)."""
from __future__ import annotations

import numpy as np

from blis_gym.sim.slots import RouterContext

__all__ = ["RouterContext", "SimpleContext"]


class SimpleContext:
    """A plain RouterContext.

    `cached` is either a callable (req, pod_index) -> int or a dict pod_index -> int (the same
    count for every request); missing pods have 0 cached blocks.
    """
    __slots__ = ("now", "rng", "_cached")

    def __init__(self, now: int = 0, rng: np.random.Generator | int | None = 0, cached=None):
        self.now = now
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._cached = cached

    def cached_blocks(self, req, pod_index: int) -> int:
        c = self._cached
        if c is None:
            return 0
        if callable(c):
            return int(c(req, pod_index))
        return int(c.get(pod_index, 0))
