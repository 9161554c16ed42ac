"""JPEG files read without decoding them: the header facts that decide whether a JPEG can be carried
between rawframes and a store byte for byte.

A JPEG file (ITU-T T.81, Annex B) is a sequence of marker segments: SOI, then tables (DQT:
quantisation, DHT: Huffman), application data (APPn, e.g. Exif), a frame header (SOFn: sample
precision, height, width, and per component its sampling factors and quantisation table), then one
or more scans (SOS followed by entropy-coded data) and EOI. :func:`read_header` parses the segments
up to the first scan and looks at the file's last bytes for EOI; the entropy-coded data is never
read, so a header costs microseconds where a decode costs milliseconds.

Why it matters: an RGB frame that is already a JPEG of the store's quality can be stored as it is
(no second JPEG generation, no decode and re-encode), and a stored JPEG can be exported as it is.
A file qualifies when its quantisation tables are the ones libjpeg (OpenCV's encoder, which wrote
both the store's frames and mmaction2 / denseflow rawframes) uses at that quality
(:func:`libjpeg_tables`), it has three 8-bit components and no Exif block (decoders may rotate an
image by its Exif orientation), and it ends with EOI (a truncated file does not).
"""
from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from .errors import FlowkitError

SOI, EOI, SOS, DQT = 0xD8, 0xD9, 0xDA, 0xDB
# Frame headers: SOF0 baseline, SOF1 extended sequential, SOF2 progressive (Huffman coding); the
# arithmetic-coded and lossless processes (SOF3, SOF5-7, SOF9-15) are named for a clear refusal.
_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC3: "lossless",
        0xC5: "differential", 0xC6: "differential", 0xC7: "differential", 0xC9: "arithmetic",
        0xCA: "arithmetic", 0xCB: "arithmetic", 0xCD: "arithmetic", 0xCE: "arithmetic",
        0xCF: "arithmetic"}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length


class JpegError(FlowkitError, ValueError):
    """Bytes that are not a well-formed JPEG header; the message says where it breaks."""


@dataclass(frozen=True)
class JpegHeader:
    """What a JPEG's header says.

    ``tables``: quantisation table id -> its 64 values (zigzag order, as stored); ``components``:
    per component ``(id, horizontal sampling, vertical sampling, quantisation table id)``;
    ``complete``: the file ends with EOI (trailing zero bytes allowed).
    """

    height: int
    width: int
    precision: int
    process: str
    components: tuple[tuple[int, int, int, int], ...]
    tables: dict[int, tuple[int, ...]]
    exif: bool
    complete: bool

    def tables_used(self) -> tuple[tuple[int, ...], ...]:
        """The quantisation tables of the components, in component order."""
        return tuple(self.tables.get(c[3], ()) for c in self.components)


def read_header(blob: bytes) -> JpegHeader:
    """Parse ``blob``'s segments up to its first scan; :class:`JpegError` if it is not a JPEG."""
    data = memoryview(blob)
    if len(data) < 4 or data[0] != 0xFF or data[1] != SOI:
        raise JpegError("not a JPEG file (no start-of-image marker)")
    tables: dict[int, tuple[int, ...]] = {}
    frame = None
    exif = False
    pos = 2
    while True:
        if pos + 2 > len(data) or data[pos] != 0xFF:
            raise JpegError(f"no marker at byte {pos} (the header is cut short or damaged)")
        while pos + 2 < len(data) and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes before a marker
        marker = data[pos + 1]
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == EOI:
            raise JpegError("end-of-image before any scan")
        if pos + 4 > len(data):
            raise JpegError(f"segment at byte {pos} is cut short")
        length = struct.unpack_from(">H", data, pos + 2)[0]
        body = data[pos + 4:pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            raise JpegError(f"segment 0xFF{marker:02X} at byte {pos} is cut short")
        if marker == DQT:
            _read_tables(body, tables)
        elif marker in _SOF:
            if len(body) < 6:
                raise JpegError("frame header is cut short")
            precision, height, width, n = struct.unpack_from(">BHHB", body)
            if len(body) < 6 + 3 * n:
                raise JpegError("frame header is cut short")
            components = tuple((body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15,
                                body[8 + 3 * i]) for i in range(n))
            frame = (height, width, precision, _SOF[marker], components)
        elif marker == 0xE1 and bytes(body[:6]) == b"Exif\0\0":
            exif = True
        elif marker == SOS:
            break
        pos += 2 + length
    if frame is None:
        raise JpegError("no frame header before the first scan")
    height, width, precision, process, components = frame
    return JpegHeader(height, width, precision, process, components, tables, exif,
                      complete=is_complete(data))


def is_complete(blob: bytes | memoryview) -> bool:
    """Whether a JPEG file ends with its end-of-image marker (a truncated one does not); zero
    bytes after it are allowed."""
    data = memoryview(blob)
    end = len(data)
    while end > 2 and data[end - 1] == 0:  # zero padding after EOI is harmless
        end -= 1
    return end >= 2 and data[end - 2] == 0xFF and data[end - 1] == EOI


def _read_tables(body: memoryview, tables: dict[int, tuple[int, ...]]) -> None:
    pos = 0
    while pos < len(body):
        precision, table_id = body[pos] >> 4, body[pos] & 15
        size = 128 if precision else 64
        if pos + 1 + size > len(body):
            raise JpegError("quantisation table is cut short")
        fmt = ">64H" if precision else "64B"
        tables[table_id] = struct.unpack_from(fmt, body, pos + 1)
        pos += 1 + size


@functools.lru_cache(maxsize=None)
def libjpeg_tables(quality: int) -> tuple[tuple[int, ...], ...]:
    """The quantisation tables (luma, chroma, chroma) of a colour JPEG that OpenCV's libjpeg
    writes at ``quality``: read off a tiny image it encodes, so they are this OpenCV's own."""
    import cv2
    import numpy as np

    ok, blob = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise JpegError(f"OpenCV could not encode a JPEG at quality {quality}")
    return read_header(blob.tobytes()).tables_used()


def unlike_libjpeg(blob: bytes, quality: int, size: tuple[int, int] | None = None) -> str:
    """Why ``blob`` is not a complete colour JPEG like one OpenCV writes at ``quality`` (of
    ``size`` = (height, width) when given); ``""`` when it is, i.e. it may be kept byte for byte
    where such a JPEG is expected. Sampling factors and Huffman tables may differ."""
    try:
        header = read_header(blob)
    except JpegError as exc:
        return str(exc)
    if not header.complete:
        return "truncated (no end-of-image marker)"
    if header.process not in ("baseline", "extended", "progressive"):
        return f"{header.process} JPEG"
    if header.precision != 8 or len(header.components) != 3:
        return (f"{len(header.components)} component(s) of {header.precision} bits (colour JPEGs "
                "have 3 of 8)")
    if header.exif:
        return "has Exif data (its orientation may rotate the decoded image)"
    if size is not None and (header.height, header.width) != tuple(size):
        return f"{header.height}x{header.width}, not {size[0]}x{size[1]}"
    if header.tables_used() != libjpeg_tables(quality):
        return f"quantisation tables are not libjpeg's at quality {quality}"
    return ""


__all__ = ["JpegError", "JpegHeader", "read_header", "is_complete", "libjpeg_tables",
           "unlike_libjpeg"]
