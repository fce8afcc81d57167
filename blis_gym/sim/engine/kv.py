"""Paged KV store of one instance, with vLLM's prefix caching.

Blocks are counted, not materialised: what matters for every observable (hits, evictions,
the KV-use figure) is how many blocks are referenced and, for the free ones, the LRU order of
those that still carry a hash. So the store keeps:

- `refs`: hash -> reference count, for published blocks in use;
- `free`: the free-block queue in LRU order (head = next to be reused). A free block with a
  hash is keyed by its hash; consecutive free blocks without one are a single run entry.

A request references a prefix of its blocks through `refs` (`req.shared_blocks`); the rest of
its blocks are private and derived from its token count, so a decode step that adds tokens
touches no per-request state here.

A group prefix (shared content) held whole is counted once per holder, not block by block:
`runs` counts the holders of each such prefix and `run_blocks` lists its blocks while held,
so admitting and releasing a request with a 5,000-token system prompt costs O(1) for the
prefix. The LRU order of what is freed is the same as with per-block counts.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import islice, repeat

from .request import BLOCK_SIZE, Request


_INC = (1).__add__
_DEC = (-1).__add__


class _Run:
    """Key of a run of free blocks without hashes (identity-hashed; dict order is insertion order)."""
    __slots__ = ()


class KVStore:
    def __init__(self, total_blocks: int):
        # vLLM reserves one null block; usable = total - 1 (the KV-use denominator).
        self.total = int(total_blocks)
        self.usable = self.total - 1
        self.used = 0
        self.refs: dict[int, int] = {}
        self.runs: dict = {}                    # group prefix (Content) -> requests holding it whole
        self.run_blocks: dict[int, object] = {} # hash -> its group prefix, while that is held whole
        self.free: OrderedDict = OrderedDict()
        if self.usable > 0:
            self.free[_Run()] = self.usable
        self.free_count = self.usable
        self.peak_used = 0
        self._lookup = None    # (request, its prefix hashes) of the latest lookup, reused by admit
        self.hit_tokens = 0    # prompt tokens found in the prefix cache at admission
        self.query_tokens = 0  # prompt tokens looked up (vLLM's prefix_cache_queries)

    # ---- observations -------------------------------------------------------------------
    def usage(self) -> float:
        """vLLM's kv_cache_usage_perc: 1 - free/(num_gpu_blocks - 1); cached free blocks count as free."""
        return self.used / self.usable if self.usable > 0 else 1.0

    def cached(self, h: int) -> bool:
        return h in self.refs or h in self.run_blocks or h in self.free

    RUNS = True          # hold group prefixes as runs (False: block by block; same results)

    def cached_prefix_blocks(self, req: Request, limit: int | None = None) -> int:
        """Longest run of the request's leading full prompt blocks present in this store
        (capped as vLLM caps it: the last prompt token is always recomputed)."""
        n_max = (req.target - 1) // BLOCK_SIZE
        if limit is not None:
            n_max = min(n_max, limit)
        refs, free, rb = self.refs, self.free, self.run_blocks
        content = req.kv_content
        self._lookup = (req, [], 0, 0)
        if n_max <= 0:
            return 0
        h0 = content.block_hash(0)
        if h0 not in refs and h0 not in rb and h0 not in free:
            return 0
        i = 0
        root = content.root
        if root is not None and self.runs.get(root) and root.length // BLOCK_SIZE <= n_max:
            i = root.length // BLOCK_SIZE   # held whole right now: every block present
        hs = content.prefix_hashes(n_max)
        from_free = 0            # hits sitting in the free queue (a claim takes them out of it)
        for h in islice(hs, i, None):
            if h in refs or h in rb:
                i += 1
            elif h in free:
                i += 1
                from_free += 1
            else:
                break
        self._lookup = (req, hs, i, from_free)
        return i

    # ---- allocation ---------------------------------------------------------------------
    def _take_free(self, n: int) -> None:
        """Pop n blocks from the LRU head; cached hashes on them are evicted."""
        free = self.free
        self.free_count -= n
        self.used += n
        if self.used > self.peak_used:
            self.peak_used = self.used
        while n > 0:
            key, cnt = free.popitem(last=False)
            if type(key) is int:
                n -= 1
            elif cnt > n:
                free[key] = cnt - n
                free.move_to_end(key, last=False)
                return
            else:
                n -= cnt

    def _give_free(self, n: int) -> None:
        if n > 0:
            self.free[_Run()] = n
            self.free_count += n
            self.used -= n

    def admit(self, req: Request, hit_blocks: int, new_tokens: int) -> bool:
        """Claim the request's first `hit_blocks` cached blocks and allocate room for
        `new_tokens` more. All or nothing; False if the free pool is too small."""
        refs, free, rb = self.refs, self.free, self.run_blocks
        last = self._lookup
        self._lookup = None
        if last is None or last[0] is not req or last[2] != hit_blocks:
            self.cached_prefix_blocks(req, hit_blocks)
            last = self._lookup
            self._lookup = None
        hashes, from_free = last[1], last[3]
        start = hit_blocks * BLOCK_SIZE
        new_blocks = -(-(start + new_tokens) // BLOCK_SIZE) - hit_blocks
        if new_blocks + from_free > self.free_count:
            return False
        root = req.kv_content.root
        n_run = root.length // BLOCK_SIZE if root is not None and self.RUNS else 0
        if 0 < n_run <= hit_blocks:
            held = self.runs.get(root, 0)
            if not held:                          # the first whole holder: take it out of the free queue
                for h in root._flatten():
                    if h not in refs:
                        del free[h]
                    rb[h] = root
            self.runs[root] = held + 1
            req.shared_run = root
            per = hashes[n_run:hit_blocks]
        else:
            per = hashes[:hit_blocks]
        if from_free:
            for h in [h for h in per if h not in refs and h not in rb]:
                del free[h]
        # reference counts + 1, iterated in C (a prompt may hold thousands of cached blocks)
        refs.update(zip(per, map(_INC, map(refs.get, per, repeat(0)))))
        if from_free:
            self.free_count -= from_free
            self.used += from_free
            if self.used > self.peak_used:
                self.peak_used = self.used
        req.shared_blocks = per
        req.hit_blocks = hit_blocks
        self.hit_tokens += start
        self.query_tokens += req.target
        self._take_free(new_blocks)
        self._publish(req, start, start + new_tokens)
        return True

    def extend_prefill(self, req: Request, new_tokens: int) -> bool:
        """Allocate room for the next prefill chunk of a running request."""
        have = req.computed
        need = -(-(have + new_tokens) // BLOCK_SIZE) - (-(-have // BLOCK_SIZE))
        if need > self.free_count:
            return False
        self._take_free(need)
        self._publish(req, have, have + new_tokens)
        return True

    def _publish(self, req: Request, lo: int, hi: int) -> None:
        """Publish blocks of shared content (a group prefix) as they fill, so that requests in
        flight can hit them; a request's own content stays private while it runs."""
        shared = req.shared_blocks
        first = self.shared_count(req)
        if first * BLOCK_SIZE < lo or first * BLOCK_SIZE >= hi:
            return
        parent = req.content.parent
        if parent is None or not parent.shared:
            return
        last = min(hi, parent.length) // BLOCK_SIZE    # full shared blocks after this chunk
        refs, free, rb = self.refs, self.free, self.run_blocks
        for i in range(first, last):
            h = parent.block_hash(i)
            if h in refs or h in rb or h in free:
                return      # computed twice (a race with another request): keep the rest private
            refs[h] = 1
            shared.append(h)

    # ---- release ------------------------------------------------------------------------
    def release(self, req: Request, tokens_in_kv: int, content=None) -> None:
        """Free a request's blocks, last block first (vLLM frees in reverse, so a sequence's
        tail is evicted before its more shareable head). With `content` (the request's full
        token sequence) its private full blocks keep their hashes and can be hit again."""
        total = -(-tokens_in_kv // BLOCK_SIZE)
        shared = req.shared_blocks
        n_shared = self.shared_count(req)
        n_private = total - n_shared
        refs, free, rb = self.refs, self.free, self.run_blocks
        if n_private > 0:
            if content is None:
                self._give_free(n_private)
            else:
                full = tokens_in_kv // BLOCK_SIZE
                if full < total:
                    self._give_free(1)
                for i in range(full - 1, n_shared - 1, -1):
                    h = content.block_hash(i)
                    self.used -= 1
                    self.free_count += 1
                    if h in refs or h in rb or h in free:
                        free[_Run()] = 1
                    else:
                        free[h] = 1
        freed = 0
        if shared:
            refs.update(zip(shared, map(_DEC, map(refs.__getitem__, shared))))
            for h in [h for h in reversed(shared) if not refs[h]]:
                del refs[h]
                if h not in rb:                   # else still held whole by others
                    free[h] = 1
                    freed += 1
        run = req.shared_run
        if run is not None:
            left = self.runs[run] - 1
            if left:
                self.runs[run] = left
            else:
                del self.runs[run]
                for h in reversed(run._flatten()):
                    del rb[h]
                    if h not in refs:
                        free[h] = 1
                        freed += 1
            req.shared_run = None
        self.used -= freed
        self.free_count += freed
        req.shared_blocks = []

    def shared_count(self, req: Request) -> int:
        """How many of the request's leading blocks it holds through the cache (not privately)."""
        run = req.shared_run
        return len(req.shared_blocks) + (run.length // BLOCK_SIZE if run is not None else 0)

    def check(self, private_blocks: int, holders: dict[int, int], run_holders: dict) -> None:
        """Invariants: used + free = usable; used = private blocks + distinct blocks held through
        the cache; reference counts equal their holders; the free queue adds up."""
        assert self.used + self.free_count == self.usable, (self.used, self.free_count, self.usable)
        in_use = len(self.refs.keys() | self.run_blocks.keys())
        assert self.used == private_blocks + in_use, (self.used, private_blocks, in_use)
        assert self.refs == holders, "reference counts do not match the requests holding them"
        assert self.runs == run_holders, "group-prefix holders do not match"
        n = sum(v for v in self.free.values())
        assert n == self.free_count, (n, self.free_count)
        hashed_free = {k for k in self.free if type(k) is int}
        assert not (self.refs.keys() & hashed_free), "block both free and in use"
        assert not (self.run_blocks.keys() & hashed_free), "block both free and held whole"
