"""Motion engines and their shared numerics. Importing this package registers every engine."""
from .base import FlowEngine
from .direction import Backward, check_reversible
from .registry import (ENGINES, check_engine_params, create_engine, engine_class,
                       engine_parameters, list_engines, register_engine)
from . import tvl1  # noqa: F401  (registers "tvl1")
from . import motionnet  # noqa: F401
from . import costvolume  # noqa: F401
from . import tvnet  # noqa: F401

__all__ = ["FlowEngine", "Backward", "check_reversible", "ENGINES", "check_engine_params",
           "create_engine", "engine_class", "engine_parameters", "list_engines", "register_engine"]
