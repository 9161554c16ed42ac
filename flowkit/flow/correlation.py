"""Cosine cost volume and soft-argmax displacement: the matching core of DDN (torch numerics).

``cost_volume`` compares features of frame t with those of frame t+1 over a window of offsets;
``soft_argmax_displacement`` turns the volume into an expected offset; ``displacement_map`` is the
two composed; each has an ``nn.Module`` wrapper. Window order, border rule and units are documented
in :mod:`flowkit.flow.costvolume` (the engine built on them). The CuPy kernels
(:mod:`flowkit.cuda.costvolume`) are twins of these two functions; :mod:`flowkit.flow.numerics`
hands an engine one set or the other.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..conventions import COSINE_EPS as _NORM_EPS
from ..errors import EngineError
from . import ops


# ----------------------------------------------------------------------------- window arguments

def _window(max_displacement: int | Sequence[int]) -> tuple[int, int]:
    """``(dH, dW)`` from an int or a pair; negative values are refused."""
    if isinstance(max_displacement, (int,)) and not isinstance(max_displacement, bool):
        pair = (max_displacement, max_displacement)
    elif isinstance(max_displacement, (tuple, list)) and len(max_displacement) == 2:
        pair = tuple(max_displacement)
    else:
        raise EngineError(f"max_displacement must be an int or a pair (dH, dW), got {max_displacement!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair):
        raise EngineError(f"max_displacement must be non-negative integers, got {max_displacement!r}")
    return int(pair[0]), int(pair[1])


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EngineError(f"{name} must be a positive integer, got {value!r}")
    return value


def window_offsets(max_displacement: int | Sequence[int], dilation: int = 1, device=None,
                   dtype=torch.float32) -> torch.Tensor:
    """Offsets of the window's candidates in cost-volume channel order.

    Returns:
        ``(K, 2)`` with ``K = (2dH+1)(2dW+1)``; column 0 is the x offset (columns), column 1 the y
        offset (rows), both in feature pixels (multiplied by ``dilation``).
    """
    dh, dw = _window(max_displacement)
    dilation = _positive_int(dilation, "dilation")
    ys = torch.arange(-dh, dh + 1, device=device, dtype=dtype) * dilation
    xs = torch.arange(-dw, dw + 1, device=device, dtype=dtype) * dilation
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=1)


# ----------------------------------------------------------------------------------- cost volume

def cost_volume(f0: torch.Tensor, f1: torch.Tensor, max_displacement: int | Sequence[int] = 4,
                stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """Cosine similarity between features of frame t at p and of frame t+1 at p + d, for every d of
    the window (DDN Eq. 1's matching cost).

    The loop runs over the window's offsets, so memory is the output plus one product of the inputs'
    size (an unfold would hold K copies of ``f1``); it runs on any device and is differentiable.

    Args:
        f0, f1: features ``(B, C, H, W)`` of frames t and t+1, any float dtype (not necessarily
            normalised: each feature vector is L2-normalised here).
        max_displacement: window half-size ``(dH, dW)`` or an int for both, in window steps.
        stride: evaluate every ``stride``-th position in both directions.
        dilation: distance in feature pixels between neighbouring candidates.

    Returns:
        ``(B, (2dH+1)(2dW+1), ceil(H/stride), ceil(W/stride))`` similarities in [-1, 1]; candidates
        outside frame t+1 score 0 (see the module docstring for the order and the border).

    Shape:
        Input ``(B, C, H, W)`` twice; output ``(B, K, H', W')``.

    Example:
        >>> f = torch.randn(1, 8, 6, 7)
        >>> cost_volume(f, f, max_displacement=(1, 2)).shape
        torch.Size([1, 15, 6, 7])
    """
    ops.check_shape(f0, "BCHW", "f0")
    ops.check_shape(f1, "BCHW", "f1")
    if f0.shape != f1.shape:
        raise EngineError(f"f0 {tuple(f0.shape)} and f1 {tuple(f1.shape)} differ in shape")
    if not f0.is_floating_point():
        raise EngineError(f"features must be floating point, got {f0.dtype}")
    dh, dw = _window(max_displacement)
    stride = _positive_int(stride, "stride")
    dilation = _positive_int(dilation, "dilation")
    h, w = f0.shape[-2:]
    a = F.normalize(f0, dim=1, eps=_NORM_EPS)[:, :, ::stride, ::stride]
    b = F.normalize(f1, dim=1, eps=_NORM_EPS)
    ph, pw = dh * dilation, dw * dilation
    b = F.pad(b, (pw, pw, ph, ph))
    k = (2 * dh + 1) * (2 * dw + 1)
    grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    # Without autograd, one product buffer and the output are written in place: a fresh product per
    # offset (81 of them) made the allocator keep 1.4 GB for one 256x340 pair (measured RSS).
    out = None if grad else a.new_empty((a.shape[0], k, *a.shape[2:]))
    product = None if grad else torch.empty_like(a)
    costs = []
    for iy in range(2 * dh + 1):
        y0 = iy * dilation
        for ix in range(2 * dw + 1):
            x0 = ix * dilation
            shifted = b[:, :, y0:y0 + h:stride, x0:x0 + w:stride]
            if grad:
                costs.append((a * shifted).sum(1))
            else:
                torch.mul(a, shifted, out=product)
                torch.sum(product, 1, out=out[:, iy * (2 * dw + 1) + ix])
    return torch.stack(costs, dim=1) if grad else out


def soft_argmax_displacement(cost: torch.Tensor, max_displacement: int | Sequence[int] = 4,
                             tau: float = 0.1, dilation: int = 1) -> torch.Tensor:
    """Expected offset under ``softmax(cost / tau)`` over the window, marginalised per axis (DDN
    Eq. 1-2); ``tau = 0`` is winner-take-all.

    With ``P = softmax(cost / tau)`` over the K candidates, reshaped to the ``(2dH+1, 2dW+1)`` window,
    ``u = sum_ix (sum_iy P[iy, ix]) * dx(ix)`` and ``v = sum_iy (sum_ix P[iy, ix]) * dy(iy)``. Small
    ``tau`` sharpens the distribution towards the best match; the expectation interpolates between
    candidates, so sub-pixel motion gives sub-pixel output.

    ``tau = 0`` (the limit tau -> 0) returns the offset of the best candidate (argmax; ties go to
    the candidate nearest to zero offset, so a flat region gives 0 rather than a window corner). It
    is piecewise constant: its gradient is zero almost everywhere, and it is returned detached.

    Args:
        cost: ``(B, K, H', W')`` from :func:`cost_volume` with the same window.
        max_displacement: the window ``(dH, dW)`` or int the volume was made with.
        tau: softmax temperature (> 0), or 0 for winner-take-all.
        dilation: the cost volume's dilation; offsets are multiplied by it.

    Returns:
        ``(B, 2, H', W')``: u (+x right), v (+y down) in feature pixels (see "Units" in the module
        docstring: ``stride`` is not a factor).

    Example:
        >>> cost = torch.zeros(1, 9, 2, 2); cost[:, 5] = 1.0   # candidate (iy=1, ix=2): d = (+1, 0)
        >>> soft_argmax_displacement(cost, 1, tau=0)[0, :, 0, 0]
        tensor([1., 0.])
    """
    ops.check_shape(cost, "BCHW", "cost")
    dh, dw = _window(max_displacement)
    ky, kx = 2 * dh + 1, 2 * dw + 1
    if cost.shape[1] != ky * kx:
        raise EngineError(f"cost has {cost.shape[1]} channels but a window of {max_displacement!r} "
                          f"has {ky * kx} candidates")
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau >= 0 or math.isinf(tau):
        raise EngineError(f"tau must be a finite number >= 0, got {tau!r}")
    offsets = window_offsets((dh, dw), dilation, cost.device, cost.dtype)
    b, _, h, w = cost.shape
    if tau == 0:
        return _winner_take_all(cost.detach(), offsets)
    prob = torch.softmax(cost / tau, dim=1).view(b, ky, kx, h, w)
    px = prob.sum(1)                        # (B, kx, H', W'): marginal over rows
    py = prob.sum(2)                        # (B, ky, H', W'): marginal over columns
    dx = offsets[:kx, 0].view(1, kx, 1, 1)
    dy = offsets[::kx, 1].view(1, ky, 1, 1)
    return torch.stack(((px * dx).sum(1), (py * dy).sum(1)), dim=1)


def _winner_take_all(cost: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    best = cost.amax(dim=1, keepdim=True)
    # Among the tied best candidates take the one nearest to zero offset.
    nearness = -(offsets * offsets).sum(1).view(1, -1, 1, 1)
    score = torch.where(cost >= best, nearness.expand_as(cost), torch.full_like(cost, -math.inf))
    index = score.argmax(dim=1)                                   # (B, H', W')
    return offsets[index].permute(0, 3, 1, 2).contiguous()


def displacement_map(f0: torch.Tensor, f1: torch.Tensor, max_displacement: int | Sequence[int] = 4,
                     stride: int = 1, dilation: int = 1, tau: float = 0.1) -> torch.Tensor:
    """:func:`soft_argmax_displacement` of :func:`cost_volume`: DDN's displacement map.

    Shape: ``(B, C, H, W)`` twice -> ``(B, 2, ceil(H/stride), ceil(W/stride))`` in feature pixels.
    """
    cost = cost_volume(f0, f1, max_displacement, stride, dilation)
    return soft_argmax_displacement(cost, max_displacement, tau, dilation)


class CostVolume(nn.Module):
    """Module form of :func:`cost_volume` (stores the arguments)."""

    def __init__(self, max_displacement: int | Sequence[int] = 4, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.max_displacement = _window(max_displacement)
        self.stride = _positive_int(stride, "stride")
        self.dilation = _positive_int(dilation, "dilation")

    def forward(self, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return cost_volume(f0, f1, self.max_displacement, self.stride, self.dilation)

    def extra_repr(self) -> str:
        return f"max_displacement={self.max_displacement}, stride={self.stride}, dilation={self.dilation}"


class SoftArgmaxDisplacement(nn.Module):
    """Module form of :func:`soft_argmax_displacement` (stores the arguments)."""

    def __init__(self, max_displacement: int | Sequence[int] = 4, tau: float = 0.1, dilation: int = 1):
        super().__init__()
        self.max_displacement = _window(max_displacement)
        self.tau = tau
        self.dilation = _positive_int(dilation, "dilation")

    def forward(self, cost: torch.Tensor) -> torch.Tensor:
        return soft_argmax_displacement(cost, self.max_displacement, self.tau, self.dilation)


class DisplacementMap(nn.Module):
    """Module form of :func:`displacement_map` (stores the arguments)."""

    def __init__(self, max_displacement: int | Sequence[int] = 4, stride: int = 1, dilation: int = 1,
                 tau: float = 0.1):
        super().__init__()
        self.max_displacement = _window(max_displacement)
        self.stride = _positive_int(stride, "stride")
        self.dilation = _positive_int(dilation, "dilation")
        self.tau = tau

    def forward(self, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        return displacement_map(f0, f1, self.max_displacement, self.stride, self.dilation, self.tau)

    def extra_repr(self) -> str:
        return (f"max_displacement={self.max_displacement}, stride={self.stride}, "
                f"dilation={self.dilation}, tau={self.tau}")




__all__ = ["window_offsets", "cost_volume", "soft_argmax_displacement", "displacement_map",
           "CostVolume", "SoftArgmaxDisplacement", "DisplacementMap"]
