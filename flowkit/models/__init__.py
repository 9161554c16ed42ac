"""Video classifiers over flowkit stores: backbones, TrajectoryNet, CIDC, ST-MulNet, DDN and the
TVNet end-to-end classifier.

``create_model(name, **kw)`` builds one by name; ``list_models()`` names them.
"""
from ..conventions import MODALITIES
from .base import VideoClassifier, classification_loss
from .registry import (create_model, list_models, load_run_weights, model_class,
                       model_parameters, rebuild_model, rebuild_run_model, register_model)

__all__ = ["MODALITIES", "VideoClassifier", "classification_loss", "create_model", "list_models",
           "load_run_weights", "model_class", "model_parameters", "rebuild_model",
           "rebuild_run_model", "register_model"]
from . import resnet, resnet3d, stmulnet  # noqa: F401
from . import trajectorynet, cidc  # noqa: F401
from . import ddn, tvnet_classifier  # noqa: F401
