"""TVNet (Fan et al., "End-to-End Learning of Motion Representation for Video Understanding", CVPR 2018).

TVNet-S-W-I unrolls TV-L1 over S pyramid scales, W warps per scale and I iterations per warp, and
makes the fixed parts of the algorithm trainable. It runs the *same* iteration as the TV-L1 engine
(:func:`flowkit.flow.tvl1.tvl1_step`, :func:`~flowkit.flow.tvl1.linearize`,
:func:`~flowkit.flow.tvl1.coarse_to_fine`); only the kernels it passes differ once trained. So an
untrained TVNet *is* TV-L1 with a fixed schedule: ``TVL1Params(nscales=S, warps=W,
inner_iterations=I, outer_iterations=1, median_filtering=0, early_stop=False, scale_step=zfactor)``
(``tests/test_tvnet.py`` checks this on real images).

Trainable relaxations (``nn.Parameter``), initialised to the classical values:

- ``u0`` ``(2,)``: a constant flow added to the zero initial flow at the coarsest level used;
- ``grad_kernels`` ``(S, W, 3)``: the central-difference kernel of I1's gradient, [-0.5, 0, 0.5].
  The image gradient is computed once per warp (it is then warped to x + u), so this kernel is per
  (scale, warp); there is nothing per iteration to apply it to;
- ``forward_kernels`` / ``divergence_kernels`` ``(S, W, I, 2)``: the forward-difference and
  divergence kernels of the dual update, [-1, 1], per (scale, warp, iteration).

One kernel serves both the x and the y direction (as :mod:`flowkit.flow.ops` applies it). Scale index
0 is the finest level. Deviations from the official code, and why:

- the pyramid is flowkit's (OpenCV-style bilinear ``resize`` by ``zfactor`` per level, stopping before
  a level under 16 px), not the official code's own resampling, so that the equality with TV-L1 above
  holds; on small frames fewer than S levels may exist, and the coarser levels' kernels then go unused;
- intensities are used as given, in [0, 255] (the engine converts RGB to luma like the TV-L1 engine),
  without the official code's per-pair min-max normalisation, again so that the untrained network is
  exactly TV-L1 (lambda = 0.15 is calibrated for that range);
- the division by |grad I1|^2 is guarded by ``clamp_min(1e-12)`` and the norm of the dual update by a
  clamp at the smallest normal float, instead of adding 1e-12: the same guard, with no change to the
  classical result.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from .. import checkpoints
from ..errors import EngineError
from . import numerics, ops, primal_dual, tvl1
from .base import FlowEngine, check_intensities
from .params import weights_identity
from .registry import register_engine

TRAIN_HINT = "train them with `flowkit train-flow tvnet --out CKPT`"
# Guards |.| in the flow loss (TVNet's eps inside sqrt).
_EPS_NORM = 1e-12


@dataclass(frozen=True)
class TVNetConfig:
    """Architecture of a TVNet: what a checkpoint must match. Defaults are the official code's."""

    scales: int = 5
    warps: int = 5
    iterations: int = 50
    tau: float = 0.25
    lambda_: float = 0.15
    theta: float = 0.3
    zfactor: float = 0.5

    def __post_init__(self):
        for key in ("scales", "warps", "iterations"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EngineError(f"tvnet: {key} must be a positive integer, got {value!r}")
        for key in ("tau", "lambda_", "theta"):
            if not getattr(self, key) > 0:
                raise EngineError(f"tvnet: {key} must be positive, got {getattr(self, key)!r}")
        if not 0 < self.zfactor < 1:
            raise EngineError(f"tvnet: zfactor must be in (0, 1), got {self.zfactor!r}")

    def tvl1_params(self) -> tvl1.TVL1Params:
        """The fixed-schedule TV-L1 parameters that an untrained TVNet of this config equals."""
        return tvl1.TVL1Params(tau=self.tau, lambda_=self.lambda_, theta=self.theta,
                               nscales=self.scales, warps=self.warps,
                               inner_iterations=self.iterations, outer_iterations=1,
                               median_filtering=0, early_stop=False, scale_step=self.zfactor)


class TVNet(nn.Module):
    """TVNet-S-W-I: unrolled, trainable TV-L1 (see the module docstring).

    Example::

        net = TVNet(scales=1, warps=1, iterations=50)        # the paper's TVNet-50
        flow = net(i0, i1)                                   # differentiable in i0, i1 and the kernels

    Shape:
        Input: ``i0``, ``i1`` ``(B, 1, H, W)`` gray, intensities in [0, 255], H, W >= 3.
        Output: flow ``(B, 2, H, W)`` in pixels, in the inputs' float dtype.

    ``forward`` refuses float frames that look like [0, 1] ones (largest value in (0, 1]) or hold
    NaN, as the engine does (:func:`flowkit.flow.base.check_intensities`): lambda is tuned for
    [0, 255], and [0, 1] frames give near-zero flow. The check reads two numbers per frame tensor
    from the device once per call; ``check=False`` skips it for frames known to be [0, 255] (the
    engine, which checked them already).
    """

    def __init__(self, scales: int = 5, warps: int = 5, iterations: int = 50, tau: float = 0.25,
                 lambda_: float = 0.15, theta: float = 0.3, zfactor: float = 0.5):
        super().__init__()
        self.config = TVNetConfig(scales=scales, warps=warps, iterations=iterations, tau=tau,
                                  lambda_=lambda_, theta=theta, zfactor=zfactor)
        grad = torch.tensor([-0.5, 0.0, 0.5])
        diff = torch.tensor([-1.0, 1.0])
        self.u0 = nn.Parameter(torch.zeros(2))
        self.grad_kernels = nn.Parameter(grad.repeat(scales, warps, 1))
        self.forward_kernels = nn.Parameter(diff.repeat(scales, warps, iterations, 1))
        self.divergence_kernels = nn.Parameter(diff.repeat(scales, warps, iterations, 1))
        self.numerics = None  # torch's, for the inputs' device (set_numerics for another backend)
        self._kernel_table = None

    def set_numerics(self, numerics) -> "TVNet":
        """Compute with ``numerics`` (:func:`flowkit.flow.numerics.create`) from now on.

        With the cupy backend (inference only) the finite-difference kernels are read once, here,
        into the launch arguments: set the numerics again after changing the weights.
        """
        self.numerics = numerics
        self._kernel_table = None
        if numerics is not None and numerics.backend == "cupy":
            fwd = self.forward_kernels.detach().cpu().tolist()
            div = self.divergence_kernels.detach().cpu().tolist()
            self._kernel_table = [[tuple((*f, *d) for f, d in zip(fwd[s][w], div[s][w]))
                                   for w in range(self.config.warps)]
                                  for s in range(self.config.scales)]
        return self

    def forward(self, i0: torch.Tensor, i1: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        ops.check_shape(i0, "BCHW", "i0")
        ops.check_shape(i1, "BCHW", "i1")
        if i0.shape != i1.shape or i0.shape[1] != 1:
            raise EngineError(f"tvnet takes two gray images (B, 1, H, W) of one shape, got "
                              f"{tuple(i0.shape)} and {tuple(i1.shape)}")
        if check:  # once per call, not per iteration: each check waits for the device
            check_intensities(i0, "i0")
            check_intensities(i1, "i1")
        h, w = i0.shape[-2:]
        if h < 3 or w < 3:
            raise EngineError(f"tvnet needs frames of at least 3x3 pixels, got {h}x{w}")
        dtype = i0.dtype if i0.is_floating_point() else torch.float32
        cfg = self.config
        nx = self.numerics or numerics.create("torch", i0.device)
        return primal_dual.coarse_to_fine(i0.to(dtype), i1.to(dtype), cfg.scales, cfg.zfactor,
                                   functools.partial(self._solve_level, nx),
                                   u_init=self.u0.to(dtype).view(1, 2, 1, 1),
                                   resize=nx.resize_bilinear)

    def _solve_level(self, nx, level: int, i0: torch.Tensor, i1: torch.Tensor, u: torch.Tensor
                     ) -> torch.Tensor:
        """All warps and iterations of pyramid level ``level`` (0 = finest), no early stopping."""
        cfg = self.config
        p = u.new_zeros(u.shape[0], 2, 2, *u.shape[-2:])
        for warp in range(cfg.warps):
            gx, gy = ops.centered_gradient(i1, self.grad_kernels[level, warp])
            lin = nx.linearize(i0, torch.cat((i1, gx, gy), dim=1), u)
            u, p = nx.warp_iterations(u, p, lin, self._schedule(nx, level, warp))
        return u

    def _schedule(self, nx, level: int, warp: int) -> primal_dual.Schedule:
        cfg = self.config
        if nx.backend == "cupy":
            if self._kernel_table is None:
                raise EngineError("tvnet: call set_numerics() with the cupy numerics first")
            kernels = self._kernel_table[level][warp]
        else:
            kernels = tuple({"forward": self.forward_kernels[level, warp, it],
                             "divergence": self.divergence_kernels[level, warp, it]}
                            for it in range(cfg.iterations))
        return primal_dual.Schedule(outer=1, inner=cfg.iterations, median=0,
                             lambda_theta=cfg.lambda_ * cfg.theta, theta=cfg.theta,
                             tau_theta=cfg.tau / cfg.theta, kernels=kernels)


def flow_loss(i0: torch.Tensor, i1: torch.Tensor, flow: torch.Tensor, lambda_: float = 0.15,
              eps: float = _EPS_NORM) -> torch.Tensor:
    """TVNet's unsupervised flow loss ``L_f = lambda * mean|I1(x + u) - I0| + mean(|grad u1| + |grad u2|)``.

    I1 is warped exactly (bilinear, edge pixels replicated outside the frame; on CUDA with CuPy the
    warp kernel's ``autograd.Function``, else ``ops.warp``); the gradient is the forward difference
    of :func:`ops.forward_gradient`; ``|a| = sqrt(a^2 + eps)`` so the loss is differentiable
    everywhere. With intensities in [0, 255] the data term is in grey levels, the smoothness term in
    pixels per pixel.

    Shape:
        ``i0``, ``i1`` ``(B, C, H, W)``; ``flow`` ``(B, 2, H, W)``. Returns a scalar (mean over the batch).
    """
    ops.check_shape(flow, "BCHW", "flow")
    warp = numerics.warp_function(str(flow.device))
    residual = warp(i1, flow, mode="bilinear", padding_mode="border") - i0
    data = torch.sqrt(residual * residual + eps).mean()
    ux, uy = ops.forward_gradient(flow)
    smooth = torch.sqrt(ux * ux + uy * uy + eps).sum(1).mean()
    return lambda_ * data + smooth


def epe_loss(flow: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor | None = None,
             eps: float = _EPS_NORM) -> torch.Tensor:
    """Mean end-point error over valid pixels, ``sqrt(|flow - gt|^2 + eps)`` (differentiable at 0).

    Shape: ``flow``, ``gt`` ``(B, 2, H, W)``; ``valid`` ``(B, H, W)`` bool or None. Returns a scalar.
    """
    epe = torch.sqrt((flow - gt).square().sum(1) + eps)
    if valid is None:
        return epe.mean()
    mask = valid.to(epe.dtype)
    return (epe * mask).sum() / mask.sum().clamp_min(1.0)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a TVNet checkpoint (``flowkit train-flow tvnet --out``); EngineError if it is not one."""
    ckpt = checkpoints.load_checkpoint(path, "tvnet", what="tvnet weights", error=EngineError,
                                       hint=TRAIN_HINT, map_location=map_location)
    if not {"config", "state_dict"} <= set(ckpt):
        raise EngineError(f"tvnet: {os.fspath(path)!r} is not a TVNet checkpoint (expected the "
                          "output of `flowkit train-flow tvnet`, with 'config' and 'state_dict')")
    return ckpt


def tvnet_from_checkpoint(path: str | os.PathLike, **requested) -> tuple[TVNet, dict]:
    """Build the TVNet a checkpoint describes and load its weights.

    ``requested`` architecture values that are not None must equal the checkpoint's; a mismatch,
    or weights that do not fit the architecture, raise :class:`EngineError` naming both.
    Returns ``(net, checkpoint)``.
    """
    ckpt = load_checkpoint(path)
    known = {f.name for f in fields(TVNetConfig)}
    saved = ckpt["config"]
    if not isinstance(saved, dict) or set(saved) - known:
        raise EngineError(f"tvnet: {os.fspath(path)!r} has an unknown config {saved!r}")
    config = TVNetConfig(**saved)
    wrong = {k: v for k, v in requested.items() if v is not None and v != getattr(config, k)}
    if wrong:
        asked = ", ".join(f"{k}={v}" for k, v in wrong.items())
        has = ", ".join(f"{k}={getattr(config, k)}" for k in wrong)
        raise EngineError(f"tvnet: checkpoint {os.fspath(path)!r} was trained with {has}, but {asked} "
                          "was requested; drop those parameters (the checkpoint sets them) or "
                          "train a checkpoint with that architecture")
    net = TVNet(**asdict(config))
    try:
        net.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise EngineError(f"tvnet: the weights in {os.fspath(path)!r} do not fit its config "
                          f"{asdict(config)}: {str(exc).splitlines()[0]}") from None
    return net, ckpt


@dataclass(frozen=True)
class TVNetParams:
    """What ``create_engine("tvnet", ...)`` takes: architecture values (None: the checkpoint's
    when ``weights`` is given, else :class:`TVNetConfig`'s default) and the trained ``weights``."""
    scales: int | None = None
    warps: int | None = None
    iterations: int | None = None
    tau: float | None = None
    lambda_: float | None = None
    theta: float | None = None
    zfactor: float | None = None
    weights: str | None = None

    def __post_init__(self):
        # The ranges are TVNetConfig's: checked here too, with the defaults for the values not
        # given, so that check_engine_params refuses them before any engine is built (a
        # checkpoint's own config is checked when it is loaded).
        TVNetConfig(**self.requested())

    def requested(self) -> dict:
        """The architecture values given (not None)."""
        return {f.name: getattr(self, f.name) for f in fields(TVNetConfig)
                if getattr(self, f.name) is not None}


@register_engine
class TVNetEngine(FlowEngine):
    """TVNet engine: ``create_engine("tvnet", scales=..., warps=..., iterations=..., weights=CKPT)``.

    Without ``weights`` it is the classical TV-L1 with TVNet's fixed schedule (defaults 5 scales,
    5 warps, 50 iterations, zfactor 0.5; ``params["trained"]`` is false). With ``weights`` it loads a
    checkpoint of ``flowkit train-flow tvnet`` together with its architecture; architecture
    parameters given as well must match it. RGB frames are converted to luma as in the TV-L1 engine.
    ``backend`` (an execution option, not in ``params``): ``"auto"`` runs the CuPy kernels on CUDA
    when CuPy imports, torch otherwise (:mod:`flowkit.flow.numerics`).
    """

    name = "tvnet"
    version = "1"
    Params = TVNetParams

    def __init__(self, device="cpu", params: TVNetParams | None = None, *, backend: str = "auto",
                 **fields):
        super().__init__(device)
        request = self.make_params(params, fields)
        requested = request.requested()
        self.weights = self.digest = self.epoch = None
        if request.weights is None:
            self.net = TVNet(**requested)
        else:
            self.net, ckpt = tvnet_from_checkpoint(request.weights, **requested)
            # 12 digits, as tvnet stores have always recorded them (weights_identity says why)
            self.weights, self.digest = weights_identity(request.weights)
            self.epoch = ckpt.get("epoch")
        self.net.to(self.device).eval().requires_grad_(False)
        self.net.set_numerics(numerics.create(backend, self.device))
        self.backend = self.net.numerics.backend

    @property
    def params(self) -> dict:
        out = asdict(self.net.config)
        out.update(trained=self.weights is not None, weights=self.weights,
                   weights_sha256=self.digest)
        if self.epoch is not None:
            out["weights_epoch"] = int(self.epoch)
        return out

    def forward(self, frames0: torch.Tensor, frames1: torch.Tensor) -> torch.Tensor:
        # FlowEngine.__call__ checked the frames' intensities: no second device sync
        return self.net(ops.to_gray(frames0), ops.to_gray(frames1), check=False).float()
