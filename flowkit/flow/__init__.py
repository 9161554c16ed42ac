"""Motion engines and their shared numerics. Importing this package registers every engine."""
from .base import FlowEngine
from .registry import create_engine, engine_class, list_engines, register_engine
from . import tvl1  # noqa: F401  (registers "tvl1")

__all__ = ["FlowEngine", "create_engine", "engine_class", "list_engines", "register_engine"]
