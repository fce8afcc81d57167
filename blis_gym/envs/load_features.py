"""The extended observation (`observation.extended: true`): what a policy needs to tell pods of
different hardware apart and to see the load coming, as llm-d's own components see it.

Per pod (appended to each pod's row, after the first layout's features):

| feature | meaning |
|---|---|
| compute | the accelerator's dense BF16 TFLOPS × TP relative to one H100: x / (x + 1) (one H100: 0.5) |
| bandwidth | its HBM bandwidth × TP relative to one H100: x / (x + 1) |
| tp | tensor-parallel degree / 8, clipped |
| ttft_per_token | moving average (weight `latency_ema`) of TTFT per prompt token of the requests completed on the pod, µs: x / (x + `ttft_per_token_scale_us`) |
| tpot | moving average of their time per output token (decode time / (output − 1)), µs: x / (x + `tpot_scale_us`) |

The two latency averages are what llm-d's predicted-latency scheduler learns online from the
requests it routed: they reveal a slow pod (an A100 among H100s, a pod whose cache thrashes)
after a few completions, without the agent being told the hardware.

Load block (after the slot's extras):

| feature | meaning |
|---|---|
| arrivals_10s, arrivals_60s, arrivals_300s | arrival rate, exponential moving average over a 10 s / 60 s / 300 s time constant, req/s: x / (x + `rate_scale`) |
| arrival_trend | 0.5 + 0.5 · (r10 − r300) / (r10 + r300): above 0.5 the load is rising (0.5 with no arrivals) |
| has_period | 1 if the scenario's arrival rate has a daily cycle (`diurnal`), else 0 |
| phase_sin, phase_cos | 0.5 + 0.5 · sin / cos of 2π (t − peak_offset_s) / period_s (0 without a period) |

With `extended: false` (the default, and every shipped checkpoint's layout) none of this is
computed: no hook on completions, no work per decision.
"""
from __future__ import annotations

import math

import numpy as np

from ..sim.engine.request import State
from ..sim.workload.distributions import Diurnal

POD_EXTRA = ("compute", "bandwidth", "tp", "ttft_per_token", "tpot")
LOAD_FEATURES = ("arrivals_10s", "arrivals_60s", "arrivals_300s", "arrival_trend", "has_period",
                 "phase_sin", "phase_cos")
RATE_WINDOWS_US = (10e6, 60e6, 300e6)
H100 = (989.5, 3.35)                   # dense BF16 TFLOPS and HBM TB/s of the reference GPU


def hardware_columns(instances) -> np.ndarray:
    """(n, 3) compute, bandwidth and tp per instance config, from its step-time model's GPU."""
    rows = []
    for ic in instances:
        hw, tp = getattr(ic.step_model, "hw", None), int(getattr(ic.step_model, "tp", 1) or 1)
        c = hw.tflops_bf16 * tp / H100[0] if hw is not None else 1.0
        b = hw.hbm_tb_s * tp / H100[1] if hw is not None else 1.0
        rows.append((c / (c + 1.0), b / (b + 1.0), min(1.0, tp / 8.0)))
    return np.array(rows, dtype=np.float32).reshape(len(instances), 3)


def find_period(workload):
    """The scenario's daily cycle (a Diurnal rate: the aggregate profile or a client's), or None."""
    for proc in [workload.profile, *(c.arrival for c in workload.clients)]:
        for p in [proc, getattr(proc, "rate", None)]:
            if isinstance(p, Diurnal):
                return p
    return None


class LoadFeatures:
    """Per-pod latency averages (from a completion hook) and the load block of one episode."""

    def __init__(self, o: dict):
        self.alpha = float(o["latency_ema"])
        self.s_ttft = float(o["ttft_per_token_scale_us"])
        self.s_tpot = float(o["tpot_scale_us"])
        self.s_rate = float(o["rate_scale"])

    def attach(self, sim) -> None:
        self.sim = sim
        self.slot_of = {inst.name: i for i, inst in enumerate(sim.instances)}
        n = len(sim.instances)
        self.hardware = hardware_columns(sim.cfg.instances)
        self.ttft_tok = np.zeros(n)            # µs per prompt token; 0 = no completion yet
        self.tpot = np.zeros(n)
        self.seen = np.zeros(n, dtype=bool)
        self.cols = sim.metrics.cols
        sim.final_hooks.append(self.on_final)
        self.rates = [0.0] * len(RATE_WINDOWS_US)
        self.last_t = 0
        self.last_n = 0
        self.period = find_period(sim.cfg.workload)

    def on_final(self, r, state, now) -> None:
        if state is not State.COMPLETED or r.instance is None:
            return
        i = self.slot_of.get(r.instance.name)
        if i is None:
            return
        c = self.cols                          # the record the simulator just wrote for r
        per_tok = c["ttft"][-1] / max(c["inp"][-1], 1)
        tpot = c["decode"][-1] / max(c["out"][-1] - 1, 1)
        if self.seen[i]:
            a = self.alpha
            self.ttft_tok[i] += a * (per_tok - self.ttft_tok[i])
            self.tpot[i] += a * (tpot - self.tpot[i])
        else:
            self.seen[i] = True
            self.ttft_tok[i], self.tpot[i] = per_tok, tpot

    def pod_columns(self) -> np.ndarray:
        """(n, 5): the POD_EXTRA columns now."""
        t, p = self.ttft_tok, self.tpot
        lat = np.stack([t / (t + self.s_ttft), p / (p + self.s_tpot)], axis=1)
        return np.concatenate([self.hardware, lat.astype(np.float32)], axis=1)

    def load_block(self, now: int) -> list[float]:
        """The LOAD_FEATURES now (arrival-rate averages advanced to `now`)."""
        sim = self.sim
        dt = now - self.last_t
        if dt > 0:
            inst = (sim.injected - self.last_n) / (dt / 1e6)
            for k, w in enumerate(RATE_WINDOWS_US):
                self.rates[k] += (1.0 - math.exp(-dt / w)) * (inst - self.rates[k])
            self.last_t, self.last_n = now, sim.injected
        s = self.s_rate
        r = self.rates
        out = [x / (x + s) for x in r]
        out.append(0.5 + 0.5 * (r[0] - r[-1]) / (r[0] + r[-1]) if r[0] + r[-1] > 0 else 0.5)
        d = self.period
        if d is None:
            return out + [0.0, 0.0, 0.0]
        phase = 2 * math.pi * (now / 1e6 - d.peak_offset_s) / d.period_s
        return out + [1.0, 0.5 + 0.5 * math.sin(phase), 0.5 + 0.5 * math.cos(phase)]
