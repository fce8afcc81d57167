"""The step-time models by name: what a scenario's `latency_model` (and validate's
`--latency-model`) picks."""
from __future__ import annotations

from blis_gym.errors import ConfigError

from .calibrated import CalibratedPhysics
from .hardware import Hardware
from .hybrid import HybridPhysics
from .model_config import ModelConfig
from .step_time import Roofline, TrainedPhysics


STEP_MODEL_KINDS = ("trained-physics", "roofline", "calibrated", "hybrid")


def make_step_model(kind: str, model: ModelConfig | str, hw: Hardware | str, tp: int = 1, **kw):
    """Build a step-time model: ``kind`` is "trained-physics", "roofline", "calibrated" (the
    physics model fitted to the ground-truth set by `blis-gym calibrate`) or "hybrid"
    (trained-physics's step structure refitted, with a scheduling delay: sim/latency/hybrid.py)."""
    key = str(kind).strip().lower().replace("_", "-")
    if key == "trained-physics":
        return TrainedPhysics(model, hw, tp, **kw)
    if key == "roofline":
        return Roofline(model, hw, tp, **kw)
    if key == "calibrated":
        return CalibratedPhysics(model, hw, tp, **kw)
    if key == "hybrid":
        return HybridPhysics(model, hw, tp, **kw)
    raise ConfigError("latency_model", f"unknown latency model {kind!r}; allowed: {', '.join(STEP_MODEL_KINDS)}")
