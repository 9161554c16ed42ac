"""CuPy twins of ``flowkit.flow.costvolume`` (kernels in ``costvolume.cu``).

=================================  ==============================================================
function here                      torch twin (``flowkit.flow.costvolume``)
=================================  ==============================================================
:func:`cost_volume`                ``cost_volume`` (normalisation in torch, correlation in CUDA)
:func:`soft_argmax_displacement`   ``soft_argmax_displacement`` (``tau = 0`` delegates to the twin)
:func:`displacement_map`           ``displacement_map``
=================================  ==============================================================

Same window order (``k = iy * (2dW+1) + ix``, rows slowest), border rule (out-of-image candidates
score 0), ``stride`` and ``dilation`` as the twin. Arguments are checked by the twin's API in
:mod:`flowkit.flow.correlation`, which :mod:`flowkit.flow.numerics` puts in front of these kernels;
here they are only normalised (an int window means both half-sizes). The soft-argmax kernel needs
``tau > 0``: winner-take-all (``tau = 0``) is the twin's (numerics routes it there). The
correlation and the soft-argmax are ``torch.autograd.Function`` s with CUDA backward kernels (both
gathers, no atomics); one launch covers the batch.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ..conventions import COSINE_EPS
from ..errors import EngineError
from . import check_cuda_float, launch_planes, load_kernel

SOURCE = "costvolume.cu"
# Softmax of bounded cosines tolerates approximate exp/division (see flowkit/cuda/__init__.py).
FAST_MATH = True


def _kernel(name: str, like: torch.Tensor):
    return load_kernel(name, SOURCE, fast_math=FAST_MATH, device_id=like.device.index)


def _pair(max_displacement) -> tuple[int, int]:
    """``(dH, dW)`` of a window given as an int (both) or a pair, already checked by the twin."""
    if isinstance(max_displacement, int):
        return max_displacement, max_displacement
    dh, dw = max_displacement
    return int(dh), int(dw)


def _out_size(h: int, w: int, stride: int) -> tuple[int, int]:
    return -(-h // stride), -(-w // stride)


class Correlation(torch.autograd.Function):
    """``cost[b, k, i, j] = <a[:, s*i, s*j], f[:, s*i + dy_k, s*j + dx_k]>`` (0 outside ``f``) for
    pre-normalised features ``a``, ``f`` ``(B, C, H, W)``; returns ``(B, K, ceil(H/s), ceil(W/s))``."""

    @staticmethod
    def forward(ctx, a, f, dh: int, dw: int, stride: int, dilation: int):
        a, f = check_cuda_float("cost_volume", a, f)
        b, c, h, w = a.shape
        oh, ow = _out_size(h, w, stride)
        k = (2 * dh + 1) * (2 * dw + 1)
        cost = a.new_empty(b, k, oh, ow)
        if cost.numel():
            launch_planes(_kernel("correlation_forward", a), oh, ow, b * k,
                          (a, f, cost, *map(np.int32, (c, h, w, oh, ow, dh, dw, stride, dilation))),
                          a.device)
        ctx.save_for_backward(a, f)
        ctx.window = (dh, dw, stride, dilation)
        return cost

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_cost):
        a, f = ctx.saved_tensors
        dh, dw, stride, dilation = ctx.window
        (grad_cost,) = check_cuda_float("cost_volume backward", grad_cost)
        b, c, h, w = a.shape
        oh, ow = _out_size(h, w, stride)
        grad_a, grad_f = torch.empty_like(a), torch.empty_like(f)
        if a.numel():
            launch_planes(_kernel("correlation_backward", a), h, w, b * c,
                          (grad_cost, a, f, grad_a, grad_f,
                           *map(np.int32, (c, h, w, oh, ow, dh, dw, stride, dilation))), a.device)
        return grad_a, grad_f, None, None, None, None


class SoftArgmax(torch.autograd.Function):
    """Expected window offset under ``softmax(cost / tau)``: ``(B, K, H', W') -> (B, 2, H', W')``."""

    @staticmethod
    def forward(ctx, cost, dh: int, dw: int, dilation: int, tau: float):
        (cost,) = check_cuda_float("soft_argmax_displacement", cost)
        b, _, oh, ow = cost.shape
        disp = cost.new_empty(b, 2, oh, ow)
        args = (np.int32(oh), np.int32(ow), np.int32(dh), np.int32(dw), np.int32(dilation),
                np.float32(1.0 / tau))
        if disp.numel():
            launch_planes(_kernel("soft_argmax_forward", cost), oh, ow, b, (cost, disp, *args),
                          cost.device)
        ctx.save_for_backward(cost, disp)
        ctx.args = args
        return disp

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_disp):
        cost, disp = ctx.saved_tensors
        (grad_disp,) = check_cuda_float("soft_argmax_displacement backward", grad_disp)
        b, _, oh, ow = cost.shape
        grad_cost = torch.empty_like(cost)
        if cost.numel():
            launch_planes(_kernel("soft_argmax_backward", cost), oh, ow, b,
                          (grad_disp, cost, disp, grad_cost, *ctx.args), cost.device)
        return grad_cost, None, None, None, None


def cost_volume(f0: torch.Tensor, f1: torch.Tensor, max_displacement: int | Sequence[int] = 4,
                stride: int = 1, dilation: int = 1) -> torch.Tensor:
    """Cosine similarity over the window, as ``costvolume.cost_volume``.

    Shape: ``(B, C, H, W)`` twice -> ``(B, (2dH+1)(2dW+1), ceil(H/stride), ceil(W/stride))`` in
    ``f0``'s dtype (computed in float32). Differentiable in both inputs.
    """
    if f0.dim() != 4 or f0.shape != f1.shape:
        raise EngineError(f"f0 {tuple(f0.shape)} and f1 {tuple(f1.shape)} must be equal (B, C, H, W)")
    if not f0.is_floating_point():
        raise EngineError(f"features must be floating point, got {f0.dtype}")
    dh, dw = _pair(max_displacement)
    a = F.normalize(f0.float(), dim=1, eps=COSINE_EPS)
    f = F.normalize(f1.float(), dim=1, eps=COSINE_EPS)
    return Correlation.apply(a, f, dh, dw, stride, dilation).to(f0.dtype)


def soft_argmax_displacement(cost: torch.Tensor, max_displacement: int | Sequence[int] = 4,
                             tau: float = 0.1, dilation: int = 1) -> torch.Tensor:
    """Expected offset under ``softmax(cost / tau)``, as ``costvolume.soft_argmax_displacement``
    (``tau = 0``, winner-take-all, is the twin's own code: it is cheap and not differentiable).

    Shape: ``(B, K, H', W')`` -> ``(B, 2, H', W')`` feature pixels, in ``cost``'s dtype.
    """
    if cost.dim() != 4:
        raise EngineError(f"cost must have shape (B, K, H, W), got {tuple(cost.shape)}")
    dh, dw = _pair(max_displacement)
    if cost.shape[1] != (2 * dh + 1) * (2 * dw + 1):
        raise EngineError(f"cost has {cost.shape[1]} channels but a window of {max_displacement!r} "
                          f"has {(2 * dh + 1) * (2 * dw + 1)} candidates")
    if not (isinstance(tau, (int, float)) and not isinstance(tau, bool) and 0 < tau < math.inf):
        raise EngineError(f"soft_argmax_displacement (cupy): tau must be a positive number, got "
                          f"{tau!r}; winner-take-all (tau=0) is flowkit.flow.correlation's")
    return SoftArgmax.apply(cost, dh, dw, dilation, float(tau)).to(cost.dtype)


def displacement_map(f0: torch.Tensor, f1: torch.Tensor, max_displacement: int | Sequence[int] = 4,
                     stride: int = 1, dilation: int = 1, tau: float = 0.1) -> torch.Tensor:
    """:func:`soft_argmax_displacement` of :func:`cost_volume`, as ``costvolume.displacement_map``.

    The volume is materialised (K floats per position); a fused kernel that keeps it in registers
    (online softmax) is the next optimisation, see README.md.
    """
    cost = cost_volume(f0, f1, max_displacement, stride, dilation)
    return soft_argmax_displacement(cost, max_displacement, tau, dilation)


__all__ = ["Correlation", "SoftArgmax", "cost_volume", "soft_argmax_displacement", "displacement_map"]
