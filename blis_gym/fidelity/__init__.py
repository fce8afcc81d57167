"""Sim-to-real fidelity: validation against measured vLLM runs and calibration of the
`calibrated` step-time model (see docs/fidelity.md)."""
from ..sim.latency.calibrated import PARAM_NAMES, CalibratedPhysics, load_calibration

__all__ = ["PARAM_NAMES", "CalibratedPhysics", "load_calibration"]
