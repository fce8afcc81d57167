"""Hand-written rules over a slot's heuristic, for `python agents/analysis.py rules` (policies
`rules:NAME`, each `f(obs, info, env) -> action` as `blis-gym eval` takes them): how much a
learned residual could gain on training data. Each reads the heuristic's own decision from the
environment (`heuristic_action`), so play it with `--residual-over` set to that heuristic.
"""
from __future__ import annotations

import math


def _uncached_tokens(obs, env) -> float:
    """The P/D observation's last feature: log1p(uncached prompt tokens) / log1p(max input)."""
    return math.expm1(float(obs[-1]) * env.unwrapped.observer.log_max_in)


def _pd_uncached_over(tokens: int):
    def decide(obs, info, env) -> int:
        """Disaggregate (1) when the decode pod would prefill more than `tokens` uncached tokens."""
        return int(_uncached_tokens(obs, env) > tokens)
    return decide


pd_uncached_500, pd_uncached_1000, pd_uncached_2000, pd_uncached_3000, pd_uncached_4000, pd_uncached_6000 = (
    _pd_uncached_over(t) for t in (500, 1000, 2000, 3000, 4000, 6000))


def follow(obs, info, env) -> int:
    """The scenario's built-in policy, asked as a residual agent asks it."""
    u = env.unwrapped
    return u.heuristic_action(u.pending)


def _shed_long_when_full(tokens: int, kv: float):
    def decide(obs, info, env) -> int:
        """The built-in admission's decision, but reject (0) an admitted prompt of more than
        `tokens` tokens when every present pod has a waiting queue or KV use >= `kv`."""
        u = env.unwrapped
        p = u.pending
        a = u.heuristic_action(p)
        if a != 1 or p.request.input_len <= tokens:
            return a
        names = {n: i for i, n in enumerate(u.observer.feature_names())}
        pods = [i for i in range(u.observer.max_pods) if obs[names[f"pod{i}.presence"]] > 0]
        full = all(obs[names[f"pod{i}.waiting"]] > 0 or obs[names[f"pod{i}.kv"]] >= kv for i in pods)
        return 0 if full else a
    return decide


shed_long_2k_kv70 = _shed_long_when_full(2048, 0.7)
shed_long_4k_kv80 = _shed_long_when_full(4096, 0.8)
shed_long_4k_kv90 = _shed_long_when_full(4096, 0.9)
shed_long_8k_kv80 = _shed_long_when_full(8192, 0.8)
