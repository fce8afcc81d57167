"""Observations: one flat float32 vector in [0, 1] per decision, built from what llm-d sees.

Layout (`Observer.feature_names()` lists every entry):

1. pods block, `max_pods` rows of POD_FEATURES (rows past the scenario's pods are zero, presence 0):

   | feature | meaning |
   |---|---|
   | presence | 1 for a pod slot the scenario has (0 = padding) |
   | available | 1 if the pod takes requests now (not loading, draining or off) |
   | prefill, decode | role flags (both 0 = a "both" pod) |
   | waiting | scraped `num_requests_waiting` w: w / (w + waiting_scale) |
   | running | scraped `num_requests_running`: x / (x + running_scale) |
   | kv | scraped KV-cache use, 0-1 |
   | in_flight | router-local requests in flight: x / (x + in_flight_scale) |
   | in_flight_tokens | router-local uncached prompt tokens in flight: x / (x + in_flight_tokens_scale) |
   | cached_prefix | the request's prompt blocks this pod holds, as a fraction of its blocks: the router profile's approximate prefix index when it has one (as llm-d sees it), else the real cache; 0 without a request |
   | target | P/D: the decode pod already chosen; autoscaler: the pod belongs to the pool being scaled |

   The scraped fields are the metrics scraper's snapshot (stale by up to the scrape interval, as
   in llm-d); in-flight counts are the router's own, always fresh.
2. request block: has_request, input (log1p(tokens) / log1p(max_input_tokens)), priority
   ((p + 4) / 8, clipped), one flag per class in `observation.classes` plus `other`, turn
   (t / (t + turn_scale); 0 = first turn), follow_up (turn > 0).
3. cluster block: available (fraction of pods), gateway_queue (flow-control queue,
   x / (x + queue_scale)), backlog (requests in the system, x / (x + backlog_scale)), time
   (t / horizon, or t / (t + time_scale_s) without one), scrape_age (age of the snapshot / two
   scrape intervals, clipped), kv_mean (mean KV use of available pods).
4. slot extras: P/D: target_cached (cached fraction of the prompt on the chosen decode pod, by
   the decider's own estimate) and uncached (log-scaled uncached prompt tokens); autoscaler: one
   flag per pool, then replicas, active, starting, draining, min (each / the pool's max).
5. with `observation.extended: true` only: five more features per pod row (accelerator compute,
   bandwidth, TP, moving averages of TTFT per prompt token and TPOT) and a load block at the end
   (arrival rates over three windows, their trend, the daily phase): `blis_gym.envs.load_features`.
   The default keeps the first layout, so every shipped checkpoint still loads.
"""
from __future__ import annotations

import math

import numpy as np
from gymnasium import spaces

from ..errors import ConfigError
from ..sim.cluster.pools import ACTIVE, DRAINING, STARTING
from ..sim.engine import BLOCK_SIZE
from .load_features import LOAD_FEATURES, POD_EXTRA, LoadFeatures

POD_FEATURES = ("presence", "available", "prefill", "decode", "waiting", "running", "kv", "in_flight",
                "in_flight_tokens", "cached_prefix", "target")
CLUSTER_FEATURES = ("available", "gateway_queue", "backlog", "time", "scrape_age", "kv_mean")
PF = len(POD_FEATURES)
_AVAIL, _WAIT, _RUN, _KV, _IFL, _IFT, _CACHED, _TARGET = 1, 4, 5, 6, 7, 8, 9, 10


class Observer:
    """Builds the observation of one decision slot for one simulation (see module doc)."""

    def __init__(self, slot: str, cfg: dict, n_pods: int, pool_names: list[str]):
        o = cfg["observation"]
        self.slot = slot
        self.n = n_pods
        self.max_pods = cfg["max_pods"] or n_pods
        if self.max_pods < n_pods:
            raise ConfigError("config.max_pods", f"{self.max_pods} is fewer than the scenario's {n_pods} pods")
        self.extended = bool(o["extended"])
        self.load = LoadFeatures(o) if self.extended else None
        self.classes = list(o["classes"])
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.pool_names = list(pool_names)
        self.s_wait = float(o["waiting_scale"])
        self.s_run = float(o["running_scale"])
        self.s_ifl = float(o["in_flight_scale"])
        self.s_ift = float(o["in_flight_tokens_scale"])
        self.s_queue = float(o["queue_scale"])
        self.s_backlog = float(o["backlog_scale"])
        self.s_turn = float(o["turn_scale"])
        self.log_max_in = math.log1p(float(o["max_input_tokens"]))
        self.s_time = float(o["time_scale_s"]) * 1e6
        self.pf = PF + len(POD_EXTRA) if self.extended else PF
        self.pods_end = self.n * self.pf
        self.req0 = self.max_pods * self.pf
        self.n_req = 5 + len(self.classes) + 1
        self.cl0 = self.req0 + self.n_req
        self.ex0 = self.cl0 + len(CLUSTER_FEATURES)
        if slot == "pd":
            self.n_extra = 2
        elif slot == "autoscaler":
            self.n_extra = len(self.pool_names) + 5
        else:
            self.n_extra = 0
        self.ld0 = self.ex0 + self.n_extra                # the load block (extended only)
        self.size = self.ld0 + (len(LOAD_FEATURES) if self.extended else 0)
        self.space = spaces.Box(0.0, 1.0, shape=(self.size,), dtype=np.float32)
        self.sim = None

    def feature_names(self) -> list[str]:
        per_pod = POD_FEATURES + (POD_EXTRA if self.extended else ())
        names = [f"pod{i}.{f}" for i in range(self.max_pods) for f in per_pod]
        names += ["request.has_request", "request.input", "request.priority"]
        names += [f"request.class.{c}" for c in self.classes] + ["request.class.other"]
        names += ["request.turn", "request.follow_up"]
        names += [f"cluster.{f}" for f in CLUSTER_FEATURES]
        if self.slot == "pd":
            names += ["pd.target_cached", "pd.uncached"]
        elif self.slot == "autoscaler":
            names += [f"pool.{p}" for p in self.pool_names]
            names += ["pool.replicas", "pool.active", "pool.starting", "pool.draining", "pool.min"]
        if self.extended:
            names += [f"load.{f}" for f in LOAD_FEATURES]
        return names

    def attach(self, sim) -> None:
        """Bind to a new simulation (each episode)."""
        self.sim = sim
        gw = sim.gateway
        self.gw = gw
        self.pods = gw.pods
        self.interval = gw.cfg.scrape_interval_us
        self.oracle = gw.oracle
        self.prefix = gw.router.prefix_index
        self.horizon = sim.cfg.horizon_us
        # The vector is kept between decisions and refreshed in place where the simulation
        # changed (a new snapshot, availability); every decision gets a copy.
        t = np.zeros(self.size, dtype=np.float32)
        end = self.pods_end
        t[0:end:self.pf] = 1.0
        t[2:end:self.pf] = [p.role == "prefill" for p in self.pods]
        t[3:end:self.pf] = [p.role == "decode" for p in self.pods]
        self.state = t
        self.state_pods = t[:end].reshape(self.n, self.pf)     # a view: one row per pod
        self._stamp = None          # scraped_at of the snapshot in `state`
        self._avail = None          # availability flags in `state`
        self._kv: list[float] = []
        self._cached = False        # the cached_prefix column holds a request's values
        self._targets: list[int] = []
        if self.load is not None:
            self.load.attach(sim)

    def _refresh_pods(self, obs) -> None:
        """Scraped and availability columns (and the cluster features made of them), when the
        snapshot or availability changed."""
        pods = self.pods
        end = self.pods_end
        stamp = pods[0].scraped_at
        fresh = self.oracle or stamp != self._stamp
        if fresh:
            self._stamp = stamp
            sw, sr = self.s_wait, self.s_run
            self._kv = kv = [min(1.0, max(0.0, p.kv_usage)) for p in pods]
            flat = []
            for p, k in zip(pods, kv):
                w, r = p.waiting, p.running
                flat += (w / (w + sw), r / (r + sr), k)
            self.state_pods[:, _WAIT:_KV + 1] = np.array(flat, dtype=np.float32).reshape(self.n, 3)
        avail = [p.available for p in pods]
        if avail != self._avail:
            self._avail = avail
            obs[_AVAIL:end:self.pf] = np.array(avail, dtype=np.float32)
            fresh = True
        if fresh:
            n_av = sum(avail)                    # the cluster's available fraction and mean KV use
            obs[self.cl0] = n_av / self.n
            obs[self.cl0 + 5] = min(1.0, sum(k for k, a in zip(self._kv, avail) if a) / n_av) if n_av else 0.0

    def build(self, pending) -> np.ndarray:
        """The observation at `pending` (None: the end of the episode, without a request)."""
        sim = self.sim
        pods = self.pods
        obs = self.state
        end = self.pods_end
        now = sim.loop.now
        self._refresh_pods(obs)
        si, st = self.s_ifl, self.s_ift
        flat = []
        for p in pods:
            f, t = p.in_flight, p.in_flight_tokens
            flat += (f / (f + si), t / (t + st))
        self.state_pods[:, _IFL:_IFT + 1] = np.array(flat, dtype=np.float32).reshape(self.n, 2)
        if self._cached:
            obs[_CACHED:end:self.pf] = 0.0
            self._cached = False
        k = self.req0
        obs[k:self.cl0] = 0.0
        req = pending.request if pending is not None else None
        if req is not None:
            self._cached = self._cached_prefix(obs, req)
            obs[k] = 1.0
            obs[k + 1] = min(1.0, math.log1p(req.input_len) / self.log_max_in)
            obs[k + 2] = min(1.0, max(0.0, (req.priority + 4) / 8.0))
            obs[k + 3 + self.class_index.get(req.slo_class, len(self.classes))] = 1.0
            t = req.turn
            obs[self.cl0 - 2] = t / (t + self.s_turn)
            obs[self.cl0 - 1] = 1.0 if t > 0 else 0.0
        c = self.cl0
        q = self.gw.queued()
        obs[c + 1] = q / (q + self.s_queue)
        b = sim.injected - sim.finished
        obs[c + 2] = b / (b + self.s_backlog)
        obs[c + 3] = min(1.0, now / self.horizon) if self.horizon else now / (now + self.s_time)
        if not self.oracle and pods[0].scraped_at >= 0:
            obs[c + 4] = min(1.0, (now - pods[0].scraped_at) / (2.0 * self.interval))
        if self.n_extra:
            for i in self._targets:
                obs[i * self.pf + _TARGET] = 0.0
            self._targets = []
            obs[self.ex0:self.ld0] = 0.0
            if pending is not None:
                if self.slot == "pd":
                    self._pd(obs, pending)
                else:
                    self._autoscaler(obs, pending)
        if self.load is not None:
            self.state_pods[:, PF:] = self.load.pod_columns()
            obs[self.ld0:] = self.load.load_block(now)
        return obs.copy()

    def mark_choice(self, obs, action: int) -> None:
        """Residual router: flag the pod the built-in policy picks in its `target` column (unused
        by the router otherwise); other slots' choices are not per pod and are not marked."""
        if self.slot == "router" and 0 <= action < self.n:
            obs[action * self.pf + _TARGET] = 1.0

    def _cached_prefix(self, obs, req) -> bool:
        """Fill the cached_prefix column for req; True if any value is non-zero."""
        prefix = self.prefix
        if prefix is not None:
            total = prefix.total_blocks(req)
            if total <= 0:
                return False
            # the router's own decision may reuse these matches; other slots leave no memo
            ms = prefix.matches(req, self.pods, self.gw.ctx, remember=self.slot == "router")
            if not any(ms):
                return False
        else:
            total = min(req.input_len, req.content.length) // BLOCK_SIZE
            if total <= 0:
                return False
            cb = self.gw.ctx.cached_blocks
            ms = [cb(req, i) for i in range(self.n)]
        obs[_CACHED:self.pods_end:self.pf] = np.array([(m if m < total else total) / total for m in ms], dtype=np.float32)
        return True

    def _pd(self, obs, pending) -> None:
        i = pending.pool                         # the decode pod the router chose
        obs[i * self.pf + _TARGET] = 1.0
        self._targets.append(i)
        req = pending.request
        cached = self.gw.pd.cached_tokens(req, i)
        obs[self.ex0] = min(1.0, cached / req.input_len) if req.input_len else 0.0
        obs[self.ex0 + 1] = min(1.0, math.log1p(max(0, req.input_len - cached)) / self.log_max_in)

    def _autoscaler(self, obs, pending) -> None:
        pool = pending.pool
        for i in pool.cfg.slots:
            obs[i * self.pf + _TARGET] = 1.0
        self._targets.extend(pool.cfg.slots)
        e = self.ex0
        k = self.pool_names.index(pool.cfg.name)
        obs[e + k] = 1.0
        e += len(self.pool_names)
        hi = max(pool.cfg.max, 1)
        st = list(pool.state.values())
        a, s, d = st.count(ACTIVE), st.count(STARTING), st.count(DRAINING)
        obs[e] = (a + s) / hi
        obs[e + 1] = a / hi
        obs[e + 2] = s / hi
        obs[e + 3] = d / hi
        obs[e + 4] = pool.cfg.min / hi
