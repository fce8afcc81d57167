"""Session lengths that vary per session (agent sessions): `session.turns` as a distribution."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from ..sim.limits import MAX_TURNS
from ..sim.workload.session_turns import GeometricTurns, UniformTurns
from ..sim.workload.clients import SessionConfig
from .bounded import Strict

Turns = Annotated[int, Field(gt=0, le=MAX_TURNS)]


class UniformTurnsSpec(Strict):
    dist: Literal["uniform"]
    min: Turns = 1
    max: Turns

    @model_validator(mode="after")
    def _range(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class GeometricTurnsSpec(Strict):
    dist: Literal["geometric"]
    mean: Annotated[float, Field(ge=1, le=MAX_TURNS)]
    max: Turns


TurnsSpec = Union[Turns, Annotated[UniformTurnsSpec | GeometricTurnsSpec, Field(discriminator="dist")]]


def session_config(spec, think, length) -> SessionConfig:
    """The simulator's SessionConfig of a validated `session` (think and length convert its
    think-time and length specs)."""
    t = spec.turns
    dist = None
    if not isinstance(t, int):
        dist = UniformTurns(t.min, t.max) if t.dist == "uniform" else GeometricTurns(t.mean, t.max)
        t = t.max
    return SessionConfig(t, think(spec.think_time_s), spec.accumulate, spec.single, spec.open_loop,
                         turns_dist=dist, new_input=length(spec.new_input) if spec.new_input else None)
