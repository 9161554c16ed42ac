"""Everything flowkit trains: the registered video classifiers on stores, and the learnable motion
engines (:mod:`flowkit.train.tvnet`, :mod:`flowkit.train.motionnet`).

Library layer (no click): ``flowkit train`` / ``evaluate`` / ``train-flow`` are thin wrappers over
it; progress goes through :mod:`flowkit.progress`, checkpoints through :mod:`flowkit.checkpoints`::

    from flowkit.train import TrainConfig, Trainer, evaluate_run
    result = Trainer(TrainConfig(store="ucf101.flowkit", model="resnet2d",
                                 model_kwargs={"modality": "flow"}), "runs/flow").fit()
    Trainer.resume("runs/flow", epochs=20).fit()          # continue exactly where it stopped
    report = evaluate_run("runs/flow", clips=10, crops=3)  # writes runs/flow/eval/
"""
from .checkpoint import load_checkpoint, save_checkpoint
from .config import RESUMABLE_CHANGES, TrainConfig, merge_for_resume, read_run_config
from ..data.samplers import SegmentClipsSampler
from .evaluate import (EvalResult, evaluate_run, flatten_views,
                       load_run_model, predict, save_confusion_png)
from .loading import EpochBatchSampler, derive_seed
from .loop import EpochRecord, Trainer, TrainResult, epoch_line
from .optim import build_optimizer, build_scheduler, lr_factor, parameter_groups
from .metrics import (confusion_matrix, mean_class_accuracy, per_class_accuracy, topk_accuracy,
                      topk_correct)

__all__ = [
    "TrainConfig", "RESUMABLE_CHANGES", "merge_for_resume", "read_run_config",
    "Trainer", "TrainResult", "EpochRecord", "epoch_line", "EpochBatchSampler",
    "build_optimizer", "build_scheduler", "lr_factor", "parameter_groups", "derive_seed",
    "save_checkpoint", "load_checkpoint",
    "evaluate_run", "EvalResult", "load_run_model", "predict", "flatten_views",
    "SegmentClipsSampler", "save_confusion_png",
    "topk_accuracy", "topk_correct", "confusion_matrix", "mean_class_accuracy",
    "per_class_accuracy",
]
