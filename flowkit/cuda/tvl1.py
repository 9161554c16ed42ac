"""CuPy twins of TV-L1's hot loops (kernels in ``tvl1.cu``).

=============================  ===============================================  ==================
function here                  torch twin                                       launches
=============================  ===============================================  ==================
:func:`tvl1_iteration`         ``flowkit.flow.tvl1._iteration``                 2 (+1 zero fill)
:func:`linearize`              ``flowkit.flow.tvl1.linearize``                  1
:func:`median_filter`          ``flowkit.flow.ops.median_filter_torch`` (3, 5)  1
:func:`resize_bilinear`        ``flowkit.flow.ops.resize_bilinear``             1
=============================  ===============================================  ==================

Same signatures, shapes and returns as the twins; inputs are CUDA tensors (cast to contiguous
float32), every pair of a batch is handled by the same launch (grid z = pair), and kernels run on
torch's current stream. These are inference kernels: they do not record an autograd graph, so they
refuse inputs that require grad while grad mode is on (TVNet trains through the torch twins).
TVNet's trainable finite-difference kernels (``tvl1_step(kernels=...)``) are not supported here:
the kernels hard-wire OpenCV's [-1, 1] forward difference and divergence.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import EngineError
from . import BLOCK_2D, check_cuda_float, grid_2d, launch, load_kernel

SOURCE = "tvl1.cu"


def _kernel(name: str, like: torch.Tensor):
    return load_kernel(name, SOURCE, device_id=like.device.index)


def _no_grad_inputs(name: str, *tensors: torch.Tensor) -> None:
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise EngineError(f"{name}: the CuPy kernels are not differentiable; use the torch twin "
                          "(backend='torch') to backpropagate, or call under torch.no_grad()")


def _expect(name: str, t: torch.Tensor, shape: tuple) -> None:
    if tuple(t.shape) != tuple(shape):
        raise EngineError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def tvl1_iteration(u: torch.Tensor, p: torch.Tensor, grad_i1w: torch.Tensor, grad_sq: torch.Tensor,
                   rho_c: torch.Tensor, lambda_theta: float, theta: float, tau_theta: float, *,
                   inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One TV-L1 iteration and the per-pair squared update norm, as ``tvl1._iteration``.

    Two kernels (see ``tvl1.cu`` for why not one): ``tvl1_primal`` (thresholding + divergence +
    primal update + error reduction) and ``tvl1_dual`` (forward gradient + dual update).

    Args:
        u: flow ``(B, 2, H, W)``.
        p: dual variable ``(B, 2, 2, H, W)``.
        grad_i1w: ``(B, 2, H, W)``; grad_sq, rho_c: ``(B, 1, H, W)`` (from :func:`linearize`).
        lambda_theta, theta, tau_theta: lambda*theta, theta, tau/theta.
        inplace: update ``u`` and ``p`` in place and return them (they must already be contiguous
            float32 CUDA tensors); saves two allocations per iteration.

    Returns:
        ``(u, p, error)``: new ``u`` and ``p`` (or the updated inputs) and ``error`` ``(B,)``
        float32, ``sum((u_new - u)^2)`` per pair.
    """
    _no_grad_inputs("tvl1_iteration", u, p, grad_i1w, grad_sq, rho_c)
    if inplace and not all(t.is_contiguous() and t.dtype == torch.float32 for t in (u, p)):
        raise EngineError("tvl1_iteration(inplace=True) needs contiguous float32 u and p")
    u_in, p_in = u, p
    u, p, grad_i1w, grad_sq, rho_c = check_cuda_float("tvl1_iteration", u, p, grad_i1w, grad_sq, rho_c)
    if u.dim() != 4 or u.shape[1] != 2:
        raise EngineError(f"u must have shape (B, 2, H, W), got {tuple(u.shape)}")
    b, _, h, w = u.shape
    _expect("p", p, (b, 2, 2, h, w))
    _expect("grad_i1w", grad_i1w, (b, 2, h, w))
    _expect("grad_sq", grad_sq, (b, 1, h, w))
    _expect("rho_c", rho_c, (b, 1, h, w))
    if inplace:
        u_out, p_out = u_in, p_in
    else:
        u_out, p_out = torch.empty_like(u), torch.empty_like(p)
    error = torch.zeros(b, device=u.device, dtype=torch.float32)
    if b == 0:
        return u_out, p_out, error
    grid = grid_2d(h, w, b)
    hh, ww = np.int32(h), np.int32(w)
    launch(_kernel("tvl1_primal", u), grid, BLOCK_2D,
           (u, p, grad_i1w, grad_sq, rho_c, u_out, error, hh, ww,
            np.float32(lambda_theta), np.float32(theta)), u.device)
    launch(_kernel("tvl1_dual", u), grid, BLOCK_2D,
           (u_out, p, p_out, hh, ww, np.float32(tau_theta)), u.device)
    return u_out, p_out, error


def linearize(i0: torch.Tensor, i1_stack: torch.Tensor, u: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bicubic warp of I1 and its gradient to x + u (zeros outside) and the linearised data term,
    in one pass, as ``tvl1.linearize``.

    Args:
        i0: ``(B, 1, H, W)``; i1_stack: ``(B, 3, H, W)`` (I1, dI1/dx, dI1/dy); u: ``(B, 2, H, W)``.

    Returns:
        ``grad_i1w (B, 2, H, W)``, ``grad_sq (B, 1, H, W)``, ``rho_c (B, 1, H, W)``.
    """
    _no_grad_inputs("linearize", i0, i1_stack, u)
    i0, i1_stack, u = check_cuda_float("linearize", i0, i1_stack, u)
    if i0.dim() != 4 or i0.shape[1] != 1:
        raise EngineError(f"i0 must have shape (B, 1, H, W), got {tuple(i0.shape)}")
    b, _, h, w = i0.shape
    _expect("i1_stack", i1_stack, (b, 3, h, w))
    _expect("u", u, (b, 2, h, w))
    grad = torch.empty_like(u)
    grad_sq = torch.empty_like(i0)
    rho_c = torch.empty_like(i0)
    if b:
        launch(_kernel("tvl1_linearize", u), grid_2d(h, w, b), BLOCK_2D,
               (i0, i1_stack, u, grad, grad_sq, rho_c, np.int32(h), np.int32(w)), u.device)
    return grad, grad_sq, rho_c


def median_filter(x: torch.Tensor, ksize: int = 5) -> torch.Tensor:
    """Median over ``ksize x ksize`` (1, 3 or 5) with a replicated border, as
    ``ops.median_filter_torch``. Shape ``(B, C, H, W)`` -> ``(B, C, H, W)`` float32."""
    if ksize == 1:
        return x
    if ksize not in (3, 5):
        raise EngineError(f"median_filter (cupy): ksize must be 1, 3 or 5, got {ksize}")
    _no_grad_inputs("median_filter", x)
    (x,) = check_cuda_float("median_filter", x)
    if x.dim() != 4:
        raise EngineError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    out = torch.empty_like(x)
    planes = x.shape[0] * x.shape[1]
    h, w = x.shape[-2:]
    if planes:
        launch(_kernel(f"median_filter_{ksize}", x), grid_2d(h, w, planes), BLOCK_2D,
               (x, out, np.int32(h), np.int32(w)), x.device)
    return out


def resize_bilinear(x: torch.Tensor, size: tuple[int, int],
                    scale: tuple[float, float] | None = None) -> torch.Tensor:
    """OpenCV ``INTER_LINEAR`` resampling, as ``ops.resize_bilinear`` (same ``scale`` meaning:
    source pixels per output pixel ``(sy, sx)``, default the size ratio).

    Shape: ``(B, C, H, W)`` -> ``(B, C, H', W')`` float32.
    """
    _no_grad_inputs("resize_bilinear", x)
    (x,) = check_cuda_float("resize_bilinear", x)
    if x.dim() != 4:
        raise EngineError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    oh, ow = (int(s) for s in size)
    if oh < 1 or ow < 1:
        raise EngineError(f"resize_bilinear: output size must be positive, got {size}")
    sy, sx = scale if scale is not None else (h / oh, w / ow)
    out = x.new_empty(b, c, oh, ow)
    if b * c:
        launch(_kernel("resize_bilinear", x), grid_2d(oh, ow, b * c), BLOCK_2D,
               (x, out, np.int32(h), np.int32(w), np.int32(oh), np.int32(ow),
                np.float64(sy), np.float64(sx)), x.device)
    return out


__all__ = ["tvl1_iteration", "linearize", "median_filter", "resize_bilinear"]
