"""Middlebury .flo IO: exact round trip, byte layout, clear errors for foreign and truncated files."""
import struct

import numpy as np
import pytest
import torch

from flowkit.bench import BenchError, read_flo, write_flo
from flowkit.errors import FlowkitError


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    flow = (rng.normal(size=(2, 7, 11)) * 20).astype(np.float32)
    flow[0, 0, 0] = 1e10                          # unknown-flow marker survives as written
    path = tmp_path / "a.flo"
    write_flo(path, flow)
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == (2, 7, 11)
    assert np.array_equal(back, flow)
    write_flo(path, torch.from_numpy(flow))       # torch input
    assert np.array_equal(read_flo(path), flow)


def test_byte_layout_is_middlebury(tmp_path):
    flow = np.zeros((2, 2, 3), np.float32)
    flow[0] = np.arange(6).reshape(2, 3)          # u
    flow[1] = -np.arange(6).reshape(2, 3)         # v
    path = tmp_path / "b.flo"
    write_flo(path, flow)
    data = path.read_bytes()
    assert data[:4] == b"PIEH"
    assert struct.unpack("<fii", data[:12]) == (202021.25, 3, 2)
    values = struct.unpack("<12f", data[12:])
    assert values[:4] == (0.0, -0.0, 1.0, -1.0)    # u, v interleaved, row-major


def test_foreign_file_names_file_and_magic(tmp_path):
    path = tmp_path / "image.flo"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(BenchError, match=r"image\.flo: not a \.flo file \(magic"):
        read_flo(path)
    tiny = tmp_path / "tiny.flo"
    tiny.write_bytes(b"PIE")
    with pytest.raises(FlowkitError, match="tiny.flo: not a .flo file"):
        read_flo(tiny)


def test_truncated_and_padded_files(tmp_path):
    path = tmp_path / "t.flo"
    write_flo(path, np.ones((2, 4, 5), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(BenchError, match=r"t\.flo: truncated .* 5x4 flow needs 172"):
        read_flo(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(BenchError, match=r"t\.flo: corrupt"):
        read_flo(path)
    path.write_bytes(struct.pack("<fii", 202021.25, -1, 4))
    with pytest.raises(BenchError, match=r"t\.flo: corrupt .flo header"):
        read_flo(path)


def test_missing_file_and_bad_shape(tmp_path):
    with pytest.raises(BenchError, match="nope.flo: cannot read"):
        read_flo(tmp_path / "nope.flo")
    with pytest.raises(BenchError, match=r"\(2, H, W\)"):
        write_flo(tmp_path / "x.flo", np.zeros((4, 5, 2)))
