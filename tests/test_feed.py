"""The feed (flowkit/feed.py): batches filled across video boundaries, decoding ahead, write-behind,
and failures that stay per video. Videos are made in memory (real photographs under known motion)
and handed to the feed through its ``decode`` hook, so every case is exact and fast."""
from __future__ import annotations

import gc
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import flowkit
from flowkit.errors import VideoError
from flowkit.feed import FeedOptions, run
from flowkit.labels import VideoItem
from flowkit.samples import render_sample, sample_specs
from flowkit.store import FlowStore
from flowkit.video import VideoInfo

CHEAP = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 10}
H, W = 32, 40


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def _frames(n: int, index: int, size=(H, W)) -> np.ndarray:
    spec = sample_specs(classes=("pan_right",), videos_per_class=index + 1, frames=n, size=size)[index]
    return render_sample(spec)


class MemoryVideos:
    """``decode`` hook: frames from memory; ``fail_at[key] = k`` raises after k frames."""

    def __init__(self, videos: dict[str, np.ndarray], fail_at: dict[str, int] | None = None):
        self.videos, self.fail_at = videos, fail_at or {}
        self.started: list[str] = []
        self.lock = threading.Lock()

    def items(self) -> list[VideoItem]:
        return [VideoItem(path=Path(f"/mem/{k}.mp4"), key=k, label=0, label_name="c")
                for k in self.videos]

    def __call__(self, item: VideoItem, opts: FeedOptions):
        with self.lock:
            self.started.append(item.key)
        frames = self.videos[item.key]
        info = VideoInfo(path=item.path, width=frames.shape[2], height=frames.shape[1],
                         fps=25.0, frame_count=len(frames), duration=len(frames) / 25, codec="mem")

        def gen():
            for i, frame in enumerate(frames):
                if self.fail_at.get(item.key) == i:
                    raise VideoError(f"{item.path}: decoding failed after frame {i - 1}")
                yield frame
        return info, gen()


class RecordingEngine:
    """A real TV-L1 engine that logs every call's batch size (and can fail chosen calls)."""

    def __init__(self, fail_calls=(), error=RuntimeError("CUDA out of memory (simulated)")):
        self.engine = flowkit.create_engine("tvl1", **CHEAP)
        self.device = self.engine.device
        self.calls: list[int] = []
        self.fail_calls = set(fail_calls)
        self.error = error

    def describe(self):
        return self.engine.describe()

    def __call__(self, f0, f1):
        self.calls.append(f0.shape[0])
        if len(self.calls) - 1 in self.fail_calls:  # a new one: a raised one keeps its frames
            raise type(self.error)(*self.error.args)
        return self.engine(f0, f1)


def _run(tmp_path, videos: MemoryVideos, engine=None, **opts):
    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    engine = engine or RecordingEngine()
    options = FeedOptions(method="tvl1", **{"batch": 8, "flow_codec": "float16", "rgb_codec": "raw",
                                            **opts})
    results = {r.key: r for r in run(videos.items(), store, engine, options, decode=videos)}
    return store, engine, results


def _direct(frames: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(frames).permute(0, 3, 1, 2)
    return flowkit.create_engine("tvl1", **CHEAP)(t[:-1], t[1:]).numpy()


def test_batches_are_filled_across_video_boundaries(tmp_path):
    lengths = {"a": 5, "b": 3, "c": 9, "d": 2, "e": 7}
    videos = MemoryVideos({k: _frames(n, i) for i, (k, n) in enumerate(lengths.items())})
    store, engine, results = _run(tmp_path, videos, batch=8)
    pairs = sum(n - 1 for n in lengths.values())  # 21
    assert engine.calls == [8, 8, 5] and sum(engine.calls) == pairs
    assert all(r.status == "done" for r in results.values()) and len(results) == 5
    for k, n in lengths.items():
        meta = store.meta(k)
        assert meta["frame_count"] == n and results[k].pairs == n - 1
        np.testing.assert_array_equal(store.read_rgb(k), videos.videos[k])
        # float16 storage; the pairs computed in mixed batches equal each video's own run.
        np.testing.assert_allclose(store.read_flow(k, "tvl1"), _direct(videos.videos[k]),
                                   atol=2e-3, rtol=1e-3)
    assert store.validate() == [] and not store.partials()


def test_multi_frame_engines_get_one_video_per_batch(tmp_path):
    """MotionNet reads a batch of consecutive pairs as one clip: pairs of two videos must not mix."""
    lengths = {"a": 5, "b": 3, "c": 9}
    videos = MemoryVideos({k: _frames(n, i) for i, (k, n) in enumerate(lengths.items())})
    engine = RecordingEngine()
    engine.independent_pairs = False
    store, engine, results = _run(tmp_path, videos, engine=engine, batch=3)
    assert engine.calls == [3, 1, 2, 3, 3, 2]
    assert all(r.status == "done" for r in results.values())


def test_frame_sizes_never_share_a_batch(tmp_path):
    videos = MemoryVideos({"a": _frames(4, 0), "b": _frames(4, 1, (24, 30)), "c": _frames(4, 2)})
    store, engine, results = _run(tmp_path, videos, batch=8)
    assert engine.calls == [3, 3, 3]
    assert [store.meta(k)["height"] for k in "abc"] == [H, 24, H]
    assert all(r.status == "done" for r in results.values())


def test_timestamp_jitter_is_not_a_variable_frame_rate():
    """A 29.97 fps video's frames are 33 or 34 ms apart (rounded timestamps): that jitter is a
    constant frame rate, so no variable-frame-rate attribute or note (a note on nearly every
    phone or NTSC video would drown the ones that matter); 40 vs 120 ms apart is one."""
    from flowkit.feed import video_notes

    assert video_notes({"frame_interval": (0.033, 0.034)}, 29.97) == ({}, [])
    attrs, notes = video_notes({"frame_interval": (0.040, 0.120)}, 25.0)
    assert attrs["variable_frame_rate"] is True
    assert notes == ["variable frame rate (frames 40-120 ms apart); stored with its average rate "
                     "25 fps and no timestamps"]


def test_decoding_runs_ahead(tmp_path):
    """With prefetch=2, videos b and c are decoding while a is: a's decoder waits for c's to start
    (it would time out if decoding were not ahead and concurrent)."""
    videos = MemoryVideos({k: _frames(3, i) for i, k in enumerate("abcde")})
    c_started = threading.Event()
    decode = videos.__call__

    def waiting_decode(item, opts):
        if item.key == "c":
            c_started.set()
        info, frames = decode(item, opts)
        if item.key == "a":
            assert c_started.wait(timeout=30), "video c did not start decoding while a decoded"
        return info, frames

    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    results = list(run(videos.items(), store, RecordingEngine(),
                       FeedOptions(method="tvl1", batch=2, prefetch=2), decode=waiting_decode))
    assert c_started.is_set() and all(r.status == "done" for r in results)


def test_a_decode_error_fails_only_its_video(tmp_path):
    videos = MemoryVideos({k: _frames(6, i) for i, k in enumerate("abc")}, fail_at={"b": 4})
    store, engine, results = _run(tmp_path, videos, batch=4)
    assert results["b"].status == "failed" and "decoding failed after frame 3" in results["b"].reason
    assert results["a"].status == results["c"].status == "done"
    assert sorted(store.keys()) == ["a", "c"] and not store.partials()
    np.testing.assert_allclose(store.read_flow("c", "tvl1"), _direct(videos.videos["c"]), atol=2e-3,
                               rtol=1e-3)


def test_an_engine_error_fails_the_videos_of_that_batch(tmp_path):
    videos = MemoryVideos({k: _frames(4, i) for i, k in enumerate("abcd")})
    # batch 4: call 0 = a(3) + b(1), call 1 = b(2) + c(2), call 2 = c(1) + d(3)
    store, engine, results = _run(tmp_path, videos, engine=RecordingEngine(fail_calls={1}), batch=4)
    assert {k: r.status for k, r in results.items()} == {"a": "done", "b": "failed",
                                                         "c": "failed", "d": "done"}
    assert "engine failed on a batch of 4 pairs" in results["b"].reason
    assert "out of memory" in results["c"].reason
    assert sorted(store.keys()) == ["a", "d"] and not store.partials()


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 1.2 GiB for an array"),
                                   TypeError("an engine's bug")], ids=["MemoryError", "TypeError"])
@pytest.mark.parametrize("fail_call", [1, 2], ids=["middle-batch", "last-batch"])
def test_any_engine_error_fails_the_videos_of_its_batch(tmp_path, error, fail_call):
    """Not only the listed video errors: numpy's out of memory (a MemoryError) or an engine's
    TypeError lost a video of the batch without a result and left its partial file, and from the
    last batch (the final flush) ended the run with a traceback."""
    videos = MemoryVideos({k: _frames(4, i) for i, k in enumerate("abcd")})
    # batch 4: call 0 = a(3) + b(1), call 1 = b(2) + c(2), call 2 = c(1) + d(3)
    store, _, results = _run(tmp_path, videos, engine=RecordingEngine({fail_call}, error), batch=4)
    failed = {1: {"b", "c"}, 2: {"c", "d"}}[fail_call]
    assert {k: r.status for k, r in results.items()} == {
        k: "failed" if k in failed else "done" for k in "abcd"}
    assert all(f"{type(error).__name__}: {error}" in results[k].reason for k in failed)
    assert sorted(store.keys()) == sorted(set("abcd") - failed) and not store.partials()


@pytest.mark.parametrize("batch, fail_call, b_chunks, statuses", [
    (2, 1, 2, {"a": "done", "b": "failed", "c": "done"}),    # call 1: b's first 2 pairs
    (4, 0, 1, {"a": "failed", "b": "failed", "c": "done"}),  # call 0: a(2) + b(2)
], ids=["own-batch", "mixed-batch"])
def test_an_engine_error_in_the_middle_of_a_video_does_not_hang_the_run(tmp_path, batch,
                                                                         fail_call, b_chunks,
                                                                         statuses):
    """An engine error fails the video whose pairs are being batched and cancels its decoder,
    which then stops without ending its queue: the feed waited for more of its chunks forever.
    Video b decodes the ``b_chunks`` chunks that make the failing call, then waits until that
    call is behind the feed (its next ``should_stop``), so its queue is empty when the feed asks
    for the next chunk. The feed runs
    in a thread: a regression fails here after 30 s instead of hanging."""
    videos = MemoryVideos({"a": _frames(3, 0), "b": _frames(6 * batch, 1), "c": _frames(3, 2)})
    engine = RecordingEngine(fail_calls={fail_call})
    failed_call_done = threading.Event()
    decode, guard_expired = videos.__call__, threading.Event()

    def decode_b_slowly(item, opts):
        info, frames = decode(item, opts)
        if item.key != "b":
            return info, frames

        def gen():
            for i, frame in enumerate(frames):
                if i == b_chunks * batch:  # wait until the failed call is handled
                    failed_call_done.wait(timeout=60)
                yield frame
        return info, gen()

    def should_stop():
        if len(engine.calls) > fail_call:
            failed_call_done.set()
        if guard_expired.is_set():
            raise KeyboardInterrupt  # stop the hung feed's thread cleanly

    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    results, errors = {}, []

    def feed():
        try:
            options = FeedOptions(method="tvl1", batch=batch, flow_codec="float16", rgb=False)
            for r in run(videos.items(), store, engine, options, should_stop=should_stop,
                         decode=decode_b_slowly):
                results[r.key] = r
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    thread.join(timeout=30)
    hung = thread.is_alive()
    guard_expired.set()
    failed_call_done.set()
    thread.join(timeout=10)
    assert not hung, f"the feed hung after the failed engine call; results so far: {results}"
    assert not errors, errors
    assert {k: r.status for k, r in results.items()} == statuses
    for key in (k for k, s in statuses.items() if s == "failed"):  # one line, naming the video
        assert results[key].reason.startswith(f"/mem/{key}.mp4: engine failed on a batch of")
        assert "out of memory" in results[key].reason
    assert sorted(store.keys()) == sorted(k for k, s in statuses.items() if s == "done")
    assert not store.partials()


def test_no_decode_thread_outlives_the_run(tmp_path):
    """A video the engine fails has its decoder cancelled mid-video; the run waits for it to end
    before returning. A decode thread left running in native code (decoding, resizing) when the
    interpreter exits killed the process (SIGABRT, "terminate called without an active exception") after
    `flowkit extract` had printed its summary, in about one run of ten."""
    import time

    videos = MemoryVideos({"a": _frames(3, 0), "b": _frames(40, 1)})
    decode = videos.__call__

    def slow(item, opts):
        info, frames = decode(item, opts)

        def gen():
            for frame in frames:
                time.sleep(0.02)
                yield frame
        return info, gen()

    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    options = FeedOptions(method="tvl1", batch=8, flow_codec="float16", rgb_codec="raw")
    results = {r.key: r.status for r in run(videos.items(), store,
                                             RecordingEngine(fail_calls={0}), options,
                                             decode=slow)}
    assert results == {"a": "failed", "b": "failed"}
    assert [t.name for t in threading.enumerate() if t.name.startswith("flowkit-decode-")] == []


def test_a_video_failed_by_the_writer_keeps_the_next_videos_flow_aligned(tmp_path, monkeypatch):
    """A store error can fail video a in the writer thread while a's last pairs already share a
    batch with b's first ones. The feed skips a's flows in that batch but must still step past
    them: otherwise b is stored with a's motion, silently, as a finished video."""
    from flowkit.feed import _Writer
    from flowkit.store.writer import VideoWriter

    videos = MemoryVideos({"a": _frames(7, 0), "b": _frames(5, 1)})
    # batch 4: call 0 = a's pairs 0-3, call 1 = a's pairs 4-5 + b's pairs 0-1, call 2 = b's 2-3
    go, a_failed = threading.Event(), threading.Event()
    append_flow, close = VideoWriter.append_flow, _Writer._close

    def failing_append_flow(self, name, flow, engine=None):
        if self.key == "a":  # blocks the writer until a's last pairs are batched with b's
            go.wait(timeout=30)
            raise VideoError("/mem/a.mp4: disk full (simulated)")
        return append_flow(self, name, flow, engine)

    def recording_close(self, job, exc):
        close(self, job, exc)
        if job.item.key == "a" and job.failed:
            a_failed.set()

    class FailAInCallOne(RecordingEngine):
        def __call__(self, f0, f1):
            if len(self.calls) == 1:  # a fails now, its pairs already in this batch
                go.set()
                a_failed.wait(timeout=30)
            return super().__call__(f0, f1)

    monkeypatch.setattr(VideoWriter, "append_flow", failing_append_flow)
    monkeypatch.setattr(_Writer, "_close", recording_close)
    store, engine, results = _run(tmp_path, videos, engine=FailAInCallOne(), batch=4, rgb=False)
    assert engine.calls == [4, 4, 2]
    assert results["a"].status == "failed" and "disk full" in results["a"].reason
    assert results["b"].status == "done" and store.keys() == ["b"]
    np.testing.assert_allclose(store.read_flow("b", "tvl1"), _direct(videos.videos["b"]),
                               atol=2e-3, rtol=1e-3)


def test_too_short_and_store_errors_stay_per_video(tmp_path):
    nan_frames = _frames(4, 2)
    videos = MemoryVideos({"one": _frames(1, 0), "ok": _frames(4, 1), "nan": nan_frames})

    class NaNForNan(RecordingEngine):
        def __call__(self, f0, f1):
            flow = super().__call__(f0, f1)
            if f0.shape[0] == 3 and torch.equal(f0[0], torch.from_numpy(nan_frames[0]).permute(2, 0, 1)):
                flow[:] = float("nan")  # the store refuses non-finite flow: a writer-side error
            return flow

    store, engine, results = _run(tmp_path, videos, engine=NaNForNan(), batch=3)
    assert "only 1 frame(s) decoded" in results["one"].reason
    assert results["nan"].status == "failed" and "NaN" in results["nan"].reason
    assert results["ok"].status == "done" and store.keys() == ["ok"] and not store.partials()


def test_stop_discards_videos_in_flight_and_keeps_finished_ones(tmp_path):
    videos = MemoryVideos({k: _frames(5, i) for i, k in enumerate("abcd")})
    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    engine = RecordingEngine()

    def should_stop():
        if len(engine.calls) >= 3:
            raise KeyboardInterrupt

    done = []
    with pytest.raises(KeyboardInterrupt):
        for r in run(videos.items(), store, engine, FeedOptions(method="tvl1", batch=4),
                     should_stop=should_stop, decode=videos):
            done.append(r.key)
    assert store.keys() and set(store.keys()) <= {"a", "b", "c"}
    assert set(done) == set(store.keys())  # every video committed has its result
    assert not store.partials() and store.validate() == []


def test_a_stop_yields_the_videos_the_writer_commits_after_it(tmp_path, monkeypatch):
    """b's end is queued but the writer commits it only once the stop came (held here until
    then): b is in the store, so its "done" result must come out before the interrupt. It stayed
    in the writer's queue, and a stopped extract counted as not started a video it had written."""
    from flowkit.feed import _Writer

    videos = MemoryVideos({k: _frames(5, i) for i, k in enumerate("abcd")})
    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    engine = RecordingEngine()
    b_closing, stopping = threading.Event(), threading.Event()
    close = _Writer._close

    def held_close(self, job, exc):
        if job.item.key == "b" and exc is None:
            b_closing.set()
            stopping.wait(timeout=30)
        close(self, job, exc)

    def should_stop():
        if len(engine.calls) >= 3:  # b's 4 pairs were call 2, its end sent before c's call 3
            b_closing.wait(timeout=30)
            stopping.set()
            raise KeyboardInterrupt

    monkeypatch.setattr(_Writer, "_close", held_close)
    done = []
    with pytest.raises(KeyboardInterrupt):
        for r in run(videos.items(), store, engine, FeedOptions(method="tvl1", batch=4),
                     should_stop=should_stop, decode=videos):
            done.append((r.key, r.status))
    assert sorted(store.keys()) == ["a", "b"] and sorted(done) == [("a", "done"), ("b", "done")]
    assert not store.partials() and store.validate() == []


def test_a_key_the_store_cannot_claim_fails_only_its_video(tmp_path):
    """A key too long for the claim's file name is that video's failure when it enters the
    decode window, not an error that ends the run with the videos in flight."""
    long = "v" * 240  # its .h5 fits; with the claim's ending it takes more than 255 bytes
    videos = MemoryVideos({"a": _frames(4, 0), long: _frames(4, 1), "c": _frames(4, 2)})
    store, engine, results = _run(tmp_path, videos, batch=8)
    assert results[long].status == "failed", results[long]
    assert "is too long" in results[long].reason and "/mem/" in results[long].reason
    assert results["a"].status == results["c"].status == "done"
    assert sorted(store.keys()) == ["a", "c"] and long not in videos.started


def test_memory_stays_flat_over_many_videos(tmp_path):
    """The feed keeps only the videos in its decode window and in flight: 300k videos made 1.6 GB
    of queues and events per process before the first video started, and the write thread kept
    every finished one. Counted as the first and the last video start decoding (here 3000 that
    fail at once, each costing only its claim and result), the videos the feed holds stay few."""
    from flowkit import feed

    n, prefetch = 3000, 2
    items = [VideoItem(path=Path(f"/mem/c{i % 40}/v_{i:06d}.mp4"), key=f"c{i % 40}/v_{i:06d}",
                       label=0, label_name="c") for i in range(n)]
    started, held = [0], {}

    def decode(item, opts):
        started[0] += 1
        if started[0] in (1, n):
            gc.collect()  # a decode thread and its job are a cycle, freed by the collector
            held[started[0]] = sum(type(o) is feed._Job for o in gc.get_objects())
        raise VideoError(f"{item.path}: not a video")

    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    results = list(run(items, store, RecordingEngine(), FeedOptions(method="tvl1",
                                                                    prefetch=prefetch),
                       decode=decode))
    assert started[0] == n and [r.status for r in results] == ["failed"] * n
    assert max(held.values()) <= 2 * (1 + prefetch), f"{held} videos held at the first and last"
    assert not store.partials() and not list((tmp_path / "store" / "videos").rglob("*.claim"))
