"""Shared numerics of the motion engines: warping, image gradients, divergence, resampling, median.

All functions are plain torch, run on CPU and CUDA, are batched, and are differentiable where the
maths is (warping, gradients, divergence, resampling). Images are ``(B, C, H, W)`` float tensors;
flow is ``(B, 2, H, W)`` in pixels, channel 0 horizontal (+x right), channel 1 vertical (+y down),
mapping pixel p of the first frame to p + flow(p) in the second (docs/architecture.md, "Conventions").

Finite differences follow OpenCV's DualTVL1 exactly (``centered_gradient``, ``forward_gradient``,
``divergence``) so that the TV-L1 engine reproduces it; each takes an optional 1-D kernel so that
TVNet can make the same operators trainable without a second copy of the numerics.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..conventions import LUMA_RGB
from ..errors import EngineError


def check_shape(x: torch.Tensor, dims: str, name: str = "input") -> None:
    """Raise :class:`EngineError` unless ``x`` has ``len(dims)`` dimensions (e.g. ``"BCHW"``)."""
    if not isinstance(x, torch.Tensor):
        raise EngineError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(dims):
        raise EngineError(f"{name} must have shape ({', '.join(dims)}), got {tuple(x.shape)}")


def to_gray(frames: torch.Tensor) -> torch.Tensor:
    """Luma of RGB frames, as OpenCV's ``COLOR_RGB2GRAY`` computes it (in float, no rounding).

    Shape:
        Input ``(B, C, H, W)`` with C = 1 (returned as float) or C = 3 (RGB order, :func:`luma`).
        Output ``(B, 1, H, W)`` float32, contiguous, same value range as the input.
    """
    check_shape(frames, "BCHW", "frames")
    x = frames.float()
    return x.contiguous() if x.shape[1] == 1 else luma(x)


def luma(x: torch.Tensor) -> torch.Tensor:
    """``0.299 R + 0.587 G + 0.114 B`` of float RGB ``(B, 3, H, W)``, in ``x``'s dtype: ``(B, 1, H,
    W)``, contiguous, differentiable.

    Three products added left to right, not a sum over the channel dimension: a reduction may order
    its additions by the memory layout and the device, and TV-L1 grows a last-bit difference in its
    input to pixels apart where it is ill-posed. So frames give the same bits whether contiguous or
    channels-last (``frames.permute(0, 3, 1, 2)`` of decoded ``(T, H, W, 3)``), here and on CUDA.
    """
    if x.shape[1] != 3:
        raise channels_error(x)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (r * LUMA_RGB[0] + g * LUMA_RGB[1] + b * LUMA_RGB[2]).contiguous()


def channels_error(frames: torch.Tensor) -> EngineError:
    """The error for ``(B, C, H, W)`` frames whose C is not 1 or 3: with their shape and, for
    channels-last frames (``(T, H, W, 3)`` as :func:`flowkit.video.load_frames` returns, whose
    "channels" are then H), the permute that fixes them."""
    shape = tuple(frames.shape)
    fix = ("; they look channels-last (B, H, W, C): pass frames.permute(0, 3, 1, 2)"
           if frames.dim() == 4 and shape[-1] in (1, 3) else "")
    return EngineError(f"frames must be (B, C, H, W) with 1 or 3 channels, got shape {shape}{fix}")


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates ``(1, 2, H, W)``: channel 0 is x (column), channel 1 is y (row)."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy)).unsqueeze(0)


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear",
         padding_mode: str = "zeros") -> torch.Tensor:
    """Backward warp: sample ``image`` at ``p + flow(p)`` for every pixel p.

    With ``flow`` the forward flow from frame t to frame t+1, ``warp(frame_t1, flow)`` is frame t+1
    brought back onto frame t's grid. Coordinates are in pixels; pixel centres are integers. A zero
    flow returns the image exactly, as OpenCV's ``remap`` does (see :func:`_exact_grid`).

    Args:
        image: ``(B, C, H, W)`` float.
        flow: ``(B, 2, H, W)`` pixels.
        mode: ``"bilinear"``, ``"bicubic"`` (Keys, a = -0.75, OpenCV's INTER_CUBIC) or ``"nearest"``.
        padding_mode: ``"zeros"`` (taps outside the image are 0, OpenCV's BORDER_CONSTANT) or
            ``"border"`` (taps are clamped to the edge, BORDER_REPLICATE).

    Returns:
        ``(B, C, H, W)``, differentiable with respect to both inputs.
    """
    check_shape(image, "BCHW", "image")
    check_shape(flow, "BCHW", "flow")
    if flow.shape[1] != 2 or flow.shape[-2:] != image.shape[-2:] or flow.shape[0] != image.shape[0]:
        raise EngineError(f"flow {tuple(flow.shape)} does not match image {tuple(image.shape)}")
    if padding_mode not in ("zeros", "border"):
        raise EngineError(f"warp padding_mode must be 'zeros' or 'border', got {padding_mode!r}")
    padded, grid = _exact_grid(image, flow, padding_mode)
    return F.grid_sample(padded, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def _exact_grid(image: torch.Tensor, flow: torch.Tensor, padding_mode: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``image`` so that (size - 1) is a power of two, and the matching sampling grid.

    ``grid_sample`` takes coordinates normalised by (size - 1) / 2 and scales them back; with an
    arbitrary size both steps round, so even a zero flow resamples the image by ~1e-5 px, and
    TV-L1's ill-posed border amplifies that to pixels of spurious flow. With (size - 1) = 2^k the
    scalings are exact for integer positions. The extra rows/columns hold what lies outside the image
    under ``padding_mode`` (zeros, or edge replicas), and the output grid keeps the image's size, so
    the cost is one padded copy of the input.
    """
    _, _, h, w = image.shape
    hp = 1 + (1 << max(h - 2, 0).bit_length())
    wp = 1 + (1 << max(w - 2, 0).bit_length())
    pad = (0, wp - w, 0, hp - h)
    padded = F.pad(image, pad, mode="constant" if padding_mode == "zeros" else "replicate")
    coords = pixel_grid(h, w, flow.device, flow.dtype) + flow
    grid = torch.stack((coords[:, 0] * (2.0 / (wp - 1)) - 1.0,
                        coords[:, 1] * (2.0 / (hp - 1)) - 1.0), dim=-1)
    return padded, grid.to(image.dtype)


def _kernel(kernel: torch.Tensor | None, default: Sequence[float], like: torch.Tensor
            ) -> torch.Tensor | Sequence[float]:
    """The taps to use: ``kernel`` in ``like``'s dtype, or the ``default`` taps as Python floats
    (a tensor made from them would be a blocking host-to-device copy on every call, i.e. a
    synchronisation per iteration on CUDA; the products are the same)."""
    if kernel is None:
        return default
    return kernel.to(like.dtype)


def centered_gradient(image: torch.Tensor, kernel: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences ``k0*I(x-1) + k2*I(x+1)`` (default k = [-0.5, 0, 0.5]), replicated border.

    At the border this gives ``0.5*(I(1) - I(0))``, exactly OpenCV DualTVL1's ``centeredGradient``.

    Shape: ``(B, C, H, W)`` -> two ``(B, C, H, W)`` tensors (d/dx, d/dy).
    """
    k = _kernel(kernel, (-0.5, 0.0, 0.5), image)
    px = F.pad(image, (1, 1, 0, 0), mode="replicate")
    py = F.pad(image, (0, 0, 1, 1), mode="replicate")
    gx = k[0] * px[..., :, :-2] + k[1] * image + k[2] * px[..., :, 2:]
    gy = k[0] * py[..., :-2, :] + k[1] * image + k[2] * py[..., 2:, :]
    return gx, gy


def forward_gradient(u: torch.Tensor, kernel: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences ``k0*u(x) + k1*u(x+1)`` (default k = [-1, 1]), zero in the last column/row.

    Shape: ``(..., H, W)`` -> two tensors of the same shape (d/dx, d/dy).
    """
    k = _kernel(kernel, (-1.0, 1.0), u)
    gx = F.pad(k[0] * u[..., :, :-1] + k[1] * u[..., :, 1:], (0, 1))
    gy = F.pad(k[0] * u[..., :-1, :] + k[1] * u[..., 1:, :], (0, 0, 0, 1))
    return gx, gy


def divergence(px: torch.Tensor, py: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Backward-difference divergence ``k1*p(x) + k0*p(x-1)`` (default k = [-1, 1]) with p(-1) = 0.

    The negative adjoint of :func:`forward_gradient` (OpenCV DualTVL1's ``divergence``).

    Shape: ``px``, ``py`` ``(..., H, W)`` -> ``(..., H, W)``.
    """
    k = _kernel(kernel, (-1.0, 1.0), px)
    dx = k[1] * px + k[0] * F.pad(px[..., :, :-1], (1, 0))
    dy = k[1] * py + k[0] * F.pad(py[..., :-1, :], (0, 0, 1, 0))
    return dx + dy


def _linear_taps(n_in: int, n_out: int, scale: float, device) -> tuple[torch.Tensor, torch.Tensor,
                                                                        torch.Tensor]:
    """Source indices and weights of OpenCV INTER_LINEAR along one axis (half-pixel centres)."""
    src = (torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * scale - 0.5
    src = src.clamp(min=0.0)
    i0 = src.floor()
    frac = src - i0
    i0 = i0.long()
    last = i0 >= n_in - 1
    i0 = torch.where(last, torch.full_like(i0, n_in - 1), i0)
    frac = torch.where(last, torch.zeros_like(frac), frac)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, frac.float()


def resize_bilinear(x: torch.Tensor, size: tuple[int, int],
                    scale: tuple[float, float] | None = None) -> torch.Tensor:
    """Bilinear resampling with OpenCV ``resize(..., INTER_LINEAR)`` semantics (no antialiasing).

    Args:
        x: ``(B, C, H, W)`` float.
        size: output ``(H', W')``.
        scale: source pixels per output pixel ``(sy, sx)``; defaults to ``(H/H', W/W')``. OpenCV
            uses ``1/fx`` here when called with a scale factor, which differs from the size ratio
            after rounding; pass it to reproduce OpenCV's pyramids.

    Returns:
        ``(B, C, H', W')``, differentiable in ``x``.
    """
    check_shape(x, "BCHW", "x")
    h, w = x.shape[-2:]
    oh, ow = size
    sy, sx = scale if scale is not None else (h / oh, w / ow)
    y0, y1, fy = _linear_taps(h, oh, sy, x.device)
    x0, x1, fx = _linear_taps(w, ow, sx, x.device)
    fy = fy.to(x.dtype).view(-1, 1)
    fx = fx.to(x.dtype)
    rows = torch.lerp(x.index_select(-2, y0), x.index_select(-2, y1), fy)
    return torch.lerp(rows.index_select(-1, x0), rows.index_select(-1, x1), fx)


def pyramid_sizes(height: int, width: int, nscales: int, scale_step: float,
                  min_size: int = 16) -> list[tuple[int, int]]:
    """Level sizes of an OpenCV DualTVL1 pyramid: each level is the previous one times
    ``scale_step`` (rounded), and the pyramid stops before a level narrower than ``min_size``."""
    sizes = [(height, width)]
    for _ in range(1, nscales):
        h, w = sizes[-1]
        nh, nw = round(h * scale_step), round(w * scale_step)
        if nh < min_size or nw < min_size:
            break
        sizes.append((nh, nw))
    return sizes


def image_pyramid(image: torch.Tensor, sizes: Sequence[tuple[int, int]], scale_step: float,
                  resize=None) -> list[torch.Tensor]:
    """Images at the given sizes, each level resized from the previous one (as OpenCV does) with
    ``resize`` (default :func:`resize_bilinear`; the cupy backend passes its kernel)."""
    resize = resize or resize_bilinear
    levels = [image]
    for size in sizes[1:]:
        inv = 1.0 / scale_step
        levels.append(resize(levels[-1], size, scale=(inv, inv)))
    return levels


def median_filter(x: torch.Tensor, ksize: int = 5) -> torch.Tensor:
    """Median over a ``ksize x ksize`` window with a replicated border (OpenCV ``medianBlur``).

    CPU float32 tensors that need no gradient go through ``cv2.medianBlur`` itself (identical
    result, ~70x faster than sorting unfolded windows); everything else uses the torch version.

    Shape: ``(B, C, H, W)`` -> ``(B, C, H, W)``. ``ksize`` must be odd.
    """
    check_shape(x, "BCHW", "x")
    if ksize % 2 != 1 or ksize < 1:
        raise EngineError(f"median ksize must be odd and positive, got {ksize}")
    if ksize == 1:
        return x
    if (x.device.type == "cpu" and x.dtype == torch.float32 and ksize <= 5
            and not (x.requires_grad and torch.is_grad_enabled())):
        return _median_opencv(x, ksize)
    return median_filter_torch(x, ksize)


def median_filter_torch(x: torch.Tensor, ksize: int = 5) -> torch.Tensor:
    """Torch reference of :func:`median_filter` (any device, any float dtype)."""
    r = ksize // 2
    b, c, h, w = x.shape
    padded = F.pad(x, (r, r, r, r), mode="replicate")
    # (B, C, H, W, k, k) view of every window, no copy until the median.
    windows = padded.unfold(2, ksize, 1).unfold(3, ksize, 1)
    return windows.reshape(b, c, h, w, ksize * ksize).median(dim=-1).values


def _median_opencv(x: torch.Tensor, ksize: int) -> torch.Tensor:
    planes = x.detach().contiguous().reshape(-1, *x.shape[-2:]).numpy()
    out = np.empty_like(planes)
    for i, plane in enumerate(planes):
        cv2.medianBlur(plane, ksize, dst=out[i])
    return torch.from_numpy(out).reshape(x.shape)
