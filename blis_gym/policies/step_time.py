"""The simulator's step-time models, registered for the `step_time` slot under their
`latency_model` names (the models live in `blis_gym.sim.latency`)."""
from __future__ import annotations

from blis_gym.sim.latency.models import STEP_MODEL_KINDS, make_step_model

from .registry import register


def _factory(kind: str):
    def build(params: dict, field: str):
        return make_step_model(kind, **params)
    build.__doc__ = f"The {kind} step-time model from {{model, hw, tp}}."
    return build


for _kind in STEP_MODEL_KINDS:
    register("step_time", _kind)(_factory(_kind))
