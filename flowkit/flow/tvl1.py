"""TV-L1 optical flow (Zach, Pock & Bischof 2007), the dual scheme of OpenCV's ``DualTVL1``.

Batched over frame pairs, on any torch device. Parameters, defaults, pyramid, warping, stopping rule
and median filtering reproduce ``cv2.optflow.DualTVL1OpticalFlow`` (docs/architecture.md,
"Reference facts"):

- an image pyramid built by repeated bilinear ``resize`` by ``scale_step``, stopping before a level
  under 16 pixels; flow starts at zero on the coarsest level, is upsampled bilinearly and divided by
  ``scale_step`` on the way down;
- at every level the dual variable p restarts at zero; each of ``warps`` warps resamples I1 and its
  central-difference gradient at x + u (bicubic, zero outside) and linearises the data term;
- up to ``outer_iterations`` x ``inner_iterations`` iterations of thresholding / primal / dual
  updates, a ``median_filtering`` median of u before each outer iteration, and the epsilon rule:
  a pair stops iterating in the current warp once sum((u_new - u)^2) <= epsilon^2 * H * W.

Each pair stops on its own, as if run alone. The rule is evaluated on the device: finished pairs
are frozen by a per-pair mask and leave the batch every ``sync_every`` iterations (every iteration on
the CPU, where reading the mask is free; once per outer iteration on CUDA, where each read is a host
round trip). :func:`tvl1_step` is the whole iteration in one function; TVNet unrolls the same
function. The hot loops run on the numerics of the engine's backend (:mod:`flowkit.flow.numerics`):
these torch functions, or their CuPy kernels (:mod:`flowkit.cuda.tvl1`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..errors import EngineError
from . import ops
from .numerics import check_median
from .numerics import create as create_numerics
from .base import FlowEngine
from .primal_dual import (Schedule, coarse_to_fine, get_iteration, iteration, linearize,
                          tvl1_step, warp_iterations)
from .registry import register_engine

@dataclass(frozen=True)
class TVL1Params:
    """OpenCV ``DualTVL1OpticalFlow`` parameters with OpenCV's defaults.

    ``epsilon`` stopping applies only when ``early_stop`` is true; ``early_stop=False`` runs the full
    fixed schedule (every warp does ``outer_iterations * inner_iterations`` iterations), which is
    what an unrolled network (TVNet) computes.
    """
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    nscales: int = 5
    warps: int = 5
    epsilon: float = 0.01
    inner_iterations: int = 30
    outer_iterations: int = 10
    scale_step: float = 0.8
    median_filtering: int = 5
    early_stop: bool = True

    def __post_init__(self):
        positive = {"tau": self.tau, "lambda_": self.lambda_, "theta": self.theta,
                    "nscales": self.nscales, "warps": self.warps,
                    "inner_iterations": self.inner_iterations,
                    "outer_iterations": self.outer_iterations}
        for key, value in positive.items():
            if not value > 0:
                raise EngineError(f"tvl1: {key} must be positive, got {value}")
        if not 0 < self.scale_step < 1:
            raise EngineError(f"tvl1: scale_step must be in (0, 1), got {self.scale_step}")
        if self.epsilon < 0:
            raise EngineError(f"tvl1: epsilon must be >= 0, got {self.epsilon}")
        # A negative size used to run as "no median" and be recorded as given: refused instead.
        if self.median_filtering < 0 or (self.median_filtering > 1
                                         and self.median_filtering % 2 == 0):
            raise EngineError(f"tvl1: median_filtering must be an odd size (or 0/1 for none), got "
                              f"{self.median_filtering}")


def solve_level(i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor, prm: TVL1Params,
                numerics) -> torch.Tensor:
    """Run all warps of one pyramid level on ``numerics`` (:mod:`flowkit.flow.numerics`); each pair
    stops on its own epsilon rule."""
    _, _, h, w = i0.shape
    gx, gy = ops.centered_gradient(i1)
    i1_stack = torch.cat((i1, gx, gy), dim=1)
    p = u.new_zeros(u.shape[0], 2, 2, h, w)
    schedule = Schedule(outer=prm.outer_iterations, inner=prm.inner_iterations,
                        median=prm.median_filtering, lambda_theta=prm.lambda_ * prm.theta,
                        theta=prm.theta, tau_theta=prm.tau / prm.theta,
                        scaled_eps=prm.epsilon * prm.epsilon * h * w if prm.early_stop else None)
    for _ in range(prm.warps):
        lin = numerics.linearize(i0, i1_stack, u)
        u, p = numerics.warp_iterations(u, p, lin, schedule)
    return u


def tvl1_flow(i0: torch.Tensor, i1: torch.Tensor, params: TVL1Params | None = None,
              numerics=None) -> torch.Tensor:
    """TV-L1 flow from ``i0`` to ``i1``.

    Args:
        i0, i1: gray images ``(B, 1, H, W)``, float, intensities in [0, 255].
        params: :class:`TVL1Params` (OpenCV defaults when omitted).
        numerics: the backend's numerics (:func:`flowkit.flow.numerics.create`, where
            ``compile=True`` fuses the iteration with ``torch.compile``); by default torch's for
            the device of ``i0``.

    Returns:
        Flow ``(B, 2, H, W)`` float32, pixels.
    """
    prm = params or TVL1Params()
    ops.check_shape(i0, "BCHW", "i0")
    h, w = i0.shape[-2:]
    if h < 3 or w < 3:
        raise EngineError(f"tvl1 needs frames of at least 3x3 pixels, got {h}x{w}")
    if numerics is None:
        numerics = create_numerics("torch", i0.device)
    return coarse_to_fine(i0.float(), i1.float(), prm.nscales, prm.scale_step,
                          lambda level, a, b, u: solve_level(a, b, u, prm, numerics),
                          resize=numerics.resize_bilinear)


@register_engine
class TVL1(FlowEngine):
    """TV-L1 optical flow engine (``create_engine("tvl1", **TVL1Params fields)`` or
    ``TVL1(device, TVL1Params(...))``).

    RGB frames are converted to luma first (OpenCV's RGB2GRAY weights), as extraction pipelines
    feeding OpenCV do. Execution options, not parameters of the result (so not in ``params``):
    ``backend`` (``"auto"``: the CuPy kernels on CUDA when CuPy imports, else torch; see
    :mod:`flowkit.flow.numerics`) and ``compile=True`` (torch backend: fuse the iteration with
    torch.compile).
    """

    name = "tvl1"
    version = "1"
    Params = TVL1Params
    bytes_per_pixel = 300  # measured: 0.51 GB for one 1080x1920 pair, 0.97 GB for two (RESULTS.md)

    def __init__(self, device="cpu", params: TVL1Params | None = None, *, compile: bool = False,
                 backend: str = "auto", **fields):
        super().__init__(device)
        self.compile = compile
        self.config = self.make_params(params, fields)
        self.numerics = check_median(create_numerics(backend, self.device, compile=compile),
                                     self.config.median_filtering, backend)
        self.backend = self.numerics.backend

    @property
    def params(self) -> dict:
        return asdict(self.config)

    def forward(self, frames0: torch.Tensor, frames1: torch.Tensor) -> torch.Tensor:
        return tvl1_flow(ops.to_gray(frames0), ops.to_gray(frames1), self.config,
                         numerics=self.numerics)


# The primal-dual core lives in flowkit.flow.primal_dual; its names are re-exported here, where
# users of the TV-L1 engine look for them.
__all__ = ["TVL1Params", "TVL1", "tvl1_flow", "solve_level", "Schedule", "coarse_to_fine",
           "get_iteration", "iteration", "linearize", "tvl1_step", "warp_iterations"]
