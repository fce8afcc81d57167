"""One vLLM v1 instance: waiting queue, continuous batching with chunked prefill, paged KV with
prefix caching, recompute preemption.

State changes happen at step boundaries: the boundary event at time t applies the step that
just ended (tokens, first tokens, completions) and forms the next batch. Decoding requests are
not touched one by one: a decoding request holds `base + tick` tokens in KV, where `tick` counts
the instance's steps, so a decode step that only adds a token to each costs O(1); aggregate
sums (context tokens, requests per block phase) are kept up to date incrementally. Requests are
visited one by one only when the budget or the KV store cannot serve every running request
(the exact vLLM walk, with preemption).
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..core import P_ENQUEUE, P_STEP
from .kv import KVStore
from .lora import LoraConfig, LoraState
from .offload import CPU_TIER_WEIGHT, OffloadConfig, OffloadTiers
from .request import BLOCK_MASK, BLOCK_SIZE, Content, Request, State, output_key
from .speculative import SpecConfig, SpecState, advance_planned, lookahead_blocks, plan_run

if TYPE_CHECKING:
    from ..slots import StepTimeModel


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    long_prefill_token_threshold: int = 0      # 0 = off
    max_model_len: int = 0                     # 0 = unlimited
    scheduler: str = "fcfs"                    # fcfs | priority | sjf
    preemption: str = "fcfs"                   # fcfs (newest) | priority (least urgent, newest)
    prefix_caching: bool = True                # False: vLLM's --no-enable-prefix-caching
    offload: OffloadConfig | None = None       # KV offload tiers below the GPU (None: off)
    lora: LoraConfig | None = None             # --enable-lora (None: off)
    speculative: SpecConfig | None = None      # --speculative-config (None: off)
    reserve_full_prompt: bool = False          # admit only when the whole prompt's blocks are free
    watermark_blocks: int = 0                  # free blocks an admission must leave


def _chunk(remaining: int, thr: int, budget: int) -> int:
    """Prompt tokens a newly admitted request prefills in this step: the rest of its prompt,
    capped by long_prefill_token_threshold (0: no cap) and the step's token budget (the per-step
    loops over running requests inline the same two caps)."""
    if thr and remaining > thr:
        remaining = thr
    return remaining if remaining < budget else budget


class WaitQueue:
    """The waiting queue: FIFO with preempted requests at the front (fcfs), or ordered by a
    key (priority: most important first, then arrival; sjf: shortest prompt first).
    Entries whose request left (timed out) are dropped lazily when they reach the head."""

    def __init__(self, policy: str):
        self.policy = policy
        self.fifo: deque[Request] = deque()
        self.heap: list[tuple] = []
        self.n = 0
        self._seq = 0

    def _key(self, r: Request) -> tuple:
        if self.policy == "priority":
            return (-r.priority, r.arrival, r.id)
        return (r.target, r.arrival, r.id)

    def push(self, r: Request, front: bool = False) -> None:
        self.n += 1
        if self.policy == "fcfs":
            if front:
                self.fifo.appendleft(r)
            else:
                self.fifo.append(r)
        else:
            heapq.heappush(self.heap, (self._key(r), r))

    def head(self, owner) -> Request | None:
        if self.policy == "fcfs":
            q = self.fifo
            while q:
                r = q[0]
                if r.state is State.QUEUED and r.instance is owner:
                    return r
                q.popleft()
        else:
            h = self.heap
            while h:
                r = h[0][1]
                if r.state is State.QUEUED and r.instance is owner:
                    return r
                heapq.heappop(h)
        return None

    def pop(self) -> None:
        self.n -= 1
        if self.policy == "fcfs":
            self.fifo.popleft()
        else:
            heapq.heappop(self.heap)

    def removed(self) -> None:
        """A queued request left without being popped (its entry is skipped later)."""
        self.n -= 1

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        items = self.fifo if self.policy == "fcfs" else (r for _, r in sorted(self.heap, key=lambda e: e[0]))
        return (r for r in items if r.state is State.QUEUED)


class EngineSink(Protocol):
    """Where an instance reports its requests' outcomes (the Simulation)."""

    def first_token(self, r: Request, now: int) -> None: ...

    def completed(self, r: Request, now: int) -> None: ...

    def dropped(self, r: Request, now: int, reason: str) -> None:
        """r can never be served (e.g. it does not fit the KV cache)."""

    def start_pull(self, r: Request, inst: Instance, source: int, tokens: int, now: int) -> None:
        """Move the KV of r's prompt tokens [computed - tokens, computed) from pod `source` to
        `inst`; call `inst.kv_arrived(r, t)` when they are there."""


class Instance:
    """A vLLM engine. `sink` receives first tokens, completions and drops."""

    MULTI_STEP = True        # plan runs of identical decode steps (False: step one by one)
    MAX_RUN = 512

    def __init__(self, name: str, loop, cfg: EngineConfig, step_model: StepTimeModel, total_blocks: int,
                 sink: EngineSink):
        self.name = name
        self.loop = loop
        self.cfg = cfg
        self.model = step_model
        self.kv = KVStore(total_blocks, caching=cfg.prefix_caching)
        self.offload = OffloadTiers(cfg.offload) if cfg.offload is not None else None
        # requests whose prefix is being loaded from a lower tier (False) or was loaded and waits
        # in the queue again (True); they hold their GPU blocks meanwhile
        self.reloading: dict[Request, bool] = {}
        self.n_loading = 0
        self.pending: dict[int, int] = {}       # block hash being loaded -> when it arrives (µs)
        self.sink = sink
        self.waiting = WaitQueue(cfg.scheduler)
        self.running: dict[Request, None] = {}      # admission order
        self.prefilling: dict[Request, None] = {}   # running requests still computing their prompt
        # decoding requests, in aggregate
        self.tick = 0
        self.n_dec = 0
        self.sum_base = 0                    # sum of base; context = sum_base + n_dec * tick
        self.phase = [0] * BLOCK_SIZE        # decoders by base mod 16: who needs a block at a tick
        self.dec_max_seq = -1                # newest admission among decoders (an upper bound)
        self.finish_heap: list[tuple[int, int, int, Request]] = []
        # the step in flight
        self.busy = False                    # a boundary event is pending
        self.step_open = False
        self.step_chunks: list[Request] = []
        self.starved: dict[Request, None] = {}  # decoders that get no token in the step in flight
        self.step_started = 0
        self.step_end = 0
        self.bgen = 0                        # generation of the pending boundary event
        # planned decode-only steps after the one in flight (durations, µs): runs of identical
        # steps are laid out at once and materialised lazily, exactly as if stepped one by one
        self.plan: list[int] = []
        self.plan_pos = 0
        self.multi_step = self.MULTI_STEP and not getattr(step_model, "stateful", False)
        self.admit_seq = 0
        # counters
        self.steps = 0
        self.busy_us = 0
        self.preemptions = 0
        self.decode_tokens = 0
        self.itl_hist: dict[int, int] = {}   # decode step duration + α2 (µs) -> tokens emitted
        self.step_log: list | None = None    # set to [] to record (start, duration, chunks, decoders)
        self.alpha_out = step_model.output_token_us
        self.lora = LoraState(cfg.lora) if cfg.lora is not None else None
        self.spec: SpecState | None = None   # speculative decoding (enable_speculative)
        self.admit_reserve = cfg.reserve_full_prompt or cfg.watermark_blocks > 0

    def enable_speculative(self, rng) -> None:
        """Turn on the engine's speculative decoding, drawing acceptances from `rng`."""
        self.spec = SpecState(self.cfg.speculative, rng)

    # ---- queries (what a metrics scrape reads) -----------------------------------------
    def scrape(self) -> tuple[int, int, float]:
        """What vLLM's /metrics reports now: requests waiting, requests running, KV-cache use."""
        self.sync()
        return self.waiting.n + self.n_loading, len(self.running), self.kv.usage()

    def lora_info(self) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        """vllm:lora_requests_info now: running adapters, waiting adapters, max_lora."""
        if self.lora is None:
            return (), (), 0
        self.sync()
        return self.lora.info()

    def lookup_prefix(self, r: Request) -> int:
        """Cached leading prompt blocks of r here (the precise prefix signal)."""
        self.sync()
        return self.kv.cached_prefix_blocks(r)

    def lookup_prefix_tiered(self, r: Request) -> float:
        """llm-d's precise view with offload tiers: GPU blocks weigh 1, the CPU-tier blocks that
        continue the run weigh CPU_TIER_WEIGHT (the filesystem tier is not indexed)."""
        n = self.lookup_prefix(r)
        off = self.offload
        if off is None:
            return n
        n_max = (r.target - 1) // BLOCK_SIZE
        if n >= n_max:
            return n
        return n + CPU_TIER_WEIGHT * off.cpu_prefix(r.kv_content.prefix_hashes(n_max)[n:])

    def loading(self):
        """Requests whose prefix is being loaded from a lower tier (out of the queue meanwhile,
        but waiting as vLLM counts them)."""
        return [r for r, back in self.reloading.items() if not back]

    def kv_holders(self):
        """(request, tokens it holds KV for) for every request holding GPU blocks."""
        for r in self.running:
            yield r, self.tokens_in_kv(r)
        for r in self.reloading:
            yield r, r.computed

    def sync(self) -> None:
        """Materialise the planned steps that have ended by now, as seen by the running event
        (events that run before step boundaries at the same time do not see that boundary)."""
        if self.plan_pos < len(self.plan):
            now = self.loop.now
            self._advance(now if self.loop.prio > P_STEP else now - 1)

    def tokens_in_kv(self, r: Request) -> int:
        """Tokens the request holds KV room for, including what the step in flight adds."""
        if r in self.prefilling:
            return r.computed + r.chunk
        t = r.base + self.tick
        sp = self.spec
        if sp is not None:
            if r not in sp.new:
                t += sp.k                    # its lookahead slots
            if self.step_open and r not in self.starved:
                t += sp.s
            return t
        if self.step_open and r not in self.starved:
            t += 1
        return t

    # ---- arrivals ---------------------------------------------------------------------
    def unservable_reason(self, r: Request) -> str:
        mml = self.cfg.max_model_len
        if mml:
            if r.input_len >= mml:
                return f"prompt of {r.input_len} tokens >= max_model_len {mml}"
            if r.input_len + r.output_len > mml:
                return f"prompt + output = {r.input_len + r.output_len} tokens > max_model_len {mml}"
        need = -(-(r.input_len + r.output_len) // BLOCK_SIZE)
        if need > self.kv.usable:
            return f"needs {need} KV blocks, the instance has {self.kv.usable}"
        return ""

    def enqueue(self, r: Request, now: int) -> None:
        reason = self.unservable_reason(r)
        if reason:
            self.sink.dropped(r, now, reason)
            return
        r.instance = self
        r.state = State.QUEUED
        if r.enqueued < 0:
            r.enqueued = now
        self._cut()
        self.waiting.push(r)
        if r.adapter is not None and self.lora is not None:
            self.lora.queued(r.adapter)
        if not self.busy:
            self.busy = True
            self._wake(now)

    def _wake(self, now: int) -> None:
        """An idle instance got work: its step boundary is now. When nothing else is due first
        (the boundary event would be the next one popped), it runs at once."""
        loop = self.loop
        h = loop.heap
        if loop.prio >= P_STEP or (h and h[0][0] == now and h[0][1] <= P_STEP):
            self._boundary_at(now)
            return
        self.bgen += 1
        prio = loop.prio
        loop.prio = P_STEP
        self._boundary(self.bgen, now)
        loop.prio = prio

    # ---- the step boundary ------------------------------------------------------------
    def _boundary_at(self, t: int) -> None:
        self.bgen += 1
        self.loop.at(t, P_STEP, self._boundary, self.bgen)

    def _boundary(self, gen, now: int) -> None:
        if gen != self.bgen:
            return                           # replaced (its run was cut)
        self._advance(now - 1)
        if self.step_open:
            self._finish_step(now)
        self._form_step(now)

    def _advance(self, t: int) -> None:
        """Apply the planned steps whose boundary is at or before t, in bulk: each is a plain
        decode boundary (tick + 1, the next step's KV blocks, its statistics); no request
        completes, is admitted or starves inside a run."""
        plan = self.plan
        i = self.plan_pos
        n = len(plan)
        e = self.step_end
        if i >= n or e > t:
            return
        if self.spec is not None:
            return advance_planned(self, t)
        tick = self.tick
        phase = self.phase
        hist = self.itl_hist
        a = self.alpha_out
        nd = self.n_dec
        log = self.step_log
        blocks = busy = 0
        start = e
        while i < n and e <= t:
            tick += 1
            blocks += phase[(-tick) & BLOCK_MASK]
            dt = plan[i]
            i += 1
            k = dt + a
            hist[k] = hist.get(k, 0) + nd
            if log is not None:
                log.append((e, dt, [], nd))
            start = e
            e += dt
            busy += dt
        m = i - self.plan_pos
        self.tick = tick
        if blocks:
            self.kv._take_free(blocks)
        self.decode_tokens += nd * m
        self.steps += m
        self.busy_us += busy
        self.step_started = start
        self.step_end = e
        if i >= n:
            self.plan = []
            self.plan_pos = 0
        else:
            self.plan_pos = i

    def busy_until(self, t: int) -> int:
        """Time spent in steps up to time t (a step in flight at t counts up to t only)."""
        return self.busy_us - max(0, self.step_end - t)

    def _cut(self) -> None:
        """Something outside the batch changed (an arrival, an abort): keep the planned steps
        that have started, drop the rest, and put the boundary at the end of the current one."""
        if self.plan_pos < len(self.plan):
            self.sync()
            if self.spec is not None:        # the dropped steps' draws are drawn again later
                self.spec.draws.give_back(len(self.plan) - self.plan_pos)
                self.spec.plan_s = []
            self.plan = []
            self.plan_pos = 0
            self._boundary_at(self.step_end)

    def _account(self, start: int, dt: int, chunks, n_dec: int) -> None:
        """Book one step: statistics, and the step in flight."""
        if n_dec:
            k = dt + self.alpha_out
            self.itl_hist[k] = self.itl_hist.get(k, 0) + n_dec
            self.decode_tokens += n_dec
            if self.spec is not None and self.spec.s > 1:
                # the accepted drafts arrive with the step's first token: ITL per emitted token
                extra = n_dec * (self.spec.s - 1)
                self.itl_hist[self.alpha_out] = self.itl_hist.get(self.alpha_out, 0) + extra
                self.decode_tokens += extra
        if self.step_log is not None:
            self.step_log.append((start, dt, [(r.id, r.chunk) for r in chunks], n_dec))
        self.steps += 1
        self.busy_us += dt
        self.step_open = True
        self.step_started = start
        self.step_end = start + dt

    def _finish_step(self, now: int) -> None:
        self.step_open = False
        sink = self.sink
        tick = self.tick
        sp = self.spec
        adv = sp.s if sp is not None else 1  # tokens each decoder advanced in the step
        self.tick = tick + adv
        if self.starved:
            phase = self.phase
            for r in self.starved:           # they got no token: hold their place
                phase[r.base & BLOCK_MASK] -= 1
                r.base -= adv
                phase[r.base & BLOCK_MASK] += 1
                self.sum_base -= adv
                heapq.heappush(self.finish_heap, (self._finish_tick(r), r.id, r.gen, r))
            self.starved = {}
        fh = self.finish_heap
        last = tick + adv - 1
        while fh and fh[0][0] <= last:
            key, _, gen, r = heapq.heappop(fh)
            if r.gen == gen and r.state is State.RUNNING and r not in self.prefilling:
                if adv > 1 and key < last:   # it needed fewer tokens than the step accepted
                    self._unemit(last - key)
                r.generated = r.output_len
                self._leave(r, now)
                sink.completed(r, now)
        for r in self.step_chunks:
            if r.state is not State.RUNNING or r not in self.prefilling:
                continue
            r.computed += r.chunk
            r.chunk = 0
            if r.computed >= r.target:
                r.generated += 1
                if r.first_token < 0:
                    r.first_token = now + self.alpha_out
                    sink.first_token(r, now)
                if r.generated >= r.output_len:
                    self._leave(r, now)
                    sink.completed(r, now)
                else:
                    del self.prefilling[r]
                    r.base = r.computed - self.tick
                    self._dec_add(r)
                    if sp is not None:
                        sp.joined(r, r.computed)  # its lookahead slots come with its first decode step
                    if r.seq > self.dec_max_seq:
                        self.dec_max_seq = r.seq
                    heapq.heappush(fh, (self._finish_tick(r), r.id, r.gen, r))
        self.step_chunks = []

    def _unemit(self, n: int) -> None:
        """Take back n tokens booked for a finishing request that did not need them."""
        a = self.alpha_out
        self.itl_hist[a] -= n
        if not self.itl_hist[a]:
            del self.itl_hist[a]
        self.decode_tokens -= n

    def _finish_tick(self, r: Request) -> int:
        # Tick of the step that emits the last token: KV then holds input + output - 1 tokens.
        return r.input_len + r.output_len - 2 - r.base

    def _dec_add(self, r: Request) -> None:
        self.n_dec += 1
        self.sum_base += r.base
        self.phase[r.base & BLOCK_MASK] += 1

    def _dec_remove(self, r: Request) -> None:
        self.n_dec -= 1
        self.sum_base -= r.base
        self.phase[r.base & BLOCK_MASK] -= 1
        if self.n_dec == 0:
            self.dec_max_seq = -1

    def _leave(self, r: Request, now: int) -> None:
        """Take a running request out of the batch and free its KV."""
        tokens = self.tokens_in_kv(r)
        del self.running[r]
        if r in self.prefilling:
            del self.prefilling[r]
        else:
            r.generated = max(r.generated, min(r.output_len, r.base + self.tick - r.input_len + 1))
            self._dec_remove(r)
            self.starved.pop(r, None)
            if self.spec is not None:
                self.spec.settled(r)
        r.gen += 1
        if r.adapter is not None and self.lora is not None:
            self.lora.left(r.adapter)
        content = None
        if r.rehash:
            content = self._full_content(r)
        if self.offload is not None:
            self._offload(r, tokens)
        self.kv.release(r, tokens, content)

    def _offload(self, r: Request, tokens: int) -> None:
        """Copy the request's full blocks (its prompt's only, in prompt mode) to the CPU tier."""
        off = self.offload
        n = tokens // BLOCK_SIZE
        if off.prompt_only:
            content = r.kv_content
            n = min(n, r.input_len // BLOCK_SIZE)
        else:
            content = self._full_content(r)
        n = min(n, content.length // BLOCK_SIZE)
        if n > 0:
            off.store(content.prefix_hashes(n))

    def _full_content(self, r: Request) -> Content:
        """The request's tokens so far: its prompt and the outputs it has generated."""
        if r.generated <= 0:
            return r.content
        kc = r.kv_content
        if kc.length >= r.input_len + r.generated:
            return kc
        return Content(r.content, ((output_key(r.id), r.generated),))

    def abort(self, r: Request, now: int) -> None:
        """The client gave up (timeout) or the request is withdrawn."""
        self._cut()
        if r.state is State.QUEUED:
            loaded = self.reloading.pop(r, None)
            if loaded is False:
                self.n_loading -= 1               # its load is still running: not in the queue
            else:
                self.waiting.removed()
            if loaded is not None:
                self.kv.release(r, r.computed)
                r.computed = 0
            if r.adapter is not None and self.lora is not None:
                self.lora.unqueued(r.adapter)     # a loading request still counts as waiting
        elif r.state is State.RUNNING:
            self._leave(r, now)
        r.state = State.CREATED
        if not self.running and self.waiting.n and not self.busy:
            self.busy = True
            self._boundary_at(now)

    # ---- forming a step -----------------------------------------------------------------
    def _form_step(self, now: int) -> None:
        cfg = self.cfg
        kv = self.kv
        budget = cfg.max_num_batched_tokens
        thr = cfg.long_prefill_token_threshold
        chunks: list[Request] = []
        preempted = False
        n_dec = self.n_dec
        sp = self.spec
        if sp is None:
            dec_blocks = self.phase[(-self.tick) & BLOCK_MASK] if n_dec else 0
            dec_tokens = n_dec
        else:
            # the step's advance, drawn now; each decoder verifies K + 1 tokens and tops up its KV
            sp.s = sp.draws.take() if n_dec else 1
            dec_blocks = lookahead_blocks(self.phase, self.tick, sp.s, sp.k) + sp.owed if n_dec else 0
            dec_tokens = n_dec * sp.width

        # Phase 1, fast path: every decoder precedes every prefilling request in batch order,
        # and budget and KV serve all of them, so order does not matter.
        fast = dec_tokens <= budget and dec_blocks <= kv.free_count
        if fast and self.prefilling:
            first = next(iter(self.prefilling))
            fast = first.seq > self.dec_max_seq
        if fast:
            b = budget - dec_tokens
            blocks = dec_blocks
            for r in self.prefilling:
                if b <= 0:
                    break
                n = r.target - r.computed
                if thr and n > thr:
                    n = thr
                if n > b:
                    n = b
                have = r.computed
                blocks += -(-(have + n) // BLOCK_SIZE) - (-(-have // BLOCK_SIZE))
                r.chunk = n
                chunks.append(r)
                b -= n
            if blocks <= kv.free_count:
                if dec_blocks:
                    kv._take_free(dec_blocks)
                if sp is not None and sp.new:
                    sp.settle_all()
                for r in chunks:
                    kv.extend_prefill(r, r.chunk)
                budget = b
            else:
                for r in chunks:
                    r.chunk = 0
                chunks = []
                fast = False
        if not fast:
            budget, preempted = self._walk_running(now, budget, chunks)
            chunks[:] = [r for r in chunks if r.state is State.RUNNING]

        # Phase 2: admit from the head of the waiting queue (never in a step that preempted).
        running = self.running
        waiting = self.waiting
        max_seqs = cfg.max_num_seqs
        offload = self.offload
        reloading = self.reloading
        lora = self.lora
        skipped = None
        while budget > 0 and len(running) < max_seqs and not preempted:
            r = waiting.head(self)
            if r is None:
                break
            if lora is not None and r.adapter is not None and not lora.can_join(r.adapter):
                # one adapter too many for this batch (max_loras): skip it, keep its place
                waiting.pop()
                if skipped is None:
                    skipped = []
                skipped.append(r)
                continue
            resumed = False
            may_load = offload is not None
            if reloading and reloading.pop(r, None):
                # its prefix was loaded from a lower tier: it holds those blocks already
                start = r.computed
                n = _chunk(r.target - start, thr, budget)
                if kv.extend_prefill(r, n):
                    resumed = True
                elif running:
                    reloading[r] = True
                    break
                else:
                    # nothing runs that could free blocks: give them back and compute it afresh
                    kv.release(r, start)
                    r.computed = 0
                    may_load = False
            if not resumed:
                hit = kv.cached_prefix_blocks(r)
                start = hit * BLOCK_SIZE
                if r.remote:
                    # P/D: the prompt's KV came from a prefill pod; only the last prompt token is
                    # recomputed here (to sample the first output token).
                    if not kv.admit(r, hit, r.target - start):
                        break
                    r.remote = False
                    start, n = r.target - 1, 1
                else:
                    if r.pull is not None:
                        pulling = self._start_pull(r, hit)
                        if pulling:
                            if pulling < 0:
                                break             # no room for the blocks to pull
                            continue              # it waits for its KV, as for a load
                    if may_load:
                        loading = self._start_load(r, hit, now)
                        if loading:
                            if loading < 0:
                                break             # no room for the blocks to load
                            continue              # vLLM skips it until its load is done
                    n = _chunk(r.target - start, thr, budget)
                    if self.admit_reserve and not self._reserve_ok(r, hit, n):
                        break
                    if not kv.admit(r, hit, n):
                        break
            waiting.pop()
            if lora is not None and r.adapter is not None:
                lora.admit(r.adapter)
            r.state = State.RUNNING
            r.computed = start
            r.chunk = n
            self.admit_seq += 1
            r.seq = self.admit_seq
            if r.scheduled < 0:
                r.scheduled = now
            running[r] = None
            self.prefilling[r] = None
            chunks.append(r)
            budget -= n
        if skipped:
            for r in reversed(skipped):
                waiting.push(r, front=True)

        if not running:
            self.busy = False
            return
        # Step time from the batch description.
        n_dec = self.n_dec
        ctx = self.sum_base + n_dec * self.tick
        if self.starved:
            n_dec -= len(self.starved)
            ctx -= sum(r.base + self.tick for r in self.starved)
        if chunks:
            pre = [(r.chunk, r.computed, r.target) for r in chunks]
            dt = self.model.step_time_us(pre, n_dec, ctx)
        else:
            dt = self.model.decode_step_us(n_dec, ctx)
        if lora is not None:
            dt = lora.step_us(dt)
        self._account(now, dt, chunks, n_dec)
        self.step_chunks = chunks
        end = now + dt
        if self.multi_step and not chunks and not self.prefilling and not self.starved and not self.waiting.n:
            end += self._plan_run(n_dec, ctx) if sp is None else plan_run(self, n_dec, ctx)
        self._boundary_at(end)

    def _reserve_ok(self, r: Request, hit: int, n: int) -> bool:
        """vLLM's admission reserve: with reserve_full_prompt the blocks of the whole prompt (not
        only of its first chunk) must be free, and an admission must leave watermark_blocks free."""
        kv = self.kv
        upto = r.target if self.cfg.reserve_full_prompt else hit * BLOCK_SIZE + n
        need = -(-upto // BLOCK_SIZE) - hit
        return kv.free_count - kv.lookup_claims() - need >= self.cfg.watermark_blocks

    def _start_load(self, r: Request, hit: int, now: int) -> int:
        """As vLLM's offloading connector: when the head request's prompt continues, after its
        `hit` GPU blocks, with blocks in a lower tier, allocate GPU blocks for them (published
        at once, so that requests sharing them do not load them again) and load them
        asynchronously. The request leaves the queue until the load is done, then rejoins it at
        the front holding those blocks: its prefill starts later by the load time, no step is
        lengthened. A request whose GPU hits include blocks still being loaded waits for them
        the same way. Returns 1 (it waits for a load), 0 (nothing to wait for) or -1 (the GPU
        has no room for the blocks)."""
        n_max = (r.target - 1) // BLOCK_SIZE      # the last prompt token is always computed
        hashes = r.kv_content.prefix_hashes(n_max)
        ready = 0
        pending = self.pending
        if pending and hit:
            for h in hashes[:hit]:
                t = pending.get(h, 0)
                if t > ready:
                    ready = t
        off = self.offload
        c, f = off.lookup(hashes[hit:]) if hit < n_max else (0, 0)
        k = c + f
        if not k and ready <= now:
            return 0
        kv = self.kv
        if k + kv.lookup_claims() > kv.free_count or not kv.admit(r, hit, 0):
            return -1
        self.waiting.pop()
        r.computed = hit * BLOCK_SIZE
        if k:
            kv.extend_prefill(r, k * BLOCK_SIZE)  # room checked above
        r.computed = (hit + k) * BLOCK_SIZE
        r.chunk = 0
        r.hit_blocks = hit + k
        self.reloading[r] = False
        self.n_loading += 1
        if k:
            loaded = hashes[hit:hit + k]
            end = now + off.load(loaded, c, f)
            for h in loaded:
                pending[h] = end
            if end > ready:
                ready = end
        self.loop.at(ready, P_ENQUEUE, self._loaded, r)
        return 1

    def _start_pull(self, r: Request, hit: int) -> int:
        """llm-d's P2P KV sharing: a peer holds more of r's prompt than the `hit` blocks cached
        here (r.pull, set by the gateway), so the blocks between are pulled over the network
        instead of recomputed: allocated now, r out of the queue until they arrive (as vLLM's
        connector does with a load), then back at the front. Returns 1 (pulling), 0 (nothing to
        pull) or -1 (no room for the blocks)."""
        source, held = r.pull
        k = min(held, (r.target - 1) // BLOCK_SIZE) - hit     # the last prompt token is computed here
        if k <= 0:
            r.pull = None
            return 0
        kv = self.kv
        if k + kv.lookup_claims() > kv.free_count or not kv.admit(r, hit, 0):
            return -1
        r.pull = None
        self.waiting.pop()
        r.computed = hit * BLOCK_SIZE
        kv.extend_prefill(r, k * BLOCK_SIZE)      # room checked above
        r.computed = (hit + k) * BLOCK_SIZE
        r.chunk = 0
        self.reloading[r] = False
        self.n_loading += 1
        self.sink.start_pull(r, self, source, k * BLOCK_SIZE, self.loop.now)
        return 1

    def kv_arrived(self, r: Request, now: int) -> None:
        """The blocks r pulled from a peer are here (ignored if r left meanwhile)."""
        self._loaded(r, now)

    def _loaded(self, r: Request, now: int) -> None:
        """The blocks r waited for are on the GPU: it rejoins the queue at the front."""
        pending = self.pending
        for h in [h for h, t in pending.items() if t <= now]:
            del pending[h]
        if self.reloading.get(r) is not False:
            return                                # it left (timed out) meanwhile
        self.reloading[r] = True
        self.n_loading -= 1
        self._cut()
        self.waiting.push(r, front=True)
        if not self.busy:
            self.busy = True
            self._wake(now)

    def next_finish(self) -> int | None:
        """The finish key (tick) of the decoder that completes next, None if none does."""
        fh = self.finish_heap
        while fh and (fh[0][2] != fh[0][3].gen or fh[0][3].state is not State.RUNNING):
            heapq.heappop(fh)                # stale entries (preempted or left)
        return fh[0][0] if fh else None

    def _plan_run(self, n_dec: int, ctx: int) -> int:
        """Lay out the decode steps that follow the one just formed, up to the one in which the
        next request completes, while the free KV blocks cover every step. Returns their total."""
        key = self.next_finish()
        if key is None:
            return 0
        extra = min(key - self.tick, self.MAX_RUN)
        steps = extra
        free = self.kv.free_count
        if free < n_dec * -(-extra // BLOCK_SIZE):  # each decoder needs a block every 16 steps
            phase = self.phase
            tick = self.tick
            steps = 0
            while steps < extra:
                free -= phase[(-(tick + steps + 1)) & BLOCK_MASK]
                if free < 0:
                    break
                steps += 1
        if steps <= 0:
            return 0
        plan = self.model.decode_run_us(n_dec, ctx, steps)
        lora = self.lora
        if lora is not None and lora.factor != 1.0:
            plan = [lora.step_us(dt) for dt in plan]
        self.plan = plan
        self.plan_pos = 0
        return sum(plan)

    def _walk_running(self, now: int, budget: int, chunks: list[Request]):
        """Phase 1 the exact way: running requests in batch order, each a prefill chunk or one
        decode token, preempting the newest (or least urgent) request when KV runs out."""
        kv = self.kv
        thr = self.cfg.long_prefill_token_threshold
        tick = self.tick
        sp = self.spec
        granted: set[Request] = set()
        preempted = False
        for r in list(self.running):
            if budget <= 0:
                break
            if r.state is not State.RUNNING:      # preempted earlier in this walk
                continue
            if r in self.prefilling:
                n = r.target - r.computed
                if thr and n > thr:
                    n = thr
                if n > budget:
                    n = budget
                budget, preempted = self._room(r, lambda: kv.extend_prefill(r, n), now, granted, budget, preempted)
                if r.state is not State.RUNNING:
                    break
                r.chunk = n
                chunks.append(r)
                budget -= n
            elif sp is not None:
                if budget < sp.width:
                    continue                      # no budget for its drafts: it waits this step
                t = r.base + tick
                held = 0 if r in sp.new else sp.k
                need = -(-(t + sp.s + sp.k) // BLOCK_SIZE) - (-(-(t + held) // BLOCK_SIZE))
                if need:
                    budget, preempted = self._room(r, lambda: kv.free_count >= need, now, granted, budget,
                                                   preempted)
                    if r.state is not State.RUNNING:
                        break
                    kv._take_free(need)
                sp.settled(r)
                granted.add(r)
                budget -= sp.width
            else:
                if (r.base + tick) % BLOCK_SIZE == 0:
                    budget, preempted = self._room(r, lambda: kv.free_count >= 1, now, granted, budget, preempted)
                    if r.state is not State.RUNNING:
                        break
                    kv._take_free(1)
                granted.add(r)
                budget -= 1
        self.starved = {r: None for r in self.running if r not in self.prefilling and r not in granted}
        return budget, preempted

    def _room(self, r: Request, fits, now: int, granted: set, budget: int, preempted: bool):
        """Preempt victims until `fits()` (which allocates on success) holds or `r` itself was
        preempted. Returns the budget with victims' grants given back, and whether any went."""
        while not fits():
            victim = self._victim()
            budget += self._preempt(victim, now, granted)
            preempted = True
            if victim is r:
                break
        return budget, preempted

    def _victim(self) -> Request:
        if self.cfg.preemption == "priority":
            return max(self.running, key=lambda r: (-r.priority, r.arrival))
        return next(reversed(self.running))

    def _preempt(self, r: Request, now: int, granted: set) -> int:
        """Recompute preemption: free the victim's KV (its blocks stay cached), put it back at
        the front of the queue. Returns the budget it had been granted in this step."""
        if r in self.prefilling:
            returned = r.chunk
            tokens = r.computed + r.chunk
        elif self.spec is not None:
            sp = self.spec
            step = r in granted
            returned = sp.width if step else 0
            tokens = r.base + self.tick + (0 if r in sp.new else sp.k) + (sp.s if step else 0)
            granted.discard(r)
            sp.settled(r)
            r.generated = r.base + self.tick - r.input_len + 1
        else:
            returned = 1 if r in granted else 0
            tokens = r.base + self.tick + returned
            granted.discard(r)
            r.generated = tokens - r.input_len + 1 - returned
        del self.running[r]
        if r in self.prefilling:
            del self.prefilling[r]
        else:
            self._dec_remove(r)
        r.gen += 1
        r.chunk = 0
        if r.adapter is not None and self.lora is not None:
            self.lora.left(r.adapter)
            self.lora.queued(r.adapter)
        # Everything it held will be recomputed: prompt plus the outputs emitted so far.
        full = self._full_content(r)
        if self.offload is not None:
            self._offload(r, tokens)
        self.kv.release(r, tokens, full)
        if r.generated > 0:
            r.kv_content = full
            r.target = r.input_len + r.generated
        r.computed = 0
        r.state = State.QUEUED
        r.preemptions += 1
        self.preemptions += 1
        self.waiting.push(r, front=True)
        return returned
