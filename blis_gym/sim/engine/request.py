"""A request and the token content it carries.

Token content is described by segments, not token IDs: a segment is (key, length), where
the key stands for a run of tokens nobody else has unless they share the key (a group's system
prompt, a session's earlier turns). Block hashes chain over the segments exactly as vLLM
chains over token IDs, so two requests share a cached block iff they share its content.
"""
from __future__ import annotations

from enum import IntEnum

BLOCK_SIZE = 16                  # tokens per KV block (vLLM's default block size)
BLOCK_MASK = BLOCK_SIZE - 1      # x & BLOCK_MASK == x % BLOCK_SIZE (a power of two)


# Segment keys: a request's own tokens get keys no other content has (shared prefixes use
# negative keys); keys rid*4 .. rid*4+3 belong to request rid.
def prompt_key(rid: int) -> int:
    """The segment key of request rid's own prompt tokens."""
    return rid * 4 + 1


def output_key(rid: int) -> int:
    """The segment key of request rid's generated tokens (a later turn's context)."""
    return rid * 4 + 2


class State(IntEnum):
    CREATED = 0
    QUEUED = 1        # in an instance's waiting queue (or between arrival and enqueue)
    RUNNING = 2
    COMPLETED = 3
    TIMED_OUT = 4
    DROPPED = 5       # unservable: can never fit (reason recorded)
    REJECTED = 6      # by gateway admission
    GATEWAY = 7       # held in the gateway's flow-control queue
    TRANSFER = 8      # P/D: waiting for its KV to arrive
    EVICTED = 9       # dispatched, then aborted by flow control's in-flight eviction


FINAL_STATES = (State.COMPLETED, State.TIMED_OUT, State.DROPPED, State.REJECTED, State.EVICTED)


class Content:
    """A token sequence: an optional parent content followed by own segments.

    Full-block hashes are computed on demand and memoised; blocks that lie wholly inside the
    parent are the parent's, so a group prefix shared by thousands of requests is hashed once.
    `shared` marks content that requests in flight may reference together (group prefixes):
    its blocks are published as soon as they are computed.
    """

    __slots__ = ("parent", "segments", "length", "shared", "_own", "_pfull", "_flat", "root")

    def __init__(self, parent: "Content | None", segments: tuple[tuple[int, int], ...], shared: bool = False):
        if any(k == -1 for k, _ in segments):
            # hash(-1) == hash(-2) in CPython: block hashes of key -1 would alias key -2's
            raise ValueError("segment key -1 is reserved")
        self.parent = parent
        self.segments = segments
        self.length = (parent.length if parent else 0) + sum(n for _, n in segments)
        self.shared = shared
        self._own: list[int] = []                      # hashes of blocks from _pfull on
        self._pfull = parent.length // BLOCK_SIZE if parent else 0
        self._flat: list[int] | None = None            # all full-block hashes, kept by parents only
        # the nearest shared ancestor (a group prefix): its full blocks lead this content's
        self.root = self if shared else (parent.root if parent is not None else None)
        if parent is not None and parent._flat is None:
            parent._flat = []                          # it is a parent now: flatten its chain once

    def block_hash(self, i: int) -> int:
        """Hash of full block i, chained over every block before it."""
        if i < self._pfull:
            flat = self.parent._flat
            if len(flat) <= i:
                flat = self.parent._flatten()
            return flat[i]
        j = i - self._pfull
        own = self._own
        if j >= len(own):
            self._extend(j + 1)
        return own[j]

    def prefix_hashes(self, n: int) -> list[int]:
        """The hashes of full blocks 0..n-1, as a new list."""
        if n <= 0:
            return []
        p = self._pfull
        if n <= p:
            return self.parent._flatten()[:n]
        self.block_hash(n - 1)
        head = self.parent._flatten()[:p] if p else []
        return head + self._own[:n - p]

    def _flatten(self) -> list[int]:
        """Every full-block hash of this (parent) content, in one list."""
        n = self.length // BLOCK_SIZE
        flat = self._flat
        if len(flat) < n:
            p = self._pfull
            if len(flat) < p:
                flat.extend(self.parent._flatten()[len(flat):p])
            if n > p:
                self.block_hash(n - 1)
                flat.extend(self._own[len(flat) - p:n - p])
        return flat

    def _pieces(self):
        """Yield (key, lo, hi) runs of the whole token sequence in order."""
        if self.parent is not None:
            yield from self.parent._pieces()
        for key, n in self.segments:
            yield key, 0, n

    def _extend(self, n_own: int) -> None:
        """Hash own blocks up to n_own. A block inside one segment is hashed as
        (prev, key, offset), one spanning segments as (prev, ((key, lo, hi), ...)): each block
        has one such form, so equal tokens give equal hashes whichever Content holds them."""
        own = self._own
        first = self._pfull + len(own)
        if (self._pfull + n_own) * BLOCK_SIZE > self.length:
            raise IndexError("block beyond content")
        start = first * BLOCK_SIZE
        prev = self.block_hash(first - 1) if first else 0
        key, n = self.segments[-1] if self.segments else (0, 0)
        a = start - (self.length - n)
        if a >= 0 and n:
            # the common case: every block left to hash lies inside the last segment
            for a in range(a, a + (n_own - len(own)) * BLOCK_SIZE, BLOCK_SIZE):
                prev = hash((prev, key, a))
                own.append(prev)
            return
        block: list[tuple[int, int, int]] = []
        fill = 0
        pos = 0
        append = own.append
        for key, lo, hi in self._pieces():
            if pos + hi - lo <= start:
                pos += hi - lo
                continue
            a = lo + max(0, start - pos)
            pos += hi - lo
            while a < hi:
                if fill == 0 and a + BLOCK_SIZE <= hi:
                    # the common case: whole blocks inside one segment
                    stop = min(hi - BLOCK_SIZE, a + (n_own - len(own) - 1) * BLOCK_SIZE)
                    while a <= stop:
                        prev = hash((prev, key, a))
                        append(prev)
                        a += BLOCK_SIZE
                    if len(own) >= n_own:
                        return
                    continue
                take = min(hi - a, BLOCK_SIZE - fill)
                block.append((key, a, a + take))
                a += take
                fill += take
                if fill == BLOCK_SIZE:
                    prev = hash((prev, tuple(block)))
                    append(prev)
                    if len(own) >= n_own:
                        return
                    block = []
                    fill = 0


class Request:
    """One request from arrival to its final state. Times are integer microseconds."""

    __slots__ = (
        "id", "arrival", "input_len", "output_len", "content", "slo_class", "priority",
        "tenant", "client", "session", "turn", "deadline", "state", "reason", "adapter",
        # engine bookkeeping
        "instance", "computed", "chunk", "target", "generated", "base", "gen", "seq",
        "shared_blocks", "shared_run", "rehash", "hit_blocks", "kv_content", "parent", "remote", "pd",
        "pull",
        # timestamps and counters for metrics
        "enqueued", "scheduled", "first_token", "finished", "preemptions",
    )

    def __init__(self, rid: int, arrival: int, input_len: int, output_len: int, content: Content,
                 slo_class: str = "standard", priority: int = 0, tenant: str = "",
                 client: str = "", session=None, turn: int = 0, deadline: int = 0):
        self.id = rid
        self.arrival = arrival
        self.input_len = input_len
        self.output_len = output_len
        self.content = content
        self.slo_class = slo_class
        self.priority = priority          # cluster convention: higher is more important
        self.tenant = tenant
        self.client = client
        self.session = session
        self.turn = turn
        self.deadline = deadline          # absolute µs; 0 = none
        self.state = State.CREATED
        self.reason = ""
        self.adapter = None               # its LoRA adapter (engine.lora.Adapter); None: the base model
        self.instance = None
        self.computed = 0                 # tokens in KV while prefilling
        self.chunk = 0                    # prefill tokens granted in the step being formed or run
        self.target = input_len           # tokens to prefill before decoding (grows after preemption)
        self.generated = 0                # output tokens emitted so far
        self.seq = 0                      # admission order on its instance
        self.kv_content = content         # content covering the tokens it will hold in KV
        self.parent = None                # P/D: the request this prefill leg works for
        self.remote = False               # P/D: its prompt's KV arrives from a prefill pod
        self.pd = None                    # P/D: bookkeeping of a disaggregated request
        self.pull = None                  # KV peer pull: (source pod, prompt blocks it holds), else None
        self.base = 0                     # decoding: tokens in KV = base + instance tick
        self.gen = 0                      # bumped on preemption/finish: invalidates stale events
        self.shared_blocks: list[int] = []  # hashes of referenced published blocks (a prefix of its blocks)
        self.shared_run = None            # a group prefix it holds whole (KVStore runs), before shared_blocks
        self.rehash = session is not None  # publish its own blocks on release (a follow-up may hit them)
        self.hit_blocks = 0               # cached blocks found at its latest admission
        self.enqueued = -1
        self.scheduled = -1
        self.first_token = -1
        self.finished = -1
        self.preemptions = 0

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Request({self.id}, in={self.input_len}, out={self.output_len}, {self.state.name})"
