"""The request source: a `Workload`'s (clients.py) requests, generated lazily, in arrival order;
follow-ups (session turns, closed-loop users' next requests) as their predecessors end.

Each client draws from its own named streams, so adding a client or changing a policy never
shifts another client's requests:

- `arrivals/<client>`: inter-arrival gaps (open-loop clients);
- `lengths/<client>`: input then output lengths, in chunks of 1024 requests;
- `sessions/<client>`: the follow-up turns of each session (lengths and think times), drawn when
  the session's first turn is generated, so they do not depend on the order turns complete in;
- `users/<client>/<u>`: closed-loop user u's lengths and think times.

Token content (see engine.request.Content): a prefix group's shared prefix is
`Content(None, ((negative key, prefix_tokens),), shared=True)`, one key per group name, shared
across clients; a request's own prompt segment has key `prompt_key(rid)`, its output `output_key(rid)`
(blis_gym.sim.engine.request).
"""
from __future__ import annotations

import heapq

import numpy as np

from ...errors import ConfigError
from ..engine.request import Content, Request, output_key, prompt_key
from .clients import Client, Workload
from .distributions import CHUNK, ThinkTime


class Session:
    """A conversation in flight (`req.session`): its id, client and pre-drawn follow-up turns."""
    __slots__ = ("accumulate", "client", "id", "ins", "open_loop", "outs", "prefix", "tenant", "thinks", "turns")

    def __init__(self, sid, client, turns, ins, outs, thinks, accumulate, prefix, tenant, open_loop=False):
        self.id = sid
        self.open_loop = open_loop
        self.client = client
        self.turns = turns
        self.ins = ins
        self.outs = outs
        self.thinks = thinks
        self.accumulate = accumulate
        self.prefix = prefix
        self.tenant = tenant

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Session({self.id}, {self.client}, turns={self.turns})"


class TraceSession:
    """`req.session` of replayed requests that share a trace's session id."""
    __slots__ = ("full", "id", "name", "turns")

    def __init__(self, sid: int, name: str):
        self.id = sid
        self.name = name
        self.full: Content | None = None      # previous turn's prompt + output
        self.turns = 0                        # turns replayed so far


# ---- per-client streams ------------------------------------------------------------------------
class _Stream:
    """Yields a client's open-loop arrivals: `t` is the next arrival time (None: no more)."""
    t: int | None = None

    def pop(self, src: WorkloadSource, rid: int) -> Request:
        raise NotImplementedError


class _OpenStream(_Stream):
    def __init__(self, src: WorkloadSource, c: Client, arrival):
        self.c = c
        st = src.streams
        self.rng_arr = st.get(f"arrivals/{c.name}")
        self.rng_len = st.get(f"lengths/{c.name}")
        self.clock = arrival.clock()
        self.prefix = src.client_prefix(c)
        self.priority = src.w.priority(c.slo_class)
        self.k = 0
        self.ended = False                    # no arrivals after the current chunk
        if c.windows is not None:             # past this, dropping arrivals until a window opens is moot
            self.until = min(c.windows.end, src.w.horizon_us or c.windows.end)
        sc = c.session
        if sc is not None:
            self.rng_ses = st.get(f"sessions/{c.name}")
            self.think = ThinkTime.of(sc.think_time)
            if sc.turns_dist is not None:
                self.rng_turns = st.get(f"sessions/{c.name}/turns")
        if c.cycle:
            self.cyc = [(src.group_prefix(g, c.prefix_tokens), ten) for g, ten in c.cycle]
            self.qkeys: list = [None] * len(c.cycle)
        self.pick = c.adapters.sampler(lambda: st.get(f"adapters/{c.name}")) if c.adapters is not None else None
        self._fill()

    def _fill(self) -> None:
        c = self.c
        while True:
            times = self.clock.take(self.rng_arr, CHUNK)
            ins = c.input.sample(self.rng_len, CHUNK)
            outs = c.output.sample(self.rng_len, CHUNK)
            m = len(times)
            sc = c.session
            if sc is not None and sc.turns > 1:
                k = sc.turns - 1
                fi = (sc.new_input or c.input).sample(self.rng_ses, CHUNK * k).reshape(CHUNK, k)[:m]
                fo = c.output.sample(self.rng_ses, CHUNK * k).reshape(CHUNK, k)[:m]
                th = self.think.sample_us(self.rng_ses, CHUNK * k).reshape(CHUNK, k)[:m]
            keep = slice(0, m)
            if c.windows is not None:            # drop arrivals outside the windows; none after the last
                keep = c.windows.active(times)
                if m and times[-1] >= self.until:
                    self.ended = True
            self._t = times[keep].tolist()
            self._in = np.maximum(1, ins[:m][keep]).tolist()
            self._out = np.maximum(1, outs[:m][keep]).tolist()
            if sc is not None and sc.turns > 1:
                self._fi = np.maximum(1, fi[keep]).tolist()
                self._fo = np.maximum(1, fo[keep]).tolist()
                self._th = th[keep].tolist()
                if sc.turns_dist is not None:
                    self._nt = sc.turns_dist.sample(self.rng_turns, CHUNK)[:m][keep].tolist()
            self.ended = self.ended or self.clock.done
            if self._t or self.ended:
                break
        self._i = 0
        self.t = self._t[0] if self._t else None

    def pop(self, src, rid):
        c = self.c
        i = self._i
        t, n_in, n_out = self._t[i], self._in[i], self._out[i]
        prefix, tenant = self.prefix, c.tenant
        content = None
        if c.cycle:
            j = self.k % len(self.cyc)
            prefix, tenant = self.cyc[j]
        adapter = None
        if self.pick is not None:
            adapter = self.pick()
            prefix = src.adapter_prefix(prefix, adapter)
        if c.cycle and c.repeat_prompts:
            if self.qkeys[j] is None:
                self.qkeys[j] = src.new_key()
            content = Content(prefix, ((self.qkeys[j], n_in),))
        if content is None:
            content = Content(prefix, ((prompt_key(rid), n_in),))
        sess = None
        sc = c.session
        turns = 0
        if sc is not None:
            turns = sc.turns if sc.turns_dist is None or sc.turns == 1 else self._nt[i]
            if turns > 1:
                sess = Session(src.new_session_id(), c.name, turns, self._fi[i], self._fo[i], self._th[i],
                               sc.accumulate, prefix, tenant, sc.open_loop)
            else:
                sess = Session(src.new_session_id(), c.name, 1, (), (), (), sc.accumulate, prefix, tenant)
        req = Request(rid, t, content.length, n_out, content, slo_class=c.slo_class, priority=self.priority,
                      tenant=tenant, client=c.name, session=sess, turn=0,
                      deadline=t + c.timeout_us if c.timeout_us else 0)
        req.adapter = adapter
        if sess is not None:
            req.rehash = turns > 1 and sc.accumulate
            if sess.open_loop:
                src.schedule_round(req)
            else:
                src.live += 1
        elif c.repeat_prompts:
            req.rehash = True
        self.k += 1
        self._i = i + 1
        if sc is not None and sc.single:          # the client's one session has started
            self.t = None
        elif self._i >= len(self._t):
            if self.ended:
                self.t = None
            else:
                self._fill()
        else:
            self.t = self._t[self._i]
        return req


class _User:
    __slots__ = ("adapter", "i", "ins", "outs", "prefix", "rng", "stream", "think", "thinks", "u")

    def __init__(self, u: int, stream: _ClosedStream, rng):
        self.u = u
        self.stream = stream
        self.rng = rng
        self.i = 64
        self.think = 0                # think time after the request in flight (µs)
        self.adapter = None           # the LoRA adapter all its requests name
        self.prefix = stream.prefix

    def draw(self):
        """(input, output, think_us) of this user's next request."""
        if self.i >= 64:
            c = self.stream.c
            self.ins = np.maximum(1, c.input.sample(self.rng, 64)).tolist()
            self.outs = np.maximum(1, c.output.sample(self.rng, 64)).tolist()
            self.thinks = self.stream.think.sample_us(self.rng, 64).tolist()
            self.i = 0
        i = self.i
        self.i += 1
        return self.ins[i], self.outs[i], self.thinks[i]


class _ClosedStream(_Stream):
    """Closed-loop users: their first requests are open-loop arrivals, the rest follow-ups."""

    def __init__(self, src, c: Client):
        self.c = c
        cl = c.closed_loop
        self.think = ThinkTime.of(cl.think_time)
        self.prefix = src.client_prefix(c)
        self.users = [_User(u, self, src.streams.get(f"users/{c.name}/{u}")) for u in range(cl.users)]
        if c.adapters is not None:
            pick = c.adapters.sampler(lambda: src.streams.get(f"adapters/{c.name}"))
            for user in self.users:
                user.adapter = pick()
                user.prefix = src.adapter_prefix(self.prefix, user.adapter)
        self.starts = [int(round(u * self.think.mean * 1e6 / cl.users)) for u in range(cl.users)]
        self.priority = src.w.priority(c.slo_class)
        self.next_user = 0
        self.t = self.starts[0]

    def make(self, src, user: _User, rid: int, t: int) -> Request:
        c = self.c
        n_in, n_out, user.think = user.draw()
        content = Content(user.prefix, ((prompt_key(rid), n_in),))
        req = Request(rid, t, content.length, n_out, content, slo_class=c.slo_class, priority=self.priority,
                      tenant=c.tenant, client=c.name, deadline=t + c.timeout_us if c.timeout_us else 0)
        req.adapter = user.adapter
        src.owner[rid] = user
        return req

    def pop(self, src, rid):
        u = self.users[self.next_user]
        req = self.make(src, u, rid, self.t)
        src.live += 1
        self.next_user += 1
        self.t = self.starts[self.next_user] if self.next_user < len(self.users) else None
        return req


class _TraceStream(_Stream):
    """Replays a trace's rows (read in full), converting them to Python values in chunks."""

    def __init__(self, src, c: Client):
        self.c = c
        self.d = d = c.trace
        self.n = len(d.arrival_us)
        self.prio = [src.w.priority(s) for s in d.slo_names]
        for j, s in enumerate(d.slo_names):
            if s not in src.w.priorities:
                row = int(np.argmax(d.slo == j))
                raise ConfigError("trace", f"{d.where(row)}: unknown slo_class {s!r}; use one of "
                                           f"{list(src.w.priorities)}")
        self.prio_default = src.w.priority(c.slo_class)
        self.groups = [src.group_key(g) for g in d.group_names]
        self.prefix_default = src.client_prefix(c)
        self.sessions: dict[int, TraceSession] = {}
        self.base = 0
        self._fill()

    def _fill(self) -> None:
        d, a, b = self.d, self.base, min(self.base + CHUNK, self.n)
        self._rows = list(zip(d.arrival_us[a:b].tolist(), d.input[a:b].tolist(), d.output[a:b].tolist(),
                              d.group[a:b].tolist(), d.prefix[a:b].tolist(), d.session[a:b].tolist(),
                              d.slo[a:b].tolist(), d.tenant[a:b].tolist()))
        self._i = 0
        self.t = self._rows[0][0] if self._rows else None

    def pop(self, src, rid):
        c, d = self.c, self.d
        t, n_in, n_out, g, npre, s, k, ten = self._rows[self._i]
        n_in = max(1, n_in)
        n_out = max(1, n_out)
        if g >= 0 and npre > 0:
            prefix = src.group_prefix(d.group_names[g], npre)
        elif npre > 0:
            prefix = src.group_prefix(c.prefix_group or "shared", npre)
        else:
            prefix = self.prefix_default if g < 0 else None
        sess = None
        turn = 0
        content = None
        if s >= 0:
            sess = self.sessions.get(s)
            if sess is None:
                sess = self.sessions[s] = TraceSession(src.new_session_id(), d.session_names[s])
            prev = sess.full
            if prev is not None and n_in > prev.length:
                content = Content(prev, ((prompt_key(rid), n_in - prev.length),))
        if content is None:
            own = n_in - (prefix.length if prefix is not None else 0)
            if own < 0:
                prefix, own = None, n_in
            content = Content(prefix, ((prompt_key(rid), own),))
        if sess is not None:
            turn = sess.turns
            sess.turns += 1
            sess.full = Content(content, ((output_key(rid), n_out),))
        req = Request(rid, t, content.length, n_out, content,
                      slo_class=d.slo_names[k] if k >= 0 else c.slo_class,
                      priority=self.prio[k] if k >= 0 else self.prio_default,
                      tenant=d.tenant_names[ten] if ten >= 0 else c.tenant, client=c.name,
                      session=sess, turn=turn, deadline=t + c.timeout_us if c.timeout_us else 0)
        self._i += 1
        if self._i >= len(self._rows):
            self.base += len(self._rows)
            self._fill()
        else:
            self.t = self._rows[self._i][0]
        return req


# ---- the source ----------------------------------------------------------------------------------
class WorkloadSource:
    """Yields the workload's open-loop requests in arrival order (ties: client order) and, via
    `finished`, the follow-ups of sessions and closed-loop users."""

    def __init__(self, workload: Workload, streams):
        workload.validate()
        self.w = workload
        self.streams = streams
        self.count = 0
        self.live = 0                 # sessions and closed-loop users that may send more
        self.owner: dict[int, _User] = {}
        self._keys: dict[str, int] = {}
        self._prefixes: dict[tuple[str, int], Content] = {}
        self._salted: dict[tuple[int, str], Content] = {}
        self._next_key = -2          # never -1: in CPython hash(-1) == hash(-2), which would alias two groups
        self._sessions = 0
        # group keys in client order, so a group's key does not depend on which request comes first
        for c in workload.clients:
            if c.kind != "trace" and (c.prefix_group or c.prefix_tokens):
                self.group_key(self._group_name(c))
            for g, _ in c.cycle:
                self.group_key(g)
        self._rounds: list = []       # (arrival, session id, previous turn) of open-loop sessions' next turns
        self._heap: list = []
        for i, (c, a) in enumerate(zip(workload.clients, workload.arrivals())):
            if c.kind == "trace":       # a trace of requests, or one that streams itself (agent sessions)
                s = c.trace.stream(self, c) if hasattr(c.trace, "stream") else _TraceStream(self, c)
            elif c.kind == "closed-loop":
                s = _ClosedStream(self, c)
            else:
                s = _OpenStream(self, c, a)
            if s.t is not None:
                self._heap.append((s.t, i, s))
        heapq.heapify(self._heap)

    # ---- content helpers ----------------------------------------------------------------
    def new_key(self) -> int:
        k = self._next_key
        self._next_key -= 1
        return k

    def group_key(self, name: str) -> int:
        k = self._keys.get(name)
        if k is None:
            k = self._keys[name] = self.new_key()
        return k

    def group_names(self) -> dict[int, str]:
        """Prefix group key -> its name, for every group the workload has named so far."""
        return {k: name for name, k in self._keys.items()}

    def group_prefix(self, name: str, tokens: int) -> Content | None:
        if tokens <= 0:
            return None
        p = self._prefixes.get((name, tokens))
        if p is None:
            p = self._prefixes[(name, tokens)] = Content(None, ((self.group_key(name), tokens),), shared=True)
        return p

    def adapter_prefix(self, prefix: Content | None, adapter) -> Content | None:
        """A group prefix as requests of `adapter` hold it: vLLM salts block hashes with the
        LoRA adapter, so requests of different adapters never share cached blocks."""
        if prefix is None:
            return None
        k = (id(prefix), adapter.name)
        p = self._salted.get(k)
        if p is None:
            p = self._salted[k] = Content(None, ((self.new_key(), prefix.length),), shared=True)
        return p

    @staticmethod
    def _group_name(c: Client) -> str:
        return c.prefix_group or c.name

    def client_prefix(self, c: Client) -> Content | None:
        if not c.prefix_tokens:
            return None
        return self.group_prefix(self._group_name(c), c.prefix_tokens)

    def new_session_id(self) -> int:
        self._sessions += 1
        return self._sessions - 1

    def _new_id(self) -> int:
        self.count += 1
        return self.count - 1

    def _capped(self) -> bool:
        return bool(self.w.num_requests) and self.count >= self.w.num_requests

    # ---- the interface used by the simulation ------------------------------------------
    def _open_done(self) -> bool:
        if self._capped():
            return True
        t = self._heap[0][0] if self._heap else None
        if self._rounds and (t is None or self._rounds[0][0] < t):
            t = self._rounds[0][0]
        return t is None or (bool(self.w.horizon_us) and t > self.w.horizon_us)

    def exhausted(self) -> bool:
        """No more requests will come: no open-loop arrivals left and no session or closed-loop
        user that may still send a follow-up."""
        return self._open_done() and (self.live == 0 or self._capped())

    def next(self) -> Request | None:
        if self._open_done():
            return None
        if self._rounds and (not self._heap or self._rounds[0][0] < self._heap[0][0]):
            t, _, prev = heapq.heappop(self._rounds)
            req = self._next_turn(prev, t)
            self.schedule_round(req)
            return req
        t, i, s = self._heap[0]
        req = s.pop(self, self._new_id())
        if s.t is None:
            heapq.heappop(self._heap)
        else:
            heapq.heapreplace(self._heap, (s.t, i, s))
        return req

    def finished(self, req: Request, now: int, completed: bool) -> list[Request]:
        """A request ended (completed, or not) at `now`. Returns follow-up requests (next session
        turns, closed-loop users' next requests), each with its arrival time set."""
        user = self.owner.pop(req.id, None)
        if user is not None:
            return self._user_next(user, now)
        s = req.session
        if not isinstance(s, Session) or s.open_loop:
            return []
        k = req.turn
        if not completed or k + 1 >= s.turns or self._capped():
            self.live -= 1
            return []
        t = now + s.thinks[k]
        if self.w.horizon_us and t > self.w.horizon_us:
            self.live -= 1
            return []
        return [self._next_turn(req, t)]

    def schedule_round(self, req: Request) -> None:
        """Queue the next turn of an open-loop session, due at the turn's arrival + think time
        + 1 µs per output token (BLIS's guess at its completion)."""
        s, k = req.session, req.turn
        if k + 1 < s.turns:
            heapq.heappush(self._rounds, (req.arrival + s.thinks[k] + req.output_len, s.id, req))

    def _next_turn(self, req: Request, t: int) -> Request:
        """Turn k+1 of req's session, arriving at t."""
        s, k = req.session, req.turn
        rid = self._new_id()
        n_in, n_out = s.ins[k], s.outs[k]
        if s.accumulate:
            full = Content(req.content, ((output_key(req.id), req.output_len),))
            content = Content(full, ((prompt_key(rid), n_in),))
        else:
            content = Content(s.prefix, ((prompt_key(rid), n_in),))
        c = self.w.clients[self._client_index(s.client)]
        nxt = Request(rid, t, content.length, n_out, content, slo_class=req.slo_class, priority=req.priority,
                      tenant=req.tenant, client=req.client, session=s, turn=k + 1,
                      deadline=t + c.timeout_us if c.timeout_us else 0)
        nxt.rehash = s.accumulate and k + 2 < s.turns
        nxt.adapter = req.adapter
        return nxt

    def _client_index(self, name: str) -> int:
        idx = getattr(self, "_cidx", None)
        if idx is None:
            idx = self._cidx = {c.name: i for i, c in enumerate(self.w.clients)}
        return idx[name]

    def _user_next(self, user: _User, now: int) -> list[Request]:
        st = user.stream
        if self._capped():
            self.live -= 1
            return []
        t = now + user.think
        if self.w.horizon_us and t > self.w.horizon_us:
            self.live -= 1
            return []
        return [st.make(self, user, self._new_id(), t)]
