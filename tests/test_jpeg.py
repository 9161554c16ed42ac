"""flowkit/jpeg.py (JPEG headers without decoding) and the store writer's byte-for-byte RGB path
(VideoWriter.append_rgb_encoded): which JPEGs may be kept as they are, and why the others may not."""
from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
from skimage import data

from flowkit import jpeg
from flowkit.errors import StoreError
from flowkit.store import FlowStore

SIZE = (48, 64)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real RGB photograph, 48x64."""
    return cv2.resize(data.astronaut(), SIZE[::-1], interpolation=cv2.INTER_AREA)


def encode(rgb: np.ndarray, quality: int = 95, *flags: int) -> bytes:
    ok, blob = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, quality, *flags])
    assert ok
    return blob.tobytes()


def with_exif(blob: bytes) -> bytes:
    """``blob`` with an APP1 Exif segment (orientation 6: rotate 90) after SOI."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + \
        struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + b"\x00\x00\x00\x00"
    body = b"Exif\x00\x00" + tiff
    return blob[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + blob[2:]


def test_header_of_an_opencv_jpeg(photo):
    header = jpeg.read_header(encode(photo, 95))
    assert (header.height, header.width, header.precision) == (*SIZE, 8)
    assert header.process == "baseline" and header.complete and not header.exif
    # Y sampled 2x2 (4:2:0), Cb and Cr 1x1; luma table 0, chroma table 1
    assert [c[1:] for c in header.components] == [(2, 2, 0), (1, 1, 1), (1, 1, 1)]
    luma, chroma, _ = header.tables_used()
    # IJG tables at quality 95: the Annex K tables x 0.1, rounded (luma 16 11 12 ... 121 -> 2 1 1
    # ... 12; chroma 17 ... 99 -> 2 ... 10), stored in zigzag order
    assert luma[:3] == (2, 1, 1) and max(luma) == 12 and chroma[0] == 2 and max(chroma) == 10
    assert jpeg.libjpeg_tables(95) == header.tables_used()
    assert jpeg.libjpeg_tables(90) != jpeg.libjpeg_tables(95)
    # Huffman optimisation and progressive coding change the entropy coding, not the tables
    assert jpeg.read_header(encode(photo, 95, cv2.IMWRITE_JPEG_OPTIMIZE, 1)).tables_used() == \
        jpeg.libjpeg_tables(95)
    assert jpeg.read_header(encode(photo, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)).process == \
        "progressive"


def test_which_jpegs_are_like_libjpegs(photo):
    good = encode(photo, 95)
    assert jpeg.unlike_libjpeg(good, 95, SIZE) == ""
    assert jpeg.unlike_libjpeg(good + b"\x00" * 7, 95, SIZE) == ""  # zero padding after EOI
    assert jpeg.unlike_libjpeg(encode(photo, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, 1), 95) == ""
    reasons = {
        "quality": jpeg.unlike_libjpeg(encode(photo, 80), 95, SIZE),
        "size": jpeg.unlike_libjpeg(good, 95, (64, 48)),
        "gray": jpeg.unlike_libjpeg(cv2.imencode(".jpg", photo[..., 0])[1].tobytes(), 95),
        "truncated": jpeg.unlike_libjpeg(good[:len(good) // 2], 95),
        "exif": jpeg.unlike_libjpeg(with_exif(good), 95),
        "png": jpeg.unlike_libjpeg(cv2.imencode(".png", photo)[1].tobytes(), 95),
        "header": jpeg.unlike_libjpeg(good[:60], 95),
    }
    assert "quality 95" in reasons["quality"]
    assert "48x64, not 64x48" in reasons["size"]
    assert "1 component" in reasons["gray"]
    assert "truncated" in reasons["truncated"]
    assert "Exif" in reasons["exif"]
    assert "not a JPEG" in reasons["png"]
    assert "cut short" in reasons["header"]
    assert jpeg.read_header(with_exif(good)).exif
    assert not jpeg.is_complete(good[:-1]) and jpeg.is_complete(good)
    with pytest.raises(jpeg.JpegError, match="not a JPEG"):
        jpeg.read_header(b"GIF89a")


def test_writer_keeps_jpegs_byte_for_byte_and_refuses_others(photo, tmp_path):
    store = FlowStore(tmp_path / "store", "a")
    files = [encode(np.roll(photo, 3 * t, axis=1), 95) for t in range(4)]
    with store.writer("v", source="v.mp4", fps=25.0) as w:
        assert w.rgb_unlike_codec(files[0]) == ""
        w.append_rgb_encoded(files[:2])
        w.append_rgb(np.stack([cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                               for f in files[2:3]]))  # a decoded frame in between
        w.append_rgb_encoded(files[3:])
        with pytest.raises(StoreError, match="quality 95"):
            w.append_rgb_encoded([encode(photo, 80)])
        big = encode(cv2.resize(photo, (128, 96)), 95)
        assert "not 48x64" in w.rgb_unlike_codec(big)
    stored = store.read_rgb("v", decode=False)
    assert stored[0] == files[0] and stored[1] == files[1] and stored[3] == files[3]
    assert stored[2] != files[2]  # coded again by the store (optimised Huffman tables)
    assert store.read_rgb("v", 1, decode=False) == files[1]
    decoded = store.read_rgb("v")
    assert decoded.shape == (4, *SIZE, 3)
    direct = cv2.imdecode(np.frombuffer(files[0], np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded[0], direct)
    assert store.validate(deep=True) == []
    assert store.rgb_codec("v").quality == 95
    raw = FlowStore(tmp_path / "raw", "a")
    with raw.writer("v", source="v.mp4", fps=25.0, rgb_codec="raw") as w:
        assert "raw" in w.rgb_unlike_codec(files[0])
        with pytest.raises(StoreError, match="cannot be stored as it is"):
            w.append_rgb_encoded(files[:1])
        w.append_rgb(decoded)
