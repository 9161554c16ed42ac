"""FlowStore's open files: one store shared by threads, files replaced by other processes."""
from __future__ import annotations

import pickle
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import flowkit.store.flowstore as flowstore_module
from flowkit.errors import StoreError
from flowkit.store import FlowStore
from test_store import make_video, write_video


@pytest.fixture
def store(tmp_path):
    return FlowStore(tmp_path / "s.flowkit", mode="a", classes=["zoom"])


def _write(store, count: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    videos = {f"zoom/t{i}": make_video(60 + i, frames=4) for i in range(count)}
    for key, (rgb, flow) in videos.items():
        write_video(store, key, rgb, {"tvl1": flow})
    return videos


# ----------------------------------------------------------------------------- threads


def test_a_thread_never_closes_the_file_another_thread_is_reading(store, monkeypatch):
    """With one LRU for all threads, a thread opening a video evicted and closed the handle of
    the video another thread was reading: a healthy video read as damaged."""
    videos = _write(store, 2)
    reader = FlowStore(store.path, max_open_files=1)
    reading, evicted = threading.Event(), threading.Event()
    real_read_frames = flowstore_module.read_frames

    def read_frames(*args, **kw):  # the first thread pauses mid-read while the other opens t1
        if threading.current_thread().name.startswith("first"):
            reading.set()
            assert evicted.wait(10)
        return real_read_frames(*args, **kw)

    monkeypatch.setattr(flowstore_module, "read_frames", read_frames)
    with ThreadPoolExecutor(1, thread_name_prefix="first") as first:
        t0 = first.submit(reader.read_flow, "zoom/t0")
        try:
            assert reading.wait(10)
            np.testing.assert_array_equal(reader.read_flow("zoom/t1"), videos["zoom/t1"][1])
        finally:
            evicted.set()
        np.testing.assert_array_equal(t0.result(10), videos["zoom/t0"][1])


def test_threads_sharing_one_store_read_every_video_right(store):
    """Each thread keeps its own max_open_files handles: threads reading different videos
    through one store, each opening past the limit at every read, all read the right frames."""
    videos = _write(store, 4)
    reader = FlowStore(store.path, max_open_files=1)
    keys = sorted(videos) * 25

    def read(i: int) -> None:
        key = keys[(i * 3) % len(keys)]
        rgb, flow = videos[key]
        np.testing.assert_array_equal(reader.read_flow(key, index=slice(1, 3)), flow[1:3])
        np.testing.assert_array_equal(reader.read_rgb(key), rgb)
        assert reader.meta(key)["num_frames"] == 4

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(read, range(len(keys))))  # re-raises the first failed read
    assert len(reader._handles) <= 1


def test_close_closes_every_threads_files_and_the_store_reopens(store):
    videos = _write(store, 2)
    reader = FlowStore(store.path, max_open_files=1)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(reader.read_rgb, "zoom/t0").result()
        handle = pool.submit(lambda: reader._handles["zoom/t0"]).result()
        reader.read_rgb("zoom/t1")
        assert handle.id.valid and len(reader._all_open) == 2
        reader.close()
        assert not handle.id.valid and not reader._handles
        np.testing.assert_array_equal(pool.submit(reader.read_rgb, "zoom/t0").result(),
                                      videos["zoom/t0"][0])
    copy = pickle.loads(pickle.dumps(reader))  # a spawned DataLoader worker's: no handles
    assert not copy._all_open
    np.testing.assert_array_equal(copy.read_flow("zoom/t1"), videos["zoom/t1"][1])


def test_a_threads_files_close_when_it_ends(store):
    """Thread pools come and go: the handles a finished thread opened do not stay open."""
    _write(store, 2)
    reader = FlowStore(store.path)
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(reader.read_rgb, ["zoom/t0", "zoom/t1"] * 4))
    assert not reader._all_open


# ----------------------------------------------------------------------------- replaced files


def test_a_flow_added_by_another_process_is_read_through_a_long_lived_store(store):
    """A store that had the video open before another process committed a new flow into it
    (a new file renamed over the old) reads the new flow, as metas() lists it, not "has no flow";
    meta() and flow_names() describe the new file too."""
    rgb, tvl1 = make_video(70, frames=4)
    write_video(store, "zoom/a", None, {"tvl1": tvl1})
    write_video(store, "zoom/b", None, {"tvl1": tvl1})
    reader, writer = FlowStore(store.path), FlowStore(store.path, mode="a")
    for key in ("zoom/a", "zoom/b"):
        np.testing.assert_array_equal(reader.read_flow(key, "tvl1"), tvl1)
    other = make_video(71, frames=4)[1]
    write_video(writer, "zoom/a", None, {"costvolume": other})
    assert set(reader.metas(["zoom/a"])["zoom/a"]["flows"]) == {"tvl1", "costvolume"}
    np.testing.assert_array_equal(reader.read_flow("zoom/a", "costvolume"), other)
    with pytest.raises(StoreError, match="has no flow 'tvnet'; it has: costvolume, tvl1"):
        reader.read_flow("zoom/a", "tvnet")
    write_video(writer, "zoom/a", None, {"tvnet": other})
    assert reader.flow_names("zoom/a") == ["costvolume", "tvl1", "tvnet"]
    write_video(writer, "zoom/a", None, {"motionnet": other})
    assert set(reader.meta("zoom/a")["flows"]) == {"costvolume", "tvl1", "tvnet", "motionnet"}
    write_video(writer, "zoom/b", rgb)
    np.testing.assert_array_equal(reader.read_rgb("zoom/b"), rgb)


def test_an_open_handle_keeps_reading_its_file_while_no_flow_is_missing(store):
    """The documented rule stays: a file replaced under an open handle is read as it was (the
    old, complete file) until a flow or rgb it lacks is asked for."""
    _, tvl1 = make_video(72, frames=4)
    write_video(store, "zoom/b", None, {"tvl1": tvl1})
    reader = FlowStore(store.path)
    reader.read_flow("zoom/b", index=0)
    handle = reader._handles["zoom/b"]
    write_video(FlowStore(store.path, mode="a"), "zoom/b", None, {"tvnet": tvl1})
    np.testing.assert_array_equal(reader.read_flow("zoom/b", "tvl1"), tvl1)
    assert reader._handles["zoom/b"] is handle
