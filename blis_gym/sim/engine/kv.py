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

A group prefix (shared content, e.g. a 5,000-token system prompt) moves as a whole: held whole
it is counted once per holder (`runs`), and freed whole it is one free-queue entry (a
`_Range` of its blocks, evicted last block first, claimed first block first), so admitting and
releasing its requests costs O(1) for the prefix. Hits, evictions and the LRU order are the
same as with per-block counts (`RUNS = False`), which a test checks.
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


class _Range:
    """Free, still cached blocks [lo, hi) of a group prefix, as one free-queue entry."""
    __slots__ = ("group", "lo", "hi")

    def __init__(self, group, lo: int, hi: int):
        self.group = group
        self.lo = lo
        self.hi = hi


class KVStore:
    RUNS = True          # move group prefixes whole (False: block by block; same results)

    def __init__(self, total_blocks: int, caching: bool = True):
        # caching False: vLLM's --no-enable-prefix-caching (no block is ever found in the cache)
        self.caching = caching
        # vLLM reserves one null block; usable = total - 1 (the KV-use denominator).
        self.total = int(total_blocks)
        self.usable = self.total - 1
        self.used = 0
        self.refs: dict[int, int] = {}
        self.free: OrderedDict = OrderedDict()
        if self.usable > 0:
            self.free[_Run()] = self.usable
        self.free_count = self.usable
        self.peak_used = 0
        self.runs: dict = {}                     # group prefix (Content) -> requests holding it whole
        self.ranges: dict = {}                   # group prefix -> its _Range in the free queue
        self.owner: dict[int, tuple] = {}        # block hash -> (group prefix, index), once per group
        self._lookup = None    # (request, its prefix hashes, hits, hits in the free queue) of the latest lookup
        self.hit_tokens = 0    # prompt tokens found in the prefix cache at admission
        self.query_tokens = 0  # prompt tokens looked up (vLLM's prefix_cache_queries)

    # ---- observations -------------------------------------------------------------------
    def usage(self) -> float:
        """vLLM's kv_cache_usage_perc: 1 - free/(num_gpu_blocks - 1); cached free blocks count as free."""
        return self.used / self.usable if self.usable > 0 else 1.0

    def _group_state(self, h: int) -> int:
        """For a group-prefix block: 1 held whole, 2 free in its group's range, else 0."""
        o = self.owner.get(h)
        if o is None:
            return 0
        g, i = o
        if self.runs.get(g):
            return 1
        r = self.ranges.get(g)
        return 2 if r is not None and r.lo <= i < r.hi else 0

    def cached(self, h: int) -> bool:
        return h in self.refs or h in self.free or self._group_state(h) > 0

    def cached_prefix_blocks(self, req: Request, limit: int | None = None) -> int:
        """Longest run of the request's leading full prompt blocks present in this store
        (capped as vLLM caps it: the last prompt token is always recomputed)."""
        n_max = (req.target - 1) // BLOCK_SIZE
        if limit is not None:
            n_max = min(n_max, limit)
        self._lookup = (req, [], 0, 0)
        if n_max <= 0 or not self.caching:
            return 0
        refs, free = self.refs, self.free
        content = req.kv_content
        i = 0
        from_free = 0            # hits sitting in the free queue (a claim takes them out of it)
        root = content.root
        if root is not None and self.RUNS and root.length // BLOCK_SIZE <= n_max:
            full = root.length // BLOCK_SIZE
            if self.runs.get(root):
                i = full                      # held whole right now: every block present
            else:
                r = self.ranges.get(root)
                if r is not None and r.lo == 0:
                    i = from_free = r.hi      # freed whole; blocks from hi on were evicted
                    if r.hi < full:
                        self._lookup = (req, content.prefix_hashes(i), i, i)
                        return i
        if i == 0:
            h = content.block_hash(0)
            if h not in refs and h not in free and not self._group_state(h):
                return 0
        hs = content.prefix_hashes(n_max)
        for h in islice(hs, i, None):
            if h in refs:
                i += 1
            elif h in free:
                i += 1
                from_free += 1
            else:
                s = self._group_state(h)
                if not s:
                    break
                i += 1
                from_free += s == 2
        self._lookup = (req, hs, i, from_free)
        return i

    def lookup_claims(self) -> int:
        """Free blocks that claiming the latest lookup's hits takes out of the free queue."""
        return self._lookup[3] if self._lookup is not None else 0

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
                if type(key) is _Range:
                    key.hi -= n                # a group prefix loses its last blocks first
                free[key] = cnt - n
                free.move_to_end(key, last=False)
                return
            else:
                n -= cnt
                if type(key) is _Range:
                    del self.ranges[key.group]

    def _give_free(self, n: int) -> None:
        if n > 0:
            self.free[_Run()] = n
            self.free_count += n
            self.used -= n

    def _index(self, group) -> list[int] | None:
        """The group's block hashes, recorded in `owner` the first time; None if another group
        prefix owns them. Two prefixes of one group with different lengths share their common
        leading blocks: the first one indexed moves whole, the other block by block."""
        blocks = group._flatten()
        if blocks:
            o = self.owner.get(blocks[0])
            if o is None:
                self.owner.update((h, (group, i)) for i, h in enumerate(blocks))
            elif o[0] is not group:
                return None
        return blocks

    def admit(self, req: Request, hit_blocks: int, new_tokens: int) -> bool:
        """Claim the request's first `hit_blocks` cached blocks and allocate room for
        `new_tokens` more. All or nothing; False if the free pool is too small."""
        refs, free = self.refs, self.free
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
        if not 0 < n_run <= hit_blocks:
            n_run = 0
        held = self.runs.get(root, 0) if n_run else 0
        if n_run and not held:
            blocks = self._index(root)
            if blocks is None:                    # another prefix of the group owns them: block by block
                n_run = 0
        if n_run:
            if not held:                          # the first whole holder: out of the free queue
                r = self.ranges.pop(root, None)
                if r is not None:
                    del free[r]
                if r is None or r.lo > 0:
                    for i, h in enumerate(blocks):
                        if (r is None or not r.lo <= i < r.hi) and h not in refs:
                            del free[h]
            self.runs[root] = held + 1
            req.shared_run = root
            per = hashes[n_run:hit_blocks]
        else:
            per = hashes[:hit_blocks]
        if from_free:
            for h in [h for h in per if h not in refs]:
                if h in free:
                    del free[h]
                elif self._group_state(h) == 2:
                    self._claim_from_range(h)
                # else held whole by a longer or shorter prefix of its group: already in use
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
        if new_blocks:
            self._take_free(new_blocks)
        self._publish(req, start, start + new_tokens)
        return True

    def _claim_from_range(self, h: int) -> None:
        """Take one block of a freed group prefix (claims come first block first)."""
        g, i = self.owner[h]
        r = self.ranges[g]
        assert r.lo == i, "group prefix claimed out of order"
        r.lo += 1
        if r.lo < r.hi:
            self.free[r] = r.hi - r.lo
        else:
            del self.free[r]
            del self.ranges[g]

    def extend_prefill(self, req: Request, new_tokens: int) -> bool:
        """Allocate room for the next prefill chunk of a running request."""
        have = req.computed
        need = -(-(have + new_tokens) // BLOCK_SIZE) - (-(-have // BLOCK_SIZE))
        if need > self.free_count:
            return False
        if need:
            self._take_free(need)
        self._publish(req, have, have + new_tokens)
        return True

    def _publish(self, req: Request, lo: int, hi: int) -> None:
        """Publish blocks of shared content (a group prefix) as they fill, so that requests in
        flight can hit them; a request's own content stays private while it runs."""
        if not self.caching:
            return
        shared = req.shared_blocks
        first = self.shared_count(req)
        if first * BLOCK_SIZE < lo or first * BLOCK_SIZE >= hi:
            return
        parent = req.content.parent
        if parent is None or not parent.shared:
            return
        last = min(hi, parent.length) // BLOCK_SIZE    # full shared blocks after this chunk
        refs, free = self.refs, self.free
        for i in range(first, last):
            h = parent.block_hash(i)
            if h in refs or h in free or self._group_state(h):
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
        refs, free = self.refs, self.free
        if n_private > 0:
            if content is None or not self.caching:
                self._give_free(n_private)
            else:
                # blocks beyond the content (speculative lookahead slots) are never full
                full = min(tokens_in_kv, content.length) // BLOCK_SIZE
                if full < total:
                    self._give_free(total - full)
                for i in range(full - 1, n_shared - 1, -1):
                    h = content.block_hash(i)
                    self.used -= 1
                    self.free_count += 1
                    if h in refs or h in free or self._group_state(h):
                        free[_Run()] = 1
                    else:
                        free[h] = 1
        freed = 0
        if shared:
            refs.update(zip(shared, map(_DEC, map(refs.__getitem__, shared))))
            for h in [h for h in reversed(shared) if not refs[h]]:
                del refs[h]
                if self._group_state(h) != 1:     # else still held whole by others
                    free[h] = 1
                    freed += 1
        run = req.shared_run
        if run is not None:
            left = self.runs[run] - 1
            if left:
                self.runs[run] = left
            else:
                del self.runs[run]
                blocks = run._flatten()
                if refs.keys().isdisjoint(blocks):
                    r = self.ranges[run] = _Range(run, 0, len(blocks))
                    free[r] = len(blocks)
                    freed += len(blocks)
                else:
                    for h in reversed(blocks):
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
        in_use = set(self.refs)
        for g in self.runs:
            in_use.update(g._flatten())
        assert self.used == private_blocks + len(in_use), (self.used, private_blocks, len(in_use))
        assert self.refs == holders, "reference counts do not match the requests holding them"
        assert self.runs == run_holders, "group-prefix holders do not match"
        n = sum(v for v in self.free.values())
        assert n == self.free_count, (n, self.free_count)
        hashed_free = {k for k in self.free if type(k) is int}
        assert not (in_use & hashed_free), "block both free and in use"
        assert not (self.runs.keys() & self.ranges.keys()), "group prefix both held and free"
        for g, r in self.ranges.items():
            assert self.free.get(r) == r.hi - r.lo > 0 and r.group is g, "bad range entry"
