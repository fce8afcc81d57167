"""What the gateway and the router see of each pod: a scraped snapshot plus router-local counts.

Scraped fields (waiting, running, kv_usage, and the LoRA adapters of pods with LoRA on) are
refreshed by the metrics scraper every `scrape_interval` (50 ms by default, as llm-d's
--refresh-metrics-interval); between scrapes they keep their old values, stale on purpose.
In-flight counts are kept by the router itself on every dispatch and completion, so they are
always fresh.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..engine import Request

# Drop reasons (llm-d's x-llm-d-request-dropped-reason values, plus BLIS's own).
REASON_SATURATED = "rejected-saturated"
REASON_PROBABILISTIC = "rejected-probabilistic"
REASON_TOKEN_BUCKET = "rejected-token-bucket"
REASON_TIER_SHED = "rejected-tier-shed"
REASON_QUEUE_GUARD = "rejected-queue-guard"
REASON_NO_ENDPOINTS = "rejected-no-endpoints"
REASON_TTL_EXPIRED = "rejected-ttl-expired"
REASON_REJECT_ALL = "rejected-all"

# HTTP statuses (llm-d pkg/common/error/error.go).
HTTP_OK = 200
HTTP_TOO_MANY = 429        # ResourceExhausted
HTTP_INTERNAL = 500        # Internal (admitter denials)
HTTP_UNAVAILABLE = 503     # ServiceUnavailable


@dataclass(frozen=True)
class Decision:
    admit: bool
    status: int = HTTP_OK
    reason: str = ""


@dataclass(slots=True)
class PodSignals:
    index: int                 # position in the pool (the router's action index)
    name: str
    role: str = "both"         # "both" | "prefill" | "decode"
    available: bool = True     # False while loading, draining or absent
    # scraped (vllm:num_requests_waiting, vllm:num_requests_running, vllm:kv_cache_usage_perc)
    waiting: int = 0
    running: int = 0
    kv_usage: float = 0.0
    scraped_at: int = -1       # µs of the snapshot; -1 = never scraped
    # router-local, always fresh
    in_flight: int = 0         # requests dispatched to the pod and not finished
    in_flight_tokens: int = 0  # uncached prompt tokens of those requests not yet past their first token
    num_kv_blocks: int = 0     # the pod's KV capacity (vllm:cache_config_info num_gpu_blocks)
    # scraped vllm:lora_requests_info (LoRA pods only): adapter names and max_lora
    lora_running: tuple = ()
    lora_waiting: tuple = ()
    max_lora: int = 0


def load(p: PodSignals) -> int:
    """A pod's load as BLIS counts it (least-loaded router, tier-shed): waiting + running + in flight."""
    return p.waiting + p.running + p.in_flight


@dataclass(slots=True)
class Pending:
    """A decision the simulator hands to an external agent (docs/envs.md: the decision points).

    `resume(action)` carries the decision out (raising ValueError, with nothing changed, for an
    invalid action); `default()` is what the built-in policy of the slot would choose."""
    slot: str
    time_us: int
    request: Request | None
    pods: list
    mask: list | None
    resume: object
    default: object
    pool: object = None


def as_int(action) -> int | None:
    """An agent's action as an int: a Python or numpy integer, or a one-element integer array
    (bools, floats and anything else: None)."""
    if type(action) is int:
        return action
    if isinstance(action, np.integer):
        return int(action)
    if isinstance(action, np.ndarray) and action.size == 1 and action.dtype.kind in "iu":
        return int(action.reshape(()))
    return None


def int_action(action, slot: str) -> int:
    """The action of a decision slot as an int; ValueError otherwise."""
    a = as_int(action)
    if a is None:
        raise ValueError(f"{slot} action must be an integer, got {action!r}")
    return a
