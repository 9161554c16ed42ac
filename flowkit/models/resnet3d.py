"""3D ResNets for clips: separable (2+1)D and inflated (I3D-style), with 2D-compatible names.

Both kinds keep torchvision's names for every spatial part (``conv1``, ``bn1``, ``layerN.M.convK``,
``layerN.0.downsample.0/1``) so a 2D ImageNet checkpoint inflates into them
(:func:`flowkit.models.init.load_torchvision_resnet`). T is never strided: every stage output has
the input's T; spatial strides are ResNet's.

``kind="separable"`` ((2+1)D, as in S3D / R(2+1)D / ST-MulNet): each k x k spatial conv becomes
``(1, k, k)`` and is followed by a temporal conv of size 3, ``convN_t`` ``(3, 1, 1)``, with ``bnN_t``
and ReLU (the stem has ``conv1_t`` / ``bn1_t``). 1x1 convs of the Bottleneck stay pointwise (no
temporal conv after them)::

    BasicBlock3d (separable)
      x -> conv1 (1,3,3)/s -> bn1 -> relu -> conv1_t (3,1,1) -> bn1_t -> relu
        -> conv2 (1,3,3)   -> bn2         -> conv2_t (3,1,1) -> bn2_t ------(+ shortcut(x))-> relu

No ReLU sits between ``bn2`` and ``conv2_t``: with ``temporal_init="identity"`` (centre tap = 1,
others 0) every temporal conv is then an exact identity and the network computes its 2D ResNet
frame by frame. The temporal modules have their own names so a model can swap one, e.g.
``layer2[1].conv1_t`` is the temporal part of the paper's ``res3b`` first conv (TrajectoryNet
replaces it with a trajectory convolution); ``temporal_bn=False`` makes every ``bnN_t`` an
``nn.Identity`` (ST-MulNet's identity-initialised temporal filters have no normalisation).

``kind="inflated"`` (I3D-style, Carreira & Zisserman 2017): the first conv of each block has a
temporal extent of 3 (``(3,3,3)`` in a BasicBlock, ``(3,1,1)`` in a Bottleneck), the stem is
``(stem_temporal_kernel, 7, 7)``; all other convs are ``(1, k, k)``.

Temporal padding replicates the edge frames (spatial padding is zero as in 2D): a static clip has
no temporal edges, so a 2D-inflated network (weights repeated over kt and divided by kt) computes
exactly its 2D network on every frame of it.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FlowkitError
from .base import VideoClassifier
from .registry import register_model
from ..layers import ResidualBlock, init_resnet_weights
from .resnet import clip_input, resnet_layout, stage_channels_of

KINDS = ("separable", "inflated")
TEMPORAL_INITS = ("default", "identity")


class ClipConv3d(nn.Conv3d):
    """``nn.Conv3d`` without bias, ``'same'`` temporal padding by edge replication, zero spatial padding.

    Shape: ``(B, C_in, T, H, W) -> (B, C_out, T, H / stride, W / stride)`` (T is never strided).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, int, int],
                 spatial_stride: int = 1):
        kt, kh, kw = kernel
        if kt % 2 == 0:
            raise FlowkitError(f"temporal kernel size must be odd to keep T, got {kt}")
        super().__init__(in_channels, out_channels, kernel, stride=(1, spatial_stride, spatial_stride),
                         padding=(0, kh // 2, kw // 2), bias=False)
        self.temporal_padding = kt // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.temporal_padding:
            p = self.temporal_padding
            x = F.pad(x, (0, 0, 0, 0, p, p), mode="replicate")
        return super().forward(x)


class TemporalConv3d(ClipConv3d):
    """Channel-preserving temporal conv ``(k, 1, 1)`` of the separable blocks (``convN_t``)."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(channels, channels, (kernel_size, 1, 1))

    def reset_identity(self) -> None:
        """Zero weights except the centre tap, which is the identity per channel."""
        with torch.no_grad():
            self.weight.zero_()
            centre = self.weight.shape[2] // 2
            idx = torch.arange(self.weight.shape[0])
            self.weight[idx, idx, centre, 0, 0] = 1.0


def _temporal_pair(kind: str, channels: int, temporal_bn: bool) -> tuple[nn.Module | None, nn.Module | None]:
    if kind != "separable":
        return None, None
    return TemporalConv3d(channels), (nn.BatchNorm3d(channels) if temporal_bn else nn.Identity())


def _downsample3d(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(ClipConv3d(inplanes, outplanes, (1, 1, 1), stride), nn.BatchNorm3d(outplanes))


class _Block3d(ResidualBlock):
    def _temporal(self, out: torch.Tensor, conv: nn.Module | None, bn: nn.Module | None,
                  relu: bool) -> torch.Tensor:
        if conv is None:
            return out
        out = bn(conv(out))
        return self.relu(out) if relu else out


class BasicBlock3d(_Block3d):
    """3D BasicBlock (see the module docstring for the two kinds).

    Shape: ``(B, inplanes, T, H, W) -> (B, planes, T, H / stride, W / stride)``.
    """
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, kind: str = "separable",
                 temporal_bn: bool = True):
        super().__init__()
        kt = 3 if kind == "inflated" else 1
        self.conv1 = ClipConv3d(inplanes, planes, (kt, 3, 3), stride)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv1_t, self.bn1_t = _temporal_pair(kind, planes, temporal_bn)
        self.conv2 = ClipConv3d(planes, planes, (1, 3, 3))
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv2_t, self.bn2_t = _temporal_pair(kind, planes, temporal_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample3d(inplanes, planes, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F (no final ReLU)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self._temporal(out, self.conv1_t, self.bn1_t, relu=True)
        out = self.bn2(self.conv2(out))
        return self._temporal(out, self.conv2_t, self.bn2_t, relu=False)


class Bottleneck3d(_Block3d):
    """3D Bottleneck: separable puts ``conv2_t`` after the 3x3 conv; inflated makes conv1 ``(3,1,1)``.

    Shape: ``(B, inplanes, T, H, W) -> (B, 4 * planes, T, H / stride, W / stride)``.
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, kind: str = "separable",
                 temporal_bn: bool = True):
        super().__init__()
        kt = 3 if kind == "inflated" else 1
        self.conv1 = ClipConv3d(inplanes, planes, (kt, 1, 1))
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = ClipConv3d(planes, planes, (1, 3, 3), stride)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv2_t, self.bn2_t = _temporal_pair(kind, planes, temporal_bn)
        self.conv3 = ClipConv3d(planes, planes * 4, (1, 1, 1))
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample3d(inplanes, planes * 4, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F (no final ReLU)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self._temporal(out, self.conv2_t, self.bn2_t, relu=True)
        return self.bn3(self.conv3(out))


class ResNet3d(nn.Module):
    """3D ResNet backbone without ``fc``: separable (2+1)D or inflated (I3D-style).

    Args:
        depth: 18, 34 (BasicBlock3d) or 50, 101, 152 (Bottleneck3d).
        in_channels: 3 for RGB, ``2L`` for a stack of L flows.
        width: stem width (64); stage ``i`` has ``width * 2**i`` planes.
        layers: blocks per stage overriding the depth's (e.g. ``(1, 1, 1, 1)``).
        kind: ``"separable"`` or ``"inflated"`` (module docstring).
        temporal_init: ``"default"`` (Kaiming like every conv) or ``"identity"`` (centre tap =
            identity: the separable network starts as its 2D network run per frame).
        temporal_bn: separable only; ``False`` replaces every ``bnN_t`` by ``nn.Identity``.
        stem_temporal_kernel: inflated only; temporal extent of the stem conv (5 or 3).

    Shape:
        ``forward_stages``: ``(B, C, T, H, W)`` -> 4 tensors ``(B, C_i, T, H_i, W_i)`` with
        ``C_i = stage_channels[i]``, ``H_i = H / 4, H / 8, H / 16, H / 32`` (rounded up).
    """

    def __init__(self, depth: int = 18, in_channels: int = 3, width: int = 64,
                 layers: Sequence[int] | None = None, kind: str = "separable",
                 temporal_init: str = "default", temporal_bn: bool = True,
                 stem_temporal_kernel: int = 5):
        super().__init__()
        if kind not in KINDS:
            raise FlowkitError(f"ResNet3d kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if temporal_init not in TEMPORAL_INITS:
            raise FlowkitError(f"temporal_init must be one of {', '.join(TEMPORAL_INITS)}, "
                               f"got {temporal_init!r}")
        block_kind, layers = resnet_layout(depth, layers, width)
        self.depth, self.kind, self.layers, self.width = int(depth), kind, layers, int(width)
        self.block_kind = block_kind
        self.in_channels = int(in_channels)
        self.temporal_init = temporal_init
        self.stage_channels = stage_channels_of(block_kind, self.width)
        block = BasicBlock3d if block_kind == "basic" else Bottleneck3d

        stem_kt = int(stem_temporal_kernel) if kind == "inflated" else 1
        self.conv1 = ClipConv3d(self.in_channels, self.width, (stem_kt, 7, 7), 2)
        self.bn1 = nn.BatchNorm3d(self.width)
        self.conv1_t, self.bn1_t = _temporal_pair(kind, self.width, temporal_bn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        inplanes = self.width
        for i, n in enumerate(layers):
            planes = self.width * 2 ** i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(inplanes, planes, stride, kind, temporal_bn))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        init_resnet_weights(self)
        if temporal_init == "identity":
            self.reset_temporal_identity()

    def temporal_convs(self) -> list[tuple[str, TemporalConv3d]]:
        """``(name, module)`` of every separable temporal conv (``conv1_t``, ``layer1.0.conv1_t``, ...)."""
        return [(n, m) for n, m in self.named_modules() if isinstance(m, TemporalConv3d)]

    def output_strides(self) -> dict[str, int]:
        """``{name: stride}`` of every submodule: input pixels per pixel of its output grid.

        Read from the structure, not assumed: the spatial strides of the convolutions and poolings
        met on the way, in registration order (which is the forward order of the stem and of every
        block's residual path); a ``downsample`` shortcut starts from its block's input. So
        ``"conv1_t"`` (the stem's temporal conv, after ``conv1``) is 2, ``"layer1.0.conv1_t"`` 4,
        ``"layer2.0.conv1_t"`` 8 (after the block's strided ``conv1``), ..., ``"layer4"`` 32. The
        grid of stride s is ``ceil(H / s) x ceil(W / s)`` (every strided op pads "same")."""
        out: dict[str, int] = {}

        def walk(module: nn.Module, name: str, stride: int) -> int:
            if isinstance(module, (nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d)):
                s = module.stride
                sh, sw = (s, s) if isinstance(s, int) else tuple(s)[-2:]
                if sh != sw:
                    raise FlowkitError(f"ResNet3d module {name!r} has spatial stride {(sh, sw)}; "
                                       f"only square strides have one output stride")
                stride *= int(sh)
            else:
                entry = stride
                for child_name, child in module.named_children():
                    full = f"{name}.{child_name}" if name else child_name
                    if child_name == "downsample":   # the shortcut, beside the residual path
                        walk(child, full, entry)
                    else:
                        stride = walk(child, full, stride)
            if name:
                out[name] = stride
            return stride

        walk(self, "", 1)
        return out

    def output_stride(self, name: str) -> int:
        """Input pixels per pixel of the output grid of submodule ``name`` (:meth:`output_strides`);
        for a temporal conv (stride 1) that is also the grid of its input."""
        strides = self.output_strides()
        if name not in strides:
            raise FlowkitError(f"ResNet3d has no submodule {name!r}")
        return strides[name]

    def reset_temporal_identity(self) -> None:
        """Set every temporal conv to the identity (centre tap); no-op for ``kind="inflated"``."""
        for _, m in self.temporal_convs():
            m.reset_identity()

    @property
    def stages(self) -> nn.ModuleList:
        """The 4 stages ``layer1 .. layer4`` (aliases, not copies)."""
        return nn.ModuleList([self.layer1, self.layer2, self.layer3, self.layer4])

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W) -> (B, width, T, H/4, W/4)``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise FlowkitError(f"ResNet3d built for (B, {self.in_channels}, T, H, W) input got "
                               f"{tuple(x.shape)}")
        x = self.relu(self.bn1(self.conv1(x)))
        if self.conv1_t is not None:
            x = self.relu(self.bn1_t(self.conv1_t(x)))
        return self.maxpool(x)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 4 stage outputs ``(B, C_i, T, H_i, W_i)``."""
        x = self.forward_stem(x)
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Last stage output ``(B, stage_channels[3], T, H/32, W/32)``."""
        return self.forward_stages(x)[-1]


class ResNet3dClassifier(VideoClassifier):
    """A :class:`ResNet3d` on one modality, global average pooling over (T, H, W), ``fc``.

    Not registered itself: ``i3d`` is the inflated one; other modules register their own
    subclasses (e.g. ``s3d``, separable) with their own ``__init__`` signature that calls this one.

    Inputs: ``inputs[modality]`` ``(B, C, T, H, W)``. Output: ``{"logits": (B, num_classes)}``.
    Submodules: ``backbone``, ``dropout``, ``fc``.
    """

    def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
                 layers: Sequence[int] | None = None, modality: str = "rgb", flow_stack: int = 1,
                 dropout: float = 0.0, kind: str = "separable", temporal_init: str = "default",
                 **backbone_kw):
        super().__init__(num_classes)
        self.set_stream(modality, flow_stack)
        self.backbone = ResNet3d(depth, self.channels, width, layers, kind=kind,
                                 temporal_init=temporal_init, **backbone_kw)
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(self.backbone.stage_channels[-1], self.num_classes)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = clip_input(self, inputs, self.modality, self.channels)
        features = self.backbone(x).mean(dim=(2, 3, 4))  # (B, C)
        return {"logits": self.fc(self.dropout(features))}


@register_model("i3d")
class I3D(ResNet3dClassifier):
    """Inflated 3D ResNet (I3D-style) classifier on ``rgb`` or ``flow`` (``2 * flow_stack`` channels)."""

    def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
                 layers: Sequence[int] | None = None, modality: str = "rgb", flow_stack: int = 1,
                 dropout: float = 0.0, stem_temporal_kernel: int = 5):
        super().__init__(num_classes, depth, width, layers, modality, flow_stack, dropout,
                         kind="inflated", stem_temporal_kernel=stem_temporal_kernel)
