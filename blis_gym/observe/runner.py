"""Drive a real OpenAI-compatible server with a scenario's workload and record what it does.

The requests come from the simulator's own workload source (blis_gym.sim.workload), built from
the scenario with the same seed, so arrival times, prompt and output lengths, prefix groups,
SLO classes and tenants are the ones `blis-gym run` simulates. Open-loop requests are sent at
their arrival times (relative to the start); a session's next turn and a closed-loop user's next
request follow the real completion plus the drawn think time, as they do in the simulator when
a request completes there.
"""
from __future__ import annotations

import asyncio
import heapq
import json
import signal
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from . import http
from .prompts import PromptText
from .record import META, REQUESTS, Recorder, check_out_dir, parse_prometheus, write_json_atomic

APIS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
PROBE_TIMEOUT_S = 10.0


@dataclass
class ObserveConfig:
    url: str
    workload: str                         # a bundled scenario's name or a scenario file
    out_dir: Path
    api: str = "completions"
    model: str | None = None              # the served model; None: the first of /v1/models
    seed: int | None = None               # None: the scenario's
    max_concurrency: int = 256
    duration_s: float | None = None       # stop sending after this long
    max_requests: int | None = None       # stop after sending this many
    request_timeout_s: float = 600.0      # per request (the scenario's timeout_s when shorter)
    drain_timeout_s: float = 30.0         # on Ctrl-C or at the end of sending: wait this long for in-flight
    metrics_url: str | None = None        # None: URL's /metrics; "": no scraping
    metrics_interval_s: float = 2.0
    ignore_eos: bool = True               # ask for exactly the output length (vLLM's ignore_eos, min_tokens)
    engine: dict | None = None            # settings for validate: hardware, tp, max_num_seqs, ...


def load_workload(name: str, seed: int | None):
    """(scenario, workload source) of a bundled scenario or scenario file, as `run` builds it."""
    from ..resources import scenario_path
    from ..schema.scenario import load_scenario
    from ..sim.core import Streams
    from ..sim.workload import WorkloadSource
    from ..schema.workload import build_workload

    path = scenario_path(name, "--workload")
    sc = load_scenario(path, {"seed": seed} if seed is not None else None)
    workload = build_workload(sc.workload, path.parent)
    return sc, WorkloadSource(workload, Streams(sc.seed))


def observe(cfg: ObserveConfig, log: Callable[[str], None] = lambda _m: None) -> dict:
    """Run the recording; returns the meta data written (counts, interrupted). Raises ConfigError
    for bad input, an unknown scenario and a server that cannot be reached."""
    if cfg.api not in APIS:
        raise ConfigError("--api", f"{cfg.api!r} is not one of {', '.join(APIS)}")
    ep = http.parse_url(cfg.url)
    metrics_ep = None
    if cfg.metrics_url is None:
        metrics_ep = ep
    elif cfg.metrics_url:
        metrics_ep = http.parse_url(cfg.metrics_url, "--metrics-url")
    sc, source = load_workload(cfg.workload, cfg.seed)
    check_out_dir(Path(cfg.out_dir))
    return asyncio.run(_Run(cfg, ep, metrics_ep, sc, source, log).main())


class _Run:
    def __init__(self, cfg: ObserveConfig, ep, metrics_ep, sc, source, log):
        self.cfg, self.ep, self.metrics_ep, self.sc, self.source, self.log = cfg, ep, metrics_ep, sc, source, log
        self.out = Path(cfg.out_dir)
        self.text = PromptText(sc.seed)
        self.followups: list = []                # (arrival µs, id, request) of session turns and users
        self.session_outputs: dict[int, list[int]] = {}   # session id -> output keys kept for its next turns
        self.inflight: set[asyncio.Task] = set()
        self.sent = 0
        self.scrapes = 0
        self._head = None                        # the next open-loop request, drawn but not yet sent
        self.stop_reason = ""
        self.ignore_eos = cfg.ignore_eos

    # ---- the run ------------------------------------------------------------------------
    async def main(self) -> dict:
        self.model = await self._probe()
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.changed = asyncio.Event()
        self.sem = asyncio.Semaphore(self.cfg.max_concurrency)
        self.rec = Recorder(self.out)
        self.started_at = datetime.now(timezone.utc).isoformat()
        self._write_meta(finished=False)
        self.t0 = self.loop.time()
        interrupts = 0

        def on_sigint():
            nonlocal interrupts
            interrupts += 1
            self.stop_reason = "interrupted"
            self.stop.set()
            self.changed.set()
            if interrupts == 1:
                self.log("interrupted: no new requests; waiting for the ones in flight (Ctrl-C again to cancel them)")
            else:
                for t in list(self.inflight):
                    t.cancel()
        try:
            self.loop.add_signal_handler(signal.SIGINT, on_sigint)
        except (NotImplementedError, RuntimeError):     # not the main thread, or no signals here
            pass
        scraper = asyncio.create_task(self._scrape()) if self.metrics_ep is not None else None
        status = asyncio.create_task(self._status())
        try:
            await self._schedule()
            await self._drain()
        finally:
            for t in (scraper, status):
                if t is not None:
                    t.cancel()
            await asyncio.gather(*(t for t in (scraper, status) if t is not None), return_exceptions=True)
            try:
                self.loop.remove_signal_handler(signal.SIGINT)
            except (NotImplementedError, RuntimeError):
                pass
            self.rec.close()
        return self._write_meta(finished=True)

    async def _probe(self) -> str:
        """The model to ask for: --model, else the first the server lists; a server that cannot
        be reached is a ConfigError (an error before anything is recorded)."""
        try:
            status, body = await http.get_text(self.ep, "/v1/models", PROBE_TIMEOUT_S)
        except http.ProtocolError as e:
            raise ConfigError("--url", f"{self.ep.url('/v1/models')} gave a malformed HTTP answer: {e}") from None
        except (OSError, asyncio.TimeoutError) as e:
            reason = "no answer within 10 s" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
            raise ConfigError("--url", f"cannot reach {self.ep.url('/v1/models')}: {reason}") from None
        if self.cfg.model:
            return self.cfg.model
        try:
            models = [m["id"] for m in json.loads(body)["data"]] if status == 200 else []
        except (ValueError, KeyError, TypeError):
            models = []
        if not models:
            raise ConfigError("--model", f"{self.ep.url('/v1/models')} lists no model (HTTP {status}); give --model")
        return str(models[0])

    def _due(self, now_us: float):
        """The next request to send (popped) if its time has come, else (its time, None); time
        None when nothing is waiting (open-loop arrivals have ended and no follow-up is queued)."""
        head = self._head
        if head is None:
            head = self._head = self.source.next()
        t_open = head.arrival if head is not None else None
        t_follow = self.followups[0][0] if self.followups else None
        times = [t for t in (t_open, t_follow) if t is not None]
        if not times:
            return None, None
        t = min(times)
        if t > now_us:
            return t, None
        if t_follow is not None and t_follow == t:
            return t, heapq.heappop(self.followups)[2]
        self._head = None
        return t, head

    async def _schedule(self) -> None:
        cap, dur = self.cfg.max_requests, self.cfg.duration_s
        while not self.stop.is_set():
            if cap is not None and self.sent >= cap:
                self.stop_reason = f"--max-requests {cap} sent"
                return
            self.changed.clear()
            elapsed = self.loop.time() - self.t0
            if dur is not None and elapsed >= dur:
                self.stop_reason = f"--duration {dur:g} s reached"
                return
            t, req = self._due(elapsed * 1e6)
            if req is None:
                if t is None and not self.inflight:
                    self.stop_reason = "the workload ended"
                    return
                # sleep until the next arrival, a completion (which may queue an earlier
                # follow-up), the end of --duration or a stop
                wait = None if t is None else t / 1e6 - elapsed
                if dur is not None:
                    wait = dur - elapsed if wait is None else min(wait, dur - elapsed)
                try:
                    await asyncio.wait_for(self.changed.wait(), None if wait is None else max(0.0, wait))
                except asyncio.TimeoutError:
                    pass
                continue
            if not await self._acquire():
                return
            if dur is not None and self.loop.time() - self.t0 >= dur:   # waited for a slot past the end
                self.sem.release()
                continue
            self.sent += 1
            task = asyncio.create_task(self._one(req))
            self.inflight.add(task)

    async def _acquire(self) -> bool:
        """A concurrency slot, or False when the run stops while waiting for one."""
        if not self.sem.locked():
            await self.sem.acquire()
            return True
        get, stopped = asyncio.create_task(self.sem.acquire()), asyncio.create_task(self.stop.wait())
        await asyncio.wait({get, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if get.done() and not get.cancelled():
            if self.stop.is_set():
                self.sem.release()
                return False
            return True
        get.cancel()
        return False

    async def _drain(self) -> None:
        """Let the requests in flight finish (each within its own timeout); after Ctrl-C, within
        --drain-timeout, then the rest are cancelled (and recorded as such)."""
        stopped = asyncio.create_task(self.stop.wait())
        while self.inflight and not self.stop.is_set():
            await asyncio.wait(self.inflight | {stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not self.inflight:
            return
        self.log(f"waiting up to {self.cfg.drain_timeout_s:g} s for {len(self.inflight)} requests in flight")
        _done, pending = await asyncio.wait(set(self.inflight), timeout=self.cfg.drain_timeout_s)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)

    # ---- one request --------------------------------------------------------------------
    def _body(self, req, prompt: str) -> dict:
        body = {"model": self.model, "max_tokens": int(req.output_len), "stream": True,
                "stream_options": {"include_usage": True}}
        if self.cfg.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.ignore_eos:
            body["ignore_eos"] = True
            body["min_tokens"] = int(req.output_len)
        return body

    def _headers(self, req) -> dict:
        # llm-d's gateway reads the objective (priority) and the fairness id from these headers
        h = {"x-llm-d-inference-objective": req.slo_class}
        if req.tenant:
            h["x-llm-d-inference-fairness-id"] = req.tenant
        return h

    async def _one(self, req) -> None:
        prompt = self.text.render(req.content)
        timeout = self.cfg.request_timeout_s
        if req.deadline:
            timeout = min(timeout, (req.deadline - req.arrival) / 1e6)
        send = self.loop.time()
        row = {"request_id": req.id, "client": req.client, "slo_class": req.slo_class, "tenant": req.tenant,
               "session": getattr(req.session, "id", None), "turn": req.turn,
               "intended_arrival_s": req.arrival / 1e6, "arrival_s": send - self.t0,
               "intended_input_tokens": req.input_len, "intended_output_tokens": req.output_len}
        res = _Result()
        try:
            await self._exchange(req, prompt, timeout, res)
            end = self.loop.time()
            self._record(req, res, row, send, end)
            self._followups(req, res, res.status == "ok", end)
        finally:
            # leave the in-flight set before waking the scheduler (a done-callback would run after it)
            self.inflight.discard(asyncio.current_task())
            self.sem.release()
            self.changed.set()

    async def _exchange(self, req, prompt: str, timeout: float, res: _Result) -> None:
        """Send the request and stream its answer into `res` (status and error set on failure)."""
        try:
            await asyncio.wait_for(self._stream(req, prompt, res), timeout)
        except asyncio.TimeoutError:
            res.status, res.error = "timeout", f"no complete answer within {timeout:g} s"
        except asyncio.CancelledError:
            res.status, res.error = "cancelled", "cancelled at shutdown"
        except BadAnswer as e:
            res.status, res.error = "error", str(e)
        except Exception as e:          # whatever the server did, the request sent gets its row
            res.status, res.error = "error", f"{type(e).__name__}: {e}"

    def _record(self, req, res: _Result, row: dict, send: float, end: float) -> None:
        if res.status == "ok" and not res.times:
            res.status, res.error = "error", "the stream ended without any token"
        ok = res.status == "ok"
        row.update(status=res.status, http_status=res.http_status, error=res.error,
                   input_tokens=res.prompt_tokens if res.prompt_tokens is not None else req.input_len,
                   output_tokens=res.completion_tokens if res.completion_tokens is not None else res.chunks)
        itl = [(b - a) * 1e3 for a, b in zip(res.times, res.times[1:])]
        if res.times:
            row["ttft_ms"] = (res.times[0] - send) * 1e3
        if ok:
            row["e2e_ms"] = (end - send) * 1e3
            if row["output_tokens"] > 1:
                row["tpot_ms"] = (row["e2e_ms"] - row["ttft_ms"]) / (row["output_tokens"] - 1)
        self.rec.request(row, itl)

    def _followups(self, req, res, ok: bool, end: float) -> None:
        """A session's next turn (its prompt repeats this turn's generated text) or a
        closed-loop user's next request, queued at the real completion + think time."""
        from ..sim.engine.request import output_key
        sess = req.session
        keys = self.session_outputs.setdefault(sess.id, []) if sess is not None else []
        if ok and getattr(sess, "accumulate", False):
            keys.append(output_key(req.id))
            self.text.outputs[keys[-1]] = res.text
        nxt = self.source.finished(req, int((end - self.t0) * 1e6), ok)
        if nxt and not self.stop.is_set():
            for r in nxt:
                heapq.heappush(self.followups, (r.arrival, r.id, r))
        elif sess is not None:          # the session ended: its outputs are not needed any more
            for k in self.session_outputs.pop(sess.id, ()):
                self.text.outputs.pop(k, None)

    async def _stream(self, req, prompt: str, res: _Result) -> None:
        resp = await http.request(self.ep, "POST", APIS[self.cfg.api], self._body(req, prompt), self._headers(req))
        try:
            if resp.status == 400 and self.ignore_eos:
                msg = http.error_message(await resp.read(http.MAX_ERROR_BODY))
                if "ignore_eos" in msg or "min_tokens" in msg:
                    # a server that refuses vLLM's extra parameters: ask without them from now on
                    self.ignore_eos = False
                    self.log(f"the server refuses ignore_eos/min_tokens ({msg}); output lengths are not enforced")
                    resp.close()
                    resp = await http.request(self.ep, "POST", APIS[self.cfg.api], self._body(req, prompt),
                                              self._headers(req))
                else:
                    res.status, res.http_status, res.error = f"http_{resp.status}", resp.status, msg
                    return
            res.http_status = resp.status
            if resp.status != 200:
                res.status = f"http_{resp.status}"
                res.error = http.error_message(await resp.read(http.MAX_ERROR_BODY))
                return
            parts, done = [], False
            async for data in resp.events():
                if data.strip() == "[DONE]":
                    done = True
                    break
                try:
                    obj = json.loads(data)
                except ValueError:
                    raise BadAnswer(f"a stream event that is not JSON: {data[:60]!r}") from None
                if not isinstance(obj, dict):
                    continue
                if obj.get("error"):
                    res.status, res.error = "error", http.error_message(json.dumps(obj))
                    return
                usage = obj.get("usage")
                if isinstance(usage, dict):
                    res.prompt_tokens = _token_count(usage, "prompt_tokens", res.prompt_tokens)
                    res.completion_tokens = _token_count(usage, "completion_tokens", res.completion_tokens)
                piece = _piece(obj.get("choices"))
                if piece:
                    res.times.append(self.loop.time())
                    res.chunks += 1
                    parts.append(piece)
            if not done:
                raise BadAnswer(f"the stream ended before [DONE], after {res.chunks} tokens")
            res.text = "".join(parts)
            res.status = "ok"
        finally:
            resp.close()

    # ---- the side tasks -----------------------------------------------------------------
    async def _scrape(self) -> None:
        warned = False
        while True:
            t = self.loop.time() - self.t0
            try:
                status, body = await http.get_text(self.metrics_ep, "/metrics",
                                                   max(1.0, self.cfg.metrics_interval_s))
                if status != 200:
                    raise OSError(f"HTTP {status}")
                self.rec.metrics(t, parse_prometheus(body))
                self.scrapes += 1
            except (OSError, asyncio.TimeoutError, UnicodeError, ValueError) as e:
                if not warned:
                    reason = "no answer" if isinstance(e, asyncio.TimeoutError) else (e.strerror or str(e))
                    self.log(f"warning: cannot scrape {self.metrics_ep.url('/metrics')} ({reason}); "
                             "recording without server metrics")
                    warned = True
            await asyncio.sleep(self.cfg.metrics_interval_s)

    async def _status(self) -> None:
        while True:
            await asyncio.sleep(10)
            c = self.rec.counts
            self.log(f"{self.loop.time() - self.t0:7.1f} s: sent {self.sent}, in flight {len(self.inflight)}, "
                     f"done {sum(c.values())} (ok {c.get('ok', 0)})")

    def _write_meta(self, finished: bool) -> dict:
        e = {k: v for k, v in (self.cfg.engine or {}).items() if v is not None}
        sc = self.sc
        meta = {
            "schema_version": 1, "source": "blis-gym observe",
            # the requests' times are taken by an HTTP client: TTFT and E2E include the server's
            # API overhead (validate then keeps the step-time model's API terms)
            "clock": "client",
            "model": self.model, "url": self.ep.url(""), "api": self.cfg.api,
            "scenario": sc.name, "seed": sc.seed, "ignore_eos": self.ignore_eos,
            "max_concurrency": self.cfg.max_concurrency,
            "engine_kwargs": {"tensor_parallel_size": e.get("tp", 1), "max_num_seqs": e.get("max_num_seqs"),
                              "max_num_batched_tokens": e.get("max_num_batched_tokens"),
                              "max_model_len": e.get("max_model_len")},
            "kv_cache": {"num_gpu_blocks": e.get("kv_blocks")},
            "hardware": {"device_name": e.get("hardware")},
            "started_at": self.started_at,
            "finished_at": datetime.now(timezone.utc).isoformat() if finished else None,
            "requests_sent": self.sent, "requests_by_status": dict(sorted(self.rec.counts.items())),
            "stopped": self.stop_reason or None, "interrupted": self.stop_reason == "interrupted",
            "metrics_scrapes": self.scrapes,
            "files": {"requests": REQUESTS},
        }
        write_json_atomic(self.out / META, meta)
        return meta


class BadAnswer(Exception):
    """The server's answer to a request is not a valid completion stream (the request is
    recorded with status `error` and this reason)."""


def _token_count(usage: dict, key: str, before: int | None) -> int | None:
    """usage[key] as a token count (an integer from 0 to MAX_TOKENS); BadAnswer otherwise."""
    from ..sim.limits import MAX_TOKENS
    v = usage.get(key, before)
    if v is None or v is before:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (isinstance(v, int) or v.is_integer()) \
            or not 0 <= v <= MAX_TOKENS:
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        raise BadAnswer(f"usage.{key} is {shown}, not a token count (an integer from 0 to {MAX_TOKENS})")
    return int(v)


class _Result:
    __slots__ = ("chunks", "completion_tokens", "error", "http_status", "prompt_tokens", "status", "text", "times")

    def __init__(self):
        self.status, self.error, self.http_status = "error", "", None
        self.prompt_tokens = self.completion_tokens = None
        self.times: list[float] = []
        self.chunks = 0
        self.text = ""


def _piece(choices) -> str:
    """The text a streamed chunk carries (completions: text; chat: the delta's content or
    reasoning)."""
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return ""
    c = choices[0]
    if isinstance(c.get("text"), str):
        return c["text"]
    d = c.get("delta")
    if isinstance(d, dict):
        return (d.get("content") or "") + (d.get("reasoning_content") or d.get("reasoning") or "")
    return ""
