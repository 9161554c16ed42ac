"""The rawframes format (flowkit/rawframes.py) and denseflow's HDF5 layout (flowkit/denseflow.py):
the quantiser against denseflow's formula, file names, and the checks of one video folder."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from flowkit import denseflow, rawframes
from flowkit.store.codecs import dequantize, quantize


def denseflow_cast(v: np.ndarray, bound: float) -> np.ndarray:
    """denseflow's CAST macro, element by element in Python floats (double precision), with
    Python's round (half to even, like OpenCV's cvRound)."""
    out = []
    for x in np.asarray(v, np.float32).ravel().tolist():
        out.append(255 if x > bound else 0 if x < -bound
                   else round(255 * (x + bound) / (2 * bound)))
    return np.array(out, np.uint8).reshape(np.shape(v))


def test_quantize_is_denseflows_cast_including_ties_and_clipping():
    bound = 20.0
    rng = np.random.default_rng(0)
    levels = np.arange(255)
    ties = ((levels + 0.5) * 2 * bound / 255 - bound).astype(np.float32)  # x.5 levels, ~float32
    v = np.concatenate([rng.uniform(-30, 30, 20000).astype(np.float32), ties,
                        np.nextafter(ties, np.float32(99)), np.nextafter(ties, np.float32(-99)),
                        np.float32([-bound, bound, 0.0, 1e6, -1e6])])
    np.testing.assert_array_equal(quantize(v, bound), denseflow_cast(v, bound))


def test_quantisation_error_is_half_a_level_inside_the_bound():
    bound = 20.0
    v = np.linspace(-bound, bound, 100001, dtype=np.float32)
    err = np.abs(dequantize(quantize(v, bound), bound) - v).max()
    assert err <= rawframes.quantization_error(bound) + 1e-5
    assert err > 0.99 * rawframes.quantization_error(bound)  # the bound is tight


def test_frame_names():
    assert rawframes.frame_name("img", 1) == "img_00001.jpg"
    assert rawframes.frame_name("flow_x", 0) == "flow_x_00000.jpg"
    assert rawframes.frame_name("flow_y", 12, step=2) == "flow_y_p2_00012.jpg"
    assert rawframes.frame_name("flow_x", 1, backward=True) == "flow_x_m1_00001.jpg"
    assert rawframes.frame_name("flow_y", 4, step=2, backward=True) == "flow_y_m2_00004.jpg"
    assert rawframes.is_frame_file("flow_x_p2_00003.jpg") and not rawframes.is_frame_file("x.jpg")


def _touch_video(folder: Path, n_img: int, n_flow: int, start: int = 1, step: int = 1,
                 size=(6, 8), n_backward: int = 0) -> Path:
    """A rawframes folder; backward pairs numbered as denseflow does, from ``start + step``."""
    rng = np.random.default_rng(n_img * 10 + n_flow)
    folder.mkdir(parents=True)
    for i in range(n_img):
        (folder / rawframes.frame_name("img", start + i)).write_bytes(
            rawframes.encode_jpeg(rng.integers(0, 255, (*size, 3), dtype=np.uint8)))
    for i in range(n_flow):
        for kind in ("flow_x", "flow_y"):
            (folder / rawframes.frame_name(kind, start + i, step)).write_bytes(
                rawframes.encode_jpeg(np.full(size, 100 + i, np.uint8)))
    for i in range(n_backward):
        for kind in ("flow_x", "flow_y"):
            (folder / rawframes.frame_name(kind, start + step + i, step, backward=True)
             ).write_bytes(rawframes.encode_jpeg(np.full(size, 50 + i, np.uint8)))
    return folder


def test_scan_folder_reads_both_numberings_and_the_step_variant(tmp_path):
    one = rawframes.scan_folder(_touch_video(tmp_path / "one", 5, 4, start=1))
    zero = rawframes.scan_folder(_touch_video(tmp_path / "zero", 5, 4, start=0))
    p2 = rawframes.scan_folder(_touch_video(tmp_path / "p2", 7, 5, start=0, step=2))
    assert (one.problems, zero.problems, p2.problems) == ([], [], [])
    assert one.rgb == [1, 2, 3, 4, 5] and one.flow == [1, 2, 3, 4] and one.flow_step == 1
    assert zero.rgb == [0, 1, 2, 3, 4] and zero.flow == [0, 1, 2, 3]
    assert p2.flow_step == 2 and p2.flow == [0, 1, 2, 3, 4]
    assert "flow_{x,y}_p2_{:05d}.jpg from 0" in p2.naming()


def test_scan_folder_reports_count_mismatch_gap_and_unpaired_flow(tmp_path):
    short = rawframes.scan_folder(_touch_video(tmp_path / "short", 5, 3))
    assert short.problems == ["5 frames but 3 flow pairs of step 1 (expected 4)"]
    gap = _touch_video(tmp_path / "gap", 5, 4)
    (gap / "img_00003.jpg").unlink()
    assert any("img numbering has a gap: 2 is followed by 4" in p
               for p in rawframes.scan_folder(gap).problems)
    unpaired = _touch_video(tmp_path / "unpaired", 5, 4)
    (unpaired / "flow_y_00004.jpg").unlink()
    assert "4 flow_x but 3 flow_y files (index 4 is only in flow_x)" in \
        rawframes.scan_folder(unpaired).problems[0]


def test_scan_folder_reports_a_gap_after_the_first_image(tmp_path):
    """A gap between the first and second image (img_00002 lost in a copy) is reported like any
    other: otherwise the import would read frames 1, 3, 4 as consecutive and compute flow across
    the missing frame."""
    folder = _touch_video(tmp_path / "v", 4, 0)
    (folder / "img_00002.jpg").unlink()
    video = rawframes.scan_folder(folder)
    assert video.rgb == [1, 3, 4]
    assert any("img numbering has a gap: 1 is followed by 3" in p for p in video.problems)


@pytest.mark.parametrize("step", [0, -2])
def test_scan_folder_takes_a_step_below_one_in_the_info_file_as_one_with_a_note(tmp_path, step):
    """A .flowkit-video.json whose step is 0 or negative (hand-edited or written by another tool)
    cannot be a store step: the step is taken as 1 and a note says so, rather than the import
    dividing frame counts by 0 or a negative number."""
    folder = _touch_video(tmp_path / "v", 3, 2)
    (folder / rawframes.INFO_FILE).write_text(f'{{"step": {step}}}')
    video = rawframes.scan_folder(folder)
    assert video.source_step == 1 and video.problems == []
    assert any(rawframes.INFO_FILE in n and "taken as 1" in n and f"step {step}" in n
               for n in video.notes), video.notes


def test_scan_folder_reads_backward_flow_numbered_from_the_frame_it_starts_from(tmp_path):
    both = rawframes.scan_folder(_touch_video(tmp_path / "both", 5, 4, start=0, n_backward=4))
    assert both.problems == [] and both.flow == [0, 1, 2, 3] and both.backward == [1, 2, 3, 4]
    assert "flow_{x,y}_m1_{:05d}.jpg from 1" in both.naming()
    alone = rawframes.scan_folder(_touch_video(tmp_path / "alone", 7, 0, start=1, step=2,
                                               n_backward=5))
    assert alone.problems == [] and alone.flow_step == 2 and alone.backward == [3, 4, 5, 6, 7]
    flow = rawframes.read_flow(both, both.backward[1:2], bound=20.0, backward=True)
    np.testing.assert_allclose(flow[0], dequantize(np.full((2, 6, 8), 51, np.uint8), 20.0))


def test_scan_folder_reports_backward_flow_that_does_not_pair_up(tmp_path):
    short = rawframes.scan_folder(_touch_video(tmp_path / "short", 5, 4, n_backward=3))
    assert short.problems == ["3 backward flow pairs but 4 expected (as many as forward pairs)"]
    shifted = _touch_video(tmp_path / "shifted", 5, 4, start=0)
    for i in range(4):  # numbered by the frame the pair ends in: not denseflow's numbering
        for kind in ("flow_x", "flow_y"):
            (shifted / rawframes.frame_name(kind, i, backward=True)).write_bytes(b"")
    assert "backward flow numbering starts at 0, expected 1" in \
        rawframes.scan_folder(shifted).problems[0]
    other_step = _touch_video(tmp_path / "other", 5, 4, n_backward=0)
    (other_step / "flow_x_m2_00003.jpg").write_bytes(b"")
    (other_step / "flow_y_m2_00003.jpg").write_bytes(b"")
    scanned = rawframes.scan_folder(other_step)
    assert scanned.problems == [] and scanned.backward == []
    assert "backward flow of step 2 ignored (forward flow has step 1)" in scanned.notes


def test_scan_folder_reads_tsn_x_y_names_and_names_files_it_does_not_read(tmp_path):
    """x_%05d.jpg / y_%05d.jpg (TSN dense_flow; mmaction2's filename_tmpl '{}_{:05d}.jpg') are
    flow_x / flow_y; both namings in one folder are a problem; other files are named in a note
    (hidden files, such as flowkit's .flowkit-video.json, are not)."""
    folder = _touch_video(tmp_path / "tsn", 4, 0)
    for i in range(1, 4):
        for c in "xy":
            (folder / f"{c}_{i:05d}.jpg").write_bytes(
                rawframes.encode_jpeg(np.full((6, 8), 100 + i if c == "x" else 60, np.uint8)))
    (folder / "notes.txt").write_text("x")
    (folder / rawframes.INFO_FILE).write_text('{"step": 3}')
    video = rawframes.scan_folder(folder)
    assert video.problems == [] and video.flow == [1, 2, 3] and video.flow_prefix == ""
    assert video.source_step == 3
    assert "{x,y}_{:05d}.jpg from 1" in video.naming() and "flow_{x,y}" not in video.naming()
    assert video.notes == ["1 files not read, their names are no rawframes names (img_*, "
                           "flow_x_* / flow_y_*, x_* / y_*, flow_*.png): notes.txt"]
    flow = rawframes.read_flow(video, [2], bound=20.0)
    np.testing.assert_allclose(flow[0], dequantize(np.stack([np.full((6, 8), 102, np.uint8),
                                                             np.full((6, 8), 60, np.uint8)]), 20.0),
                               atol=2 * 20.0 / 255)
    assert rawframes.is_frame_file("x_00001.jpg") and rawframes.is_frame_file("y_m1_00002.jpg")
    assert rawframes.find_videos(tmp_path) == ["tsn"]
    mixed = _touch_video(tmp_path / "mixed", 4, 3)
    for i in range(1, 4):
        for c in "xy":
            (mixed / f"{c}_{i:05d}.jpg").write_bytes(b"")
    assert any("both flow_x_* / flow_y_* and x_* / y_*" in p
               for p in rawframes.scan_folder(mixed).problems)


def test_read_flow_dequantises_with_the_bound(tmp_path):
    video = rawframes.scan_folder(_touch_video(tmp_path / "v", 3, 2))
    flow = rawframes.read_flow(video, video.flow, bound=20.0)
    assert flow.shape == (2, 2, 6, 8) and flow.dtype == np.float32
    # constant gray images survive JPEG exactly: level 100 + i
    np.testing.assert_allclose(flow[1], dequantize(np.full((2, 6, 8), 101, np.uint8), 20.0))


def test_read_flow_refuses_a_pair_whose_images_differ_in_size(tmp_path):
    """A flow_y image of another size than its flow_x (a resized or foreign file) is a
    RawframesError naming the folder and the pair, not a bare numpy error from stacking them."""
    folder = _touch_video(tmp_path / "v", 3, 2)
    (folder / "flow_y_00002.jpg").write_bytes(
        rawframes.encode_jpeg(np.full((4, 8), 100, np.uint8)))
    video = rawframes.scan_folder(folder)
    assert video.problems == []
    with pytest.raises(rawframes.RawframesError, match="flow pair 2 has flow_x"):
        rawframes.read_flow(video, video.flow, bound=20.0)


def write_denseflow_h5(path: Path, flow: np.ndarray, step: int = 1, backward: bool = False,
                       ext: str = ".jpg") -> Path:
    """A file laid out as denseflow's writeHDF5 writes it: root datasets flow_x_00000.jpg ...
    (``ext=""``: the names of denseflow since its PNG output, flow_x_00000); backward pairs
    (``flow_x_m<s>_*``) numbered from ``step``, by the frame each starts from."""
    tag = f"_m{step}" if backward else f"_p{step}" if step > 1 else ""
    base = step if backward else 0
    with h5py.File(path, "w") as f:
        for i, pair in enumerate(flow):
            f[f"flow_x{tag}_{base + i:05d}{ext}"] = pair[0].astype(np.float32)
            f[f"flow_y{tag}_{base + i:05d}{ext}"] = pair[1].astype(np.float32)
    return path


def test_denseflow_h5_reads_float_flow_and_its_step(tmp_path):
    flow = np.random.default_rng(1).normal(0, 5, (4, 2, 6, 8)).astype(np.float32)
    path = write_denseflow_h5(tmp_path / "v_p2.h5", flow, step=2)
    assert denseflow.parse_name("v_p2.h5") == ("v", 2, False)
    assert denseflow.parse_name("v.h5") == ("v", 1, False)
    assert denseflow.parse_name("v_m2.h5") == ("v", 2, True)
    assert denseflow.is_denseflow_file(path)
    back, step = denseflow.read_flow(path)
    assert step == 2
    np.testing.assert_array_equal(back, flow)


def test_denseflow_h5_with_a_gap_crossed_names_or_int_flow_is_refused(tmp_path):
    """Files that would be read as the wrong flow are refused with what is wrong: pair 3 missing
    (pair 4 would be read as pair 3), as many x as y names that do not pair up (x of pair 2 with y
    of pair 3), and integer datasets (quantised flow, not denseflow's float pixels)."""
    def h5(name, pairs):
        with h5py.File(tmp_path / name, "w") as f:
            for axis, indices, dtype in pairs:
                for i in indices:
                    f[f"flow_{axis}_{i:05d}.jpg"] = np.full((4, 5), i, dtype)
        return tmp_path / name

    cases = {"flow numbering has a gap": [("x", (0, 1, 2, 4), np.float32),
                                          ("y", (0, 1, 2, 4), np.float32)],
             "do not pair up": [("x", (0, 1, 2), np.float32), ("y", (0, 1, 3), np.float32)],
             "must all be float": [("x", (0, 1), np.int16), ("y", (0, 1), np.int16)]}
    for k, (phrase, pairs) in enumerate(cases.items()):
        with pytest.raises(denseflow.DenseflowError, match=phrase):
            denseflow.open_flow(h5(f"v{k}.h5", pairs))


@pytest.mark.parametrize("ext", [".jpg", ""])
def test_denseflow_h5_reads_backward_flow_and_names_without_jpg(tmp_path, ext):
    flow = np.random.default_rng(2).normal(0, 5, (3, 2, 6, 8)).astype(np.float32)
    path = write_denseflow_h5(tmp_path / "v_m1.h5", flow, backward=True, ext=ext)
    assert denseflow.is_denseflow_file(path)
    lazy = denseflow.open_flow(path)
    assert (lazy.backward, lazy.step, len(lazy)) == (True, 1, 3)
    assert lazy.names[0] == (f"flow_x_m1_00001{ext}", f"flow_y_m1_00001{ext}")
    np.testing.assert_array_equal(lazy.read([0, 1, 2]), flow)
    forward = denseflow.open_flow(write_denseflow_h5(tmp_path / "v.h5", flow, ext=ext))
    assert not forward.backward and forward.names[0] == (f"flow_x_00000{ext}",
                                                         f"flow_y_00000{ext}")


def test_denseflow_h5_with_unpaired_datasets_is_refused(tmp_path):
    path = write_denseflow_h5(tmp_path / "v.h5", np.zeros((3, 2, 4, 4), np.float32))
    with h5py.File(path, "a") as f:
        del f["flow_y_00002.jpg"]
    with pytest.raises(denseflow.DenseflowError, match="do not pair up"):
        denseflow.read_flow(path)


def test_denseflow_h5_of_two_sizes_is_refused_before_reading(tmp_path):
    path = write_denseflow_h5(tmp_path / "v.h5", np.zeros((2, 2, 4, 4), np.float32))
    with h5py.File(path, "a") as f:
        del f["flow_x_00001.jpg"]
        f["flow_x_00001.jpg"] = np.zeros((4, 5), np.float32)
    with pytest.raises(denseflow.DenseflowError, match="of one size"):
        denseflow.open_flow(path)
    values = np.arange(96, dtype=np.float32).reshape(3, 2, 4, 4)
    lazy = denseflow.open_flow(write_denseflow_h5(tmp_path / "w.h5", values))
    assert (len(lazy), lazy.step, lazy.shape) == (3, 1, (4, 4))
    assert lazy.read([2])[0, 1, 0, 0] == 80.0  # pair 2, v, first pixel


def test_scan_folder_reads_numbers_of_any_padding(tmp_path):
    """ffmpeg's img_%06d.jpg or unpadded img_%d.jpg: read under the names found, not rebuilt as
    %05d; two files of one number are a problem."""
    six = _touch_video(tmp_path / "six", 3, 2)
    unpadded = _touch_video(tmp_path / "unpadded", 11, 10)
    for folder, name in ((six, lambda kind, i: f"{kind}_{i:06d}.jpg"),
                         (unpadded, lambda kind, i: f"{kind}_{i}.jpg")):
        for path in sorted(folder.iterdir()):
            kind, index = path.stem.rsplit("_", 1)
            path.rename(folder / name(kind, int(index)))
    for folder, digits in ((six, "{:06d}"), (unpadded, "{:d}")):
        video = rawframes.scan_folder(folder)
        assert video.problems == []
        assert rawframes.read_rgb(video, video.rgb).shape[0] == len(video.rgb)
        flow = rawframes.read_flow(video, video.flow[1:2], bound=20.0)
        np.testing.assert_allclose(flow[0], dequantize(np.full((2, 6, 8), 101, np.uint8), 20.0))
        assert f"img_{digits}.jpg from 1" in video.naming()
    (unpadded / "img_00003.jpg").write_bytes((unpadded / "img_3.jpg").read_bytes())
    assert "1 frames have two files each (img_00003.jpg and img_3.jpg, ...)" in \
        rawframes.scan_folder(unpadded).problems[0]


def denseflow_png(flow: np.ndarray) -> np.ndarray:
    """One pair ``(2, H, W)`` as denseflow's ``convertFlowToPngImage`` (src/common.cpp) codes it,
    written from its source: per component a bound b = 4 ceil(min(cap, max |f|) 128 / 127 / 4)
    (cap: the width for u, the height for v; at most 1020), 4 more when b / 4 is even;
    ``convertTo(CV_8U, 1 / (b / 128), 128)`` (rounded, saturated) into B (u) and G (v); b_u / 4
    filled into R over rows 0 .. H // 2 and b_v / 4 below. Returns the BGR image."""
    _, h, w = flow.shape

    def bound(values: np.ndarray, cap: int) -> float:
        b = min(255.0 * 4, math.ceil(min(cap, float(np.abs(values).max())) * 128.0 / 127.0 / 4)
                * 4)
        return b + 4 if int(b) % 8 == 0 else b

    def level(values: np.ndarray, b: float) -> np.ndarray:
        scaled = values.astype(np.float32) * np.float32(1.0 / (b / 128.0)) + np.float32(128.0)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    bu, bv = bound(flow[0], w), bound(flow[1], h)
    r = np.empty((h, w), np.uint8)
    r[: h // 2 + 1], r[h // 2 + 1:] = bu / 4, bv / 4
    return np.dstack([level(flow[0], bu), level(flow[1], bv), r])


def test_denseflow_png_decodes_what_denseflows_encoder_writes(tmp_path):
    """``denseflow -st png``: one flow_%05d.png per pair, u in B, v in G, per-pair bounds in R;
    decoded within b / 256 of the flow (b just above the pair's largest value), through a PNG
    file; a picture of flow (colours, no bounds in R) is refused, naming the file."""
    rng = np.random.default_rng(4)
    h, w = 7, 10
    for scale in (0.3, 3.0, 6.5):
        flow = rng.uniform(-scale, scale, (2, h, w)).astype(np.float32)
        path = tmp_path / f"flow_{int(10 * scale):05d}.png"
        assert cv2.imwrite(str(path), denseflow_png(flow))
        image = rawframes.read_image(path, bgr=True)
        got = rawframes.decode_denseflow_png(image, path)
        bounds = 4 * image[[0, -1], 0, 2].astype(np.float32)
        assert got.shape == (2, h, w) and got.dtype == np.float32
        assert np.all(np.abs(got - flow).reshape(2, -1).max(1) <= bounds / 256 + 1e-6)
        assert np.all(bounds <= np.abs(flow).reshape(2, -1).max(1) * 128 / 127 + 8)
    picture = rng.integers(0, 256, (h, w, 3), np.uint8)
    with pytest.raises(rawframes.RawframesError, match=r"x.png: not denseflow's PNG flow"):
        rawframes.decode_denseflow_png(picture, "x.png")


def test_scan_folder_reads_denseflows_png_flow(tmp_path):
    """flow_%05d.png (and backward flow_m1_%05d.png) beside img_%05d.jpg, from 0, as denseflow
    writes them: both components from one file; mixing them with flow_x images is refused."""
    folder = _touch_video(tmp_path / "v", 4, 0, start=0)
    rng = np.random.default_rng(8)
    flows = rng.uniform(-3, 3, (3, 2, 6, 8)).astype(np.float32)
    for i, pair in enumerate(flows):
        cv2.imwrite(str(folder / rawframes.frame_name("flow", i, ext="png")), denseflow_png(pair))
        cv2.imwrite(str(folder / rawframes.frame_name("flow", i + 1, ext="png", backward=True)),
                    denseflow_png(-pair))
    video = rawframes.scan_folder(folder)
    assert video.problems == [] and video.flow_png
    assert (video.flow, video.backward) == ([0, 1, 2], [1, 2, 3])
    assert video.naming() == ("img_{:05d}.jpg from 0, flow_{:05d}.png from 0, "
                              "flow_m1_{:05d}.png from 1")
    np.testing.assert_allclose(rawframes.read_flow(video, video.flow), flows, atol=4 * 3 / 256)
    np.testing.assert_allclose(rawframes.read_flow(video, video.backward, backward=True), -flows,
                               atol=4 * 3 / 256)
    (folder / "flow_x_00000.png").write_bytes(b"")
    (folder / "flow_y_00000.png").write_bytes(b"")
    assert "both flow_x / flow_y images and denseflow's PNG flow_*.png files; keep one" in \
        rawframes.scan_folder(folder).problems


def test_find_videos_enters_each_real_directory_once(tmp_path):
    """A link back up the tree is a loop, not more videos; a second link to a video folder is
    the same video; both are noted."""
    _touch_video(tmp_path / "raw" / "jump" / "v0", 2, 1)
    os.symlink("..", tmp_path / "raw" / "jump" / "up")
    os.symlink("v0", tmp_path / "raw" / "jump" / "v1")  # sorts after v0
    notes: list[str] = []
    assert rawframes.find_videos(tmp_path / "raw", notes) == ["jump/v0"]
    assert any("jump/up: skipped, the same directory as" in n for n in notes)
    assert any("jump/v1: skipped, the same directory as" in n for n in notes)


def test_find_videos_notes_folders_of_images_under_other_names(tmp_path):
    """Jester's 00001.jpg and EPIC-KITCHENS' frame_0000000001.jpg folders were skipped without a
    word ("2 done, 0 failed"): they are counted in one note with an example and the rename that
    makes them rawframes; a folder of rawframes, one of other files and hidden images are not."""
    root = tmp_path / "raw"
    _touch_video(root / "v0", 2, 1)
    for folder, name in (("jester/00001", "{:05d}.jpg"), ("epic/P01_01", "frame_{:010d}.jpg")):
        (root / folder).mkdir(parents=True)
        for i in (1, 2):
            (root / folder / name.format(i)).write_bytes(b"")
    (root / "docs").mkdir()
    (root / "docs" / "readme.txt").write_text("x")
    (root / "hidden").mkdir()
    (root / "hidden" / ".thumb.png").write_bytes(b"")
    notes: list[str] = []
    assert rawframes.find_videos(root, notes) == ["v0"]
    assert len(notes) == 1, notes
    assert notes[0].startswith("2 folders hold images but no rawframes names (img_*, flow_x_* / "
                               "flow_y_*), e.g. epic/P01_01/frame_0000000001.jpg: not imported")
    assert "img_%05d.jpg" in notes[0] and "for f in " in notes[0]
    rawframes.find_videos(root / "v0", notes)  # a folder of rawframes alone: nothing to say
    assert len(notes) == 1, notes


def test_the_rename_the_note_gives_makes_rawframes_of_them(tmp_path):
    """The note's bash loop, run as given (a root with a space in its name), renames Jester's
    and EPIC-KITCHENS' frames to img_<number> (their padding kept: any padding is read), and the
    folders then read as videos. It touches nothing else: a good folder's img_* and flow images
    (it renamed flow_y_00001.jpg over img_00001.jpg), names without a number at their end (four
    frames became one img_.jpg), and an existing target."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    root = tmp_path / "my raw"
    good = _touch_video(root / "v0", 2, 1)
    before = {name: (good / name).read_bytes() for name in os.listdir(good)}
    for folder, name in (("jester", "{:05d}.jpg"), ("epic", "frame_{:010d}.jpg"),
                         ("stereo", "{:05d}_left.jpg")):
        (root / folder).mkdir()
        for i in (1, 2):
            (root / folder / name.format(i)).write_bytes(name.format(i).encode())
    (root / "jester" / "img_00002.jpg").write_bytes(b"already")  # a target there: kept
    notes: list[str] = []
    rawframes.find_videos(root, notes)
    loop = notes[0].split("e.g. with bash: ", 1)[1]
    subprocess.run(["bash", "-c", loop], check=True, cwd=tmp_path, capture_output=True)
    assert {name: (good / name).read_bytes() for name in os.listdir(good)} == before
    assert sorted(os.listdir(root / "epic")) == ["img_0000000001.jpg", "img_0000000002.jpg"]
    assert sorted(os.listdir(root / "jester")) == ["00002.jpg", "img_00001.jpg", "img_00002.jpg"]
    assert (root / "jester" / "img_00002.jpg").read_bytes() == b"already"
    assert sorted(os.listdir(root / "stereo")) == ["00001_left.jpg", "00002_left.jpg"]
    assert rawframes.find_videos(root) == ["epic", "jester", "v0"]
    assert rawframes.scan_folder(root / "epic").rgb == [1, 2]
