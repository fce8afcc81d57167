"""One vLLM v1 instance: waiting queue, continuous batching with chunked prefill, paged KV with
prefix caching, recompute preemption.

State changes happen at step boundaries: the boundary event at time t applies the step that
just ended (tokens, first tokens, completions) and forms the next batch. Decoding requests are
not touched one by one: a decoding request holds `base + tick` tokens in KV, where `tick` counts
the instance's steps, so a decode step that only adds a token to each costs O(1); aggregate
sums (context tokens, requests per block phase) are kept up to date incrementally. Requests are
visited one by one only when the budget or the KV store cannot serve every running request
(the exact vLLM walk, with preemption).

This module keeps the instance's state, arrivals and aborts, the step boundary (applying the
step that ended), the planned runs of identical decode steps and the statistics. Forming the
next batch (vLLM's scheduler: which requests run, preemption, admission) is
`scheduler.Scheduler`, which `Instance` mixes in; the waiting queue is `wait_queue.WaitQueue`.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..core import P_STEP
from .kv import KVStore
from .lora import LoraConfig, LoraState
from .offload import CPU_TIER_WEIGHT, OffloadConfig, OffloadTiers
from .request import BLOCK_MASK, BLOCK_SIZE, Content, Request, State, output_key
from .scheduler import Scheduler
from .speculative import SpecConfig, SpecState, advance_planned
from .wait_queue import WaitQueue

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


class EngineSink(Protocol):
    """Where an instance reports its requests' outcomes (the Simulation)."""

    def first_token(self, r: Request, now: int) -> None: ...

    def completed(self, r: Request, now: int) -> None: ...

    def dropped(self, r: Request, now: int, reason: str) -> None:
        """r can never be served (e.g. it does not fit the KV cache)."""

    def start_pull(self, r: Request, inst: Instance, source: int, tokens: int, now: int) -> None:
        """Move the KV of r's prompt tokens [computed - tokens, computed) from pod `source` to
        `inst`; call `inst.kv_arrived(r, t)` when they are there."""


class Instance(Scheduler):
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
