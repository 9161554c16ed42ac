"""Balanced, deterministic shares of a video list for sharded extraction (torchrun ranks or
``--shard I/N`` jobs): :func:`plan_shards`.

Each video's cost is the frame pairs it will yield, from the frame count its header declares
(:func:`flowkit.video.probe`, no decoding), with ``step`` and ``max_frames`` applied. A video whose
header gives no count is estimated from its file size at the median bytes per frame of the videos
that do; when none does, every cost is the file size (basis ``"file size"``); an unreadable file
costs one pair (it fails at once when extracted). Shares are filled greedily, longest video first,
each to the least loaded rank (ties: the lower rank, then the earlier video), which keeps every
rank within one video's length of the others. The plan depends only on the list and the files, not
on the store, so every rank (or every array job) computes the same plan, and a rerun gives each
rank the same videos back (the finished ones are then skipped). An array task (``--shard I/N``)
under torchrun splits share I again over its ranks (:meth:`ShardPlan.subplan`).

Probing reads a few kilobytes per file, in a thread pool; under torchrun each rank probes
``1/world_size`` of the list and the counts are gathered (:mod:`flowkit.distributed`).
"""
from __future__ import annotations

import heapq
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

from . import distributed
from .errors import FlowkitError
from .labels import VideoItem
from .video import VideoError, probe

PROBE_THREADS = 8


@dataclass
class ShardPlan:
    """Which rank extracts which videos.

    ``shares[r]`` the videos of rank ``r`` (in list order); ``costs[key]`` each video's cost, in
    ``basis`` units: ``"frame pairs"`` (expected pairs) or ``"file size"`` (bytes, when no header
    had a frame count); ``estimated`` the keys whose pairs were estimated from the file size.
    """
    shares: list[list[VideoItem]]
    costs: dict[str, int]
    basis: str = "frame pairs"
    estimated: list[str] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return len(self.shares)

    def share(self, rank: int) -> list[VideoItem]:
        return self.shares[rank]

    def subplan(self, rank: int, world_size: int) -> "ShardPlan":
        """Share ``rank`` balanced again over ``world_size`` ranks with the same costs (no new
        probing): a ``--shard I/N`` array task run under torchrun gives each of its ranks a part
        of share I."""
        if not 0 <= rank < self.world_size:  # a negative index would take a share from the end
            raise FlowkitError(f"invalid shard {rank}/{self.world_size}: need 0 <= index < count")
        share = self.shares[rank]
        costs = {item.key: self.costs[item.key] for item in share}
        return ShardPlan(balance(share, costs, world_size), costs, self.basis,
                         [key for key in self.estimated if key in costs])

    def load(self, rank: int) -> int:
        """Expected frame pairs (or bytes, see ``basis``) of rank ``rank``."""
        return sum(self.costs[item.key] for item in self.shares[rank])

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "basis": self.basis,
                "estimated": len(self.estimated),
                "ranks": [{"rank": r, "videos": len(s), "expected": self.load(r),
                           "keys": [item.key for item in s]} for r, s in enumerate(self.shares)]}


def expected_pairs(frames: int, step: int = 1, max_frames: int | None = None) -> int:
    """Frame pairs extraction yields for a video of ``frames`` frames: every ``step``-th frame,
    at most ``max_frames`` of them, minus one."""
    kept = math.ceil(frames / step) if frames > 0 else 0
    if max_frames is not None:
        kept = min(kept, max_frames)
    return max(kept - 1, 0)


def _probe_one(item: VideoItem) -> tuple[int | None, int]:
    """``(declared frames or None, file size in bytes)``; ``(None, 0)`` for a missing or unreadable
    file (it fails at once when extracted: its size says nothing about its work)."""
    try:
        size = os.path.getsize(item.path)
    except OSError:
        return None, 0
    try:
        return probe(item.path).frame_count, size
    except VideoError:
        return None, 0


def probe_items(items: Sequence[VideoItem]) -> dict[str, tuple[int | None, int]]:
    """``{key: (declared frames or None, bytes)}`` for every item; under torchrun each rank probes a
    strided part and the parts are gathered, so every rank returns the whole dict."""
    rank, world = distributed.rank(), distributed.world_size()
    mine = list(items[rank::world])
    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        found = dict(zip((item.key for item in mine), pool.map(_probe_one, mine)))
    merged: dict[str, tuple[int | None, int]] = {}
    for part in distributed.gather(found):
        merged.update(part)
    return merged


def _costs(items: Sequence[VideoItem], probed: dict[str, tuple[int | None, int]], step: int,
           max_frames: int | None) -> tuple[dict[str, int], str, list[str]]:
    known = {k: f for k, (f, _) in probed.items() if f}
    per_frame = sorted(probed[k][1] / f for k, f in known.items() if probed[k][1] > 0)
    if not known or not per_frame:
        return {item.key: max(probed[item.key][1], 1) for item in items}, "file size", []
    bytes_per_frame = per_frame[len(per_frame) // 2]
    costs, estimated = {}, []
    for item in items:
        frames, size = probed[item.key]
        if not frames:
            if size <= 0:
                costs[item.key] = 1
                continue
            frames = max(round(size / bytes_per_frame), 2)
            estimated.append(item.key)
        costs[item.key] = max(expected_pairs(frames, step, max_frames), 1)
    return costs, "frame pairs", estimated


def balance(items: Sequence[VideoItem], costs: dict[str, int], world_size: int
            ) -> list[list[VideoItem]]:
    """Longest-first greedy shares: each video, in decreasing cost (ties: list order), goes to the
    rank with the least cost so far (ties: the lower rank). Shares keep the list order.

    The ranks wait in a heap of ``(load, rank)``, whose order is that rule's, so a plan takes
    O(videos x log ranks): every array task computes it, and scanning every rank per video took
    80 s for 300k videos over 1000 shards."""
    if world_size < 1:
        raise FlowkitError(f"invalid shard count {world_size}: need at least 1")
    order = sorted(range(len(items)), key=lambda i: (-costs[items[i].key], i))
    ranks = [(0, r) for r in range(world_size)]  # already a heap
    owner = [0] * len(items)
    for i in order:
        load, r = ranks[0]
        owner[i] = r
        heapq.heapreplace(ranks, (load + costs[items[i].key], r))
    shares: list[list[VideoItem]] = [[] for _ in range(world_size)]
    for i, item in enumerate(items):
        shares[owner[i]].append(item)
    return shares


def plan_shards(items: Sequence[VideoItem], world_size: int, *, step: int = 1,
                max_frames: int | None = None) -> ShardPlan:
    """The :class:`ShardPlan` of ``items`` over ``world_size`` ranks (see the module docstring)."""
    if world_size < 1:
        raise FlowkitError(f"invalid shard count {world_size}: need at least 1")
    probed = probe_items(items)
    costs, basis, estimated = _costs(items, probed, step, max_frames)
    return ShardPlan(balance(items, costs, world_size), costs, basis, estimated)
