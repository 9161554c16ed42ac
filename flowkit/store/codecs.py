"""How a store keeps flow and RGB frames: one codec per dataset, recorded in it.

Flow codecs (``FLOW_CODECS``):

============  ==================================================  ==============================
name          what                                                error
============  ==================================================  ==============================
``jpegls``    quantised to a step s, then JPEG-LS (CharLS),       ``|error| <= max_error`` px,
              lossless (default) or near-lossless (``near``)     guaranteed (default 0.1 px)
``float16``   float16, shuffle + gzip (HDF5 filters)              float16 rounding (lossless for
                                                                  training purposes)
``uint8``     clipped to ``[-bound, bound]``, 255 levels, gzip    ``bound / 255`` inside the bound;
              (the legacy compact codec; rawframes' quantiser)    clipped beyond it
============  ==================================================  ==============================

RGB codecs (``RGB_CODECS``): ``jpeg`` (OpenCV, ``quality`` recorded; what mmaction2/denseflow
rawframes use) and ``raw`` (uint8, gzip, lossless).

The ``jpegls`` bound: a value f is stored as ``q = round(f / s)`` and JPEG-LS returns q' with
``|q' - q| <= near``, so ``|f - q' s| <= s/2 + near s``; the step is ``s = max_error / (near + 0.5)``
shrunk by 0.1% so that float32 rounding of the decoded value stays inside ``max_error`` too. A frame
is coded as 16-bit samples ``q - q_min`` (``q_min`` in a 4-byte header), so its values may span
65535 steps (13000 px at the default 0.1 px and ``near`` 0; 390 px with ``near`` 16); values
beyond that span are clipped and counted (``clipped_values``), never silently. The writer decodes every frame it encodes
and records the largest error it saw (``max_error_seen``); ``FlowStore.validate(deep=True)`` decodes
every frame again and checks the stated bound.

Storage: ``jpegls`` and ``jpeg`` frames are variable-length byte strings (one per frame, an HDF5
vlen dataset) decoded here; ``float16``, ``uint8`` and ``raw`` are ordinary HDF5 arrays that any HDF5
reader decompresses, written as pre-compressed chunks (``write_direct_chunk``). Either way each frame
is compressed independently, in a thread pool (:func:`encode_frames`), so writing keeps up with the
engine. Every dataset carries its codec's attributes (:meth:`Codec.attrs`); readers rebuild the
codec from them (:func:`codec_of`) and need no flags. Datasets of earlier stores (no ``codec``
attribute, ``quantization`` = float16 / uint8) read as before.

Damage: HDF5's checksums cover its metadata and (fletcher32) chunks, never the vlen heap that holds
encoded frames, and a decoder repairs or ignores most damage to a JPEG (a flipped bit in its
entropy-coded data decodes to other pixels without a word). So an encoded dataset records the
CRC32 (:func:`frame_crc`, zlib) of every frame's stored bytes in its attribute
:data:`FRAME_CRC_ATTR` (uint32 ``(N,)``, 4 bytes a frame), written with the frames, pre-encoded
ones (``append_rgb_encoded``) included, and copied with the dataset when files merge; every read of
a frame checks it (:func:`check_crc`: :class:`DamagedDataError`). Encoded datasets of stores written
before it have no CRCs and read unchecked.
"""
from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from ..errors import StoreError, DamagedDataError
from ..registry import Registry

DEFAULT_BOUND = 20.0
DEFAULT_MAX_ERROR = 0.1
# Lossless JPEG-LS of 2 * max_error steps, not its near-lossless mode: near-lossless codes TV-L1
# flow 20-25% smaller (near 16: 4.36 vs 5.29 KiB per 256x340 pair) but CharLS rebuilds a 2^17-entry
# gradient table for every near-lossless frame it decodes, 0.5 ms per frame whatever its size
# (0.85 vs 0.55 ms per 256x340 pair, 0.74 vs 0.20 ms at 128x160, one core): training reads would be
# slower than float16's. Both stay below rawframes' 8-bit JPEG flow (5.71 KiB at 256x340).
DEFAULT_NEAR = 0
DEFAULT_JPEG_QUALITY = 95
GZIP_LEVEL = 4
_STEP_MARGIN = 1e-3
_Q_SPAN = 65535  # JPEG-LS codes 16-bit samples: q - q_min must fit
#: Attribute of an encoded (vlen) dataset: the CRC32 of each frame's stored bytes, uint32 ``(N,)``.
#: Not among the attributes :func:`flowkit.store.reading.attributes` returns (metas stay small).
FRAME_CRC_ATTR = "frame_crc32"


class Codec:
    """One way of storing a frame (a flow pair ``(2, H, W)`` or an RGB frame ``(H, W, 3)``).

    ``storage`` is ``"encoded"`` (frames are byte strings decoded by :meth:`decode`) or ``"array"``
    (an HDF5 array with the ``shuffle`` / ``gzip`` filters; :meth:`encode` returns the compressed
    chunk, :meth:`from_stored` turns the stored values into the frame).
    """

    name: ClassVar[str] = ""
    #: the parameter a spec ``"name:value"`` sets (:func:`flow_codec`, :func:`rgb_codec`)
    primary: ClassVar[str | None] = None
    storage: ClassVar[str] = "encoded"
    #: dtype of an ``"array"`` dataset
    stored_dtype: ClassVar[Any] = None
    #: dtype of a decoded frame (float32 pixels for flow, uint8 for RGB)
    frame_dtype: ClassVar[Any] = np.float32

    def encode(self, frame: np.ndarray) -> tuple[bytes, dict[str, float]]:
        """The frame's bytes (or compressed chunk), and statistics of the encoding (``error``:
        the largest absolute error, ``clipped``: values outside the codec's range)."""
        raise NotImplementedError

    def decode(self, blob: np.ndarray | bytes) -> np.ndarray:
        raise NotImplementedError

    def from_stored(self, data: np.ndarray) -> np.ndarray:
        """Stored array values (``"array"`` storage) -> the frames."""
        return data

    def frame(self, stored: np.ndarray) -> np.ndarray:
        """One stored item (a byte string, or an array frame as HDF5 returns it) -> the frame."""
        return self.decode(stored) if self.storage == "encoded" else self.from_stored(stored)

    def attrs(self) -> dict[str, Any]:
        """What the dataset records so that a reader rebuilds this codec."""
        return {"codec": self.name}

    def describe(self) -> str:
        return self.name

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "Codec":
        return cls()


FLOW_CODECS: Registry[Codec] = Registry("flow codec", error=StoreError)
RGB_CODECS: Registry[Codec] = Registry("rgb codec", error=StoreError)


def _gzip_chunk(array: np.ndarray, shuffle: bool) -> bytes:
    """The chunk HDF5's shuffle + deflate filters would write for ``array`` (one chunk)."""
    data = np.ascontiguousarray(array)
    raw = data.view(np.uint8).reshape(-1, data.itemsize).T.tobytes() if shuffle else data.tobytes()
    return zlib.compress(raw, GZIP_LEVEL)


# ------------------------------------------------------------------------------------ flow codecs

@FLOW_CODECS.register()
class JpegLS(Codec):
    """Error-bounded flow: quantised, then JPEG-LS (see the module docstring)."""

    name = "jpegls"
    primary = "max_error"

    def __init__(self, max_error: float = DEFAULT_MAX_ERROR, near: int = DEFAULT_NEAR):
        if not (isinstance(max_error, (int, float)) and 0 < max_error <= 10):
            raise StoreError(f"jpegls max_error must be in (0, 10] pixels, got {max_error!r}")
        if not (isinstance(near, int) and 0 <= near <= 64):
            raise StoreError(f"jpegls near must be an integer in [0, 64], got {near!r}")
        self.max_error, self.near = float(max_error), int(near)
        self.step = self.max_error / (self.near + 0.5) * (1.0 - _STEP_MARGIN)

    def encode(self, frame):
        import imagecodecs

        f = np.asarray(frame)
        q = np.divide(f, self.step, dtype=np.float64)  # float64: the bound holds for any value
        np.rint(q, out=q)
        lo, hi = float(q.min()), float(q.max())
        inside = None  # every value fits the span: the common case, no masks
        if hi - lo <= _Q_SPAN:
            q_min = int(lo)
        else:
            # The span starts at the frame's median minus half the range: a few wild values are
            # the ones clipped, never the bulk of the frame.
            q_min = int(np.clip(np.median(q) - _Q_SPAN // 2, -2**31, 2**31 - 1 - _Q_SPAN))
            inside = (q >= q_min) & (q <= q_min + _Q_SPAN)
        q -= q_min
        if inside is not None:
            np.clip(q, 0, _Q_SPAN, out=q)
        sample = q.astype(np.uint16).reshape(-1, f.shape[-1])
        blob = q_min.to_bytes(4, "little", signed=True) + imagecodecs.jpegls_encode(
            sample, level=self.near)
        error = np.abs(np.subtract(self.decode(blob), f, dtype=np.float64))
        if inside is not None:
            error = error[inside]
        clipped = 0 if inside is None else int(q.size - np.count_nonzero(inside))
        return blob, {"error": float(error.max()) if error.size else 0.0, "clipped": clipped}

    def decode(self, blob):
        import imagecodecs

        blob = blob if isinstance(blob, bytes) else bytes(blob)
        q_min = int.from_bytes(blob[:4], "little", signed=True)
        sample = imagecodecs.jpegls_decode(blob[4:])
        # float32 throughout: q_min + sample is exact (< 2^24) and float32(step) is within the
        # step margin; the writer measured this very decoding against the bound.
        flow = sample.astype(np.float32)
        flow += np.float32(q_min)
        flow *= np.float32(self.step)
        return flow.reshape(2, -1, sample.shape[-1])  # u over v: (2, H, W)

    def attrs(self):
        return {"codec": self.name, "quantization": self.name, "max_error": self.max_error,
                "near": self.near, "step": self.step}

    def describe(self):
        return f"jpegls (max error {self.max_error:g} px)"

    @classmethod
    def from_attrs(cls, attrs):
        codec = cls(float(attrs["max_error"]), int(attrs["near"]))
        codec.step = float(attrs["step"])  # what the frames were coded with
        return codec


@FLOW_CODECS.register()
class Float16(Codec):
    """float16 flow, shuffle + gzip: rounding only (about 1e-3 relative)."""

    name = "float16"
    storage = "array"
    stored_dtype = np.float16

    def encode(self, frame):
        f = np.asarray(frame, dtype=np.float32)
        half = f.astype(np.float16)
        if not np.isfinite(half).all():
            raise StoreError("flow exceeds the float16 range (65504 pixels); the engine output "
                             "is broken")
        error = float(np.abs(half.astype(np.float32) - f).max()) if f.size else 0.0
        return _gzip_chunk(half, shuffle=True), {"error": error, "clipped": 0}

    def from_stored(self, data):
        return data.astype(np.float32)

    def attrs(self):
        return {"codec": self.name, "quantization": "float16", "scale": 1.0, "offset": 0.0}


@FLOW_CODECS.register()
class Uint8(Codec):
    """Flow clipped to ``[-bound, bound]`` and quantised to 255 levels (rawframes' quantiser,
    without JPEG's loss), gzip. Error ``bound / 255`` inside the bound; clipped values counted."""

    name = "uint8"
    primary = "bound"
    storage = "array"
    stored_dtype = np.uint8

    def __init__(self, bound: float = DEFAULT_BOUND):
        if not (isinstance(bound, (int, float)) and np.isfinite(bound) and bound > 0):
            raise StoreError(f"flow_bound must be a positive number of pixels, got {bound!r}")
        self.bound = float(bound)

    def encode(self, frame):
        f = np.asarray(frame, dtype=np.float32)
        q = quantize(f, self.bound)
        clipped = int(np.count_nonzero(np.abs(f) > self.bound))
        inside = np.abs(f) <= self.bound
        error = (float(np.abs(dequantize(q, self.bound)[inside] - f[inside]).max())
                 if inside.any() else 0.0)
        return _gzip_chunk(q, shuffle=False), {"error": error, "clipped": clipped}

    def from_stored(self, data):
        return dequantize(data, self.bound)

    def attrs(self):
        return {"codec": self.name, "quantization": "uint8", "bound": self.bound,
                "scale": 2.0 * self.bound / 255.0, "offset": -self.bound}

    def describe(self):
        return f"uint8 (bound {self.bound:g})"

    @classmethod
    def from_attrs(cls, attrs):
        return cls(float(attrs["bound"]))


def quantize(flow: np.ndarray, bound: float) -> np.ndarray:
    """Float flow -> uint8: ``round(255 (clip(f, -B, B) + B) / (2B))``. Shape is kept.

    Exactly denseflow's quantiser (``convertFlowToImage``: ``v > B -> 255``, ``v < -B -> 0``, else
    the formula in double precision, rounded half to even like OpenCV's ``cvRound``); float32
    arithmetic would differ from it by one level near ties."""
    f = np.clip(np.asarray(flow, dtype=np.float64), -bound, bound)
    return np.rint(255.0 * (f + bound) / (2.0 * bound)).astype(np.uint8)


def dequantize(q: np.ndarray, bound: float) -> np.ndarray:
    """uint8 -> float32 flow: ``q * 2B / 255 - B``; error at most ``B / 255`` inside the bound."""
    return q.astype(np.float32) * np.float32(2.0 * bound / 255.0) - np.float32(bound)


# ------------------------------------------------------------------------------------- rgb codecs

@RGB_CODECS.register()
class Jpeg(Codec):
    """RGB frames as JPEG (OpenCV, 4:2:0, ``quality`` recorded, optimised Huffman tables): the
    pixels of mmaction2 rawframes at the same quality, in fewer bytes."""

    name = "jpeg"
    primary = "quality"
    frame_dtype = np.uint8

    def __init__(self, quality: int = DEFAULT_JPEG_QUALITY):
        if not (isinstance(quality, int) and 1 <= quality <= 100):
            raise StoreError(f"jpeg quality must be an integer in [1, 100], got {quality!r}")
        self.quality = int(quality)

    def encode(self, frame):
        import cv2

        # Optimised Huffman tables: the same pixels as a default JPEG of this quality, 7-14% fewer
        # bytes (measured on the sample videos); rawframes use the default tables.
        ok, blob = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]),
                                [cv2.IMWRITE_JPEG_QUALITY, self.quality,
                                 cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if not ok:
            raise StoreError("OpenCV could not encode a frame as JPEG")
        return blob.tobytes(), {"error": 0.0, "clipped": 0}

    def decode(self, blob):
        import cv2

        data = np.frombuffer(blob, np.uint8) if isinstance(blob, bytes) else np.asarray(blob)
        rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB
        image = cv2.imdecode(data, cv2.IMREAD_COLOR if rgb is None else rgb)
        if image is None:
            raise DamagedDataError("a stored JPEG frame cannot be decoded")
        return np.ascontiguousarray(image[..., ::-1]) if rgb is None else image

    def attrs(self):
        return {"codec": self.name, "quality": self.quality}

    def describe(self):
        return f"jpeg (quality {self.quality})"

    @classmethod
    def from_attrs(cls, attrs):
        return cls(int(attrs["quality"]))


@RGB_CODECS.register()
class Raw(Codec):
    """RGB frames as uint8, gzip: lossless."""

    name = "raw"
    storage = "array"
    stored_dtype = np.uint8
    frame_dtype = np.uint8

    def encode(self, frame):
        return _gzip_chunk(np.asarray(frame, dtype=np.uint8), shuffle=False), {"error": 0.0,
                                                                                 "clipped": 0}


# ------------------------------------------------------------------------------------ checking

def frame_crc(blob: bytes | np.ndarray) -> int:
    """The CRC32 (zlib) of an encoded frame's stored bytes."""
    return zlib.crc32(blob if isinstance(blob, bytes) else np.ascontiguousarray(blob, np.uint8))


def check_crc(blob: bytes | np.ndarray, crc: int, index: int) -> None:
    """Raise :class:`DamagedDataError` unless frame ``index``'s stored bytes ``blob`` have the
    CRC32 ``crc`` recorded when they were written."""
    if frame_crc(blob) != int(crc):
        raise DamagedDataError(f"frame {index} fails its CRC32 check: its bytes changed since "
                               "they were written")


# ------------------------------------------------------------------------------------ choosing

def flow_codec(spec: str | Codec = "jpegls", **params) -> Codec:
    """A flow codec: a :class:`Codec`, or a spec ``"name"`` / ``"name:value"`` (the value sets the
    codec's main parameter: ``jpegls:0.05`` is a 0.05 px bound, ``uint8:16`` a 16 px range), with
    more parameters as keywords (``near`` for jpegls)."""
    return _codec(FLOW_CODECS, spec, params)


def rgb_codec(spec: str | Codec = "jpeg", **params) -> Codec:
    """An RGB codec: a :class:`Codec`, or ``"jpeg"``, ``"jpeg:90"`` (quality), ``"raw"``."""
    return _codec(RGB_CODECS, spec, params)


def _codec(registry: Registry, spec: str | Codec, params: dict) -> Codec:
    if isinstance(spec, Codec):
        return spec
    name, _, value = str(spec).partition(":")
    cls = registry.get(name)
    if value:
        if cls.primary is None:
            raise StoreError(f"{registry.kind} {name!r} takes no value, got {spec!r}")
        try:
            params = {cls.primary: int(value) if value.isdigit() else float(value), **params}
        except ValueError:
            raise StoreError(f"{registry.kind} spec {spec!r}: {value!r} is not a number") from None
    return registry.create(name, **params)


def codec_of(attrs: dict[str, Any], rgb: bool = False) -> Codec:
    """The codec a stored dataset was written with, from its attributes (datasets of earlier
    stores: ``quantization`` float16 / uint8 for flow, nothing for raw RGB)."""
    name = attrs.get("codec")
    if name is None:
        name = "raw" if rgb else str(attrs.get("quantization", "float16"))
    registry = RGB_CODECS if rgb else FLOW_CODECS
    return registry.get(str(name)).from_attrs(attrs)


def codec_spec(codec: Codec) -> str:
    """The spec that makes ``codec`` again (``--flow-codec`` / ``--rgb-codec``): ``"jpegls:0.1"``,
    ``"uint8:20"``, ``"jpeg:95"``, ``"float16"``, ``"raw"``."""
    if codec.primary is None:
        return codec.name
    return f"{codec.name}:{getattr(codec, codec.primary):g}"


# ------------------------------------------------------------------------------------- threads

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (pid, threads): a fork gets its own


def default_threads() -> int:
    """Encoding threads per process: the usable cores, at most 8."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, usable or 1))


def encode_frames(codec: Codec, frames, threads: int | None = None
                  ) -> list[tuple[bytes, dict[str, float]]]:
    """:meth:`Codec.encode` of every frame, in a pool of ``threads`` threads (the codecs release
    the GIL), in order."""
    threads = threads or default_threads()
    if threads == 1 or len(frames) == 1:
        return [codec.encode(f) for f in frames]
    key = (os.getpid(), threads)
    pool = _pools.get(key)
    if pool is None:
        pool = _pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="flowkit-encode")
    return list(pool.map(codec.encode, frames))


__all__ = ["Codec", "FLOW_CODECS", "RGB_CODECS", "JpegLS", "Float16", "Uint8", "Jpeg", "Raw",
           "flow_codec", "rgb_codec", "codec_of", "codec_spec", "encode_frames", "default_threads",
           "frame_crc", "check_crc", "FRAME_CRC_ATTR", "quantize", "dequantize", "DEFAULT_BOUND",
           "DEFAULT_MAX_ERROR", "DEFAULT_JPEG_QUALITY"]
