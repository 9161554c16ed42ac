"""Blocks shared by the networks that compute motion inside themselves (DDN, the TVNet classifier):
a 2D ResNet branch run frame by frame with gradual temporal pooling, and weighted late fusion.

``FrameBranch`` (one DDN branch)::

    x (B, C_in, T, h, w) --entry: conv 3x3 + BN + ReLU (C_in -> C_e; none when C_in == C_e)
        --> stage 1: BasicBlock/Bottleneck x n, stride 2  --> max-pool over time by 2 (while T > 1)
        --> stage 2: ...                       stride 2  --> max-pool over time by 2 (while T > 1)
        --> ...                                          --> mean over (T, h, w) -> dropout -> fc
    logits (B, K)

The stages are torchvision's ResNet stages (``flowkit.layers`` blocks, 2D, folded over time), so
"2D convs with gradual temporal pooling" is literal: the temporal extent halves after every stage.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FlowkitError
from ..layers import BasicBlock, Bottleneck, init_resnet_weights


def temporal_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max over pairs of consecutive frames (stride 2; an odd last frame is kept as it is).

    Shape: ``(B, C, T, H, W) -> (B, C, ceil(T / 2), H, W)``; ``T = 1`` is returned unchanged.
    """
    t = x.shape[2]
    if t == 1:
        return x
    return F.max_pool3d(x, kernel_size=(2, 1, 1), stride=(2, 1, 1), ceil_mode=True)


def weighted_late_fusion(stream_logits: Sequence[torch.Tensor],
                         weights: Sequence[float] | None = None) -> torch.Tensor:
    """``log(sum_s w_s softmax(logits_s) / sum_s w_s)``: logits whose softmax is the streams'
    weighted average softmax (equal weights when ``weights`` is None).

    Shape: each ``(B, K)``; output ``(B, K)`` float32.
    """
    if weights is None:
        weights = [1.0] * len(stream_logits)
    if len(weights) != len(stream_logits) or min(weights) < 0 or sum(weights) <= 0:
        raise FlowkitError(f"fusion weights must be {len(stream_logits)} non-negative numbers with a "
                           f"positive sum, got {list(weights)}")
    log_probs = torch.stack([F.log_softmax(s.float(), dim=1) for s in stream_logits])
    log_w = torch.tensor([math.log(w) if w > 0 else -math.inf for w in weights],
                         device=log_probs.device).view(-1, 1, 1)
    return torch.logsumexp(log_probs + log_w, dim=0) - math.log(sum(weights))


class FrameBranch(nn.Module):
    """A 2D ResNet branch on a clip of maps, frame by frame, with gradual temporal pooling.

    Args:
        in_channels: C_in of the input maps (e.g. 2 for displacement maps).
        entry_channels: C_e, the channels the first stage takes; an entry conv 3x3 + BN + ReLU maps
            C_in to C_e unless they are equal.
        planes: planes of each stage (the stage output has ``planes * expansion`` channels).
        blocks: blocks per stage (same length as ``planes``).
        block: ``"basic"`` or ``"bottleneck"``.
        num_classes: K.
        dropout: before ``fc``.

    Shape: ``(B, C_in, T, h, w)`` -> logits ``(B, K)``; every stage halves h and w (stride 2 in its
    first block) and T (max over pairs of frames).
    """

    def __init__(self, in_channels: int, entry_channels: int, planes: Sequence[int],
                 blocks: Sequence[int], block: str, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if len(planes) != len(blocks) or not planes:
            raise FlowkitError(f"a branch needs as many block counts as stages, got planes "
                               f"{list(planes)} and blocks {list(blocks)}")
        cls = BasicBlock if block == "basic" else Bottleneck
        self.in_channels = int(in_channels)
        if self.in_channels == entry_channels:
            self.entry = nn.Identity()
        else:
            self.entry = nn.Sequential(
                nn.Conv2d(self.in_channels, entry_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(entry_channels), nn.ReLU(inplace=True))
        inplanes, stages = entry_channels, []
        for p, n in zip(planes, blocks):
            layers = []
            for j in range(int(n)):
                layers.append(cls(inplanes, int(p), stride=2 if j == 0 else 1))
                inplanes = int(p) * cls.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = inplanes
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(inplanes, int(num_classes))
        init_resnet_weights(self)

    @staticmethod
    def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = module(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, T, h, w)`` -> last-stage features ``(B, C_out, T', h', w')``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise FlowkitError(f"branch expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        x = self._per_frame(self.entry, x)
        for stage in self.stages:
            x = temporal_max_pool(self._per_frame(stage, x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x).mean(dim=(2, 3, 4))
        return self.fc(self.dropout(features))


__all__ = ["FrameBranch", "temporal_max_pool", "weighted_late_fusion"]
