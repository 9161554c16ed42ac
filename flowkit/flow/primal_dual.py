"""The TV-L1 primal-dual iteration shared by the TV-L1 engine and TVNet (torch numerics).

- :func:`tvl1_step`: one iteration (thresholding, primal update, dual update), with optional
  finite-difference kernels (TVNet's trainable relaxation);
- :func:`iteration`: the step plus each pair's squared update (the epsilon rule's error), eager or
  compiled (:func:`get_iteration`);
- :class:`Schedule` and :func:`warp_iterations`: all iterations of one warp, OpenCV's epsilon rule
  included (per pair, evaluated on the device, read every ``sync_every`` iterations);
- :func:`linearize`: the data term at x + u; :func:`coarse_to_fine`: the pyramid loop.

The CuPy kernels (:mod:`flowkit.cuda.tvl1`) are twins of these; :mod:`flowkit.flow.numerics` hands
an engine one set or the other. Conventions: docs/architecture.md.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..errors import EngineError
from . import ops

# Guards the division by |grad I1|^2 where the image is flat (TVNet's eps; OpenCV branches instead).
_EPS_DIV = 1e-12


def tvl1_step(u: torch.Tensor, p: torch.Tensor, grad_i1w: torch.Tensor, grad_sq: torch.Tensor,
              rho_c: torch.Tensor, *, lambda_theta: float, theta: float, tau_theta: float,
              kernels: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One TV-L1 iteration: thresholding (v), primal update (u), dual update (p).

    Args:
        u: flow ``(B, 2, H, W)``.
        p: dual variable ``(B, 2, 2, H, W)``: ``p[:, c, 0]`` / ``p[:, c, 1]`` are the x / y
            components for flow channel c.
        grad_i1w: gradient of the warped second image ``(B, 2, H, W)``.
        grad_sq: ``|grad_i1w|^2``, ``(B, 1, H, W)``.
        rho_c: constant part of the linearised residual, ``I1w - grad_i1w . u0 - I0``, ``(B, 1, H, W)``.
        lambda_theta, theta, tau_theta: lambda*theta, theta, tau/theta.
        kernels: optional ``{"forward": (2,), "divergence": (2,)}`` finite-difference kernels
            (TVNet's trainable relaxation); the defaults are [-1, 1].

    Returns:
        ``(u, p)`` after the iteration, new tensors.
    """
    kernels = kernels or {}
    # Thresholding: v = u + clamp(-rho / |grad|^2, -lt, lt) * grad  (the three cases of TH).
    rho = rho_c + (grad_i1w * u).sum(1, keepdim=True)
    step = (-rho / grad_sq.clamp_min(_EPS_DIV)).clamp(-lambda_theta, lambda_theta)
    v = u + step * grad_i1w
    u = v + theta * ops.divergence(p[:, :, 0], p[:, :, 1], kernels.get("divergence"))
    ux, uy = ops.forward_gradient(u, kernels.get("forward"))
    # The clamp leaves the value unchanged (1 + tau_theta * 1e-19 rounds to 1) but keeps the
    # gradient finite where grad u = 0, so that TVNet can backpropagate through this iteration.
    norm = 1.0 + tau_theta * torch.sqrt((ux * ux + uy * uy).clamp_min(torch.finfo(ux.dtype).tiny))
    p = (p + tau_theta * torch.stack((ux, uy), dim=2)) / norm.unsqueeze(2)
    return u, p


def iteration(u, p, grad_i1w, grad_sq, rho_c, lambda_theta: float, theta: float, tau_theta: float):
    """:func:`tvl1_step` plus the squared update norm per pair (the epsilon rule's error)."""
    u_new, p_new = tvl1_step(u, p, grad_i1w, grad_sq, rho_c, lambda_theta=lambda_theta, theta=theta,
                             tau_theta=tau_theta)
    return u_new, p_new, (u_new - u).square().sum(dim=(1, 2, 3))


_compiled_iteration = None


def get_iteration(compile: bool):
    """The eager iteration, or one compiled by torch.compile (fuses ~30 elementwise passes into a
    few loops; falls back to eager with a warning where no compiler is available).

    A batch shrunk to one running pair gets a graph of its own (torch.compile specialises size-1
    dimensions; a few seconds, once per process). It pays: the slowest pair of a batch runs the
    last iterations of every warp alone, most of a batch's iterations at OpenCV's defaults, and
    one 256x340 pair iterates in 0.9 ms compiled against 3.3 ms eagerly."""
    global _compiled_iteration
    if not compile:
        return iteration
    if _compiled_iteration is None:
        compiled = torch.compile(iteration, dynamic=True)

        def guarded(*args, **kwargs):
            global _compiled_iteration
            if _compiled_iteration is not guarded:  # compiling failed once: engines holding
                return iteration(*args, **kwargs)  # this function must not retry it each step
            try:
                return compiled(*args, **kwargs)
            except Exception as exc:  # no C++ compiler, unsupported platform, ...
                warnings.warn(f"tvl1: torch.compile failed ({type(exc).__name__}: {exc}); "
                              "running eagerly", RuntimeWarning, stacklevel=2)
                _compiled_iteration = iteration
                return iteration(*args, **kwargs)

        _compiled_iteration = guarded
    return _compiled_iteration


@dataclass(frozen=True)
class Schedule:
    """The iterations of one warp: ``outer`` x (median of u, then ``inner`` iterations).

    Attributes:
        outer, inner: OpenCV's outer and inner iteration counts.
        median: median filter size applied to u before each outer iteration (0 or 1: none).
        lambda_theta, theta, tau_theta: lambda*theta, theta, tau/theta.
        scaled_eps: the epsilon rule's threshold ``epsilon^2 * H * W`` on ``sum((u' - u)^2)``, or
            None for a fixed schedule (every iteration runs, as in TVNet).
        kernels: None (OpenCV's [-1, 1] finite differences), or one entry per iteration of the warp
            (``outer * inner``): ``{"forward": (2,), "divergence": (2,)}`` tensors on the torch
            backend (trainable, TVNet), ``(fk0, fk1, dk0, dk1)`` floats on the cupy backend.
    """
    outer: int
    inner: int
    median: int
    lambda_theta: float
    theta: float
    tau_theta: float
    scaled_eps: float | None = None
    kernels: tuple | None = None


def warp_iterations(u: torch.Tensor, p: torch.Tensor, lin: tuple[torch.Tensor, ...],
                    schedule: Schedule, *, step=iteration, sync_every: int = 1
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """All iterations of one warp from ``(u, p)`` with the linearisation ``lin`` (:func:`linearize`).

    With an epsilon rule, each pair stops at the first iteration whose update is <= epsilon (that
    iteration applied), exactly as OpenCV's ``DualTVL1`` run on the pair alone. Between host reads,
    a stopped pair is frozen by a mask (``torch.where``); every ``sync_every`` iterations the mask
    is read, stopped pairs are written back and leave the batch. ``sync_every=1`` reads every
    iteration (free on the CPU, and no wasted work); larger values save host round trips on CUDA.
    The flows do not depend on ``sync_every``.

    Args:
        u: ``(B, 2, H, W)``; p: ``(B, 2, 2, H, W)``; lin: ``(grad_i1w, grad_sq, rho_c)``.
        schedule: :class:`Schedule`.
        step: the iteration, :func:`iteration` or :func:`get_iteration`'s compiled one (used where
            ``schedule.kernels`` is None).
        sync_every: iterations between reads of the stopping mask.

    Returns:
        New ``(u, p)``. Differentiable with a fixed schedule (TVNet), not with the epsilon rule.
    """
    coeffs = dict(lambda_theta=schedule.lambda_theta, theta=schedule.theta,
                  tau_theta=schedule.tau_theta)
    if schedule.scaled_eps is None:
        n = 0
        for _ in range(schedule.outer):
            if schedule.median > 1:
                u = ops.median_filter(u, schedule.median)
            for _ in range(schedule.inner):
                if schedule.kernels is None:
                    u, p, _ = step(u, p, *lin, **coeffs)
                else:
                    u, p = tvl1_step(u, p, *lin, kernels=schedule.kernels[n], **coeffs)
                n += 1
        return u, p
    if schedule.kernels is not None:
        raise EngineError("tvl1: per-iteration kernels need a fixed schedule (scaled_eps=None)")
    return _until_converged(u, p, lin, schedule, step, coeffs, max(1, int(sync_every)))


def _until_converged(u, p, lin, schedule: Schedule, step, coeffs, sync_every: int):
    """:func:`warp_iterations` with the epsilon rule."""
    idx = torch.arange(u.shape[0], device=u.device)
    out_u, out_p = u.clone(), p.clone()
    state = [u, p, *lin]
    active = None  # None: every pair in `state` still iterates
    n = 0
    for _ in range(schedule.outer):
        if schedule.median > 1:
            filtered = ops.median_filter(state[0], schedule.median)
            state[0] = filtered if active is None else torch.where(_bcast(active, 4), filtered, state[0])
        for _ in range(schedule.inner):
            u_new, p_new, error = step(*state, **coeffs)
            running = error > schedule.scaled_eps
            if active is None:
                state[0], state[1], active = u_new, p_new, running
            else:
                state[0] = torch.where(_bcast(active, 4), u_new, state[0])
                state[1] = torch.where(_bcast(active, 5), p_new, state[1])
                active = active & running
            n += 1
            if n % sync_every == 0:
                done = ~active
                if bool(done.any()):
                    out_u[idx[done]], out_p[idx[done]] = state[0][done], state[1][done]
                    idx = idx[active]
                    state = [t[active] for t in state]
                active = None
                if idx.numel() == 0:
                    return out_u, out_p
    if idx.numel():
        out_u[idx], out_p[idx] = state[0], state[1]
    return out_u, out_p


def _bcast(mask: torch.Tensor, dims: int) -> torch.Tensor:
    return mask.view(-1, *([1] * (dims - 1)))


def linearize(i0: torch.Tensor, i1_stack: torch.Tensor, u: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp I1 and its gradient to x + u and linearise the data term around u.

    Args:
        i0: ``(B, 1, H, W)``.
        i1_stack: ``(B, 3, H, W)``: I1 and its x / y central-difference gradient.
        u: ``(B, 2, H, W)``.

    Returns:
        ``grad_i1w (B, 2, H, W)``, ``grad_sq (B, 1, H, W)``, ``rho_c (B, 1, H, W)``.
    """
    warped = ops.warp(i1_stack, u, mode="bicubic", padding_mode="zeros")
    # Contiguous: compiled iterations guard on strides, and a view of the 3-channel stack would not
    # match the compacted batches, recompiling the iteration again and again.
    i1w, grad_i1w = warped[:, :1], warped[:, 1:].contiguous()
    grad_sq = (grad_i1w * grad_i1w).sum(1, keepdim=True)
    rho_c = i1w - (grad_i1w * u).sum(1, keepdim=True) - i0
    return grad_i1w, grad_sq, rho_c


def coarse_to_fine(i0: torch.Tensor, i1: torch.Tensor, nscales: int, scale_step: float,
                   solve_level, u_init: torch.Tensor | None = None,
                   resize=ops.resize_bilinear) -> torch.Tensor:
    """The pyramid loop shared by TV-L1 and TVNet.

    Builds the OpenCV-style pyramid (:func:`ops.pyramid_sizes`, :func:`ops.image_pyramid`), starts
    from zero flow (plus ``u_init``) on the coarsest level and calls
    ``solve_level(level, i0_level, i1_level, u) -> u`` from coarse (``len(sizes) - 1``) to fine
    (0), upsampling the flow bilinearly and dividing it by ``scale_step`` in between.

    Args:
        i0, i1: ``(B, 1, H, W)`` float; the flow has their dtype.
        u_init: optional initial flow broadcastable to ``(B, 2, h, w)`` at the coarsest level.
        resize: the OpenCV-semantics bilinear resize of the backend (:func:`ops.resize_bilinear`).
    """
    h, w = i0.shape[-2:]
    sizes = ops.pyramid_sizes(h, w, nscales, scale_step)
    pyr0 = ops.image_pyramid(i0, sizes, scale_step, resize)
    pyr1 = ops.image_pyramid(i1, sizes, scale_step, resize)
    u = i0.new_zeros(i0.shape[0], 2, *sizes[-1])
    if u_init is not None:
        u = u + u_init
    for level in range(len(sizes) - 1, -1, -1):
        u = solve_level(level, pyr0[level], pyr1[level], u)
        if level:
            u = resize(u, sizes[level - 1]) / scale_step
    return u


__all__ = ["tvl1_step", "iteration", "get_iteration", "Schedule", "warp_iterations", "linearize",
           "coarse_to_fine"]
