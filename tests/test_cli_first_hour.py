"""A new user's first hour (issue 16): one-line errors before anything is created, options checked
against an existing store before computing, tiny datasets that do not mislead, help with examples,
pictures that show the motion, progress that agrees with the summary, a `make demo` that says what
it does and how long it takes."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import typing
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowkit.flow import ENGINES, check_engine_params, engine_class, list_engines
from flowkit.flow.params import ParameterError
from flowkit.progress import LineProgress, Progress
from flowkit.store import FlowStore
from flowkit.viz import colorwheel_legend, flow_grid

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
CHEAP = ["--param", "nscales=2", "--param", "warps=1", "--param", "outer_iterations=2",
         "--param", "inner_iterations=10", "--no-compile"]
ENV = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "OMP_NUM_THREADS": "1"}


def flowkit_cli(*args, env: dict | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowkit", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env={**ENV, **(env or {})})


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """The CLI's error: exit 2, exactly one line on stderr, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------ 1. engine parameters, typed

@pytest.mark.parametrize("value, expected", [("abc", "must be an integer"),
                                             ("2.5", "must be an integer"),
                                             ("0", "must be positive")])
def test_bad_engine_parameter_is_one_line_and_creates_nothing(sample_videos, tmp_path, value,
                                                              expected):
    r = run_cli("extract", sample_videos, "-o", tmp_path / "s", "--param", f"warps={value}",
                "--no-compile")
    line = one_line_error(r)
    assert "--param" in line and "warps" in line and expected in line
    assert not (tmp_path / "s").exists()  # not even store.json


@pytest.mark.parametrize("args, expected", [
    (["extract", "videos", "-o", "s", "--size", "12x"], "--size"),
    (["extract"], "VIDEO_DIR"),
    (["show", "store", "key"], "-o"),
    (["nope"], "No such command"),
    (["train", "store", "-o", "run", "--resume", "--overwrite"], "contradict each other"),
    (["train", "store", "-o", "run"], "--model is required"),
], ids=["bad-value", "missing-argument", "missing-option", "unknown-command",
        "resume-and-overwrite", "no-model"])
def test_usage_errors_are_one_line(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(run_cli(*args))
    assert expected in line and line.count("--help") == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("group", [[], ["train-flow"]], ids=["flowkit", "train-flow"])
def test_a_group_without_a_command_shows_its_help(group):
    import click

    r = subprocess.run([sys.executable, "-m", "flowkit", *group], capture_output=True, text=True,
                       timeout=120, env=ENV)
    # click >= 8.2 shows the help on stderr and exits 2 (a usage error); 8.1 on stdout, exit 0.
    since_8_2 = hasattr(click.exceptions, "NoArgsIsHelpError")
    assert r.returncode == (2 if since_8_2 else 0), r
    text = r.stderr if since_8_2 else r.stdout
    assert text.startswith(f"Usage: {' '.join(['flowkit', *group])} [OPTIONS] COMMAND"), text
    assert "error:" not in text and "Commands:" in text and "Examples:" in text
    assert len(text.splitlines()) > 10


@pytest.mark.parametrize("args, option", [
    (["samples", "v", "--frames", "0"], "--frames"),
    (["samples", "v", "--seed", "-1"], "--seed"),
    (["toy", "v", "--seed", "-1"], "--seed"),
    (["toy", "v", "--fps", "-5"], "--fps"),
    (["toy", "v", "--fps", "0"], "--fps"),
    (["evaluate", "run", "--workers", "-1"], "--workers"),
], ids=["samples-frames-0", "samples-seed", "toy-seed", "toy-fps-negative", "toy-fps-0",
        "evaluate-workers"])
def test_bad_option_values_are_one_line_and_create_nothing(tmp_path, args, option):
    (tmp_path / "run").mkdir()
    r = subprocess.run([sys.executable, "-m", "flowkit", *args], capture_output=True, text=True,
                       timeout=120, env=ENV, cwd=tmp_path)
    line = one_line_error(r)
    assert option in line and "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and not list((tmp_path / "run").iterdir())


def _field_kinds(params_class) -> dict[str, type]:
    """Fields whose annotation is int, float or bool (optionally | None)."""
    kinds = {}
    for name, hint in typing.get_type_hints(params_class).items():
        arms = set(typing.get_args(hint)) - {type(None)} or {hint}
        if len(arms) == 1 and next(iter(arms)) in (int, float, bool):
            kinds[name] = next(iter(arms))
    return kinds


@pytest.mark.parametrize("name", list_engines())
def test_every_engine_types_its_parameters_from_its_dataclass(name):
    kinds = _field_kinds(engine_class(name).Params)
    assert kinds, f"{name}: no numeric parameters found"
    for field, kind in kinds.items():
        with pytest.raises(ParameterError, match=field) as info:
            check_engine_params(name, {field: "abc"})
        assert info.value.name == field
        if kind is int:
            with pytest.raises(ParameterError, match="integer"):
                check_engine_params(name, {field: 2.5})
    assert ENGINES.get(name).Params is engine_class(name).Params


def test_typed_values_are_converted():
    params = check_engine_params("tvl1", {"warps": 2.0, "tau": 1})
    assert params.warps == 2 and isinstance(params.warps, int)
    assert params.tau == 1.0 and isinstance(params.tau, float)
    numpy_values = check_engine_params("tvl1", {"warps": np.int64(3), "early_stop": np.bool_(0)})
    assert numpy_values.warps == 3 and numpy_values.early_stop is False
    with pytest.raises(ParameterError, match="integer"):
        check_engine_params("tvl1", {"warps": True})


def test_show_checks_the_output_format_before_reading(tiny_store, tmp_path):
    r = run_cli("show", tiny_store, "right/right_0", "-o", tmp_path / "out.txt")
    line = one_line_error(r)
    assert "out.txt" in line and ".png" in line and "Traceback" not in r.stderr
    assert not (tmp_path / "out.txt").exists()
    missing = one_line_error(run_cli("show", tiny_store, "right/right_0", "-o",
                                     tmp_path / "nodir" / "x.png"))
    assert "does not exist" in missing
    for name in ("a.mp4", "a.png"):  # a folder in the way: the mp4 failed after reading
        (tmp_path / name).mkdir()
        line = one_line_error(run_cli("show", tiny_store, "right/right_0", "-o", tmp_path / name))
        assert "is a folder; name a file" in line


@pytest.mark.parametrize("args, expected", [(["--plot", "nodir/p.png"], "does not exist"),
                                            (["--plot", "p.pdf"], "name it .png"),
                                            (["--json", "nodir/r.json"], "does not exist"),
                                            (["--json", "taken"], "is a folder"),
                                            (["--plot", "taken.png"], "is a folder")])
def test_benchmark_checks_its_outputs_before_measuring(tmp_path, monkeypatch, args, expected):
    """Before measuring: an output that cannot be written failed with a traceback after the whole
    run (a folder of that name in the way), its results lost."""
    monkeypatch.chdir(tmp_path)
    if args[1].startswith("taken"):
        (tmp_path / args[1]).mkdir()
    line = one_line_error(run_cli("benchmark", "--methods", "tvl1", "--pairs", "1", "--size",
                                  "32x32", "--repeats", "1", *args))
    assert expected in line and args[0] in line
    assert [p.name for p in tmp_path.iterdir()] == [args[1]] * args[1].startswith("taken")


# ------------------------------------------------------------------ 2. options vs an existing store

@pytest.fixture(scope="module")
def small_store(sample_videos, tmp_path_factory) -> Path:
    """The sample videos extracted at --size 32 --step 2 (cheap TV-L1)."""
    path = tmp_path_factory.mktemp("opts") / "store"
    r = flowkit_cli("extract", sample_videos, "-o", path, "--size", "32", "--step", "2", *CHEAP)
    assert r.returncode == 0, r.stderr
    return path


def _stamps(store: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((store / "videos").rglob("*.h5"))}


@pytest.mark.parametrize("args, expected", [
    (["--method", "tvnet", "--size", "48", "--param", "iterations=2", "--no-compile"],
     ["--size 32", "--step 2"]),
    (["--size", "32", *CHEAP], ["--step 2"]),
    (["--size", "48", "--step", "2", *CHEAP], ["--size 32"]),
    (["--size", "32", "--step", "2", "--flow-codec", "uint8:20", *CHEAP],
     ["--flow-codec jpegls:0.1"]),
    (["--size", "32", "--step", "2", *CHEAP[:-1], "--param", "tau=0.2", "--no-compile"],
     ["--param tau=0.25"]),
], ids=["new-engine-size-step", "step", "size-same-engine", "codec", "engine-param"])
def test_extract_checks_options_against_the_store_first(sample_videos, small_store, args,
                                                        expected):
    before = _stamps(small_store)
    line = one_line_error(run_cli("extract", sample_videos, "-o", small_store, *args))
    for option in expected:
        assert option in line, line
    assert "--redo-mismatched" in line and "Nothing was computed" in line
    assert _stamps(small_store) == before  # nothing written


def test_rgb_codec_matters_only_for_videos_that_join_the_store(tiny_store):
    from flowkit.store import flow_codec, rgb_codec
    from flowkit.store.compat import Request, compare_with_store

    store = FlowStore(tiny_store)  # raw RGB, float16 flow of an engine called "exact" as tvl1
    request = Request(method="costvolume", engine={"engine": "costvolume", "version": "1",
                                                   "params": {}},
                      size=None, step=1, rgb=True, rgb_codec=rgb_codec("jpeg:95"),
                      flow_codec=flow_codec("jpegls:0.1"))
    keys = store.keys()
    assert compare_with_store(store, keys, request).ok  # a new engine beside the stored RGB
    joining = compare_with_store(store, keys + ["right/new"], request)
    assert set(joining.differing) == {"rgb_codec"} and "--rgb-codec raw" in joining.message()


def test_another_engine_version_is_refused(tiny_store):
    """A flow engine whose version changed (its algorithm or defaults changed, results differ)
    must not extend a store made with the old one: the store would mix flows of both versions
    under one name. The comparison names the engine version, stored and asked."""
    from conftest import TINY_SPEED
    from flowkit.store import flow_codec, rgb_codec
    from flowkit.store.compat import Request, compare_with_store

    store = FlowStore(tiny_store)  # "exact" engine version 1 as tvl1, raw RGB, float16 flow

    def request(version: str) -> Request:
        return Request(method="tvl1", engine={"engine": "exact", "version": version,
                                              "params": {"speed": TINY_SPEED}},
                       size=None, step=1, rgb=True, rgb_codec=rgb_codec("raw"),
                       flow_codec=flow_codec("float16"))

    keys = store.keys()
    assert compare_with_store(store, keys, request("1")).ok
    newer = compare_with_store(store, keys, request("2"))
    assert set(newer.differing) == {"engine_version"} and set(newer.differing["engine_version"]) \
        == set(keys)
    assert "engine version 1 in the store, 2 asked" in newer.message()


def test_redo_recomputes_with_the_new_options(sample_videos, small_store, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    r = flowkit_cli("extract", sample_videos, "-o", store, "--size", "32", "--step", "2",
                    *CHEAP[:2], "--param", "warps=2", *CHEAP[4:], "--redo-mismatched", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["done"] == 4 and "recomputed" in " ".join(d["notes"])
    with FlowStore(store) as fs:
        assert all(fs.meta(k)["flows"]["tvl1"]["params"]["warps"] == 2 for k in fs.keys())
    again = flowkit_cli("extract", sample_videos, "-o", store, "--size", "32", "--step", "2",
                        *CHEAP[:2], "--param", "warps=2", *CHEAP[4:], "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["skipped"] == 4


def test_redo_key_recomputes_that_finished_video_alone(sample_videos, small_store, tmp_path):
    """`--redo KEY` is the fix `info --validate --deep` and `train` name for a damaged video: on
    a finished store it recomputes that video (its file rewritten) and skips the others. Were
    the keys dropped, the rerun would skip everything and leave the damage in place."""
    import shutil

    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    before = _stamps(store)
    r = flowkit_cli("extract", sample_videos, "-o", store, "--size", "32", "--step", "2", *CHEAP,
                    "--redo", "pan_left/pan_left_0", "--workers", "1", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert (d["done"], d["skipped"]) == (1, 3)
    after = _stamps(store)
    assert [name for name in before if after[name] != before[name]] == ["pan_left_0.h5"]


# ------------------------------------------------------------------ 5. paths that are not folders

def test_extract_a_single_video_file(sample_videos, tmp_path):
    video = sample_videos / "pan_left" / "pan_left_0.mp4"
    r = flowkit_cli("extract", video, "-o", tmp_path / "s", "--json", *CHEAP)
    assert r.returncode == 0, r.stderr
    assert FlowStore(tmp_path / "s").keys() == ["pan_left_0"]
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert "not a video" in one_line_error(run_cli("extract", text, "-o", tmp_path / "t"))
    missing = one_line_error(run_cli("extract", tmp_path / "nope", "-o", tmp_path / "t"))
    assert "no such file or directory" in missing and "one video file" in missing
    assert not (tmp_path / "t").exists()


# ------------------------------------------------------------------ 4. tiny datasets

TINY_TRAIN = ["--model", "resnet2d", "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]",
              "--model-arg", "modality=flow", "--frames", "2", "--size", "16", "--batch-size", "4",
              "--no-flip", "--workers", "0", "--device", "cpu", "--epochs", "1"]


def test_a_class_of_one_recording_group_is_not_told_to_raise_val_fraction(tmp_path):
    """UCF101 clips of one group stay on one side of a split: a class holding a single group
    never validates, so the warning names the group and --val-list, not a --val-fraction."""
    from flowkit.store import FlowStore
    from flowkit.train import TrainConfig
    from flowkit.train.loop import split_warnings

    keys = [f"{c}/v_{c}_g01_c0{k}" for c in ("Archery", "Bowling") for k in range(1, 6)]
    with FlowStore(tmp_path / "s", mode="a", classes=["Archery", "Bowling"]) as store:
        for key in keys:
            name = key.split("/")[0]
            with store.writer(key, source=f"{key}.avi", fps=25.0, label_name=name,
                              label=["Archery", "Bowling"].index(name), rgb_codec="raw") as w:
                w.append_rgb(np.zeros((3, 4, 4, 3), np.uint8))
    [text] = split_warnings(TrainConfig(store=str(tmp_path / "s"), model="resnet2d",
                                        val_fraction=0.2), FlowStore(tmp_path / "s"), keys, [])
    assert "2 class(es) hold a single UCF101 recording group (e.g. 'Archery/v_Archery_g01')" in text
    assert "--val-list FILE" in text and "use --val-fraction" not in text


def test_empty_validation_is_warned_and_evaluate_says_it_scores_training_videos(tiny_store,
                                                                                 tmp_path):
    from flowkit.cli.evaluate import command as evaluate_command
    from flowkit.cli.train import command as train_command

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path / "run"
        r = CliRunner().invoke(train_command, [str(tiny_store), "-o", str(run), *TINY_TRAIN,
                                               "--val-fraction", "0.1"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        assert "12 training / 0 validation" in r.stderr
        assert "gives no validation videos" in r.stderr and "--val-fraction 0.25" in r.stderr
        ev = CliRunner().invoke(evaluate_command, [str(run), "--clips", "1", "--crops", "1",
                                                   "--json"], catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert report["training_videos"] == 12 and report["held_out"] is False
    assert "NOT held out: all of them were training videos" in ev.stderr
    assert report["top5"] is None and "top-5" not in ev.stderr  # 3 classes: top-5 is always 100%


def test_validation_split_with_enough_videos_is_quiet_and_held_out(tiny_store, tmp_path):
    from flowkit.cli.evaluate import command as evaluate_command
    from flowkit.cli.train import command as train_command

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path / "run"
        r = CliRunner().invoke(train_command, [str(tiny_store), "-o", str(run), *TINY_TRAIN,
                                               "--val-fraction", "0.25"], catch_exceptions=False)
        assert r.exit_code == 0 and "no validation videos" not in r.stderr
        ev = CliRunner().invoke(evaluate_command, [str(run), "--clips", "1", "--crops", "1"],
                                catch_exceptions=False)
    finally:
        torch.set_num_threads(threads)
    assert ev.exit_code == 0 and "held out: none used in training" in ev.stderr


def test_default_workers_fit_the_machine():
    from flowkit.train.config import MAX_DEFAULT_WORKERS, TrainConfig

    usable = len(os.sched_getaffinity(0))
    workers = TrainConfig(store="s", model="resnet2d").workers
    assert workers == min(MAX_DEFAULT_WORKERS, usable) and workers <= usable


# ------------------------------------------------------------------ 5. help

def _commands():
    from flowkit.cli import COMMANDS

    ctx_commands = [[name] for name in COMMANDS if name != "train-flow"]
    return [[]] + ctx_commands + [["train-flow"], ["train-flow", "tvnet"],
                                  ["train-flow", "motionnet"]]


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c) or "flowkit")
def test_help_has_a_description_and_examples(command):
    from flowkit.cli import main

    r = CliRunner(env={"COLUMNS": "100"}).invoke(main, [*command, "--help"], terminal_width=100)
    assert r.exit_code == 0, r.output
    text = r.output
    description = text.split("\n\n")[1].strip()
    assert len(description) > 40 and description.endswith((".", ")", "`")), description
    assert "Examples:" in text, text
    examples = text.split("Examples:")[1].split("\n\n")[0].strip().splitlines()
    assert 1 <= len(examples) <= 3 and all(e.strip().startswith("flowkit ") for e in examples)
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert "..." not in text.split("Commands:")[-1] if "Commands:" in text else True


def test_extract_help_names_the_output_option():
    from flowkit.cli.extract import command

    text = CliRunner().invoke(command, ["--help"]).output
    assert "store STORE" not in text and "given with -o" in text


def test_missing_flow_error_names_the_cli_option(tiny_store):
    from flowkit.data import ClipDataset, RandomClipSampler
    from flowkit.errors import FlowkitError

    with pytest.raises(FlowkitError, match="--flow-name"):
        ClipDataset(tiny_store, inputs=("flow",), sampler=RandomClipSampler(frames=2),
                    flow_name="costvolume")


# ------------------------------------------------------------------ 6. pictures

def _saturation(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)[..., 1] / 255.0


def _pan_with_a_stray_vector(h=32, w=40, n=2) -> np.ndarray:
    """A leftward pan of 2.2 px with one 14 px vector at the border (the demo's case)."""
    flow = np.zeros((n, 2, h, w), np.float32)
    flow[:, 0] = -2.2
    flow[:, 0, 0, 0] = -14.0
    return flow


def test_pictures_scale_colour_robustly_and_print_the_scale():
    flows = _pan_with_a_stray_vector()
    frames = np.full((2, 32, 40, 3), 128, np.uint8)
    image = flow_grid(frames, flows, legend=True, gap=0)
    pan = image[5:30, 40 + 5:80 - 5]
    assert np.median(_saturation(pan)) > 0.9  # was 2.2 / 14 = 16% with the largest vector
    legend = image[:32, 80:]
    assert legend.shape[:2] == (32, 32)
    text_band = legend[26:]  # the scale, printed under the wheel
    assert (text_band.min(axis=-1) < 100).any()
    assert (colorwheel_legend(32, max_flow=2.2) != colorwheel_legend(32)).any()


def _write_store(path: Path, rgb: bool) -> Path:
    flows = _pan_with_a_stray_vector(n=3)
    with FlowStore(path, mode="a", classes=["pan_left"]) as store:
        with store.writer("pan_left/v", source="v.mp4", fps=25.0, label=0, label_name="pan_left",
                          source_size=(32, 40), flow_codec="float16", rgb_codec="raw") as w:
            if rgb:
                w.append_rgb(np.full((4, 32, 40, 3), 128, np.uint8))
            w.append_flow("tvl1", flows, engine={"engine": "tvl1", "version": "1", "params": {}})
    return path


@pytest.mark.parametrize("rgb", [True, False], ids=["rgb", "no-rgb"])
def test_show_png_carries_the_wheel_and_shows_the_pan(tmp_path, rgb):
    store = _write_store(tmp_path / "store", rgb)
    out = tmp_path / "flow.png"
    r = flowkit_cli("show", store, "pan_left/v", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "wrote " + str(out) + ": flow/tvl1, full colour at 2.2 px" in r.stdout
    image = cv2.imread(str(out))[..., ::-1]
    gap, h, w = 2, 32, 40
    flow_left = (w + gap) if rgb else 0
    assert image.shape[1] == flow_left + w + gap + h  # [frame |] flow | wheel
    pan = image[5:h - 5, flow_left + 5:flow_left + w - 5]
    assert np.median(_saturation(pan)) > 0.9
    wheel = image[:h, flow_left + w + gap:]
    assert (_saturation(wheel) > 0.5).sum() > 50  # a coloured disc, not white


def _store_with_backward_flow(path: Path) -> Path:
    """4 frames, frame i a flat grey 40 (i + 1); forward and backward flow of a leftward pan."""
    flows = _pan_with_a_stray_vector(n=3)
    frames = np.stack([np.full((32, 40, 3), 40 * (i + 1), np.uint8) for i in range(4)])
    with FlowStore(path, mode="a", classes=["pan_left"]) as store:
        with store.writer("pan_left/v", source="v.mp4", fps=25.0, label=0, label_name="pan_left",
                          source_size=(32, 40), flow_codec="float16", rgb_codec="raw") as w:
            w.append_rgb(frames)
            w.append_flow("tvl1", flows, engine={"engine": "tvl1", "version": "1", "params": {}})
            w.append_flow("tvl1_backward", -flows, engine={"engine": "tvl1", "version": "1",
                                                           "params": {}, "direction": "backward"})
    return path


@pytest.mark.parametrize("flow, frame_shown", [("tvl1", 0), ("tvl1_backward", 1)])
def test_show_draws_backward_flow_beside_the_frame_it_moves(tmp_path, flow, frame_shown):
    # Backward pair t maps frame t+1's pixels to frame t: it lives on frame t+1's grid.
    from flowkit.cli import main

    store = _store_with_backward_flow(tmp_path / "store")
    runner = CliRunner()
    png, mp4 = tmp_path / "flow.png", tmp_path / "flow.mp4"
    for pair in (0, 2):
        r = runner.invoke(main, ["show", str(store), "pan_left/v", "-o", str(png), "--flow", flow,
                                 "--frame", str(pair)])
        assert r.exit_code == 0, r.output
        image = cv2.imread(str(png))[..., ::-1]
        assert (image[:32, :40] == 40 * (pair + frame_shown + 1)).all(), image[0, 0]
    r = runner.invoke(main, ["show", str(store), "pan_left/v", "-o", str(mp4), "--flow", flow])
    assert r.exit_code == 0, r.output
    from flowkit.video import load_frames

    video = load_frames(mp4)
    assert len(video) == 3
    for t, frame in enumerate(video):
        grey = np.median(frame[4:28, 4:36])
        assert abs(grey - 40 * (t + frame_shown + 1)) <= 3, (t, grey)


def test_show_draws_tvl1_by_default_beside_other_engines_and_names_the_flow(tmp_path):
    """Adding an engine beside tvl1 (costvolume sorts first) does not change what the same
    command draws; without tvl1 the first forward flow is drawn; the line names the flow."""
    from types import SimpleNamespace

    from flowkit.cli.show import _pick_flow

    store = _write_store(tmp_path / "store", rgb=True)
    with FlowStore(store, mode="a") as fs, fs.writer("pan_left/v", source="v.mp4", fps=25.0,
                                                     flow_codec="float16") as w:
        w.append_flow("costvolume", 3 * _pan_with_a_stray_vector(n=3),
                      engine={"engine": "costvolume", "version": "1", "params": {}})
    out = tmp_path / "flow.png"
    r = flowkit_cli("show", store, "pan_left/v", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "flow/tvl1, full colour at 2.2 px" in r.stdout
    r = flowkit_cli("show", store, "pan_left/v", "-o", out, "--flow", "costvolume")
    assert "flow/costvolume, full colour at 6.6 px" in r.stdout
    names = SimpleNamespace(flow_names=lambda key: ["costvolume_backward", "motionnet", "tvnet"])
    assert _pick_flow(names, "k", None) == "motionnet"
    assert _pick_flow(names, "k", "tvnet") == "tvnet"


def test_show_video_carries_the_wheel_and_its_scale(tmp_path):
    from flowkit.cli import main
    from flowkit.video import load_frames

    store = _write_store(tmp_path / "store", rgb=True)
    out = tmp_path / "flow.mp4"
    r = CliRunner().invoke(main, ["show", str(store), "pan_left/v", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "flow/tvl1, full colour at 2.2 px" in r.output
    gap, h, w = 2, 32, 40
    video = load_frames(out)
    assert video.shape == (3, h, 2 * w + gap + h + gap, 3)  # frame | flow | wheel, as a PNG row
    for frame in video:
        wheel = frame[:h, 2 * w + 2 * gap:]
        assert (_saturation(wheel) > 0.5).sum() > 50  # a coloured disc
        assert (wheel[26:].min(axis=-1) < 100).any()  # the scale printed under it


# ------------------------------------------------------------------ 7. progress

def test_task_rate_counts_this_run_and_gives_an_eta():
    task = Progress().start("videos", total=10, completed=4)  # 4 done by an earlier run
    task.started -= 2.0
    task.advance(2)
    assert task.rate() == pytest.approx(1.0, rel=0.05)  # 2 in 2 s, not 6 in 2 s
    assert task.eta() == pytest.approx(4.0, rel=0.05)


def test_line_progress_prints_rate_elapsed_and_eta(capsys):
    lines = LineProgress(sys.stdout, every=0)
    task = lines.start("videos", total=4)
    task.started -= 1.0
    task.advance(1)
    out = capsys.readouterr().out
    assert re.search(r"videos 1/4 \S+/s elapsed 0:00:01 eta 0:00:0[23]", out), out


def test_terminal_bars_show_this_runs_rate_and_an_eta():
    import io

    from rich.console import Console

    from flowkit.cli.progress import RichProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=150)
    with RichProgress(console) as progress:
        assert not progress.plain
        task = progress.start("videos", total=10, completed=4)
        task.started -= 2.0
        task.advance(2)
    out = console.file.getvalue()
    assert re.search(r" (0\.99\d|1(\.00?)?)/s ", out) and "eta 0:00:04" in out  # 2 in 2 s, 4 left
    plain = RichProgress(Console(file=io.StringIO(), force_terminal=False))
    assert plain.plain


# File names and reasons with brackets, as users and tools write them: rich markup ate the first
# ("dog runs .mp4") and raised MarkupError (exit 1) on the second.
BRACKETED = ["dog runs [official video].mp4", "a [/b].mp4", "pip install -e .[cuda12]"]


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log"])
def test_progress_lines_print_brackets_as_they_are(terminal):
    import io

    from rich.console import Console

    from flowkit.cli.progress import RichProgress

    console = Console(file=io.StringIO(), force_terminal=terminal, width=200, no_color=True)
    with RichProgress(console) as progress:
        progress.start("[bold]videos[/b]", total=2).advance(1)
        for text in BRACKETED:
            progress.log(f"failed {text}: cannot decode")
    out = console.file.getvalue()
    for text in BRACKETED:
        assert f"failed {text}: cannot decode" in out, out
    if terminal:
        assert "[bold]videos[/b]" in out, out


@pytest.mark.parametrize("value", ["30s", "-1", "nan", "inf"])
def test_a_bad_progress_interval_is_a_warning_not_a_crash(monkeypatch, value):
    import io

    from rich.console import Console

    from flowkit.cli.progress import PLAIN_EVERY, RichProgress

    monkeypatch.setenv("FLOWKIT_PROGRESS_SECONDS", value)
    console = Console(file=io.StringIO(), force_terminal=False)
    assert RichProgress(console).lines.every == PLAIN_EVERY
    assert f"FLOWKIT_PROGRESS_SECONDS={value!r} is not a number" in console.file.getvalue()
    monkeypatch.setenv("FLOWKIT_PROGRESS_SECONDS", "2.5")
    assert RichProgress(console).lines.every == 2.5


def test_a_second_ctrl_c_stops_at_once():
    """The first Ctrl-C asks the work to stop at its next safe point (and says so); a second
    one, from a user who will not wait for the current chunk, raises Stopped (a
    KeyboardInterrupt) at once instead of being swallowed. The previous handlers come back."""
    import io
    import signal

    from rich.console import Console

    from flowkit.cli.progress import stop_on_signals
    from flowkit.progress import StopFlag, Stopped

    stop, console = StopFlag(), Console(file=io.StringIO(), force_terminal=False)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Stopped):
        with stop_on_signals(stop, console, "the current chunk"):
            signal.raise_signal(signal.SIGINT)
            assert stop.is_set() and stop.reason == "interrupted"  # the first one only asks
            signal.raise_signal(signal.SIGINT)
            pytest.fail("the second Ctrl-C did not stop the work")
    assert "Ctrl-C: stopping after the current chunk" in console.file.getvalue()
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_while_a_command_is_imported_exits_130(monkeypatch):
    """Ctrl-C during the seconds `flowkit extract` spends importing torch (before the command
    runs, so no handler of its own) ends like any other interrupt: "aborted", exit code 130,
    which scripts and Slurm read as interrupted, not as 1 (some videos failed)."""
    from types import SimpleNamespace

    import flowkit.cli

    def interrupted_import(name, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(flowkit.cli, "importlib",
                        SimpleNamespace(import_module=interrupted_import))
    r = run_cli("extract", "videos", "-o", "store")
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr.strip() == "aborted" and "Traceback" not in r.stderr


def test_extract_progress_off_a_terminal_is_plain_lines_that_agree_with_the_summary(
        sample_videos, tmp_path):
    r = flowkit_cli("extract", sample_videos, "-o", tmp_path / "s", "--json", *CHEAP,
                    env={"FLOWKIT_PROGRESS_SECONDS": "0"})
    assert r.returncode == 0, r.stderr
    assert "━" not in r.stderr  # no bar drawn into a pipe
    videos = [line for line in r.stderr.splitlines() if line.startswith("videos ")]
    assert len(videos) >= 4 and "videos 1/4" in videos[0] and "eta" in videos[0]
    pairs = [line for line in r.stderr.splitlines() if line.startswith("frame pairs ")]
    bar_rate = float(re.search(r" ([\d.]+)/s", pairs[-1]).group(1))
    summary_rate = json.loads(r.stdout)["pairs_per_s"]
    assert bar_rate == pytest.approx(summary_rate, rel=0.1), (pairs[-1], summary_rate)


# ------------------------------------------------------------------ 8. make demo

def test_make_demo_says_what_it_does_and_how_long_it_takes():
    r = subprocess.run(["make", "-n", "demo", "VENV=/nonexistent"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert re.search(r"about \d+(\.\d+)? minutes? on a quiet 2-core machine", r.stdout), r.stdout
    plan = r.stdout.split("flowkit")[0]
    assert "videos" in plan and "train" in plan


# ------------------------------------------------------------------ 9. --param of a key with an option

@pytest.mark.parametrize("param, expected", [
    ("compile=false", "--param compile=false: use --no-compile"),
    ("backend=cupy", "--param backend=cupy: use --backend cupy"),
    ("weights=w.pt", "--param weights=w.pt: use --weights w.pt"),
], ids=["compile", "backend", "weights"])
def test_extract_refuses_a_param_that_has_its_own_option(sample_videos, tmp_path, param,
                                                         expected):
    """build_engine sets backend and compile from --backend / --compile (and weights from
    --weights): a --param for one of them was dropped without a word; it is refused naming the
    option, before anything is created."""
    from flowkit.cli import main

    # Cheap and one process, so that the old code's silent run stays short.
    r = CliRunner().invoke(main, ["extract", str(sample_videos), "-o", str(tmp_path / "s"),
                                  *CHEAP[:-1], "--max-frames", "2", "--size", "16", "--workers",
                                  "1", "--param", param])
    assert r.exit_code == 2, (r.exit_code, r.output[-3000:])
    assert r.stderr.strip() == f"error: {expected}", r.stderr[-3000:]
    assert not (tmp_path / "s").exists()


def test_extract_unknown_param_lists_only_engine_parameters(sample_videos, tmp_path):
    from flowkit.cli import main

    r = CliRunner().invoke(main, ["extract", str(sample_videos), "-o", str(tmp_path / "s"),
                                  "--param", "bogus=1", "--no-compile"])
    assert r.exit_code == 2 and "no parameter bogus; accepted: tau, " in r.stderr, r.stderr
    accepted = r.stderr.split("accepted: ")[1].strip().split(", ")
    assert "warps" in accepted and not {"compile", "backend", "weights"} & set(accepted)
    costvolume = CliRunner().invoke(main, ["extract", str(sample_videos), "-o",
                                           str(tmp_path / "s"), "--method", "costvolume",
                                           "--param", "bogus=1"])
    assert costvolume.exit_code == 2 and "accepted: max_displacement" in costvolume.stderr
    assert "weights" not in costvolume.stderr and "backend" not in costvolume.stderr
    assert not (tmp_path / "s").exists()


def test_extract_config_refuses_engine_params_its_options_set():
    from flowkit.errors import FlowkitError
    from flowkit.extract import ExtractConfig, build_engine

    for key, value in (("compile", False), ("backend", "cupy")):
        with pytest.raises(FlowkitError, match=f"ExtractConfig.{key} sets it"):
            build_engine(ExtractConfig(engine_params={key: value}))


@pytest.mark.parametrize("param, expected", [
    ("backend=cupy", "--param backend=cupy: use --backend cupy"),
    ("tvl1:compile=true", "--param tvl1:compile=true: use --compile on"),
], ids=["backend", "method-compile"])
def test_benchmark_refuses_a_param_that_has_its_own_option(tmp_path, param, expected):
    from flowkit.cli import main

    r = CliRunner().invoke(main, ["benchmark", "--methods", "tvl1", "--pairs", "1", "--size",
                                  "32x32", "--repeats", "1", "--json", str(tmp_path / "r.json"),
                                  "--param", param])
    assert r.exit_code == 2, (r.exit_code, r.output[-3000:])
    assert r.stderr.strip() == f"error: {expected}", r.stderr[-3000:]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["benchmark"], ["train-flow", "tvnet", "--out", "w.pt"],
                                     ["train-flow", "motionnet", "x", "--out", "w.pt"]],
                         ids=lambda c: " ".join(c[:2]))
def test_a_negative_seed_is_refused_as_an_option(tmp_path, command):
    """A seed is never negative (numpy refuses one deep inside: a traceback, exit 1)."""
    from flowkit.cli import main

    r = CliRunner().invoke(main, [*command, "--seed", "-1"])
    assert r.exit_code == 2, r.output
    assert "Invalid value for '--seed': -1 is not in the range x>=0" in r.output


def test_flowkits_warnings_are_one_plain_line_others_keep_pythons_format():
    """A lock another host holds, a slow file system: `warning: ...`, not
    `claims.py:88: UserWarning: ...` and a source line."""
    code = ("import warnings; from flowkit.errors import use_plain_warnings; use_plain_warnings(); "
            "import flowkit.store.claims as c; "
            "warnings.warn_explicit('held by pid 7 on node7', UserWarning, c.__file__, 88); "
            "warnings.warn_explicit('theirs', UserWarning, '/elsewhere/x.py', 3)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stderr.splitlines() == ["warning: held by pid 7 on node7",
                                     "/elsewhere/x.py:3: UserWarning: theirs"], r.stderr
