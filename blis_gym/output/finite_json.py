"""JSON for output files: every non-finite float (an infinite SLO target, the mean of nothing)
is written as null, never as the `Infinity`/`NaN` that strict JSON readers refuse."""
from __future__ import annotations

import json
import math


def finite(obj):
    """`obj` with every NaN or ±inf float (numpy's too) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps(obj, indent: int | None = 2) -> str:
    return json.dumps(finite(obj), indent=indent, allow_nan=False)
