"""flowkit export rawframes / flowkit import rawframes (flowkit/interop/): the export read back the
way mmaction2's RawframeDataset reads it, the round trip's flow error, resume, count checks,
naming variants, denseflow HDF5, annotation lists, and training on an imported store."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
import pytest

from flowkit import denseflow, jpeg, rawframes
from flowkit.errors import FlowkitError
from flowkit.interop import ExportConfig, ImportConfig, export_rawframes, import_rawframes
from flowkit.progress import Progress, StopFlag, Stopped
from flowkit.rawframes import frame_name, quantization_error
from flowkit.store import FlowStore
from flowkit.store.codecs import dequantize, quantize
from test_rawframes import write_denseflow_h5
from test_store import TaskRecorder

CLASSES = ["jump", "run"]
FRAMES, SIZE, BOUND = 6, (24, 32), 20.0


def smooth_flow(rng, n: int) -> np.ndarray:
    """``(n, 2, H, W)`` affine flow fields reaching about +-30 px: some values beyond the bound."""
    h, w = SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, 2, h, w), np.float32)
    for t in range(n):
        a, b, c, d = rng.uniform(-1.2, 1.2, 4)
        out[t, 0] = a * (xx - w / 2) + b * (yy - h / 2) + rng.uniform(-6, 6)
        out[t, 1] = c * (xx - w / 2) + d * (yy - h / 2) + rng.uniform(-6, 6)
    return out


@pytest.fixture(scope="module")
def source_store(tmp_path_factory) -> Path:
    """2 classes x 2 videos of 6 frames, 24x32: JPEG RGB and float16 flow under flow/tvl1."""
    path = tmp_path_factory.mktemp("interop") / "store"
    rng = np.random.default_rng(7)
    with FlowStore(path, "a", classes=CLASSES) as store:
        for label, name in enumerate(CLASSES):
            for i in range(2):
                with store.writer(f"{name}/{name}_{i}", source=f"{name}_{i}.mp4", fps=25.0,
                                  label=label, label_name=name, flow_codec="float16") as w:
                    w.append_rgb(rng.integers(0, 256, (FRAMES, *SIZE, 3), dtype=np.uint8))
                    w.append_flow("tvl1", smooth_flow(rng, FRAMES - 1),
                                  engine={"engine": "tvl1", "version": "test", "params": {}})
    return path


@pytest.fixture(scope="module")
def exported(source_store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "rawframes"
    split = out.parent / "trainlist01.txt"
    split.write_text("run/run_1.avi 2\njump/jump_0.avi 1\n")
    summary = export_rawframes(source_store, out, ExportConfig(split_lists=[split], workers=2))
    assert summary.count("done") == 4 and summary.count("failed") == 0
    return out


def read_like_rawframe_dataset(ann_file: Path, data_prefix: Path, start_index: int, modality: str,
                               filename_tmpl: str):
    """What mmaction2's RawframeDataset + RawFrameDecode read for each annotation line (without
    mmaction2): ``(frame_dir, total_frames, label, [every file a clip may ask for])``."""
    videos = []
    for line in ann_file.read_text().splitlines():
        frame_dir, total, label = line.split()  # single-label, no offset
        files = []
        for index in range(start_index, start_index + int(total)):
            if modality == "Flow":
                files += [filename_tmpl.format("x", index), filename_tmpl.format("y", index)]
            else:
                files.append(filename_tmpl.format(index))
        videos.append((data_prefix / frame_dir, int(total), int(label), files))
    return videos


def test_export_reads_back_as_mmaction2_would(exported, source_store):
    store = FlowStore(source_store)
    labels = {k: store.meta(k)["label"] for k in store.keys()}
    assert (exported / "label_map.txt").read_text().split() == CLASSES
    rgb = read_like_rawframe_dataset(exported / "all_rawframes.txt", exported, 1, "RGB",
                                     "img_{:05}.jpg")
    flow = read_like_rawframe_dataset(exported / "all_flow.txt", exported, 1, "Flow",
                                      "flow_{}_{:05d}.jpg")
    assert [str(v[0].relative_to(exported)) for v in rgb] == sorted(labels)
    for frame_dir, total, label, files in rgb + flow:
        assert label == labels[frame_dir.relative_to(exported).as_posix()]
        assert all((frame_dir / f).is_file() for f in files)
        names = set(os.listdir(frame_dir))
        assert len([n for n in names if n.startswith("img_")]) == FRAMES
        assert len([n for n in names if n.startswith("flow_x_")]) == FRAMES - 1
    assert {v[1] for v in rgb} == {FRAMES} and {v[1] for v in flow} == {FRAMES - 1}
    # the split list: its videos, in its order
    assert [line.split()[0] for line in
            (exported / "trainlist01_rawframes.txt").read_text().splitlines()] == \
        ["run/run_1", "jump/jump_0"]


def test_exported_flow_is_denseflows_quantisation_up_to_jpeg(exported, source_store):
    store = FlowStore(source_store)
    worst_levels, worst_px = 0, 0.0
    for key in store.keys():
        flow = store.read_flow(key, "tvl1")
        for t in range(len(flow)):
            for c, kind in enumerate(("flow_x", "flow_y")):
                image = cv2.imread(str(exported / key / frame_name(kind, t + 1)), 0)
                exact = quantize(flow[t, c], BOUND)
                worst_levels = max(worst_levels, int(np.abs(image.astype(int) - exact).max()))
                inside = np.abs(flow[t, c]) <= BOUND
                worst_px = max(worst_px, float(np.abs(dequantize(image, BOUND) - flow[t, c])
                                               [inside].max()))
    # JPEG q95 moves smooth 8-bit flow images by a few levels (3 measured here); the pixel error
    # is the quantiser's half level plus those levels
    assert 0 < worst_levels <= 4
    assert worst_px <= quantization_error(BOUND) + worst_levels * 2 * BOUND / 255 + 1e-4


def test_export_with_zero_based_names(source_store, tmp_path):
    out = tmp_path / "raw0"
    export_rawframes(source_store, out, ExportConfig(start_index=0, rgb=False))
    names = sorted(os.listdir(out / "jump" / "jump_0"))
    assert names[0] == "flow_x_00000.jpg" and names[-1] == f"flow_y_{FRAMES - 2:05d}.jpg"
    assert not (out / "all_rawframes.txt").exists() and (out / "all_flow.txt").is_file()


def test_export_resumes_and_refuses_other_options(source_store, tmp_path):
    out = tmp_path / "raw"
    export_rawframes(source_store, out, ExportConfig())
    shutil.rmtree(out / "run" / "run_0")
    (out / "run" / ".run_0.partial").mkdir()  # a crashed run's leftover
    (out / "run" / ".run_0.partial" / "img_00009.jpg").write_bytes(b"junk")
    again = export_rawframes(source_store, out, ExportConfig())
    assert again.count("skipped") == 3 and again.count("done") == 1
    assert not (out / "run" / ".run_0.partial").exists()
    assert len(os.listdir(out / "run" / "run_0")) == FRAMES + 2 * (FRAMES - 1)
    with pytest.raises(FlowkitError, match="other options.*bound 20.0 -> 32.0"):
        export_rawframes(source_store, out, ExportConfig(bound=32.0))


def test_a_resumed_export_opens_no_video_file_it_skips(source_store, tmp_path, monkeypatch):
    """A rerun over an exported store takes each video's facts (its label too) from the store's
    index: 300k videos are stat'ed, not opened, before the first new one is written."""
    import h5py

    out = tmp_path / "raw"
    export_rawframes(source_store, out, ExportConfig())
    opened = []

    class Counted(h5py.File):
        def __init__(self, name, *args, **kwargs):
            opened.append(str(name))
            super().__init__(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", Counted)
    again = export_rawframes(source_store, out, ExportConfig())
    assert again.count("skipped") == 4 and opened == []
    assert {r.key: r.label for r in again.results} == {
        f"{name}/{name}_{i}": label for label, name in enumerate(CLASSES) for i in range(2)}
    shutil.rmtree(out / "run" / "run_0")  # a video written again is opened: it alone
    assert export_rawframes(source_store, out, ExportConfig()).count("done") == 1
    assert opened and all(path.endswith("run_0.h5") for path in opened)


def test_export_refuses_a_non_empty_folder_that_holds_no_export(source_store, tmp_path):
    """An output folder that already holds other files (not a flowkit export: no stamp) is
    refused before anything is written: an export mixed into someone's folder could not be told
    apart from what was there, nor resumed or removed cleanly."""
    out = tmp_path / "raw"
    out.mkdir()
    (out / "x.txt").write_text("mine")
    with pytest.raises(FlowkitError, match="not empty and holds no flowkit export"):
        export_rawframes(source_store, out, ExportConfig())
    assert os.listdir(out) == ["x.txt"] and (out / "x.txt").read_text() == "mine"


class StopAfterFirstVideo(Progress):
    """Sets ``stop`` as soon as one video is finished, like Ctrl-C in the middle of a run."""

    def __init__(self, stop: StopFlag):
        self.stop = stop

    def _changed(self, task):
        if task.description == "videos" and task.completed >= 1:
            self.stop.set()


def test_export_stops_cleanly_and_resumes(source_store, tmp_path):
    out, stop = tmp_path / "raw", StopFlag()
    with pytest.raises(Stopped):
        export_rawframes(source_store, out, ExportConfig(), progress=StopAfterFirstVideo(stop),
                         stop=stop)
    finished = [p for p in out.glob("*/*") if p.is_dir()]
    assert 1 <= len(finished) < 4 and not list(out.glob("*/.*.partial"))
    for folder in finished:  # whatever is there is complete
        assert len(os.listdir(folder)) == FRAMES + 2 * (FRAMES - 1)
    again = export_rawframes(source_store, out, ExportConfig())
    assert again.count("skipped") == len(finished) and again.count("done") == 4 - len(finished)


def test_the_frames_counter_advances_per_chunk_while_a_video_is_written(source_store, tmp_path,
                                                                        monkeypatch):
    """The "frames" counter moves with each chunk written, not once per finished video (a long
    video held it still, then jumped); it ends at the exported videos' frames, RGB frames or,
    without them, flow pairs, and a video that fails takes back what it counted."""
    from flowkit.interop import export

    monkeypatch.setattr(export, "CHUNK", 2)
    seen = TaskRecorder()
    export_rawframes(source_store, tmp_path / "raw", ExportConfig(), progress=seen)
    frames = [done for d, done, _ in seen.steps if d == "frames"]
    assert frames == list(range(2, 4 * FRAMES + 1, 2))  # one worker: the chunks one by one
    assert seen.steps.index(("frames", 2, None)) < seen.steps.index(("videos", 1, 4))
    assert ("frames", 4 * FRAMES, None) in seen.tasks
    seen = TaskRecorder()
    export_rawframes(source_store, tmp_path / "flow", ExportConfig(rgb=False), progress=seen)
    assert [done for d, done, _ in seen.steps if d == "frames"][:3] == [2, 4, 5]
    assert ("frames", 4 * (FRAMES - 1), None) in seen.tasks

    def fail_late(partial, first, **images):  # a disk full in the last RGB chunk
        if first == FRAMES - 2:
            raise OSError(28, "No space left on device")
        return write_frames(partial, first, **images)

    write_frames = rawframes.write_frames
    monkeypatch.setattr(rawframes, "write_frames", fail_late)
    seen = TaskRecorder()
    summary = export_rawframes(source_store, tmp_path / "full", ExportConfig(), progress=seen)
    assert summary.count("failed") == 4
    assert ("frames", 0, None) in seen.tasks and ("frames", 4, None) in seen.steps


def test_a_stopped_export_takes_back_the_frames_of_its_unfinished_video(source_store, tmp_path,
                                                                       monkeypatch):
    """A stop (Ctrl-C) after a video's first chunk removes its partial folder, and the "frames"
    counter takes back what that video counted: it ends at the frames exported (0), not at the
    chunk's frames that are gone."""
    from flowkit.interop import export

    monkeypatch.setattr(export, "CHUNK", 2)
    stop, write_frames = StopFlag(), rawframes.write_frames

    def stop_after_a_chunk(partial, first, **images):
        write_frames(partial, first, **images)
        if "rgb" in images:
            stop.set()

    monkeypatch.setattr(rawframes, "write_frames", stop_after_a_chunk)
    seen = TaskRecorder()
    with pytest.raises(Stopped):
        export_rawframes(source_store, tmp_path / "raw", ExportConfig(), progress=seen, stop=stop)
    assert ("frames", 2, None) in seen.steps and ("frames", 0, None) in seen.tasks
    assert not [p for p in (tmp_path / "raw").glob("*/*") if p.is_dir()]


def test_one_bad_video_does_not_stop_an_export(source_store, tmp_path):
    store_path = tmp_path / "store"
    shutil.copytree(source_store, store_path)
    with FlowStore(store_path, "a") as store:  # a second flow, in one video only
        with store.writer("run/run_0", source="x", fps=25.0, label=1, label_name="run") as w:
            w.append_flow("costvolume", np.zeros((FRAMES - 1, 2, *SIZE), np.float32),
                          engine={"engine": "costvolume", "version": "test", "params": {}})
    # the store holds two flows: refused before anything is written (it used to fail each video),
    # naming the fix for a library call too
    with pytest.raises(FlowkitError, match=r"several flows; choose one with --flow: costvolume, "
                                           r"tvl1 \(ExportConfig\(flow_name=NAME\) in Python\)$"):
        export_rawframes(store_path, tmp_path / "raw", ExportConfig())
    assert not (tmp_path / "raw").exists()
    summary = export_rawframes(store_path, tmp_path / "raw", ExportConfig(flow_name="costvolume"))
    assert summary.count("done") == 1 and summary.count("failed") == 3
    bad = [r for r in summary.results if r.status == "failed"]
    assert all("no flow 'costvolume' (it has: tvl1)" in r.reason for r in bad)
    assert "run/run_0" in (tmp_path / "raw" / "all_rawframes.txt").read_text()
    assert "jump/jump_0" not in (tmp_path / "raw" / "all_rawframes.txt").read_text()
    tvl1 = export_rawframes(store_path, tmp_path / "raw_tvl1", ExportConfig(flow_name="tvl1"))
    assert tvl1.count("done") == 4


def test_round_trip_flow_differs_by_at_most_the_quantisation_error(exported, source_store,
                                                                   tmp_path):
    dst = tmp_path / "imported"
    summary = import_rawframes(exported, dst, ImportConfig(workers=2))
    assert summary.count("done") == 4 and summary.count("failed") == 0
    src, back = FlowStore(source_store), FlowStore(dst)
    assert back.classes == src.classes and back.keys() == src.keys()
    jpeg_levels = 0  # measured on the exported images, as in the test above
    for key in src.keys():
        flow = src.read_flow(key, "tvl1")
        for t in range(len(flow)):
            for c, kind in enumerate(("flow_x", "flow_y")):
                image = cv2.imread(str(exported / key / frame_name(kind, t + 1)), 0)
                exact = quantize(flow[t, c], BOUND)
                jpeg_levels = max(jpeg_levels, int(np.abs(image.astype(int) - exact).max()))
    codec_error = 0.1  # the store's default jpegls bound
    bound = quantization_error(BOUND) + jpeg_levels * 2 * BOUND / 255 + codec_error + 1e-4
    for key in src.keys():
        meta = back.meta(key)
        assert meta["label"] == src.meta(key)["label"] and meta["frame_count"] == FRAMES
        flow, got = src.read_flow(key, "tvl1"), back.read_flow(key, "tvl1")
        inside = np.abs(flow) <= BOUND
        assert np.abs(got - flow)[inside].max() <= bound
        # beyond the bound the value is lost: it comes back as +-bound
        np.testing.assert_allclose(np.abs(got[~inside]), BOUND, atol=bound)
        # RGB: export wrote the stored JPEGs, import stored them as they are: bit for bit
        stored = src.read_rgb(key, decode=False)
        assert [(exported / key / frame_name("img", t + 1)).read_bytes()
                for t in range(FRAMES)] == stored
        assert back.read_rgb(key, decode=False) == stored
    assert summary.to_dict()["rgb_kept_as_is"] == 4 * FRAMES
    record = back.meta(back.keys()[0])["flows"]["tvl1"]
    assert (record["engine"], record["backend"]) == ("mmaction2-rawframes", "external")
    params = record["params"]
    assert params["source_format"] == "mmaction2-rawframes" and params["bound"] == BOUND
    assert params["quantization_error"] == pytest.approx(BOUND / 255)


def _flow_error(src: FlowStore, back: FlowStore, key: str, bound: float,
                back_key: str | None = None) -> float:
    """The largest |flow back - flow stored| of ``key``'s values inside +-``bound``, in px
    (``back_key``: its key in ``back``, if another)."""
    flow, got = src.read_flow(key, "tvl1"), back.read_flow(back_key or key, "tvl1")
    return float(np.abs(got - flow)[np.abs(flow) <= bound].max())


def test_import_reads_the_bound_its_export_recorded(source_store, tmp_path):
    """Rawframes exported with --bound 32 come back with 32 without --bound (noted, in the
    summary and the engine record), not with the default 20 (flow scaled by 20/32); a --bound
    that contradicts the stamp is refused before anything is written, the same one accepted."""
    out = tmp_path / "raw"
    export_rawframes(source_store, out, ExportConfig(bound=32.0))
    summary = import_rawframes(out, tmp_path / "s", ImportConfig())
    src, back = FlowStore(source_store), FlowStore(tmp_path / "s")
    # quantiser + a few JPEG levels of 64/255 px + the codec: far below the 20/32 rescaling's
    # error of several px on flow reaching +-30 px
    assert max(_flow_error(src, back, key, 32.0) for key in src.keys()) < 1.5
    assert back.meta("jump/jump_0")["flows"]["tvl1"]["params"]["bound"] == 32.0
    assert summary.count("done") == 4 and summary.to_dict()["bound"] == 32.0
    assert any("--bound 32" in note and ".flowkit-export.json" in note for note in summary.notes)
    with pytest.raises(FlowkitError, match=r"--bound 20 was given, but .*\.flowkit-export\.json "
                                           r"says .*--bound 32.*delete that file"):
        import_rawframes(out, tmp_path / "s20", ImportConfig(bound=20.0))
    assert not (tmp_path / "s20").exists()
    again = import_rawframes(out, tmp_path / "s", ImportConfig(bound=32.0))  # a rerun: the same
    assert again.count("skipped") == 4


def test_cli_a_rerun_with_another_bound_over_held_videos_is_refused(source_store, tmp_path):
    """Rawframes of --bound 32 without their stamp were imported with the default 20; a rerun
    with the right --bound 32 finds every video held: it is refused, exit 2, one line naming the
    store's bound and the ways out (it used to skip them all, report bound 32 and exit 0, the
    store keeping flow scaled by 20/32)."""
    from click.testing import CliRunner

    from flowkit.cli import main

    out = tmp_path / "raw"
    export_rawframes(source_store, out, ExportConfig(bound=32.0))
    (out / ".flowkit-export.json").unlink()  # rawframes as many labs hold them: no stamp
    assert import_rawframes(out, tmp_path / "s", ImportConfig()).bound == 20.0
    r = CliRunner().invoke(main, ["import", "rawframes", str(out), "-o", str(tmp_path / "s"),
                                  "--bound", "32", "--json"])
    assert r.exit_code == 2 and r.stdout == "", r.output
    (line,) = r.stderr.strip().splitlines()
    assert "holds flow 'tvl1' as mmaction2-rawframes flow (--bound 20" in line, line
    assert "(--bound 32" in line and "Rerun with --bound 20" in line and "-o NEW_STORE" in line
    assert FlowStore(tmp_path / "s").meta("jump/jump_0")["flows"]["tvl1"]["params"]["bound"] == 20
    again = import_rawframes(out, tmp_path / "s", ImportConfig())  # the store's bound: confirmed
    assert again.count("skipped") == 4


def test_cli_a_rerun_over_held_videos_checks_only_their_bound(source_store, tmp_path):
    """A rerun of the same import over held videos skips them, exit 0, where the store's flow of
    them is not another bound's: flow flowkit extract computed (the first import added nothing
    of it), or imported with --flow-codec float16 and rerun without it (both used to be refused,
    exit 2: "the store's copy of them is wrong"); nothing of theirs is written either way."""
    from click.testing import CliRunner

    from flowkit.cli import main

    out = tmp_path / "raw"
    export_rawframes(source_store, out, ExportConfig())
    computed = tmp_path / "computed"
    shutil.copytree(source_store, computed)  # its tvl1 computed by an engine, float16
    float16 = tmp_path / "float16"
    assert import_rawframes(out, float16, ImportConfig(flow_codec="float16")).count("done") == 4
    for store in (computed, float16):
        r = CliRunner().invoke(main, ["import", "rawframes", str(out), "-o", str(store),
                                      "--json"])
        assert r.exit_code == 0, r.output
        assert [v["status"] for v in json.loads(r.stdout)["videos"]] == ["skipped"] * 4
    assert "source_format" not in FlowStore(computed).meta("jump/jump_0")["flows"]["tvl1"]["params"]


def test_a_class_folder_of_an_export_imports_with_the_recorded_bound(source_store, tmp_path):
    """The stamp is in the export's root, above a class folder imported alone; a root holding
    two exports of different bounds is refused, naming both."""
    out = tmp_path / "exports" / "b32"
    export_rawframes(source_store, out, ExportConfig(bound=32.0))
    summary = import_rawframes(out / "jump", tmp_path / "s", ImportConfig())
    src, back = FlowStore(source_store), FlowStore(tmp_path / "s")
    assert _flow_error(src, back, "jump/jump_0", 32.0, back_key="jump_0") < 1.5
    assert back.meta("jump_0")["flows"]["tvl1"]["params"]["bound"] == 32.0
    assert summary.count("done") == 2 and summary.bound == 32.0
    export_rawframes(source_store, tmp_path / "exports" / "b20", ExportConfig())
    with pytest.raises(FlowkitError, match=r"different bounds \(--bound 20 in .*b20.*--bound 32 "
                                           r"in .*b32.*import each export on its own"):
        import_rawframes(tmp_path / "exports", tmp_path / "s2", ImportConfig())


def test_one_video_folder_of_an_export_imports_with_the_recorded_bound(source_store, tmp_path):
    """The stamp is two folders above a video folder imported alone: its flow is read with the
    export's --bound 32, not the default 20."""
    out = tmp_path / "b32"
    export_rawframes(source_store, out, ExportConfig(bound=32.0))
    summary = import_rawframes(out / "jump" / "jump_0", tmp_path / "s", ImportConfig())
    assert summary.bound == 32.0 and summary.count("done") == 1, summary.notes
    back = FlowStore(tmp_path / "s")
    assert back.meta("jump_0")["flows"]["tvl1"]["params"]["bound"] == 32.0


def test_a_stamp_covers_only_the_rawframes_its_export_wrote(source_store, tmp_path):
    """Other tools' rawframes put inside an export's folder (its lists do not name them) are not
    read with the export's bound, nor are folders above a stamp's reach; a root holding an
    export beside unstamped rawframes of another bound is refused, naming both."""
    import shutil

    out = tmp_path / "proj"
    export_rawframes(source_store, out, ExportConfig(bound=32.0))
    shutil.copytree(out / "jump" / "jump_0", out / "denseflow_out" / "jump" / "jump_0")
    with pytest.raises(FlowkitError, match=r"denseflow_out/jump/jump_0 is in the folder of a "
                                           r"flowkit export .* whose lists do not name it .* "
                                           r"pass --bound \(the export's is 32\)$"):
        import_rawframes(out / "denseflow_out", tmp_path / "s", ImportConfig())
    summary = import_rawframes(out / "denseflow_out", tmp_path / "s", ImportConfig(bound=20.0))
    assert summary.bound == 20.0 and summary.count("done") == 1, summary.notes
    flow_only = tmp_path / "flow_only"  # lists only all_flow.txt: a class folder is still its
    export_rawframes(source_store, flow_only, ExportConfig(bound=10.0, rgb=False))
    assert import_rawframes(flow_only / "jump", tmp_path / "s4", ImportConfig()).bound == 10.0
    deep = tmp_path / "a" / "b" / "c" / "d"  # three folders below a stamp: out of its reach
    shutil.copytree(out / "jump", deep / "jump")
    shutil.copy(out / ".flowkit-export.json", tmp_path / "a" / ".flowkit-export.json")
    assert import_rawframes(deep, tmp_path / "s2", ImportConfig()).bound == 20.0
    root = tmp_path / "root"
    shutil.copytree(out / "jump", root / "ex" / "jump")
    for name in (".flowkit-export.json", "all_rawframes.txt"):
        shutil.copy(out / name, root / "ex" / name)
    shutil.copytree(out / "jump", root / "plain" / "jump")
    with pytest.raises(FlowkitError, match=r"holds rawframes a flowkit export recorded \(--bound "
                                           r"32 in .*ex/\.flowkit-export\.json\) beside "
                                           r"rawframes no export recorded \(e\.g\. .*plain/jump"):
        import_rawframes(root, tmp_path / "s3", ImportConfig())


def test_one_video_folder_imports_under_its_name(source_store, tmp_path):
    """ROOT that is itself one video's rawframes folder is that video, keyed by the folder's name
    and unlabelled, as `flowkit extract` keys a single file (it failed: invalid video key '.'),
    with the export's bound found above it; a rerun skips it."""
    out = tmp_path / "raw"
    export_rawframes(source_store, out, ExportConfig(bound=32.0))
    summary = import_rawframes(out / "jump" / "jump_0", tmp_path / "s", ImportConfig())
    assert [(r.key, r.status) for r in summary.results] == [("jump_0", "done")], summary.results
    back = FlowStore(tmp_path / "s")
    assert back.keys() == ["jump_0"] and back.meta("jump_0")["label"] == -1
    assert _flow_error(FlowStore(source_store), back, "jump/jump_0", 32.0, back_key="jump_0") < 1.5
    again = import_rawframes(str(out / "jump" / "jump_0") + "/", tmp_path / "s", ImportConfig())
    assert [(r.key, r.status) for r in again.results] == [("jump_0", "skipped")]


def test_cli_import_bound_defaults_to_the_recorded_one_and_refuses_another(source_store,
                                                                          tmp_path):
    """`flowkit import rawframes OUT` of an export made with --bound 32: --json says 32 and a note
    names the stamp; `--bound 20` exits 2 with one line naming both bounds."""
    from click.testing import CliRunner

    from flowkit.cli import main

    out = tmp_path / "raw"
    export_rawframes(source_store, out, ExportConfig(bound=32.0))
    r = CliRunner().invoke(main, ["import", "rawframes", str(out), "-o", str(tmp_path / "s"),
                                  "--bound", "20"])
    assert r.exit_code == 2 and "--bound 20 was given" in r.stderr and "--bound 32" in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    r = CliRunner().invoke(main, ["import", "rawframes", str(out), "-o", str(tmp_path / "s"),
                                  "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["bound"] == 32.0 and any("--bound 32" in note for note in d["notes"])


def test_export_at_another_quality_codes_rgb_again(source_store, tmp_path):
    summary = export_rawframes(source_store, tmp_path / "raw", ExportConfig(quality=80, flow=False))
    assert summary.to_dict()["rgb_kept_as_is"] == 0
    key = "jump/jump_0"
    blob = (tmp_path / "raw" / key / frame_name("img", 1)).read_bytes()
    assert jpeg.unlike_libjpeg(blob, 80, SIZE) == ""  # a JPEG of the asked quality
    assert blob != FlowStore(source_store).read_rgb(key, 0, decode=False)


def test_import_keeps_jpegs_of_the_codecs_quality_recodes_others_fails_truncated(tmp_path):
    rng = np.random.default_rng(11)
    root = tmp_path / "raw"
    for video in ("v0", "v1"):
        folder = root / "wave" / video
        rawframes.write_frames(folder, 0, rgb=rng.integers(0, 256, (4, *SIZE, 3), np.uint8),
                               flow=rng.normal(0, 3, (3, 2, *SIZE)).astype(np.float32))
    odd = root / "wave" / "v0" / frame_name("img", 3)  # one image at another quality
    odd.write_bytes(rawframes.encode_jpeg(rawframes.read_image(odd), quality=80))
    cut = root / "wave" / "v1" / frame_name("img", 2)
    cut.write_bytes(cut.read_bytes()[:-200])  # a copy that stopped mid-file
    summary = import_rawframes(root, tmp_path / "s", ImportConfig())
    v0, v1 = summary.results
    assert v0.status == "done" and v0.kept_as_is == 3
    assert v1.status == "failed" and "img_00002.jpg: truncated JPEG" in v1.reason
    store = FlowStore(tmp_path / "s")
    stored = store.read_rgb("wave/v0", decode=False)
    files = [(root / "wave" / "v0" / frame_name("img", i)).read_bytes() for i in range(1, 5)]
    assert [a == b for a, b in zip(stored, files)] == [True, True, False, True]
    assert jpeg.unlike_libjpeg(stored[2], 95, SIZE) == ""  # coded again at the store's quality
    recoded = np.abs(store.read_rgb("wave/v0", 2).astype(int) - rawframes.read_image(odd))
    assert recoded.mean() < 6  # its pixels, through one more JPEG generation at q95
    assert store.validate(deep=True) == []
    assert store.rgb_codec("wave/v0").quality == 95


def test_import_png_rawframes_keeps_the_exact_levels(tmp_path):
    """flow_x / flow_y images as 8-bit PNGs (lossless levels; denseflow's own PNG output is
    another format, test_import_denseflows_png_output), RGB PNGs stored losslessly."""
    rng = np.random.default_rng(13)
    folder = tmp_path / "raw" / "wave" / "v0"
    folder.mkdir(parents=True)
    images = rng.integers(0, 256, (3, *SIZE, 3), np.uint8)
    levels = rng.integers(0, 256, (2, 2, *SIZE), np.uint8)
    for i in range(3):
        cv2.imwrite(str(folder / frame_name("img", i, ext="png")), images[i][..., ::-1])
    for i in range(2):
        for c, kind in enumerate(("flow_x", "flow_y")):
            cv2.imwrite(str(folder / frame_name(kind, i, ext="png")), levels[i, c])
    summary = import_rawframes(tmp_path / "raw", tmp_path / "s", ImportConfig(
        flow_codec="uint8:20", rgb_codec="raw"))
    assert summary.count("done") == 1 and summary.results[0].kept_as_is == 0
    store = FlowStore(tmp_path / "s")
    np.testing.assert_array_equal(store.read_flow("wave/v0", "tvl1", dequantize=False), levels)
    np.testing.assert_array_equal(store.read_rgb("wave/v0"), images)  # PNG and raw: lossless
    params = store.meta("wave/v0")["flows"]["tvl1"]["params"]
    assert params["image_format"] == "png" and ".png from 0" in params["naming"]
    cv2.imwrite(str(folder / frame_name("img", 3)), images[0])  # a JPEG among the PNGs
    mixed = import_rawframes(tmp_path / "raw", tmp_path / "s2", ImportConfig())
    assert "img files in several formats (jpg, png)" in mixed.results[0].reason


def test_import_uint8_codec_keeps_the_jpeg_levels(exported, tmp_path):
    back = FlowStore(_import(exported, tmp_path / "s", flow_codec="uint8:20"))
    key = "jump/jump_0"
    image = cv2.imread(str(exported / key / "flow_x_00002.jpg"), 0)
    np.testing.assert_array_equal(back.read_flow(key, "tvl1", 1, dequantize=False)[0], image)


def _import(root: Path, store: Path, **kw) -> Path:
    summary = import_rawframes(root, store, ImportConfig(**kw))
    assert summary.count("failed") == 0, summary.to_dict()
    return store


def test_import_reports_count_mismatch_per_video_and_never_pads(exported, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(exported, root)
    for kind in ("flow_x", "flow_y"):
        (root / "run" / "run_0" / f"{kind}_{FRAMES - 1:05d}.jpg").unlink()
    summary = import_rawframes(root, tmp_path / "s", ImportConfig())
    failed = [r for r in summary.results if r.status == "failed"]
    assert [r.key for r in failed] == ["run/run_0"]
    assert f"{FRAMES} frames but {FRAMES - 2} flow pairs of step 1 (expected {FRAMES - 1})" in \
        failed[0].reason
    assert "run/run_0" not in FlowStore(tmp_path / "s") and summary.count("done") == 3
    again = import_rawframes(root, tmp_path / "s", ImportConfig())  # resume: only the bad one
    assert again.count("skipped") == 3 and again.count("failed") == 1


def test_import_zero_based_step_two_variant(tmp_path):
    """denseflow -s 2: flow_x_p2_%05d.jpg from 0, n - 2 pairs for n frames; stored as --step 2."""
    folder = tmp_path / "raw" / "wave" / "v0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    n = 7
    for i in range(n):
        cv2.imwrite(str(folder / frame_name("img", i)), rng.integers(0, 255, (*SIZE, 3), np.uint8))
    for i in range(n - 2):
        for kind in ("flow_x", "flow_y"):
            cv2.imwrite(str(folder / frame_name(kind, i, step=2)), np.full(SIZE, 10 * i, np.uint8))
    store = FlowStore(_import(tmp_path / "raw", tmp_path / "s", flow_codec="uint8:20"))
    meta = store.meta("wave/v0")
    assert (meta["frame_count"], meta["step"]) == (4, 2)  # frames 0, 2, 4, 6
    levels = store.read_flow("wave/v0", "tvl1", dequantize=False)[:, 0, 0, 0]
    assert levels.tolist() == [0, 20, 40]  # pairs 0->2, 2->4, 4->6


def test_import_denseflow_h5_with_frames(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "raw"
    (root / "jump" / "v0").mkdir(parents=True)
    for i in range(4):
        cv2.imwrite(str(root / "jump" / "v0" / frame_name("img", i)),
                    rng.integers(0, 255, (*SIZE, 3), np.uint8))
    flow = rng.normal(0, 30, (3, 2, *SIZE)).astype(np.float32)  # beyond any 8-bit bound
    write_denseflow_h5(root / "jump" / "v0.h5", flow)
    store = FlowStore(_import(root, tmp_path / "s", flow_codec="float16"))
    got = store.read_flow("jump/v0", "tvl1")
    np.testing.assert_allclose(got, flow, rtol=1e-3, atol=1e-3)  # float16, nothing clipped
    assert store.meta("jump/v0")["flows"]["tvl1"]["params"]["source_format"] == "denseflow-hdf5"
    assert store.meta("jump/v0")["has_rgb"]


def test_import_labels_from_annotation_list(exported, tmp_path):
    ann = tmp_path / "train.txt"
    ann.write_text(f"run/run_1 {FRAMES} 1\njump/jump_0 {FRAMES} 0\nmissing/v 9 0\n")
    summary = import_rawframes(exported, tmp_path / "s", ImportConfig(annotations=[ann]))
    assert summary.count("done") == 2
    assert summary.unmatched == [f"{ann}:3 missing/v"]
    assert summary.unlabelled == ["jump/jump_1", "run/run_0"]
    store = FlowStore(tmp_path / "s")
    assert store.keys() == ["jump/jump_0", "run/run_1"] and store.classes == CLASSES
    wrong = tmp_path / "wrong.txt"
    wrong.write_text(f"run/run_1 {FRAMES + 3} 1\n")
    bad = import_rawframes(exported, tmp_path / "s2", ImportConfig(annotations=[wrong]))
    assert "the annotation list says 9 frames, the folder has 6 frames and 5 flow pairs" in \
        [r for r in bad.results if r.status == "failed"][0].reason


def test_train_and_val_lists_merge_when_val_lacks_a_class(exported, tmp_path):
    """A validation list without class 0 takes the class names from the training list (they
    used to be refused: "other classes (2 vs 2)"); lists that name one label by two class
    folders are refused naming the label and both folders. No label map: names from folders."""
    root = tmp_path / "raw"
    shutil.copytree(exported, root, ignore=shutil.ignore_patterns("label_map.txt"))
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text(f"jump/jump_0 {FRAMES} 0\nrun/run_0 {FRAMES} 1\n")
    val.write_text(f"run/run_1 {FRAMES} 1\n")
    summary = import_rawframes(root, tmp_path / "s", ImportConfig(annotations=[train, val]))
    assert summary.count("done") == 3 and summary.unlabelled == ["jump/jump_1"]
    store = FlowStore(tmp_path / "s")
    assert store.classes == CLASSES
    assert (store.meta("run/run_1")["label"], store.meta("run/run_1")["label_name"]) == (1, "run")
    other = tmp_path / "other.txt"
    other.write_text(f"jump/jump_1 {FRAMES} 1\n")
    with pytest.raises(FlowkitError, match=f"label 1 is class folder 'run' in {train} but 'jump' "
                                           f"in {other}: the lists are not of one dataset"):
        import_rawframes(root, tmp_path / "s2", ImportConfig(annotations=[train, other]))
    # one video labelled differently by two lists: refused naming both (the last list won)
    clash = tmp_path / "clash.txt"
    clash.write_text(f"run/run_0 {FRAMES} 0\njump/jump_0 {FRAMES} 0\n")
    with pytest.raises(FlowkitError, match=f"^run/run_0 has label 1 in {train} but 0 in {clash}: "
                                           "the lists contradict each other; fix one$"):
        import_rawframes(root, tmp_path / "s3", ImportConfig(annotations=[train, clash]))


def test_import_into_a_store_of_another_class_order_labels_by_name(exported, tmp_path):
    """An import into a store whose classes are the same names in another order (or some of
    them) labels each video by its class name with the store's ids, as extract does; classes
    the store lacks are refused before anything is written."""
    rawframes = tmp_path / "raw"
    shutil.copytree(exported, rawframes)
    (rawframes / "label_map.txt").unlink()  # the folders' sorted names: jump, run
    store = tmp_path / "store"
    FlowStore(store, "a", classes=["run", "jump"]).close()
    import_rawframes(rawframes, store, ImportConfig(flow=False))
    with FlowStore(store) as fs:
        assert fs.classes == ["run", "jump"]
        labels = {k: m["label"] for k, m in fs.metas(fs.keys()).items()}
    assert labels == {"jump/jump_0": 1, "jump/jump_1": 1, "run/run_0": 0, "run/run_1": 0}
    other = tmp_path / "other"
    FlowStore(other, "a", classes=["run", "walk"]).close()
    with pytest.raises(FlowkitError, match=r"1 it lacks \(\['jump'\]\)"):
        import_rawframes(rawframes, other, ImportConfig(flow=False))
    assert FlowStore(other).keys() == []


@pytest.mark.parametrize("map_given", ["in_root", "label_map"])
def test_a_label_map_meets_the_stores_stand_in_class_names(tmp_path, map_given):
    """A store whose classes are ["jump", "class_1"] (a stand-in for a class it never named) takes
    an import whose label map (DIR/label_map.txt or --label-map) reads "jump", "run": the map's
    ids are the store's, so run's videos get id 1; before, the import was refused as naming a
    class the store lacks."""
    root = tmp_path / "raw"
    rng = np.random.default_rng(5)
    for key in ("jump/j0", "run/r0"):
        (root / key).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(root / key / frame_name("img", i)),
                        rng.integers(0, 255, (*SIZE, 3), np.uint8))
    label_map = root / "label_map.txt" if map_given == "in_root" else tmp_path / "map.txt"
    label_map.write_text("jump\nrun\n")
    store = tmp_path / "store"
    FlowStore(store, "a", classes=["jump", "class_1"]).close()
    extra = {"label_map": label_map} if map_given == "label_map" else {}
    summary = import_rawframes(root, store, ImportConfig(flow=False, **extra))
    with FlowStore(store) as fs:
        labels = {k: m["label"] for k, m in fs.metas(fs.keys()).items()}
        assert fs.classes == ["jump", "class_1"]
    assert labels == {"jump/j0": 0, "run/r0": 1}
    # the store keeps its stand-in, which a note says with the way to the name
    assert [n for n in summary.notes if n.startswith(
        "1 label id the store calls class_<id> is named by this run (e.g. class_1: 'run')")], \
        summary.notes


def test_training_errors_on_imported_videos_name_the_import(source_store, exported, tmp_path):
    """What a training set lacks on imported videos is added by `flowkit import rawframes`, so the
    error names it, not `flowkit extract --method NAME` (no engine makes imported flow, and a flow
    name like 'rawframes' is no --method at all)."""
    from flowkit.data import ClipDataset, RandomClipSampler

    def error(store, inputs, **kwargs) -> str:
        with pytest.raises(FlowkitError) as err:
            ClipDataset(store, inputs=inputs, sampler=RandomClipSampler(2), **kwargs)
        return str(err.value)

    no_flow = tmp_path / "noflow"
    import_rawframes(exported, no_flow, ImportConfig(flow=False))
    message = error(no_flow, ("flow",))  # the store cannot tell --no-flow from frames alone
    assert (f"import ran with --no-flow, rerun `flowkit import rawframes RAWFRAMES_DIR -o "
            f"{no_flow}` without it") in message
    assert "extract the source videos into a store" in message
    no_rgb = tmp_path / "norgb"
    import_rawframes(exported, no_rgb, ImportConfig(rgb=False))
    message = error(no_rgb, ("rgb",))
    assert "imported without RGB frames" in message and "flowkit extract" not in message
    # an extracted store, some of whose videos gained imported flow under a name of its own
    some = tmp_path / "some"
    shutil.copytree(exported, some)
    shutil.rmtree(some / "run")
    both = tmp_path / "both"
    shutil.copytree(source_store, both)
    import_rawframes(some, both, ImportConfig(flow_name="rawframes", rgb=False))
    message = error(both, ("flow",), flow_name="rawframes")
    assert "2 of 4 videos have no flow 'rawframes'" in message
    assert f"`flowkit import rawframes RAWFRAMES_DIR -o {both} --flow-name rawframes`" in message
    assert "--method" not in message


@pytest.mark.slow  # about 25 s: four processes, a short training run
def test_cli_export_import_and_train_unchanged(source_store, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def flowkit(*args):
        return subprocess.run([sys.executable, "-m", "flowkit", *map(str, args)],
                              capture_output=True, text=True, env=env, timeout=600)

    out = flowkit("export", "rawframes", source_store, tmp_path / "raw", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["done"] == 4 and "were beyond +-20 px" in out.stderr
    out = flowkit("import", "rawframes", tmp_path / "raw", "-o", tmp_path / "s", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["done"] == 4
    assert f"{4 * FRAMES} of {4 * FRAMES} RGB JPEGs stored byte for byte" in out.stderr
    out = flowkit("train", tmp_path / "s", "--model", "resnet2d", "--model-arg", "modality=flow",
                  "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]", "-o",
                  tmp_path / "run", "--frames", "2", "--size", "16", "--batch-size", "2",
                  "--epochs", "1", "--workers", "0", "--val-fraction", "0.5", "--device", "cpu",
                  "--json")
    assert out.returncode == 0, out.stderr
    out = flowkit("evaluate", tmp_path / "run", tmp_path / "s", "--clips", "1", "--crops", "1",
                  "--json")
    assert out.returncode == 0, out.stderr
    (tmp_path / "empty").mkdir()
    out = flowkit("import", "rawframes", tmp_path / "empty", "-o", tmp_path / "s2")
    assert out.returncode == 2 and "no rawframes" in out.stderr
    assert out.stderr.strip().count("\n") == 0  # one line


def test_cli_export_passes_start_index_and_split_list_through(source_store, tmp_path):
    """`flowkit export rawframes --start-index 0 --split-list trainlist01.txt` writes denseflow's
    0-based names and that split's annotation lists: a user exporting for denseflow-style loaders
    or for one official split gets exactly that, not the 1-based defaults and the `all` lists
    only."""
    from click.testing import CliRunner

    from flowkit.cli import main

    split = tmp_path / "trainlist01.txt"
    split.write_text("run/run_1.avi 2\njump/jump_0.avi 1\n")
    out = tmp_path / "raw"
    r = CliRunner().invoke(main, ["export", "rawframes", str(source_store), str(out),
                                  "--start-index", "0", "--split-list", str(split)])
    assert r.exit_code == 0, r.output
    video = out / "jump" / "jump_0"
    assert (video / "img_00000.jpg").is_file() and (video / "flow_x_00000.jpg").is_file()
    assert not (video / f"img_{FRAMES:05d}.jpg").exists()
    for kind in ("rawframes", "flow"):
        lines = (out / f"trainlist01_{kind}.txt").read_text().splitlines()
        assert [line.split()[0] for line in lines] == ["run/run_1", "jump/jump_0"], kind


def test_cli_import_passes_annotations_and_flow_name_through_and_exits_1_on_a_failure(
        exported, tmp_path):
    """`flowkit import rawframes --annotations LIST --flow-name rawframes`: only the listed videos
    are imported, their flow is stored as flow/rawframes, and a video whose folder lacks a flow
    pair fails, is named on stderr and makes the command exit 1 (so scripts notice it)."""
    from click.testing import CliRunner

    from flowkit.cli import main

    root = tmp_path / "raw"
    shutil.copytree(exported, root)
    for kind in ("flow_x", "flow_y"):
        (root / "run" / "run_0" / f"{kind}_{FRAMES - 1:05d}.jpg").unlink()
    ann = tmp_path / "train.txt"
    ann.write_text(f"run/run_0 {FRAMES} 1\nrun/run_1 {FRAMES} 1\njump/jump_0 {FRAMES} 0\n")
    r = CliRunner().invoke(main, ["import", "rawframes", str(root), "-o", str(tmp_path / "s"),
                                  "--annotations", str(ann), "--flow-name", "rawframes",
                                  "--json"])
    d = json.loads(r.stdout)
    assert (d["done"], d["failed"]) == (2, 1), r.output
    assert r.exit_code == 1, r.output
    (failed,) = [line for line in r.stderr.splitlines() if "failed:" in line]
    assert "run_0" in failed, r.stderr
    store = FlowStore(tmp_path / "s")
    assert store.keys() == ["jump/jump_0", "run/run_1"]
    assert {name for key in store.keys() for name in store.meta(key)["flows"]} == {"rawframes"}


def test_import_labels_from_a_kinetics_csv(exported, tmp_path):
    root = tmp_path / "k400"
    shutil.copytree(exported / "jump" / "jump_0",
                    root / "abseiling" / "--07WQ2iBlw_000001_000011")
    shutil.copytree(exported / "run" / "run_0", root / "zumba" / "zz_000003_000013")
    csv_file = tmp_path / "kinetics_val.csv"
    csv_file.write_text("label,youtube_id,time_start,time_end,split\n"
                        "abseiling,--07WQ2iBlw,1,11,val\n\"air drumming\",gone,0,10,val\n")
    summary = import_rawframes(root, tmp_path / "s", ImportConfig(annotations=[csv_file]))
    assert summary.count("done") == 1 and summary.unlabelled == ["zumba/zz_000003_000013"]
    assert summary.unmatched == [f"{csv_file}:3 gone"]
    store = FlowStore(tmp_path / "s")
    assert store.classes == ["abseiling", "air drumming"]
    assert store.meta("abseiling/--07WQ2iBlw_000001_000011")["label_name"] == "abseiling"


# ------------------------------------------------------------------------------ backward flow


def test_backward_flow_round_trips_as_denseflows_m1_files(source_store, tmp_path):
    """flow/tvl1_backward -> flow_{x,y}_m1_* numbered by the frame each pair starts from (pair t,
    frame t + 1 -> t, is file start + t + 1) -> flow/tvl1_backward, pair for pair."""
    store_path = tmp_path / "store"
    shutil.copytree(source_store, store_path)
    rng = np.random.default_rng(11)
    backward = {}
    with FlowStore(store_path, "a") as store:
        for key in store.keys():
            backward[key] = smooth_flow(rng, FRAMES - 1)
            with store.writer(key, source=f"{key}.mp4", fps=25.0, flow_codec="float16") as w:
                w.append_flow("tvl1_backward", backward[key],
                              engine={"engine": "tvl1", "version": "test", "params": {},
                                      "direction": "backward"})
    out = tmp_path / "raw"
    summary = export_rawframes(store_path, out, ExportConfig())
    assert summary.count("done") == 4 and summary.count("failed") == 0
    folder = out / "jump" / "jump_0"
    names = sorted(n for n in os.listdir(folder) if n.startswith("flow_x_m1_"))
    assert names == [frame_name("flow_x", 2 + t, backward=True) for t in range(FRAMES - 1)]
    pair = rawframes.images_to_flow(cv2.imread(str(folder / "flow_x_m1_00004.jpg"), 0),
                                    cv2.imread(str(folder / "flow_y_m1_00004.jpg"), 0), BOUND)
    expected = np.clip(backward["jump/jump_0"][2], -BOUND, BOUND)   # frame 3 -> 2, 0-based
    assert np.abs(pair - expected).mean() < 0.5
    again = FlowStore(_import(out, tmp_path / "s", flow_codec="float16"))
    for key, flow in backward.items():
        meta = again.meta(key)
        assert set(meta["flows"]) == {"tvl1", "tvl1_backward"}
        got = again.read_flow(key, "tvl1_backward")
        assert got.shape == flow.shape
        assert np.abs(got - np.clip(flow, -BOUND, BOUND)).mean() < 0.5
        assert meta["flows"]["tvl1_backward"]["direction"] == "backward"
        assert "flow_{x,y}_m1_{:05d}.jpg from 2" in \
            meta["flows"]["tvl1_backward"]["params"]["naming"]
    with pytest.raises(FlowkitError, match=r"is backward flow.*ExportConfig\(flow_name=NAME\) in "
                                           "Python"):
        from flowkit.interop.export import _flows
        _flows(FlowStore(store_path).meta("jump/jump_0"), ExportConfig(flow_name="tvl1_backward"))


def test_import_denseflow_backward_h5_beside_forward_and_added_later(tmp_path):
    """denseflow -s 1 and -s -1 into HDF5 (<video>.h5, <video>_m1.h5, dataset names with or
    without .jpg): both directions land in the store exactly; a video imported before its backward
    file existed gets the backward flow on the next run, its RGB and forward flow kept."""
    rng = np.random.default_rng(6)
    root = tmp_path / "raw"
    folder = root / "jump" / "v0"
    folder.mkdir(parents=True)
    for i in range(5):
        cv2.imwrite(str(folder / frame_name("img", i)), rng.integers(0, 255, (*SIZE, 3), np.uint8))
    forward = rng.normal(0, 30, (4, 2, *SIZE)).astype(np.float32)
    backward = rng.normal(0, 30, (4, 2, *SIZE)).astype(np.float32)
    write_denseflow_h5(root / "jump" / "v0.h5", forward, ext="")
    first = import_rawframes(root, tmp_path / "s", ImportConfig(flow_codec="float16"))
    assert first.count("done") == 1
    write_denseflow_h5(root / "jump" / "v0_m1.h5", backward, backward=True)
    second = import_rawframes(root, tmp_path / "s", ImportConfig(flow_codec="float16"))
    assert second.count("done") == 1, second.to_dict()  # not "already in the store"
    assert (second.results[0].pairs, second.results[0].backward_pairs) == (0, 4)
    store = FlowStore(tmp_path / "s")
    np.testing.assert_allclose(store.read_flow("jump/v0", "tvl1"), forward, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(store.read_flow("jump/v0", "tvl1_backward"), backward,
                               rtol=1e-3, atol=1e-3)
    meta = store.meta("jump/v0")
    assert meta["has_rgb"] and meta["frame_count"] == 5
    assert meta["flows"]["tvl1_backward"]["params"]["naming"] == \
        "flow_{x,y}_m1_{:05d} datasets from 1"
    third = import_rawframes(root, tmp_path / "s", ImportConfig(flow_codec="float16"))
    assert third.count("skipped") == 1
    # a backward file whose datasets say forward is refused, naming the file
    (root / "jump" / "v0_m1.h5").unlink()
    write_denseflow_h5(root / "jump" / "v0_m1.h5", backward)
    bad = import_rawframes(root, tmp_path / "s2", ImportConfig())
    assert "v0_m1.h5 holds forward flow datasets but its name says backward" in \
        bad.results[0].reason


def test_denseflow_h5_with_fewer_backward_than_forward_pairs_is_refused(tmp_path):
    """HDF5-only flow (no frames to count against) with 4 forward but 2 backward pairs fails,
    naming both counts: the two directions of one video pair up frame for frame."""
    rng = np.random.default_rng(27)
    root = tmp_path / "raw"
    (root / "jump").mkdir(parents=True)
    write_denseflow_h5(root / "jump" / "v0.h5", rng.normal(0, 3, (4, 2, *SIZE)).astype(np.float32))
    write_denseflow_h5(root / "jump" / "v0_m1.h5",
                       rng.normal(0, 3, (2, 2, *SIZE)).astype(np.float32), backward=True)
    summary = import_rawframes(root, tmp_path / "s", ImportConfig(flow_codec="float16"))
    result = summary.results[0]
    assert result.status == "failed" and "4 forward but 2 backward flow pairs" in result.reason
    assert "jump/v0" not in FlowStore(tmp_path / "s")


def test_denseflow_h5_of_a_video_named_like_a_step_goes_to_that_video(tmp_path):
    """Videos named person_p2 / person_p3 / cam_m1: their step-1 files person_p2.h5 (plain
    flow_x_* datasets) belong to them, not to an invented video 'person' at step 2, and
    cam_m1_m1.h5 (flow_x_m1_*) is cam_m1's backward flow. The datasets' names decide; a genuine
    jog_p2.h5 (flow_x_p2_*) is still jog's step-2 flow, and a flow-only run_p2.h5 of plain
    datasets is video run_p2."""
    rng = np.random.default_rng(31)
    walk = tmp_path / "raw" / "walk"
    flows = {}
    for video, n in (("person_p2", 4), ("person_p3", 4), ("cam_m1", 4), ("jog", 5)):
        (walk / video).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(walk / video / frame_name("img", i)),
                        rng.integers(0, 255, (*SIZE, 3), np.uint8))
    for name, pairs, step, backward in (("person_p2", 3, 1, False), ("person_p3", 3, 1, False),
                                        ("cam_m1", 3, 1, False), ("cam_m1_m1", 3, 1, True),
                                        ("jog_p2", 3, 2, False), ("run_p2", 2, 1, False)):
        flows[name] = rng.normal(0, 3, (pairs, 2, *SIZE)).astype(np.float32)
        write_denseflow_h5(walk / f"{name}.h5", flows[name], step=step, backward=backward)
    summary = import_rawframes(tmp_path / "raw", tmp_path / "s",
                               ImportConfig(flow_codec="float16"))
    assert summary.count("failed") == 0, summary.to_dict()
    store = FlowStore(tmp_path / "s")
    assert store.keys() == ["walk/cam_m1", "walk/jog", "walk/person_p2", "walk/person_p3",
                            "walk/run_p2"]
    for key, name in (("walk/person_p2", "person_p2"), ("walk/person_p3", "person_p3"),
                      ("walk/cam_m1", "cam_m1"), ("walk/run_p2", "run_p2")):
        meta = store.meta(key)
        assert meta["step"] == 1 and meta["has_rgb"] == (key != "walk/run_p2"), key
        np.testing.assert_allclose(store.read_flow(key, "tvl1"), flows[name], atol=2e-2)
    np.testing.assert_allclose(store.read_flow("walk/cam_m1", "tvl1_backward"),
                               flows["cam_m1_m1"], atol=2e-2)
    assert store.meta("walk/jog")["step"] == 2 and store.meta("walk/jog")["frame_count"] == 3
    # a frame folder of the whole stem, and none of the shorter name, says whose file it is
    assert denseflow.video_of("cam_p2.h5", {(2, False)}) == ("cam", False)
    assert denseflow.video_of("cam_p2.h5", {(2, False)}, {"cam_p2"}.__contains__) == \
        ("cam_p2", False)
    # datasets that contradict the name beside the shorter name's folder: read by the name, so
    # the import refuses the file (test_import_denseflow_backward_h5_beside_forward_...)
    assert denseflow.video_of("v_m1.h5", {(1, False)}, {"v"}.__contains__) == ("v", True)


# ------------------------------------------------------------------------------ resume, keys, walk


def test_import_adds_what_the_store_lacks_and_skips_the_rest(exported, tmp_path):
    """--no-flow, then a plain import: the flow is added (the store's RGB kept); --no-rgb, then a
    plain import: the RGB is added; a third run has nothing to add and skips."""
    key = "jump/jump_0"
    rgb_first, flow_first = tmp_path / "rgb_first", tmp_path / "flow_first"
    for store, first in ((rgb_first, ImportConfig(flow=False)),
                         (flow_first, ImportConfig(rgb=False))):
        assert import_rawframes(exported, store, first).count("done") == 4
        second = import_rawframes(exported, store, ImportConfig())
        assert second.count("done") == 4, second.to_dict()
        meta = FlowStore(store).meta(key)
        assert meta["has_rgb"] and set(meta["flows"]) == {"tvl1"} and meta["frame_count"] == FRAMES
        third = import_rawframes(exported, store, ImportConfig())
        assert third.count("skipped") == 4 and {r.reason for r in third.results} == \
            {"already in the store"}
    stored = FlowStore(rgb_first).read_rgb(key, decode=False)
    assert stored == [(exported / key / frame_name("img", i)).read_bytes()
                      for i in range(1, FRAMES + 1)]


def test_an_import_into_a_store_without_its_index_reads_it_under_a_bar(exported, tmp_path,
                                                                       monkeypatch):
    """A store just extracted has no index.json (or a stale one after a copy): the import reads
    every video it holds first (20 minutes at 300k), under the bar train and export show."""
    from flowkit.store import summary as store_summary

    store = _import(exported, tmp_path / "s")
    (store / "index.json").unlink(missing_ok=True)
    monkeypatch.setattr(store_summary, "BAR_AFTER_SECONDS", 0.0)  # a bar at once, not after 1 s
    seen = TaskRecorder()
    again = import_rawframes(exported, store, ImportConfig(), progress=seen)
    assert again.count("skipped") == 4
    assert ("indexing videos new to the store's index", 4, 4) in seen.tasks


def test_adding_flow_of_another_step_to_a_stored_video_is_refused(tmp_path):
    """A video imported without flow (step 1), then given flow of step 2 (denseflow -s 2) and
    imported again, fails naming both steps: the store's frames are of step 1, and flow between
    every second frame cannot be added beside them."""
    rng = np.random.default_rng(26)
    root = tmp_path / "raw"
    folder = root / "jump" / "v0"
    rawframes.write_frames(folder, 0, rgb=rng.integers(0, 255, (5, *SIZE, 3), np.uint8),
                           start_index=0)
    assert import_rawframes(root, tmp_path / "s", ImportConfig(flow=False)).count("done") == 1
    for i in range(3):
        fx, fy = rawframes.flow_to_images(smooth_flow(rng, 1)[0])
        (folder / frame_name("flow_x", i, step=2)).write_bytes(rawframes.encode_jpeg(fx))
        (folder / frame_name("flow_y", i, step=2)).write_bytes(rawframes.encode_jpeg(fy))
    again = import_rawframes(root, tmp_path / "s", ImportConfig())
    result = again.results[0]
    assert result.status == "failed"
    assert "the store holds this video at step 1" in result.reason and "step 2" in result.reason
    meta = FlowStore(tmp_path / "s").meta("jump/v0")
    assert (meta["step"], meta["frame_count"], list(meta["flows"])) == (1, 5, [])


def test_adding_a_flow_keeps_the_videos_attributes(source_store, exported, tmp_path):
    """A second flow (--flow-name rawframes) beside a video's flow/tvl1: its label, fps, source,
    source size, step and creation time stay as the store had them."""
    store_path = tmp_path / "store"
    shutil.copytree(source_store, store_path)
    attrs = ("label", "label_name", "fps", "source", "source_height", "source_width", "step",
             "created", "flowkit_version")
    before = {k: {a: FlowStore(store_path).meta(k)[a] for a in attrs}
              for k in FlowStore(store_path).keys()}
    summary = import_rawframes(exported, store_path, ImportConfig(flow_name="rawframes", fps=12))
    assert summary.count("done") == 4 and summary.results[0].frames == 0  # RGB not appended again
    store = FlowStore(store_path)
    for key, kept in before.items():
        meta = store.meta(key)
        assert {a: meta[a] for a in attrs} == kept
        assert set(meta["flows"]) == {"tvl1", "rawframes"}
    assert before["run/run_1"]["label"] == 1 and before["run/run_1"]["fps"] == 25.0


def test_rerun_skips_a_video_whose_other_step_backward_flow_is_left_out(exported, tmp_path):
    """Backward flow of another step than the forward flow (flow_x_m2_*) is left out by the scan
    (a note): a rerun has nothing to add and skips the video instead of failing it."""
    root = tmp_path / "raw"
    shutil.copytree(exported / "jump" / "jump_0", root / "jump" / "v0")
    for i in range(3, FRAMES + 1):  # denseflow -s -2, numbered from the frame each starts from
        for kind in ("flow_x", "flow_y"):
            (root / "jump" / "v0" / frame_name(kind, i, step=2, backward=True)).write_bytes(
                rawframes.encode_jpeg(np.full(SIZE, 128, np.uint8)))
    first = import_rawframes(root, tmp_path / "s", ImportConfig())
    assert first.count("done") == 1
    assert "jump/v0: backward flow of step 2 ignored (forward flow has step 1)" in first.notes
    again = import_rawframes(root, tmp_path / "s", ImportConfig())
    assert [(r.status, r.reason) for r in again.results] == [("skipped", "already in the store")]
    # a video finished by another run after this one's resume check: nothing to write, skipped
    from flowkit.interop.ingest import Source, _import_one

    late = _import_one(FlowStore(tmp_path / "s", "a"), Source("jump/v0", root / "jump" / "v0"),
                       ImportConfig(), StopFlag())
    assert (late.status, late.reason) == ("skipped", "already in the store")


def test_import_keys_non_utf8_names_as_extract_does(exported, tmp_path):
    """A folder named in Latin-1 (not UTF-8) gets the key extract gives a video of that name
    (caf%E9, labels.safe_key), not a string the store cannot hold."""
    from flowkit.labels import safe_key

    root = tmp_path / "raw"
    name = os.fsdecode(b"caf\xe9")
    shutil.copytree(exported / "jump" / "jump_0", root / "jump" / name)
    summary = import_rawframes(root, tmp_path / "s", ImportConfig())
    key = safe_key(PurePosixPath("jump", name + ".mp4"))
    assert key == "jump/caf%E9"
    assert [(r.key, r.status) for r in summary.results] == [(key, "done")]
    assert summary.results[0].source.endswith("jump/caf%E9")
    store = FlowStore(tmp_path / "s")
    assert store.keys() == [key] and store.meta(key)["label_name"] == "jump"
    assert import_rawframes(root, tmp_path / "s", ImportConfig()).count("skipped") == 1


def test_import_walks_each_real_directory_once(exported, tmp_path):
    """A link loop under the rawframes folder: one video, not one per trip round the loop."""
    root = tmp_path / "raw"
    shutil.copytree(exported / "jump" / "jump_0", root / "jump" / "v0")
    os.symlink("..", root / "jump" / "up")
    summary = import_rawframes(root, tmp_path / "s", ImportConfig())
    assert [r.key for r in summary.results] == ["jump/v0"]
    assert any("jump/up: skipped, the same directory as" in n for n in summary.notes)


def test_import_frames_numbered_with_other_padding(exported, tmp_path):
    """img_000001.jpg, flow_x_000001.jpg (%06d, as ffmpeg is often told): read as named."""
    folder = tmp_path / "raw" / "jump" / "v0"
    shutil.copytree(exported / "jump" / "jump_0", folder)
    for path in sorted(folder.iterdir()):
        kind, index = path.stem.rsplit("_", 1)
        path.rename(folder / f"{kind}_{int(index):06d}.jpg")
    summary = import_rawframes(tmp_path / "raw", tmp_path / "s", ImportConfig())
    assert [(r.status, r.frames, r.pairs) for r in summary.results] == [("done", FRAMES,
                                                                         FRAMES - 1)]
    params = FlowStore(tmp_path / "s").meta("jump/v0")["flows"]["tvl1"]["params"]
    assert params["naming"] == "img_{:06d}.jpg from 1, flow_{x,y}_{:06d}.jpg from 1"


def test_import_kinetics_csv_takes_ids_from_the_label_map(exported, tmp_path):
    """DIR/label_map.txt (or --label-map) gives a Kinetics CSV's ids: a validation CSV with two of
    three classes keeps the ids of all three."""
    root = tmp_path / "k400"
    shutil.copytree(exported / "jump" / "jump_0", root / "yt1_000010_000020")
    shutil.copytree(exported / "run" / "run_0", root / "yt2_000000_000010")
    (root / "label_map.txt").write_text("abseiling\nair drumming\nzumba\n")
    csv_file = tmp_path / "val.csv"
    csv_file.write_text("label,youtube_id,time_start,time_end,split\n"
                        "air drumming,yt1,10,20,val\nzumba,yt2,0,10,val\n")
    summary = import_rawframes(root, tmp_path / "s", ImportConfig(annotations=[csv_file]))
    assert summary.count("done") == 2
    store = FlowStore(tmp_path / "s")
    assert store.classes == ["abseiling", "air drumming", "zumba"]
    assert [(store.meta(k)["label"], store.meta(k)["label_name"]) for k in store.keys()] == \
        [(1, "air drumming"), (2, "zumba")]
    (root / "label_map.txt").write_text("abseiling\nair drumming\n")
    with pytest.raises(FlowkitError, match="labels 'zumba' \\(line 3\\) are not in the label map"):
        import_rawframes(root, tmp_path / "s2", ImportConfig(annotations=[csv_file]))


def test_import_denseflows_png_output(tmp_path):
    """denseflow -st png: img_%05d.jpg and one 3-channel flow_%05d.png per pair (backward
    flow_m1_%05d.png), from 0; both directions stored within each pair's b / 256 (plus the
    codec's error), whatever --bound says, with the format in the engine record."""
    from test_rawframes import denseflow_png

    rng = np.random.default_rng(21)
    folder = tmp_path / "raw" / "jump" / "v0"
    folder.mkdir(parents=True)
    for i in range(FRAMES):
        cv2.imwrite(str(folder / frame_name("img", i)), rng.integers(0, 255, (*SIZE, 3), np.uint8))
    forward = smooth_flow(rng, FRAMES - 1).clip(-23, 23)  # |v| < the height: not capped
    backward = -forward[:, :, ::-1]
    for t in range(FRAMES - 1):
        cv2.imwrite(str(folder / frame_name("flow", t, ext="png")), denseflow_png(forward[t]))
        cv2.imwrite(str(folder / frame_name("flow", t + 1, ext="png", backward=True)),
                    denseflow_png(backward[t]))
    summary = import_rawframes(tmp_path / "raw", tmp_path / "s",
                               ImportConfig(flow_codec="float16", bound=1.0))
    result = summary.results[0]
    assert (result.status, result.pairs, result.backward_pairs) == ("done", FRAMES - 1, FRAMES - 1)
    store = FlowStore(tmp_path / "s")
    for name, flow in (("tvl1", forward), ("tvl1_backward", backward)):
        got = store.read_flow("jump/v0", name)
        limit = (np.ceil(np.abs(flow).max(axis=(2, 3)) * 128 / 127 / 4) * 4 + 4) / 256
        assert np.all(np.abs(got - flow).max(axis=(2, 3)) <= limit + 0.02)  # + float16
        params = store.meta("jump/v0")["flows"][name]["params"]
        assert params["source_format"] == "denseflow-png" and "bound" not in params
    assert "flow_m1_{:05d}.png from 1" in params["naming"]


def _store_with(path: Path, videos: dict, rng) -> Path:
    """A store of the ``jump`` class: ``{name: (step, [flow names])}``, 6 frames each, float16 flow
    (``*_backward`` names recorded as backward)."""
    with FlowStore(path, "a", classes=CLASSES) as store:
        for name, (step, flows) in videos.items():
            with store.writer(f"jump/{name}", source=f"{name}.mp4", fps=25.0, label=0,
                              label_name="jump", flow_codec="float16", step=step) as w:
                w.append_rgb(rng.integers(0, 256, (FRAMES, *SIZE, 3), dtype=np.uint8))
                for flow in flows:
                    engine = {"engine": "tvl1", "version": "test", "params": {}}
                    if flow.endswith("_backward"):
                        engine["direction"] = "backward"
                    w.append_flow(flow, smooth_flow(rng, FRAMES - 1), engine=engine)
    return path


def test_a_video_with_only_backward_flow_exports_its_m1_files(tmp_path):
    """A video holding only flow/tvl1_backward exports it as flow_{x,y}_m1_* (before: "done" with
    no flow file and no word), and it imports back as flow/tvl1_backward; --flow tvl1 picks it too,
    and a --flow no video holds is refused up front, naming the flows the store has."""
    rng = np.random.default_rng(21)
    store_path = _store_with(tmp_path / "store", {"back": (1, ["tvl1_backward"]),
                                                   "both": (1, ["tvl1", "tvl1_backward"])}, rng)
    out = tmp_path / "raw"
    summary = export_rawframes(store_path, out, ExportConfig())
    results = {r.key: r for r in summary.results}
    back = results["jump/back"]
    assert (back.status, back.pairs, back.backward_pairs) == ("done", 0, FRAMES - 1)
    names = sorted(n for n in os.listdir(out / "jump" / "back") if n.startswith("flow_"))
    assert names == sorted(frame_name(kind, 2 + t, backward=True) for t in range(FRAMES - 1)
                           for kind in ("flow_x", "flow_y"))
    assert any("only backward flow" in n and "jump/back" in n for n in summary.notes)
    assert "jump/back" not in (out / "all_flow.txt").read_text()  # mmaction2 reads forward flow
    again = FlowStore(_import(out, tmp_path / "s", flow_codec="float16"))
    meta = again.meta("jump/back")
    assert list(meta["flows"]) == ["tvl1_backward"]
    original = FlowStore(store_path).read_flow("jump/back", "tvl1_backward")
    assert np.abs(again.read_flow("jump/back", "tvl1_backward")
                  - np.clip(original, -BOUND, BOUND)).mean() < 0.5

    named = export_rawframes(store_path, tmp_path / "raw_named", ExportConfig(flow_name="tvl1"))
    assert {r.key: (r.status, r.backward_pairs) for r in named.results}["jump/back"] == \
        ("done", FRAMES - 1)
    with pytest.raises(FlowkitError, match="holds no flow 'raft'; choose one with --flow: tvl1 "
                                           r"\(with its backward flow tvl1_backward.*"
                                           r"\(ExportConfig\(flow_name=NAME\) in Python\)$"):
        export_rawframes(store_path, tmp_path / "raw_other", ExportConfig(flow_name="raft"))
    assert not (tmp_path / "raw_other").exists()
    # beside a forward flow, another engine's lone backward flow does not make the choice
    # ambiguous: the forward flow is exported, as before backward-only export existed
    mixed = _store_with(tmp_path / "mixed", {"v": (1, ["tvl1", "farneback_backward"])}, rng)
    result = export_rawframes(mixed, tmp_path / "raw_mixed", ExportConfig()).results[0]
    assert (result.status, result.pairs, result.backward_pairs) == ("done", FRAMES - 1, 0)


def test_the_stores_step_survives_export_and_import(tmp_path):
    """A video stored at --step 2 exports as its stored frames under plain names with the step in
    the folder's .flowkit-video.json, and imports back at step 2 (before: step 1); a step-1 video
    gets no such file."""
    rng = np.random.default_rng(22)
    store_path = _store_with(tmp_path / "store", {"s2": (2, ["tvl1"]), "s1": (1, ["tvl1"])}, rng)
    out = tmp_path / "raw"
    summary = export_rawframes(store_path, out, ExportConfig())
    assert summary.count("done") == 2
    assert json.loads((out / "jump" / "s2" / rawframes.INFO_FILE).read_text()) == {"step": 2}
    assert not (out / "jump" / "s1" / rawframes.INFO_FILE).exists()
    assert len(os.listdir(out / "jump" / "s1")) == FRAMES + 2 * (FRAMES - 1)
    assert sum(n.startswith("flow_x_0") for n in os.listdir(out / "jump" / "s2")) == FRAMES - 1
    assert any("frame step 2" in n and "jump/s2" in n for n in summary.notes)
    assert rawframes.scan_folder(out / "jump" / "s2").source_step == 2

    imported = import_rawframes(out, tmp_path / "s", ImportConfig(flow_codec="float16"))
    assert imported.count("done") == 2 and imported.notes == []
    again = FlowStore(tmp_path / "s")
    meta = again.meta("jump/s2")
    assert (meta["step"], meta["frame_count"]) == (2, FRAMES)  # no second thinning
    assert meta["flows"]["tvl1"]["params"]["step"] == 2
    assert again.meta("jump/s1")["step"] == 1
    rerun = import_rawframes(out, tmp_path / "s", ImportConfig(flow_codec="float16"))
    assert rerun.count("skipped") == 2
    # the store's step round-trips: exporting the imported store writes the same record
    export_rawframes(tmp_path / "s", tmp_path / "raw2", ExportConfig())
    assert json.loads((tmp_path / "raw2" / "jump" / "s2" / rawframes.INFO_FILE).read_text()) == \
        {"step": 2}


def test_a_key_with_whitespace_is_exported_but_left_out_of_the_lists(tmp_path):
    """mmaction2 splits list lines at whitespace: a video whose key holds a space is exported
    but left out of the lists with a note naming it, so the rest of the export still gets its
    lists (a list line with whitespace would be refused, failing the export)."""
    rng = np.random.default_rng(25)
    store_path = _store_with(tmp_path / "store", {"a b": (1, ["tvl1"]), "c": (1, ["tvl1"])}, rng)
    out = tmp_path / "raw"
    summary = export_rawframes(store_path, out, ExportConfig())
    assert summary.count("done") == 2
    assert any("whitespace" in n and "'jump/a b'" in n for n in summary.notes), summary.notes
    for name in ("all_rawframes.txt", "all_flow.txt"):
        lines = (out / name).read_text().splitlines()
        assert [line.split()[0] for line in lines] == ["jump/c"]
    assert (out / "jump" / "a b" / frame_name("img", 1)).is_file()


def test_an_unreadable_step_record_is_a_note(tmp_path):
    folder = tmp_path / "raw" / "jump" / "v0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(23)
    for i in range(1, 4):
        cv2.imwrite(str(folder / frame_name("img", i)), rng.integers(0, 255, (*SIZE, 3), np.uint8))
    (folder / rawframes.INFO_FILE).write_text("{not json")
    summary = import_rawframes(tmp_path / "raw", tmp_path / "s", ImportConfig())
    assert summary.count("done") == 1
    assert any(n.startswith(f"jump/v0: {rawframes.INFO_FILE} unreadable") and "taken as 1" in n
               for n in summary.notes)
    assert FlowStore(tmp_path / "s").meta("jump/v0")["step"] == 1


def test_import_tsn_x_y_flow_names(tmp_path):
    """TSN dense_flow / mmaction2 Kinetics-flow naming (x_%05d.jpg, y_%05d.jpg; filename_tmpl
    '{}_{:05d}.jpg'): imported as flow (before: "done" with RGB only and no word about the flow
    files); files the scan does not understand are named in a note."""
    folder = tmp_path / "raw" / "jump" / "v0"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(24)
    for i in range(1, 5):
        cv2.imwrite(str(folder / frame_name("img", i)), rng.integers(0, 255, (*SIZE, 3), np.uint8))
    for i in range(1, 4):
        cv2.imwrite(str(folder / f"x_{i:05d}.jpg"), np.full(SIZE, 100 + 10 * i, np.uint8))
        cv2.imwrite(str(folder / f"y_{i:05d}.jpg"), np.full(SIZE, 140, np.uint8))
    (folder / "u_00001.jpg").write_bytes(b"")
    summary = import_rawframes(tmp_path / "raw", tmp_path / "s",
                               ImportConfig(flow_codec="uint8:20"))
    assert summary.count("done") == 1
    store = FlowStore(tmp_path / "s")
    meta = store.meta("jump/v0")
    assert list(meta["flows"]) == ["tvl1"] and meta["num_frames"] == 4
    assert "{x,y}_{:05d}.jpg from 1" in meta["flows"]["tvl1"]["params"]["naming"]
    levels = store.read_flow("jump/v0", "tvl1", dequantize=False)[:, :, 0, 0]
    assert levels.tolist() == [[110, 140], [120, 140], [130, 140]]
    assert any("jump/v0: 1 files not read" in n and "u_00001.jpg" in n for n in summary.notes)


def _options(out: Path) -> dict:
    return json.loads((out / ".flowkit-export.json").read_text())


def test_cli_refuses_a_store_of_several_flows_up_front_and_resumes_with_flow(tmp_path):
    """flowkit export rawframes on a store of tvl1, tvl1_backward and costvolume: one error line,
    exit 2, naming the forward flows --flow takes, and no folder left (it used to fail every video,
    exit 1, and leave a stamp of flow_name None that refused the --flow the error suggested)."""
    from click.testing import CliRunner

    from flowkit.cli import main

    rng = np.random.default_rng(5)
    flows = ["costvolume", "tvl1", "tvl1_backward"]
    store = _store_with(tmp_path / "store", {"v0": (1, flows), "v1": (1, flows)}, rng)
    out = tmp_path / "raw"
    r = CliRunner().invoke(main, ["export", "rawframes", str(store), str(out)])
    assert r.exit_code == 2, r.output
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: ") and "several flows" in line, line
    choices = line.split("--flow: ", 1)[1]
    assert [c.split(" (")[0] for c in choices.split(", ")] == ["costvolume", "tvl1"]
    assert "with its backward flow tvl1_backward as flow_{x,y}_m1_*" in line
    assert not out.exists()
    r = CliRunner().invoke(main, ["export", "rawframes", str(store), str(out), "--flow", "tvl1",
                                  "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert (d["done"], d["flow_name"]) == (2, "tvl1")
    assert {v["backward_pairs"] for v in d["videos"]} == {FRAMES - 1}  # tvl1_backward as _m1
    assert (out / "jump" / "v0" / frame_name("flow_x", 2, backward=True)).is_file()
    assert _options(out)["flow_name"] == "tvl1"
    r = CliRunner().invoke(main, ["export", "rawframes", str(store), str(out), "--flow", "tvl1",
                                  "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["skipped"] == 2, r.output
    r = CliRunner().invoke(main, ["export", "rawframes", str(store), str(tmp_path / "raw_b"),
                                  "--flow", "tvl1_backward"])
    assert r.exit_code == 2 and "name its forward flow" in r.stderr, r.output
    assert not (tmp_path / "raw_b").exists()


def test_the_stamp_holds_the_flow_exported_and_a_rerun_naming_it_resumes(source_store, tmp_path):
    out = tmp_path / "raw"
    first = export_rawframes(source_store, out, ExportConfig())
    assert _options(out)["flow_name"] == "tvl1"  # never null when a flow is exported
    assert first.count("done") == 4 and first.flow_name == "tvl1"
    again = export_rawframes(source_store, out, ExportConfig(flow_name="tvl1"))
    assert again.count("skipped") == 4
    # an older flowkit's stamp of "each video's only flow" resumes as the store's only flow
    options = _options(out)
    (out / ".flowkit-export.json").write_text(json.dumps({**options, "flow_name": None}))
    shutil.rmtree(out / "run" / "run_0")
    resumed = export_rawframes(source_store, out, ExportConfig())
    assert (resumed.count("skipped"), resumed.count("done")) == (3, 1)
    assert _options(out) == options
    with pytest.raises(FlowkitError, match="other options.*bound 20.0 -> 32.0"):
        export_rawframes(source_store, out, ExportConfig(bound=32.0))
    # --no-flow-images exports no flow: the stamp names none
    rgb = export_rawframes(source_store, tmp_path / "rgb", ExportConfig(flow=False))
    assert rgb.count("done") == 4 and _options(tmp_path / "rgb")["flow_name"] is None


def test_an_older_stamp_resumes_with_flow_once_the_store_gains_a_second_flow(tmp_path):
    """An older flowkit's export of a one-flow store (stamp flow_name null: "each video's only
    flow") resumes with --flow naming the flow its images are, after the store gained another
    (it used to be refused: "flow_name None -> 'tvl1'"), the stamp rewritten with that name and
    noted; --flow naming the new flow is refused (the images are the other one), the stamp kept."""
    rng = np.random.default_rng(33)
    store = _store_with(tmp_path / "store", {"a": (1, ["tvl1"]), "b": (1, ["tvl1"])}, rng)
    out = tmp_path / "raw"
    export_rawframes(store, out, ExportConfig())
    old = {"format": "mmaction2-rawframes", "flow_name": None, "bound": 20.0, "quality": 95,
           "start_index": 1, "rgb": True, "flow": True}  # what flowkit 2bc7ce4 wrote
    (out / ".flowkit-export.json").write_text(json.dumps(old))
    shutil.rmtree(out / "jump" / "b")
    with FlowStore(store, "a") as s:  # the store gains a second engine's flow
        for key in s.keys():
            with s.writer(key, source="x.mp4", fps=25.0, flow_codec="float16") as w:
                w.append_flow("costvolume", smooth_flow(rng, FRAMES - 1),
                              engine={"engine": "costvolume", "version": "test", "params": {}})
    resumed = export_rawframes(store, out, ExportConfig(flow_name="tvl1"))
    assert (resumed.count("skipped"), resumed.count("done")) == (1, 1)
    assert _options(out) == {**old, "flow_name": "tvl1"}
    assert any("older flowkit's stamp" in n and "'tvl1'" in n for n in resumed.notes)
    (out / ".flowkit-export.json").write_text(json.dumps(old))
    with pytest.raises(FlowkitError, match=r"older flowkit .* not known to be flow 'costvolume' "
                                           r"\(jump/a's first pair is .* from flow 'tvl1'.*new "
                                           r"folder"):
        export_rawframes(store, out, ExportConfig(flow_name="costvolume"))
    assert _options(out) == old  # a refused run rewrites no stamp


def test_an_older_stamp_resumes_with_the_flow_it_exported_beside_a_copy_imported_back(tmp_path):
    """An older flowkit's export (stamp flow_name null), stopped before its last video and imported
    back into the store as flow 'rawframes' (a near-copy of its images, nearer to them than tvl1's
    quantisation and JPEG error): --flow tvl1 resumes it (it used to be refused, 'rawframes' being
    the nearest flow), and --flow rawframes is refused, the video left to export lacking it (it
    used to be accepted and stamped for good, the folder never completed)."""
    rng = np.random.default_rng(34)
    store = _store_with(tmp_path / "store", {"a": (1, ["tvl1"]), "b": (1, ["tvl1"])}, rng)
    out = tmp_path / "raw"
    export_rawframes(store, out, ExportConfig())
    shutil.rmtree(out / "jump" / "b")  # stopped before its last video
    old = {"format": "mmaction2-rawframes", "flow_name": None, "bound": 20.0, "quality": 95,
           "start_index": 1, "rgb": True, "flow": True}  # what flowkit 2bc7ce4 wrote
    (out / ".flowkit-export.json").write_text(json.dumps(old))
    back = import_rawframes(out, store, ImportConfig(flow_name="rawframes", rgb=False,
                                                     flow_codec="float16"))
    assert back.count("done") == 1 and "rawframes" in FlowStore(store).meta("jump/a")["flows"]
    with pytest.raises(FlowkitError, match=r"not known to be flow 'rawframes' \(e\.g\. jump/b "
                                           r"holds no flow 'rawframes'\)"):
        export_rawframes(store, out, ExportConfig(flow_name="rawframes"))
    assert _options(out) == old  # a refused run rewrites no stamp
    resumed = export_rawframes(store, out, ExportConfig(flow_name="tvl1"))
    assert (resumed.count("skipped"), resumed.count("done")) == (1, 1)
    assert _options(out) == {**old, "flow_name": "tvl1"}


def test_an_export_that_exported_nothing_blocks_no_rerun(source_store, tmp_path, monkeypatch):
    from flowkit.interop import export

    out = tmp_path / "raw"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(export, "_write_video", broken)
        summary = export_rawframes(source_store, out, ExportConfig())
    assert summary.count("failed") == 4 and summary.lists == []
    assert not out.exists()  # no stamp, no label map, no folder: it made them, it took them away
    assert any("no video was exported" in n for n in summary.notes)
    out.mkdir()
    with monkeypatch.context() as m:
        m.setattr(export, "_write_video", broken)
        export_rawframes(source_store, out, ExportConfig())
    assert out.is_dir() and not os.listdir(out)  # a folder it did not make is kept, empty
    # what an older flowkit left after such a run: a stamp of other options and a label map
    (out / ".flowkit-export.json").write_text(json.dumps(
        {**ExportConfig().format_options(), "flow_name": None, "bound": 32.0}))
    (out / "label_map.txt").write_text("jump\nrun\n")
    summary = export_rawframes(source_store, out, ExportConfig(flow_name="tvl1"))
    assert summary.count("done") == 4 and _options(out)["flow_name"] == "tvl1"
    assert _options(out)["bound"] == 20.0


def test_videos_of_one_store_with_different_flows(tmp_path):
    """The flow is chosen over the whole store (its index); a video lacking it is reported as
    before, a video holding no flow at all is exported without when no --flow was given."""
    rng = np.random.default_rng(9)
    store = _store_with(tmp_path / "store", {"a": (1, ["tvl1"]), "b": (1, ["farneback_backward"]),
                                             "c": (1, [])}, rng)
    summary = export_rawframes(store, tmp_path / "raw", ExportConfig())
    results = {r.key: r for r in summary.results}
    assert (results["jump/a"].status, results["jump/a"].pairs) == ("done", FRAMES - 1)
    assert results["jump/b"].status == "failed"  # not its farneback_backward beside a's tvl1
    assert "no flow 'tvl1' (it has: farneback_backward)" in results["jump/b"].reason
    assert (results["jump/c"].status, results["jump/c"].pairs) == ("done", 0)
    assert summary.flow_name == "tvl1" and _options(tmp_path / "raw")["flow_name"] == "tvl1"
    named = export_rawframes(store, tmp_path / "raw_fb", ExportConfig(flow_name="farneback"))
    results = {r.key: r for r in named.results}
    assert (results["jump/b"].status, results["jump/b"].backward_pairs) == ("done", FRAMES - 1)
    assert "no flow 'farneback' (it has: tvl1)" in results["jump/a"].reason
    assert "no flow 'farneback' (it has: none)" in results["jump/c"].reason
    assert _options(tmp_path / "raw_fb")["flow_name"] == "farneback"


def test_an_export_without_flow_never_gains_flow_on_a_rerun(tmp_path):
    """A store without flow exports RGB only, its stamp saying so ("flow": false); once the store
    holds flow, a rerun into that folder is refused, naming a new folder and --no-flow-images
    (it used to skip every video and rewrite the stamp to claim flow/tvl1 the folder lacks). A
    stamp an older flowkit wrote for such a folder (flow true, flow_name null, no flow image) is
    read alike."""
    rng = np.random.default_rng(31)
    store = _store_with(tmp_path / "store", {"a": (1, [])}, rng)
    out = tmp_path / "raw"
    assert export_rawframes(store, out, ExportConfig()).count("done") == 1
    stamp = _options(out)
    assert (stamp["flow"], stamp["flow_name"]) == (False, None)
    _store_with(store, {"b": (1, ["tvl1"])}, rng)  # the store gains flow
    for older in (False, True):
        if older:
            (out / ".flowkit-export.json").write_text(json.dumps({**stamp, "flow": True}))
        with pytest.raises(FlowkitError, match=r"exported without flow .*flow_name None -> "
                                               r"'tvl1'.*into a new folder.*--no-flow-images"):
            export_rawframes(store, out, ExportConfig())
        assert not any(n.startswith("flow_") for n in os.listdir(out / "jump" / "a"))
    assert _options(out)["flow"] is True  # a refused run rewrites no stamp
    rgb = export_rawframes(store, out, ExportConfig(flow=False))  # resumes without flow
    assert (rgb.count("skipped"), rgb.count("done")) == (1, 1)
    assert _options(out) == stamp and not (out / "all_flow.txt").exists()
    # an older stamp of "each video's only flow" beside flow images still resumes as before
    full = tmp_path / "full"
    export_rawframes(store, full, ExportConfig())
    (full / ".flowkit-export.json").write_text(json.dumps({**_options(full), "flow_name": None}))
    assert export_rawframes(store, full, ExportConfig()).count("skipped") == 2
    assert _options(full)["flow_name"] == "tvl1"


def test_a_single_frame_video_exports_without_the_named_flow(tmp_path):
    """A video of one frame holds no pair, so no flow: with --flow NAME it is exported as RGB,
    as without --flow (it used to fail: "no flow 'tvl1' (it has: none)")."""
    rng = np.random.default_rng(32)
    store = _store_with(tmp_path / "store", {"ok": (1, ["tvl1"])}, rng)
    with FlowStore(store, "a") as s, s.writer("jump/one", source="one.mp4", fps=25.0, label=0,
                                              label_name="jump") as w:
        w.append_rgb(rng.integers(0, 256, (1, *SIZE, 3), dtype=np.uint8))
    out = tmp_path / "raw"
    summary = export_rawframes(store, out, ExportConfig(flow_name="tvl1"))
    results = {r.key: r for r in summary.results}
    assert (results["jump/one"].status, results["jump/one"].frames,
            results["jump/one"].pairs) == ("done", 1, 0)
    assert results["jump/ok"].pairs == FRAMES - 1
    assert "jump/one 1 0" in (out / "all_rawframes.txt").read_text()
    assert "jump/one" not in (out / "all_flow.txt").read_text()


def test_import_refuses_flow_of_another_kind_under_the_same_name(exported, tmp_path):
    """flow/tvl1 holds one kind of flow: rawframes flow is not put beside flowkit extract's, nor
    flow of another --bound or --flow-codec beside the store's imported flow; the refusal names
    the matching options and --flow-name, and nothing is written. A video of another kind that
    the up-front check did not see fails on its own."""
    computed = _store_with(tmp_path / "computed", {"v0": (1, ["tvl1"])},
                           np.random.default_rng(33))
    with pytest.raises(FlowkitError, match=r"holds flow 'tvl1' as flow computed by flowkit "
                                           r"extract \(engine 'tvl1'.*mmaction2-rawframes flow "
                                           r"\(--bound 20.*Import them as a second flow "
                                           r"\(--flow-name NAME\)"):
        import_rawframes(exported, computed, ImportConfig())
    assert FlowStore(computed).keys() == ["jump/v0"]
    _import(exported, computed, flow_name="rawframes")  # beside it, under another name

    root = tmp_path / "raw"
    shutil.copytree(exported / "jump", root / "jump")
    shutil.copy(exported / "label_map.txt", root)
    _import(root, tmp_path / "s", bound=20.0)
    shutil.copytree(exported / "run", root / "run")
    for options, match in (({"bound": 32.0}, "--bound 32, jpeg images.*Rerun with --bound 20 "),
                           ({"flow_codec": "float16"}, "Rerun with --flow-codec jpegls:0.1 ")):
        with pytest.raises(FlowkitError, match=match + "to extend it.*--flow-name NAME"):
            import_rawframes(root, tmp_path / "s", ImportConfig(**options))
        assert FlowStore(tmp_path / "s").keys() == ["jump/jump_0", "jump/jump_1"]
    resumed = import_rawframes(root, tmp_path / "s", ImportConfig(bound=20.0))
    assert (resumed.count("done"), resumed.count("skipped")) == (2, 2)
    # per video: a flow of another kind than the store's fails that video
    from flowkit.interop.ingest import Source, _import_one, _stored_kinds

    store = FlowStore(tmp_path / "s", "a")
    kinds = _stored_kinds(store.metas(store.keys()), ImportConfig())
    shutil.copytree(exported / "run" / "run_0", root / "run" / "late")
    late = _import_one(store, Source("run/late", root / "run" / "late"),
                       ImportConfig(bound=32.0), StopFlag(), kinds)
    assert late.status == "failed" and "one flow name holds one kind of flow" in late.reason
    assert "run/late" not in FlowStore(tmp_path / "s")


def test_a_root_mixing_flow_image_formats_resumes_as_it_began(exported, tmp_path):
    """What is found per folder (here JPEG flow images in one class, PNG in the other) is no
    kind of its own: a root that imports in one run also finishes when a run over part of it was
    cut short (before, the rerun was refused on every try)."""
    root = tmp_path / "raw"
    shutil.copytree(exported, root)
    for path in (root / "run").rglob("flow_*.jpg"):  # run/*: PNG flow images, same levels
        cv2.imwrite(str(path.with_suffix(".png")), cv2.imread(str(path), 0))
        path.unlink()
    whole = import_rawframes(root, tmp_path / "whole", ImportConfig())
    assert whole.count("done") == 4
    part = tmp_path / "part"
    shutil.copytree(root / "jump", part / "jump")  # the run cut short after jump/*
    shutil.copy(root / "label_map.txt", part)
    _import(part, tmp_path / "s")
    resumed = import_rawframes(root, tmp_path / "s", ImportConfig())
    assert (resumed.count("done"), resumed.count("skipped")) == (2, 2)
    formats = {key: meta["flows"]["tvl1"]["params"]["image_format"]
               for key, meta in FlowStore(tmp_path / "s").metas(FlowStore(tmp_path / "s").keys())
               .items()}
    assert formats == {"jump/jump_0": "jpeg", "jump/jump_1": "jpeg", "run/run_0": "png",
                       "run/run_1": "png"}


def test_a_rerun_says_it_keeps_the_stored_labels(exported, tmp_path):
    """A rerun with a list that labels the store's videos otherwise keeps their labels (a
    finished video is skipped) and says so, instead of only "N videos labelled"."""
    store = _import(exported, tmp_path / "s")
    relabel = tmp_path / "relabel.txt"
    relabel.write_text("".join(f"{key} {FRAMES} {1 - ('run' in key)}\n"
                               for key in FlowStore(store).keys()))
    summary = import_rawframes(exported, store, ImportConfig(annotations=[relabel]))
    assert summary.count("skipped") == 4
    assert any(n.startswith("4 videos already in the store keep their stored label, not this "
                            "run's (e.g. jump/jump_0: label 0 in the store, 1 'run' here)")
               and "-o NEW_STORE" in n for n in summary.notes), summary.notes
    assert FlowStore(store).meta("jump/jump_0")["label"] == 0
    same = import_rawframes(exported, store, ImportConfig())
    assert not any("keep their stored label" in n for n in same.notes)


def test_a_flat_export_imports_with_its_labels_and_unlabelled_videos_are_counted(tmp_path):
    """A Kinetics-like store (no class folders) -> export -> import: the labels come back from the
    export's all_rawframes.txt / all_flow.txt (a video holding only flow is in the second alone);
    the video the store held unlabelled, and every video of a flat root without lists, is
    counted, listed and noted with the fix (before: all label -1 without a word)."""
    rng = np.random.default_rng(41)
    with FlowStore(tmp_path / "store", "a", classes=["abseiling", "zumba"]) as store:
        for key, label, rgb in (("yt_a", 0, True), ("yt_b", 1, True), ("yt_flow", 1, False),
                                ("yt_none", -1, True)):
            with store.writer(key, source=f"{key}.mp4", fps=25.0, label=label,
                              label_name=["", "abseiling", "zumba"][label + 1],
                              flow_codec="float16") as w:
                if rgb:
                    w.append_rgb(rng.integers(0, 256, (FRAMES, *SIZE, 3), dtype=np.uint8))
                w.append_flow("tvl1", smooth_flow(rng, FRAMES - 1),
                              engine={"engine": "tvl1", "version": "test", "params": {}})
    out = tmp_path / "raw"
    export_rawframes(tmp_path / "store", out, ExportConfig())
    assert "yt_flow" not in (out / "all_rawframes.txt").read_text()
    summary = import_rawframes(out, tmp_path / "s", ImportConfig())
    assert summary.count("done") == 4
    back = FlowStore(tmp_path / "s")
    assert back.classes == ["abseiling", "zumba"]
    assert {k: back.meta(k)["label"] for k in back.keys()} == \
        {"yt_a": 0, "yt_b": 1, "yt_flow": 1, "yt_none": -1}
    assert summary.unlabelled == ["yt_none"] and summary.to_dict()["unlabelled_videos"] == \
        ["yt_none"]
    assert summary.labels[0] == "3 videos labelled (2 classes)"
    assert any("3 videos outside class folders labelled from all_rawframes.txt and "
               "all_flow.txt" in n for n in summary.notes), summary.notes
    assert any(n.startswith("1 videos have no label") and "--annotations LIST" in n
               for n in summary.notes), summary.notes
    again = import_rawframes(out, tmp_path / "s", ImportConfig())  # a rerun says it again
    assert again.count("skipped") == 4 and again.unlabelled == ["yt_none"]
    for name in ("all_rawframes.txt", "all_flow.txt"):
        (out / name).unlink()
    bare = import_rawframes(out, tmp_path / "s2", ImportConfig())
    assert bare.unlabelled == ["yt_a", "yt_b", "yt_flow", "yt_none"]
    assert any(n.startswith("4 videos have no label") for n in bare.notes), bare.notes


def test_a_rerun_with_a_list_fills_in_the_labels_the_store_lacks(exported, tmp_path):
    """A flat root imported without labels (all -1, noted with the rerun that labels them), then
    the same import with --annotations: the labels are written into the store in place (nothing
    imported again), counted and noted; the classes are the list's. Before: skipped, -1 kept."""
    root = tmp_path / "flat"
    for key in ("jump/jump_0", "run/run_1"):
        shutil.copytree(exported / key, root / PurePosixPath(key).name)
    store = tmp_path / "s"
    first = import_rawframes(root, store, ImportConfig())
    assert first.unlabelled == ["jump_0", "run_1"] and first.labels_filled == 0
    assert any(n.startswith("2 videos have no label") and "rerun with --annotations LIST" in n
               for n in first.notes), first.notes
    ann = tmp_path / "train.txt"
    ann.write_text(f"jump_0 {FRAMES} 0\nrun_1 {FRAMES} 1\n")
    (tmp_path / "map.txt").write_text("jump\nrun\n")
    rerun = import_rawframes(root, store, ImportConfig(annotations=[ann],
                                                       label_map=tmp_path / "map.txt"))
    assert rerun.count("skipped") == 2 and rerun.count("done") == 0
    assert rerun.labels_filled == 2 and rerun.to_dict()["labels_filled"] == 2
    assert any(n.startswith("2 labels filled in") for n in rerun.notes), rerun.notes
    back = FlowStore(store)
    assert back.classes == CLASSES and back.validate() == []
    assert {k: (back.meta(k)["label"], back.meta(k)["label_name"]) for k in back.keys()} == \
        {"jump_0": (0, "jump"), "run_1": (1, "run")}
    again = import_rawframes(root, store, ImportConfig(annotations=[ann],
                                                       label_map=tmp_path / "map.txt"))
    assert again.labels_filled == 0 and not any("label" in n for n in again.notes), again.notes


def test_an_export_of_class_folders_named_otherwise_than_its_classes_round_trips(tmp_path):
    """Class folders named otherwise than the classes of the export's label map (``air_drumming``
    for ``air drumming``: a store of class folders labelled by a Kinetics CSV) are labelled from
    the export's all_rawframes.txt, so store -> export -> import keeps the labels without
    --annotations. Before: refused, the folders not being in the label map."""
    rng = np.random.default_rng(43)
    classes = ["air drumming", "jump"]
    with FlowStore(tmp_path / "store", "a", classes=classes) as store:
        for key, label in (("air_drumming/yt_a", 0), ("jump/yt_b", 1), ("air_drumming/yt_c", 1)):
            with store.writer(key, source=f"{key}.mp4", fps=25.0, label=label,
                              label_name=classes[label], flow_codec="float16") as w:
                w.append_rgb(rng.integers(0, 256, (FRAMES, *SIZE, 3), dtype=np.uint8))
                w.append_flow("tvl1", smooth_flow(rng, FRAMES - 1),
                              engine={"engine": "tvl1", "version": "test", "params": {}})
    out = tmp_path / "raw"
    export_rawframes(tmp_path / "store", out, ExportConfig())
    summary = import_rawframes(out, tmp_path / "s", ImportConfig())
    assert summary.count("done") == 3 and summary.unlabelled == []
    assert any("in folders label_map.txt does not name (e.g. air_drumming) labelled from "
               "all_rawframes.txt" in n for n in summary.notes), summary.notes
    back = FlowStore(tmp_path / "s")
    assert back.classes == classes
    assert {k: (back.meta(k)["label"], back.meta(k)["label_name"]) for k in back.keys()} == \
        {"air_drumming/yt_a": (0, "air drumming"), "air_drumming/yt_c": (1, "jump"),
         "jump/yt_b": (1, "jump")}
    (out / "all_rawframes.txt").unlink()
    (out / "all_flow.txt").unlink()
    with pytest.raises(FlowkitError, match=r"class folders \['air_drumming'\] are not in the "
                                           r"label map"):
        import_rawframes(out, tmp_path / "s2", ImportConfig())


def _damage_first_scan(path: Path, blob: bytes) -> None:
    """Make ``blob`` (a coded frame in the file at ``path``) undecodable: its start-of-scan
    marker (JPEG and JPEG-LS alike) overwritten."""
    data = path.read_bytes()
    at = data.index(blob) + blob.index(b"\xff\xda")
    path.write_bytes(data[:at] + b"\x00\x00" + data[at + 2:])


def test_a_damaged_imported_video_says_to_reimport_it(exported, tmp_path):
    """The read error of an imported video names the repair that applies: delete its file and
    rerun the import (flowkit extract --redo cannot recompute imported flow, and a rerun of the
    import skipped the video)."""
    from flowkit.errors import DamagedDataError

    root = tmp_path / "raw"
    shutil.copytree(exported / "jump" / "jump_0", root / "jump" / "v0")
    _import(root, tmp_path / "s")
    path = tmp_path / "s" / "videos" / "jump" / "v0.h5"
    _damage_first_scan(path, _raw_blob(path, "flow/tvl1", 1))
    _damage_first_scan(path, _raw_blob(path, "rgb", 2))
    for read in (lambda s: s.read_flow("jump/v0", "tvl1"), lambda s: s.read_rgb("jump/v0")):
        with pytest.raises(DamagedDataError) as caught:
            read(FlowStore(tmp_path / "s"))
        assert f"re-import it: delete {path} and rerun flowkit import rawframes" in \
            str(caught.value) and "--redo" not in str(caught.value)
    problems = FlowStore(tmp_path / "s").validate(deep=True)  # flowkit info --validate --deep
    assert len(problems) == 2 and all(f"re-import it: delete {path}" in p for p in problems)
    path.unlink()
    _import(root, tmp_path / "s")
    assert FlowStore(tmp_path / "s").read_flow("jump/v0", "tvl1").shape[0] == FRAMES - 1
    # imported without flow: no flow record tells, the file's own mark does
    _import(root, tmp_path / "rgb_only", flow=False)
    path = tmp_path / "rgb_only" / "videos" / "jump" / "v0.h5"
    _damage_first_scan(path, _raw_blob(path, "rgb", 2))
    with pytest.raises(DamagedDataError, match=f"re-import it: delete {path} and rerun"):
        FlowStore(tmp_path / "rgb_only").read_rgb("jump/v0")


def _raw_blob(path: Path, name: str, index: int) -> bytes:
    import h5py

    with h5py.File(path, "r") as f:
        return bytes(f[name][index])


def test_cli_summary_prints_bracketed_names_as_they_are():
    """Sources, reasons, notes and the output folder print as they are: rich markup ate
    "[HD]" and raised MarkupError on "[/b]"."""
    import io

    from rich.console import Console

    from flowkit.cli.interop import _finish

    console = Console(file=io.StringIO(), width=250, no_color=True)
    d = {"done": 1, "skipped": 0, "failed": 1, "seconds": 0.5, "notes": ["see [b]x[/b]"],
         "videos": [{"key": "run/a", "source": "run/a [HD]", "status": "failed",
                     "reason": "missing [/b] frames"}]}
    with pytest.raises(SystemExit):
        _finish(console, d, "out [v2]", as_json=False)
    out = console.file.getvalue()
    for text in ("-> out [v2]", "failed: run/a [HD]: missing [/b] frames", "note: see [b]x[/b]"):
        assert text in out, (text, out)


def _jpegs(folder: Path, names: list[str], rng) -> None:
    """Small RGB JPEG files ``names`` in ``folder`` (made)."""
    folder.mkdir(parents=True)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (*SIZE, 3), np.uint8))


def test_folders_of_frames_under_other_names_are_noted_not_skipped_silently(tmp_path):
    """A root of 2 img_* folders and 2 Jester folders (00001.jpg) said "2 done, 0 failed" and, with
    --annotations, "2 rows match no video" without a word on the folders; an all-Jester root said
    "no rawframes folders found" alone. Both now say how many folders of images of other names
    were seen, one of them, and the rename."""
    rng = np.random.default_rng(61)
    root = tmp_path / "raw"
    for key in ("34870", "34871"):
        _jpegs(root / key, [frame_name("img", i) for i in (1, 2)], rng)
    for key in ("34872", "34873"):
        _jpegs(root / key, [f"{i:05d}.jpg" for i in (1, 2)], rng)
    summary = import_rawframes(root, tmp_path / "s", ImportConfig())
    assert summary.count("done") == 2
    note = [n for n in summary.notes if "hold images but no rawframes names" in n]
    assert len(note) == 1 and note[0].startswith("2 folders hold images") and \
        "e.g. 34872/00001.jpg" in note[0] and "img_%05d.jpg" in note[0], summary.notes
    with pytest.raises(FlowkitError, match=r"no rawframes folders .* found; 1 folders hold images "
                                           r"but no rawframes names .*e.g. 00001.jpg: .*"
                                           r"rename them"):  # a video's folder as the root
        import_rawframes(root / "34872", tmp_path / "s2", ImportConfig())
    shutil.rmtree(root / "34870")
    shutil.rmtree(root / "34871")
    with pytest.raises(FlowkitError, match=r"; 2 folders hold images but no rawframes names"):
        import_rawframes(root, tmp_path / "s3", ImportConfig())
    assert not (tmp_path / "s3").exists()


def test_an_import_of_frames_without_flow_notes_that_the_videos_hold_rgb_only(exported, tmp_path):
    """Folders of img_* files only imported without a word on flow (a flow model then said to
    import again, which adds nothing): the summary notes that no flow images were found, how
    many of the videos hold RGB only, and where flow comes from; --no-flow, a video the store
    holds flow of, and a rerun say nothing."""
    rng = np.random.default_rng(62)
    root = tmp_path / "raw"
    for key in ("34870", "34871"):
        _jpegs(root / key, [frame_name("img", i) for i in (1, 2, 3)], rng)
    summary = import_rawframes(root, tmp_path / "s", ImportConfig())
    note = [n for n in summary.notes if n.startswith("no flow images found")]
    assert note and note[0].startswith("no flow images found: the videos hold RGB only, no "
                                       "flow_x_* / flow_y_* images"), summary.notes
    assert "flowkit extract VIDEOS -o NEW_STORE" in note[0] and "modality=rgb" in note[0]
    again = import_rawframes(root, tmp_path / "s", ImportConfig())
    assert again.count("skipped") == 2 and not [n for n in again.notes if "no flow images" in n]
    assert not [n for n in import_rawframes(root, tmp_path / "s2", ImportConfig(flow=False)).notes
                if "no flow images" in n]
    shutil.copytree(exported / "run", root / "run")  # videos with flow beside them: counted
    mixed = import_rawframes(root, tmp_path / "s3", ImportConfig())
    note = [n for n in mixed.notes if n.startswith("no flow images found")]
    assert note and note[0].startswith("no flow images found: 2 of the 4 videos imported hold RGB "
                                       "only (e.g. 34870)"), mixed.notes
