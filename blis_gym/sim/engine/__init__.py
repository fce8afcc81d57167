"""One vLLM v1 instance: requests, the paged KV store and the scheduler."""
from .instance import EngineConfig, Instance
from .kv import KVStore
from .request import BLOCK_SIZE, Content, Request, State

__all__ = ["BLOCK_SIZE", "Content", "EngineConfig", "Instance", "KVStore", "Request", "State"]
