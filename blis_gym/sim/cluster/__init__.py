"""The llm-d data plane: pod signals, the gateway (admission, flow control, routing)."""
from .flow_control import FlowControl
from .gateway import Gateway, GatewayConfig, GatewayContext
from .signals import Decision, PodSignals

__all__ = ["Decision", "FlowControl", "Gateway", "GatewayConfig", "PodSignals", "GatewayContext"]
