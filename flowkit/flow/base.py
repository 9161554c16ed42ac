"""The contract every motion engine keeps (docs/architecture.md, "Conventions").

An engine is created by name with keyword parameters (:func:`flowkit.create_engine`) and called on a
batch of frame pairs::

    engine = flowkit.create_engine("tvl1", device="cpu", warps=5)
    flow = engine(frames0, frames1)          # (B, C, H, W) twice -> (B, 2, H, W)

Its parameters are one frozen dataclass (``Engine.Params``, e.g. :class:`~flowkit.flow.tvl1.TVL1Params`):
the constructor takes ``params=Params(...)`` or the same fields as keywords, plus keyword-only
execution options (``backend``, ``compile``) that do not change the result.

Frames are intensities in [0, 255] (uint8 or float, RGB or gray). Flow is float32 in pixels, channel
0 horizontal, channel 1 vertical, mapping frame t to frame t+1. ``engine.params`` (JSON-serialisable)
and ``engine.version`` go into the store with every dataset the engine writes.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar

import torch

from ..errors import EngineError
from .ops import check_shape


#: Float frames brighter than this are taken for high-bit-depth frames, not [0, 255] ones:
#: resampling uint8 frames in float (bicubic, Lanczos) overshoots 255 by up to about 20% at sharp
#: edges (~306), which must still run; 12/16-bit frames and 10-bit ones brighter than 512 are not.
FLOAT_PEAK_LIMIT = 512.0

#: Unsigned types without a max kernel on CPU (torch 2.x: "max_values_cpu" not implemented for
#: 'UInt16'), widened to a signed type holding all their values before the peak is taken. By
#: name: torch 2.2 (setup.cfg allows it) has none of them.
_WIDER = {getattr(torch, unsigned): wide for unsigned, wide in
          (("uint16", torch.int32), ("uint32", torch.int64), ("uint64", torch.int64))
          if hasattr(torch, unsigned)}


def _too_bright(name: str, peak: float) -> EngineError:
    """The error for frames of 10/12/16-bit video, whose flow is far off (TV-L1's parameters are
    tuned for [0, 255]: a 2 px shift of 16-bit frames reads as -1.27 px), with the fix. The fix
    divides (``/``), as uint16 has no floor division on CPU."""
    return EngineError(f"{name} has values up to {peak:g}: flowkit expects intensities in "
                       "[0, 255]; scale high-bit-depth frames down, e.g. "
                       "(frames / 65535 * 255).round().to(torch.uint8) for 16-bit "
                       "(1023 for 10-bit, 4095 for 12-bit)")


def _integer_peak(frames: torch.Tensor) -> int:
    """Largest value of integer frames (0 when empty): one reduction, one number read back."""
    if not frames.numel():
        return 0
    return int(frames.to(_WIDER.get(frames.dtype, frames.dtype)).amax())


def check_intensities(frames: torch.Tensor, name: str) -> None:
    """Frames must be real intensities in [0, 255]: uint8, another integer type with values
    <= 255, or float with finite values. Float frames whose largest value is in (0, 1] follow the
    [0, 1] convention (OpenCV's for float images, torchvision's ``to_tensor``) and would give flow
    far too small (TV-L1's ``lambda_``, ``tau`` and ``epsilon`` are tuned for [0, 255]): an error,
    with the fix. A guess: float [0, 255] frames no brighter than 1 (a fade from black) read the
    same, so the error gives their fix too (pass them as uint8, which is never guessed at).
    Frames of 10/12/16-bit video (integer values above 255, float ones above
    :data:`FLOAT_PEAK_LIMIT`) give flow far off: an error, with the fix. uint8 frames cost no
    check; other integer types one ``amax``."""
    dtype = frames.dtype
    if dtype == torch.bool or dtype.is_complex:
        raise EngineError(f"{name} has dtype {dtype}; frames are intensities in [0, 255] (uint8 or "
                          "float)")
    if dtype == torch.uint8:
        return
    if not dtype.is_floating_point:
        peak = _integer_peak(frames)
        if peak > 255:
            raise _too_bright(name, peak)
        return
    finite = torch.isfinite(frames)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise EngineError(f"{name} has {bad} NaN or infinite pixel value(s); flow of such frames "
                          "is undefined (replace them, e.g. torch.nan_to_num, or drop the pair)")
    # detach: frames that require grad would make torch warn about converting them to a number
    peak = float(frames.detach().amax()) if frames.numel() else 0.0
    if 0.0 < peak <= 1.0:
        raise EngineError(f"{name} is float with values in [0, {peak:.3g}]: flowkit expects "
                          "intensities in [0, 255]; if these are [0, 1] frames, multiply by 255 "
                          "(frames * 255); if they are dark [0, 255] frames, pass them as uint8 "
                          "(frames.to(torch.uint8))")
    if peak > FLOAT_PEAK_LIMIT:
        raise _too_bright(name, peak)


class FlowEngine:
    """Base class of motion engines: input checking, device placement and self-description."""

    #: Registry name, e.g. ``"tvl1"``.
    name: ClassVar[str] = ""
    #: Bumped whenever the engine's output for the same parameters changes.
    version: ClassVar[str] = "1"
    #: The numerics it computes with, ``"torch"`` or ``"cupy"`` (:mod:`flowkit.flow.numerics`);
    #: engines with a ``backend`` option set it from what ``"auto"`` resolved to.
    backend: str = "torch"
    #: True when each pair's flow depends on that pair alone, so a batch may mix pairs of several
    #: videos (extraction fills batches across video boundaries). Multi-frame engines that read a
    #: batch of consecutive pairs as one clip (MotionNet) set it False.
    independent_pairs: ClassVar[bool] = True
    #: The frozen dataclass of the engine's parameters.
    Params: ClassVar[type | None] = None
    #: Peak working memory per frame pair and pixel, in bytes, rounded up from the CPU
    #: measurement at 1080x1920 (benchmarks/results/reliability.md; the cost volume's 2.6 GB per
    #: pair is the default's source); extraction sizes its batches with it (:meth:`memory_per_pair`).
    bytes_per_pixel: ClassVar[int] = 1500

    @classmethod
    def memory_per_pair(cls, height: int, width: int) -> int:
        """Bytes one more pair of ``height`` x ``width`` frames adds to a batch's peak memory."""
        return int(cls.bytes_per_pixel * height * width)

    @classmethod
    def parameter_names(cls) -> list[str]:
        """What ``create_engine(name, ...)`` accepts: the fields of :attr:`Params` and the
        constructor's keyword-only execution options."""
        fields = [f.name for f in dataclasses.fields(cls.Params)] if cls.Params else []
        options = [p.name for p in inspect.signature(cls.__init__).parameters.values()
                   if p.kind is p.KEYWORD_ONLY]
        return fields + [o for o in options if o not in fields]

    @classmethod
    def make_params(cls, params, fields: dict[str, Any]):
        """``params`` (a :attr:`Params`) or ``Params(**fields)``; not both."""
        if params is not None:
            if fields:
                raise EngineError(f"engine {cls.name!r}: pass params=... or keyword parameters "
                                  f"({', '.join(fields)}), not both")
            if not isinstance(params, cls.Params):
                raise EngineError(f"engine {cls.name!r}: params must be a {cls.Params.__name__}, "
                                  f"got {type(params).__name__}")
            return params
        from .params import check_params  # types from the Params annotations, then its ranges
        return check_params(cls.Params, fields, cls.name)

    def __init__(self, device: str | torch.device = "cpu"):
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):  # torch's message lists twenty device types
            raise EngineError(f"engine {self.name!r}: unknown device {device!r}; use cpu, cuda or "
                              "cuda:N") from None
        # Engines compute on the CPU or CUDA only: another type (mps, xpu) would be accepted here
        # and fail at the first batch, in the middle of a run.
        if self.device.type not in ("cpu", "cuda"):
            raise EngineError(f"engine {self.name!r}: device {device!r} is not supported; flowkit "
                              "engines run on cpu, cuda or cuda:N")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise EngineError(f"engine {self.name!r}: device {device!r} requested but CUDA is not "
                              "available (torch.cuda.is_available() is False); use --device cpu "
                              "(device=\"cpu\" in Python)")

    @property
    def params(self) -> dict[str, Any]:
        """The engine's parameters, JSON-serialisable; recorded in the store."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Name, version, parameters and backend: what a store records about how a dataset was
        made. The backend is not a parameter: both compute the same flow to float rounding."""
        return {"engine": self.name, "version": self.version, "params": self.params,
                "backend": self.backend}

    def __call__(self, frames0: torch.Tensor, frames1: torch.Tensor) -> torch.Tensor:
        """Flow ``(B, 2, H, W)`` float32 in pixels on ``self.device``, from frame pairs
        ``(B, C, H, W)`` (C = 1 gray or 3 RGB) on any device.

        Frames are intensities in [0, 255]: uint8 (any value), another integer type (values
        <= 255) or float. Float frames whose largest value is in (0, 1] are taken for [0, 1]
        frames and refused (multiply them by 255); dark float [0, 255] frames (a fade from black)
        must come as uint8. Frames of 10/12/16-bit video (integer values above 255, float above
        512) are refused with the scaling that brings them to [0, 255].

        Inference only: the engine runs under :func:`torch.no_grad`, so the flow carries no
        gradient whatever the frames require. The differentiable path is the module
        :class:`flowkit.flow.tvnet.TVNet`.
        """
        check_shape(frames0, "BCHW", "frames0")
        check_shape(frames1, "BCHW", "frames1")
        check_intensities(frames0, "frames0")
        check_intensities(frames1, "frames1")
        if frames0.shape != frames1.shape:
            raise EngineError(f"frame pairs differ in shape: {tuple(frames0.shape)} vs "
                              f"{tuple(frames1.shape)}")
        if frames0.shape[0] == 0:  # no pairs: no flow (some engines' forward cannot take none)
            return torch.empty((0, 2, *frames0.shape[-2:]), dtype=torch.float32,
                               device=self.device)
        with torch.no_grad():
            return self.forward(frames0.to(self.device), frames1.to(self.device))

    def forward(self, frames0: torch.Tensor, frames1: torch.Tensor) -> torch.Tensor:
        """Flow ``(B, 2, H, W)`` for frames already on ``self.device``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args}, device={str(self.device)!r})"
