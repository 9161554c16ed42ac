"""2D ResNet (He et al., 2016) with torchvision parameter names, run per frame on video clips.

``ResNet2d`` is a backbone (no ``fc``): its state dict uses torchvision's names (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.bn1``, ..., ``layerN.0.downsample.0/1``), so a torchvision ResNet
checkpoint loads into it with :func:`flowkit.models.init.load_torchvision_resnet`.

``resnet2d`` (registered) is the per-frame classifier: the backbone on every frame, spatial global
average pooling, ``fc``, logits averaged over time. With ``T = 1`` it is the single-frame
appearance baseline; with ``modality="flow"`` it is the temporal stream of a two-stream network
(``2 * flow_stack`` input channels).

Layout (``depth=18``, ``width=64``, input ``(B, C, T, 224, 224)``)::

    conv1 7x7/2 -> bn1 -> relu -> maxpool 3x3/2      (B, 64, T, 56, 56)   forward_stem
    layer1  2 x BasicBlock                           (B, 64, T, 56, 56)   stage 1 (conv2_x)
    layer2  2 x BasicBlock, first stride 2           (B, 128, T, 28, 28)  stage 2 (conv3_x)
    layer3  2 x BasicBlock, first stride 2           (B, 256, T, 14, 14)  stage 3 (conv4_x)
    layer4  2 x BasicBlock, first stride 2           (B, 512, T, 7, 7)    stage 4 (conv5_x)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import FlowkitError
from ..layers import BasicBlock, Bottleneck, init_resnet_weights
from .base import VideoClassifier
from .registry import register_model

# depth -> (block kind, blocks per stage), as in torchvision.
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
EXPANSION = {"basic": 1, "bottleneck": 4}


def resnet_layout(depth: int, layers: Sequence[int] | None = None,
                  width: int = 64) -> tuple[str, tuple[int, int, int, int]]:
    """Block kind (``"basic"`` / ``"bottleneck"``) and blocks per stage for a ResNet ``depth``.

    ``layers`` (4 positive ints) overrides the blocks per stage, e.g. ``(1, 1, 1, 1)`` for tests.
    """
    if int(depth) not in RESNET_LAYOUTS:
        raise FlowkitError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
    if int(width) < 1:
        raise FlowkitError(f"ResNet width must be >= 1, got {width}")
    kind, default = RESNET_LAYOUTS[int(depth)]
    if layers is None:
        return kind, default
    layers = tuple(int(n) for n in layers)
    if len(layers) != 4 or min(layers) < 1:
        raise FlowkitError(f"layers must be 4 positive block counts (one per stage), got {layers}")
    return kind, layers  # type: ignore[return-value]


def stage_channels_of(kind: str, width: int) -> tuple[int, int, int, int]:
    """Output channels of the 4 stages: ``width * 2**i * expansion``."""
    return tuple(width * 2 ** i * EXPANSION[kind] for i in range(4))  # type: ignore[return-value]


def clip_input(model: VideoClassifier, inputs: dict[str, torch.Tensor], modality: str,
               channels: int) -> torch.Tensor:
    """``inputs[modality]`` checked to be ``(B, channels, T, H, W)``; FlowkitError otherwise."""
    model.check_inputs(inputs)
    x = inputs[modality]
    if x.dim() != 5 or x.shape[1] != channels:
        raise FlowkitError(f"model {model.model_name!r} expects {modality} of shape "
                           f"(B, {channels}, T, H, W), got {tuple(x.shape)}")
    return x


class ResNet2d(nn.Module):
    """2D ResNet backbone without ``fc``; video clips are run frame by frame.

    Args:
        depth: 18, 34 (BasicBlock) or 50, 101, 152 (Bottleneck).
        in_channels: input channels (3 for RGB, ``2L`` for a stack of L flows).
        width: stem width (64 in the paper); stage ``i`` has ``width * 2**i`` planes.
        layers: blocks per stage, overriding the depth's (e.g. ``(1, 1, 1, 1)``).

    Shape:
        ``forward_stages``: ``(B, C, T, H, W)`` -> 4 tensors ``(B, C_i, T, H_i, W_i)`` with
        ``C_i = stage_channels[i]`` and ``H_i = H / 4, H / 8, H / 16, H / 32`` (rounded up).
        4D input ``(N, C, H, W)`` (images) gives 4D outputs.
    """

    def __init__(self, depth: int = 18, in_channels: int = 3, width: int = 64,
                 layers: Sequence[int] | None = None):
        super().__init__()
        kind, layers = resnet_layout(depth, layers, width)
        self.depth, self.kind, self.layers, self.width = int(depth), kind, layers, int(width)
        self.in_channels = int(in_channels)
        self.stage_channels = stage_channels_of(kind, self.width)
        block = BasicBlock if kind == "basic" else Bottleneck

        self.conv1 = nn.Conv2d(self.in_channels, self.width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = self.width
        for i, n in enumerate(layers):
            planes = self.width * 2 ** i
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, stride=2 if (i > 0 and j == 0) else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        init_resnet_weights(self)

    @property
    def stages(self) -> nn.ModuleList:
        """The 4 stages ``layer1 .. layer4`` (aliases, not copies)."""
        return nn.ModuleList([self.layer1, self.layer2, self.layer3, self.layer4])

    def _fold(self, x: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        if x.dim() == 4:
            return x, None
        if x.dim() != 5:
            raise FlowkitError(f"ResNet2d expects (B, C, T, H, W) or (N, C, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(b * t, c, h, w), t

    @staticmethod
    def _unfold(x: torch.Tensor, t: int | None) -> torch.Tensor:
        if t is None:
            return x
        bt, c, h, w = x.shape
        return x.reshape(bt // t, t, c, h, w).transpose(1, 2)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise FlowkitError(f"ResNet2d built for {self.in_channels} input channels got "
                               f"{x.shape[1]} (input shape {tuple(x.shape)})")
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, width, T, H/4, W/4)`` (or the 4D image equivalent)."""
        x, t = self._fold(x)
        return self._unfold(self._stem(x), t)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 4 stage outputs ``(B, C_i, T, H_i, W_i)`` (T folded into the batch inside)."""
        x, t = self._fold(x)
        x = self._stem(x)
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(self._unfold(x, t))
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage output ``(B, stage_channels[3], T, H/32, W/32)``."""
        return self.forward_stages(x)[-1]


@register_model("resnet2d")
class ResNet2dClassifier(VideoClassifier):
    """Per-frame 2D ResNet: logits of every frame averaged over T (TSN-style consensus).

    With ``T = 1`` this is the single-frame appearance baseline; ``modality="flow"`` makes it the
    temporal stream (``2 * flow_stack`` input channels).

    Inputs: ``inputs[modality]`` ``(B, C, T, H, W)``. Output: ``{"logits": (B, num_classes)}``.
    Submodules: ``backbone`` (:class:`ResNet2d`), ``dropout``, ``fc``.
    """

    def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
                 layers: Sequence[int] | None = None, modality: str = "rgb", flow_stack: int = 1,
                 dropout: float = 0.0):
        super().__init__(num_classes)
        self.set_stream(modality, flow_stack)
        self.backbone = ResNet2d(depth, self.channels, width, layers)
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(self.backbone.stage_channels[-1], self.num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = clip_input(self, inputs, self.modality, self.channels)
        features = self.backbone(x).mean(dim=(3, 4))            # (B, C, T)
        logits = self.fc(self.dropout(features.transpose(1, 2)))  # (B, T, K)
        return {"logits": logits.mean(dim=1)}
