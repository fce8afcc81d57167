"""EDPP: an Empirical Drift-Plus-Penalty P/D decider (Lyapunov optimisation).

The P/D case study of the BLIS blog compares llm-d's queue-blind prefix threshold with EDPP,
which reads how loaded the two pools are and how the requests it disaggregated actually fared.
This is our instantiation of that description (the blog gives the ingredients, not the formula).

State, all updated from what the gateway sees:

- `Qd`: the prefill backlog of the chosen decode pod, `Qp`: the mean backlog of the available
  prefill pods. A backlog is the prompt tokens this decider sent to a pool, not cached where
  they were sent, whose request has not produced its first token yet, in units of one engine
  step's token budget. (The router's in-flight token counts include cached tokens, so they
  would see a backlog behind every long, fully cached conversation.)
- `Z`, the TTFT-deficit virtual queue: at each disaggregated request's first token,
  `Z <- max(0, Z + ttft / ttft_slo - 1)`: it grows while disaggregated requests miss the SLO and
  drains while they meet it.
- `w`, the decode pods' ITL pressure: `max(1, itl / itl_target)` with `itl` a moving average
  (weight 1/16) of the mean ITL of requests completed on decode pods. Prefill chunks in a decode
  batch stretch every running request's ITL, so decode backlog counts more while the decode
  pods miss the ITL target. (A ratio, not a second virtual queue: disaggregating cannot fix an
  ITL that the decode batch itself sets, and such a queue would grow without bound.)

Per request with `u` prompt tokens the decode pod lacks, minimise drift plus V times penalty:
keeping the prefill local adds `u` to the decode backlog (weighted by `w * Qd`); disaggregating
adds it to the prefill backlog (weighted by `Qp + Z`) and pays one disaggregation penalty (an
extra queueing hop, a KV transfer and a decode step), worth `v` steps of backlog. So:

    disaggregate  iff  (u / budget) * (w * Qd - Qp - Z) > v

A request that is almost all cached (`u` small) is rarely worth a transfer; an idle cluster
(`Qd = Qp = 0`) never disaggregates; a high TTFT deficit stops disaggregation (and since `Z`
only moves when disaggregated requests report, it stays put until backlog outweighs it).
"""
from __future__ import annotations

from blis_gym.policies.params import number, take_params
from blis_gym.policies.registry import register


class EDPP:
    def __init__(self, ttft_slo_ms: float = 1000.0, itl_target_ms: float = 50.0, v: float = 1.0,
                 token_budget: int = 8192):
        self.ttft_slo_us = ttft_slo_ms * 1000.0
        self.itl_target_us = itl_target_ms * 1000.0
        self.v = v
        self.budget = float(token_budget)
        self.z = 0.0        # TTFT-deficit virtual queue
        self.itl_us = 0.0   # moving average of decode-side ITL
        self.backlog: dict[int, float] = {}     # decode pod index -> uncached tokens pending
        self.prefill_backlog = 0.0              # the prefill pool's uncached tokens pending
        self.pending: dict = {}                 # request -> (decode pod index or -1, tokens)

    def disaggregate(self, req, cached_tokens: int) -> bool:
        """Without the pools' view (the gateway calls `disaggregate_on`): keep it local."""
        return False

    def disaggregate_on(self, req, cached_tokens: int, decode_pod, prefill_pods) -> bool:
        u = max(0, req.input_len - cached_tokens)
        n_prefill = sum(p.available for p in prefill_pods)
        if decode_pod is None or not n_prefill:
            return False
        qd = self.backlog.get(decode_pod.index, 0.0) / self.budget
        qp = self.prefill_backlog / n_prefill / self.budget
        w = max(1.0, self.itl_us / self.itl_target_us)
        disaggregate = u > 0 and u / self.budget * (w * qd - qp - self.z) > self.v
        self._settle(req)
        where = -1 if disaggregate else decode_pod.index
        self.pending[req] = (where, u)
        if disaggregate:
            self.prefill_backlog += u
        else:
            self.backlog[where] = self.backlog.get(where, 0.0) + u
        return disaggregate

    def _settle(self, req) -> None:
        """The request's prompt is done (or it ended): take it off its pool's backlog."""
        where, u = self.pending.pop(req, (None, 0))
        if where == -1:
            self.prefill_backlog -= u
        elif where is not None:
            self.backlog[where] -= u

    def first_token(self, req, disaggregated: bool) -> None:
        self._settle(req)
        if disaggregated:
            ttft = req.first_token - req.arrival
            self.z = max(0.0, self.z + ttft / self.ttft_slo_us - 1.0)

    def finished(self, req) -> None:
        self._settle(req)
        if req.finished >= 0 and req.output_len > 1 and req.finished > req.first_token >= 0:
            itl = (req.finished - req.first_token) / (req.output_len - 1)
            self.itl_us += (itl - self.itl_us) / 16.0


DEFAULTS = {"ttft_slo_ms": 1000.0, "itl_target_ms": 50.0, "v": 1.0, "token_budget": 8192}


@register("pd", "edpp")
def make_edpp(params: dict, field: str) -> EDPP:
    p = take_params(field, {k: v for k, v in params.items() if k != "policy"}, DEFAULTS)
    return EDPP(ttft_slo_ms=number(f"{field}.ttft_slo_ms", p["ttft_slo_ms"], lo=0, lo_open=True),
                itl_target_ms=number(f"{field}.itl_target_ms", p["itl_target_ms"], lo=0, lo_open=True),
                v=number(f"{field}.v", p["v"], lo=0),
                token_budget=number(f"{field}.token_budget", p["token_budget"], lo=1, integer=True))
