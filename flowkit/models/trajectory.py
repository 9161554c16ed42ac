"""Trajectory convolution (Zhao, Xiong, Lin, "Trajectory Convolution for Action Recognition", NeurIPS 2018).

A temporal convolution of kernel size ``kt`` aggregates, for the output at (t, p), the features at
(t + tau, p) for tau in ``-r..r`` (r = kt // 2): it assumes the feature maps of neighbouring times
are aligned. Trajectory convolution aggregates along the motion path instead: the feature of time
t + tau is read at the trajectory position ``p_tau`` of the point p of frame t::

    p_0 = p
    p_{tau+1} = p_tau + f_{t+tau}(p_tau)          tau >= 0, f the forward flow (t -> t+1)
    p_{tau-1} = p_tau + b_{t+tau}(p_tau)          tau <= 0, b the backward flow (t -> t-1)

    y(t, p) = bias + sum_tau W_tau . x_{t+tau}(p_tau)

Positions are real-valued: both the features and, for |tau| > 1, the flow itself are sampled
bilinearly (``flowkit.flow.ops.warp``: ``grid_sample`` with ``align_corners=True`` on pixel
coordinates, zeros outside the frame, exact at integer positions). Features are zero where the
trajectory leaves the frame. Where t + tau leaves the clip, ``padding="zeros"`` gives zero (the
zero padding of ``nn.Conv3d``) and ``padding="replicate"`` the clip's edge frame, read where the
trajectory reached the edge (flowkit's ``ResNet3d`` temporal convs replicate edge frames; beyond its
ends the clip stands still). With zero flow the operation is exactly the ``(kt, 1, 1)`` conv with
that padding.

Conventions (docs/architecture.md): features ``(B, C, T, H, W)``; flows ``(B, 2, T, H, W)`` in pixels at
the features' resolution, channel 0 = u (+x right), 1 = v (+y down). ``forward_flow[:, :, t]`` maps
frame t to t+1 (the last one is never used); ``backward_flow[:, :, t]`` maps frame t to t-1 (the first
one is never used).

A store can hold backward flow computed the other way round, ``flow/<name>_backward``
(``flowkit extract --backward``; TrajectoryNet reads it with ``backward_flow="store"``). With only
forward flow at hand, :func:`backward_from_forward` uses ``b_t(p) ~= -f_{t-1}(p)``, the forward flow
of the previous frame negated *at the same pixel*. The exact backward flow is ``-f_{t-1}`` at the
pixel q of frame t-1 that lands on p (``b_t(p) = -f_{t-1}(p + b_t(p))``, which needs a flow
inversion), so the approximation is off by about ``grad(f_{t-1}) b_t``: exact where the flow is
uniform over the displacement (a translation, whatever it does in time), nearly so for smooth
flow, and wrong in a band about ``|b_t|`` wide at moving edges and occlusions. On the toy
videos its error is at TV-L1's own noise level (benchmarks/results/backward_flow.md).

Functions first (kornia style): :func:`trajectory_offsets`, :func:`trajectory_sample`,
:func:`trajectory_conv`, :func:`downsample_flow`, :func:`backward_from_forward`; the module
:class:`TrajectoryConv` stores a weight in ``nn.Conv3d`` layout ``(C_out, C_in, kt, 1, 1)`` so it can
replace the temporal conv of a separable 3D network and copy its weights
(:meth:`TrajectoryConv.from_conv3d`).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FlowkitError
from ..flow import ops

#: A flow source for :class:`TrajectoryConv`: a pair ``(forward, backward_or_None)`` at the features'
#: resolution, or a callable ``(H, W) -> (forward, backward_or_None)`` that makes them for a size.
FlowSource = Union[tuple, Callable[[tuple[int, int]], tuple]]
#: What lies beyond the clip's ends in time: zeros (``nn.Conv3d``'s zero padding) or the edge frames
#: (the replicate padding of flowkit's ``ResNet3d`` temporal convs).
PADDINGS = ("zeros", "replicate")


def _check(x: torch.Tensor, dims: str, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise FlowkitError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(dims):
        raise FlowkitError(f"{name} must have shape ({', '.join(dims)}), got {tuple(x.shape)}")


def _check_kernel(kernel_t: int) -> int:
    kernel_t = int(kernel_t)
    if kernel_t < 1 or kernel_t % 2 == 0:
        raise FlowkitError(f"trajectory kernel_t must be an odd number >= 1, got {kernel_t}")
    return kernel_t


def _check_flows(x: torch.Tensor, forward_flow: torch.Tensor,
                 backward_flow: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes against ``x`` (B, C, T, H, W); derive the backward flow when missing."""
    _check(forward_flow, "BCTHW", "forward_flow")
    b, _, t, h, w = x.shape
    want = (b, 2, t, h, w)
    if tuple(forward_flow.shape) != want:
        raise FlowkitError(f"forward_flow {tuple(forward_flow.shape)} does not match features "
                           f"{tuple(x.shape)}: expected {want} (pixels at the features' resolution; "
                           f"use downsample_flow to bring full-resolution flow down)")
    if backward_flow is None:
        backward_flow = backward_from_forward(forward_flow)
    else:
        _check(backward_flow, "BCTHW", "backward_flow")
        if tuple(backward_flow.shape) != want:
            raise FlowkitError(f"backward_flow {tuple(backward_flow.shape)} does not match features "
                               f"{tuple(x.shape)}: expected {want}")
    return forward_flow.to(x.dtype), backward_flow.to(x.dtype)


def backward_from_forward(forward_flow: torch.Tensor) -> torch.Tensor:
    """Approximate backward flow from forward flow: ``b_t(p) ~= -f_{t-1}(p)``, ``b_0 = 0``.

    The forward flow of the previous frame, negated at the same pixel (see the module docstring for
    why this is the approximation chosen). ``b_0`` would point outside the clip and is never used.

    Shape: ``(B, 2, T, H, W)`` -> ``(B, 2, T, H, W)``, pixels.
    """
    _check(forward_flow, "BCTHW", "forward_flow")
    backward = torch.zeros_like(forward_flow)
    backward[:, :, 1:] = -forward_flow[:, :, :-1]
    return backward


def _shift_time(v: torch.Tensor, k: int, padding: str = "zeros") -> torch.Tensor:
    """``out[:, :, t] = v[:, :, t + k]`` where ``0 <= t + k < T``; elsewhere zero (``"zeros"``) or
    the edge frame ``v[:, :, clamp(t + k)]`` (``"replicate"``)."""
    if k == 0:
        return v
    t = v.shape[2]
    if padding == "replicate":
        index = (torch.arange(t, device=v.device) + k).clamp(0, t - 1)
        return v.index_select(2, index)
    out = torch.zeros_like(v)
    if abs(k) < t:
        if k > 0:
            out[:, :, : t - k] = v[:, :, k:]
        else:
            out[:, :, -k:] = v[:, :, : t + k]
    return out


def _valid_time(t: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """``(1, 1, T, 1, 1)`` mask, 1 where ``0 <= t + k < T``."""
    idx = torch.arange(t, device=like.device) + k
    return ((idx >= 0) & (idx < t)).to(like.dtype).view(1, 1, t, 1, 1)


def _fold(v: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` -> ``(B T, C, H, W)``."""
    b, c, t, h, w = v.shape
    return v.transpose(1, 2).reshape(b * t, c, h, w)


def _unfold(v: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """``(B T, C, H, W)`` -> ``(B, C, T, H, W)``."""
    return v.reshape(b, t, *v.shape[1:]).transpose(1, 2)


def _check_padding(padding: str) -> str:
    if padding not in PADDINGS:
        raise FlowkitError(f"trajectory padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    return padding


def _trajectories(x: Optional[torch.Tensor], forward_flow: torch.Tensor, backward_flow: torch.Tensor,
                  kernel_t: int, padding: str) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Accumulated offsets ``{tau: (B, 2, T, H, W)}`` and, when ``x`` is given, the features sampled
    along them ``{tau: (B, C, T, H, W)}`` for tau in ``-r..r``, tau != 0 (tau = 0 is x itself)."""
    r = kernel_t // 2
    b, _, t, h, w = forward_flow.shape
    offsets: dict[int, torch.Tensor] = {}
    samples: dict[int, torch.Tensor] = {}
    # Flows that point outside the clip (forward of the last frame, backward of the first) are
    # zero: beyond its ends the clip stands still, so a trajectory stops at the clip's edge.
    forward_flow = forward_flow * _valid_time(t, 1, forward_flow)
    backward_flow = backward_flow * _valid_time(t, -1, backward_flow)
    for sign, flow in ((1, forward_flow), (-1, backward_flow)):
        offset = None                                  # folded (B T, 2, H, W), p_tau - p
        for step in range(1, r + 1):
            # The flow of time t + sign*(step-1), read where the trajectory is at that time.
            flow_here = _fold(_shift_time(flow, sign * (step - 1)))
            if offset is None:                         # p_0 = p: integer grid, no resampling
                offset = flow_here
            else:
                offset = offset + ops.warp(flow_here, offset)
            tau = sign * step
            offsets[tau] = _unfold(offset, b, t)
            if padding == "zeros":
                offsets[tau] = offsets[tau] * _valid_time(t, tau, offset)
            if x is not None:
                # "zeros": the shifted features are zero where t + tau is outside the clip;
                # "replicate": they are the edge frame, read where the trajectory stopped.
                samples[tau] = _unfold(ops.warp(_fold(_shift_time(x, tau, padding)), offset), b, t)
    return offsets, samples


def trajectory_offsets(forward_flow: torch.Tensor, backward_flow: Optional[torch.Tensor] = None,
                       kernel_t: int = 3, padding: str = "zeros") -> torch.Tensor:
    """Accumulated trajectory offsets ``p_tau - p`` for tau in ``-r..-1, 1..r`` (r = kt // 2).

    Args:
        forward_flow: ``(B, 2, T, H, W)`` pixels, t -> t+1.
        backward_flow: ``(B, 2, T, H, W)`` pixels, t -> t-1; ``None`` derives it with
            :func:`backward_from_forward`.
        kernel_t: odd temporal kernel size kt.
        padding: ``"zeros"``: offsets are zero where t + tau is outside the clip; ``"replicate"``:
            there they keep the offset of the clip's edge frame (the clip stands still beyond it).

    Returns:
        ``(B, 2 (kt-1), T, H, W)`` pixels: channels ``(u, v)`` of tau = -r, ..., -1, 1, ..., r in that
        order.

    Example:
        >>> f = torch.ones(1, 2, 5, 6, 7)                  # 1 px/frame right and down
        >>> trajectory_offsets(f, kernel_t=5)[0, :, 2, 3, 3].tolist()
        [-2.0, -2.0, -1.0, -1.0, 1.0, 1.0, 2.0, 2.0]
    """
    kernel_t = _check_kernel(kernel_t)
    _check(forward_flow, "BCTHW", "forward_flow")
    forward_flow, backward_flow = _check_flows(forward_flow, forward_flow, backward_flow)
    offsets, _ = _trajectories(None, forward_flow, backward_flow, kernel_t, _check_padding(padding))
    r = kernel_t // 2
    taus = [*range(-r, 0), *range(1, r + 1)]
    if not taus:
        b, _, t, h, w = forward_flow.shape
        return forward_flow.new_zeros(b, 0, t, h, w)
    return torch.cat([offsets[tau] for tau in taus], dim=1)


def trajectory_sample(x: torch.Tensor, forward_flow: torch.Tensor,
                      backward_flow: Optional[torch.Tensor] = None, kernel_t: int = 3,
                      padding: str = "zeros") -> torch.Tensor:
    """Features of times t + tau sampled bilinearly at the trajectory positions of the pixels of t.

    Args:
        x: features ``(B, C, T, H, W)``.
        forward_flow: ``(B, 2, T, H, W)`` pixels at x's resolution, t -> t+1.
        backward_flow: ``(B, 2, T, H, W)`` pixels, t -> t-1; ``None`` derives it with
            :func:`backward_from_forward`.
        kernel_t: odd temporal kernel size kt.
        padding: where t + tau is outside the clip, ``"zeros"`` (``nn.Conv3d``'s zero padding) or
            ``"replicate"``: the edge frame, read where the trajectory reached the edge (flowkit's
            ``ResNet3d`` temporal convs pad by replicating edge frames).

    Returns:
        ``(B, C, kt, T, H, W)``: ``out[:, :, k, t] = x_{t+tau}(p_tau)`` with tau = k - kt // 2; zero
        outside the frame (and outside the clip with ``"zeros"``). ``out[:, :, kt // 2]`` is x.
        Differentiable with respect to x and both flows.

    Example:
        >>> x = torch.arange(4.).view(1, 1, 4, 1, 1).expand(1, 1, 4, 2, 2)
        >>> trajectory_sample(x, torch.zeros(1, 2, 4, 2, 2))[0, 0, :, :, 0, 0].tolist()
        [[0.0, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 0.0]]
    """
    _check(x, "BCTHW", "x")
    kernel_t = _check_kernel(kernel_t)
    forward_flow, backward_flow = _check_flows(x, forward_flow, backward_flow)
    _, samples = _trajectories(x, forward_flow, backward_flow, kernel_t, _check_padding(padding))
    samples[0] = x
    r = kernel_t // 2
    return torch.stack([samples[tau] for tau in range(-r, r + 1)], dim=2)


def _conv_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(C_out, C_in, kt)`` or Conv3d's ``(C_out, C_in, kt, 1, 1)`` -> ``(C_out, C_in, kt)``."""
    if weight.dim() == 5 and weight.shape[-2:] == (1, 1):
        return weight[..., 0, 0]
    if weight.dim() != 3:
        raise FlowkitError(f"trajectory_conv weight must be (C_out, C_in, kt) or (C_out, C_in, kt, 1, "
                           f"1), got {tuple(weight.shape)}")
    return weight


def trajectory_conv(x: torch.Tensor, forward_flow: torch.Tensor,
                    backward_flow: Optional[torch.Tensor], weight: torch.Tensor,
                    bias: Optional[torch.Tensor] = None, padding: str = "zeros") -> torch.Tensor:
    """Temporal convolution along trajectories: ``y(t, p) = bias + sum_tau W_tau x_{t+tau}(p_tau)``.

    Args:
        x: ``(B, C_in, T, H, W)``.
        forward_flow, backward_flow: see :func:`trajectory_sample` (``backward_flow`` may be None).
        weight: ``(C_out, C_in, kt)`` (or ``nn.Conv3d`` layout ``(C_out, C_in, kt, 1, 1)``); tap k
            weighs time offset tau = k - kt // 2, as in a ``Conv3d`` with padding ``(kt // 2, 0, 0)``.
        bias: ``(C_out,)`` or None.
        padding: temporal padding, ``"zeros"`` or ``"replicate"`` (see :func:`trajectory_sample`).

    Returns:
        ``(B, C_out, T, H, W)``. With zero flow, exactly the ``(kt, 1, 1)`` conv with that temporal
        padding (``F.conv3d(x, weight, bias, padding=(kt//2, 0, 0))`` for ``"zeros"``).
    """
    _check(x, "BCTHW", "x")
    w = _conv_weight(weight)
    if w.shape[1] != x.shape[1]:
        raise FlowkitError(f"trajectory_conv weight {tuple(weight.shape)} expects {w.shape[1]} input "
                           f"channels, x has {x.shape[1]}")
    samples = trajectory_sample(x, forward_flow, backward_flow, kernel_t=w.shape[2], padding=padding)
    out = torch.einsum("bcktyx,ock->botyx", samples, w.to(x.dtype))
    if bias is not None:
        out = out + bias.to(x.dtype).view(1, -1, 1, 1, 1)
    return out


def downsample_flow(flow: torch.Tensor, factor: int, mode: str = "avg") -> torch.Tensor:
    """Flow at 1/``factor`` of its resolution, in pixels of the new resolution (values / factor).

    The grid is the network's: the bottom/right are replicate-padded to a multiple of ``factor`` and
    each ``factor x factor`` block gives one pixel, so the output is ``ceil(H/f) x ceil(W/f)``, the
    size a stride-f stack of "same"-padded convolutions produces (and MotionNet's scale grid).

    Args:
        flow: ``(B, 2, H, W)`` or ``(B, 2, T, H, W)`` pixels.
        factor: integer >= 1.
        mode: ``"avg"`` (block mean) or ``"max"``: per block the flow vector of largest magnitude
            (max pooling by magnitude, so small background motion does not dilute a moving part,
            and u, v stay one consistent vector).

    Returns:
        Same layout, spatial size ``ceil(H/f), ceil(W/f)``, values divided by ``factor``.
    """
    factor = int(factor)
    if factor < 1:
        raise FlowkitError(f"downsample_flow factor must be >= 1, got {factor}")
    if mode not in ("avg", "max"):
        raise FlowkitError(f"downsample_flow mode must be 'avg' or 'max', got {mode!r}")
    if flow.dim() == 5:
        b, c, t, h, w = flow.shape
        out = downsample_flow(_fold(flow), factor, mode)
        return _unfold(out, b, t)
    _check(flow, "BCHW", "flow")
    if flow.shape[1] != 2:
        raise FlowkitError(f"flow must have 2 channels (u, v), got {tuple(flow.shape)}")
    if factor == 1:
        return flow
    h, w = flow.shape[-2:]
    padded = F.pad(flow, (0, (-w) % factor, 0, (-h) % factor), mode="replicate")
    if mode == "avg":
        return F.avg_pool2d(padded, factor) / factor
    magnitude = (padded * padded).sum(1, keepdim=True)
    _, index = F.max_pool2d(magnitude, factor, return_indices=True)
    n, _, ho, wo = index.shape
    picked = padded.flatten(2).gather(2, index.view(n, 1, -1).expand(-1, 2, -1))
    return picked.view(n, 2, ho, wo) / factor


def resize_flow_to(flow: torch.Tensor, size: tuple[int, int], mode: str = "avg", *,
                   stride: int) -> torch.Tensor:
    """Flow ``(B, 2, T, H, W)`` -> ``(B, 2, T, *size)`` pixels of the features' grid: pooled by
    ``stride`` with :func:`downsample_flow` (values divided by it).

    ``stride`` is the network's, the input pixels per feature pixel where the flow is used (e.g.
    ``ResNet3d.output_stride(name)``); it is never guessed from the sizes, which several strides
    share (``ceil(112 / 28) == ceil(112 / 32) == 4``). Raises FlowkitError when ``stride`` does not
    give ``size`` (``ceil(H / stride), ceil(W / stride)``).
    """
    h, w = flow.shape[-2:]
    stride = int(stride)
    if stride < 1:
        raise FlowkitError(f"resize_flow_to stride must be >= 1, got {stride}")
    want = (-(-h // stride), -(-w // stride))
    if want != tuple(size):
        raise FlowkitError(f"flow of size {(h, w)} pooled by the stride {stride} gives {want}, but "
                           f"the features are {tuple(size)}")
    return downsample_flow(flow, stride, mode)


class TrajectoryConv(nn.Module):
    """Trajectory convolution with a ``nn.Conv3d``-compatible weight ``(C_out, C_in', kt, 1, 1)``.

    Args:
        in_channels: C_in of the features.
        out_channels: C_out.
        kernel_t: odd temporal kernel size.
        bias: learnable bias (the temporal convs of ResNets have none).
        offsets: also feed the trajectory offsets (:func:`trajectory_offsets`, normalised by a
            ``BatchNorm3d``) as ``offset_channels = 2 (kt-1)`` extra input channels, the paper's
            "trajectory offsets as motion features". They are concatenated after the features, so
            ``C_in' = in_channels + offset_channels``; the extra weights start at zero, so a
            converted network computes what the original did until it learns to use them.
        padding: temporal padding, ``"zeros"`` or ``"replicate"`` (:func:`trajectory_sample`).

    Flow: ``forward(x, forward_flow, backward_flow=None)``; or, inside a network that calls the
    module as ``conv(x)``, from :meth:`set_flow` (a pair of tensors or a callable
    ``(H, W) -> (forward, backward)`` asked for the features' size at each call).

    Shape:
        x ``(B, C_in, T, H, W)``, flows ``(B, 2, T, H, W)`` pixels at x's resolution ->
        ``(B, C_out, T, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_t: int = 3, bias: bool = False,
                 offsets: bool = False, padding: str = "zeros"):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_t = _check_kernel(kernel_t)
        self.padding = _check_padding(padding)
        self.offset_channels = 2 * (self.kernel_t - 1) if offsets else 0
        self.weight = nn.Parameter(torch.empty(self.out_channels,
                                               self.in_channels + self.offset_channels,
                                               self.kernel_t, 1, 1))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.offset_norm = nn.BatchNorm3d(self.offset_channels) if self.offset_channels else None
        self._flow_source: Optional[FlowSource] = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv3d``'s default initialisation; the offset channels' weights start at zero."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.offset_channels:
            with torch.no_grad():
                self.weight[:, self.in_channels:] = 0
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_conv3d(cls, conv: nn.Conv3d, offsets: bool = False) -> "TrajectoryConv":
        """A trajectory conv computing what ``conv`` (kernel ``(kt, 1, 1)``) computes at zero flow,
        with a copy of its weights (and bias) and its temporal padding: ``nn.Conv3d`` with padding
        ``(kt//2, 0, 0)`` (zeros or replicate ``padding_mode``), or flowkit's ``ClipConv3d`` /
        ``TemporalConv3d`` (edge replication, its ``temporal_padding``)."""
        kt = conv.kernel_size[0]
        pad = tuple(conv.padding)
        if getattr(conv, "temporal_padding", 0) == kt // 2 and pad == (0, 0, 0):
            padding = "replicate" if kt > 1 else "zeros"
        elif pad == (kt // 2, 0, 0) and conv.padding_mode in PADDINGS:
            padding = conv.padding_mode
        else:
            padding = None
        if (padding is None or conv.kernel_size[1:] != (1, 1) or conv.stride != (1, 1, 1)
                or conv.dilation != (1, 1, 1) or conv.groups != 1):
            raise FlowkitError(f"only a temporal conv with kernel (kt, 1, 1), stride 1, 'same' "
                               f"temporal padding (zeros or replicate), no dilation or groups can "
                               f"become a trajectory conv; got {conv}")
        new = cls(conv.in_channels, conv.out_channels, kt, bias=conv.bias is not None,
                  offsets=offsets, padding=padding).to(device=conv.weight.device,
                                                       dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight[:, : conv.in_channels].copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new

    def set_flow(self, source: Optional[FlowSource]) -> None:
        """Flow for the next calls ``conv(x)``: ``(forward, backward_or_None)`` tensors at the
        features' resolution, a callable ``(H, W) -> (forward, backward_or_None)``, or None to clear."""
        self._flow_source = source

    def _flows(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        source = self._flow_source
        if source is None:
            raise FlowkitError("TrajectoryConv needs flow: call conv(x, forward_flow, backward_flow) "
                               "or conv.set_flow(...) before the network's forward")
        if callable(source):
            return source(tuple(x.shape[-2:]))
        return source

    def forward(self, x: torch.Tensor, forward_flow: Optional[torch.Tensor] = None,
                backward_flow: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check(x, "BCTHW", "x")
        if x.shape[1] != self.in_channels:
            raise FlowkitError(f"TrajectoryConv built for {self.in_channels} channels got "
                               f"{tuple(x.shape)}")
        if forward_flow is None:
            forward_flow, backward_flow = self._flows(x)
        forward_flow, backward_flow = _check_flows(x, forward_flow, backward_flow)
        if self.offset_channels:
            offsets = trajectory_offsets(forward_flow, backward_flow, self.kernel_t, self.padding)
            x = torch.cat([x, self.offset_norm(offsets)], dim=1)
        return trajectory_conv(x, forward_flow, backward_flow, self.weight, self.bias, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_t={self.kernel_t}, "
                f"bias={self.bias is not None}, offset_channels={self.offset_channels}, "
                f"padding={self.padding!r}")


__all__ = ["TrajectoryConv", "backward_from_forward", "downsample_flow", "resize_flow_to",
           "trajectory_conv", "trajectory_offsets", "trajectory_sample"]
