"""Speculative decoding (vLLM's `--speculative-config`: MTP, EAGLE, n-gram drafts).

Each decode step a sequence puts K draft tokens plus its current one through the model (the
step-time model prices K + 1 verified tokens on the decode terms) and advances by 1 + the number
of drafts accepted, the accepted ones being a prefix of the K. The acceptance profile gives, per
draft position j = 1..K, the probability alpha_j that position j is accepted (vLLM's per-position
acceptance rates; non-increasing, since a position is accepted only after the ones before it);
so P(advance 1 + a) = alpha_a - alpha_{a+1} (alpha_0 = 1, alpha_{K+1} = 0) and the mean advance is
1 + sum(alpha). A single rate alpha (vLLM's draft acceptance rate: accepted / drafted tokens)
stands for the profile q, q^2, ..., q^K whose mean acceptance is alpha K, the geometric decay of a
draft whose every token is accepted with the same probability q given the ones before it.

The advance is drawn once per step and shared by the batch's decoding sequences, from the
instance's own random stream. That keeps the engine's fast path: decoding requests stay in
aggregate (KV tokens = base + a counter that now grows by the step's advance), so a step costs
O(changes), and runs of decode steps are still laid out at once, with the same draws as stepping
one by one (draws are consumed in step order and a cut plan gives its unused draws back). Each
sequence's own advance has the profile's distribution; what this leaves out is the spread of
acceptance between the sequences of one step.

KV: a decoding sequence holds room for its tokens plus K lookahead slots (vLLM allocates
num_lookahead_tokens ahead), taken when it starts decoding (at the next step it joins) and topped
up each step by what the step's advance crosses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .request import BLOCK_MASK, BLOCK_SIZE

__all__ = ["SpecConfig", "SpecDraws", "SpecState", "acceptance_profile", "lookahead_blocks", "advance_planned",
           "plan_run", "METHODS"]

METHODS = ("mtp", "eagle", "eagle3", "ngram", "draft_model")


@dataclass(frozen=True)
class SpecConfig:
    method: str
    num_tokens: int                      # K draft tokens per step
    acceptance: tuple[float, ...]        # alpha_j, j = 1..K: P(draft position j is accepted)

    @property
    def mean_advance(self) -> float:
        """Expected tokens a sequence advances per decode step: 1 + sum of the profile."""
        return 1.0 + sum(self.acceptance)

    def advance_pmf(self) -> list[float]:
        """P(advance = 1 + a), a = 0..K."""
        a = (1.0, *self.acceptance, 0.0)
        return [a[i] - a[i + 1] for i in range(self.num_tokens + 1)]


def acceptance_profile(acceptance, k: int) -> tuple[float, ...]:
    """The per-position profile from a rate alpha (mean acceptance alpha K, geometric decay) or a
    list of K non-increasing probabilities. Raises ValueError with what is allowed."""
    if isinstance(acceptance, (list, tuple)):
        prof = tuple(float(x) for x in acceptance)
        if len(prof) != k:
            raise ValueError(f"acceptance lists one probability per draft position: {k} values, got {len(prof)}")
        if any(not 0.0 <= x <= 1.0 for x in prof):
            raise ValueError("acceptance probabilities must lie in [0, 1]")
        if any(b > a for a, b in zip(prof, prof[1:])):
            raise ValueError("acceptance must not increase with the position (a draft token is accepted "
                             "only after the ones before it)")
        return prof
    alpha = float(acceptance)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"acceptance rate must lie in [0, 1], got {alpha}")
    target = alpha * k
    lo, hi = 0.0, 1.0
    for _ in range(60):                  # bisection: sum_j q^j = alpha K
        q = (lo + hi) / 2
        if sum(q ** j for j in range(1, k + 1)) < target:
            lo = q
        else:
            hi = q
    q = (lo + hi) / 2
    return tuple(q ** j for j in range(1, k + 1))


class SpecDraws:
    """The instance's advances, one per decode step, in step order. `take` consumes the next;
    `give_back(n)` returns the last n taken (a planned run that was cut)."""

    CHUNK = 4096
    KEEP = 1024          # draws kept behind the cursor: more than a planned run gives back

    def __init__(self, cfg: SpecConfig, rng: np.random.Generator):
        self.cdf = np.cumsum(cfg.advance_pmf())
        self.cdf[-1] = 1.0
        self.rng = rng
        self.buf: list[int] = []
        self.pos = 0

    def take(self) -> int:
        if self.pos >= len(self.buf):
            u = self.rng.random(self.CHUNK)
            fresh = (np.searchsorted(self.cdf, u, side="right") + 1).tolist()
            keep = min(self.pos, self.KEEP)
            self.buf = self.buf[self.pos - keep:] + fresh
            self.pos = keep
        s = self.buf[self.pos]
        self.pos += 1
        return s

    def give_back(self, n: int) -> None:
        self.pos -= n


def lookahead_blocks(phase: list[int], tick: int, s: int, k: int) -> int:
    """New KV blocks the decoders need when the counter moves from tick to tick + s while each
    keeps k lookahead slots: decoders whose base is b (mod 16) hold ceil((b + tick + k) / 16)
    blocks and need ceil((b + tick + s + k) / 16), one more exactly when b + tick + k is one of
    the s values below a multiple of 16 (for s <= 16)."""
    lo = tick + k
    if s <= BLOCK_SIZE:
        return sum(phase[(-lo - j) & BLOCK_MASK] for j in range(s))
    hi = lo + s
    n = 0
    for b in range(BLOCK_SIZE):
        c = phase[b]
        if c:
            n += c * ((b + hi + BLOCK_SIZE - 1) // BLOCK_SIZE - (b + lo + BLOCK_SIZE - 1) // BLOCK_SIZE)
    return n


def join_blocks(tokens: int, k: int) -> int:
    """Lookahead blocks a sequence holding `tokens` takes when it starts decoding."""
    return -(-(tokens + k) // BLOCK_SIZE) - (-(-tokens // BLOCK_SIZE))


class SpecState:
    """An instance's speculative-decoding state: its draws, the advance of the step in flight,
    and the decoders that joined since the last step and hold no lookahead slots yet."""

    def __init__(self, cfg: SpecConfig, rng: np.random.Generator):
        self.k = cfg.num_tokens
        self.width = cfg.num_tokens + 1      # tokens a decoding sequence takes from the budget
        self.draws = SpecDraws(cfg, rng)
        self.s = 1                           # advance of the step in flight
        self.new: dict = {}                  # joined decoders without their lookahead (request -> blocks owed)
        self.owed = 0
        self.plan_s: list[int] = []          # advances of the planned steps

    def joined(self, r, tokens: int) -> None:
        n = join_blocks(tokens, self.k)
        self.new[r] = n
        self.owed += n

    def settled(self, r) -> None:
        """r got its lookahead (or left)."""
        n = self.new.pop(r, None)
        if n is not None:
            self.owed -= n

    def settle_all(self) -> None:
        self.new.clear()
        self.owed = 0


# ---- planned runs of decode steps (Instance._plan_run and _advance with speculation) -------------
def plan_run(inst, n_dec: int, ctx: int) -> int:
    """Lay out the decode steps after the one just formed: their advances are drawn now (in step
    order, given back if the run is cut), the run ends with the step in which the next request
    completes, or before the first step whose KV top-up the free blocks cannot cover. Returns
    the run's total duration (µs)."""
    key = inst.next_finish()
    sp = inst.spec
    if key is None or n_dec <= 0:
        return 0
    tick = inst.tick + sp.s              # where the step in flight leaves the counter
    if tick - 1 >= key:
        return 0                         # the step in flight completes it
    free, phase, k = inst.kv.free_count, inst.phase, sp.k
    plan, advances = [], []
    model, lora = inst.model, inst.lora
    prev = sp.s
    while len(plan) < inst.MAX_RUN:
        s = sp.draws.take()
        free -= lookahead_blocks(phase, tick, s, k)
        if free < 0:
            sp.draws.give_back(1)
            break
        ctx += n_dec * prev              # the previous step's tokens are context now
        dt = model.decode_step_us(n_dec, ctx)
        plan.append(lora.step_us(dt) if lora is not None and lora.factor != 1.0 else dt)
        advances.append(s)
        prev = s
        tick += s
        if tick - 1 >= key:
            break
    if not plan:
        return 0
    inst.plan = plan
    sp.plan_s = advances
    inst.plan_pos = 0
    return sum(plan)


def advance_planned(inst, t: int) -> None:
    """Instance._advance with speculation: apply the planned steps whose boundary is at or
    before t. At each boundary the counter moves by the ending step's advance, the next step
    tops up its KV, and it emits its advance in tokens per decoder (the accepted ones with no
    gap)."""
    sp = inst.spec
    plan, plan_s = inst.plan, sp.plan_s
    i, n, e = inst.plan_pos, len(inst.plan), inst.step_end
    phase, hist, a, nd, k, log = inst.phase, inst.itl_hist, inst.alpha_out, inst.n_dec, sp.k, inst.step_log
    tick, s = inst.tick, sp.s
    blocks = busy = tokens = 0
    start = e
    while i < n and e <= t:
        tick += s                        # the step in flight ends
        s = plan_s[i]                    # the next planned one starts
        dt = plan[i]
        i += 1
        blocks += lookahead_blocks(phase, tick, s, k)
        tokens += nd * s
        key = dt + a
        hist[key] = hist.get(key, 0) + nd
        if s > 1:
            hist[a] = hist.get(a, 0) + nd * (s - 1)
        if log is not None:
            log.append((e, dt, [], nd))
        start = e
        e += dt
        busy += dt
    inst.tick, sp.s = tick, s
    if blocks:
        inst.kv._take_free(blocks)
    inst.decode_tokens += tokens
    inst.steps += i - inst.plan_pos
    inst.busy_us += busy
    inst.step_started = start
    inst.step_end = e
    if i >= n:
        inst.plan = []
        sp.plan_s = []
        inst.plan_pos = 0
    else:
        inst.plan_pos = i
