"""The `flowkit` command line in real subprocesses: samples, extract (--json, exit codes), info
(--json, --validate), show (PNG and video), --version; usage errors and --help in this process
(``conftest.run_cli``: the same ``main``, without seconds of torch import per case)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch

import flowkit
from flowkit.store import FlowStore
from flowkit.video import load_frames

from conftest import run_cli

CHEAP = ["--param", "nscales=2", "--param", "warps=1", "--param", "outer_iterations=2",
         "--param", "inner_iterations=10", "--no-compile"]
T, H, W = 8, 64, 80  # tests/conftest.py's sample_videos
KEY = "pan_left/pan_left_0"
# Wide, plain output: rich tables and messages are not wrapped or truncated at 80 columns. One torch
# thread: on a loaded 2-core machine two OpenMP threads make tiny TV-L1 batches up to ~60x slower.
ENV = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb",
       "OMP_NUM_THREADS": "1"}


def flowkit_cli(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowkit", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.fixture(scope="module")
def store(sample_videos, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "store"
    r = flowkit_cli("extract", sample_videos, "-o", path, *CHEAP)
    assert r.returncode == 0, r.stderr
    return path


# ----------------------------------------------------------------------------- samples


def test_samples_writes_a_class_folder(tmp_path):
    out = tmp_path / "videos"
    r = flowkit_cli("samples", out, "--classes", "pan_left,zoom_in", "--videos-per-class", "1",
                    "--frames", "5", "--size", "32x48")
    assert r.returncode == 0, r.stderr
    assert "wrote 2 videos" in r.stdout
    paths = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert paths == ["pan_left/pan_left_0.mp4", "zoom_in/zoom_in_0.mp4"]
    assert load_frames(out / paths[0]).shape == (5, 32, 48, 3)


def test_samples_rejects_unknown_class(tmp_path):
    r = flowkit_cli("samples", tmp_path / "v", "--classes", "pan_left,moonwalk")
    assert r.returncode == 2 and "moonwalk" in r.stderr
    assert not list(tmp_path.rglob("*.mp4"))


def test_samples_refuses_a_class_twice_and_a_file_for_its_folder(tmp_path):
    """A class listed twice wrote its videos twice under one name (4 said, 2 on disk, the specs
    naming the overwritten ones); a file for OUT_DIR failed with a traceback."""
    r = run_cli("samples", tmp_path / "v", "--classes", "pan_left,pan_left", "--frames", "2")
    assert r.returncode == 2 and "listed twice" in r.stderr
    (tmp_path / "file").write_text("")
    r = run_cli("samples", tmp_path / "file", "--classes", "pan_left", "--frames", "2")
    assert r.returncode == 2 and "exists and is not a folder" in r.stderr
    assert "Traceback" not in r.stderr and not list(tmp_path.rglob("*.mp4"))


# ----------------------------------------------------------------------------- extract


def test_extract_json_then_resume(sample_videos, tmp_path):
    path = tmp_path / "s"
    r = flowkit_cli("extract", sample_videos, "-o", path, "--json", *CHEAP)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)  # stdout is the JSON only; progress and summary go to stderr
    assert (d["done"], d["skipped"], d["failed"], d["pairs"]) == (4, 0, 0, 4 * (T - 1))
    assert d["method"] == "tvl1" and len(d["videos"]) == 4
    assert {v["key"] for v in d["videos"]} == set(FlowStore(path).keys())
    assert "4 done" in r.stderr and "0 failed" in r.stderr

    again = flowkit_cli("extract", sample_videos, "-o", path, "--json", *CHEAP)
    assert again.returncode == 0, again.stderr
    d = json.loads(again.stdout)
    assert (d["done"], d["skipped"], d["failed"], d["pairs"]) == (0, 4, 0, 0)


def test_extract_json_of_a_stopped_run_says_what_finished(sample_videos, tmp_path, monkeypatch):
    """A run stopped by SIGTERM (a Slurm time limit) or Ctrl-C prints its summary, --json
    included ("interrupted": true), and keeps its exit code: stdout was empty. The stop comes
    once the first video is done (the library's progress hook), as the signal handler sets it."""
    from flowkit.cli import extract as cli_extract
    from flowkit.progress import Progress

    real = cli_extract.extract

    def stopped_after_one_video(*args, stop, **kw):
        class StopAfterFirstVideo(Progress):
            def _changed(self, task):
                if task.description == "videos" and task.completed:
                    stop.set("terminated")
        return real(*args, **{**kw, "progress": StopAfterFirstVideo()}, stop=stop)

    monkeypatch.setattr(cli_extract, "extract", stopped_after_one_video)
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--json", "--workers", "1", *CHEAP)
    assert r.returncode == 143, r.stderr
    d = json.loads(r.stdout)
    assert d["interrupted"] is True and d["stopped"] == "terminated", d
    assert 1 <= d["done"] < 4 and d["done"] + d["in_progress"] + d["not_started"] == 4, d
    assert "stopped early: terminated" in r.stderr, r.stderr
    assert "terminated (SIGTERM); finished work is kept" in r.stderr


def test_a_stopped_summary_counts_the_video_in_progress_apart_from_those_not_started():
    """SIGTERM mid video: the summary said "(1 videos not started)" where 720 frame pairs were
    computed and discarded. It now says what was discarded and that a rerun restarts it, and
    keeps "not started" for the videos never begun (--json: in_progress, discarded_pairs)."""
    import io

    from rich.console import Console

    from flowkit.cli import extract as cli_extract
    from flowkit.extract import ExtractSummary

    def text(**counts) -> str:
        console = Console(file=io.StringIO(), width=300, no_color=True)
        cli_extract._print_summary(console, ExtractSummary("s", "tvl1", [], 3.0,
                                                           stopped="terminated",
                                                           interrupted=True, **counts))
        return console.file.getvalue()

    one = text(in_progress=1, discarded_pairs=720)
    assert "stopped early: terminated (1 video in progress discarded with its 720 frame pairs, " \
           "a rerun restarts it)" in one, one
    assert "not started" not in one
    assert "(2 videos in progress discarded with their 30 frame pairs, a rerun restarts them; " \
           "1 video not started)" in text(in_progress=2, discarded_pairs=30, not_started=1)
    assert "(3 videos not started)" in text(not_started=3)
    part = ExtractSummary("s", "tvl1", [], 3.0, in_progress=1, discarded_pairs=720)
    d = ExtractSummary.combine([part, part]).to_dict()  # the ranks' together
    assert (d["in_progress"], d["discarded_pairs"], d["not_started"]) == (2, 1440, 0)


def test_extract_json_keeps_the_scan_notes_and_the_text_says_them_once(sample_videos, tmp_path,
                                                                      capsys):
    """A second hard link to a video is skipped with a note: in the summary's notes (--json too,
    as import keeps its walk's), printed once on stderr."""
    import io

    from rich.console import Console

    from flowkit.cli import extract as cli_extract

    root = tmp_path / "hl"
    root.mkdir()
    os.link(sample_videos / "pan_left" / "pan_left_0.mp4", root / "a.mp4")
    os.link(sample_videos / "pan_left" / "pan_left_0.mp4", root / "b.mp4")
    r = run_cli("extract", root, "-o", tmp_path / "s", "--size", "16", "--json", *CHEAP)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [v["key"] for v in d["videos"]] == ["a"]
    assert [n for n in d["notes"] if "b.mp4: skipped, the same file as" in n], d["notes"]
    assert r.stderr.count("b.mp4: skipped, the same file as") == 1, r.stderr
    # a stopped run's report keeps them too, once for the run (rank 0's), not once per rank
    from flowkit.extract import ExtractSummary
    from flowkit.progress import Stopped

    stopped = Stopped("terminated")
    stopped.summary = ExtractSummary("s", "tvl1", [], 1.0, stopped="terminated", interrupted=True)
    cli_extract._report_stop(Console(file=io.StringIO()), stopped,
                             [stopped.summary, stopped.summary], True, ["b.mp4: skipped"])
    assert json.loads(capsys.readouterr().out)["notes"] == ["b.mp4: skipped"]


def test_a_folder_of_only_unread_extensions_says_what_the_scan_skipped(tmp_path):
    """A camera's folder whose every file has an extension not read as video: "no video files
    found" carries the scan's note (what it skipped, an example, the fix), which the error would
    otherwise hide, as it ends the run before notes are printed."""
    root = tmp_path / "cam"
    root.mkdir()
    (root / "clip0001.xyz").write_bytes(b"\0" * 16)
    (root / "readme.txt").write_text("not a video")
    r = run_cli("extract", root, "-o", tmp_path / "s")
    assert r.returncode == 2, r.stderr
    assert "no video files found" in r.stderr and "skipped 1 file" in r.stderr, r.stderr
    assert "clip0001.xyz" in r.stderr and "readme" not in r.stderr, r.stderr


def test_a_sigterm_while_gathering_the_ranks_summaries_exits_143(tmp_path, monkeypatch):
    """A SIGTERM that comes while a finished rank waits for the others' summaries stops the run:
    exit 143 and "terminated", not exit 0 as if nothing had happened."""
    from flowkit.cli import extract as cli_extract
    from flowkit.samples import make_sample_videos

    make_sample_videos(tmp_path / "v", classes=("pan_left",), videos_per_class=1, frames=4,
                       size=(32, 40))
    real = cli_extract._gather_summaries

    def gather(summary, wait):  # the signal arrives while this rank waits for the others
        os.kill(os.getpid(), signal.SIGTERM)
        return real(summary, wait)

    monkeypatch.setattr(cli_extract, "_gather_summaries", gather)
    r = run_cli("extract", tmp_path / "v", "-o", tmp_path / "s", *CHEAP)
    assert r.returncode == 143, r.stderr
    assert "terminated" in r.stdout + r.stderr


def test_a_stopped_torchrun_run_reports_every_rank_or_says_it_covers_rank_0_only(monkeypatch,
                                                                                capsys):
    """Under torchrun a stopped run printed rank 0's videos as the whole run's (1 done where the
    store held 3). Its report is now every rank's (a rank stopped before its videos started
    counts none), or, when the ranks could not be gathered in time, labelled rank 0's only, in
    the text and the JSON. tests/test_torchrun.py stops a real 2-rank run."""
    import io

    from rich.console import Console

    from flowkit.cli import extract as cli_extract
    from flowkit.extract import ExtractSummary
    from flowkit.feed import VideoResult
    from flowkit.progress import Stopped

    def part(*keys):
        return ExtractSummary("s", "tvl1", [VideoResult(k, f"v/{k}.mp4", "done") for k in keys],
                              1.0, stopped="terminated", interrupted=True, not_started=1)

    stopped = Stopped("terminated")
    stopped.summary = part("a/x")
    stopped.summary.labels_filled = 2
    monkeypatch.setattr(cli_extract.distributed, "world_size", lambda: 3)
    console = Console(file=io.StringIO(), width=300, no_color=True)
    cli_extract._report_stop(console, stopped, [stopped.summary, part("b/y", "b/z"), None], True)
    d = json.loads(capsys.readouterr().out)
    assert (d["done"], d["not_started"], d["ranks_reported"], d["world_size"]) == (3, 2, 3, 3)
    assert d["labels_filled"] == 2  # the empty rank's is not rank 0's again
    assert [(r["rank"], r["done"]) for r in d["ranks"]] == [(0, 1), (1, 2), (2, 0)]
    assert "3 done" in console.file.getvalue() and "only" not in console.file.getvalue()

    cli_extract._report_stop(console, stopped, None, True)  # the gather gave up
    d = json.loads(capsys.readouterr().out)
    assert (d["done"], d["ranks_reported"], d["world_size"]) == (1, 1, 3)
    assert "rank 0 of 3 only: the other ranks did not report" in console.file.getvalue()
    # A run rank 0 finished, another rank stopped in its setup (a second SIGTERM: srun and
    # torchrun's agent each send one): the finished run's report counts that rank as stopped,
    # not a traceback on its None.
    whole = ExtractSummary.combine(cli_extract._ranks_in_place([part("a/x"), None]))
    assert whole.count("done") == 1 and "stopped before its videos started" in whole.stopped


def test_extract_exit_1_on_a_bad_video_with_one_line_reason(bad_videos, tmp_path):
    videos = tmp_path / "videos"
    (videos / "classA").mkdir(parents=True)
    shutil.copy(bad_videos.paths["good_0"], videos / "classA" / "good_0.mp4")
    shutil.copy(bad_videos.paths["text"], videos / "classA" / "text.mp4")
    r = flowkit_cli("extract", videos, "-o", tmp_path / "s", "--json", *CHEAP)
    assert r.returncode == 1, r.stderr
    d = json.loads(r.stdout)
    assert (d["done"], d["failed"]) == (1, 1)
    bad = str(videos / "classA" / "text.mp4")
    lines = [line for line in r.stderr.splitlines() if "failed:" in line]
    assert len(lines) == 1, r.stderr
    assert bad in lines[0] and "not a video" in lines[0]
    assert "Traceback" not in r.stderr
    assert FlowStore(tmp_path / "s").keys() == ["classA/good_0"]


@pytest.mark.parametrize("workers", [1, 2])
def test_extract_an_engine_error_in_the_middle_of_videos_ends_the_run(sample_videos, tmp_path,
                                                                      workers):
    """TV-L1 refuses 2x2 frames (EngineError) on every batch, the first one in the middle of a
    video (batch 2 of 8-frame videos): each video fails with one line naming it and the cause,
    and the run ends with exit 1. It used to hang on the first one (its decoder, cancelled,
    never ended its queue); run in its own session, killed whole if it hangs."""
    with subprocess.Popen([sys.executable, "-m", "flowkit", "extract", sample_videos, "-o",
                           tmp_path / "s", "--size", "2", "--batch", "2", "--workers",
                           str(workers), "--no-rgb", "--no-compile"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=ENV,
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail(f"extract hung after an engine error; stderr tail:\n{stderr[-1500:]}")
    assert proc.returncode == 1, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.startswith("  failed: ")]
    assert len(lines) == 4, stderr[-2000:]
    assert {line.split(": ")[1] for line in lines} == {
        str(p) for p in Path(sample_videos).rglob("*.mp4")}
    assert all("engine failed" in line and "at least 3x3" in line for line in lines)
    assert "0 done" in stderr and "4 failed" in stderr and "Traceback" not in stderr


def test_extract_missing_video_dir_is_a_usage_error(tmp_path):
    r = run_cli("extract", tmp_path / "nope", "-o", tmp_path / "s", *CHEAP)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and str(tmp_path / "nope") in r.stderr
    assert "no such file or directory" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()  # no store is created for a failed start


@pytest.mark.parametrize("args, message", [
    (["--size", "12x"], "--size"),
    (["--size", "0"], "--size"),
    (["--param", "warps"], "KEY=VALUE"),
    (["--param", "bogus=1"], "bogus"),
    (["--shard", "3/2"], "invalid shard"),
    (["--shard", "one"], "--shard"),
    (["--shard", "3/3", "--plan"], "invalid shard 3/3: need 0 <= I < N"),
    (["--shard", "-1/3", "--plan"], "invalid shard -1/3"),
    (["--step", "0"], "step must be >= 1"),
    (["--max-frames", "1"], "max_frames must be >= 2"),
    (["--method", "nope"], "--method"),
    (["--lossless", "--flow-codec", "uint8:20"], "--lossless chooses both codecs"),
    (["--flow-codec", "zip"], "unknown flow codec 'zip'"),
], ids=["size-12x", "size-0", "param-format", "param-unknown", "shard-range", "shard-format",
        "shard-1-based-plan", "shard-negative-plan",
        "step-0", "max-frames-1", "method", "lossless-and-codec", "codec"])
def test_extract_usage_errors_exit_2(sample_videos, tmp_path, args, message):
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", *CHEAP, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "s").exists()  # nothing is created for a failed start


def test_extract_class_index_or_label_map_alone_is_a_usage_error(sample_videos, tmp_path):
    """--class-index without --split-list and --label-map without --annotations were ignored:
    exit 0 and a store in the folder's sorted class order, not classInd.txt's."""
    (tmp_path / "classInd.txt").write_text("1 zoom_in\n2 pan_left\n")
    for option, needs in (("--class-index", "--split-list"), ("--label-map", "--annotations")):
        r = run_cli("extract", sample_videos, "-o", tmp_path / "s", option,
                    tmp_path / "classInd.txt", "--plan")
        assert r.returncode == 2, (option, r.returncode, r.stderr)
        assert r.stderr.startswith(f"error: {option} ") and f"add {needs} " in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", r.stderr


def test_a_share_beyond_the_plan_is_refused(sample_videos):
    """`--plan --shard 3/3` under torchrun ended in an IndexError traceback from the subplan of
    share 3 (the option is checked first now); share -1 was taken from the end, silently."""
    from flowkit.errors import FlowkitError
    from flowkit.labels import scan_videos
    from flowkit.shards import plan_shards

    plan = plan_shards(scan_videos(sample_videos)[0], 3)
    assert sum(len(plan.subplan(i, 2).shares[0] + plan.subplan(i, 2).shares[1])
               for i in range(3)) == 4
    for bad in (3, -1):
        with pytest.raises(FlowkitError, match=f"invalid shard {bad}/3: need 0 <= index < count"):
            plan.subplan(bad, 2)


def _device_args(command: str, sample_videos: Path, tmp_path: Path) -> list:
    """The arguments of ``command`` around a --device, writing under ``tmp_path / "s"``."""
    return {"extract": ["extract", sample_videos, "-o", tmp_path / "s"],
            "benchmark": ["benchmark"],
            "train-flow tvnet": ["train-flow", "tvnet", "--out", tmp_path / "s"],
            "train-flow motionnet": ["train-flow", "motionnet", sample_videos, "--out",
                                     tmp_path / "s"]}[command]


DEVICE_COMMANDS = ["extract", "benchmark", "train-flow tvnet", "train-flow motionnet"]


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x"])
@pytest.mark.parametrize("command", DEVICE_COMMANDS)
def test_device_is_checked_alike_by_every_command(sample_videos, tmp_path, command, device):
    """One --device check for every command that computes flow, before any work: extract
    raised torch's RuntimeError (a traceback) for gpu and took mps until its first batch;
    train-flow raised tracebacks for both."""
    r = run_cli(*_device_args(command, sample_videos, tmp_path), "--device", device)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "--device" in r.stderr and "expected cpu, cuda or cuda:N" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["train-flow tvnet", "train-flow motionnet"])
def test_train_flow_on_missing_cuda_is_one_line(sample_videos, tmp_path, command):
    """--device cuda where there is none: one line naming --device cpu, exit 2, nothing written
    (a traceback from the first tensor moved before)."""
    r = run_cli(*_device_args(command, sample_videos, tmp_path), "--device", "cuda")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stderr.strip() == ("error: --device cuda: CUDA is not available here "
                                "(torch.cuda.is_available() is False); use --device cpu")
    assert not (tmp_path / "s").exists()


def test_a_cuda_device_beyond_the_machines_gpus_is_refused(monkeypatch):
    """train-flow's --device cuda:N names the GPUs there are (torch: "invalid device ordinal"
    at the first tensor moved)."""
    from flowkit.cli.options import parse_present_device
    from flowkit.errors import FlowkitError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert [parse_present_device(d) for d in ("cpu", "cuda", "cuda:1")] == ["cpu", "cuda", "cuda:1"]
    with pytest.raises(FlowkitError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\); "
                                           r"use cuda:0 to cuda:1"):
        parse_present_device("cuda:2")


def test_extract_bad_bound_is_a_usage_error(sample_videos, tmp_path):
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", *CHEAP, "--flow-codec", "uint8:0")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "bound" in r.stderr and "failed:" not in r.stderr


def test_extract_bad_param_with_workers_fails_fast(sample_videos, tmp_path):
    """Same usage error as with one worker: exit 2 and one line, not an endless respawn loop."""
    err = tmp_path / "stderr"
    with open(err, "w+") as f:
        proc = subprocess.Popen([sys.executable, "-m", "flowkit", "extract", sample_videos, "-o",
                                 tmp_path / "s", "--workers", "2", "--param", "bogus=1",
                                 "--no-compile"], stdout=subprocess.DEVNULL, stderr=f, env=ENV,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while proc.poll() is None and time.monotonic() < deadline:
                # A third pool worker means the pool replaced a worker that died: the hang.
                if "SpawnPoolWorker-3" in err.read_text():
                    break
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                pytest.fail("extract --workers 2 with a bad --param did not exit (workers are "
                            f"respawned forever); stderr tail:\n{err.read_text()[-1500:]}")
    assert proc.returncode == 2, err.read_text()[-1500:]
    assert "bogus" in err.read_text()


def _tiny_resnet(path: Path) -> Path:
    """A torchvision-named ResNet state dict with conv1, bn1 and layer1: learned cost-volume
    features up to layer1."""
    import torch
    from torch import nn

    from flowkit.layers import BasicBlock

    torch.manual_seed(0)
    state = {"conv1.weight": 0.1 * torch.randn(8, 3, 7, 7)}
    state.update({f"bn1.{k}": v for k, v in nn.BatchNorm2d(8).state_dict().items()})
    state.update({f"layer1.0.{k}": v for k, v in BasicBlock(8, 8, 1).state_dict().items()})
    torch.save(state, path)
    return path


def test_extract_weights_count_in_the_param_check(sample_videos, tmp_path):
    """--weights selects costvolume's learned features, which --param layer belongs to: the
    --param values were checked without the weights, so layer (and features=learned) was refused
    as if the features were patches. An engine that takes no checkpoint refuses --weights."""
    weights = _tiny_resnet(tmp_path / "r.pt")
    r = flowkit_cli("extract", sample_videos, "-o", tmp_path / "s", "--method", "costvolume",
                    "--weights", weights, "--param", "layer=conv1", "--param", "max_displacement=2",
                    "--size", "32", "--workers", "1", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["done"] == 4
    store = FlowStore(tmp_path / "s")
    params = store.meta(store.keys()[0])["flows"]["costvolume"]["params"]
    assert (params["features"], params["layer"], params["weights"]) == (
        "learned", "conv1", str(weights))

    r = run_cli("extract", sample_videos, "-o", tmp_path / "s2", "--method", "costvolume",
                "--weights", weights, "--param", "features=learned", "--param", "layer=conv1",
                "--plan")
    assert r.returncode == 0, r.stderr
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s2", "--weights", weights, *CHEAP)
    assert r.returncode == 2 and "--weights: engine 'tvl1' takes no checkpoint" in r.stderr
    assert not (tmp_path / "s2").exists()


def test_extract_no_rgb_stores_flow_only(sample_videos, tmp_path):
    """--no-rgb: flow alone, no RGB frames (most of a store's bytes), for a user who trains on
    flow only; were the option dropped, every video would carry its RGB all the same."""
    video = sample_videos / "pan_left" / "pan_left_0.mp4"
    r = flowkit_cli("extract", video, "-o", tmp_path / "s", "--no-rgb", "--max-frames", "3",
                    "--workers", "1", "--json", *CHEAP)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["done"] == 1
    with FlowStore(tmp_path / "s") as fs:
        meta = fs.meta("pan_left_0")
    assert meta["has_rgb"] is False and set(meta["flows"]) == {"tvl1"}


def test_extract_class_index_in_another_folder_goes_with_the_split_list(sample_videos, tmp_path):
    """--class-index names classInd.txt when it is not next to the list: its numbering (here
    the reverse of the folders' sorted order) decides the labels the list's lines give. Without
    it the folder order would make label 2 'zoom_in' and the line refused as contradicting its
    folder."""
    lists, other = tmp_path / "lists", tmp_path / "other"
    lists.mkdir()
    other.mkdir()
    (lists / "trainlist01.txt").write_text("pan_left/pan_left_0.mp4 2\nzoom_in/zoom_in_0.mp4 1\n")
    (other / "classInd.txt").write_text("1 zoom_in\n2 pan_left\n")
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--split-list",
                lists / "trainlist01.txt", "--class-index", other / "classInd.txt", "--plan")
    assert r.returncode == 0, r.stderr
    assert sorted(line.split("\t")[1] for line in r.stdout.splitlines()) == [
        "pan_left/pan_left_0", "zoom_in/zoom_in_0"]
    assert not (tmp_path / "s").exists()


def test_extract_takes_split_lists_repeated_and_refuses_a_folder_for_one(sample_videos, tmp_path):
    """--split-list twice (train and test list, as `export rawframes` takes it) extracts the
    videos of both with the classInd.txt beside them; only the last list was used. A folder
    given for a list is named as one (it was "does not exist")."""
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 pan_left\n2 zoom_in\n")
    (lists / "trainlist01.txt").write_text("pan_left/pan_left_0.mp4 1\nzoom_in/zoom_in_0.mp4 2\n")
    (lists / "testlist01.txt").write_text("pan_left/pan_left_1.mp4\npan_left/pan_left_0.mp4\n")
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--split-list",
                lists / "trainlist01.txt", "--split-list", lists / "testlist01.txt", "--plan")
    assert r.returncode == 0, r.stderr
    assert sorted(line.split("\t")[1] for line in r.stdout.splitlines()) == [
        "pan_left/pan_left_0", "pan_left/pan_left_1", "zoom_in/zoom_in_0"]
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--split-list", lists, "--plan")
    assert r.returncode == 2 and "is a directory" in r.stderr, r.stderr


def test_extract_merges_repeated_annotations_and_refuses_a_repeated_map(sample_videos, tmp_path):
    """--annotations twice (train and val list) extracts the videos of both, merged as `import
    rawframes` merges its lists; click kept only the last, dropping the train list's videos. A
    repeated --label-map or --class-index is refused: one file is read there."""
    train, val = tmp_path / "train.txt", tmp_path / "val.txt"
    train.write_text("pan_left/pan_left_0.mp4 0\n")
    val.write_text("zoom_in/zoom_in_1.mp4 1\n")
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--annotations", train,
                "--annotations", val, "--plan")
    assert r.returncode == 0, r.stderr
    assert sorted(line.split("\t")[1] for line in r.stdout.splitlines()) == [
        "pan_left/pan_left_0", "zoom_in/zoom_in_1"]
    assert "labels: 2 videos labelled (2 classes)" in r.stderr, r.stderr
    val.write_text("pan_left/pan_left_0.mp4 1\n")  # the lists contradict each other
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--annotations", train,
                "--annotations", val, "--plan")
    assert r.returncode == 2 and "the lists are not of one dataset" in r.stderr, r.stderr
    (tmp_path / "map.txt").write_text("pan_left\nzoom_in\n")
    (tmp_path / "classInd.txt").write_text("1 pan_left\n2 zoom_in\n")
    for option, path, needs in (("--label-map", tmp_path / "map.txt", ("--annotations", train)),
                                ("--class-index", tmp_path / "classInd.txt",
                                 ("--split-list", train))):
        r = run_cli("extract", sample_videos, "-o", tmp_path / "s", *needs, option, path,
                    option, path, "--plan")
        assert r.returncode == 2 and f"Invalid value for {option}: given 2 times" in r.stderr, \
            r.stderr
        assert not (tmp_path / "s").exists()


def test_extract_json_has_the_label_report_import_json_has(sample_videos, tmp_path):
    """`extract --json` left out what `import --json` reports of the labels: its lines
    (``labels``), the rows matching no video, the videos left unlabelled, and the findings (a
    row matching nothing, a class_<id> stand-in) among the notes."""
    lst = tmp_path / "list.txt"
    lst.write_text("pan_left/pan_left_0.mp4 0\nnosuch.mp4 1\n")
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--annotations", lst, "--json",
                "--size", "16", "--max-frames", "2", "--workers", "1", *CHEAP)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["done"] == 1 and d["labels"][0] == "1 videos labelled (2 classes)", d["labels"]
    assert d["unmatched_rows"] == [f"{lst}:2 nosuch.mp4"]
    assert d["unlabelled_videos"] == ["pan_left/pan_left_1", "zoom_in/zoom_in_0",
                                      "zoom_in/zoom_in_1"]
    assert [n for n in d["notes"] if n.startswith("1 rows match no video")], d["notes"]
    assert [n for n in d["notes"] if "called class_1" in n], d["notes"]
    assert r.stderr.count("rows match no video") == 1, r.stderr  # the text says it once
    assert list(d)[-1] == "videos"


def test_max_memory_sizes_are_binary_and_the_default_is_the_library_s():
    """--max-memory 4G means 4 GiB, as the help's "~0.5 GB per 1080p pair" and
    ExtractConfig's DEFAULT_MAX_MEMORY (4 << 30) count; "none" lifts the limit. Decimal units
    would hand the engine 7% less memory than the library's default for the same "4G"."""
    import click

    from flowkit.cli.extract import _bytes, command
    from flowkit.extract import DEFAULT_MAX_MEMORY

    assert _bytes("4G") == 4 << 30 and _bytes("512M") == 512 << 20 and _bytes("2GiB") == 2 << 30
    assert _bytes("1.5GB") == 3 << 29 and _bytes("100000") == 100000 and _bytes("64k") == 64 << 10
    assert _bytes("none") is None and _bytes(" None ") is None
    default = next(p.default for p in command.params if p.name == "max_memory")
    assert _bytes(default) == DEFAULT_MAX_MEMORY
    for bad in ("0", "-1G", "4X", "lots"):
        with pytest.raises(click.BadParameter):
            _bytes(bad)


# ----------------------------------------------------------------------------- info


def test_info_shows_videos_classes_engine(store):
    r = flowkit_cli("info", store)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for text in ("videos", "classes", "pan_left", "zoom_in", "tvl1", "nscales=2",
                 "jpegls (max error 0.1 px)", "jpeg (quality 95)", "KiB per frame", "KiB per pair",
                 "largest coding error", f"{4 * T} ({4 * T} RGB stored)", f"{H}x{W} (4)"):
        assert text in " ".join(out.split()), (text, out)


def test_info_prints_bracketed_names_as_they_are(store):
    """Folder, class and warning text with brackets prints as it is (rich markup ate "[HD]" and
    raised MarkupError on "[/b]")."""
    import io

    from rich.console import Console

    from flowkit.cli.info import _table

    with FlowStore(store) as fs:
        summary = fs.summary()
    summary["path"] = "/data/store [v2]"
    summary["classes"]["names"] = ["cat [HD]", "x [/b]"]
    summary["warnings"] = ["odd [b]video[/b]"]
    console = Console(file=io.StringIO(), width=250, no_color=True)
    console.print(_table(summary))
    out = console.file.getvalue()
    for text in ("flowkit store /data/store [v2]", "2 (cat [HD], x [/b])", "odd [b]video[/b]"):
        assert text in out, (text, out)


def test_extract_summary_prints_bracketed_names_as_they_are():
    """The summary's failed, done-with-reason, stopped and note lines and the store path print as
    they are: rich markup ate "[official video]" from a failed file's name and torchrun's
    "[rank 0]", and raised MarkupError on "[/b]"."""
    import io

    from rich.console import Console

    from flowkit.cli.extract import _print_summary
    from flowkit.extract import ExtractSummary
    from flowkit.feed import VideoResult

    results = [VideoResult("jump/dog", "v/jump/dog runs [official video].mp4", "failed",
                           "[rank 0] v/jump/dog runs [official video].mp4: not a video"),
               VideoResult("a/b", "v/a [/b].mp4", "done", "rotated [/b] by 90"),
               VideoResult("c/d", "v/c/d.mp4", "done")]
    summary = ExtractSummary("/data/store [v2]", "tvl1", results, 1.0,
                             notes=["clipped [red]x[/red]"], stopped="disk [full]")
    console = Console(file=io.StringIO(), width=300, no_color=True)
    _print_summary(console, summary)
    out = console.file.getvalue()
    for text in ("-> /data/store [v2]", "failed: [rank 0] v/jump/dog runs [official video].mp4",
                 "a/b: rotated [/b] by 90", "stopped early: disk [full]",
                 "note: clipped [red]x[/red]"):
        assert text in out, (text, out)


def test_info_json(store):
    r = flowkit_cli("info", store, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["videos"] == 4 and d["frames"] == 4 * T and d["bytes"] > 0
    assert d["flow_pairs"] == {"tvl1": 4 * (T - 1)}
    engine = d["engines"]["tvl1"]
    assert engine["engine"] == "tvl1" and engine["params"]["nscales"] == 2
    assert d["classes"]["names"] == ["pan_left", "zoom_in"]
    assert d["warnings"] == [] and d["partials"] == 0


def test_info_validate_good_and_tampered(store, tmp_path):
    r = flowkit_cli("info", store, "--validate")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout and "problem" not in r.stdout

    bad = tmp_path / "tampered"
    shutil.copytree(store, bad)
    victim = bad / "videos" / "zoom_in" / "zoom_in_1.h5"
    victim.write_bytes(os.urandom(4096))
    r = flowkit_cli("info", bad, "--validate")
    assert r.returncode == 1, r.stdout + r.stderr
    problems = [line for line in r.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and "zoom_in/zoom_in_1.h5" in problems[0], r.stdout
    r = flowkit_cli("info", bad, "--validate", "--json")
    assert r.returncode == 1
    d = json.loads(r.stdout)
    assert len(d["problems"]) == 1 and d["unreadable"] == 1 and d["warnings"]


def test_info_missing_store_exit_2(tmp_path):
    r = flowkit_cli("info", tmp_path / "nope")
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "nope").exists()  # info never creates a store


def test_info_deep_without_validate_is_a_usage_error(tiny_store):
    """--deep only deepens --validate: alone it would silently print the plain summary, and a
    user would think the store's every frame had been checked."""
    r = run_cli("info", tiny_store, "--deep")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--deep goes with --validate" in r.stderr and r.stdout == ""


def test_info_keys_lists_the_keys_one_per_line(store, tiny_store):
    """--keys: the keys alone on stdout, one per line (a pipe takes them), and a "keys" list with
    --json. show and extract --redo send a user here for keys, which neither the table nor the
    JSON listed."""
    r = run_cli("info", tiny_store, "--keys")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == FlowStore(tiny_store).keys() and len(r.stdout.split()) == 12
    r = run_cli("info", store, "--keys", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["keys"] == FlowStore(store).keys() and d["videos"] == 4
    r = run_cli("info", tiny_store, "--keys", "--validate")
    assert r.returncode == 2 and "--keys prints the keys alone" in r.stderr, r.stderr


def test_info_repair_manifest_rebuilds_a_lost_store_json(tiny_store, tmp_path):
    """A store whose store.json was lost: info names --repair-manifest, which writes it again
    with the class list its videos' labels record (extract refused the directory, not empty)."""
    copy = shutil.copytree(tiny_store, tmp_path / "store")
    (copy / "store.json").unlink()
    r = run_cli("info", copy)
    assert r.returncode == 2 and f"`flowkit info {copy} --repair-manifest`" in r.stderr, r.stderr
    r = run_cli("info", copy, "--repair-manifest", "--json")
    assert r.returncode == 0, r.stderr
    assert "rebuilt" in r.stderr and "3 classes (right, down, left)" in r.stderr, r.stderr
    assert json.loads(r.stdout)["classes"]["names"] == FlowStore(tiny_store).classes


def test_info_on_a_folder_that_is_not_a_store_exit_2(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    r = flowkit_cli("info", folder)
    assert r.returncode == 2 and "not a flowkit store" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]  # left alone


def test_unreadable_files_warning_names_the_cli_command(tmp_path):
    import numpy as np

    path = tmp_path / "store"
    with FlowStore(path, mode="a", classes=["c"]) as store:
        with store.writer("c/v", source="v.mp4", fps=25.0, label=0, label_name="c",
                          source_size=(8, 8), flow_codec="float16", rgb_codec="raw") as w:
            w.append_rgb(np.zeros((2, 8, 8, 3), np.uint8))
    (path / "videos" / "c" / "bad.h5").write_bytes(b"not HDF5")
    r = flowkit_cli("info", path, "--json")
    assert r.returncode == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert any("cannot be read" in w and "`flowkit info STORE --validate`" in w for w in warnings), \
        warnings


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"config": {}}\n')
    r = run_cli("evaluate", run, "--checkpoint", run / "config.json")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert f"{run / 'config.json'}: it is not a flowkit checkpoint (torch cannot read it: " \
        in lines[0]
    assert "weights_only" not in r.stderr and "Re-running" not in r.stderr
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


# ----------------------------------------------------------------------------- show


def test_show_png(store, tmp_path):
    out = tmp_path / "x.png"
    r = flowkit_cli("show", store, KEY, "-o", out)
    assert r.returncode == 0, r.stderr
    image = cv2.imread(str(out))
    assert image is not None
    gap = 2
    # Default frames 0, n//2, n-1: three rows of [frame | flow colour], plus a legend column.
    assert image.shape == (3 * H + 2 * gap, 2 * W + gap + H + gap, 3)


def test_show_png_selected_frames_and_out_of_range(store, tmp_path):
    out = tmp_path / "one.png"
    r = flowkit_cli("show", store, KEY, "-o", out, "--frame", "2")
    assert r.returncode == 0, r.stderr
    assert cv2.imread(str(out)).shape[0] == H
    r = flowkit_cli("show", store, KEY, "-o", tmp_path / "bad.png", "--frame", str(T - 1))
    assert r.returncode == 2 and "out of range" in r.stderr


def test_show_mp4(store, tmp_path):
    out = tmp_path / "x.mp4"
    r = flowkit_cli("show", store, KEY, "-o", out)
    assert r.returncode == 0, r.stderr
    frames = load_frames(out)
    gap = 2
    # One frame per flow pair: rgb | colour | colour wheel with its scale (a PNG's first row).
    assert frames.shape == (T - 1, H, 2 * W + gap + H + gap, 3)


def test_show_unknown_key_exit_2(store, tmp_path):
    r = run_cli("show", store, "pan_left/nope_9", "-o", tmp_path / "x.png")
    assert r.returncode == 2
    assert "pan_left/nope_9" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_a_missing_key_is_told_how_keys_look_and_where_they_are_listed(tiny_store, sample_videos,
                                                                       tmp_path):
    """show and extract --redo named `flowkit info` for the keys, which listed none; a key given
    with its file's extension (walk/v_X.avi, as the video folder shows it) found no match."""
    key = FlowStore(tiny_store).keys()[0]
    r = run_cli("show", tiny_store, key + ".avi", "-o", tmp_path / "x.png")
    assert r.returncode == 2, r.stderr
    assert f"keys have no file extension; did you mean: {key}" in r.stderr, r.stderr
    r = run_cli("show", tiny_store, "nope/nope_0", "-o", tmp_path / "x.png")
    assert r.returncode == 2 and f"`flowkit info {tiny_store} --keys` lists them" in r.stderr
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--redo", f"{KEY}.mp4", *CHEAP)
    assert r.returncode == 2, r.stderr
    assert (f"keys are CLASS/VIDEO, without the file extension, as `flowkit info {tmp_path / 's'} "
            "--keys` lists them") in r.stderr, r.stderr
    assert not (tmp_path / "s").exists()


def test_a_key_that_starts_with_a_dash_is_told_to_follow_double_dash(tiny_store, tmp_path):
    """A Kinetics key is a YouTube id, often starting with '-': click read it as options
    ("No such option '-1'") and nothing said that such a value goes after `--`. A mistyped
    option keeps click's own message."""
    for key in ("-1Kf0ktVsQ4_000005_000015", "-hQf0ktVsQ4_000005_000015"):  # -h: click's help
        r = run_cli("show", tiny_store, key, "-o", tmp_path / "x.png")
        assert r.returncode == 2
        assert ("a value that starts with '-' (e.g. a YouTube id) goes after `--`: flowkit show "
                "[OPTIONS] -- STORE VIDEO") in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = run_cli("show", tiny_store, "-o", tmp_path / "x.png", "--", "-1Kf0ktVsQ4_000005_000015")
    assert r.returncode == 2 and "no video '-1Kf0ktVsQ4_000005_000015'" in r.stderr, r.stderr
    for typo in ("--bogus", "--outpt", "-j"):  # "-j" alone is an unknown short option
        r = run_cli("show", tiny_store, "k", typo, "x")
        assert r.returncode == 2 and "goes after `--`" not in r.stderr, r.stderr


# ----------------------------------------------------------------------------- help, version


@pytest.mark.parametrize("command", [[], ["extract"], ["info"], ["show"], ["samples"]],
                         ids=["flowkit", "extract", "info", "show", "samples"])
def test_help(command):
    r = run_cli(*command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: ") and " ".join(["flowkit", *command]) in r.stdout


def test_version():
    r = flowkit_cli("--version")
    assert r.returncode == 0 and flowkit.__version__ in r.stdout and "flowkit" in r.stdout
