"""What every classifier is: inputs it needs, the output dict, and the training loss.

Input conventions (batches as the data module produces them):
    ``rgb``        float ``(B, 3, T, H, W)``, normalised with ImageNet mean/std
    ``flow``       float ``(B, 2L, T, H, W)``: channels ``(u, v)`` of flows ``t .. t+L-1`` at clip
                   position ``t``, divided by ``flow_bound`` (the run's ``config.flow_bound``, by
                   default the training store's bound: so about [-1, 1]); pixels at the clip's
                   resolution are ``flow * flow_bound``
    ``flow_backward`` float ``(B, 2, T, H, W)``: at clip position ``t`` the backward flow from
                   frame ``i_t`` to ``i_t - 1`` (zero at frame 0), divided by ``flow_bound``
    ``flow_bound`` float ``(B,)``: the bound the flow was divided by, in pixels
    ``label``      int64 ``(B,)``

``forward(inputs)`` returns a dict: ``logits`` ``(B, K)`` (the fused prediction used for evaluation),
optionally ``stream_logits`` (a list of ``(B, K)``, each trained with its own cross-entropy, e.g. the
two streams of ST-MulNet) and ``aux_loss`` (a scalar added to the loss, e.g. TrajectoryNet's
unsupervised MotionNet loss, already weighted).
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FlowkitError

#: The modalities a stream can take (``flow_backward`` is an extra input, of TrajectoryNet only).
STREAM_MODALITIES = ("rgb", "flow")


def modality_channels(modality: str, flow_stack: int) -> int:
    """Input channels of a stream: 3 for ``rgb``, ``2 * flow_stack`` for ``flow``."""
    if modality not in STREAM_MODALITIES:
        raise FlowkitError(f"modality must be one of {', '.join(STREAM_MODALITIES)}, "
                           f"got {modality!r}")
    if int(flow_stack) < 1:
        raise FlowkitError(f"flow_stack must be >= 1, got {flow_stack}")
    return 3 if modality == "rgb" else 2 * int(flow_stack)


class VideoClassifier(nn.Module):
    """Base class of the registered classifiers.

    Subclasses set ``self.inputs`` (a tuple of ``"rgb"`` / ``"flow"`` / ``"flow_backward"``) and
    ``self.flow_stack`` (L, the number of consecutive flows stacked per clip position; 1 unless the
    model needs more) in ``__init__`` and implement ``forward(inputs) -> dict``.
    """
    model_name: str = ""
    #: Model keywords naming files the model reads when built (trained weights of a part, e.g.
    #: ``tvnet_weights``): the trainer records them as absolute paths, and a rebuild
    #: (``flowkit evaluate``, ``--resume``) whose file is gone says where the run expected it.
    file_kwargs: tuple[str, ...] = ()
    #: Keywords read only by a part the model builds for one value of another keyword, as
    #: ``{keyword: (switch, value)}`` (trajectorynet's ``motionnet_weights``: ``("flow_source",
    #: "motionnet")``). With another value they would be recorded with the run and never used,
    #: so the model refuses them (:meth:`refuse_unused`); a rebuild of a run recorded before
    #: that drops them (:func:`~flowkit.models.registry.rebuild_model`).
    part_kwargs: dict[str, tuple[str, object]] = {}
    #: True for a model whose forward leaves some trainable parameters without a gradient for
    #: some inputs (a branch it skips). Under torchrun such a model is wrapped with DDP's
    #: ``find_unused_parameters``, which costs an extra pass over the autograd graph per step;
    #: every registered model uses all its parameters (tests/test_distributed.py checks it).
    skips_parameters: bool = False

    def __init__(self, num_classes: int):
        super().__init__()
        if int(num_classes) < 1:
            raise FlowkitError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.inputs: tuple[str, ...] = ("rgb",)
        self.flow_stack: int = 1
        #: The fewest frames a clip may have (DDN's motion needs a pair); see check_clip_length.
        self.min_frames: int = 1
        self.model_kwargs: dict = {}

    @classmethod
    def unused_kwargs(cls, kw: dict) -> list[str]:
        """The keywords of ``kw`` its part switches (:attr:`part_kwargs`) leave unused: given
        other than their default while the switch (``kw``'s, else its default) builds no such
        part. A default never counts, so building with the defaults is always allowed."""
        defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()}
        return [key for key, (switch, value) in cls.part_kwargs.items()
                if key in kw and kw[key] != defaults.get(key)
                and kw.get(switch, defaults.get(switch)) != value]

    def refuse_unused(self, **kw) -> None:
        """FlowkitError naming the keywords of ``kw`` (the constructor's values, the switches
        included) that would be recorded and never used (:meth:`unused_kwargs`)."""
        unused = self.unused_kwargs(kw)
        if unused:
            switch, value = self.part_kwargs[unused[0]]
            raise FlowkitError(f"model {self.model_name!r}: {', '.join(unused)} only appl"
                               f"{'ies' if len(unused) == 1 else 'y'} with {switch}={value!r} "
                               f"(with {switch}={kw.get(switch)!r} nothing reads "
                               f"{'it' if len(unused) == 1 else 'them'}); pass --model-arg "
                               f"{switch}={value} or leave {'it' if len(unused) == 1 else 'them'} "
                               "out")

    def set_stream(self, modality: str, flow_stack: int = 1) -> None:
        """Make this a one-stream model on ``modality``: sets ``modality``, ``inputs``,
        ``flow_stack`` and ``channels`` (3 for rgb, 2L for L stacked flows)."""
        self.channels = modality_channels(modality, flow_stack)
        self.modality = modality
        self.inputs = (modality,)
        self.flow_stack = int(flow_stack)

    def backbones(self) -> list[nn.Module]:
        """The ResNet backbones ``--init FILE`` initialises (default: ``self.backbone``)."""
        return [self.backbone] if isinstance(getattr(self, "backbone", None), nn.Module) else []

    def heads(self) -> list[nn.Linear]:
        """The classifier layer on each of :meth:`backbones`, same order (default: ``self.fc``)."""
        return [self.fc] if isinstance(getattr(self, "fc", None), nn.Linear) else []

    def kwargs_without_files(self) -> dict | None:
        """The model's keywords with every file keyword (:attr:`file_kwargs`) dropped and what
        the files fixed (a part's architecture) given as keywords instead, or None when no
        keyword can say it. A run records them, so that a rebuild whose checkpoint replaces the
        weights (``flowkit evaluate``, ``--resume``) needs no file that is gone. Default: None
        (a model with file keywords says what its files fix)."""
        return None

    def describe(self) -> dict:
        """Resolved settings worth recording with a run (defaults included), e.g. a loss weight;
        the trainer writes them to config.json and every checkpoint (``model.settings``)."""
        return {}

    def lr_scales(self) -> dict[str, float]:
        """``{parameter-name prefix: factor}``: parameters whose name starts with a prefix train at
        ``factor`` times the run's learning rate, in their own optimiser group without weight decay
        (fine-tuned modules such as TVNet's kernels are not pulled towards zero). Default: none."""
        return {}

    def check_clip_length(self, frames: int) -> None:
        """Raise a FlowkitError when clips of ``frames`` frames are shorter than ``min_frames``:
        the trainer calls it before it writes anything, ``forward`` where it needs the frames."""
        if int(frames) < self.min_frames:
            raise FlowkitError(f"model {self.model_name!r} needs clips of at least "
                               f"{self.min_frames} frames, got {frames}; pass --frames "
                               f"{self.min_frames} or more")

    def check_inputs(self, inputs: dict[str, torch.Tensor]) -> None:
        """Raise a FlowkitError when ``inputs`` is not a dict, lacks an input this model needs
        (each named), or holds one that is not a floating tensor (uint8 frames: the model takes
        them normalised). Shapes and dtypes only: no device sync."""
        if not isinstance(inputs, dict):
            example = ", ".join(f"{m!r}: {'x' if i == 0 else m}" for i, m in enumerate(self.inputs))
            raise FlowkitError(f"model {self.model_name!r} takes a dict of inputs, got "
                               f"{type(inputs).__name__}; call it as model({{{example}}})")
        missing = [m for m in self.inputs if m not in inputs]
        if missing:
            raise FlowkitError(f"model {self.model_name!r} needs {' and '.join(missing)} input, "
                               f"the batch has {', '.join(sorted(inputs)) or 'nothing'}")
        for m in self.inputs:
            x = inputs[m]
            if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                got = f"{x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
                raise FlowkitError(f"model {self.model_name!r}: {m} must be a floating tensor, "
                                   f"got {got}; pass it normalised as float (as ClipDataset "
                                   "gives it: ImageNet-normalised rgb, flow / flow_bound)")


def classification_loss(output: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each stream's logits (or of ``logits``) summed, plus ``aux_loss``."""
    streams = output.get("stream_logits") or [output["logits"]]
    loss = sum(F.cross_entropy(logits.float(), labels) for logits in streams)
    if output.get("aux_loss") is not None:
        loss = loss + output["aux_loss"]
    return loss
