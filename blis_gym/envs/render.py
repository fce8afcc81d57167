"""render(): an "ansi" text dashboard and an "rgb_array" frame (numpy only, no plotting library)."""
from __future__ import annotations

import numpy as np

from ..sim.cluster.pools import ACTIVE


def _bar(x: float, width: int = 10) -> str:
    k = int(round(max(0.0, min(1.0, x)) * width))
    return "[" + "#" * k + "." * (width - k) + "]"


def render(env):
    """`env.render()` of the single- and multi-agent environments, by `env.render_mode`."""
    if env.render_mode is None:
        import gymnasium as gym
        gym.logger.warn("render() without a render_mode: pass render_mode='ansi' or 'rgb_array' to gym.make")
        return None
    if env.render_mode == "rgb_array":
        return rgb_array(env)
    return ansi(env)


def ansi(env) -> str:
    ep = env.episode
    if ep is None:
        return f"{env.env_id}: not started (call reset())\n"
    sim = ep.sim
    gw = sim.gateway
    now = ep.now_us()
    lines = [f"{env.env_id}  t={now / 1e6:.3f} s  decisions={ep.decisions}  {env.render_status()}"
             + (f"  [{ep.end_reason}]" if ep.done else ""),
             f"in system {sim.injected - sim.finished}  arrived {sim.injected}  finished {sim.finished}  "
             f"gateway queue {gw.queued()}"]
    p = ep.pending
    if p is not None:
        r = p.request
        what = (f"request {r.id} (in {r.input_len} tok, class {r.slo_class}, turn {r.turn})" if r is not None
                else f"pool {p.pool.cfg.name} ({p.pool.replicas()} replicas)" if p.slot == "autoscaler" else "")
        lines.append(f"pending: {p.slot} decision for {what}")
    lines.append(f"{'pod':<16}{'role':<9}{'avail':<7}{'wait':>5}{'run':>5}  {'kv':<18}{'in-flight':>9}")
    for pod in gw.pods:
        lines.append(f"{pod.name[:15]:<16}{pod.role:<9}{'yes' if pod.available else 'no':<7}{pod.waiting:>5}"
                     f"{pod.running:>5}  {_bar(pod.kv_usage)} {pod.kv_usage * 100:3.0f}%{pod.in_flight:>9}")
    for pool in sim.pools:
        if pool.cfg.autoscaler is not None:
            lines.append(f"pool {pool.cfg.name}: {pool.count(ACTIVE)} active, {pool.count('starting')} starting, "
                         f"{pool.count('draining')} draining (min {pool.cfg.min}, max {pool.cfg.max}), "
                         f"${pool.dollars(now):.2f}")
    if env.recent:
        lines.append("recent decisions:")
        for t, rid, a in reversed(env.recent):
            lines.append(f"  t={t / 1e6:10.3f} s  " + (f"request {rid:<8}" if rid >= 0 else " " * 16) + f" -> {a}")
    return "\n".join(lines) + "\n"


HEIGHT = 160
POD_W = 24


def rgb_array(env) -> np.ndarray:
    """A frame: per pod three bars (KV use green, running blue, waiting red; grey background
    for pods that cannot take requests), and a top strip with the elapsed fraction of the horizon."""
    n = env.n_pods
    width = max(160, 8 + POD_W * n)
    img = np.full((HEIGHT, width, 3), 255, dtype=np.uint8)
    ep = env.episode
    if ep is None:
        return img
    sim = ep.sim
    obs = env.observer
    now = ep.now_us()
    h = sim.cfg.horizon_us
    frac = min(1.0, now / h) if h else now / (now + obs.s_time)
    img[2:8, 4:4 + int((width - 8) * frac)] = (90, 90, 90)
    top, base = 14, HEIGHT - 6
    span = base - top
    for i, pod in enumerate(sim.gateway.pods):
        x0 = 4 + POD_W * i
        if not pod.available:
            img[top:base, x0:x0 + POD_W - 4] = (215, 215, 215)
        vals = (max(0.0, min(1.0, pod.kv_usage)), pod.running / (pod.running + obs.s_run),
                pod.waiting / (pod.waiting + obs.s_wait))
        colours = ((40, 160, 60), (50, 90, 200), (210, 50, 50))
        for k, (v, c) in enumerate(zip(vals, colours)):
            hgt = int(round(v * span))
            if hgt:
                img[base - hgt:base, x0 + 6 * k:x0 + 6 * k + 5] = c
        img[base:base + 2, x0:x0 + POD_W - 4] = (0, 0, 0)
    return img
