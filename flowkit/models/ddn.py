"""DDN: "Recognize Actions by Disentangling Components of Dynamics" (Zhao, Xiong & Lin, CVPR 2018).

One network on RGB clips; motion is computed inside it, so it needs no flow in the store::

    rgb (B, 3, T, H, W) --shared low-level features, per frame: conv1 7x7/2 -> bn1 -> relu ->
                          maxpool 3x3/2 (s = 4) -> layer1             F (B, C1, T, H/s, W/s)
      ├─ appearance: FrameBranch(F)                                   static appearance
      ├─ motion:     D_t = soft-argmax(cosine cost volume(F_t, F_t+1)) (B, 2, T-1, H/s, W/s)
      │              FrameBranch(D / (d * dilation))                   apparent motion
      └─ change:     W_t = F_t+1(p + D_t(p)) - F_t(p)                 (B, C1, T-1, H/s, W/s)
                     FrameBranch(W)                                    appearance change
    logits: the branches' softmax scores averaged (log of the mean, as ST-MulNet's fusion)

Each branch is a :class:`~flowkit.models.branches.FrameBranch`: ResNet stages 2-4 run frame by
frame, the temporal extent halved after every stage ("2D convs with gradual temporal pooling"),
global average pooling and a classifier; every branch predicts and keeps its own cross-entropy
(``stream_logits``), so a branch learns to classify on its own and the average of their
predictions is the model's. The displacement map and the warped difference are the engines' own
torch functions, :class:`flowkit.flow.correlation.DisplacementMap` (cosine cost volume over a
``(2d+1) x (2d+1)`` window, soft-argmax at temperature ``tau``) and
:func:`flowkit.flow.costvolume.warped_difference`, both differentiable: the motion and change
branches' losses train the shared features through the cost volume (end to end from RGB).
Displacements are in feature pixels (``s`` input pixels); the motion branch sees them divided by
the window's reach ``d * dilation``, so about [-1, 1].

``feature_stride`` s is torchvision's 4 by default. The cost volume cannot see much below a feature
pixel of motion a frame: on the toy set DDN scores 28 / 64 / 84% at 0.25-0.6 / 0.5-1.2 / 1-2.3
feature pixels a frame (``benchmarks/results/ddn_motion.md``); in a 112 px crop, 2 px a frame is
half a feature pixel. ``feature_stride=2`` drops the stem's max-pool: features of twice the
resolution, for about four times the cost of ``layer1``, the cost volume and the branches.

``branches`` picks any non-empty subset (``--model-arg branches=motion,change``): the paper's
branch ablation with one flag; branches not built have no parameters and cost nothing.

The shared features have torchvision's names at the model's top level (``conv1``, ``bn1``,
``layer1.0.conv1``, ...), so a classifier checkpoint of this model is also a checkpoint of the
``costvolume`` engine's learned-feature mode: ``flowkit extract VIDEOS -o STORE --method costvolume
--weights RUN/checkpoints/best.pt`` (its ``FeatureExtractor`` reads ``conv1 .. layer1`` and ignores
the branches; it normalises frames with the same ImageNet mean/std as the data pipeline, and leaves
the max-pool out when the checkpoint's model settings say ``feature_stride`` 2).

ImageNet initialisation (``flowkit train --model ddn --init resnet18.pth``, a torchvision ResNet
state dict of the same depth and width): the shared ``conv1``, ``bn1``, ``layer1`` take the file's
stem and ``layer1``, and every branch's stages take its ``layer2`` .. ``layer4``
(:meth:`DDN.backbones`); the motion branch's entry conv (2 displacement channels in) and the
branches' classifiers for another class count keep their initialisation and are reported.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import FlowkitError
from ..flow.correlation import DisplacementMap
from ..flow.costvolume import warped_difference
from ..layers import BasicBlock, Bottleneck, init_resnet_weights
from .base import VideoClassifier
from .branches import FrameBranch, weighted_late_fusion
from .init import resnet_view
from .registry import register_model
from .resnet import clip_input, resnet_layout

BRANCHES = ("appearance", "motion", "change")


def parse_branches(branches: str | Sequence[str]) -> tuple[str, ...]:
    """``"motion,change"`` or ``["motion", "change"]`` -> ``("motion", "change")`` in canonical
    order; FlowkitError for an empty, unknown or repeated name."""
    names = [b.strip() for b in branches.split(",")] if isinstance(branches, str) else \
        [str(b).strip() for b in branches]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in BRANCHES]
    if not names or unknown or len(set(names)) != len(names):
        raise FlowkitError(f"ddn branches must be a non-empty subset of {', '.join(BRANCHES)} "
                           f"(e.g. --model-arg branches=motion,change), got {branches!r}")
    return tuple(b for b in BRANCHES if b in names)


@register_model("ddn")
class DDN(VideoClassifier):
    """DDN three-branch classifier on RGB clips (module docstring for the architecture).

    Args:
        num_classes: K.
        depth, width, layers: the ResNet layout: ``layers[0]`` blocks of the shared ``layer1``,
            ``layers[1:]`` blocks of stages 2-4 in every branch (e.g. ``width=8``,
            ``layers=[1,1,1,1]`` for tiny tests).
        branches: subset of ``appearance, motion, change`` (a list or a comma-separated string).
        max_displacement: half-size d of the cost-volume window, feature pixels.
        tau: soft-argmax temperature (> 0: differentiable; 0 would be winner-take-all, with no
            gradient through the displacement).
        dilation: spacing of the window's candidates, feature pixels.
        dropout: before each branch's ``fc``.
        feature_stride: input pixels per feature pixel, 4 (torchvision's stem) or 2 (no
            max-pool: finer motion, module docstring).

    Inputs: ``rgb`` ``(B, 3, T, H, W)`` ImageNet-normalised, T >= 2 with a motion or change branch.
    Outputs: ``logits`` ``(B, K)`` (averaged softmax of the branches), ``stream_logits`` (one
    ``(B, K)`` per branch, in ``self.branches`` order).
    """

    def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
                 layers: Sequence[int] | None = None,
                 branches: str | Sequence[str] = BRANCHES, max_displacement: int = 3,
                 tau: float = 0.1, dilation: int = 1, dropout: float = 0.0,
                 feature_stride: int = 4):
        super().__init__(num_classes)
        self.set_stream("rgb")
        self.branches = parse_branches(branches)
        # motion and change compare consecutive frames: at least one pair
        self.min_frames = 2 if set(self.branches) - {"appearance"} else 1
        if int(max_displacement) < 1 or int(dilation) < 1:
            raise FlowkitError(f"ddn max_displacement and dilation must be >= 1, got "
                               f"{max_displacement} and {dilation}")
        if feature_stride not in (2, 4):
            raise FlowkitError(f"ddn feature_stride must be 4 (torchvision's stem) or 2 (no "
                               f"max-pool), got {feature_stride!r}")
        if not tau > 0:
            raise FlowkitError(f"ddn tau must be > 0 (soft-argmax, differentiable), got {tau!r}")
        kind, layers = resnet_layout(depth, layers, width)
        block = BasicBlock if kind == "basic" else Bottleneck
        self.width = int(width)
        # Shared low-level features: torchvision's stem and layer1 under torchvision's names.
        self.conv1 = nn.Conv2d(3, self.width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.width)
        self.relu = nn.ReLU(inplace=True)
        self.feature_stride = int(feature_stride)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if feature_stride == 4 else nn.Identity()
        blocks, inplanes = [], self.width
        for _ in range(layers[0]):
            blocks.append(block(inplanes, self.width))
            inplanes = self.width * block.expansion
        self.layer1 = nn.Sequential(*blocks)
        init_resnet_weights(self)
        self.feature_channels = inplanes
        self.displacement = DisplacementMap(int(max_displacement), 1, int(dilation), float(tau))
        self.reach = float(int(max_displacement) * int(dilation))
        planes = [self.width * 2 ** i for i in (1, 2, 3)]
        inputs = {"appearance": inplanes, "motion": 2, "change": inplanes}
        for name in self.branches:
            setattr(self, name, FrameBranch(inputs[name], inplanes, planes, layers[1:], kind,
                                            self.num_classes, dropout))

    def backbones(self) -> list[nn.Module]:
        """What ``--init FILE`` (torchvision ResNet weights) loads, as torchvision-named views
        (:func:`~flowkit.models.init.resnet_view`): the shared stem ``conv1, bn1, layer1``, then per
        branch (``self.branches`` order) its ``entry`` and stages 2-4 as ``layer2 .. layer4``."""
        views = [resnet_view(conv1=self.conv1, bn1=self.bn1, layer1=self.layer1)]
        for name in self.branches:
            branch = getattr(self, name)
            stages = {f"layer{i + 2}": stage for i, stage in enumerate(branch.stages)}
            views.append(resnet_view(entry=branch.entry, **stages))
        return views

    def heads(self) -> list[nn.Linear | None]:
        """None for the shared stem, then each branch's ``fc`` (same order as :meth:`backbones`)."""
        return [None] + [getattr(self, name).fc for name in self.branches]

    def describe(self) -> dict:
        return {"branches": list(self.branches), "max_displacement": self.displacement.max_displacement[0],
                "tau": self.displacement.tau, "dilation": self.displacement.dilation,
                "feature_stride": self.feature_stride}

    def check_clip_length(self, frames: int) -> None:
        if int(frames) < self.min_frames:
            dynamic = " and ".join(n for n in self.branches if n != "appearance")
            raise FlowkitError(f"ddn's {dynamic} branch needs clips of at least 2 frames, got "
                               f"{frames}; pass --frames 2 or more")

    def features(self, rgb: torch.Tensor) -> torch.Tensor:
        """Shared low-level features: ``(B, 3, T, H, W) -> (B, C1, T, ceil(H/s), ceil(W/s))``,
        ``s = feature_stride``."""
        b, c, t, h, w = rgb.shape
        x = rgb.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        return x.reshape(b, t, *x.shape[1:]).transpose(1, 2)

    def dynamics(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Displacement maps ``(B, 2, T-1, h, w)`` (feature pixels, u then v, frame t -> t+1) and,
        with a change branch, warped feature differences ``(B, C1, T-1, h, w)`` (else None)."""
        b, c, t, h, w = features.shape
        self.check_clip_length(t)
        f0 = features[:, :, :-1].transpose(1, 2).reshape(b * (t - 1), c, h, w)
        f1 = features[:, :, 1:].transpose(1, 2).reshape(b * (t - 1), c, h, w)
        disp = self.displacement(f0, f1)                                # (B (T-1), 2, h, w)
        change = warped_difference(f0, f1, disp) if "change" in self.branches else None

        def clip(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, t - 1, *x.shape[1:]).transpose(1, 2)
        return clip(disp), (clip(change) if change is not None else None)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        rgb = clip_input(self, inputs, "rgb", 3)
        feats = self.features(rgb)
        disp = change = None
        if "motion" in self.branches or "change" in self.branches:
            disp, change = self.dynamics(feats)
        maps = {"appearance": lambda: feats, "motion": lambda: disp / self.reach,
                "change": lambda: change}
        streams = [getattr(self, name)(maps[name]()) for name in self.branches]
        logits = streams[0] if len(streams) == 1 else weighted_late_fusion(streams)
        return {"logits": logits, "stream_logits": streams}


__all__ = ["BRANCHES", "DDN", "parse_branches"]
