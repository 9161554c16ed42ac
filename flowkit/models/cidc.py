"""CIDC: channel independent directional convolution (Li, Shuai, Tighe, "Directional Temporal Modeling
for Action Recognition", ECCV 2020).

A backbone's global average pooling throws away the order of its sub-clip features. A CIDC unit
models their temporal evolution: every channel c of a ``(B, C, T, H, W)`` feature map is mixed over
time by its own ``T' x T`` matrix (a grouped temporal conv with C groups whose kernel covers all T),
then a 1x1x1 conv mixes channels::

    y_c(t', p) = sum_t w_c[t', t] x_c(t, p)        channel independent, T -> T'
    z = ReLU(BN(Conv1x1x1(y)))

Directional: ``w_c`` is masked lower-triangular, so output t' sees only inputs up to its own time.
For T' != T the mask is the lower-triangular one resampled to T' rows: output t' covers the
sub-clip of inputs ending at ``e(t') = ceil((t'+1) T / T') - 1`` and sees inputs ``t <= e(t')``
(T' = T gives ``t <= t'``; T' = 1 sees all).

Normalisation of the weights, our reading: the paper's unit takes a softmax over the (masked)
learnable parameters of each output row. What we could read of the paper through the search tool
(its abstract and a secondary summary of its formulation: ``w[t', t] = 0`` for ``t > t'`` and
``sum_t w[t', t] = 1``, "softmax-normalised") and the reference facts of docs/architecture.md agree on that; the
full text, with its exact wording on the weights' range ("normalised to [-1, 1]"), was not
available to us. So :func:`cidc_weights` is exactly a row softmax over the unmasked entries: every
weight lies in [0, 1] (a subset of [-1, 1]), masked weights are exactly 0, each row sums to 1.
Signed weights (temporal differences) arise after the 1x1x1 conv, which mixes the channels of the
forward and backward branches with weights of either sign.

``direction``:
    ``"uni"``  forward in time only (causal);
    ``"bi"``   the unit also runs on the time-reversed input with its own parameters (anti-causal
               after reversing the output back); the two ``(B, C, T', H, W)`` results are
               concatenated along channels and the 1x1x1 conv maps the ``2C`` channels to the output
               (so the combination is learned, not a fixed sum);
    ``"none"`` no mask: every output sees the whole clip (the paper's non-directional comparison).

The multi-scale CIDC network (:class:`CIDCNet`, registered ``cidc``) attaches CIDC units to the
outputs of the last three stages of a backbone (``forward_stages``):

    stage2, stage3, stage4  (B, C_i, T, H_i, W_i)
      -> CIDC unit_i: (B, D, T', H_i, W_i)                      z_2, z_3, z_4
      cross-scale aggregation, fine to coarse:
         z_3 += avgpool(z_2 to H_3 x W_3);  z_4 += avgpool(z_3 to H_4 x W_4)
      spatial attention, propagated from later (coarse) to earlier (fine) stages:
         a_4 = sigmoid(mean_c z_4)
         a_3 = sigmoid(mean_c z_3) * upsample(a_4);   a_2 = sigmoid(mean_c z_2) * upsample(a_3)
      per scale: spatial mean of z_i * a_i -> (B, D, T')
      fusion: concatenation along time -> (B, D, 3T') -> flatten -> dropout -> ``cidc_fc``
    stage4 -> global average pool (T, H, W) -> dropout -> ``fc``     (the backbone's own branch)

The backbone branch contributes as its own stream: ``stream_logits = [backbone, cidc]`` (each
trained with its own cross-entropy, so each branch classifies on its own) and
``logits = (backbone + cidc) / 2`` for evaluation. Concatenating along time (instead of pooling
over it) keeps the order the directional units encoded in the classifier's input.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FlowkitError
from .base import VideoClassifier
from .registry import register_model
from .resnet import ResNet2d, clip_input
from .resnet3d import ResNet3d

DIRECTIONS = ("bi", "uni", "none")
BACKBONES = ("resnet2d", "s3d", "i3d")


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise FlowkitError(f"CIDC direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    return direction


def cidc_mask(t_in: int, t_out: int, device=None) -> torch.Tensor:
    """Lower-triangular visibility mask resampled to ``t_out`` rows, ``(t_out, t_in)`` bool.

    ``mask[t', t]`` is True when output t' may see input t: ``t <= ceil((t'+1) t_in / t_out) - 1``.
    """
    t_in, t_out = int(t_in), int(t_out)
    if t_in < 1 or t_out < 1:
        raise FlowkitError(f"CIDC needs t_in >= 1 and t_out >= 1, got {t_in}, {t_out}")
    last = -(-(torch.arange(1, t_out + 1, device=device) * t_in) // t_out) - 1   # (t_out,)
    return torch.arange(t_in, device=device).view(1, -1) <= last.view(-1, 1)


def cidc_weights(params: torch.Tensor, t_in: int, t_out: int, direction: str = "uni") -> torch.Tensor:
    """Per-channel temporal mixing weights from parameters: a softmax over each row's visible inputs.

    Args:
        params: ``(C, t_out, t_in)`` learnable parameters.
        t_in, t_out: T and T' (must match ``params``).
        direction: ``"uni"`` / ``"bi"``: masked to :func:`cidc_mask` (masked weights are exactly 0);
            ``"none"``: no mask.

    Returns:
        ``(C, t_out, t_in)``: every weight in [0, 1] (hence in [-1, 1]), each row sums to 1 (see the
        module docstring for this reading of the paper's normalisation).
    """
    direction = _check_direction(direction)
    if params.dim() != 3 or tuple(params.shape[1:]) != (int(t_out), int(t_in)):
        raise FlowkitError(f"CIDC params must be (C, t_out={t_out}, t_in={t_in}), "
                           f"got {tuple(params.shape)}")
    if direction == "none":
        return torch.softmax(params, dim=-1)
    mask = cidc_mask(t_in, t_out, params.device)
    return torch.softmax(params.masked_fill(~mask, float("-inf")), dim=-1)


def cidc_mix(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Channel-independent temporal mixing ``y_c(t') = sum_t w_c[t', t] x_c(t)``.

    The grouped temporal conv with C groups and a kernel covering all T, written as an einsum.

    Shape: x ``(B, C, T, H, W)``, weights ``(C, T', T)`` -> ``(B, C, T', H, W)``.
    """
    if x.dim() != 5 or weights.dim() != 3 or x.shape[1] != weights.shape[0] \
            or x.shape[2] != weights.shape[2]:
        raise FlowkitError(f"CIDC mixing of features {tuple(x.shape)} (B, C, T, H, W) with weights "
                           f"{tuple(weights.shape)} (C, T', T): C and T must agree")
    return torch.einsum("bcthw,cst->bcshw", x, weights.to(x.dtype))


class CIDCUnit(nn.Module):
    """One CIDC unit: directional channel-independent temporal mixing T -> T', then 1x1x1 conv,
    BatchNorm and ReLU.

    Args:
        channels: C of the input.
        t_in: T of the input.
        t_out: T' of the output.
        direction: ``"bi"``, ``"uni"`` or ``"none"`` (module docstring).
        out_channels: of the 1x1x1 conv (default: ``channels``).

    Parameters ``params`` (and ``params_reverse`` for ``"bi"``) ``(C, T', T)`` start at zero: each
    output starts as the mean of the inputs it sees.

    Note: in training mode the BatchNorm's batch statistics pool over time, so strict causality of
    ``"uni"`` holds for the mixing and, in eval mode, for the whole unit.

    Shape: ``(B, C, T, H, W)`` -> ``(B, out_channels, T', H, W)``.
    """

    def __init__(self, channels: int, t_in: int, t_out: int, direction: str = "bi",
                 out_channels: Optional[int] = None):
        super().__init__()
        self.channels, self.t_in, self.t_out = int(channels), int(t_in), int(t_out)
        self.direction = _check_direction(direction)
        cidc_mask(self.t_in, self.t_out)   # validates the sizes
        self.out_channels = int(out_channels or channels)
        self.params = nn.Parameter(torch.zeros(self.channels, self.t_out, self.t_in))
        self.params_reverse = (nn.Parameter(torch.zeros(self.channels, self.t_out, self.t_in))
                               if direction == "bi" else None)
        branches = 2 if direction == "bi" else 1
        self.proj = nn.Conv3d(branches * self.channels, self.out_channels, 1, bias=False)
        self.bn = nn.BatchNorm3d(self.out_channels)

    def weights(self) -> torch.Tensor:
        """Forward-branch mixing weights ``(C, T', T)`` (:func:`cidc_weights`)."""
        return cidc_weights(self.params, self.t_in, self.t_out, self.direction)

    def weights_reverse(self) -> Optional[torch.Tensor]:
        """Backward-branch weights ``(C, T', T)`` in reversed time, or None unless ``"bi"``."""
        if self.params_reverse is None:
            return None
        return cidc_weights(self.params_reverse, self.t_in, self.t_out, self.direction)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """The temporal mixing alone: ``(B, C, T, H, W)`` -> ``(B, C or 2C, T', H, W)``."""
        if x.dim() != 5 or x.shape[1] != self.channels or x.shape[2] != self.t_in:
            raise FlowkitError(f"CIDC unit built for (B, {self.channels}, T={self.t_in}, H, W) got "
                               f"{tuple(x.shape)}; build it (or the model's `frames`) for this T")
        y = cidc_mix(x, self.weights())
        if self.params_reverse is not None:
            backward = cidc_mix(x.flip(2), self.weights_reverse()).flip(2)
            y = torch.cat([y, backward], dim=1)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.proj(self.mix(x))))

    def extra_repr(self) -> str:
        return (f"{self.channels}, {self.out_channels}, t_in={self.t_in}, t_out={self.t_out}, "
                f"direction={self.direction!r}")


def build_backbone(backbone: str, in_channels: int, depth: int, width: int,
                   layers: Optional[Sequence[int]]) -> nn.Module:
    """``"resnet2d"`` (per frame), ``"s3d"`` (separable ResNet3d) or ``"i3d"`` (inflated ResNet3d)."""
    if backbone == "resnet2d":
        return ResNet2d(depth, in_channels, width, layers)
    if backbone == "s3d":
        return ResNet3d(depth, in_channels, width, layers, kind="separable")
    if backbone == "i3d":
        return ResNet3d(depth, in_channels, width, layers, kind="inflated")
    raise FlowkitError(f"CIDC backbone must be one of {', '.join(BACKBONES)}, got {backbone!r}")


@register_model("cidc")
class CIDCNet(VideoClassifier):
    """Multi-scale CIDC network on a backbone (module docstring for the layout).

    Args:
        num_classes: K.
        backbone: ``"resnet2d"``, ``"s3d"`` or ``"i3d"``.
        modality: ``"rgb"`` or ``"flow"`` (``2 * flow_stack`` input channels).
        flow_stack: L, flows stacked per clip position for ``modality="flow"``.
        frames: T of the input clips (the backbones keep T, so the units are built T -> T').
        t_out: T' of every unit (default ``max(1, frames // 2)``).
        direction: ``"bi"``, ``"uni"`` or ``"none"``.
        depth, width, layers: the backbone's (ResNet-18 by default).
        cidc_channels: D, output channels of every unit (default: the backbone's stage-2 channels,
            128 for ResNet-18).
        dropout: before both classifiers.

    Inputs: ``inputs[modality]`` ``(B, C, frames, H, W)``. Outputs: ``logits`` (B, K) (mean of the
    two branches), ``stream_logits`` [backbone (B, K), cidc (B, K)].
    """

    def __init__(self, num_classes: int, backbone: str = "s3d", modality: str = "rgb",
                 flow_stack: int = 1, frames: int = 8, t_out: Optional[int] = None,
                 direction: str = "bi", depth: int = 18, width: int = 64,
                 layers: Optional[Sequence[int]] = None, cidc_channels: Optional[int] = None,
                 dropout: float = 0.0):
        super().__init__(num_classes)
        self.set_stream(modality, flow_stack)
        self.frames = int(frames)
        if self.frames < 1:
            raise FlowkitError(f"cidc: frames must be >= 1, got {frames}")
        self.t_out = int(t_out) if t_out is not None else max(1, self.frames // 2)
        self.direction = _check_direction(direction)
        self.backbone = build_backbone(backbone, self.channels, depth, width, layers)
        stage_channels = self.backbone.stage_channels
        self.cidc_channels = int(cidc_channels or stage_channels[1])
        self.units = nn.ModuleList(CIDCUnit(c, self.frames, self.t_out, self.direction,
                                            self.cidc_channels) for c in stage_channels[1:])
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(stage_channels[-1], self.num_classes)
        self.cidc_fc = nn.Linear(self.cidc_channels * len(self.units) * self.t_out, self.num_classes)

    def cidc_features(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        """The last three stage outputs -> fused CIDC features ``(B, D, 3 T')`` (before the fc)."""
        z = [unit(s) for unit, s in zip(self.units, stages[-3:])]
        for i in range(1, len(z)):                                 # fine -> coarse aggregation
            z[i] = z[i] + F.adaptive_avg_pool3d(z[i - 1], z[i].shape[2:])
        attention = None
        pooled = []
        for i in reversed(range(len(z))):                          # coarse -> fine attention
            a = torch.sigmoid(z[i].mean(dim=1, keepdim=True))      # (B, 1, T', H_i, W_i)
            if attention is not None:
                a = a * F.interpolate(attention, size=a.shape[2:], mode="nearest")
            attention = a
            pooled.append((z[i] * a).mean(dim=(3, 4)))             # (B, D, T')
        return torch.cat(pooled[::-1], dim=2)                      # stage order along time

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = clip_input(self, inputs, self.modality, self.channels)
        if x.shape[2] != self.frames:
            raise FlowkitError(f"cidc was built for clips of frames={self.frames}, got T={x.shape[2]} "
                               f"{tuple(x.shape)}; create the model with frames={x.shape[2]} "
                               f"(flowkit train sets it from --frames)")
        stages = self.backbone.forward_stages(x)
        backbone_logits = self.fc(self.dropout(stages[-1].mean(dim=(2, 3, 4))))
        cidc_logits = self.cidc_fc(self.dropout(self.cidc_features(stages).flatten(1)))
        return {"logits": 0.5 * (backbone_logits + cidc_logits),
                "stream_logits": [backbone_logits, cidc_logits]}


__all__ = ["BACKBONES", "CIDCNet", "CIDCUnit", "DIRECTIONS", "build_backbone", "cidc_mask",
           "cidc_mix", "cidc_weights"]
