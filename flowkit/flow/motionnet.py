"""MotionNet (Zhu et al., "Hidden Two-Stream Convolutional Networks for Action Recognition", 2017).

An encoder-decoder CNN that takes M+1 consecutive RGB frames and predicts the M optical flows
between them, trained without ground truth by an unsupervised loss (photometric + SSIM +
smoothness), so it can be trained on the videos it will later be run on.

Architecture (checked against the official Caffe ``multiframe_MotionNet/train.prototxt``)::

    frames (B, 3(M+1), H, W), padded to a multiple of 32
    conv1 conv1_1   64,   64  stride 1  1/1
    conv2 conv2_1  128,  128  stride 2  1/2  -> skip2
    conv3 conv3_1  256,  256  stride 2  1/4  -> skip3
    conv4 conv4_1  512,  512  stride 2  1/8  -> skip4
    conv5 conv5_1  512,  512  stride 2  1/16 -> skip5
    conv6 conv6_1 1024, 1024  stride 2  1/32 -> predict6 (3x3, 2M channels)
    level l = 5, 4, 3, 2:  cat(skip_l, deconv_l(features), upflow_l(predict_{l+1}))
                           -> xconv_l (3x3) -> predict_l (3x3, 2M)

All convolutions are 3x3 with LeakyReLU(0.1) (none after the flow predictions); ``deconv_l`` and
``upflow_l`` are 4x4 stride-2 transposed convolutions. Decoder widths (deconv_l / xconv_l) are
512, 256, 128, 64 (FlowNetS's; the prototxt gives 512 at level 5). Every width is multiplied by
``width`` (at least 2 channels) so tests and CPU runs can use a tiny network.

Outputs, exactly:
    ``MotionNet(frames)`` returns a list of 5 tensors, **finest first**: ``flows[k]`` is
    ``(B, 2M, ceil(H / 2^(k+1)), ceil(W / 2^(k+1)))``, i.e. scales 1/2, 1/4, 1/8, 1/16, 1/32 of the
    input. Values are **pixels at that scale's own resolution** (a 4 px motion at full resolution is
    1 px in ``flows[2]``). Channels ``2t`` and ``2t+1`` are (u, v) of flow t, from frame t to frame
    t+1, in flowkit's convention: u is +x (right), v is +y (down), ``flow[t]`` maps pixel p of frame t
    to p + flow(p) in frame t+1; so ``ops.warp(frame[t+1], flow[t]) ~= frame[t]`` at that scale.
    Pixel i of scale s covers input pixels [i 2^s, (i+1) 2^s) (block averaging, see
    :func:`downsample`). The raw network output is flow / 20 in input pixels at every scale; it is
    multiplied by 20 / 2^s to give pixels at scale 1/2^s, as the paper's FlowNet-style scaling
    (0.625 at 1/32 ... 10 at 1/2). :meth:`MotionNet.full_resolution` upsamples ``flows[0]`` to the
    input size (x2 in value).

Input normalisation: intensities in [0, 255] are mapped to x / 255 - mean, with the per-channel
RGB mean (123, 117, 104) / 255 of the reference's Caffe data layer (no LRN: the reference also
LRN-normalises the images its photometric loss compares; flowkit compares plain [0, 1] RGB).
Any H x W is accepted: the input is replicate-padded at the bottom/right to a multiple of 32 (the
encoder's total stride; conv1 has stride 1, so FlowNet's 64 is not needed) and every scale is
cropped back to ``ceil(size / 2^s)``.

Unsupervised loss (:func:`unsupervised_loss`), per scale, with the official prototxt's weights:
photometric Charbonnier ``((255 d)^2 + 1e-6)^0.4`` on [0, 1] RGB with a 10% border mask, weight 1 at
every scale; ``1 - SSIM`` over non-overlapping 8x8 windows, weight 0.16 at the coarsest (1/32) scale
halving to 0.01 at the finest (1/2) ("0.16..0.01 coarse->fine"); smoothness Charbonnier
``(d^2 + 1e-6)^0.3`` on x and y forward differences of the flow in pixels of that scale, weight 1 at
every scale (the prototxt's beta = 20/2^s converts its raw outputs to exactly these pixels).

Engine (``create_engine("motionnet", weights=CKPT)``): see :class:`MotionNetEngine`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import checkpoints
from ..errors import EngineError
from . import ops
from .base import FlowEngine
from .params import weights_identity
from .registry import register_engine

#: Encoder widths conv1, conv1_1, ..., conv6, conv6_1 (docs/architecture.md, "Reference facts").
ENCODER_CHANNELS = (64, 64, 128, 128, 256, 256, 512, 512, 512, 512, 1024, 1024)
#: Decoder widths at levels 5, 4, 3, 2 (deconv and xconv).
DECODER_CHANNELS = (512, 256, 128, 64)
#: The encoder's total stride, 2^5 for 5 flow scales.
PAD_MULTIPLE = 32
#: Raw outputs are flow / FLOW_DIVISOR in input pixels (FlowNet's "div_flow").
FLOW_DIVISOR = 20.0
#: Per-channel RGB mean in [0, 1] subtracted from the input (the reference's 123, 117, 104).
RGB_MEAN = (123.0 / 255, 117.0 / 255, 104.0 / 255)

#: Unsupervised loss weights per scale, ordered like the network's outputs (finest 1/2 first).
#: Official prototxt: photometric 1 and smoothness 1 (for u and for v) at every scale; SSIM 0.16 at
#: the coarsest (1/32) down to 0.01 at the finest (1/2): "0.16..0.01 coarse->fine".
PHOTOMETRIC_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)
SSIM_WEIGHTS = (0.01, 0.02, 0.04, 0.08, 0.16)
SMOOTHNESS_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 1.0)

CHECKPOINT_HINT = ("train weights with `flowkit train-flow motionnet VIDEO_DIR --out motionnet.pt`, "
                   "then pass them with `flowkit extract --method motionnet --weights motionnet.pt` "
                   "(Python: create_engine('motionnet', weights='motionnet.pt'))")


# ------------------------------------------------------------------------------------ resolution

def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Replicate-pad the bottom and right of ``(B, C, H, W)`` so H and W are multiples of ``multiple``.

    Padding only at the bottom/right keeps pixel i of every scale 1/2^s anchored at input pixel
    i 2^s, so unpadding any scale is a crop to ``ceil(size / 2^s)``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


def downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Block-average ``(B, C, H, W)`` by ``factor`` -> ``(B, C, ceil(H/f), ceil(W/f))``.

    The same grid as the network's scale 1/factor (the last partial block averages the replicated
    edge), so images and flows of one scale line up exactly.
    """
    if factor == 1:
        return images
    return F.avg_pool2d(pad_to_multiple(images, factor), factor)


def upsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Flow at scale 1/2 -> flow ``(B, 2k, *size)`` in pixels at full resolution.

    Bilinear with half-pixel centres (the block grid of :func:`downsample`), values x 2.
    """
    up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=False)
    return up[..., : size[0], : size[1]] * 2


# ------------------------------------------------------------------------------------ the network

def _width(channels: int, width: float) -> int:
    return max(2, int(round(channels * width)))


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.1, inplace=True))


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.1, inplace=True))


def _bilinear_upflow(channels: int) -> nn.ConvTranspose2d:
    """4x4 stride-2 transposed conv initialised to exact per-channel bilinear x2 upsampling.

    The reference initialises it randomly (MSRA); starting from the identity upsampling makes the
    coarse-to-fine refinement meaningful from step one, which matters for short CPU runs. It stays
    learnable. Raw predictions are in the same units at every scale, so no x2 on values.
    """
    layer = nn.ConvTranspose2d(channels, channels, 4, 2, 1)
    k1 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    kernel = torch.outer(k1, k1)
    with torch.no_grad():
        layer.weight.zero_()
        for c in range(channels):
            layer.weight[c, c] = kernel
        layer.bias.zero_()
    return layer


class MotionNet(nn.Module):
    """MotionNet-(M+1): M+1 RGB frames in, M flows out at 5 scales (see the module docstring).

    Args:
        num_frames: M, the number of flows (pairs); M+1 frames in. MotionNet-(2) is M=1, the paper's
            default MotionNet-(11) is M=10, MotionNet-(17) is M=16.
        width: multiplier of every layer's channel count (1.0 = the paper's network).

    Shape:
        Input ``(B, 3(M+1), H, W)`` (frames stacked along channels, frame 0 first) or
        ``(B, M+1, 3, H, W)``; intensities in [0, 255]; any H, W >= 1 (padded internally).
        Output: list of 5 tensors, finest first, ``(B, 2M, ceil(H/2^(k+1)), ceil(W/2^(k+1)))``,
        pixels at that scale.
    """

    def __init__(self, num_frames: int = 10, width: float = 1.0):
        super().__init__()
        if int(num_frames) < 1:
            raise EngineError(f"motionnet: num_frames must be >= 1, got {num_frames}")
        if not float(width) > 0:
            raise EngineError(f"motionnet: width must be positive, got {width}")
        self.num_frames = int(num_frames)
        self.width = float(width)
        enc = [_width(c, width) for c in ENCODER_CHANNELS]
        dec = [_width(c, width) for c in DECODER_CHANNELS]
        flow_ch = 2 * self.num_frames
        cin = 3 * (self.num_frames + 1)
        layers = []
        for i, cout in enumerate(enc):
            stride = 2 if i >= 2 and i % 2 == 0 else 1   # conv2, conv3, ..., conv6
            layers.append(_conv(cin, cout, stride))
            cin = cout
        self.encoder = nn.ModuleList(layers)
        self.predict6 = nn.Conv2d(enc[-1], flow_ch, 3, 1, 1)
        # Decoder levels 5, 4, 3, 2; skip l is conv{l}_1, i.e. encoder output 2l - 1.
        self.skip_index = (9, 7, 5, 3)
        self.deconvs, self.upflows, self.xconvs, self.predicts = (nn.ModuleList() for _ in range(4))
        features = enc[-1]
        for skip, d in zip(self.skip_index, dec):
            self.deconvs.append(_deconv(features, d))
            self.upflows.append(_bilinear_upflow(flow_ch))
            self.xconvs.append(_conv(enc[skip] + d + flow_ch, d))
            self.predicts.append(nn.Conv2d(d, flow_ch, 3, 1, 1))
            features = d
        self._init_weights()
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)

    def _init_weights(self) -> None:
        bilinear = {id(m) for m in self.upflows}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and id(m) not in bilinear:
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)
        # Small flow heads: training starts near zero flow instead of random 10-px fields.
        for head in [self.predict6, *self.predicts]:
            head.weight.data.mul_(0.1)

    @property
    def config(self) -> dict[str, Any]:
        """What rebuilds this network: ``MotionNet(**net.config)``."""
        return {"num_frames": self.num_frames, "width": self.width}

    def normalise(self, frames: torch.Tensor) -> torch.Tensor:
        """``(B, M+1, 3, H, W)`` in [0, 255] -> ``(B, 3(M+1), H, W)``, x / 255 - RGB mean."""
        b, t, c, h, w = frames.shape
        x = frames.float().reshape(b * t, c, h, w) / 255.0 - self.rgb_mean
        return x.reshape(b, t * c, h, w)

    def _as_clip(self, frames: torch.Tensor) -> torch.Tensor:
        m1 = self.num_frames + 1
        if frames.dim() == 4:
            if frames.shape[1] != 3 * m1:
                raise EngineError(f"motionnet with num_frames={self.num_frames} takes {3 * m1} "
                                  f"channels ({m1} RGB frames), got {tuple(frames.shape)}")
            frames = frames.reshape(frames.shape[0], m1, 3, *frames.shape[-2:])
        ops.check_shape(frames, "BTCHW", "frames")
        if frames.shape[1:3] != (m1, 3):
            raise EngineError(f"motionnet with num_frames={self.num_frames} takes clips of {m1} RGB "
                              f"frames (B, {m1}, 3, H, W), got {tuple(frames.shape)}")
        return frames

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        clip = self._as_clip(frames)
        h, w = clip.shape[-2:]
        x = pad_to_multiple(self.normalise(clip))
        feats = []
        for layer in self.encoder:
            x = layer(x)
            feats.append(x)
        raw = [self.predict6(x)]                     # coarsest first while decoding
        for i, skip in enumerate(self.skip_index):
            cat = torch.cat([feats[skip], self.deconvs[i](x), self.upflows[i](raw[-1])], dim=1)
            x = self.xconvs[i](cat)
            raw.append(self.predicts[i](x))
        flows = []
        for k, r in enumerate(reversed(raw)):        # finest (1/2) first
            factor = 2 ** (k + 1)
            flows.append(r[..., : -(-h // factor), : -(-w // factor)] * (FLOW_DIVISOR / factor))
        return flows

    @staticmethod
    def full_resolution(flows: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """The finest prediction ``flows[0]`` (scale 1/2) as ``(B, 2M, *size)`` input pixels."""
        return upsample_flow(flows[0], size)


# ------------------------------------------------------------------------------------ the loss

def charbonnier(x: torch.Tensor, alpha: float, beta: float = 1.0, eps_sq: float = 1e-6) -> torch.Tensor:
    """Generalised Charbonnier penalty ``((beta x)^2 + eps_sq)^alpha``, elementwise."""
    return ((beta * x) ** 2 + eps_sq) ** alpha


def border_mask(height: int, width: int, ratio: float = 0.1, device=None) -> torch.Tensor:
    """``(1, 1, H, W)`` float mask, 0 within ``floor(ratio * size)`` pixels of each border, else 1."""
    mask = torch.ones(1, 1, height, width, device=device)
    by, bx = int(ratio * height), int(ratio * width)
    if by:
        mask[..., :by, :] = 0
        mask[..., height - by:, :] = 0
    if bx:
        mask[..., :bx] = 0
        mask[..., width - bx:] = 0
    return mask


def _pairs(frames: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip ``(B, M+1, C, h, w)`` and flow ``(B, 2M, h, w)`` -> targets, sources, flows per pair
    as ``(B M, C, h, w)``, ``(B M, C, h, w)``, ``(B M, 2, h, w)``."""
    b, t, c, h, w = frames.shape
    m = t - 1
    if flow.shape != (b, 2 * m, h, w):
        raise EngineError(f"flow {tuple(flow.shape)} does not match a clip of {t} frames "
                          f"{tuple(frames.shape)} (expected {(b, 2 * m, h, w)})")
    return (frames[:, :-1].reshape(b * m, c, h, w), frames[:, 1:].reshape(b * m, c, h, w),
            flow.reshape(b * m, 2, h, w))


def photometric_loss(target: torch.Tensor, source: torch.Tensor, flow: torch.Tensor,
                     border: float = 0.1, alpha: float = 0.4) -> torch.Tensor:
    """Charbonnier photometric error ``((255 d)^2 + 1e-6)^0.4`` of ``d = warp(source, flow) - target``.

    Args:
        target: frame t ``(B, C, H, W)`` in [0, 1].
        source: frame t+1 ``(B, C, H, W)`` in [0, 1], warped back onto frame t by ``flow``.
        flow: ``(B, 2, H, W)`` pixels, frame t -> t+1.
        border: fraction of each side left out (the reference's 10% border mask), where content
            leaves the frame.

    Returns:
        Scalar: mean over the unmasked pixels and channels (grey levels^0.8 units).
    """
    diff = ops.warp(source, flow) - target
    mask = border_mask(*target.shape[-2:], ratio=border, device=target.device)
    penalty = charbonnier(diff, alpha, beta=255.0) * mask
    return penalty.sum() / (mask.sum() * diff.shape[0] * diff.shape[1]).clamp(min=1)


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: int = 8, c1: float = 1e-4,
              c2: float = 1e-3) -> torch.Tensor:
    """``1 - mean SSIM`` over non-overlapping ``window x window`` blocks (the reference's stride 8).

    Images in [0, 1], ``(B, C, H, W)``. At scales smaller than the window, the window shrinks to
    the image (coarsest scales of small inputs). Constants are the reference's.
    """
    k = max(1, min(window, x.shape[-2], x.shape[-1]))
    mu_x, mu_y = F.avg_pool2d(x, k), F.avg_pool2d(y, k)
    var_x = F.avg_pool2d(x * x, k) - mu_x ** 2
    var_y = F.avg_pool2d(y * y, k) - mu_y ** 2
    cov = F.avg_pool2d(x * y, k) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return 1.0 - ssim.mean()


def smoothness_loss(flow: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """Charbonnier ``(d^2 + 1e-6)^0.3`` of forward differences of the flow, in pixels at its scale.

    ``(B, 2, H, W)`` -> scalar: mean over x differences plus mean over y differences (the reference
    penalises [du/dx, du/dy] and [dv/dx, dv/dy] with weight 1 each; same total up to the split).
    """
    dx = flow[..., :, 1:] - flow[..., :, :-1]
    dy = flow[..., 1:, :] - flow[..., :-1, :]
    total = flow.new_zeros(())
    if dx.numel():
        total = total + charbonnier(dx, alpha).mean()
    if dy.numel():
        total = total + charbonnier(dy, alpha).mean()
    return total


def _scale_factor(size: tuple[int, int], flow_size: tuple[int, int]) -> int:
    """The power of two f with ``ceil(size / f) == flow_size`` (the network's scale grid)."""
    for s in range(12):
        f = 2 ** s
        if (-(-size[0] // f), -(-size[1] // f)) == flow_size:
            return f
    raise EngineError(f"flow of size {flow_size} is no power-of-two scale of frames of size {size}")


def unsupervised_loss(frames: torch.Tensor,
                      flows_per_scale: Sequence[torch.Tensor]) -> torch.Tensor:
    """MotionNet's unsupervised loss summed over scales.

    At scale 1/2^s the frames are block-averaged to the flow's grid (:func:`downsample` by 2,
    s times), frame t+1 is warped back by flow t and compared with frame t: ``w_p * photometric + w_s * (1 - SSIM) +
    w_m * smoothness`` (:func:`photometric_loss`, :func:`ssim_loss`, :func:`smoothness_loss`), with
    entry k of :data:`PHOTOMETRIC_WEIGHTS`, :data:`SSIM_WEIGHTS`, :data:`SMOOTHNESS_WEIGHTS` (the
    official prototxt's) for ``flows_per_scale[k]``.

    Args:
        frames: clip ``(B, M+1, 3, H, W)`` (or ``(B, 3(M+1), H, W)``), intensities in [0, 255].
        flows_per_scale: the network's output, finest first, each ``(B, 2M, h_s, w_s)`` pixels at
            its scale, with scale 1/2^(k+1) for ``flows_per_scale[k]`` (the factor is read from the
            sizes, so a prefix of the scales, or a full-resolution flow, works too).

    Returns:
        A differentiable scalar (use ``gamma * total`` inside another model's loss). It is not
        split into its terms: reading them back would cost host syncs every step.
    """
    if frames.dim() == 4:
        frames = frames.reshape(frames.shape[0], -1, 3, *frames.shape[-2:])
    ops.check_shape(frames, "BTCHW", "frames")
    b, t, c, h, w = frames.shape
    images = frames.float().reshape(b * t, c, h, w) / 255.0
    if len(flows_per_scale) > len(SSIM_WEIGHTS):
        raise EngineError(f"{len(flows_per_scale)} flow scales for the loss's "
                          f"{len(SSIM_WEIGHTS)} per-scale weights")
    total = images.new_zeros(())
    pyramid = {1: images}   # factor -> images; 2x block averages of 2x block averages are cheap
    for k, flow in enumerate(flows_per_scale):
        factor = _scale_factor((h, w), tuple(flow.shape[-2:]))
        while factor not in pyramid:
            finest = max(f for f in pyramid if f < factor)
            pyramid[2 * finest] = downsample(pyramid[finest], 2)
        scaled = pyramid[factor]
        scaled = scaled.reshape(b, t, c, *scaled.shape[-2:])
        target, source, pair_flow = _pairs(scaled, flow)
        total = total + PHOTOMETRIC_WEIGHTS[k] * photometric_loss(target, source, pair_flow)
        total = total + SSIM_WEIGHTS[k] * ssim_loss(ops.warp(source, pair_flow), target)
        total = total + SMOOTHNESS_WEIGHTS[k] * smoothness_loss(pair_flow)
    return total


# ------------------------------------------------------------------------------------ checkpoints

def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a ``flowkit train-flow motionnet`` checkpoint; EngineError naming the file otherwise."""
    return checkpoints.load_checkpoint(path, "motionnet", what="motionnet weights",
                                       error=EngineError, hint=CHECKPOINT_HINT,
                                       map_location=map_location)


def model_from_checkpoint(ckpt: dict, path: str | os.PathLike = "checkpoint") -> MotionNet:
    """Build the network a checkpoint describes and load its weights."""
    cfg = ckpt["config"]
    net = MotionNet(num_frames=int(cfg["num_frames"]), width=float(cfg["width"]))
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise EngineError(f"motionnet weights {path}: do not fit the network of its config "
                          f"{cfg}: {str(exc).splitlines()[0]}") from None
    return net


# ------------------------------------------------------------------------------------ the engine

@dataclass(frozen=True)
class MotionNetParams:
    """What ``create_engine("motionnet", ...)`` takes: the checkpoint, and optionally the
    architecture it must have (None: the checkpoint's)."""
    weights: str | None = None
    num_frames: int | None = None
    width: float | None = None


@register_engine
class MotionNetEngine(FlowEngine):
    """Trained MotionNet as a flow engine: ``create_engine("motionnet", weights="motionnet.pt")``.

    Refuses to be built without ``weights`` (a random network never produces flow). ``num_frames``
    and ``width`` default to the checkpoint's and, if given, must match it.

    Pairs -> clips: extraction calls ``engine(frames[:-1], frames[1:])`` on consecutive frames, so
    when ``frames0[i+1] == frames1[i]`` for all i the B pairs are one clip of B+1 frames and go
    through :meth:`flow_clip`. Otherwise every pair is its own clip. How a clip of T frames is cut
    into the network's M+1-frame windows: windows start at 0, M, 2M, ... (consecutive windows share
    one frame, so every flow is computed once); the last window is moved back to end at the clip's
    last frame when T >= M+1 (it overlaps the previous one; flows already computed are kept); when
    T < M+1 (short chunks, single pairs, B < M), the clip is padded by repeating its last frame, and
    only the T-1 real flows are returned. A checkpoint with M=1 (MotionNet-(2)) is purely pairwise.
    For the most context per flow, extract with ``--batch`` a multiple of M.

    Frames ``(B, C, H, W)`` in [0, 255], C = 3 (RGB) or 1 (replicated to RGB); output ``(B, 2, H, W)``
    float32 pixels at the input resolution (the finest 1/2 prediction upsampled bilinearly, x2).
    """

    name = "motionnet"
    version = "1"
    independent_pairs = False  # consecutive pairs of one video are one clip

    Params = MotionNetParams

    def __init__(self, device="cpu", params: MotionNetParams | None = None, *,
                 window_batch: int = 8, **fields):
        super().__init__(device)
        p = self.make_params(params, fields)
        weights, num_frames, width = p.weights, p.num_frames, p.width
        if not weights:
            raise EngineError(f"motionnet needs trained weights: random weights never produce flow; "
                              f"{CHECKPOINT_HINT}")
        self.weights = Path(weights)
        ckpt = load_checkpoint(self.weights)
        cfg = ckpt["config"]
        for key, given in (("num_frames", num_frames), ("width", width)):
            if given is not None and float(given) != float(cfg[key]):
                raise EngineError(f"motionnet: {key}={given} does not match the checkpoint "
                                  f"{self.weights} ({key}={cfg[key]}); leave it out to use the "
                                  f"checkpoint's")
        self.net = model_from_checkpoint(ckpt, self.weights).to(self.device).eval()
        self.window_batch = max(1, int(window_batch))
        # All 64 digits (as motionnet always recorded them); the path made absolute.
        path, self._sha256 = weights_identity(self.weights, digits=None)
        self.weights = Path(path)
        self.trained = {k: ckpt.get(k) for k in ("epoch", "step", "loss")}

    @property
    def num_frames(self) -> int:
        return self.net.num_frames

    @property
    def params(self) -> dict:
        return {"num_frames": self.net.num_frames, "width": self.net.width,
                "weights": str(self.weights), "weights_sha256": self._sha256}

    def forward(self, frames0: torch.Tensor, frames1: torch.Tensor) -> torch.Tensor:
        frames0, frames1 = _rgb(frames0), _rgb(frames1)
        if frames0.shape[0] > 1 and torch.equal(frames0[1:], frames1[:-1]):
            return self._flow_clip(torch.cat([frames0, frames1[-1:]]))
        # Unrelated pairs: each is a 2-frame clip, padded to M+1 by repeating its second frame.
        m = self.num_frames
        clips = torch.stack([frames0, *([frames1] * m)], dim=1)
        return self._run(clips)[:, 0]

    def flow_clip(self, clip: torch.Tensor) -> torch.Tensor:
        """Flows of a whole clip: ``(T, C, H, W)`` in [0, 255] -> ``(T-1, 2, H, W)`` pixels."""
        ops.check_shape(clip, "TCHW", "clip")
        if clip.shape[0] < 2:
            raise EngineError(f"motionnet: a clip needs at least 2 frames, got {clip.shape[0]}")
        with torch.no_grad():
            return self._flow_clip(_rgb(clip.to(self.device)))

    def _flow_clip(self, clip: torch.Tensor) -> torch.Tensor:
        t, m = clip.shape[0], self.num_frames
        if t < m + 1:
            clip = torch.cat([clip, clip[-1:].expand(m + 1 - t, *clip.shape[1:])])
        starts = list(range(0, max(t - 1, 1), m))
        starts = [min(s, max(t - 1 - m, 0)) for s in starts]
        windows = torch.stack([clip[s: s + m + 1] for s in starts])
        flows = self._run(windows)                               # (n_windows, M, 2, H, W)
        out = torch.empty(t - 1, 2, *clip.shape[-2:], device=clip.device)
        done = torch.zeros(t - 1, dtype=torch.bool)
        for s, f in zip(starts, flows):
            for j in range(m):
                if s + j < t - 1 and not done[s + j]:
                    out[s + j] = f[j]
                    done[s + j] = True
        return out

    def _run(self, clips: torch.Tensor) -> torch.Tensor:
        """``(N, M+1, 3, H, W)`` -> ``(N, M, 2, H, W)`` full-resolution flows, in window batches."""
        h, w = clips.shape[-2:]
        outs = []
        for i in range(0, clips.shape[0], self.window_batch):
            flows = self.net(clips[i: i + self.window_batch].float())
            full = MotionNet.full_resolution(flows, (h, w))
            outs.append(full.reshape(full.shape[0], self.num_frames, 2, h, w))
        return torch.cat(outs)


def _rgb(frames: torch.Tensor) -> torch.Tensor:
    if frames.shape[1] == 1:
        return frames.expand(-1, 3, -1, -1)
    if frames.shape[1] != 3:
        raise ops.channels_error(frames)  # with the permute for channels-last frames
    return frames


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["MotionNet", "MotionNetEngine", "unsupervised_loss", "photometric_loss", "ssim_loss",
           "smoothness_loss", "charbonnier", "border_mask", "downsample", "upsample_flow",
           "pad_to_multiple", "load_checkpoint", "model_from_checkpoint", "count_parameters",
           "SSIM_WEIGHTS", "PHOTOMETRIC_WEIGHTS", "SMOOTHNESS_WEIGHTS", "CHECKPOINT_HINT"]
