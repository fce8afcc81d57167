"""Pickers: (totals, rng) -> the chosen position among the candidates."""
from __future__ import annotations

from typing import Callable


def pick_max_score(totals: list[float], rng) -> int:
    """Argmax with a uniform random tie-break (llm-d: shuffle, stable sort, take first). The RNG
    is drawn only when there is a tie."""
    best = max(totals)
    n_best = totals.count(best)
    if n_best == 1:
        return totals.index(best)
    k = int(rng.random() * n_best)
    for i, t in enumerate(totals):
        if t == best:
            if k == 0:
                return i
            k -= 1
    return totals.index(best)  # pragma: no cover


def pick_random(totals: list[float], rng) -> int:
    return int(rng.random() * len(totals))


def pick_weighted_random(totals: list[float], rng) -> int:
    """A-Res: key = U^(1/score), take the max key; pods with score <= 0 only if all are."""
    n = len(totals)
    u = rng.random(n)
    best, best_key = -1, -1.0
    for i in range(n):
        s = totals[i]
        if s > 0.0:
            key = float(u[i]) ** (1.0 / s)
            if key > best_key:
                best, best_key = i, key
    if best < 0:
        return int(u[0] * n)
    return best


PICKERS: dict[str, Callable] = {
    "max-score": pick_max_score, "random": pick_random, "weighted-random": pick_weighted_random,
}
PICKER_ALIASES: dict[str, str] = {
    "max-score-picker": "max-score", "random-picker": "random", "weighted-random-picker": "weighted-random",
}
