"""Benchmark harness and OpenCV peers: result keys and sane values, known-flow accuracy, missing peers,
method and parameter resolution, dataset loading and resizing."""
import json
import math

import cv2
import numpy as np
import pytest

from flowkit.bench import FlowPair, harness, peers, write_flo
from flowkit.bench.flo import BenchError
from flowkit.errors import EngineError

# Small enough that tvl1 takes a fraction of a second per pass.
TINY = {"nscales": 2, "warps": 1, "outer_iterations": 2}


@pytest.fixture(scope="module")
def tiny_pairs():
    pairs, info = harness.load_dataset("synthetic", size=(40, 48), pairs=2)
    return pairs, info


def _finite(value):
    return value is not None and math.isfinite(value)


def test_tvl1_and_farneback_results_are_sane(tiny_pairs):
    pairs, info = tiny_pairs
    results = harness.run_benchmark(["tvl1", "opencv-farneback"], pairs, batch=2, repeats=2,
                                    params=TINY, dataset=info)
    assert [r["method"] for r in results] == ["tvl1", "opencv-farneback"]
    json.dumps(results, allow_nan=False)
    for r in results:
        assert list(r) == harness.result_keys()
        assert r["status"] == "ok" and r["reason"] is None
        assert r["device"] == "cpu" and r["pairs"] == 2 and r["size"] == "40x48"
        for key in ("pairs_per_s", "median_pass_s", "min_pass_s", "max_pass_s", "warmup_s",
                    "peak_mem_mb", *harness.METRICS):
            assert _finite(r[key]), key
        assert r["min_pass_s"] <= r["median_pass_s"] <= r["max_pass_s"]
        assert r["pairs_per_s"] == pytest.approx(2 / r["median_pass_s"])
        assert 0 <= r["epe"] < 3 and 0 <= r["outliers"] <= 1 and r["angular"] >= 0
        assert set(r["versions"]) >= {"flowkit", "torch", "opencv"}
        assert set(r["machine"]) >= {"cpu", "cores", "torch_threads", "opencv_threads", "gpu"}
    tvl1, farneback = results
    assert tvl1["batch"] == 2 and tvl1["params"]["nscales"] == 2
    assert farneback["batch"] == 1 and farneback["opencv_threads"] == cv2.getNumThreads()
    assert farneback["params"]["winsize"] == 15


def _oracle(pairs, offset=(0.0, 0.0)):
    """A method that returns each pair's ground truth plus ``offset`` (found by frame content)."""
    truth = {p.frame0.tobytes(): p.flow for p in pairs}
    shift = np.array(offset, np.float32)[:, None, None]

    def fn(frames0, frames1):
        images = frames0.permute(0, 2, 3, 1).numpy()
        return np.stack([truth[np.ascontiguousarray(im).tobytes()] + shift for im in images])
    return fn


def test_known_flow_gives_known_errors(tiny_pairs):
    pairs, _ = tiny_pairs
    methods = [harness.Method("truth", _oracle(pairs)), harness.Method("off", _oracle(pairs, (3, 4)))]
    truth, off = harness.run_benchmark(methods, pairs, batch=2, repeats=1)
    assert truth["epe"] == 0 and truth["epe_noc"] == 0 and truth["outliers"] == 0
    assert truth["angular"] == pytest.approx(0, abs=1e-4)
    assert off["epe"] == pytest.approx(5) and off["epe_noc"] == pytest.approx(5)
    assert off["outliers"] == 1


def test_missing_peer_is_reported_not_dropped(tiny_pairs, monkeypatch):
    monkeypatch.delattr(cv2.optflow, "DualTVL1OpticalFlow_create")
    with pytest.raises(peers.PeerMissing, match="contrib"):
        peers.create_peer("opencv-tvl1")
    assert "DualTVL1OpticalFlow_create" in peers.peer_available("opencv-tvl1")
    pairs, info = tiny_pairs
    missing, dis = harness.run_benchmark(["opencv-tvl1", "opencv-dis"], pairs, repeats=1,
                                         dataset=info)
    assert missing["method"] == "opencv-tvl1" and missing["status"] == "missing"
    assert "DualTVL1OpticalFlow_create" in missing["reason"]
    assert missing["pairs_per_s"] is None and missing["epe"] is None
    assert dis["status"] == "ok"


def test_opencv_tvl1_peer_uses_the_given_parameters(tiny_pairs):
    pair = tiny_pairs[0][0]
    params = dict(tau=0.2, lambda_=0.1, theta=0.4, nscales=2, warps=2, epsilon=0.02,
                  inner_iterations=7, outer_iterations=3, scale_step=0.6, median_filtering=3)
    peer = peers.create_peer("opencv-tvl1", **params)
    chw = lambda im: im.transpose(2, 0, 1)[None]
    flow = peer(chw(pair.frame0), chw(pair.frame1))
    direct = cv2.optflow.DualTVL1OpticalFlow_create(
        tau=0.2, lambda_=0.1, theta=0.4, nscales=2, warps=2, epsilon=0.02, innnerIterations=7,
        outerIterations=3, scaleStep=0.6, medianFiltering=3)
    gray = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
    expected = direct.calc(gray(pair.frame0), gray(pair.frame1), None).transpose(2, 0, 1)
    assert flow.shape == (1, 2, 40, 48) and flow.dtype == np.float32
    np.testing.assert_array_equal(flow[0], expected)


def test_methods_and_params_resolve():
    names = harness.available_methods()
    assert names[0] == "tvl1" and names[-3:] == list(peers.PEERS) and len(names) == len(set(names))
    assert harness.compile_variants("tvl1", "both") == [False, True]
    assert harness.compile_variants("opencv-tvl1", "both") == [False]
    assert harness.resolve_methods("tvl1, opencv-dis,tvl1") == ["tvl1", "opencv-dis"]
    assert harness.resolve_methods("all") == names
    with pytest.raises(BenchError, match="unknown method 'raft'.*opencv-farneback"):
        harness.resolve_methods("tvl1,raft")
    per = harness.split_params({"nscales": 2, "opencv-dis:preset": "fast"},
                               ["tvl1", "tvnet", "opencv-tvl1", "opencv-dis"])
    assert per == {"tvl1": {"nscales": 2}, "tvnet": {},
                   "opencv-tvl1": {"nscales": 2}, "opencv-dis": {"preset": "fast"}}
    with pytest.raises(BenchError, match="has a parameter 'winsize'"):
        harness.split_params({"winsize": 9}, ["tvl1"])
    with pytest.raises(BenchError, match="not among the methods"):
        harness.split_params({"opencv-dis:preset": "fast"}, ["tvl1"])


def test_sizes_and_stereo_scale():
    assert harness.parse_size("256x340") == (256, 340) and harness.parse_size("0.5") == 0.5
    with pytest.raises(BenchError, match="HxW"):
        harness.parse_size("big")
    pairs, info = harness.load_dataset("stereo", size=(125, 185))
    assert len(pairs) == 1 and info["scale"] == 0.25 and info["size"] == "125x185"
    with pytest.raises(BenchError, match="needs the dataset folder"):
        harness.load_dataset("middlebury")


def test_folder_dataset_resize_scales_flow(tmp_path):
    h, w = 40, 60
    rng = np.random.default_rng(0)
    seq = tmp_path / "Seq"
    seq.mkdir()
    for name in ("frame10.png", "frame11.png"):
        cv2.imwrite(str(seq / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    flow = np.stack([np.full((h, w), 2.0), np.full((h, w), -1.0)]).astype(np.float32)
    flow[:, :4, :4] = 2e9  # unknown
    write_flo(seq / "flow10.flo", flow)
    (pair,), info = harness.load_dataset("middlebury", tmp_path, size=(20, 15))
    assert isinstance(pair, FlowPair) and info["size"] == "20x15"
    assert pair.frame0.shape == (20, 15, 3) and pair.flow.shape == (2, 20, 15)
    np.testing.assert_allclose(pair.flow[0][pair.valid], 0.5, rtol=1e-6)
    np.testing.assert_allclose(pair.flow[1][pair.valid], -0.5, rtol=1e-6)
    assert not pair.valid[:2, :1].any() and pair.valid.sum() > 250


def test_method_that_fails_is_reported(tiny_pairs):
    def broken(frames0, frames1):
        raise EngineError("needs trained weights: pass weights=PATH")

    pairs, _ = tiny_pairs
    failed, ok = harness.run_benchmark([harness.Method("broken", broken), "opencv-farneback"], pairs,
                                       repeats=1)
    assert failed["status"] == "failed" and "trained weights" in failed["reason"]
    assert ok["status"] == "ok"


def _blank_pair(h, w):
    z = np.zeros((h, w, 3), np.uint8)
    return FlowPair(f"{h}x{w}", z, z, np.zeros((2, h, w), np.float32), np.ones((h, w), bool),
                    np.zeros((h, w), bool))


def test_every_batch_shape_is_warmed_up_before_the_timed_passes():
    """A method with a one-off cost per input shape (torch.compile compiles per shape): every
    distinct batch shape (frame sizes of a mixed dataset, the shorter last batch) is called once in
    the warm-up, so the timed passes meet no new shape. Before, only the first and the last batch
    were warmed: here (1, 3, 16, 16) and (1, 3, 24, 24) were first met in a timed pass."""
    calls = []

    def fn(frames0, frames1):
        calls.append(tuple(frames0.shape))
        return np.zeros((frames0.shape[0], 2, *frames0.shape[2:]), np.float32)

    pairs = [_blank_pair(16, 16)] * 3 + [_blank_pair(24, 24)] + [_blank_pair(32, 32)] * 2
    (r,) = harness.run_benchmark([harness.Method("per-shape", fn)], pairs, batch=2, repeats=2)
    assert r["status"] == "ok"
    shapes = [(2, 3, 16, 16), (1, 3, 16, 16), (1, 3, 24, 24), (2, 3, 32, 32)]
    timed = calls[-2 * len(shapes):]
    assert timed == shapes * 2
    assert calls[:-len(timed)] == shapes  # the warm-up: each shape once, in order


def test_all_expands_to_every_method(tiny_pairs, monkeypatch):
    """run_benchmark(["all"]) runs every method (split_params and the runs see the same names);
    before, it gave one "missing" row for a method called "all"."""
    monkeypatch.setattr(harness, "available_methods", lambda: ["opencv-dis", "opencv-farneback"])
    pairs, info = tiny_pairs
    results = harness.run_benchmark(["all", "opencv-dis"], pairs, repeats=1, dataset=info,
                                    params={"opencv-dis:preset": "fast"})
    assert [(r["method"], r["status"]) for r in results] == [("opencv-dis", "ok"),
                                                            ("opencv-farneback", "ok")]
    assert results[0]["params"] == {"preset": "fast"}


@pytest.mark.parametrize("params, message", [
    ({"opencv-tvl1:early_stop": "False"}, "opencv-tvl1: early_stop must be true or false"),
    ({"opencv-tvl1:early_stop": 0}, "opencv-tvl1: early_stop must be true or false"),
    ({"opencv-tvl1:nscales": 2.7}, "opencv-tvl1: nscales must be an integer"),
    ({"opencv-tvl1:scale_step": 1.5}, r"opencv-tvl1: scale_step must be in \(0, 1\)"),
    ({"opencv-tvl1:median_filtering": 7}, "opencv-tvl1: median_filtering must be 0 or 1"),
    ({"opencv-farneback:pyr_scale": 1.0}, r"opencv-farneback: pyr_scale must be in \(0, 1\)"),
    ({"opencv-farneback:flags": 4}, "opencv-farneback: flags must be 0 or 256"),
    ({"opencv-farneback:winsize": "big"}, "opencv-farneback: winsize must be an integer"),
    ({"preset": "slow"}, "opencv-dis: preset must be one of"),
    ({"tvl1:warps": 2.5}, "tvl1: warps must be an integer"),
])
def test_bad_parameters_are_refused_before_anything_runs(tiny_pairs, params, message):
    """Peer parameters are typed and range-checked like the engines' (one BenchError before any
    method is built): before, "False" was truthy, 2.7 was truncated, an out-of-range value crashed
    the run with a cv2.error, and an engine's bad value became a "missing" row."""
    pairs, info = tiny_pairs
    with pytest.raises(BenchError, match=message):
        harness.run_benchmark(["tvl1", "opencv-tvl1", "opencv-dis", "opencv-farneback"], pairs,
                              repeats=1, dataset=info, params=params)


def _tvnet_checkpoint(path, scales=1, warps=1, iterations=10):
    """A small untrained TVNet checkpoint, as `flowkit train-flow tvnet` writes one."""
    from dataclasses import asdict

    from flowkit import checkpoints
    from flowkit.flow.tvnet import TVNet

    net = TVNet(scales, warps, iterations)
    checkpoints.save_checkpoint(path, "tvnet", {"config": asdict(net.config),
                                                "state_dict": net.state_dict()})
    return str(path)


@pytest.mark.parametrize("weights, extra, message", [
    ("nope.pt", {}, "no such tvnet weights: .*nope.pt"),
    ("motionnet", {}, "is a MotionNet checkpoint, not a TVNet one"),
    ("tvnet", {"tvnet:iterations": 50}, "trained with iterations=10, but iterations=50"),
])
def test_weights_are_checked_before_anything_runs(tiny_pairs, tmp_path, weights, extra, message):
    """Weights an engine cannot load are refused up front, as `flowkit extract --weights` refuses
    them: before, only types and ranges were checked, the other methods were measured first and
    the engine's row said "missing" (the word for an absent OpenCV function)."""
    from flowkit import checkpoints

    if weights == "tvnet":
        weights = _tvnet_checkpoint(tmp_path / "tv.pt")
    elif weights == "motionnet":
        weights = str(tmp_path / "mn.pt")
        checkpoints.save_checkpoint(weights, "motionnet", {"state_dict": {}})
    calls = []
    spy = harness.Method("spy", lambda f0, f1: calls.append(1) or np.zeros((len(f0), 2, 40, 48)))
    pairs, info = tiny_pairs
    with pytest.raises(BenchError, match=f"^--param: .*{message}"):
        harness.run_benchmark([spy, "tvnet"], pairs, repeats=1, dataset=info,
                              params={"tvnet:weights": str(weights), **extra})
    assert not calls  # nothing measured


def test_engine_that_refuses_to_be_built_is_failed_not_missing(tiny_pairs, tmp_path, monkeypatch):
    """An engine that cannot be built on the CPU either (no trained weights, weights that stopped
    loading after the up-front check) is "failed", as the docstring says; "missing" is for what is
    absent here (an OpenCV function, CUDA, CuPy)."""
    pairs, info = tiny_pairs
    (row,) = harness.run_benchmark(["motionnet"], pairs, repeats=1, dataset=info)
    assert row["status"] == "failed" and "needs trained weights" in row["reason"]
    weights = _tvnet_checkpoint(tmp_path / "tv.pt")
    monkeypatch.setattr(harness, "check_method_params", lambda per_method: None)
    (tmp_path / "tv.pt").unlink()  # gone between the check and the build
    (row,) = harness.run_benchmark(["tvnet"], pairs, repeats=1, dataset=info,
                                   params={"weights": weights})
    assert row["status"] == "failed" and "no such tvnet weights" in row["reason"]
    monkeypatch.setattr(harness, "create_peer", lambda name, **params: (_ for _ in ()).throw(
        peers.PeerMissing(f"{name}: cv2.optflow is missing")))
    (row,) = harness.run_benchmark(["opencv-tvl1"], pairs, repeats=1, dataset=info)
    assert row["status"] == "missing"


def test_peer_parameters_are_typed():
    peer = peers.create_peer("opencv-tvl1", median_filtering=5.0, early_stop=False, nscales=2)
    assert peer.params["median_filtering"] == 5 and type(peer.params["median_filtering"]) is int
    assert peer.params["early_stop"] is False
    assert peers.create_peer("opencv-dis", preset="FAST").params == {"preset": "fast"}
    assert type(peers.create_peer("opencv-farneback", poly_sigma=2).params["poly_sigma"]) is float
    with pytest.raises(BenchError, match="has no parameter winsize"):
        peers.check_peer_params("opencv-tvl1", {"winsize": 3})


def test_opencv_errors_become_failed_rows(tiny_pairs, monkeypatch):
    """cv2.error while building a peer's solver or computing a pair is that method's "failed" row;
    the methods after it still run (before, the traceback ended the whole benchmark)."""
    pairs, info = tiny_pairs

    def refuse(**kwargs):
        raise cv2.error("OpenCV(x) tvl1flow.cpp:1: error: (-215:Assertion failed) nscales > 0")

    monkeypatch.setattr(cv2.optflow, "DualTVL1OpticalFlow_create", refuse)
    failed, ok = harness.run_benchmark(["opencv-tvl1", "opencv-dis"], pairs, repeats=1,
                                       dataset=info)
    assert failed["status"] == "failed" and "nscales > 0" in failed["reason"]
    assert failed["reason"].startswith("opencv-tvl1: OpenCV refused its parameters")
    assert ok["status"] == "ok"

    class Solver:
        def calc(self, a, b, flow):
            raise cv2.error("OpenCV(x) matrix.cpp:1: error: (-215:Assertion failed) roi.x >= 0")

    monkeypatch.setattr(cv2.optflow, "DualTVL1OpticalFlow_create", lambda **kwargs: Solver())
    failed, ok = harness.run_benchmark(["opencv-tvl1", "opencv-farneback"], pairs, repeats=1,
                                       dataset=info)
    assert failed["status"] == "failed" and "roi.x >= 0" in failed["reason"]
    assert "opencv-tvl1: OpenCV failed on a 40x48 pair" in failed["reason"]
    assert ok["status"] == "ok"


def test_opencv_tvl1_peer_early_stop_maps_to_opencv_epsilon(tiny_pairs):
    """opencv-tvl1 keeps OpenCV's epsilon stopping rule by default (early_stop=True) and maps
    early_stop=False to epsilon=0 (full iterations): a comparison against flowkit's tvl1 with the
    same switch only means something if the peer runs what the switch says."""
    pair = tiny_pairs[0][0]
    chw = lambda im: im.transpose(2, 0, 1)[None]
    gray = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)

    def direct(**kwargs):
        solver = cv2.optflow.DualTVL1OpticalFlow_create(nscales=2, **kwargs)
        return solver.calc(gray(pair.frame0), gray(pair.frame1), None).transpose(2, 0, 1)

    stopping, full = direct(), direct(epsilon=0.0)
    assert np.abs(stopping - full).max() > 0.1  # the pair tells the two rules apart
    default = peers.create_peer("opencv-tvl1", nscales=2)(chw(pair.frame0), chw(pair.frame1))
    np.testing.assert_array_equal(default[0], stopping)
    no_stop = peers.create_peer("opencv-tvl1", nscales=2, early_stop=False)
    np.testing.assert_array_equal(no_stop(chw(pair.frame0), chw(pair.frame1))[0], full)


@pytest.mark.parametrize("params", [{}, {"levels": 2, "winsize": 9}])
def test_opencv_farneback_peer_passes_parameters_in_opencv_order(tiny_pairs, params):
    """opencv-farneback is cv2.calcOpticalFlowFarneback with its parameters in OpenCV's positional
    order (pyr_scale, levels, winsize, ...): with the defaults and with levels and winsize set, the
    peer's flow equals the direct call, so a swapped pair of arguments cannot pass as a peer."""
    pair = tiny_pairs[0][1]
    chw = lambda im: im.transpose(2, 0, 1)[None]
    gray = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
    prm = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
           "poly_sigma": 1.2, "flags": 0, **params}
    expected = cv2.calcOpticalFlowFarneback(
        gray(pair.frame0), gray(pair.frame1), None, prm["pyr_scale"], prm["levels"],
        prm["winsize"], prm["iterations"], prm["poly_n"], prm["poly_sigma"], prm["flags"])
    flow = peers.create_peer("opencv-farneback", **params)(chw(pair.frame0), chw(pair.frame1))
    np.testing.assert_array_equal(flow[0], expected.transpose(2, 0, 1))


def test_method_returning_too_few_flows_is_a_failed_row():
    """A method that returns fewer flows than the batch has pairs is a "failed" row naming the
    counts, not an "ok" row whose accuracy silently covers only the pairs it returned."""
    def short(frames0, frames1):
        return np.zeros((1, 2, *frames0.shape[2:]), np.float32)

    pairs = [_blank_pair(8, 8), _blank_pair(8, 8)]
    (r,) = harness.run_benchmark([harness.Method("short", short)], pairs, batch=2, repeats=1)
    assert r["status"] == "failed" and "short returned 1 flows for 2 pairs" in r["reason"]
    assert r["epe"] is None


def test_pair_without_valid_pixels_is_left_out_of_the_mean():
    """A pair with no valid ground-truth pixel (e.g. a fully masked Sintel frame) is left out of
    the dataset's mean, not turned into a NaN that makes the whole dataset's epe unknown."""
    blank = _blank_pair(8, 8)
    masked = FlowPair("masked", blank.frame0, blank.frame1, blank.flow, np.zeros((8, 8), bool),
                      np.zeros((8, 8), bool))
    shifted = harness.Method("shift", lambda f0, f1: np.ones((f0.shape[0], 2, 8, 8), np.float32))
    (r,) = harness.run_benchmark([shifted], [blank, masked], batch=1, repeats=1)
    assert r["status"] == "ok"
    assert r["epe"] == pytest.approx(math.sqrt(2)) and r["epe_noc"] == pytest.approx(math.sqrt(2))
    assert r["outliers"] == 0 and r["angular"] is not None


def test_pairs_limits_folder_datasets(tmp_path):
    """--pairs N on a Middlebury or Sintel folder benchmarks the first N pairs in name order (a
    quick run on a whole Sintel pass must not load and measure all of it)."""
    rng = np.random.default_rng(0)
    mb, sintel = tmp_path / "mb", tmp_path / "sintel" / "training"
    for s in ("A", "B", "C"):
        (mb / s).mkdir(parents=True)
        for name in ("frame10.png", "frame11.png"):
            cv2.imwrite(str(mb / s / name), rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        write_flo(mb / s / "flow10.flo", np.zeros((2, 8, 8), np.float32))
        (sintel / "clean" / s).mkdir(parents=True)
        (sintel / "flow" / s).mkdir(parents=True)
        for i in (1, 2):
            cv2.imwrite(str(sintel / "clean" / s / f"frame_{i:04d}.png"),
                        rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
        write_flo(sintel / "flow" / s / "frame_0001.flo", np.zeros((2, 8, 8), np.float32))
    items, _ = harness.load_dataset("middlebury", mb, pairs=1)
    assert [p.name for p in items] == ["A"]
    items, _ = harness.load_dataset("sintel", sintel.parent, pairs=2)
    assert [p.name for p in items] == ["A/frame_0001", "B/frame_0001"]
    assert len(harness.load_dataset("middlebury", mb)[0]) == 3


def test_shrinking_keeps_a_pixel_occluded_if_any_source_pixel_was():
    """Resizing a folder dataset down (--size): an output pixel is occluded where any of the pixels
    it averages was, so epe_noc never scores a pixel whose match partly is not visible."""
    occluded = np.zeros((8, 8), bool)
    occluded[::2, ::2] = True                     # one of the four pixels of every 2x2 block ...
    occluded[4:, 4:] = False                      # ... except the bottom-right quarter
    blank = _blank_pair(8, 8)
    pair = FlowPair("p", blank.frame0, blank.frame1, blank.flow, blank.valid, occluded)
    small = harness._resize_pair(pair, (4, 4))
    expected = np.ones((4, 4), bool)
    expected[2:, 2:] = False
    np.testing.assert_array_equal(small.occluded, expected)
    assert small.valid.all()


class _FakeClock:
    """A stand-in for the harness's ``time`` module: ``perf_counter`` reads ``now``, which the
    test's method advances, so pass times are exact (no sleeps, no load sensitivity)."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_speed_is_pairs_over_the_median_pass(monkeypatch):
    """pairs_per_s is pairs / the median pass time (one slow or one lucky pass does not move it);
    min and max are kept alongside and the warm-up is reported apart (fake clock: exact times)."""
    clock = _FakeClock()
    monkeypatch.setattr(harness, "time", clock)
    durations = [0.5, 0.25, 2.0, 1.0]               # warm-up, then the three timed passes

    def fn(frames0, frames1):
        clock.now += durations.pop(0)
        return np.zeros((frames0.shape[0], 2, 8, 8), np.float32)

    pairs = [_blank_pair(8, 8), _blank_pair(8, 8)]
    (r,) = harness.run_benchmark([harness.Method("timed", fn)], pairs, batch=2, repeats=3)
    assert r["status"] == "ok" and not durations
    assert r["warmup_s"] == 0.5 and r["median_pass_s"] == 1.0
    assert r["min_pass_s"] == 0.25 and r["max_pass_s"] == 2.0
    assert r["pairs_per_s"] == 2.0


def test_copy_of_the_flow_to_host_is_timed(monkeypatch):
    """A pass times the method's call and the copy of its flow back to host memory: on CUDA that
    copy is where the device work is waited for, so leaving it out would time only the kernel
    launches (fake clock: the copy takes 1 s, the call nothing)."""
    clock = _FakeClock()
    monkeypatch.setattr(harness, "time", clock)

    class Lazy:  # a device tensor whose work completes when it is copied to the host
        def __init__(self, array):
            self.array = array

        def detach(self):
            return self

        def cpu(self):
            clock.now += 1.0
            return self

        def numpy(self):
            return self.array

    lazy = harness.Method("lazy", lambda f0, f1: Lazy(np.zeros((f0.shape[0], 2, 8, 8), np.float32)))
    (r,) = harness.run_benchmark([lazy], [_blank_pair(8, 8)], batch=1, repeats=2)
    assert r["status"] == "ok"
    assert r["median_pass_s"] == 1.0 and r["min_pass_s"] == 1.0 and r["pairs_per_s"] == 1.0


def test_peak_memory_counts_what_the_warm_up_kept():
    """peak_mem_mb is measured from before the method was built, so buffers a method allocates in
    its warm-up and keeps (OpenCV's solver buffers, an engine's workspace) count towards it; a
    baseline taken after the warm-up would report such a method as using almost nothing."""
    kept = []

    def fn(frames0, frames1):
        if not kept:
            kept.append(np.ones(100 * 2**20, np.uint8))   # 100 MiB, touched, made in the warm-up
        return np.zeros((frames0.shape[0], 2, 8, 8), np.float32)

    (r,) = harness.run_benchmark([harness.Method("buffers", fn)], [_blank_pair(8, 8)], repeats=1)
    if r["peak_mem_kind"] != "rss-sampled":
        pytest.skip(f"memory measured as {r['peak_mem_kind']}, not a sampled RSS")
    assert r["peak_mem_mb"] >= 90
    kept.clear()
