"""ST-MulNet: spatiotemporal multiplier network (Feichtenhofer, Pinz & Wildes, CVPR 2017).

Two separable-3D ResNet streams — appearance on RGB (3 channels) and motion on a stack of L flows
(``2L`` channels, L = 10 in the paper) — whose temporal convs start as identities (centre tap of
the 3-tap filter = 1, no normalisation after them, as the official code's ``initParamsCtrTime``),
so at initialisation each stream computes its 2D ResNet frame by frame and 2D two-stream weights
(:func:`flowkit.models.init.load_torchvision_resnet`) carry over unchanged.

Motion gates appearance inside residual units, never the other way round::

    appearance block l:  x_a' = relu( shortcut(x_a) + F_a( x_a * relu(x_m) ) )   gating="multiplicative"
                                                   F_a( x_a + relu(x_m) )         gating="additive"
                                                   F_a( x_a )                     gating="none"
    motion block l:      x_m' = relu( shortcut(x_m) + F_m(x_m) )

``x_a`` / ``x_m`` are the inputs of the two streams' corresponding blocks; the product is
differentiable in both, so the appearance loss also trains the motion stream.

Where: one gated unit per stage in ``gated_layers`` (default all four, ``layer1 .. layer4`` =
the paper's conv2_x .. conv5_x): the second residual unit of the stage (res2b, res3b, res4b,
res5b), i.e. the gate is the output of res2a .. res5a, following the official code's fusion points
``res2a, res3a, res4a, res5a`` (``STMulNet.m``: ``fusionLayer``); in a stage with a single unit
(test sizes) its only unit is gated.

Head per stream: temporal max pooling after the last block (the paper's choice), spatial global
average pooling, dropout, ``fc``. Each stream keeps its own cross-entropy (``stream_logits``); the
fused prediction ``logits`` is the two-stream late fusion by averaging the streams' softmax scores,
returned as ``log((softmax(a) + softmax(m)) / 2)`` so that ``softmax(logits)`` is that average.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FlowkitError
from .base import VideoClassifier, modality_channels
from .registry import register_model
from .resnet import clip_input
from .resnet3d import ResNet3d

GATINGS = ("multiplicative", "additive", "none")


def motion_gate(appearance: torch.Tensor, motion: torch.Tensor, gating: str = "multiplicative"
                ) -> torch.Tensor:
    """Residual-branch input of the appearance unit: ``x_a * relu(x_m)`` or ``x_a + relu(x_m)``.

    Shape: ``appearance`` and ``motion`` both ``(B, C, T, H, W)``; output the same.
    """
    if appearance.shape != motion.shape:
        raise FlowkitError(f"motion gate needs equal shapes, got appearance {tuple(appearance.shape)} "
                           f"and motion {tuple(motion.shape)}")
    if gating == "multiplicative":
        return appearance * torch.relu(motion)
    if gating == "additive":
        return appearance + torch.relu(motion)
    raise FlowkitError(f"gating must be 'multiplicative' or 'additive' here, got {gating!r}")


def late_fusion_logits(stream_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``log(mean_s softmax(logits_s))``: logits whose softmax is the streams' average softmax."""
    log_probs = torch.stack([F.log_softmax(s.float(), dim=1) for s in stream_logits])
    return torch.logsumexp(log_probs, dim=0) - math.log(len(stream_logits))


@register_model("stmulnet")
class STMulNet(VideoClassifier):
    """ST-MulNet two-stream classifier (module docstring for the architecture).

    Args:
        num_classes: K.
        depth, width, layers: ResNet of both streams (``layers`` e.g. ``(1, 1, 1, 1)`` for tests).
        flow_stack: L, flows stacked per clip position (motion input ``2L`` channels).
        gating: ``"multiplicative"`` (paper), ``"additive"``, or ``"none"`` (plain two-stream).
        gated_layers: stages whose gated unit is active, among 1..4 (``layer1 .. layer4``).
        dropout: before each stream's ``fc``.

    Inputs: ``rgb`` ``(B, 3, T, H, W)`` and ``flow`` ``(B, 2L, T, H, W)`` with the same T, H, W.
    Output: ``logits`` ``(B, K)`` (softmax-average fusion), ``stream_logits`` ``[appearance, motion]``.
    Submodules: ``appearance``, ``motion`` (:class:`ResNet3d`), ``appearance_fc``, ``motion_fc``.
    """

    def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
                 layers: Sequence[int] | None = None, flow_stack: int = 10,
                 gating: str = "multiplicative", gated_layers: Sequence[int] = (1, 2, 3, 4),
                 dropout: float = 0.0):
        super().__init__(num_classes)
        if gating not in GATINGS:
            raise FlowkitError(f"gating must be one of {', '.join(GATINGS)}, got {gating!r}")
        gated_layers = tuple(int(s) for s in gated_layers)
        if any(s not in (1, 2, 3, 4) for s in gated_layers):
            raise FlowkitError(f"gated_layers must be among 1..4 (layer1..layer4), got {gated_layers}")
        self.inputs = ("rgb", "flow")
        self.flow_stack = int(flow_stack)
        self.gating = gating
        self.flow_channels = modality_channels("flow", flow_stack)
        stream_kw = dict(depth=depth, width=width, layers=layers, kind="separable",
                         temporal_init="identity", temporal_bn=False)
        self.appearance = ResNet3d(in_channels=3, **stream_kw)
        self.motion = ResNet3d(in_channels=self.flow_channels, **stream_kw)
        # (stage index 0..3) -> index of the gated unit in that stage, or absent.
        self.gated_blocks: dict[int, int] = {}
        if gating != "none":
            for s in gated_layers:
                self.gated_blocks[s - 1] = min(1, self.appearance.layers[s - 1] - 1)
        self.dropout = nn.Dropout(float(dropout))
        channels = self.appearance.stage_channels[-1]
        self.appearance_fc = nn.Linear(channels, self.num_classes)
        self.motion_fc = nn.Linear(channels, self.num_classes)

    def backbones(self) -> list[nn.Module]:
        """``[appearance, motion]``: both initialise from one 2D ImageNet ResNet (motion cross-modality)."""
        return [self.appearance, self.motion]

    def heads(self) -> list[nn.Linear]:
        """``[appearance_fc, motion_fc]``."""
        return [self.appearance_fc, self.motion_fc]

    def forward_features(self, rgb: torch.Tensor, flow: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-stage features of both streams, ``(B, C, T, H/32, W/32)`` each, with motion gating."""
        if rgb.shape[2:] != flow.shape[2:]:
            raise FlowkitError(f"stmulnet needs rgb and flow of the same T, H, W; got rgb "
                               f"{tuple(rgb.shape)} and flow {tuple(flow.shape)}")
        xa = self.appearance.forward_stem(rgb)
        xm = self.motion.forward_stem(flow)
        for s, (stage_a, stage_m) in enumerate(zip(self.appearance.stages, self.motion.stages)):
            gated = self.gated_blocks.get(s)
            for b, (block_a, block_m) in enumerate(zip(stage_a, stage_m)):
                gate = motion_gate(xa, xm, self.gating) if b == gated else None
                xa, xm = block_a(xa, residual_input=gate), block_m(xm)
        return xa, xm

    def _head(self, features: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
        pooled = features.amax(dim=2).mean(dim=(2, 3))  # temporal max, then spatial average
        return fc(self.dropout(pooled))

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        rgb = clip_input(self, inputs, "rgb", 3)
        flow = clip_input(self, inputs, "flow", self.flow_channels)
        xa, xm = self.forward_features(rgb, flow)
        streams = [self._head(xa, self.appearance_fc), self._head(xm, self.motion_fc)]
        return {"logits": late_fusion_logits(streams), "stream_logits": streams}
