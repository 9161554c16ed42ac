"""CuPy twin of ``flowkit.flow.ops.warp(image, flow, mode="bilinear")`` (kernels in ``warp.cu``).

:class:`WarpBilinear` is a ``torch.autograd.Function``: the forward kernel samples every channel of
a pixel with one set of taps; the backward kernel scatters the image gradient with atomicAdd and
gathers the flow gradient per pixel (sum over channels, no atomics). One launch per call for the
whole batch. Double backward is not supported (``once_differentiable``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..errors import EngineError
from . import check_cuda_float, launch_planes, load_kernel

SOURCE = "warp.cu"
PADDING_MODES = ("zeros", "border")


class WarpBilinear(torch.autograd.Function):
    """``warp(image (B, C, H, W), flow (B, 2, H, W), border: bool) -> (B, C, H, W)``."""

    @staticmethod
    def forward(ctx, image: torch.Tensor, flow: torch.Tensor, border: bool) -> torch.Tensor:
        dtypes = (image.dtype, flow.dtype)
        image, flow = check_cuda_float("warp", image, flow)
        b, c, h, w = image.shape
        out = torch.empty_like(image)
        if out.numel():
            launch_planes(load_kernel("warp_bilinear_forward", SOURCE, device_id=image.device.index),
                          h, w, b,
                          (image, flow, out, np.int32(c), np.int32(h), np.int32(w), np.int32(border)),
                          image.device)
        ctx.save_for_backward(image, flow)
        ctx.border = bool(border)
        ctx.dtypes = dtypes
        return out.to(dtypes[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        image, flow = ctx.saved_tensors
        want_image, want_flow = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (want_image or want_flow) or image.numel() == 0:
            return (torch.zeros_like(image, dtype=ctx.dtypes[0]) if want_image else None,
                    torch.zeros_like(flow, dtype=ctx.dtypes[1]) if want_flow else None, None)
        (grad_out,) = check_cuda_float("warp backward", grad_out)
        b, c, h, w = image.shape
        unused = image.new_empty(1)
        grad_image = torch.zeros_like(image) if want_image else unused
        grad_flow = torch.empty_like(flow) if want_flow else unused
        launch_planes(load_kernel("warp_bilinear_backward", SOURCE, device_id=image.device.index),
                      h, w, b,
                      (grad_out, image, flow, grad_image, grad_flow, np.int32(c), np.int32(h),
                       np.int32(w), np.int32(ctx.border), np.int32(want_image), np.int32(want_flow)),
                      image.device)
        return (grad_image.to(ctx.dtypes[0]) if want_image else None,
                grad_flow.to(ctx.dtypes[1]) if want_flow else None, None)


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Backward warp: sample ``image`` at ``p + flow(p)``, as ``ops.warp`` (bilinear only).

    Args:
        image: ``(B, C, H, W)`` float, CUDA.
        flow: ``(B, 2, H, W)`` pixels, CUDA.
        mode: ``"bilinear"`` (the only mode of this kernel; use ``ops.warp`` for bicubic/nearest).
        padding_mode: ``"zeros"`` or ``"border"``.

    Returns:
        ``(B, C, H, W)`` in ``image``'s dtype (computed in float32), differentiable in both inputs.
    """
    if mode != "bilinear":
        raise EngineError(f"warp (cupy): only mode='bilinear' has a kernel, got {mode!r}; "
                          "use flowkit.flow.ops.warp for other modes")
    if padding_mode not in PADDING_MODES:
        raise EngineError(f"warp padding_mode must be 'zeros' or 'border', got {padding_mode!r}")
    if image.dim() != 4 or flow.dim() != 4:
        raise EngineError(f"warp needs image (B, C, H, W) and flow (B, 2, H, W), got "
                          f"{tuple(image.shape)} and {tuple(flow.shape)}")
    if flow.shape[1] != 2 or flow.shape[-2:] != image.shape[-2:] or flow.shape[0] != image.shape[0]:
        raise EngineError(f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    return WarpBilinear.apply(image, flow, padding_mode == "border")


__all__ = ["WarpBilinear", "warp"]
