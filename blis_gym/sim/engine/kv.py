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
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import repeat

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
        return h in self.refs or h in self.free

    def cached_prefix_blocks(self, req: Request, limit: int | None = None) -> int:
        """Longest run of the request's leading full prompt blocks present in this store
        (capped as vLLM caps it: the last prompt token is always recomputed)."""
        n_max = (req.target - 1) // BLOCK_SIZE
        if limit is not None:
            n_max = min(n_max, limit)
        refs, free = self.refs, self.free
        content = req.kv_content
        if n_max <= 0 or (content.block_hash(0) not in refs and content.block_hash(0) not in free):
            return 0
        hs = content.prefix_hashes(n_max)
        i = 0
        from_free = 0            # hits sitting in the free queue (a claim takes them out of it)
        for h in hs:
            if h in refs:
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
        refs, free = self.refs, self.free
        last = self._lookup
        self._lookup = None
        if last is not None and last[0] is req and last[2] == hit_blocks:
            hashes = last[1][:hit_blocks]
            from_free = last[3]
        else:
            hashes = req.kv_content.prefix_hashes(hit_blocks)
            from_free = sum(1 for h in hashes if h not in refs)
        start = hit_blocks * BLOCK_SIZE
        new_blocks = -(-(start + new_tokens) // BLOCK_SIZE) - hit_blocks
        if new_blocks + from_free > self.free_count:
            return False
        if from_free:
            for h in [h for h in hashes if h not in refs]:
                del free[h]
        # reference counts + 1, iterated in C (a prompt may hold thousands of cached blocks)
        refs.update(zip(hashes, map(_INC, map(refs.get, hashes, repeat(0)))))
        if from_free:
            self.free_count -= from_free
            self.used += from_free
            if self.used > self.peak_used:
                self.peak_used = self.used
        req.shared_blocks = hashes
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
        first = len(shared)
        if first * BLOCK_SIZE < lo or first * BLOCK_SIZE >= hi:
            return
        parent = req.content.parent
        if parent is None or not parent.shared:
            return
        last = min(hi, parent.length) // BLOCK_SIZE    # full shared blocks after this chunk
        refs, free = self.refs, self.free
        for i in range(first, last):
            h = parent.block_hash(i)
            if h in refs or h in free:
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
        n_private = total - len(shared)
        refs, free = self.refs, self.free
        if n_private > 0:
            if content is None:
                self._give_free(n_private)
            else:
                full = tokens_in_kv // BLOCK_SIZE
                if full < total:
                    self._give_free(1)
                for i in range(full - 1, len(shared) - 1, -1):
                    h = content.block_hash(i)
                    self.used -= 1
                    self.free_count += 1
                    if h in refs or h in free:
                        free[_Run()] = 1
                    else:
                        free[h] = 1
        if shared:
            refs.update(zip(shared, map(_DEC, map(refs.__getitem__, shared))))
            gone = [h for h in reversed(shared) if not refs[h]]
            for h in gone:
                del refs[h]
                free[h] = 1
            self.used -= len(gone)
            self.free_count += len(gone)
        req.shared_blocks = []

    def check(self, held_blocks: int, holders: dict[int, int]) -> None:
        """Invariants: used + free = usable; every reference count equals its holders; the
        free queue's entries add up to the free count."""
        assert self.used + self.free_count == self.usable, (self.used, self.free_count, self.usable)
        assert self.used == held_blocks, (self.used, held_blocks)
        assert self.refs == holders, "reference counts do not match the requests holding them"
        n = sum(v for v in self.free.values())
        assert n == self.free_count, (n, self.free_count)
        assert not (set(self.refs) & {k for k in self.free if type(k) is int}), "block both free and in use"
