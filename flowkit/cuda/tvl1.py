"""CuPy twins of TV-L1's hot loops (kernels in ``tvl1.cu``) and the sync-free warp solver.

=============================  ===============================================  ==================
function here                  torch twin                                       launches
=============================  ===============================================  ==================
:func:`tvl1_iteration`         ``flowkit.flow.tvl1.iteration``                  2 (+1 zero fill)
:func:`linearize`              ``flowkit.flow.tvl1.linearize``                  1
:func:`median_filter`          ``flowkit.flow.ops.median_filter_torch`` (3, 5)  1
:func:`resize_bilinear`        ``flowkit.flow.ops.resize_bilinear``             1
:func:`stop_rule`              the epsilon rule of ``flow.tvl1.warp_iterations``  1
:class:`WarpSolver`            ``flowkit.flow.tvl1.warp_iterations``            1 graph per outer it.
=============================  ===============================================  ==================

Same signatures, shapes and returns as the twins; inputs are CUDA tensors (cast to contiguous
float32), every pair of a batch is handled by the same launch (grid z = pair), and kernels run on
torch's current stream. These are inference kernels: they do not record an autograd graph, so they
refuse inputs that require grad while grad mode is on (TVNet trains through the torch twins).

The finite-difference kernels of the dual update are arguments (``kernels``): OpenCV's [-1, 1] by
default, or TVNet's trained ones, one pair of 2-tap kernels per iteration.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import EngineError
from . import BLOCK_1D, check_cuda_float, graphs, launch, launch_planes, load_kernel

SOURCE = "tvl1.cu"
# OpenCV's forward-difference and divergence kernels: (fk0, fk1, dk0, dk1).
CLASSICAL_KERNELS = (-1.0, 1.0, -1.0, 1.0)
# Median sizes with a kernel; the cupy backend refuses others (flowkit.flow.numerics).
MEDIAN_SIZES = (0, 1, 3, 5)


def _kernel(name: str, like: torch.Tensor):
    return load_kernel(name, SOURCE, device_id=like.device.index)


def _no_grad_inputs(name: str, *tensors: torch.Tensor) -> None:
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise EngineError(f"{name}: the CuPy kernels are not differentiable; use the torch twin "
                          "(backend='torch') to backpropagate, or call under torch.no_grad()")


def _expect(name: str, t: torch.Tensor, shape: tuple) -> None:
    if tuple(t.shape) != tuple(shape):
        raise EngineError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _expect_buffer(name: str, t: torch.Tensor, shape: tuple, dtype: torch.dtype,
                   like: torch.Tensor) -> None:
    """Raise :class:`EngineError` unless ``t`` is a contiguous ``dtype`` tensor of ``shape`` on the
    device of ``like``: :func:`flowkit.cuda.launch` hands the kernels a raw pointer, so an int64 or
    bool mask, a strided or a float64 buffer would be read or written as int32 / float32 rows."""
    if not isinstance(t, torch.Tensor):
        raise EngineError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype or not t.is_contiguous() or t.device != like.device:
        raise EngineError(f"{name} must be a contiguous {dtype} tensor on {like.device}, got "
                          f"{t.dtype} on {t.device} (contiguous={t.is_contiguous()})")
    _expect(name, t, shape)


def _overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the memory of two contiguous tensors overlaps."""
    if a.device != b.device or not a.numel() or not b.numel():
        return False
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


def _expect_out(name: str, out: torch.Tensor, shape: tuple, like: torch.Tensor,
                inputs: Sequence[torch.Tensor]) -> None:
    """``out`` is a contiguous float32 buffer of ``shape`` on ``like``'s device, sharing no memory
    with ``inputs`` (the kernels read neighbours of the pixel they write)."""
    _expect_buffer(name, out, shape, torch.float32, like)
    if any(_overlaps(out, t) for t in inputs):
        raise EngineError(f"{name} must not share memory with the inputs")


def _kernel_values(kernels) -> tuple[float, float, float, float]:
    """``(fk0, fk1, dk0, dk1)`` from None (OpenCV's), a 4-tuple of floats, or the torch twin's
    ``{"forward": (2,), "divergence": (2,)}`` dict (read back to the host: call it outside loops)."""
    if kernels is None:
        return CLASSICAL_KERNELS
    if isinstance(kernels, dict):
        fwd = [float(v) for v in kernels.get("forward", torch.tensor((-1.0, 1.0))).tolist()]
        div = [float(v) for v in kernels.get("divergence", torch.tensor((-1.0, 1.0))).tolist()]
        return (fwd[0], fwd[1], div[0], div[1])
    values = tuple(float(v) for v in kernels)
    if len(values) != 4:
        raise EngineError(f"kernels must be (fk0, fk1, dk0, dk1), got {kernels!r}")
    return values


def _launch_primal(u, p, grad, grad_sq, rho_c, u_out, error, active, lambda_theta, theta, k):
    b, _, h, w = u.shape
    launch_planes(_kernel("tvl1_primal", u), h, w, b,
                  (u, p, grad, grad_sq, rho_c, u_out, error, active, np.int32(h), np.int32(w),
                   np.float32(lambda_theta), np.float32(theta), np.float32(k[2]), np.float32(k[3])),
                  u.device)


def _launch_dual(u, p, p_out, active, tau_theta, k):
    b, _, h, w = u.shape
    launch_planes(_kernel("tvl1_dual", u), h, w, b,
                  (u, p, p_out, active, np.int32(h), np.int32(w), np.float32(tau_theta),
                   np.float32(k[0]), np.float32(k[1])), u.device)


def stop_rule(error: torch.Tensor, active: torch.Tensor, scaled_eps: float) -> None:
    """In place: ``active[b] = 0`` where ``active[b]`` and not ``error[b] > scaled_eps`` (a NaN
    error stops its pair, as in the torch twin), then ``error[:] = 0``. ``error`` ``(B,)`` float32
    and ``active`` ``(B,)`` int32, contiguous, on one CUDA device."""
    if not isinstance(error, torch.Tensor) or error.dim() != 1:
        raise EngineError(f"error must have shape (B,), got {getattr(error, 'shape', error)!r}")
    b = error.shape[0]
    _expect_buffer("error", error, (b,), torch.float32, error)
    _expect_buffer("active", active, (b,), torch.int32, error)
    if b:
        launch(_kernel("tvl1_stop_rule", error), ((b + BLOCK_1D[0] - 1) // BLOCK_1D[0], 1, 1),
               BLOCK_1D, (error, active, np.int32(b), np.float32(scaled_eps)), error.device)


def tvl1_iteration(u: torch.Tensor, p: torch.Tensor, grad_i1w: torch.Tensor, grad_sq: torch.Tensor,
                   rho_c: torch.Tensor, lambda_theta: float, theta: float, tau_theta: float, *,
                   inplace: bool = False, kernels=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One TV-L1 iteration and the per-pair squared update norm, as ``tvl1.iteration``.

    Two kernels (see ``tvl1.cu`` for why not one): ``tvl1_primal`` (thresholding + divergence +
    primal update + error reduction) and ``tvl1_dual`` (forward gradient + dual update).

    Args:
        u: flow ``(B, 2, H, W)``.
        p: dual variable ``(B, 2, 2, H, W)``.
        grad_i1w: ``(B, 2, H, W)``; grad_sq, rho_c: ``(B, 1, H, W)`` (from :func:`linearize`).
        lambda_theta, theta, tau_theta: lambda*theta, theta, tau/theta.
        inplace: update ``u`` and ``p`` in place and return them (they must already be contiguous
            float32 CUDA tensors); saves two allocations per iteration.
        kernels: finite-difference kernels (see :func:`_kernel_values`); OpenCV's by default.

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
    if u.numel() == 0:  # no pixel: an empty launch grid is an invalid configuration on a device
        return u_out, p_out, error
    k = _kernel_values(kernels)
    active = torch.ones(b, device=u.device, dtype=torch.int32)
    _launch_primal(u, p, grad_i1w, grad_sq, rho_c, u_out, error, active, lambda_theta, theta, k)
    _launch_dual(u_out, p, p_out, active, tau_theta, k)
    return u_out, p_out, error


def linearize(i0: torch.Tensor, i1_stack: torch.Tensor, u: torch.Tensor,
              out: Sequence[torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bicubic warp of I1 and its gradient to x + u (zeros outside) and the linearised data term,
    in one pass, as ``tvl1.linearize``.

    Args:
        i0: ``(B, 1, H, W)``; i1_stack: ``(B, 3, H, W)`` (I1, dI1/dx, dI1/dy); u: ``(B, 2, H, W)``.
        out: optional ``(grad_i1w, grad_sq, rho_c)`` contiguous float32 buffers to write into.

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
    if out is None:
        grad, grad_sq, rho_c = torch.empty_like(u), torch.empty_like(i0), torch.empty_like(i0)
    else:
        grad, grad_sq, rho_c = out
        for name, t, shape in (("grad_i1w", grad, u.shape), ("grad_sq", grad_sq, i0.shape),
                               ("rho_c", rho_c, i0.shape)):
            _expect_out(f"out {name}", t, shape, u, (i0, i1_stack, u))
        if _overlaps(grad, grad_sq) or _overlaps(grad, rho_c) or _overlaps(grad_sq, rho_c):
            raise EngineError("out: grad_i1w, grad_sq and rho_c must be separate buffers")
    if u.numel():
        launch_planes(_kernel("tvl1_linearize", u), h, w, b,
                      (i0, i1_stack, u, grad, grad_sq, rho_c, np.int32(h), np.int32(w)), u.device)
    return grad, grad_sq, rho_c


def median_filter(x: torch.Tensor, ksize: int = 5, *, active: torch.Tensor | None = None,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Median over ``ksize x ksize`` (1, 3 or 5) with a replicated border, as
    ``ops.median_filter_torch``. Shape ``(B, C, H, W)`` -> ``(B, C, H, W)`` float32.

    ``active`` ``(B,)`` int32 on ``x``'s device: pairs whose entry is 0 are copied unchanged.
    ``out``: a contiguous float32 ``(B, C, H, W)`` buffer to write into, not sharing memory with
    ``x`` (the window reads neighbours).
    """
    if ksize == 1:
        return x
    if ksize not in (3, 5):
        raise EngineError(f"median_filter (cupy): ksize must be 1, 3 or 5, got {ksize}")
    _no_grad_inputs("median_filter", x)
    (x,) = check_cuda_float("median_filter", x)
    if x.dim() != 4:
        raise EngineError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
    b, c, h, w = x.shape
    if active is not None:
        _expect_buffer("active", active, (b,), torch.int32, x)
    if out is None:
        out = torch.empty_like(x)
    else:
        _expect_out("out", out, tuple(x.shape), x, (x,))
    if x.numel():
        launch_planes(_kernel(f"median_filter_{ksize}", x), h, w, b * c,
                      (x, out, active, np.int32(c), np.int32(h), np.int32(w)), x.device)
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
    if h < 1 or w < 1:  # no source pixel to read (the torch twin raises too)
        raise EngineError(f"resize_bilinear: cannot resample an empty image, got {tuple(x.shape)}")
    sy, sx = scale if scale is not None else (h / oh, w / ow)
    out = x.new_empty(b, c, oh, ow)
    if b * c:
        launch_planes(_kernel("resize_bilinear", x), oh, ow, b * c,
                      (x, out, np.int32(h), np.int32(w), np.int32(oh), np.int32(ow),
                       np.float64(sy), np.float64(sx)), x.device)
    return out


# ----------------------------------------------------------------------- the warp's iterations

class _Buffers:
    """Static device buffers of one (B, H, W) problem: what a captured graph points into."""

    def __init__(self, batch: int, h: int, w: int, device):
        f32 = dict(device=device, dtype=torch.float32)
        self.u = torch.empty(batch, 2, h, w, **f32)
        self.p = torch.empty(batch, 2, 2, h, w, **f32)
        self.grad = torch.empty(batch, 2, h, w, **f32)
        self.grad_sq = torch.empty(batch, 1, h, w, **f32)
        self.rho_c = torch.empty(batch, 1, h, w, **f32)
        self.median = torch.empty(batch, 2, h, w, **f32)
        self.error = torch.zeros(batch, **f32)
        self.active = torch.ones(batch, device=device, dtype=torch.int32)
        self.graphs: dict = {}


class WarpSolver:
    """The iterations of one warp, on the device, without a host round trip per iteration.

    Per outer iteration, one fixed launch sequence: the masked median (into a scratch buffer), then
    ``inner`` x (``tvl1_primal``, ``tvl1_dual``, ``tvl1_stop_rule``); the first primal pass reads the
    median's output and writes u, the others run in place. Finished pairs are frozen by the
    ``active`` mask inside the kernels, so the sequence never changes and is captured once per
    problem size as a CUDA graph (:mod:`flowkit.cuda.graphs`). The host reads ``active`` only
    between outer iterations (to stop when every pair is done), i.e. ``outer`` syncs per warp, none
    with a fixed schedule.

    Static buffers: ``48 * B * H * W`` bytes per problem size ``(B, H, W)``, so ~2.5x that of the
    finest level for a 5-level pyramid (1080p at B=64: ~16 GB). They are kept, with the graphs
    captured on them, for the sizes of the last ``batch_sizes`` batch sizes ``B`` only (at most
    ``cache_size`` sizes in all): a stream of full batches and each video's shorter tail batch then
    replays its graphs, while every other batch size, which would hold a whole pyramid of buffers
    for nothing, is dropped with its graphs (a graph points into its buffers, so it must not outlive
    them) when a new batch size arrives.
    """

    def __init__(self, use_graphs: bool = True, cache_size: int = 16, batch_sizes: int = 2):
        self.use_graphs = use_graphs
        self.cache_size = cache_size
        self.batch_sizes = batch_sizes
        self._buffers: dict[tuple, _Buffers] = {}

    def buffers(self, batch: int, h: int, w: int, device) -> _Buffers:
        key = (str(device), batch, h, w)
        bufs = self._buffers.pop(key, None)
        if bufs is None:
            recent = []  # (device, batch) of the kept buffers, most recently used first
            for k in reversed(self._buffers):
                if k[:2] != key[:2] and k[:2] not in recent:
                    recent.append(k[:2])
            keep = set(recent[:self.batch_sizes - 1])
            for k in [k for k in self._buffers if k[:2] != key[:2] and k[:2] not in keep]:
                del self._buffers[k]
            while len(self._buffers) >= self.cache_size:
                self._buffers.pop(next(iter(self._buffers)))
            bufs = _Buffers(batch, h, w, device)
        self._buffers[key] = bufs  # most recently used last
        return bufs

    def held_bytes(self) -> int:
        """Bytes of the static buffers kept for later batches."""
        return sum(t.numel() * t.element_size() for bufs in self._buffers.values()
                   for t in (bufs.u, bufs.p, bufs.grad, bufs.grad_sq, bufs.rho_c, bufs.median,
                             bufs.error, bufs.active))

    def linearize(self, i0, i1_stack, u):
        """:func:`linearize` into the static buffers of this problem size (no allocation)."""
        b, _, h, w = u.shape
        bufs = self.buffers(b, h, w, u.device)
        return linearize(i0, i1_stack, u, out=(bufs.grad, bufs.grad_sq, bufs.rho_c))

    def __call__(self, u: torch.Tensor, p: torch.Tensor, lin: Sequence[torch.Tensor],
                 schedule) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the warp's iterations from ``(u, p)`` with the linearisation ``lin`` and ``schedule``
        (a :class:`flowkit.flow.primal_dual.Schedule`).

        Returns new ``(u, p)`` tensors (copies: the buffers are reused by the next call).
        """
        _no_grad_inputs("tvl1 warp", u, p, *lin)
        u, p, *lin = check_cuda_float("tvl1 warp", u, p, *lin)
        b, _, h, w = u.shape
        if u.numel() == 0:
            return u.clone(), p.clone()
        if schedule.median not in MEDIAN_SIZES:
            raise EngineError(f"tvl1 (cupy): median_filtering must be one of {MEDIAN_SIZES}, got "
                              f"{schedule.median}")
        bufs = self.buffers(b, h, w, u.device)
        for dst, src in zip((bufs.u, bufs.p, bufs.grad, bufs.grad_sq, bufs.rho_c), (u, p, *lin)):
            if dst.data_ptr() != src.data_ptr():
                dst.copy_(src)
        bufs.active.fill_(1)
        bufs.error.zero_()
        kernels = (None if schedule.kernels is None
                   else tuple(_kernel_values(k) for k in schedule.kernels))
        for outer in range(schedule.outer):
            step = None if kernels is None else kernels[outer * schedule.inner:
                                                        (outer + 1) * schedule.inner]
            self._outer_step(bufs, schedule, step)()
            if (schedule.scaled_eps is not None and outer + 1 < schedule.outer
                    and not bool(bufs.active.any())):
                break
        return bufs.u.clone(), bufs.p.clone()

    def _outer_step(self, bufs: _Buffers, schedule, kernels):
        """The replay of one outer iteration whose inner iterations use ``kernels`` (a tuple of
        ``(fk0, fk1, dk0, dk1)``, or None for OpenCV's)."""
        key = (schedule.inner, schedule.median, schedule.lambda_theta, schedule.theta,
               schedule.tau_theta, schedule.scaled_eps, kernels)
        step = bufs.graphs.get(key)
        if step is None:
            def record():
                _record_outer_iteration(bufs, schedule, kernels)
            for name in ("tvl1_primal", "tvl1_dual", "tvl1_stop_rule",
                         f"median_filter_{schedule.median}" if schedule.median > 1 else None):
                if name:
                    # Compiled and its function loaded (load_kernel does both) before any
                    # capture: a first load inside one is illegal on older drivers.
                    _kernel(name, bufs.u)
            step = graphs.capture(record, bufs.u.device) if self.use_graphs else record
            bufs.graphs[key] = step
        return step


def _record_outer_iteration(bufs: _Buffers, schedule, kernels) -> None:
    """Issue the launches of one outer iteration on the static buffers (see :class:`WarpSolver`)."""
    u_in = bufs.u
    if schedule.median > 1:
        median_filter(bufs.u, schedule.median, active=bufs.active, out=bufs.median)
        u_in = bufs.median
    for i in range(schedule.inner):
        k = CLASSICAL_KERNELS if kernels is None else kernels[i]
        _launch_primal(u_in, bufs.p, bufs.grad, bufs.grad_sq, bufs.rho_c, bufs.u, bufs.error,
                       bufs.active, schedule.lambda_theta, schedule.theta, k)
        _launch_dual(bufs.u, bufs.p, bufs.p, bufs.active, schedule.tau_theta, k)
        if schedule.scaled_eps is not None:  # a fixed schedule never reads the error sums
            stop_rule(bufs.error, bufs.active, schedule.scaled_eps)
        u_in = bufs.u


__all__ = ["CLASSICAL_KERNELS", "MEDIAN_SIZES", "tvl1_iteration", "linearize", "median_filter",
           "resize_bilinear", "stop_rule", "WarpSolver"]
