"""Cost-volume displacement maps and warped differences (DDN, Zhao, Xiong & Lin, "Recognize Actions
by Disentangling Components of Dynamics", CVPR 2018).

The pieces, each a function first with a thin ``nn.Module`` wrapper::

    f0, f1 = patch_features(frames0), patch_features(frames1)        # or FeatureExtractor(ckpt)
    cost = cost_volume(f0, f1, max_displacement=4)                     # (B, 81, H, W) cosines
    disp = soft_argmax_displacement(cost, 4, tau=0.05)                 # (B, 2, H, W) pixels
    disp = displacement_map(f0, f1, max_displacement=4, tau=0.05)      # the two composed
    diff = warped_difference(x0, x1, flow)                             # motion-compensated difference

and the engine ``create_engine("costvolume", ...)`` (:class:`CostVolumeEngine`).

Window and channel order
------------------------
``max_displacement`` is ``(dH, dW)`` (an int means both). Candidate k of the window is the offset
``d = dilation * (iy - dH, ix - dW)`` (rows, columns) with ``k = iy * (2dW + 1) + ix``: rows of the
window vary slowest, as in FlowNet's correlation layer. ``cost[:, k, i, j]`` compares frame t at
``p = (stride*i, stride*j)`` with frame t+1 at ``p + d``.

Border handling: out-of-image candidates score 0
-----------------------------------------------
Where ``p + d`` leaves the image the candidate's similarity is 0 (frame t+1's features are padded
with zero vectors, whose cosine with anything is defined as 0). We chose 0 over masking the candidate
out of the softmax because (a) 0 is what an *unrelated* in-image candidate scores on average with
mean-subtracted features, so an out-of-image candidate is treated as "no evidence", neither pulling
the estimate out of the image (as +1 would) nor creating a fake repulsion (as -1 would); (b) the
volume stays finite, a plain tensor with a gradient everywhere (``-inf`` entries break gradcheck and
give NaN rows if every candidate were masked); (c) :func:`soft_argmax_displacement` then needs no
side channel with the image size. The price is a small pull of the soft estimate towards the window
centre's side at the border, where the true match is often out of the image anyway.

Units of a displacement map
---------------------------
:func:`soft_argmax_displacement` returns offsets in pixels *of the feature map the cost volume was
computed on*: the window index times ``dilation``. ``stride`` only chooses at which positions the
map is evaluated (``(ceil(H/stride), ceil(W/stride))`` of them, position ``(i, j)`` is feature pixel
``(stride*i, stride*j)``); it does not change the unit of the offsets, so it is not a factor. When the
features are themselves at a reduced resolution (the engine's ``scale``, or a strided CNN), converting
to input pixels multiplies by the feature-to-input size ratio per axis; :class:`CostVolumeEngine`
does this and upsamples the map to the input grid. Channel 0 is u (+x right), channel 1 is v
(+y down), mapping frame t to frame t+1: flowkit's flow convention (docs/architecture.md, "Conventions").
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields as dataclass_fields
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import checkpoints
from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from ..errors import EngineError
from ..layers import BasicBlock, Bottleneck
from . import ops
from .base import FlowEngine
from .correlation import (_NORM_EPS, CostVolume, DisplacementMap, SoftArgmaxDisplacement,
                          _positive_int, _window, cost_volume, displacement_map,
                          soft_argmax_displacement, window_offsets)
from .numerics import create as create_numerics
from .params import weights_identity
from .registry import register_engine

# ---------------------------------------------------------------------------- warped difference

def warped_difference(x0: torch.Tensor, x1: torch.Tensor, flow: torch.Tensor,
                      return_valid: bool = False):
    """Motion-compensated temporal difference ``x1(p + flow(p)) - x0(p)``, zero where ``p + flow(p)``
    leaves the image.

    DDN writes it ``F_{t+1} - W(F_t, V_t)``: frame t moved along the motion, subtracted from frame
    t+1, so that whatever the displacement explains cancels and what remains is change *not* due to
    motion (appearance change, occlusion, motion-estimation error). Forward-warping frame t needs
    splatting (holes and collisions); with flowkit's convention (``flow`` maps frame t to t+1) the
    same comparison is exact as a backward warp: ``ops.warp(x1, flow)`` samples frame t+1 at
    ``p + flow(p)``, the point where frame t's pixel p went, bringing frame t+1 onto frame t's grid.
    The difference lives on frame t's grid, has the paper's sign (later minus earlier) and is 0
    wherever frame t+1 equals frame t moved by the flow.

    Where ``p + flow(p)`` is outside ``[0, W-1] x [0, H-1]`` (the pixel left the image) there is
    nothing to compare with; the difference is set to 0 there (rather than ``-x0``, which a plain
    zero-padded warp would give).

    Works on RGB frames or feature maps alike (any number of channels).

    Args:
        x0, x1: ``(B, C, H, W)`` frames (or features) t and t+1, float.
        flow: ``(B, 2, H, W)`` pixels, frame t -> t+1 (e.g. an engine's output, or a
            displacement map upsampled to the features' grid).
        return_valid: also return the ``(B, 1, H, W)`` bool mask of pixels whose source is inside.

    Returns:
        ``(B, C, H, W)`` difference (and the mask when asked), differentiable in all inputs.

    Storing it: it is not flow (it has C channels and no pixel units), so it is not an engine. An
    extraction can store it next to the flow as its own dataset, e.g. ``warpdiff`` ``(T-1, C, H, W)``
    computed per pair from the RGB frames and the engine's flow (``warped_difference(rgb[:-1],
    rgb[1:], flow)``), float16 or uint8 with a recorded offset of 255 / 2 and bound 255.
    """
    ops.check_shape(x0, "BCHW", "x0")
    ops.check_shape(x1, "BCHW", "x1")
    ops.check_shape(flow, "BCHW", "flow")
    if x0.shape != x1.shape:
        raise EngineError(f"x0 {tuple(x0.shape)} and x1 {tuple(x1.shape)} differ in shape")
    if flow.shape[1] != 2 or flow.shape[0] != x0.shape[0] or flow.shape[-2:] != x0.shape[-2:]:
        raise EngineError(f"flow {tuple(flow.shape)} does not match frames {tuple(x0.shape)}")
    x0f = x0 if x0.is_floating_point() else x0.float()
    x1f = x1.to(x0f.dtype)
    h, w = x0.shape[-2:]
    target = ops.pixel_grid(h, w, flow.device, flow.dtype) + flow
    valid = ((target[:, :1] >= 0) & (target[:, :1] <= w - 1)
             & (target[:, 1:] >= 0) & (target[:, 1:] <= h - 1))
    diff = (ops.warp(x1f, flow.to(x0f.dtype), padding_mode="zeros") - x0f) * valid.to(x0f.dtype)
    return (diff, valid) if return_valid else diff


# -------------------------------------------------------------------------------------- features

def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, radius ``ceil(3 sigma)``, replicated border. ``sigma <= 0``: identity.

    Shape: ``(B, C, H, W)`` -> ``(B, C, H, W)``.
    """
    if sigma <= 0:
        return image
    r = max(1, math.ceil(3 * sigma))
    x = torch.arange(-r, r + 1, device=image.device, dtype=image.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = image.shape[1]
    out = F.conv2d(F.pad(image, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
                   groups=c)
    return F.conv2d(F.pad(out, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
                    groups=c)


def patch_features(frames: torch.Tensor, radius: int = 3, gray: bool = True,
                   sigma: float = 0.0) -> torch.Tensor:
    """Hand-made matching features: the ``(2r+1) x (2r+1)`` patch around each pixel, mean-subtracted
    (per channel) and L2-normalised, so the cosine of two of them is their normalised
    cross-correlation (NCC). Needs no training.

    Args:
        frames: ``(B, C, H, W)``, uint8 or float (any range: NCC is invariant to gain and offset).
        radius: patch radius r >= 1 (one pixel minus its own mean would be 0).
        gray: convert RGB to luma first (C = 1 or 3); ``False`` keeps all channels.
        sigma: Gaussian pre-smoothing in pixels (0 = none); smoothing widens the similarity peak,
            which helps soft-argmax interpolate sub-pixel motion.

    Returns:
        ``(B, C' (2r+1)^2, H, W)`` in the input's float dtype (float32 for integer input), unit
        norm except on flat patches (zero vector). Patches at the border replicate the edge pixels.
    """
    ops.check_shape(frames, "BCHW", "frames")
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 1:
        raise EngineError(f"patch radius must be a positive integer, got {radius!r}")
    x = frames if frames.is_floating_point() else frames.float()
    if gray and x.shape[1] != 1:
        x = ops.luma(x)
    x = gaussian_blur(x, sigma)
    b, c, h, w = x.shape
    k = 2 * radius + 1
    patches = F.unfold(F.pad(x, (radius,) * 4, mode="replicate"), k).view(b, c, k * k, h, w)
    patches = patches - patches.mean(dim=2, keepdim=True)
    return F.normalize(patches.reshape(b, c * k * k, h, w), dim=1, eps=_NORM_EPS)


_RESNET_STAGES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _block(state: dict, prefix: str, stride: int) -> nn.Module:
    """The torchvision block whose weights are at ``prefix`` (a Bottleneck when it has ``conv3``),
    sized from them."""
    w1 = state[prefix + "conv1.weight"]
    if prefix + "conv3.weight" in state:
        return Bottleneck(w1.shape[1], w1.shape[0], stride)
    return BasicBlock(w1.shape[1], w1.shape[0], stride)


def _load_state_dict(weights) -> tuple[dict[str, torch.Tensor], bool]:
    """A torchvision-style ResNet state dict from a path or a dict (checkpoint wrappers and
    DataParallel's ``module.`` prefix removed, :func:`flowkit.checkpoints.state_dict_of`), and
    whether its stem has the max-pool: not when a flowkit classifier checkpoint's model settings
    say ``feature_stride`` 2 (``ddn feature_stride=2``)."""
    if isinstance(weights, (str, os.PathLike)):
        obj = checkpoints.read_torch_file(weights, what="costvolume weights file", error=EngineError)
        source = f"costvolume: {os.fspath(weights)}"
    else:
        obj, source = weights, "costvolume: state dict"
    state = checkpoints.state_dict_of(obj, source, error=EngineError)
    if "conv1.weight" not in state:
        raise EngineError(f"{source} has no 'conv1.weight'; expected a torchvision-style "
                          "ResNet state dict (conv1, bn1, layer1, ...)")
    try:
        pooled = obj["config"]["model"]["settings"]["feature_stride"] != 2
    except (KeyError, TypeError):
        pooled = True
    return state, pooled


class FeatureExtractor(nn.Module):
    """Low-level features from the first stages of a torchvision-style ResNet checkpoint.

    Builds ``conv1 -> bn1 -> relu -> maxpool -> layer1 -> ...`` up to and including ``layer`` from the
    shapes in the state dict (BasicBlock or Bottleneck per the presence of ``conv3``; torchvision's
    strides: 2 in conv1 and maxpool, 2 in the first block of layer2-4) and loads the weights. Always in
    eval mode (BatchNorm uses its running statistics). Frames in [0, 255] are scaled to [0, 1] and
    normalised with ``mean``/``std`` (ImageNet's by default); gray frames are repeated to three
    channels when conv1 wants three.

    Geometry: feature pixel j sits on input pixel ``self.stride * j`` (torchvision's paddings keep
    the grids corner-aligned); ``self.stride`` is 2 after conv1/bn1/relu, 4 after maxpool/layer1,
    8 after layer2, ...; half that from a checkpoint of ``ddn feature_stride=2``, whose stem has no
    max-pool (its model settings say so).

    Args:
        weights: path of a checkpoint (``torch.save(model.state_dict(), path)``) or a state dict.
        layer: last stage kept, one of ``conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4``.

    Raises:
        EngineError: missing/unreadable file, not a ResNet-style state dict, missing or misshapen
            tensors for the requested stages.
    """

    def __init__(self, weights, layer: str = "layer1", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if layer not in _RESNET_STAGES:
            raise EngineError(f"costvolume: unknown feature layer {layer!r}; choose from "
                              f"{', '.join(_RESNET_STAGES)}")
        state, pooled = _load_state_dict(weights)
        source = str(weights) if isinstance(weights, (str, os.PathLike)) else "state dict"
        stages = _RESNET_STAGES[:_RESNET_STAGES.index(layer) + 1]
        try:
            self.body, self.stride = self._build(state, stages, pooled)
        except KeyError as exc:
            raise EngineError(f"costvolume: {source} lacks {exc.args[0]!r} needed for layer "
                              f"{layer!r}") from None
        except (IndexError, ValueError, RuntimeError) as exc:  # tensors of the wrong rank
            raise EngineError(f"costvolume: {source} does not fit a ResNet up to {layer!r}: "
                              f"{exc}") from None
        wanted = {k: v for k, v in state.items() if k.split(".")[0] in stages}
        try:
            missing, unexpected = self.body.load_state_dict(wanted, strict=False)
        except RuntimeError as exc:  # size mismatches
            raise EngineError(f"costvolume: {source} does not fit a ResNet up to {layer!r}: "
                              f"{str(exc).strip().splitlines()[-1].strip()}") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise EngineError(f"costvolume: {source} does not fit a ResNet up to {layer!r}: missing "
                              f"{missing[:5]}, unexpected {unexpected[:5]}")
        in_ch = state["conv1.weight"].shape[1]
        if in_ch not in (1, 3):
            raise EngineError(f"costvolume: {source} conv1 takes {in_ch} channels; need 1 or 3")
        self.in_channels = in_ch
        self.layer = layer
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)[:, :in_ch])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)[:, :in_ch])
        self.eval()

    @staticmethod
    def _build(state: dict, stages: Sequence[str], pooled: bool = True
               ) -> tuple[nn.Sequential, int]:
        modules, stride = OrderedDict(), 1
        for name in stages:
            if name == "conv1":
                w = state["conv1.weight"]
                if w.dim() != 4:
                    raise EngineError(f"costvolume: conv1.weight has shape {tuple(w.shape)}, not 4-D")
                modules[name] = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], 2, w.shape[2] // 2,
                                          bias="conv1.bias" in state)
                stride *= 2
            elif name == "bn1":
                modules[name] = nn.BatchNorm2d(state["bn1.weight"].shape[0])
            elif name == "relu":
                modules[name] = nn.ReLU()
            elif name == "maxpool":
                modules[name] = nn.MaxPool2d(3, 2, 1) if pooled else nn.Identity()
                stride *= 2 if pooled else 1
            else:
                blocks = sorted({int(k.split(".")[1]) for k in state if k.startswith(name + ".")})
                if not blocks:
                    raise KeyError(f"{name}.0.conv1.weight")
                first_stride = 1 if name == "layer1" else 2
                seq = []
                for i in blocks:
                    seq.append(_block(state, f"{name}.{i}.", first_stride if i == blocks[0] else 1))
                modules[name] = nn.Sequential(*seq)
                stride *= first_stride
        return nn.Sequential(modules), stride

    def train(self, mode: bool = True):
        return super().train(False)  # frozen feature extractor: running BN statistics only

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` in [0, 255] -> ``(B, C', ceil(H/stride), ceil(W/stride))``."""
        ops.check_shape(frames, "BCHW", "frames")
        x = frames.float()
        if x.shape[1] != self.in_channels:
            if x.shape[1] == 1 and self.in_channels == 3:
                x = x.expand(-1, 3, -1, -1)
            elif x.shape[1] == 3 and self.in_channels == 1:
                x = ops.to_gray(x)
            else:
                raise EngineError(f"frames have {x.shape[1]} channels; the feature extractor "
                                  f"takes {self.in_channels}")
        return self.body((x / 255.0 - self.mean) / self.std)


# ----------------------------------------------------------------------------------------- engine

def _resize_area(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear reduction with half-pixel centres (the convention of
    :func:`ops.resize_bilinear`, so that offsets scale by the size ratio)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)


def _axis_taps(n_out: int, n_in: int, n_pos: int, step: float, device):
    """Indices and weights to read a map sampled at positions ``step * i`` of a grid of ``n_in``
    pixels (half-pixel-aligned with the output grid of ``n_out`` pixels) at every output pixel."""
    x = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    src = (x / step).clamp(0, n_pos - 1)
    i0 = src.floor().long().clamp(max=n_pos - 1)
    i1 = (i0 + 1).clamp(max=n_pos - 1)
    return i0, i1, (src - i0).float()


def _to_input_grid(disp: torch.Tensor, out_size: tuple[int, int], grid_size: tuple[int, int],
                   step: int) -> torch.Tensor:
    """Displacements at positions ``step * (i, j)`` of a ``grid_size`` grid (units: grid pixels)
    -> a map on the ``out_size`` input grid in input pixels (half-pixel-aligned resampling)."""
    (oh, ow), (gh, gw) = out_size, grid_size
    y0, y1, fy = _axis_taps(oh, gh, disp.shape[-2], step, disp.device)
    x0, x1, fx = _axis_taps(ow, gw, disp.shape[-1], step, disp.device)
    rows = torch.lerp(disp.index_select(-2, y0), disp.index_select(-2, y1), fy.to(disp.dtype).view(-1, 1))
    up = torch.lerp(rows.index_select(-1, x0), rows.index_select(-1, x1), fx.to(disp.dtype))
    ratio = torch.tensor((ow / gw, oh / gh), dtype=disp.dtype, device=disp.device).view(1, 2, 1, 1)
    return up * ratio


#: The parameters that apply to one feature mode only (``weights``: learned, checked on its own).
_MODE_PARAMS = {"patch": ("radius", "sigma"), "learned": ("layer",)}


@dataclass(frozen=True)
class CostVolumeParams:
    """Parameters of the ``costvolume`` engine (see :class:`CostVolumeEngine` for each one).

    ``radius`` and ``sigma`` describe ``"patch"`` features, ``layer`` (and ``weights``) the
    ``"learned"`` ones. A value other than its default in the other mode is refused: it would
    change nothing but the recorded parameters, which a store compares, so that runs computing the
    same flow would be refused as mismatched. The default, given or not, is kept and recorded as it
    always was (``layer="layer1"`` with patch features, ``radius=3, sigma=0.0`` with learned)."""
    max_displacement: int | Sequence[int] = 4
    stride: int = 1
    dilation: int = 1
    tau: float = 0.02
    features: str | None = None
    radius: int = 3
    sigma: float = 0.0
    scale: float = 1.0
    weights: str | None = None
    layer: str = "layer1"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # frozen: normalise once, here
        set_("max_displacement", list(_window(self.max_displacement)))
        _positive_int(self.stride, "stride")
        _positive_int(self.dilation, "dilation")
        tau = self.tau
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not 0 <= tau < math.inf:
            raise EngineError(f"costvolume: tau must be a finite number >= 0, got {tau!r}")
        if not isinstance(self.scale, (int, float)) or not 0 < self.scale <= 1:
            raise EngineError(f"costvolume: scale must be in (0, 1], got {self.scale!r}")
        if not isinstance(self.radius, int) or self.radius < 1:
            raise EngineError(f"costvolume: radius must be a positive integer, got {self.radius!r}")
        if not self.sigma >= 0:
            raise EngineError(f"costvolume: sigma must be >= 0, got {self.sigma!r}")
        set_("tau", float(tau))
        set_("scale", float(self.scale))
        set_("sigma", float(self.sigma))
        if self.weights is not None:  # absolute: the same file records alike from any directory
            set_("weights", os.path.abspath(os.fspath(self.weights)))
        features = self.features or ("patch" if self.weights is None else "learned")
        set_("features", features)
        if features == "patch" and self.weights is not None:
            raise EngineError("costvolume: weights are only used with features='learned'")
        if features == "learned" and self.weights is None:
            raise EngineError("costvolume: features='learned' needs a checkpoint: pass "
                              "weights=PATH (flowkit extract --weights CKPT), a torchvision-style "
                              "ResNet state dict, e.g. torch.save(resnet18(weights='DEFAULT')"
                              ".state_dict(), PATH); or use features='patch', which needs none")
        if features not in ("patch", "learned"):
            raise EngineError(f"costvolume: features must be 'patch' or 'learned', got {features!r}")
        if self.layer not in _RESNET_STAGES:
            raise EngineError(f"costvolume: unknown feature layer {self.layer!r}; choose from "
                              f"{', '.join(_RESNET_STAGES)}")
        other = "learned" if features == "patch" else "patch"
        defaults = {f.name: f.default for f in dataclass_fields(self)}
        given = [name for name in _MODE_PARAMS[other] if getattr(self, name) != defaults[name]]
        if given:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in given)
            raise EngineError(f"costvolume: {' and '.join(given)} {'is' if len(given) == 1 else 'are'}"
                              f" only used with features='{other}', not with features='{features}' "
                              f"(got {values}); leave {'it' if len(given) == 1 else 'them'} out")


@register_engine
class CostVolumeEngine(FlowEngine):
    """DDN-style displacement maps as a flowkit engine (``create_engine("costvolume", ...)``).

    Pipeline: frames are reduced to ``scale`` of their size (antialiased), described by features
    (``"patch"``: :func:`patch_features`, NCC of luma patches, no training; ``"learned"``: the first
    stages of a ResNet checkpoint passed as ``weights``, see :class:`FeatureExtractor`), matched by
    :func:`cost_volume` over the window and turned into a displacement by
    :func:`soft_argmax_displacement`; the map is resampled onto the input grid and converted to input
    pixels (multiplied by the input-to-feature size ratio per axis).

    The window is in feature pixels: it reaches ``max_displacement * dilation * r`` input pixels with
    ``r = 1/scale`` for patch features and ``stride_features/scale`` for learned ones (4/scale after
    layer1). Motion beyond the window saturates at its edge.

    Memory: the whole batch's volume is held at once, ``B * K * H' * W'`` floats with
    ``K = (2dH+1)(2dW+1)`` (81 for the default window: ~230 MB for 8 pairs at 256x340); lower the
    extraction batch, raise ``stride`` or lower ``scale`` for large frames.

    Args:
        max_displacement: window half-size (int or ``[dH, dW]``), feature pixels.
        stride: evaluate the cost volume at every ``stride``-th feature pixel (then interpolate).
        dilation: spacing of the window's candidates, feature pixels.
        tau: softmax temperature; 0 is winner-take-all (integer feature-pixel offsets). The default
            0.02 is measured (12 synthetic pairs, window 4, scale 1: mean EPE 0.48 px vs 0.46 at
            0.01, 0.53 for WTA, 0.61 at 0.05; larger windows want smaller tau, coarser scales larger,
            see ``benchmarks/results/ddn_table3.md``).
        features: ``"patch"`` or ``"learned"``; default ``"learned"`` when ``weights`` is given
            (so ``flowkit extract --method costvolume --weights CKPT`` needs nothing else), else
            ``"patch"``.
        radius: patch radius of ``"patch"`` features (refused with ``"learned"`` unless at its
            default, as ``sigma``: see :class:`CostVolumeParams`).
        sigma: Gaussian pre-smoothing (pixels of the reduced image) of ``"patch"`` features.
        scale: resolution of the computation relative to the input, in (0, 1].
        weights: checkpoint path for ``"learned"`` features (``flowkit extract --weights CKPT``);
            recorded absolute, with ``weights_sha256`` (the content's) beside it in ``params``.
        layer: last ResNet stage used by ``"learned"`` features, one of ``conv1, bn1, relu,
            maxpool, layer1 .. layer4`` (refused with ``"patch"`` unless at its default).
        backend: ``"auto"`` (the CuPy correlation and soft-argmax kernels on CUDA when CuPy
            imports, torch otherwise), ``"torch"`` or ``"cupy"``; an execution option, not in
            ``params`` (:mod:`flowkit.flow.numerics`).
    """

    name = "costvolume"
    version = "1"
    Params = CostVolumeParams

    def __init__(self, device="cpu", params: CostVolumeParams | None = None, *,
                 backend: str = "auto", **fields):
        super().__init__(device)
        self.config = p = self.make_params(params, fields)
        self.numerics = create_numerics(backend, self.device)
        self.backend = self.numerics.backend
        self.window = tuple(p.max_displacement)
        self.stride, self.dilation, self.tau = p.stride, p.dilation, p.tau
        self.scale, self.radius, self.sigma = p.scale, p.radius, p.sigma
        self.features, self.layer, self.weights = p.features, p.layer, p.weights
        self.extractor = (FeatureExtractor(self.weights, p.layer).to(self.device)
                          if p.features == "learned" else None)
        # The content's digest, recorded beside the path: a store tells a replaced file apart.
        # 12 digits, as costvolume stores have always recorded them (weights_identity says why).
        self.digest = None if self.weights is None else weights_identity(self.weights)[1]

    @property
    def params(self) -> dict:
        """The :class:`CostVolumeParams` and ``weights_sha256``, the first 12 hex digits of the
        weights file's SHA-256 (None with patch features)."""
        return dict(asdict(self.config), weights_sha256=self.digest)

    def _describe_frames(self, frames: torch.Tensor) -> torch.Tensor:
        if self.extractor is None:
            return patch_features(frames, self.radius, gray=True, sigma=self.sigma)
        return self.extractor(frames)

    def matching_cost(self, frames0: torch.Tensor, frames1: torch.Tensor
                      ) -> tuple[torch.Tensor, tuple[int, int]]:
        """The cost volume of float frames on ``self.device`` and the reduced image size it was
        computed at: the first half of :meth:`forward` (a benchmark reuses it for several ``tau``)."""
        for frames in (frames0, frames1):  # before the two batches are joined: the user's shape
            if frames.shape[1] not in (1, 3):
                raise ops.channels_error(frames)
        h, w = frames0.shape[-2:]
        size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
        both = _resize_area(torch.cat((frames0, frames1)).float(), size)
        feats = self._describe_frames(both)
        f0, f1 = feats.split(frames0.shape[0])
        return self.numerics.cost_volume(f0, f1, self.window, self.stride, self.dilation), size

    def flow_from_cost(self, cost: torch.Tensor, input_size: tuple[int, int],
                       reduced_size: tuple[int, int], tau: float | None = None) -> torch.Tensor:
        """Soft-argmax (``tau``, default the engine's) of :meth:`matching_cost`'s volume, resampled
        onto the ``input_size`` grid, in input pixels: the second half of :meth:`forward`."""
        tau = self.tau if tau is None else tau
        feat_stride = 1 if self.extractor is None else self.extractor.stride
        disp = self.numerics.soft_argmax_displacement(cost, self.window, tau, self.dilation)
        # Feature pixel j of the reduced image sits at reduced pixel feat_stride*j, and position i
        # of the cost volume at feature pixel stride*i; offsets are in feature pixels.
        return _to_input_grid(disp * feat_stride, input_size, reduced_size,
                              feat_stride * self.stride).float()

    def forward(self, frames0: torch.Tensor, frames1: torch.Tensor) -> torch.Tensor:
        cost, size = self.matching_cost(frames0, frames1)
        return self.flow_from_cost(cost, tuple(frames0.shape[-2:]), size)


# The matching core lives in flowkit.flow.correlation; its names are re-exported here.
__all__ = ["CostVolumeParams", "CostVolumeEngine", "FeatureExtractor", "patch_features",
           "warped_difference", "gaussian_blur", "window_offsets", "cost_volume",
           "soft_argmax_displacement", "displacement_map", "CostVolume",
           "SoftArgmaxDisplacement", "DisplacementMap"]
