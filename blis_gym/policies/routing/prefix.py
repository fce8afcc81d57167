"""The router's view of the pods' prefix caches: `PrefixIndex`.

mode "approximate" (llm-d's approx-prefix-cache producer): a router-side per-pod LRU of chained
router-block hashes (`block_size` tokens per router block, default 64, a positive multiple of
16), updated ONLY by `observe()` (the pod a request was sent to); a pod's match is the number of
consecutive router blocks, from block 0, present in its LRU; only full router blocks count and at
most `max_prefix_blocks` are considered. Router block k is identified by the chained 16-token hash
of its last 16-token block (`Content.block_hash`), which already commits to every token before
it: the same identity as re-chaining the block's 16-token hashes, at a quarter of the cost.

mode "precise": `ctx.cached_blocks(req, i)`, the 16-token blocks of the request present in pod
i's real KV cache (llm-d reads the instances' KV events).

The prefix-cache scorer, the no-hit-LRU scorer, the prefix-affinity filter, the gateway (the P/D
decider's cached tokens) and the environments' observations all read one index per router.
"""
from __future__ import annotations

from collections import OrderedDict

from blis_gym.errors import ConfigError
from blis_gym.sim.engine.request import BLOCK_SIZE

from ..params import number

MODES = ("approximate", "precise")


class PrefixIndex:
    """Per-pod prefix matches of a request (see the module docstring)."""

    def __init__(self, mode: str = "approximate", block_size: int = 64, lru_capacity: int = 31250,
                 max_prefix_blocks: int = 2048, field: str = "prefix-cache"):
        if mode not in MODES:
            raise ConfigError(f"{field}.mode", f"unknown mode {mode!r}; allowed: approximate, precise")
        self.precise = mode == "precise"
        bs = number(f"{field}.block_size", block_size, lo=1, integer=True)
        if bs % BLOCK_SIZE:
            raise ConfigError(f"{field}.block_size", f"must be a positive multiple of {BLOCK_SIZE}, got {bs}")
        self.block_size = bs
        self.sub = bs // BLOCK_SIZE
        self.capacity = number(f"{field}.lru_capacity", lru_capacity, lo=1, integer=True)
        self.max_blocks = number(f"{field}.max_prefix_blocks", max_prefix_blocks, lo=1, integer=True)
        # tokens per matched unit: a router block, or a 16-token KV block in precise mode
        self.match_tokens = BLOCK_SIZE if self.precise else bs
        self._lru: dict[int, OrderedDict] = {}      # pod index -> OrderedDict(hash -> None)
        # router-block-0 hash -> pods whose LRU holds it: a match starts there, so matching
        # costs O(pods that hold the first block), not O(candidates)
        self._first: dict[int, tuple[int, ...]] = {}
        self._hreq = None                            # memo: request -> router-block hashes
        self._hashes: list[int] = []
        self._mreq = None                            # memo: (request, candidate list) -> matches
        self._mcands = None
        self._mctx = None
        self._matches: list[int] = []

    # ---- queries ---------------------------------------------------------------------------
    def hashes(self, req) -> list[int]:
        """The request's router-block hashes (full router blocks only, capped)."""
        if req is self._hreq:
            return self._hashes
        content = req.content
        n16 = min(req.input_len, content.length) // BLOCK_SIZE
        sub = self.sub
        n = min(n16 // sub, self.max_blocks)
        hs = content.prefix_hashes(n * sub)[sub - 1::sub] if n else []
        self._hreq = req
        self._hashes = hs
        return hs

    def total_blocks(self, req) -> int:
        """The request's blocks a match is counted against (router blocks, or 16-token blocks)."""
        if self.precise:
            return min(req.input_len, req.content.length) // BLOCK_SIZE
        return len(self.hashes(req))

    def matches(self, req, cands, ctx, remember: bool = True) -> list[int]:
        """Per candidate pod: its matched blocks. The last answer is memoised for the scorers of
        one routing decision; remember=False leaves no memo (a query from outside the router)."""
        if req is self._mreq and cands is self._mcands and ctx is self._mctx:
            out = self._matches
        elif self.precise:
            cb = ctx.cached_blocks
            out = [cb(req, p.index) for p in cands]
        else:
            out = self._approximate(self.hashes(req), cands)
        if remember:
            self._mreq, self._mcands, self._mctx, self._matches = req, cands, ctx, out
        else:
            self._mreq = None
        return out

    def _approximate(self, hs: list[int], cands) -> list[int]:
        n = len(cands)
        out = [0] * n
        holders = self._first.get(hs[0]) if hs else None
        if holders:
            lrus = self._lru
            pos = None
            for i in holders:
                k = i if i < n and cands[i].index == i else None
                if k is None:                # candidates are not the pods in index order
                    if pos is None:
                        pos = {p.index: j for j, p in enumerate(cands)}
                    k = pos.get(i)
                    if k is None:
                        continue
                lru = lrus[i]
                m = 0
                for h in hs:
                    if h in lru:
                        m += 1
                    else:
                        break
                out[k] = m
        return out

    def cached_tokens(self, req, pod, ctx) -> int:
        """Prompt tokens the index believes `pod` (a PodSignals) holds; no memo is left."""
        return self.matches(req, [pod], ctx, remember=False)[0] * self.match_tokens

    def is_warm(self, req, cands, ctx) -> bool:
        """Does any candidate hold at least one block of the request?"""
        return any(m > 0 for m in self.matches(req, cands, ctx))

    def warm_anywhere(self, req) -> bool:
        """Approximate mode: does any pod in the index hold the request's first block?"""
        hs = self.hashes(req)
        if not hs:
            return False
        return bool(self._first.get(hs[0]))

    def holds(self, pod_index: int, h: int) -> bool:
        """Is router-block hash h in the pod's LRU?"""
        return h in self._lru.get(pod_index, ())

    def blocks_held(self, pod_index: int) -> int:
        """Router blocks in the pod's LRU (at most lru_capacity)."""
        return len(self._lru.get(pod_index, ()))

    # ---- updates ---------------------------------------------------------------------------
    def observe(self, req, pod_index: int) -> None:
        """The request was sent to pod_index: its blocks become that pod's most recent."""
        self._mreq = None
        if self.precise:
            return
        hs = self.hashes(req)
        if not hs:
            return
        lru = self._lru.get(pod_index)
        if lru is None:
            lru = self._lru[pod_index] = OrderedDict()
        mte = lru.move_to_end
        for h in hs:
            if h in lru:
                mte(h)
            else:
                lru[h] = None
        held = self._first.get(hs[0], ())
        if pod_index not in held:
            self._first[hs[0]] = held + (pod_index,)
        cap = self.capacity
        while len(lru) > cap:
            self._unindex(lru.popitem(last=False)[0], pod_index)

    def _unindex(self, h: int, pod_index: int) -> None:
        """Pod pod_index's LRU dropped h: if h is a first block, the pod no longer holds it."""
        held = self._first.get(h)
        if held is not None and pod_index in held:
            rest = tuple(i for i in held if i != pod_index)
            if rest:
                self._first[h] = rest
            else:
                del self._first[h]

    def forget(self, pod_index: int) -> None:
        """The pod left (or restarted empty): drop what the index believed it held."""
        self._mreq = None
        for h in self._lru.pop(pod_index, {}):
            self._unindex(h, pod_index)
