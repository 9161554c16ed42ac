"""Backward flow (``flowkit extract --backward``): the Backward engine wrapper, forward and backward
runs side by side in one store (worker processes included), resume, the command line, ``flowkit
info``, and the refusal of clip engines (motionnet)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import flowkit
from flowkit.conventions import backward_name, is_backward
from flowkit.errors import EngineError
from flowkit.extract import ExtractConfig, build_engine, extract, finished_keys
from flowkit.flow import Backward
from flowkit.labels import scan_videos
from flowkit.samples import sample_specs
from flowkit.store import FlowStore

# Cheap TV-L1, as tests/test_extract.py's; --param form for the command line.
CHEAP = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 10}
CLI_CHEAP = [a for k, v in CHEAP.items() for a in ("--param", f"{k}={v}")] + ["--no-compile"]
# tests/conftest.py's sample_videos: 2 classes x 2 videos, 8 frames of 64x80.
SAMPLE_KW = dict(classes=("pan_left", "zoom_in"), videos_per_class=2, frames=8, size=(64, 80))
T = 8
BACKWARD = backward_name("tvl1")
ENV = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def _config(**kw) -> ExtractConfig:
    """Cheap TV-L1 into lossless codecs: the stored flow is the engine's to float16 rounding."""
    return ExtractConfig(engine_params=dict(CHEAP), flow_codec="float16", rgb_codec="raw", **kw)


def flowkit_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowkit", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=ENV)


@pytest.fixture(scope="module")
def both(sample_videos, tmp_path_factory):
    """The sample folder extracted forward, then backward (in 2 worker processes) into one store."""
    items, classes = scan_videos(sample_videos)
    path = tmp_path_factory.mktemp("backward") / "store"
    forward = extract(items, path, _config(batch=3), classes=classes)
    backward = extract(items, path, _config(batch=3, backward=True, workers=2), classes=classes)
    return items, path, forward, backward


def _interior(a: np.ndarray, margin: int = 12) -> np.ndarray:
    return a[..., margin:-margin, margin:-margin]


# ----------------------------------------------------------------------------- the engine wrapper

def test_backward_engine_swaps_each_pair_and_says_so():
    g = torch.Generator().manual_seed(0)
    texture = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 16, generator=g) * 255,
                                              size=(48, 64), mode="bicubic").clamp(0, 255)
    frames0, frames1 = texture, torch.roll(texture, shifts=2, dims=3)  # content moves 2 px right
    engine = flowkit.create_engine("tvl1", **CHEAP)
    backward = Backward(engine)
    forward_u = _interior(engine(frames0, frames1)[0, 0]).median()
    backward_u = _interior(backward(frames0, frames1)[0, 0]).median()
    assert forward_u == pytest.approx(2.0, abs=0.3) and backward_u == pytest.approx(-2.0, abs=0.3)
    torch.testing.assert_close(backward(frames0, frames1), engine(frames1, frames0))
    assert backward.describe() == {**engine.describe(), "direction": "backward"}
    assert "direction" not in engine.describe()
    assert (backward.name, backward.backend, backward.device, backward.independent_pairs) == (
        "tvl1", engine.backend, engine.device, True)
    assert backward.memory_per_pair(1080, 1920) == engine.memory_per_pair(1080, 1920)


def test_build_engine_wraps_after_passing_engine_options():
    engine = build_engine(_config(backward=True, backend="torch", compile=False))
    assert isinstance(engine, Backward) and engine.engine.backend == "torch"
    assert engine.engine.compile is False and engine.params == flowkit.create_engine(
        "tvl1", **CHEAP).params


def test_clip_engines_refuse_backward():
    with pytest.raises(EngineError, match="one clip"):
        ExtractConfig(method="motionnet", backward=True)
    ExtractConfig(method="motionnet")  # forward motionnet stays a valid config


# ----------------------------------------------------------------------------- extraction

def test_forward_and_backward_side_by_side(both):
    items, path, forward, backward = both
    assert [r.status for r in forward.results] == ["done"] * 4, forward.to_dict()
    assert [r.status for r in backward.results] == ["done"] * 4, backward.to_dict()
    assert (forward.method, backward.method) == ("tvl1", BACKWARD)
    assert backward.pairs == 4 * (T - 1)
    with FlowStore(path) as store:
        for item in items:
            assert store.flow_names(item.key) == ["tvl1", BACKWARD]
            flows = store.meta(item.key)["flows"]
            assert flows[BACKWARD]["direction"] == "backward" and is_backward(BACKWARD)
            assert "direction" not in flows["tvl1"]
            assert flows[BACKWARD]["params"] == flows["tvl1"]["params"]
            assert flows[BACKWARD]["shape"] == flows["tvl1"]["shape"] == [T - 1, 2, 64, 80]
        assert store.validate() == []


def test_backward_flow_is_the_engine_on_swapped_frames(both):
    items, path, _, _ = both
    engine = flowkit.create_engine("tvl1", **CHEAP)
    with FlowStore(path) as store:
        for item in items:
            rgb = torch.from_numpy(store.read_rgb(item.key)).permute(0, 3, 1, 2)
            expected = engine(rgb[1:], rgb[:-1]).numpy()
            np.testing.assert_allclose(store.read_flow(item.key, BACKWARD), expected,
                                       atol=0.02, rtol=0.01)


def test_backward_pan_moves_the_other_way(both):
    _, path, _, _ = both
    with FlowStore(path) as store:
        for spec in sample_specs(**SAMPLE_KW):
            if spec.class_name != "pan_left":
                continue
            key = f"pan_left/{spec.filename[:-4]}"
            true_u = float(spec.flow()[0].mean())  # -speed: the content moves left
            forward_u = np.median(_interior(store.read_flow(key, "tvl1")[:, 0]))
            backward_u = np.median(_interior(store.read_flow(key, BACKWARD)[:, 0]))
            assert true_u < -0.9
            assert forward_u == pytest.approx(true_u, abs=0.35)
            assert backward_u == pytest.approx(-true_u, abs=0.35)


def test_rerun_backward_resumes_and_forward_is_not_refused(both):
    items, path, _, _ = both
    stamps = {p: p.stat().st_mtime_ns for p in (path / "videos").rglob("*.h5")}
    again = extract(items, path, _config(backward=True))
    assert [r.status for r in again.results] == ["skipped"] * 4
    assert all(r.reason == f"already in the store with flow/{BACKWARD}" for r in again.results)
    forward = extract(items, path, _config())  # the store check passes the other direction too
    assert [r.status for r in forward.results] == ["skipped"] * 4
    assert finished_keys(path, BACKWARD, items) == {item.key for item in items}
    assert {p: p.stat().st_mtime_ns for p in (path / "videos").rglob("*.h5")} == stamps


def test_a_backward_run_beside_forward_flow_does_not_write_the_rgb_again(sample_videos, tmp_path,
                                                                         monkeypatch):
    """A --backward run into a video that already holds its RGB frames (from the forward run)
    adds only the backward flow: the frames are kept as they are, not decoded and written a
    second time (wasted time and, with a lossy codec, a second generation of JPEG)."""
    from flowkit.store import VideoWriter

    items, classes = scan_videos(sample_videos)
    calls = []
    append_rgb = VideoWriter.append_rgb
    monkeypatch.setattr(VideoWriter, "append_rgb",
                        lambda self, frames: (calls.append(len(frames)),
                                              append_rgb(self, frames))[1])
    path = tmp_path / "s"
    extract(items[:1], path, _config(), classes=classes)
    assert sum(calls) == T  # the forward run stores the frames (the counter sees them)
    rgb = FlowStore(path).read_rgb(items[0].key)
    calls.clear()
    backward = extract(items[:1], path, _config(backward=True), classes=classes)
    assert [r.status for r in backward.results] == ["done"], backward.results
    assert calls == []
    with FlowStore(path) as store:
        assert store.flow_names(items[0].key) == ["tvl1", BACKWARD]
        np.testing.assert_array_equal(store.read_rgb(items[0].key), rgb)


def test_the_two_directions_are_made_with_the_same_parameters(sample_videos, tmp_path):
    """Backward flow beside a forward flow made with other engine parameters (or forward beside
    backward) is refused before computing, with the --param values of the flow already there;
    before, `--backward` without the forward run's --param computed the other direction with
    the defaults, silently. --redo-mismatched computes the run's direction with its options (the
    other keeps its own); a forward flow another engine wrote (imported) is not compared."""
    from flowkit.errors import StoreError

    items, classes = scan_videos(sample_videos)
    path = tmp_path / "s"
    extract(items[:2], path, _config(), classes=classes)
    other = dict(CHEAP, nscales=1)

    def run(videos, **kw):
        return extract(videos, path, ExtractConfig(engine_params=other, flow_codec="float16",
                                                   rgb_codec="raw", **kw), classes=classes)

    with pytest.raises(StoreError) as refused:
        run(items[:2], backward=True)
    message = str(refused.value)
    assert ("engine parameters of flow/tvl1 (the other direction of flow/tvl1_backward) "
            "nscales=2 in the store, nscales=1 asked (2 of 2 videos checked)") in message, message
    assert "Nothing was computed. Rerun with --param nscales=2 to extend this store" in message
    assert "flow/tvl1 keeps its parameters until it is recomputed the same way" in message
    assert FlowStore(path).flow_names(items[0].key) == ["tvl1"]
    extract(items[2:3], path, _config(backward=True), classes=classes)  # backward alone
    with pytest.raises(StoreError, match=r"of flow/tvl1_backward \(the other direction of "
                                         r"flow/tvl1\) nscales=2 in the store, nscales=1 asked"):
        run(items[2:3])
    redone = run(items[:2], backward=True, redo_mismatched=True)
    assert [r.status for r in redone.results] == ["done", "done"], redone.results
    flows = FlowStore(path).meta(items[0].key)["flows"]
    assert (flows["tvl1"]["params"]["nscales"], flows[BACKWARD]["params"]["nscales"]) == (2, 1)
    # a forward flow imported from rawframes: the backward run has nothing to match
    imported = {"engine": "mmaction2-rawframes", "version": "0.1.0", "backend": "external",
                "params": {"bound": 20.0, "source_format": "mmaction2-rawframes"}}
    key, video = items[3].key, items[3]
    with FlowStore(path, mode="a") as store:
        with store.writer(key, source=str(video.path), fps=25.0, label=video.label,
                          label_name=video.label_name, source_size=(64, 80),
                          flow_codec="float16", rgb_codec="raw") as w:
            frames = flowkit.video.load_frames(video.path)
            w.append_rgb(frames)
            w.append_flow("tvl1", np.zeros((len(frames) - 1, 2, 64, 80), np.float32),
                          engine=imported)
    beside = run(items[3:4], backward=True)
    assert [r.status for r in beside.results] == ["done"], beside.results


def test_a_redo_with_other_options_drops_the_other_direction_made_the_old_way(sample_videos,
                                                                               tmp_path):
    """--redo-mismatched recomputing flow/tvl1 with other parameters drops the video's
    tvl1_backward, made with the old ones, and says so on the video's line and in the summary;
    before, the store kept both, silently (the same mix written directly is refused). A redo
    with the same options (--redo KEY) keeps it; --backward then computes it anew beside."""
    items, classes = scan_videos(sample_videos)
    path, video = tmp_path / "s", items[:1]
    extract(video, path, _config(), classes=classes)
    extract(video, path, _config(backward=True), classes=classes)
    kept = extract(video, path, _config(redo=(video[0].key,)), classes=classes)
    assert FlowStore(path).flow_names(video[0].key) == ["tvl1", BACKWARD], kept.results
    other = dict(CHEAP, nscales=1)

    def run(**kw):
        return extract(video, path, ExtractConfig(engine_params=other, flow_codec="float16",
                                                  rgb_codec="raw", **kw), classes=classes)

    redone = run(redo_mismatched=True)
    assert [r.status for r in redone.results] == ["done"], redone.results
    assert FlowStore(path).flow_names(video[0].key) == ["tvl1"]
    assert (f"flow/{BACKWARD} (made with other engine parameters than the new flow/tvl1; add "
            "--backward to recompute it)") in redone.results[0].reason, redone.results[0].reason
    assert any(f"1 of them held flow/{BACKWARD}" in n for n in redone.notes), redone.notes
    [note] = [n for n in redone.notes if f"1 of them held flow/{BACKWARD}" in n]
    assert note.endswith("add --backward to recompute it"), note  # this run was forward
    assert "damaged" not in redone.results[0].reason, redone.results[0].reason  # not damage
    again = run(backward=True)
    assert [r.status for r in again.results] == ["done"], again.results
    flows = FlowStore(path).meta(video[0].key)["flows"]
    assert flows["tvl1"]["params"]["nscales"] == flows[BACKWARD]["params"]["nscales"] == 1


def test_a_redo_whose_new_flow_matches_the_other_direction_keeps_it(sample_videos, tmp_path):
    """A store whose tvl1 (nscales=2) and tvl1_backward (nscales=1) differ: --redo-mismatched
    recomputing tvl1 with nscales=1 makes it alike the backward flow, which is kept, not dropped
    as "made with other engine parameters"."""
    items, classes = scan_videos(sample_videos)
    path, video = tmp_path / "s", items[:1]
    extract(video, path, _config(), classes=classes)  # forward, nscales=2
    other = dict(CHEAP, nscales=1)

    def run(**kw):
        return extract(video, path, ExtractConfig(engine_params=other, flow_codec="float16",
                                                  rgb_codec="raw", redo_mismatched=True, **kw),
                       classes=classes)

    run(backward=True)  # backward beside it, nscales=1 (the forward keeps its own)
    flows = FlowStore(path).meta(video[0].key)["flows"]
    assert (flows["tvl1"]["params"]["nscales"], flows[BACKWARD]["params"]["nscales"]) == (2, 1)
    redone = run()
    assert [r.status for r in redone.results] == ["done"], redone.results
    assert FlowStore(path).flow_names(video[0].key) == ["tvl1", BACKWARD], redone.results
    reason = redone.results[0].reason
    assert "made with other" not in reason and "directions alike" not in reason, reason
    flows = FlowStore(path).meta(video[0].key)["flows"]
    assert flows["tvl1"]["params"]["nscales"] == flows[BACKWARD]["params"]["nscales"] == 1


def test_a_redo_drops_an_imported_other_direction_beside_the_recomputed_flow(sample_videos,
                                                                              tmp_path):
    """An imported tvl1_backward (another engine's record) beside a tvl1 that --redo-mismatched
    recomputes: dropped and named as for other parameters (it stayed, silently, and a later
    --backward was refused for the imported flow)."""
    import h5py

    items, classes = scan_videos(sample_videos)
    path, video = tmp_path / "s", items[:1]
    extract(video, path, _config(backward=True), classes=classes)
    extract(video, path, _config(), classes=classes)
    file = next((path / "videos").rglob("*.h5"))
    with h5py.File(file, "a") as f:  # as `flowkit import rawframes` records its flow
        f[f"flow/{BACKWARD}"].attrs["engine"] = "mmaction2-rawframes"
    redone = extract(video, path, ExtractConfig(engine_params=dict(CHEAP, nscales=1),
                                                flow_codec="float16", rgb_codec="raw",
                                                redo_mismatched=True), classes=classes)
    assert [r.status for r in redone.results] == ["done"], redone.results
    assert FlowStore(path).flow_names(video[0].key) == ["tvl1"]
    assert (f"flow/{BACKWARD} (made with other engine, mmaction2-rawframes, than the new "
            "flow/tvl1; add --backward to recompute it)") in redone.results[0].reason


# ----------------------------------------------------------------------------- command line

def test_cli_backward_and_info(sample_videos, both, tmp_path):
    video = sample_videos / "pan_left" / "pan_left_0.mp4"
    r = flowkit_cli("extract", video, "-o", tmp_path / "s", "--backward", "--json", *CLI_CHEAP)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["done"], d["pairs"], d["method"]) == (1, T - 1, BACKWARD)
    with FlowStore(tmp_path / "s") as store:
        assert store.flow_names("pan_left_0") == [BACKWARD]
        assert np.median(_interior(store.read_flow("pan_left_0", BACKWARD)[:, 0])) > 0.5

    info = flowkit_cli("info", both[1])
    assert info.returncode == 0, info.stderr
    assert "flow/tvl1 " in info.stdout and f"flow/{BACKWARD} " in info.stdout, info.stdout
    assert info.stdout.count("backward flow, frame t+1 -> t") == 1, info.stdout


def test_cli_refuses_motionnet_backward(sample_videos, tmp_path):
    r = flowkit_cli("extract", sample_videos, "-o", tmp_path / "s", "--method", "motionnet",
                    "--backward")
    assert r.returncode == 2, r.stderr
    assert "no backward flow" in r.stderr and "one clip" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()
