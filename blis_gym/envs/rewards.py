"""SLO-aware rewards that land when their events happen.

The default reward, for every environment (weights, targets and penalties from the env spec):

    r = Σ_{completed i} w[c_i] · 1[TTFT_i ≤ ttft[c_i] ∧ ITL_i ≤ itl[c_i] ∧ E2E_i ≤ e2e[c_i]]
      − Σ_{rejected or timed-out i, priority_i ≥ 0} penalty[c_i]
      − ttft_weight · Σ_{completed i} TTFT_i (seconds)
      − cost_weight · Δdollars

- c_i is request i's SLO class; ITL_i its mean inter-token latency (decode time / (N − 1));
  a target that is not set is not checked (a class without targets earns w[c] per completion).
  The test is goodput's (`blis_gym.sim.metrics.summary.goodput`), so with w = 1, no penalty and
  no cost the episode return is the run's `good_requests`.
- Targets per class: `reward.targets`, over the scenario's `workload.slo_targets`, over
  `reward.default_targets`. Weights: `reward.class_weights` (else `default_weight`); penalties:
  `reward.penalties` (else `default_penalty`); sheddable classes (priority < 0) are not
  penalised unless `penalize_sheddable`.
- Δdollars: the GPU cost of every pool accrued since the previous decision (autoscaler envs).
- ttft_weight: a latency term for slots whose KPI is mean TTFT (the P/D decider): with it the
  return falls by ttft_weight for every second of TTFT, so between policies that complete the
  same requests within their targets, the one with the lower mean TTFT has the higher return.

A request's term is added at the moment it reaches its final state, so the reward of a step
is what accrued between the previous decision and this one (a completion usually lands many
steps after the routing decision that caused it); the last step gets everything up to the end
of the run. The episode return therefore equals `episode_kpi(sim, reward_cfg)`, computed from
the run's per-request records.
"""
from __future__ import annotations

import numpy as np

from ..sim.engine.request import State


def class_targets(reward_cfg: dict, workload) -> dict:
    """class -> {target name: µs} from the config and the scenario's slo_targets."""
    out: dict[str, dict] = {}
    scen = getattr(workload, "slo_targets", None) or {}
    classes = set(scen) | set(reward_cfg["targets"])
    for c in classes:
        t = {**reward_cfg["default_targets"], **(scen.get(c) or {}), **(reward_cfg["targets"].get(c) or {})}
        out[c] = {k: v for k, v in t.items() if v is not None}
    return out


class SloReward:
    """Accumulates the reward of one agent from the simulator's final-state hooks.

    Attach with `sim.final_hooks.append(reward.on_final)`; `take(now)` returns what accrued since
    the previous call (cost up to `now` included)."""

    def __init__(self, reward_cfg: dict, sim):
        self.cfg = reward_cfg
        self.sim = sim
        wl = sim.cfg.workload
        self.workload = wl
        self.targets = class_targets(reward_cfg, wl)
        self.default_targets = {k: v for k, v in reward_cfg["default_targets"].items() if v is not None}
        self.weights = reward_cfg["class_weights"]
        self.default_weight = float(reward_cfg["default_weight"])
        self.penalties = reward_cfg["penalties"]
        self.default_penalty = float(reward_cfg["default_penalty"])
        self.penalize_sheddable = bool(reward_cfg["penalize_sheddable"])
        self.cost_weight = float(reward_cfg["cost_weight"])
        self.ttft_weight = float(reward_cfg["ttft_weight"]) / 1e6        # per µs
        self._cls: dict[str, tuple] = {}
        self.acc = 0.0
        self.total = 0.0
        self._dollars = 0.0
        self._cols = sim.metrics.cols

    def _class(self, c: str) -> tuple:
        """(weight, ttft µs, itl µs, e2e µs, penalty) of class c; None = unchecked."""
        k = self._cls.get(c)
        if k is None:
            t = self.targets.get(c, self.default_targets)
            us = lambda name: t[name] * 1000 if name in t else None  # noqa: E731
            k = self._cls[c] = (float(self.weights.get(c, self.default_weight)), us("ttft_ms"), us("itl_ms"),
                                us("e2e_ms"), float(self.penalties.get(c, self.default_penalty)))
        return k

    def on_final(self, r, state, now) -> None:
        w, ttft, itl, e2e, pen = self._class(r.slo_class)
        if state is State.COMPLETED:
            c = self._cols                       # the record the simulator just wrote for r
            if self.ttft_weight:
                self.acc -= self.ttft_weight * c["ttft"][-1]
            if w == 0.0:
                return
            if ttft is not None and not c["ttft"][-1] <= ttft:
                return
            if e2e is not None and not c["e2e"][-1] <= e2e:
                return
            if itl is not None and not c["decode"][-1] / max(c["out"][-1] - 1, 1) <= itl:
                return
            self.acc += w
        elif state is State.REJECTED or state is State.TIMED_OUT:
            if pen and (r.priority >= 0 or self.penalize_sheddable):
                self.acc -= pen

    def dollars(self, now: int) -> float:
        return sum(p.dollars(now) for p in self.sim.pools)

    def take(self, now: int) -> float:
        """The reward accrued since the previous call; cost counted up to `now` (µs)."""
        r = self.acc
        self.acc = 0.0
        if self.cost_weight:
            d = self.dollars(now)
            r -= self.cost_weight * (d - self._dollars)
            self._dollars = d
        self.total += r
        return r


def within_targets(sim, reward_cfg: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per SLO class of the run's per-request records (`sim.metrics.arrays()`): (the class's
    records, those completed within the class's targets), as the reward counts them."""
    a = sim.metrics.arrays()
    names = sim.metrics.strings.names
    rw = SloReward(reward_cfg, sim)
    cls = np.array([names[c] for c in a["cls"].tolist()], dtype=object)
    out = {}
    for c in sorted(set(cls.tolist())):
        _, ttft, itl, e2e, _ = rw._class(c)
        m = cls == c
        good = m & (a["state"] == State.COMPLETED)
        if ttft is not None:
            good &= a["ttft"] <= ttft
        if e2e is not None:
            good &= a["e2e"] <= e2e
        if itl is not None:
            good &= a["decode"] / np.maximum(a["out"] - 1, 1) <= itl
        out[c] = (m, good)
    return out


def episode_kpi(sim, reward_cfg: dict) -> float:
    """The reward formula evaluated on the run's per-request records (`sim.metrics.arrays()`)
    and its final cost: what the episode return of an environment with this reward equals."""
    a = sim.metrics.arrays()
    rw = SloReward(reward_cfg, sim)
    total = 0.0
    for c, (m, good) in within_targets(sim, reward_cfg).items():
        w, _, _, _, pen = rw._class(c)
        total += w * int(good.sum())
        if pen and (sim.cfg.workload.priority(c) >= 0 or rw.penalize_sheddable):
            bad = m & ((a["state"] == State.REJECTED) | (a["state"] == State.TIMED_OUT))
            total -= pen * int(bad.sum())
    if rw.ttft_weight:
        done = a["state"] == State.COMPLETED
        total -= rw.ttft_weight * float(a["ttft"][done].sum())
    if rw.cost_weight:
        total -= rw.cost_weight * rw.dollars(sim.end_time_us())
    return total
