"""Which LoRA adapter a client's requests name: one fixed adapter, or one of `count` adapters
drawn per request (per session, per closed-loop user) uniformly or by a Zipf law.

Draws come from the client's own stream `adapters/<client>`, which exists only for clients
with several adapters, so a workload without adapters draws exactly what it drew before.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.lora import Adapter
from .distributions import CHUNK


@dataclass(frozen=True)
class AdapterSet:
    """`adapters` in order; `weights` their probabilities (None: uniform)."""
    adapters: tuple[Adapter, ...]
    weights: tuple[float, ...] | None = None

    @classmethod
    def many(cls, names: list[str], rank: int, distribution: str = "uniform", zipf_s: float = 1.0) -> "AdapterSet":
        ads = tuple(Adapter(n, rank) for n in names)
        if distribution == "uniform" or len(ads) == 1:
            return cls(ads)
        w = 1.0 / np.arange(1, len(ads) + 1, dtype=float) ** zipf_s
        return cls(ads, tuple((w / w.sum()).tolist()))

    def sampler(self, rng_of):
        """A function returning the next request's adapter; `rng_of()` gives the stream (asked
        only when there is a choice to make)."""
        ads = self.adapters
        if len(ads) == 1:
            only = ads[0]
            return lambda: only
        return _Draws(ads, self.weights, rng_of())


class _Draws:
    __slots__ = ("ads", "p", "rng", "buf", "i")

    def __init__(self, ads, p, rng):
        self.ads = ads
        self.p = None if p is None else np.asarray(p)
        self.rng = rng
        self.buf: list[int] = []
        self.i = 0

    def __call__(self) -> Adapter:
        if self.i >= len(self.buf):
            self.buf = self.rng.choice(len(self.ads), size=CHUNK, p=self.p).tolist()
            self.i = 0
        k = self.buf[self.i]
        self.i += 1
        return self.ads[k]


def intern_adapters(clients) -> None:
    """Make every client naming an adapter use the workload's one Adapter object of that name
    (instances count adapters by object). The same name with two ranks is a ConfigError."""
    from dataclasses import replace

    from ...errors import ConfigError
    seen: dict[str, tuple[Adapter, str]] = {}
    for c in clients:
        if c.adapters is None:
            continue
        ads = []
        for a in c.adapters.adapters:
            got = seen.get(a.name)
            if got is None:
                seen[a.name] = (a, c.name)
                ads.append(a)
            elif got[0].rank != a.rank:
                raise ConfigError(f"workload.clients.{c.name}.adapter",
                                  f"adapter {a.name!r} has rank {a.rank} here but rank {got[0].rank} in client "
                                  f"{got[1]!r}; one adapter has one rank")
            else:
                ads.append(got[0])
        c.adapters = replace(c.adapters, adapters=tuple(ads))


def workload_adapters(clients) -> list[tuple[str, Adapter]]:
    """(client name, adapter) for every adapter a client names, in client order."""
    return [(c.name, a) for c in clients if c.adapters is not None for a in c.adapters.adapters]
