"""flowkit: optical flow and motion features from video folders, stored in HDF5, for action recognition.

Public API::

    import flowkit
    engine = flowkit.create_engine("tvl1", device="cpu")
    flow = engine(frames0, frames1)                 # (B, C, H, W) x2 -> (B, 2, H, W) pixels
    store = flowkit.FlowStore("ucf101.flowkit")     # HDF5 feature store (a directory)
    model = flowkit.create_model("cidc", num_classes=101)   # classifiers: flowkit.list_models()
"""
import importlib
import importlib.util

from .errors import EngineError, FlowkitError, StoreError, VideoError
from .version import __version__

# Imported on first use (PEP 562), so that `import flowkit` and `flowkit --help` stay fast: the
# engines and models pull in torch.
_LAZY = {"FlowEngine": "flow", "create_engine": "flow", "list_engines": "flow",
         "FlowStore": "store", "create_model": "models", "list_models": "models"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    # A part, e.g. `flowkit.flow.costvolume` after a bare `import flowkit`, imported on first
    # use like the names above (importing sets it here). Never `_` names: `__main__` runs the CLI.
    if name.isidentifier() and not name.startswith("_") \
            and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'flowkit' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

__all__ = [
    "__version__", "FlowkitError", "VideoError", "StoreError", "EngineError",
    "FlowEngine", "create_engine", "list_engines", "FlowStore", "create_model", "list_models",
]
