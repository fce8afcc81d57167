"""The interfaces of the simulator's policy slots, as `typing.Protocol`s.

A policy is any class with these methods (no base class needed); the simulator's configuration
fields are typed with them. Built-in policies live in `blis_gym.policies` and are found by name
through `blis_gym.policies.registry`.

| slot        | protocol         | called by                        | decides                          |
|-------------|------------------|----------------------------------|----------------------------------|
| step time   | StepTimeModel    | each instance, every batch step  | how long a step takes            |
| admission   | AdmissionPolicy  | the gateway, on arrival/dispatch | admit or reject (HTTP 429/503)   |
| router      | Router           | the gateway, per request         | which pod serves it              |
| pd          | PDDecider        | the gateway, after routing       | prefill remotely (P/D) or not    |
| autoscaler  | Autoscaler       | each pool, every interval_us     | the desired replica count        |
"""
from __future__ import annotations

from typing import Iterable, Protocol, Sequence

import numpy as np


class StepTimeModel(Protocol):
    """Latency of one vLLM engine step, plus per-request framework overheads (µs)."""
    queueing_us: int            # arrival -> queued
    output_token_us: int        # per output token, after the last step (detokenize, stream)
    post_decode_us: int         # once per request, after its last token

    def step_time_us(self, prefill: Iterable[Sequence[int]] = (), num_decode: int = 0,
                     decode_context: int = 0) -> int:
        """A mixed step: `prefill` items are (new tokens, cached/computed, prompt length)."""

    def decode_step_us(self, num_decode: int, decode_context: int) -> int:
        """A decode-only step of `num_decode` requests holding `decode_context` tokens."""

    def decode_run_us(self, num_decode: int, decode_context: int, steps: int) -> list[int]:
        """The durations of `steps` consecutive decode-only steps."""


class RouterContext(Protocol):
    """What the caller (the cluster) hands the router on every call."""
    now: int                       # µs
    rng: np.random.Generator       # the router's own tie-break stream

    def cached_blocks(self, req, pod_index: int) -> int:
        """# of the request's leading 16-token blocks present in that pod's real KV cache."""


class Router(Protocol):
    """llm-d's EPP: picks a pod for a request. `pick` changes nothing; `observe` reports the pod
    actually used (the router's own choice or an agent's)."""
    prefix_index: object | None    # routing.PrefixIndex, or None

    def pick(self, req, pods: list, ctx: RouterContext) -> int | None: ...

    def scores(self, req, pods: list, ctx: RouterContext) -> list[tuple[int, float, dict[str, float]]]: ...

    def candidates(self, pods: list, req, ctx: RouterContext, explore: bool = True) -> list: ...

    def observe(self, req, pod_index: int, ctx: RouterContext) -> None: ...

    def release(self, req, pod_index: int) -> None: ...

    def forget(self, pod_index: int) -> None: ...


class AdmissionPolicy(Protocol):
    """The gateway's admission: a `Decision` (admit, HTTP status, reason) per request."""
    name: str

    def admit(self, req, pods: list, now: int, rng) -> object: ...


class PDDecider(Protocol):
    def disaggregate(self, req, cached_tokens: int) -> bool:
        """`cached_tokens`: prompt tokens the decode profile believes the chosen pod holds."""

    # Optional, used when defined (EDPP has them):
    #   disaggregate_on(req, cached_tokens, decode_pod, prefill_pods) -> bool: asked instead of
    #       disaggregate, with the chosen decode pod's and the prefill-capable pods' signals
    #   first_token(req, disaggregated: bool): a routed request produced its first token
    #   finished(req): a routed request ended (req.finished >= 0 if it completed)


class Autoscaler(Protocol):
    """A pool's autoscaler: consulted every `interval_us` with the pool's view."""
    interval_us: int

    def desired(self, view, now: int) -> int: ...
