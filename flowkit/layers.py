"""Network building blocks shared by engines and classifiers: torchvision's ResNet blocks.

The 2D :class:`BasicBlock` / :class:`Bottleneck` (torchvision's names: ``conv1``, ``bn1``, ...,
``downsample.0/1``, so torchvision checkpoints load into them) serve the classifiers' 2D ResNet
(:mod:`flowkit.models.resnet`) and the cost-volume engine's learned features
(:class:`flowkit.flow.costvolume.FeatureExtractor`); their :class:`ResidualBlock` forward is also
the 3D blocks' (:mod:`flowkit.models.resnet3d`).
"""
from __future__ import annotations

import torch
from torch import nn


def init_resnet_weights(module: nn.Module) -> None:
    """torchvision's initialisation: Kaiming-normal (fan_out) convs, BN weight 1 / bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _downsample(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(outplanes))


class ResidualBlock(nn.Module):
    """``relu(shortcut(x) + F(r))`` with ``r = residual_input`` when given, else ``x``: the forward of
    every ResNet block here and in :mod:`flowkit.models.resnet3d` (ST-MulNet gates ``r``).
    Subclasses define ``residual`` (F, without the final ReLU) and ``downsample`` (or None)."""

    def forward(self, x: torch.Tensor, residual_input: torch.Tensor | None = None) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        branch = self.residual(x if residual_input is None else residual_input)
        return torch.relu(shortcut + branch)


class BasicBlock(ResidualBlock):
    """Two 3x3 convs with a shortcut: ``relu(shortcut(x) + F(r))``, ``r = residual_input or x``.

    Shape: ``(N, inplanes, H, W) -> (N, planes, H / stride, W / stride)``.
    """
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F (no final ReLU)."""
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out))


class Bottleneck(ResidualBlock):
    """1x1 -> 3x3 (stride here, torchvision's "ResNet v1.5") -> 1x1 with a shortcut.

    Shape: ``(N, inplanes, H, W) -> (N, 4 * planes, H / stride, W / stride)``.
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch F (no final ReLU)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.bn3(self.conv3(out))


__all__ = ["ResidualBlock", "BasicBlock", "Bottleneck", "init_resnet_weights"]
