"""Concurrent runs into one store with different options, and concurrent store creation.

Two ``flowkit extract`` runs started together into a new store each compare their options with
nothing before they start (the store is empty): what one finds finished by the other during the
run must be compared then. Two processes creating one store at once must agree on its classes.
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
from pathlib import Path

import pytest

import flowkit.extract as extract_module
from flowkit.extract import MEANWHILE, ExtractConfig, extract, extract_items
from flowkit.labels import scan_videos
from flowkit.store import FlowStore

# Cheap TV-L1 (as tests/test_extract.py's CHEAP): well under a second per 8-frame 64x80 video.
CHEAP = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 10}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def _config(**kw) -> ExtractConfig:
    kw.setdefault("engine_params", dict(CHEAP))
    kw.setdefault("flow_codec", "float16")
    kw.setdefault("rgb_codec", "raw")
    return ExtractConfig(workers=1, **kw)


@pytest.mark.parametrize("other, asked", [
    ({"engine_params": {**CHEAP, "warps": 2}}, "engine parameters warps=2 in the store, warps=1"),
    ({"size": 48}, "frame size 48x60 in the store, 64x80 asked"),
    ({"rgb_codec": "jpeg"}, "rgb codec jpeg:95 in the store, raw asked"),
], ids=["param", "size", "rgb_codec"])
def test_a_video_another_run_finished_with_other_options_meanwhile_fails(sample_videos, tmp_path,
                                                                        monkeypatch, other, asked):
    """Run B starts into a new store (nothing to compare its options with); run A, with other
    options, finishes one of B's videos after B's up-front check. B fails that video naming
    what differs, instead of counting it as "already in the store" and exiting 0 with a store
    that mixes both runs' options; the summary says how to get out."""
    store = tmp_path / "store"
    items, classes = scan_videos(sample_videos)
    first, late = items[0], items[1]
    items = [first, late]
    check = extract_module.check_store_options

    def other_run_meanwhile(*args, **kw):
        found = check(*args, **kw)  # B's check: no store yet, nothing to compare with
        monkeypatch.setattr(extract_module, "check_store_options", check)  # A checks as usual
        done = extract([late], store, _config(**other), classes=classes)
        assert [r.status for r in done.results] == ["done"]
        return found

    monkeypatch.setattr(extract_module, "check_store_options", other_run_meanwhile)
    summary = extract(items, store, _config(), classes=classes)
    by_key = {r.key: r for r in summary.results}
    assert by_key[first.key].status == "done"
    assert by_key[late.key].status == "failed", by_key[late.key]
    assert by_key[late.key].reason.startswith(f"{late.key}: {MEANWHILE} (")
    assert asked in by_key[late.key].reason
    assert any("finished meanwhile by another run with other options" in n
               and "--redo-mismatched" in n for n in summary.notes), summary.notes


def test_a_video_another_run_finished_alike_meanwhile_is_skipped(sample_videos, tmp_path):
    """The same options: the video is the run's own work done by another, skipped as before."""
    store = tmp_path / "store"
    items, classes = scan_videos(sample_videos)
    items = items[:1]
    extract(items, store, _config(), classes=classes)
    # the run read the store before the other process wrote the video
    [late] = extract_items(items, FlowStore(store, "a"), extract_module.build_engine(_config()),
                           _config(), metas={items[0].key: None})
    assert (late.status, late.reason) == (
        "skipped", "already in the store with flow/tvl1 (finished by another process)")


def test_a_video_held_by_another_run_with_other_options_fails_once_it_is_finished(
        sample_videos, tmp_path, monkeypatch):
    """Run B skips a video run A holds (its claim) while A computes it with other options; by the
    end of B, A has finished it: B reads it then and fails it naming what differs, instead of
    exiting 0 with "being extracted by another process" over a store that mixes both runs'
    options. A video still held at B's end says nothing yet (held, as before)."""
    store = tmp_path / "store"
    items, classes = scan_videos(sample_videos)
    first, late, still = items[:3]
    check, claim = extract_module.check_store_options, FlowStore.claim
    holder = "node7 pid 4242"

    def held_by_a(self, key, name):
        return holder if key in (late.key, still.key) else claim(self, key, name)

    def other_run_meanwhile(*args, **kw):
        found = check(*args, **kw)
        monkeypatch.setattr(extract_module, "check_store_options", check)
        done = extract([late], store, _config(size=48), classes=classes)
        assert [r.status for r in done.results] == ["done"]
        monkeypatch.setattr(FlowStore, "claim", held_by_a)  # A's claims, as B meets them
        return found

    monkeypatch.setattr(extract_module, "check_store_options", other_run_meanwhile)
    summary = extract([first, late, still], store, _config(), classes=classes)
    by_key = {r.key: r for r in summary.results}
    assert by_key[first.key].status == "done"
    assert by_key[late.key].status == "failed", by_key[late.key]
    assert by_key[late.key].reason == (f"{late.key}: {MEANWHILE} (frame size 48x60 in the store, "
                                       "64x80 asked); not recomputed")
    assert by_key[still.key].held, by_key[still.key]
    assert any("--redo-mismatched" in n for n in summary.notes), summary.notes


def test_a_video_held_by_another_run_with_another_rgb_codec_fails_once_it_is_finished(
        sample_videos, tmp_path, monkeypatch):
    """As above with another --rgb-codec: run A holds a video and finishes it with JPEG frames
    while run B (raw frames) skips it as held; at B's end the video is failed naming both rgb
    codecs, not skipped as "being extracted by another process" over a store of two codecs."""
    store = tmp_path / "store"
    items, classes = scan_videos(sample_videos)
    first, late = items[:2]
    check, claim = extract_module.check_store_options, FlowStore.claim

    def held_by_a(self, key, name):
        return "node7 pid 4242" if key == late.key else claim(self, key, name)

    def other_run_meanwhile(*args, **kw):
        found = check(*args, **kw)
        monkeypatch.setattr(extract_module, "check_store_options", check)
        done = extract([late], store, _config(rgb_codec="jpeg"), classes=classes)
        assert [r.status for r in done.results] == ["done"]
        monkeypatch.setattr(FlowStore, "claim", held_by_a)  # A's claim, as B meets it
        return found

    monkeypatch.setattr(extract_module, "check_store_options", other_run_meanwhile)
    summary = extract([first, late], store, _config(), classes=classes)
    by_key = {r.key: r for r in summary.results}
    assert by_key[first.key].status == "done"
    assert by_key[late.key].status == "failed", by_key[late.key]
    assert "rgb codec jpeg:95 in the store, raw asked" in by_key[late.key].reason


def test_a_video_another_run_commits_with_other_frames_meanwhile_is_refused_at_commit(
        sample_videos, tmp_path, monkeypatch):
    """Run B computes a video's backward flow while run A, with another --size, commits the
    forward flow of that video (its own claim: another flow): B's commit, which merges into A's
    file, is refused with a line naming both frame sizes and the ways out, never a file mixing
    two frame sizes."""
    import flowkit.feed as feed

    store = tmp_path / "store"
    items, classes = scan_videos(sample_videos)
    items = items[:1]
    decode = feed.iter_frames

    def other_run_commits_first(*args, **kw):
        monkeypatch.setattr(feed, "iter_frames", decode)
        done = extract(items, store, _config(size=48), classes=classes)
        assert [r.status for r in done.results] == ["done"]
        return decode(*args, **kw)

    monkeypatch.setattr(feed, "iter_frames", other_run_commits_first)
    [result] = extract(items, store, _config(backward=True), classes=classes).results
    assert result.status == "failed", result
    assert "already in the store with 8 frames of 48x60, but this run made 8 frames of 64x80" \
        in result.reason and f"--redo {items[0].key}" in result.reason
    assert FlowStore(store).validate() == []
    assert list(FlowStore(store).meta(items[0].key)["flows"]) == ["tvl1"]


def _create(root: str, classes: list[str], barrier, results) -> None:
    """A process opening a new store with ``classes`` once ``barrier`` lets it (a child)."""
    from flowkit.errors import StoreError

    barrier.wait()
    try:
        results.put((classes, "ok", FlowStore(root, "a", classes=classes).classes))
    except StoreError as exc:
        results.put((classes, "refused", str(exc)))


def _both(target, args_a: tuple, args_b: tuple) -> list:
    """Run ``target(*args, barrier, queue)`` in two spawned processes started together."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results))
             for args in (args_a, args_b)]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    return out


def test_two_processes_creating_a_store_at_once_agree_on_its_classes(tmp_path):
    """Two processes create one store at the same moment with the classes in other orders. One
    makes store.json; the other finds it made and is refused for its other order as with any
    existing store (a caller labelling by name takes the store's order), never left believing
    its own order while the store holds the other's (before: store.json was renamed into place,
    the last writer won, and the other labelled videos with ids naming other classes)."""
    root = str(tmp_path / "store")
    out = _both(_create, (root, ["left", "right"]), (root, ["right", "left"]))
    stored = FlowStore(root).classes
    assert sorted(status for _, status, _ in out) == ["ok", "refused"], out
    for classes, status, said in out:
        if status == "ok":
            assert said == classes == stored, out
        else:
            assert "same names, other order" in said, out


def _extract_labelled(videos: str, store: str, order: list[str], barrier, results) -> None:
    """A run extracting the videos of ``order[0]``'s class labelled in ``order`` (a child): it
    waits for the other run at its options check, after reading that there is no store yet."""
    import torch

    torch.set_num_threads(1)
    items, _ = scan_videos(Path(videos))
    mine = [dataclasses.replace(item, label=order.index(item.label_name))
            for item in items if item.label_name == order[0]][:1]
    check = extract_module.check_store_options

    def together(*args, **kw):
        barrier.wait()
        return check(*args, **kw)

    extract_module.check_store_options = together
    try:
        summary = extract(mine, store, _config(), classes=order)
        results.put((order, [(r.key, r.status, r.reason) for r in summary.results]))
    except Exception as exc:  # the run refused: reported, not raised in a child
        results.put((order, [("", "refused", str(exc))]))


def test_two_runs_creating_a_store_at_once_with_classes_in_other_orders_label_by_name(
        sample_videos, tmp_path):
    """Two extract runs start together into a new store, one with the classes sorted (a folder
    scan), one in another order (a split list's classInd.txt): both read that there is no store,
    then both open it. Both label by name, as two runs one after the other do: each video
    records its own class under the store's id for it (before: the run that did not make
    store.json was refused, or failed its videos with "label 0 is 'pan_left' in store ...")."""
    store = tmp_path / "store"
    a, b = ["pan_left", "zoom_in"], ["zoom_in", "pan_left"]
    out = _both(_extract_labelled, (str(sample_videos), str(store), a),
                (str(sample_videos), str(store), b))
    assert all([status for _, status, _ in results] == ["done"] for _, results in out), out
    stored = FlowStore(store)
    assert sorted(stored.classes) == sorted(a)
    for key in stored.keys():
        meta = stored.meta(key)
        assert meta["label_name"] == key.split("/")[0] == stored.classes[meta["label"]], meta
