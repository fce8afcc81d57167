"""vLLM v1's scheduler for one engine instance (`Scheduler.schedule()` in
vllm/v1/core/sched/scheduler.py): at each step boundary, which requests run in the next step
and with how many tokens.

A step has one token budget (max_num_batched_tokens) and at most max_num_seqs requests, and is
formed in vLLM's two phases:

1. the running requests, in admission order: each gets its next prefill chunk (capped by
   long_prefill_token_threshold) or one decode token (K + 1 with speculative decoding). When
   the KV store has no block for one, the newest running request (with `preemption: priority`,
   the least urgent) is preempted by recompute: its blocks are freed (they stay in the prefix
   cache), it goes back to the front of the waiting queue, and no request is admitted in that
   step. The walk goes request by request only when it must (budget or KV short, or a request
   still prefilling admitted before a decoder); otherwise all decoders are served at once.
2. admission from the head of the waiting queue while budget, sequences and KV blocks last: a
   newly admitted request prefills from the end of its cached prefix. A request whose prompt
   continues in a lower KV tier (the offloading connector) or on a peer pod (llm-d's P2P pull)
   first leaves the queue until those blocks are on the GPU, as vLLM's connectors do.

`Scheduler` is mixed into `Instance` (instance.py) and works on the instance's own state (`kv`,
`waiting`, `running`, `prefilling`, the decoders' aggregate `n_dec`, `tick`, `phase`), so the
per-step path costs no extra indirection; `Instance` keeps the step boundary, the planned runs
of decode steps and the accounting.
"""
from __future__ import annotations

from ..core import P_ENQUEUE
from .request import BLOCK_MASK, BLOCK_SIZE, Request, State
from .speculative import lookahead_blocks, plan_run


def _chunk(remaining: int, thr: int, budget: int) -> int:
    """Prompt tokens a newly admitted request prefills in this step: the rest of its prompt,
    capped by long_prefill_token_threshold (0: no cap) and the step's token budget (the per-step
    loops over running requests inline the same two caps)."""
    if thr and remaining > thr:
        remaining = thr
    return remaining if remaining < budget else budget


class Scheduler:
    """Batch formation of an `Instance` (mixed in: it has no state of its own)."""

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

    # ---- admission: the reserve, loads from lower tiers, pulls from peers -------------
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
