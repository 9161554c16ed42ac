"""flowkit: optical flow and motion features from video folders, stored in HDF5, for action recognition.

Public API::

    import flowkit
    engine = flowkit.create_engine("tvl1", device="cpu")
    flow = engine(frames0, frames1)                 # (B, C, H, W) x2 -> (B, 2, H, W) pixels
    store = flowkit.FlowStore("ucf101.flowkit")     # HDF5 feature store (a directory)
    model = flowkit.create_model("cidc", num_classes=101)   # classifiers: flowkit.list_models()
"""
__version__ = "0.1.0"

from .errors import EngineError, FlowkitError, StoreError, VideoError
from .flow import FlowEngine, create_engine, list_engines
from .models import create_model, list_models
from .store import FlowStore

__all__ = [
    "__version__", "FlowkitError", "VideoError", "StoreError", "EngineError",
    "FlowEngine", "create_engine", "list_engines", "FlowStore", "create_model", "list_models",
]
