"""Scale-out pieces without torchrun: balanced shard plans, the combined extraction summary, the
distributed batch sampler, the CPU SyncBatchNorm (two real gloo processes) and the one-process
identity of flowkit.distributed. The torchrun end-to-end runs are in tests/test_torchrun.py."""
from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from flowkit import distributed
from flowkit.errors import FlowkitError
from flowkit.extract import ExtractConfig, ExtractSummary
from flowkit.feed import VideoResult
from flowkit.labels import VideoItem, scan_videos
from flowkit.shards import _costs, balance, expected_pairs, plan_shards
from flowkit.train.ddp import CPUSyncBatchNorm, DistributedBatchSampler, convert_sync_batchnorm
from flowkit.train.loading import EpochBatchSampler
from flowkit.video import write_video


def _items(n: int) -> list[VideoItem]:
    return [VideoItem(path=Path(f"/v/{i}.mp4"), key=f"v{i}", label=0, label_name="c")
            for i in range(n)]


# ------------------------------------------------------------------------------------ shard plans

def test_expected_pairs_apply_step_and_max_frames():
    assert expected_pairs(10) == 9
    assert expected_pairs(10, step=3) == 3          # frames 0, 3, 6, 9
    assert expected_pairs(10, max_frames=4) == 3
    assert expected_pairs(1) == 0 and expected_pairs(0) == 0


def test_balance_is_longest_first_and_deterministic():
    items = _items(6)
    costs = {"v0": 100, "v1": 10, "v2": 10, "v3": 10, "v4": 10, "v5": 60}
    shares = balance(items, costs, 2)
    assert [[i.key for i in s] for s in shares] == [["v0"], ["v1", "v2", "v3", "v4", "v5"]]
    assert balance(items, costs, 2) == shares
    # By file count (every 2nd video) the loads would be 180 vs 80; balanced they are 100 vs 100.
    # Disjoint, covering, each share in list order.
    three = balance(items, costs, 3)
    keys = [i.key for s in three for i in s]
    assert sorted(keys) == sorted(costs) and len(keys) == len(costs)
    loads = [sum(costs[i.key] for i in s) for s in three]
    assert max(loads) - min(loads) <= max(costs.values())


def test_equal_costs_give_the_strided_split():
    items = _items(5)
    shares = balance(items, {i.key: 7 for i in items}, 2)
    assert shares == [items[0::2], items[1::2]]


def _balance_by_scanning_every_rank(items, costs, world_size):
    """The rule as balance() first wrote it: per video (longest first, ties in list order), the
    rank with the least load (ties: the lower rank), found by looking at every rank."""
    order = sorted(range(len(items)), key=lambda i: (-costs[items[i].key], i))
    loads, owner = [0] * world_size, {}
    for i in order:
        r = min(range(world_size), key=lambda k: (loads[k], k))
        owner[i] = r
        loads[r] += costs[items[i].key]
    return [[item for i, item in enumerate(items) if owner[i] == r] for r in range(world_size)]


def test_balance_gives_the_same_plan_as_scanning_every_rank():
    """Array tasks of one job compute the plan each: any change to who gets what (ties included)
    would leave videos done twice or by no task when old and new flowkit versions share a store."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        n, world = int(rng.integers(0, 60)), int(rng.integers(1, 12))
        items = _items(n)
        high = [2, 5, 1000][trial % 3]  # few distinct costs: many ties of costs and of loads
        costs = {i.key: int(rng.integers(1, high + 1)) for i in items}
        assert balance(items, costs, world) == _balance_by_scanning_every_rank(items, costs, world)


def test_costs_fall_back_to_file_size():
    items = _items(3)
    # v2's header has no frame count: estimated at the median bytes per frame of the others.
    costs, basis, estimated = _costs(items, {"v0": (11, 1100), "v1": (21, 2100), "v2": (None, 4100)},
                                     step=1, max_frames=None)
    assert basis == "frame pairs" and estimated == ["v2"]
    assert costs == {"v0": 10, "v1": 20, "v2": 40}
    # No count anywhere: bytes; a missing file costs 1.
    costs, basis, _ = _costs(items, {"v0": (None, 500), "v1": (None, 0), "v2": (None, 9)}, 1, None)
    assert basis == "file size" and costs == {"v0": 500, "v1": 1, "v2": 9}
    # The median rate, not an extreme one: 100, 200 and 300 bytes a frame make 4000 bytes 20
    # frames (the smallest rate would call it 40, the largest 13).
    costs, _, estimated = _costs(_items(4), {"v0": (11, 1100), "v1": (21, 4200), "v2": (10, 3000),
                                             "v3": (None, 4000)}, 1, None)
    assert estimated == ["v3"] and costs["v3"] == 19


def test_a_subplan_keeps_only_its_shares_costs_and_estimates():
    """An array task's share, split again over its torchrun ranks, carries the costs and the
    estimated keys of that share alone (what its summary reports), and covers the share."""
    from flowkit.shards import ShardPlan

    items = _items(6)
    costs = {item.key: i + 1 for i, item in enumerate(items)}
    plan = ShardPlan(balance(items, costs, 2), costs, "frame pairs", ["v0", "v5"])
    share = {item.key for item in plan.share(1)}
    sub = plan.subplan(1, 2)
    assert set(sub.costs) == share and set(sub.estimated) == share & {"v0", "v5"}
    assert sorted(i.key for r in range(2) for i in sub.share(r)) == sorted(share)


def test_plan_probes_real_videos(bad_videos):
    items, _ = scan_videos(bad_videos.root)
    plan = plan_shards(items, 2, step=2)
    assert sorted(i.key for r in range(2) for i in plan.share(r)) == sorted(i.key for i in items)
    assert plan.costs["classA/good_0"] == expected_pairs(24, step=2)
    assert plan.costs["classA/empty"] == 1  # unreadable: fails at once when extracted
    d = plan.to_dict()
    assert d["world_size"] == 2 and sum(r["videos"] for r in d["ranks"]) == len(items)
    assert abs(plan.load(0) - plan.load(1)) <= max(plan.costs.values())
    with pytest.raises(FlowkitError, match="invalid shard count"):
        plan_shards(items, 0)


def test_unreadable_videos_cost_one_pair_not_their_size(tmp_path):
    # A corrupt file fails at once when extracted: costed by its size, a 3 MB one took a whole
    # share as "5054 pairs" and left every real video to the other rank.
    root = tmp_path / "videos" / "a"
    root.mkdir(parents=True)
    for i in range(4):
        write_video(root / f"v{i}.mp4", np.zeros((8, 16, 16, 3), np.uint8))
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(3_000_000))
    items, _ = scan_videos(tmp_path / "videos")
    plan = plan_shards(items, 2)
    assert plan.costs["a/corrupt"] == 1 and plan.estimated == []
    assert sorted(len(plan.share(r)) for r in range(2)) == [2, 3]
    assert abs(plan.load(0) - plan.load(1)) <= 7


def test_array_tasks_under_torchrun_split_their_share_over_the_ranks(monkeypatch):
    """--shard I/N in a job whose tasks each run torchrun: task I's share is split over its
    ranks, so the N x W processes take disjoint parts that cover the list (every rank of a task
    took the whole share of I before)."""
    from flowkit.extract import ExtractConfig, shard_items

    items, config = _items(11), ExtractConfig()
    parts = {}
    for world in (1, 3):
        monkeypatch.setenv("WORLD_SIZE", str(world))
        for task in range(2):
            for rank in range(world):
                monkeypatch.setenv("RANK", str(rank))
                mine, count = shard_items(items, config, (task, 2))
                assert count == 2 * world
                parts[world, task, rank] = [item.key for item in mine]
        keys = [k for (w, _, _), part in parts.items() if w == world for k in part]
        assert sorted(keys) == sorted(item.key for item in items), world
    for task in range(2):  # the ranks of a task share exactly what that task does alone
        assert sorted(parts[3, task, 0] + parts[3, task, 1] + parts[3, task, 2]) == sorted(
            parts[1, task, 0])
    monkeypatch.setenv("RANK", "0")  # torchrun alone: rank 0 of 3 takes share 0 of 3
    alone = shard_items(items, config, None)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert alone == shard_items(items, config, (0, 3)) and alone[1] == 3
    with pytest.raises(FlowkitError, match="invalid shard 2/2"):
        shard_items(items, config, (2, 2))


# ------------------------------------------------------------------------------ combined summary

def test_combined_summary_names_the_rank_of_each_failure():
    a = ExtractSummary("s", "tvl1", [VideoResult("x", "x.mp4", "done", pairs=7),
                                     VideoResult("bad", "bad.mp4", "failed", reason="bad.mp4: empty")],
                       seconds=2.0)
    b = ExtractSummary("s", "tvl1", [VideoResult("y", "y.mp4", "skipped"),
                                     VideoResult("z", "z.mp4", "failed", reason="z.mp4: truncated")],
                       seconds=3.0, notes=["n"])
    c = ExtractSummary.combine([a, b])
    assert [r.key for r in c.results] == ["x", "bad", "y", "z"]
    assert c.count("done") == 1 and c.count("skipped") == 1 and c.count("failed") == 2
    assert [r.reason for r in c.results if r.status == "failed"] == [
        "[rank 0] bad.mp4: empty", "[rank 1] z.mp4: truncated"]
    assert c.seconds == 3.0 and c.notes == ["n"] and c.pairs == 7
    d = c.to_dict()
    assert [(r["rank"], r["done"], r["failed"]) for r in d["ranks"]] == [(0, 1, 1), (1, 0, 1)]
    assert a.results[1].reason == "bad.mp4: empty"  # the parts are left unchanged


def test_combined_rate_counts_every_rank_from_the_first_video_started():
    # Rank 0 spent 50 s on setup (indexing its store files), then computed 10 s; rank 1 computed
    # from 1 s to 59 s. The longest setup as the window's start made 680 pairs in "10 s": 68/s.
    a = ExtractSummary("s", "tvl1", [VideoResult("x", "x.mp4", "done", pairs=100)], seconds=60.0,
                       setup_seconds=50.0)
    b = ExtractSummary("s", "tvl1", [VideoResult("y", "y.mp4", "done", pairs=580)], seconds=59.0,
                       setup_seconds=1.0)
    idle = ExtractSummary("s", "tvl1", [VideoResult("z", "z.mp4", "skipped")], seconds=0.5,
                          setup_seconds=0.5)  # nothing to compute: its setup starts nothing
    d = ExtractSummary.combine([a, b, idle]).to_dict()
    assert d["setup_seconds"] == 1.0 and d["seconds"] == 60.0
    assert d["pairs_per_s"] == round(680 / 59.0, 3)


# ------------------------------------------------------------------------------ batch sampler

def test_ranks_split_every_global_batch():
    world, size, batch = 3, 20, 6
    full = EpochBatchSampler(size, batch, seed=4)
    parts = [DistributedBatchSampler(size, batch, rank=r, world_size=world, seed=4)
             for r in range(world)]
    for epoch, skip in ((0, 0), (2, 1)):
        full.set_epoch(epoch, skip=skip)
        for p in parts:
            p.set_epoch(epoch, skip=skip)
        expected = list(full)
        got = [list(p) for p in parts]
        assert all(len(g) == len(expected) == full.num_batches - skip for g in got)
        for step, batch_indices in enumerate(expected):
            assert sum((g[step] for g in got), []) == batch_indices
    assert parts[0].num_batches == full.num_batches


def test_distributed_sampler_refuses_unequal_parts():
    with pytest.raises(FlowkitError, match="multiple of the 2 ranks"):
        DistributedBatchSampler(10, 5, rank=0, world_size=2)
    with pytest.raises(FlowkitError, match="fewer than one global batch"):
        DistributedBatchSampler(3, 4, rank=0, world_size=2)


# ------------------------------------------------------------------------------ sync batch norm

def test_without_a_group_everything_is_one_process():
    assert not distributed.active() and distributed.world_size() == 1
    assert distributed.gather({"a": 1}) == [{"a": 1}]
    assert distributed.sum_values([1, 2.5]) == [1.0, 2.5]
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    model = _bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    distributed.broadcast_buffers(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    distributed.barrier()
    assert distributed.local_device("cpu") == "cpu"


def test_launch_from_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert distributed.Launch.from_env() == distributed.Launch(1, 4, 1)
    assert not distributed.launched()  # no rendezvous address: a Slurm-array-style shard
    assert distributed.local_device("cuda") == "cuda:1"
    assert distributed.local_device("cuda:0") == "cuda:0"
    # Second node of two: global rank 3 is its node's GPU 1 (there is no cuda:3 on that node).
    monkeypatch.setenv("RANK", "3")
    assert distributed.local_device("cuda") == "cuda:1"
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(FlowkitError, match="inconsistent launch"):
        distributed.Launch.from_env()


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 2, 1),
                         nn.BatchNorm2d(2))


def test_converted_model_keeps_its_state_dict_and_is_plain_bn_alone():
    plain = _bn_model()
    sync = convert_sync_batchnorm(_bn_model(), torch.device("cpu"))
    assert isinstance(sync[1], CPUSyncBatchNorm)
    assert plain.state_dict().keys() == sync.state_dict().keys()
    x = torch.randn(4, 2, 6, 6) + 5
    torch.testing.assert_close(sync(x), plain(x))
    torch.testing.assert_close(sync[1].running_var, plain[1].running_var)


def _in_group(rank: int, world: int, init_file: str, work: Callable, *args) -> None:
    """One rank (``torch.multiprocessing.spawn``'s): ``work(rank, world, *args)`` in a gloo group
    of ``world`` processes, left once the work's objects are gone. A tensor whose graph holds the
    group (an autograd all_reduce's) or a DDP wrapper keeps it alive past
    destroy_process_group, and gloo's threads then abort the process as the interpreter ends
    (SIGABRT, "terminate called without an active exception": 4 runs of this file in 12)."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=world)
    try:
        work(rank, world, *args)
    finally:
        gc.collect()
        torch.distributed.destroy_process_group()


def _sync_bn_rank(rank: int, world: int, out: str) -> None:
    model = convert_sync_batchnorm(_bn_model(), torch.device("cpu"))
    x = _batch()[rank * 2:(rank + 1) * 2].clone().requires_grad_(True)
    # Each rank's loss is its share of the global batch's mean loss.
    loss = model(x).square().mean() / world
    loss.backward()
    torch.save({"grad_x": x.grad, "grad_w": model[0].weight.grad,
                "running_var": model[1].running_var}, f"{out}.{rank}")


def _batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 2, 6, 6, generator=g) * 3 + 10


@pytest.mark.slow
def test_cpu_sync_batchnorm_equals_one_big_batch(tmp_path):
    """Two gloo processes with 2 clips each give the input gradients and running statistics of
    plain batch norm over all 4; the weight gradients sum to the big batch's."""
    world = 2
    torch.multiprocessing.spawn(_in_group, args=(world, str(tmp_path / "pg"), _sync_bn_rank,
                                                 str(tmp_path / "out")), nprocs=world)
    model = _bn_model()
    x = _batch().requires_grad_(True)
    model(x).square().mean().backward()
    parts = [torch.load(f"{tmp_path / 'out'}.{r}", weights_only=True) for r in range(world)]
    torch.testing.assert_close(torch.cat([p["grad_x"] for p in parts]), x.grad, rtol=1e-4,
                               atol=1e-6)
    torch.testing.assert_close(parts[0]["grad_w"] + parts[1]["grad_w"], model[0].weight.grad,
                               rtol=1e-4, atol=1e-6)
    for p in parts:
        torch.testing.assert_close(p["running_var"], model[1].running_var, rtol=1e-5, atol=1e-6)


def _any_rank_rank(rank: int, world: int, out: str) -> None:
    Path(f"{out}.{rank}").write_text(f"{distributed.any_rank(rank == 0)} {distributed.any_rank(False)}")


@pytest.mark.slow
def test_any_rank_is_true_everywhere_when_one_rank_says_so(tmp_path):
    """A stop request seen by rank 0 only stops both gloo ranks at the same step (a rank that
    went on alone would wait forever in the next collective); no request stops nobody."""
    world = 2
    torch.multiprocessing.spawn(_in_group, args=(world, str(tmp_path / "pg"), _any_rank_rank,
                                                 str(tmp_path / "out")), nprocs=world)
    assert [(tmp_path / f"out.{r}").read_text() for r in range(world)] == ["True False"] * world



def test_plan_prints_the_shares_and_writes_nothing(sample_videos, tmp_path):
    from click.testing import CliRunner

    from flowkit.cli.extract import command

    store = tmp_path / "store"
    result = CliRunner().invoke(command, [str(sample_videos), "-o", str(store), "--plan",
                                          "--shard", "0/2", "--step", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert sorted(key for _, key, _ in lines) == sorted(i.key for i in scan_videos(sample_videos)[0])
    assert {rank for rank, _, _ in lines} == {"0", "1"}
    assert all(int(pairs) == expected_pairs(8, step=2) for _, _, pairs in lines)
    assert "rank 0: 2 videos, 6 expected frame pairs (50.0%), 0 already in the store" in result.stderr
    assert not store.exists()


def test_plan_of_an_array_task_under_torchrun_splits_its_share_over_the_ranks(
        sample_videos, tmp_path, monkeypatch):
    """`--shard K/N --plan` in a torchrun job prints share K split over the job's ranks, as the
    run splits it (it printed the N array shares, the same for every K)."""
    from click.testing import CliRunner

    from flowkit.cli.extract import command
    from flowkit.extract import shard_plan

    monkeypatch.setenv("RANK", "0")  # the job's rank 0 of 2 (no MASTER_ADDR: no group to join)
    monkeypatch.setenv("WORLD_SIZE", "2")
    items = scan_videos(sample_videos)[0]
    for k in (0, 1):
        result = CliRunner().invoke(command, [str(sample_videos), "-o", str(tmp_path / "s"),
                                              "--plan", "--shard", f"{k}/2"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = [line.split("\t") for line in result.stdout.splitlines()]
        share = shard_plan(items, ExtractConfig(), 2).share(k)
        assert sorted(key for _, key, _ in lines) == sorted(i.key for i in share)
        assert {rank for rank, _, _ in lines} == {"0", "1"}
        assert f"share {k}/2 rank 1: 1 videos" in result.stderr


def test_plan_json_is_the_whole_stdout(sample_videos, tmp_path):
    """`--plan --json` prints the plan as JSON and nothing else on stdout (the per-video lines
    are the plain output's), so a job script can `json.load` it to size its array; the
    per-rank lines stay on stderr."""
    from click.testing import CliRunner

    from flowkit.cli.extract import command

    store = tmp_path / "store"
    result = CliRunner().invoke(command, [str(sample_videos), "-o", str(store), "--plan",
                                          "--shard", "0/2", "--step", "2", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["world_size"] == 2 and [r["videos"] for r in plan["ranks"]] == [2, 2]
    assert sorted(k for r in plan["ranks"] for k in r["keys"]) == sorted(
        i.key for i in scan_videos(sample_videos)[0])
    assert "rank 1: 2 videos" in result.stderr and not store.exists()


# ------------------------------------------------------------------------- the index, in shares

def _index_rank(rank: int, world: int, root: str, out: str) -> None:
    """Index the store in shares (as Trainer and evaluate do), then read every video's meta:
    record which files this rank opened in each phase."""
    from flowkit.store import FlowStore, summary
    from flowkit.train.loading import index_store

    opened, real = [], summary.video_facts
    summary.video_facts = lambda path: opened.append(Path(path).stem) or real(path)
    store = FlowStore(root)
    index_store(store)
    shared = list(opened)
    opened.clear()
    assert len(store.metas(store.keys())) == 6
    Path(f"{out}.{rank}").write_text(f"{' '.join(shared)}\n{' '.join(opened)}\n")


@pytest.mark.slow
def test_ranks_index_the_store_in_shares_and_keep_each_others_entries(tmp_path):
    """Two gloo ranks on a store nobody indexed yet: each opens half of the videos, and once
    both are done each finds all of them in index.json (both wrote it at about the same time:
    the second merges what the first wrote instead of replacing it)."""
    import numpy as np

    from flowkit.store import FlowStore

    store = FlowStore(tmp_path / "store", "a", classes=["c"])
    for i in range(6):
        with store.writer(f"c/v{i}", source=f"v{i}.mp4", fps=25.0, label=0,
                          rgb_codec="raw") as w:
            w.append_rgb(np.full((3, 8, 8, 3), i, np.uint8))
    world = 2
    torch.multiprocessing.spawn(_in_group, args=(world, str(tmp_path / "pg"), _index_rank,
                                                 str(store.path), str(tmp_path / "out")),
                                nprocs=world)
    phases = [(tmp_path / f"out.{r}").read_text().split("\n")[:2] for r in range(world)]
    shares = [set(p[0].split()) for p in phases]
    assert shares == [{"v0", "v2", "v4"}, {"v1", "v3", "v5"}]
    assert [p[1] for p in phases] == ["", ""]  # afterwards everything came from the index


# ------------------------------------------------------------- DDP validation without --sync-bn

TINY_MODEL = {"width": 4, "layers": [1, 1, 1, 1], "modality": "flow"}


def _ddp_config(store: str):
    from flowkit.train import TrainConfig

    return TrainConfig(store=store, model="resnet2d", model_kwargs={**TINY_MODEL, "dropout": 0.5},
                       frames=2, size=16,
                       batch_size=4, epochs=1, lr=0.05, flip=False, val_fraction=0.25, workers=0,
                       device="cpu")


def _train_rank(rank: int, world: int, store: str, run: str) -> None:
    """One rank of a DDP run (plain batch norm): train, then record this rank's model buffers
    and the input and output of its dropout at the first training step."""
    from flowkit.train import Trainer

    trainer = Trainer(_ddp_config(store), run)
    dropout = []
    trainer.model.dropout.register_forward_hook(
        lambda module, args, out: dropout.append((args[0], out)) if module.training else None)
    trainer.fit()
    # fit released its DDP wrapper (it holds the group: see _in_group), and with it the group
    gc.collect()
    assert trainer.net is trainer.model and not any(
        isinstance(o, nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    torch.save(dict(trainer.model.named_buffers()), f"{run}.buffers.{rank}")
    torch.save(dropout[0], f"{run}.dropout.{rank}")


@pytest.mark.slow
def test_ddp_validation_scores_the_saved_model(tiny_store, tmp_path):
    """Without --sync-bn each rank's batch-norm statistics follow its own clips. Validation
    (every rank scores part of the videos) must use rank 0's, the ones the checkpoint holds:
    the logged val_loss equals that of last.pt scored again in one process. Each rank's part of
    a batch gets its own dropout masks."""
    from flowkit.store import FlowStore
    from flowkit.train import load_checkpoint, load_run_model, predict
    from flowkit.train.loading import make_dataset, make_loader

    run, world = tmp_path / "run", 2
    torch.multiprocessing.spawn(_in_group, args=(world, str(tmp_path / "pg"), _train_rank,
                                                 str(tiny_store), str(run)), nprocs=world)
    (in0, out0), (in1, out1) = (torch.load(f"{run}.dropout.{rank}", weights_only=True)
                                for rank in range(world))
    both = (in0 != 0) & (in1 != 0)  # where both ranks' features can be seen dropped or kept
    assert both.sum() > 10
    assert not torch.equal((out0 == 0)[both], (out1 == 0)[both]), "the ranks dropped alike"
    saved = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
    for rank in range(world):
        buffers = torch.load(f"{run}.buffers.{rank}", weights_only=True)
        assert buffers and all(torch.equal(v, saved[k]) for k, v in buffers.items()), rank

    model, run_config, _ = load_run_model(run, "last")
    cpu = torch.device("cpu")
    dataset = make_dataset(FlowStore(tiny_store), run_config["split"]["val_keys"],
                           _ddp_config(str(tiny_store)), model, train=False)
    scores, labels, _ = predict(model, make_loader(dataset, batch_size=4, device=cpu), cpu)
    again = float(-scores[torch.arange(len(labels)), labels].clamp_min(1e-12).log().mean())
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_loss"]
    assert abs(logged - again) < 1e-6, (logged, again)


# A command's rank under torchrun: it joins the group, then leaves it by an error (exit 2) on rank 0
# and by Ctrl-C (exit 130) on rank 1, never reaching the command's own shutdown(). An atexit
# registered first runs last and reports whether the group was still up by then.
_LEAVING_RANK = """
import atexit, sys
import torch.distributed as dist
atexit.register(lambda: print("group up at exit:", dist.is_initialized(), flush=True))
from flowkit import distributed
from flowkit.cli import handle_errors
from flowkit.errors import FlowkitError

@handle_errors
def command():
    distributed.init("cpu")
    assert distributed.world_size() == 2
    distributed.barrier()  # both ranks are in the group
    if distributed.rank() == 0:
        raise FlowkitError("the store was made with other options")
    raise KeyboardInterrupt

command()
"""


def test_a_rank_leaving_by_an_error_or_ctrl_c_leaves_the_group_first(tmp_path):
    """An error after distributed.init (a refused extraction under torchrun) exited 2 with the
    gloo group still up: its threads then aborted some ranks as the interpreter ended (SIGABRT,
    "terminate called without an active exception", 4 runs in 12 of a refused extraction).
    init registers shutdown at exit, so every way out leaves the group first."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "-c", _LEAVING_RANK], cwd=tmp_path, text=True,
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in range(2)]
    (out0, err0), (out1, err1) = (p.communicate(timeout=120) for p in ranks)
    assert ranks[0].returncode == 2, err0
    assert "error: the store was made with other options" in err0
    assert ranks[1].returncode == 130, err1
    for out, err in ((out0, err0), (out1, err1)):
        assert "group up at exit: False" in out, (out, err)
        assert "terminate called" not in err


# ------------------------------------------------------------- DDP's search for unused parameters

# Each registered model's switches that change which parts run (tiny sizes: width 8, 8 frames).
MODEL_VARIANTS = [
    ("cidc", {"modality": "rgb"}), ("cidc", {"modality": "flow"}),
    ("cidc", {"direction": "uni"}), ("cidc", {"direction": "none"}),
    ("ddn", {}), ("ddn", {"branches": "motion"}),
    ("i3d", {"modality": "flow"}), ("resnet2d", {}), ("s3d", {}),
    ("stmulnet", {}), ("stmulnet", {"gating": "additive"}), ("stmulnet", {"gated_layers": (1,)}),
    ("trajectorynet", {}), ("trajectorynet", {"offsets": True}),
    ("trajectorynet", {"flow_source": "motionnet"}), ("trajectorynet", {"backward_flow": "store"}),
    ("tvnet", {}), ("tvnet", {"rgb_stream": True}), ("tvnet", {"freeze_tvnet": True}),
    ("tvnet", {"flow_source": "store"}),
]


def test_model_variants_cover_every_registered_model():
    from flowkit.models import list_models

    assert {name for name, _ in MODEL_VARIANTS} == set(list_models())


@pytest.mark.parametrize("name,kw", MODEL_VARIANTS, ids=lambda v: str(v))
def test_every_registered_model_gives_each_trainable_parameter_a_gradient(name, kw):
    """DDP is told to search for parameters a step leaves without a gradient only for a model
    with ``skips_parameters``; a model that leaves one and does not say so fails at its second
    step under torchrun ("Expected to have finished reduction in the prior iteration")."""
    from flowkit.models import classification_loss, create_model
    from flowkit.models.registry import model_parameters

    torch.manual_seed(0)
    extra = {k: v for k, v in (("width", 8), ("frames", 8)) if k in model_parameters(name)}
    model = create_model(name, num_classes=3, **kw, **extra)
    model.train()
    inputs = {m: torch.randn(2, 3 if m == "rgb" else 2 * model.flow_stack, 8, 32, 32)
              for m in model.inputs}
    classification_loss(model(inputs), torch.tensor([0, 1])).backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert model.skips_parameters or not without, without


def test_ddp_searches_unused_parameters_only_for_a_model_that_skips_some(monkeypatch):
    import flowkit.train.ddp as ddp

    made = []
    monkeypatch.setattr(ddp.distributed, "world_size", lambda: 2)
    monkeypatch.setattr(ddp.nn.parallel, "DistributedDataParallel",
                        lambda model, **kw: made.append(kw) or model)
    plain = nn.Linear(2, 2)
    ddp.wrap(plain, torch.device("cpu"))

    class Skipping(nn.Linear):
        skips_parameters = True

    ddp.wrap(Skipping(2, 2), torch.device("cpu"))
    assert [kw["find_unused_parameters"] for kw in made] == [False, True]
