"""The `hybrid` step-time model: trained-physics's step structure with a few of its coefficients
refitted, plus the scheduling delay that makes the `calibrated` model's TTFT right.

Step time: BLIS's trained-physics formula (``step_time.TrainedPhysics``: physics basis terms
times fitted betas) with five of its betas refitted by ridge least squares on measured runs
(`blis-gym calibrate --latency-model hybrid`, docs/fidelity.md): ``b1a`` prefill compute (what a
chunked prefill costs), ``b2b`` decode KV reads, ``b3`` weight reads, ``b6`` per scheduled
sequence and ``b7`` per step; the other betas stay BLIS's. Outside the step, a request waits
``api_us`` (HTTP, tokenisation: 0 for engine-clock traces) plus ``sched_steps`` times the duration
of the engine's latest step before it joins the queue (vLLM's engine core takes new requests
between steps, and with async scheduling the next step is already scheduled), as in the
`calibrated` model; ``token_us`` per streamed token and ``final_us`` after the last one are
trained-physics's alpha[2] and alpha[1]. The fitted values ship in ``blis_gym/data/hybrid.yaml``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from blis_gym.errors import ConfigError, read_yaml

from .hardware import load_hardware
from .step_time import TrainedPhysics, default_coefficients

__all__ = ["BETA_INDEX", "HYBRID_PARAMS", "HybridPhysics", "load_hybrid"]

#: the trained-physics betas the hybrid refits, and their index in the beta vector
BETA_INDEX = {"b1a": 0, "b2a": 1, "b3": 2, "b6": 5, "b7": 6, "b8": 7, "b2b": 9}
#: every coefficient of the model, in the order of hybrid.yaml
HYBRID_PARAMS = ("b1a", "b2a", "b2b", "b2b_gddr", "b3", "b6", "b7", "b8", "api_us", "sched_steps", "token_us",
                 "final_us")
HYBRID_FILE = "hybrid.yaml"


@lru_cache(maxsize=4)
def _load(path: str | None) -> dict:
    if path is None:
        data = yaml.safe_load(resources.files("blis_gym").joinpath("data", HYBRID_FILE).read_text(encoding="utf-8"))
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("hybrid", f"no such file: {p}")
        data = read_yaml(p, "hybrid")
    if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
        raise ConfigError("hybrid", "expected a mapping with `params`")
    return data


def load_hybrid(path: str | Path | None = None) -> dict[str, float]:
    """The hybrid model's coefficients (the bundled hybrid.yaml by default)."""
    params = _load(None if path is None else str(path))["params"]
    out = {}
    for k in HYBRID_PARAMS:
        v = params.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"hybrid.params.{k}", f"must be a finite number >= 0 (got {v!r})")
        out[k] = float(v)
    return out


def fit_info(path: str | Path | None = None) -> dict:
    """The `fit:` record of a hybrid coefficients file (what it was fitted on)."""
    return _load(None if path is None else str(path)).get("fit") or {}


def start_params() -> dict[str, float]:
    """Trained-physics itself in the hybrid's coefficients: BLIS's betas, its fixed queueing
    delay as api_us, no step-dependent delay (where a fit starts)."""
    alpha, beta = default_coefficients()
    return {**{k: beta[i] for k, i in BETA_INDEX.items()}, "b2b_gddr": beta[BETA_INDEX["b2b"]], "api_us": alpha[0],
            "sched_steps": 0.0, "token_us": alpha[2], "final_us": alpha[1]}


class HybridPhysics(TrainedPhysics):
    """Trained-physics step times with refitted betas and a scheduling delay that follows the
    latest step (kind "hybrid")."""

    kind = "hybrid"
    stateful = True      # its queueing delay reads the latest step: steps are not planned ahead
    config_head_dim = True   # attention and KV sizes from the real head_dim (Mistral-Nemo: 128, not 160)

    def __init__(self, model, hw, tp: int = 1, params: Mapping[str, float] | None = None, dp: int = 1,
                 deployment=None):
        p = load_hybrid() if params is None else {k: float(params[k]) for k in HYBRID_PARAMS}
        _alpha, beta = default_coefficients()
        beta = list(beta)
        for name, i in BETA_INDEX.items():
            beta[i] = p[name]
        if load_hardware(hw).gddr:          # KV reads on graphics memory: their own efficiency
            beta[BETA_INDEX["b2b"]] = p["b2b_gddr"]
        # data and expert parallelism, speculative decoding, an fp8 KV cache, multi-node TP: priced
        # by trained-physics's terms for them (the `deployment`), as for trained-physics itself
        super().__init__(model, hw, tp, alpha=(0.0, p["final_us"], p["token_us"]), beta=beta, dp=dp,
                         deployment=deployment)
        self.params = p
        self._api_us, self._sched_steps = p["api_us"], p["sched_steps"]
        self._last_step = 0

    @property
    def queueing_us(self) -> int:
        """Arrival -> engine queue delay for a request arriving now (read at dispatch)."""
        return int(self._api_us + self._sched_steps * self._last_step)

    @queueing_us.setter
    def queueing_us(self, _value) -> None:       # TrainedPhysics.__init__ sets its fixed alpha[0]
        pass

    def queueing_time_us(self, input_len: int) -> int:
        return self.queueing_us

    def step_time_us(self, prefill=(), num_decode: int = 0, decode_context: int = 0) -> int:
        s = super().step_time_us(prefill, num_decode, decode_context)
        self._last_step = s
        return s

    def decode_step_us(self, num_decode: int, decode_context: int) -> int:
        s = super().decode_step_us(num_decode, decode_context)
        self._last_step = s
        return s
