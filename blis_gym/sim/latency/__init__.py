"""Latency models (step time), GPU constants, model architectures and KV capacity."""
from .hardware import Hardware, known_hardware, load_hardware
from .kv_capacity import kv_blocks_per_instance, validate_tp
from .model_config import ModelConfig, known_models, load_model, model_from_dict
from .models import STEP_MODEL_KINDS, make_step_model
from .step_time import Roofline, TrainedPhysics, default_coefficients

__all__ = [
    "Hardware", "load_hardware", "known_hardware",
    "ModelConfig", "load_model", "model_from_dict", "known_models",
    "kv_blocks_per_instance", "validate_tp",
    "TrainedPhysics", "Roofline", "make_step_model", "STEP_MODEL_KINDS", "default_coefficients",
]
