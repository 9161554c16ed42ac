"""The toy action dataset: class grammar, files and split lists, determinism, true flow, motion
per class measured on the rendered frames, appearance independent of the class, difficulty
presets, and the `flowkit toy` command."""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from flowkit.cli.toy import command
from flowkit.errors import FlowkitError
from flowkit.labels import read_class_index, read_split_list, scan_videos
from flowkit.toy import (DEFAULT_CLASSES, DIFFICULTIES, SPEED_JITTER, ToySpec, _segment_schedule,
                         load_toy_specs, make_toy_videos, parse_toy_class, render_toy,
                         toy_parameters, toy_specs)
from flowkit.video import load_frames

SMALL = dict(classes=("right", "cw", "left_then_right"), videos_per_class=4, frames=6, size=(16, 24))


def farneback(frames: np.ndarray) -> np.ndarray:
    """Dense flow of consecutive rendered frames, ``(T-1, 2, H, W)`` float32 pixels."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flows = [cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
             for a, b in zip(gray[:-1], gray[1:])]
    return np.stack(flows).transpose(0, 3, 1, 2)


def curl(flow: np.ndarray) -> np.ndarray:
    """Mean curl dv/dx - du/dy per flow of ``(N, 2, H, W)``; positive = clockwise on screen."""
    return (np.gradient(flow[:, 1], axis=2) - np.gradient(flow[:, 0], axis=1)).mean(axis=(1, 2))


# --- class grammar -------------------------------------------------------------------------------

def test_class_grammar():
    assert parse_toy_class("right") == (("right", 1.0),)
    assert parse_toy_class("right_fast") == (("right", 2.0),)
    assert parse_toy_class("cw_slow_then_still") == (("cw", 0.5), ("still", 1.0))
    assert parse_toy_class("left_then_right") == (("left", 1.0), ("right", 1.0))
    for bad in ("sideways", "right_quick", "Right", "right_then", "still_fast", "right then left"):
        with pytest.raises(FlowkitError, match="toy class"):
            parse_toy_class(bad)
    for name in DEFAULT_CLASSES:  # usable as folder names
        assert name.replace("_", "").isalnum() and name.islower()


def test_segment_schedule_is_symmetric():
    assert _segment_schedule(15, 2) == [0] * 7 + [-1] + [1] * 7  # T=16: one pause at the turn
    assert _segment_schedule(14, 2) == [0] * 7 + [1] * 7
    assert _segment_schedule(8, 3) == [0, 0, -1, 1, 1, -1, 2, 2]
    assert _segment_schedule(5, 1) == [0] * 5


def test_speed_bands_do_not_overlap():
    lo, hi = SPEED_JITTER
    assert 0.5 * hi < 1.0 * lo and 1.0 * hi < 2.0 * lo  # slow < normal < fast, with gaps
    specs = toy_specs(classes=("right", "right_fast"), videos_per_class=20, frames=3)
    normal = [s.flow()[0, 0].mean() for s in specs if s.class_name == "right"]
    fast = [s.flow()[0, 0].mean() for s in specs if s.class_name == "right_fast"]
    assert max(normal) < min(fast)


# --- files ---------------------------------------------------------------------------------------

def test_files_class_index_and_split_lists(tmp_path):
    out = tmp_path / "toy"
    paths = make_toy_videos(out, **SMALL, seed=3)
    names = sorted(SMALL["classes"])
    assert len(paths) == 12 and all(p.is_file() for p in paths)
    assert sorted(p.relative_to(out).as_posix() for p in paths) == sorted(
        f"{c}/{c}_{i}.mp4" for c in names for i in range(4))
    assert load_frames(paths[0]).shape == (6, 16, 24, 3)
    # classInd order == the order `flowkit extract` gives the folder tree
    assert read_class_index(out / "classInd.txt") == names
    items, classes = scan_videos(out)
    assert classes == names
    folder_label = {it.key: it.label for it in items}
    train, train_classes = read_split_list(out / "trainlist01.txt", out)
    test, _ = read_split_list(out / "testlist01.txt", out)
    assert train_classes == names
    train_keys, test_keys = {it.key for it in train}, {it.key for it in test}
    assert not train_keys & test_keys and train_keys | test_keys == set(folder_label)
    for c in names:  # stratified: round(0.25 * 4) = 1 held out per class
        assert sum(k.startswith(c + "/") for k in test_keys) == 1
    assert all(it.label == folder_label[it.key] for it in train + test)
    assert all(len(line.split()) == 2 for line in (out / "trainlist01.txt").read_text().splitlines())
    assert all(len(line.split()) == 1 for line in (out / "testlist01.txt").read_text().splitlines())
    manifest = json.loads((out / "toy.json").read_text())
    assert manifest["seed"] == 3 and manifest["difficulty"] == "default"
    assert {k: manifest[k] for k in DIFFICULTIES["default"]} == DIFFICULTIES["default"]
    assert manifest["classes"] == names and manifest["size"] == [16, 24]
    specs = load_toy_specs(out)
    assert set(specs) == set(folder_label)
    assert specs["cw/cw_1"] == toy_specs(**SMALL, seed=3)[4 + 1]


def test_no_split_lists_and_invalid_split(tmp_path):
    make_toy_videos(tmp_path / "a", classes=("up",), videos_per_class=1, frames=3, size=(16, 16),
                    test_fraction=0)
    assert not (tmp_path / "a" / "trainlist01.txt").exists()
    with pytest.raises(FlowkitError, match="at least 2 videos"):
        make_toy_videos(tmp_path / "b", classes=("up",), videos_per_class=1, frames=3, size=(16, 16))
    with pytest.raises(FlowkitError, match="frames"):
        make_toy_videos(tmp_path / "c", classes=("left_then_right",), frames=2, size=(16, 16))


def test_refuses_foreign_folder_and_overwrites_own(tmp_path):
    args = dict(classes=("up", "down"), videos_per_class=2, frames=3, size=(16, 16), test_fraction=0.5)
    make_toy_videos(tmp_path / "toy", **args)
    with pytest.raises(FlowkitError, match="overwrite"):
        make_toy_videos(tmp_path / "toy", **args)
    paths = make_toy_videos(tmp_path / "toy", **{**args, "classes": ("left",)}, overwrite=True)
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == [
        "classInd.txt", "left", "testlist01.txt", "toy.json", "trainlist01.txt"]
    assert len(paths) == 2
    (tmp_path / "other" / "cats").mkdir(parents=True)
    with pytest.raises(FlowkitError, match="not empty"):
        make_toy_videos(tmp_path / "other", **args, overwrite=True)


def _interrupt_after(monkeypatch, videos: int):
    """Make flowkit.toy's video writer raise KeyboardInterrupt (Ctrl-C) once ``videos`` videos are
    written, partway through writing the next one; returns the list of paths it was asked for."""
    import flowkit.toy as toy

    calls, real = [], toy.write_video

    def write(path, frames, fps):
        calls.append(path)
        if len(calls) > videos:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half a video")
            raise KeyboardInterrupt
        return real(path, frames, fps=fps)

    monkeypatch.setattr(toy, "write_video", write)
    return calls


def test_an_interrupted_run_resumes_with_the_same_command(tmp_path, monkeypatch):
    args = dict(classes=("up", "down"), videos_per_class=2, frames=3, size=(16, 16),
                test_fraction=0.5)
    made = make_toy_videos(tmp_path / "whole", **args)
    calls = _interrupt_after(monkeypatch, 1)
    with pytest.raises(KeyboardInterrupt):
        make_toy_videos(tmp_path / "toy", **args)
    assert not (tmp_path / "toy" / "toy.json").exists()
    assert not [p for p in (tmp_path / "toy").rglob("*") if ".partial." in p.name and p.suffix == ".mp4"]
    assert [p.name for p in (tmp_path / "toy").rglob("*.mp4")] == ["up_0.mp4"]
    assert len(calls) == 2
    monkeypatch.undo()
    # The same call again finishes the set, writing only the videos not finished before.
    calls = _interrupt_after(monkeypatch, 99)
    paths = make_toy_videos(tmp_path / "toy", **args)
    assert [p.name for p in calls] == [".up_1.partial.mp4", ".down_0.partial.mp4",
                                       ".down_1.partial.mp4"]
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole").iterdir())
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt", "toy.json"):
        assert (tmp_path / "toy" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    for path in made:
        rel = path.relative_to(tmp_path / "whole")
        assert np.array_equal(load_frames(tmp_path / "toy" / rel), load_frames(path))


def test_an_interrupted_run_is_replaced_with_overwrite(tmp_path, monkeypatch):
    args = dict(classes=("up", "down"), videos_per_class=2, frames=3, size=(16, 16),
                test_fraction=0.5)
    _interrupt_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        make_toy_videos(tmp_path / "toy", **args)
    monkeypatch.undo()
    other = {**args, "classes": ("left",)}
    with pytest.raises(FlowkitError, match="unfinished toy dataset made with other options.*--overwrite"):
        make_toy_videos(tmp_path / "toy", **other)
    make_toy_videos(tmp_path / "toy", **other, overwrite=True)
    assert sorted(p.relative_to(tmp_path / "toy").as_posix() for p in (tmp_path / "toy").rglob("*")) == [
        "classInd.txt", "left", "left/left_0.mp4", "left/left_1.mp4", "testlist01.txt", "toy.json",
        "trainlist01.txt"]


def test_the_remains_of_a_run_without_a_plan_are_replaced_with_overwrite(tmp_path):
    # What an interrupted run of an earlier flowkit left: some of the videos, no toy.json.
    args = dict(classes=("up", "down"), videos_per_class=2, frames=3, size=(16, 16),
                test_fraction=0.5)
    make_toy_videos(tmp_path / "toy", **args)
    for name in ("toy.json", "classInd.txt", "trainlist01.txt", "testlist01.txt"):
        (tmp_path / "toy" / name).unlink()
    (tmp_path / "toy" / "up" / "up_1.mp4").write_bytes(b"half a video")
    with pytest.raises(FlowkitError, match="no toy.json.*--overwrite"):
        make_toy_videos(tmp_path / "toy", **args)
    paths = make_toy_videos(tmp_path / "toy", **args, overwrite=True)
    assert load_frames(paths[-1]).shape == (3, 16, 16, 3)
    assert (tmp_path / "toy" / "toy.json").is_file()
    # Files of another set are not ours to replace.
    (tmp_path / "toy" / "toy.json").unlink()
    with pytest.raises(FlowkitError, match="holds no toy dataset"):
        make_toy_videos(tmp_path / "toy", **{**args, "videos_per_class": 1, "test_fraction": 0},
                        overwrite=True)


@pytest.mark.parametrize("option, value", [("seed", -1), ("fps", -5.0), ("fps", 0.0),
                                           ("fps", float("inf")), ("fps", float("nan"))])
def test_bad_seed_and_fps_are_refused_before_anything_is_written(tmp_path, option, value):
    with pytest.raises(FlowkitError, match=option):
        make_toy_videos(tmp_path / "toy", classes=("up",), videos_per_class=2, frames=3,
                        size=(16, 16), **{option: value})
    assert not (tmp_path / "toy").exists()


# --- determinism ---------------------------------------------------------------------------------

def test_deterministic_by_seed(tmp_path):
    a, b = toy_specs(**SMALL, seed=1), toy_specs(**SMALL, seed=1)
    assert a == b
    assert np.array_equal(render_toy(a[5]), render_toy(b[5]))
    other = toy_specs(**SMALL, seed=2)
    assert not np.array_equal(render_toy(a[5]), render_toy(other[5]))
    # a video does not change when the class set around it changes
    alone = toy_specs(**{**SMALL, "classes": ("cw",)}, seed=1)
    assert alone[1] == a[4 + 1]
    one = make_toy_videos(tmp_path / "x", **SMALL, seed=1)
    two = make_toy_videos(tmp_path / "y", **SMALL, seed=1)
    # the same frames encode to the same bytes, whatever memory the encoder is given
    # (flowkit/video.py, _x264_params: x264's AVX-512 code reads memory it never wrote)
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    for name in ("classInd.txt", "trainlist01.txt", "testlist01.txt", "toy.json"):
        assert (tmp_path / "x" / name).read_text() == (tmp_path / "y" / name).read_text()


# --- motion --------------------------------------------------------------------------------------

def test_true_flow_warps_frames():
    """Frame t+1 sampled at p + flow(p) reproduces frame t: texture and distractors (up to the
    occlusions at object edges, which the mean sees and the median does not)."""
    spec = toy_specs(classes=("cw",), videos_per_class=1, frames=4, size=(48, 48), noise=0,
                     distractors=3, seed=4)[0]
    frames = render_toy(spec).astype(np.float32)
    h, w = spec.size
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)

    def residual(flow):
        warped = cv2.remap(frames[1], xs + flow[0], ys + flow[1], cv2.INTER_CUBIC)
        return np.abs(warped - frames[0])[4:-4, 4:-4]

    full, texture_only = spec.flow(with_distractors=True), spec.flow()
    assert full.shape == (3, 2, 48, 48) and full.dtype == np.float32
    assert np.median(residual(full[0])) < 1.0 < 0.2 * np.median(residual(np.zeros_like(full[0])))
    assert residual(full[0]).mean() < 0.7 * residual(texture_only[0]).mean()  # objects move too


def test_distractor_flow_sits_where_the_objects_are_in_frame_t():
    """flow[t] is frame t -> t+1, so each distractor's velocity covers the pixels that object
    covers in frame t (alpha > 0.5): in a still video the moving pixels are exactly those, not the
    object's frame-t+1 position nor its soft edge (a flow that warps frame t+1 back to frame t)."""
    from flowkit.toy import _Distractors

    spec = toy_specs(classes=("still",), videos_per_class=1, frames=4, size=(32, 32), noise=0,
                     distractors=4, seed=3, motion=3.0)[0]
    flow = spec.flow(with_distractors=True)
    assert not spec.flow().any()
    objects = _Distractors(spec)
    for t in range(spec.frames - 1):
        covered = np.zeros(spec.size, bool)
        for alpha, velocity in objects.masks(t):
            assert np.hypot(*velocity) > 0
            covered |= alpha > 0.5
        assert 0 < covered.sum() < covered.size
        np.testing.assert_array_equal(np.hypot(*flow[t]) > 0, covered)


@pytest.mark.parametrize("name, expect", [
    ("right", (1, 0)), ("left", (-1, 0)), ("up", (0, -1)), ("down", (0, 1)), ("right_fast", (2, 0)),
])
def test_translation_direction_and_speed(name, expect):
    """Default difficulty: Farneback on the rendered frames finds the class motion (median over
    the frame, so distractors do not matter)."""
    for spec in toy_specs(classes=(name,), videos_per_class=2, seed=7):
        measured = np.median(farneback(render_toy(spec)), axis=(0, 2, 3))
        target = np.array(expect) * spec.speed
        assert np.abs(measured - target).max() < 0.15 * spec.speed, (spec, measured)
        assert np.allclose(np.median(spec.flow(), axis=(0, 2, 3)), target, atol=1e-4)


def test_rotation_has_opposite_curl():
    for spec in toy_specs(classes=("cw", "ccw"), videos_per_class=2, seed=7):
        sign = 1 if spec.class_name == "cw" else -1
        omega = spec.speed / (0.5 * min(spec.size))  # radians per frame; curl of rotation = 2 omega
        measured = curl(farneback(render_toy(spec)))
        assert np.all(sign * measured > 0.5 * 2 * omega), (spec.class_name, measured)
        assert np.allclose(curl(spec.flow()), sign * 2 * omega, rtol=0.05)


def test_temporal_order_classes():
    for spec in toy_specs(classes=("left_then_right", "right_then_left"), videos_per_class=2, seed=7):
        u = np.median(farneback(render_toy(spec))[:, 0], axis=(1, 2))  # (15,)
        first, second = u[:7], u[8:]
        sign = -1 if spec.class_name == "left_then_right" else 1
        assert np.all(sign * first > 0.7 * spec.speed) and np.all(-sign * second > 0.7 * spec.speed)
        assert abs(spec.flow()[:, 0].sum(axis=0)).max() < 1e-4  # same motions, no net displacement


# --- appearance ----------------------------------------------------------------------------------

def _frame_features(frame: np.ndarray) -> np.ndarray:
    """Colour histogram (4 bins per channel) + mean, std, log gradient energy and Laplacian /
    gradient energy (sharpness) of the gray frame."""
    hist = [np.histogram(frame[..., c], bins=4, range=(0, 256))[0] / frame[..., c].size
            for c in range(3)]
    gray = frame.astype(np.float64).mean(axis=2)
    grad = (np.diff(gray, axis=0) ** 2).mean() + (np.diff(gray, axis=1) ** 2).mean()
    lap = (cv2.Laplacian(gray, cv2.CV_64F) ** 2).mean()
    return np.concatenate([*hist, [gray.mean(), gray.std(), np.log(grad), lap / grad]])


def _motion_features(frames: np.ndarray) -> np.ndarray:
    flow = farneback(frames)
    half = len(flow) // 2
    return np.array([*np.median(flow[:half], axis=(0, 2, 3)), *np.median(flow[-half:], axis=(0, 2, 3)),
                     curl(flow[:half]).mean(), curl(flow[-half:]).mean()])


def _nearest_centroid_accuracy(x: np.ndarray, y: np.ndarray, train: np.ndarray) -> float:
    mu, sd = x[train].mean(axis=0), x[train].std(axis=0) + 1e-9
    z = (x - mu) / sd
    classes = np.unique(y)
    centroids = np.stack([z[train & (y == c)].mean(axis=0) for c in classes])
    pred = classes[np.argmin(((z[~train, None] - centroids[None]) ** 2).sum(axis=2), axis=1)]
    return float((pred == y[~train]).mean())


def _anova_f(x: np.ndarray) -> np.ndarray:
    """One-way ANOVA F statistic per feature of ``x`` ``(classes, n, features)``."""
    k, n = x.shape[:2]
    between = n * ((x.mean(axis=1) - x.mean(axis=(0, 1))) ** 2).sum(axis=0) / (k - 1)
    within = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=(0, 1)) / (k * (n - 1))
    return between / within


def test_single_frames_do_not_reveal_the_class():
    """End to end over many videos: single-frame appearance statistics have the same mean in every
    class (ANOVA) and a nearest-centroid classifier on them stays near chance; the same classifier
    on measured motion separates the classes (positive control)."""
    n = 24
    specs = toy_specs(videos_per_class=n, size=(32, 32), seed=11)
    rng = np.random.default_rng(0)
    looks, moves, labels = [], [], []
    for spec in specs:
        frames = render_toy(spec)
        looks.append(_frame_features(frames[rng.integers(len(frames))]))
        moves.append(_motion_features(frames))
        labels.append(DEFAULT_CLASSES.index(spec.class_name))
    looks, moves, labels = np.array(looks), np.array(moves), np.array(labels)
    k = len(DEFAULT_CLASSES)
    # F(8, 207) > 4.2 has p < 1e-4: a class-dependent shift of a quarter of the spread between
    # videos in a few classes already exceeds it.
    assert _anova_f(looks.reshape(k, n, -1)).max() < 4.2
    train = np.tile(np.arange(n) < n // 2, k)
    assert _nearest_centroid_accuracy(looks, labels, train) < 1 / k + 0.12
    assert _nearest_centroid_accuracy(moves, labels, train) > 0.8


def test_first_frame_is_the_same_for_every_class():
    """Given a video's appearance draws, frame 0 (texture, orientation, offset, distractors and
    noise) is bit-identical whatever the class: only what follows differs."""
    spec = toy_specs(classes=("right",), videos_per_class=1, frames=8, size=(24, 32), seed=9)[0]
    first = render_toy(spec)
    for name in DEFAULT_CLASSES:
        frames = render_toy(dataclasses.replace(spec, class_name=name))
        assert np.array_equal(frames[0], first[0]), name
        if name != "right":
            assert not np.array_equal(frames[-1], first[-1]), name


def test_appearance_draws_do_not_depend_on_class():
    """toy_specs draws orientation, offset and appearance seed from one distribution for every
    class (two-sample Kolmogorov-Smirnov distance of each class against the pool)."""
    n = 300
    specs = toy_specs(videos_per_class=n, seed=1)
    draws = np.array([[s.angle0, *s.offset0, s.seed, *s.centre] for s in specs]).reshape(
        len(DEFAULT_CLASSES), n, -1)
    pooled = draws.reshape(-1, draws.shape[-1])
    for c in range(len(DEFAULT_CLASSES)):
        for j in range(draws.shape[-1]):
            grid = np.sort(pooled[:, j])
            ecdf_c = np.searchsorted(np.sort(draws[c, :, j]), grid, side="right") / n
            ecdf_all = np.arange(1, len(grid) + 1) / len(grid)
            # 1.95 / sqrt(n_eff): p ~ 0.001 for one comparison
            assert np.abs(ecdf_c - ecdf_all).max() < 1.95 * np.sqrt(1 / n + 1 / len(grid))
    assert len({(s.noise, s.contrast, s.distractors, s.motion) for s in specs}) == 1


def test_frames_are_equally_sharp_for_all_motions():
    """The same appearance moved by different classes: the last frame's high-frequency content
    does not depend on the motion (every frame is resampled at a random angle and phase)."""
    ratios = {name: [] for name in ("still", "right", "right_fast", "cw")}
    for spec in toy_specs(classes=("still",), videos_per_class=12, frames=8, size=(48, 48),
                          difficulty="easy", seed=5):
        for name in ratios:
            last = render_toy(dataclasses.replace(spec, class_name=name))[-1]
            gray = last.astype(np.float64).mean(axis=2)
            grad = (np.diff(gray, axis=0) ** 2).mean() + (np.diff(gray, axis=1) ** 2).mean()
            ratios[name].append((cv2.Laplacian(gray, cv2.CV_64F) ** 2).mean() / grad)
    base = np.array(ratios["still"])
    for name in ("right", "right_fast", "cw"):
        assert abs(np.mean(np.array(ratios[name]) / base - 1)) < 0.05, name


# --- difficulty ----------------------------------------------------------------------------------

def test_difficulty_presets_and_overrides():
    easy, default, hard = (toy_parameters(d) for d in ("easy", "default", "hard"))
    assert easy["noise"] < default["noise"] < hard["noise"]
    assert easy["motion"] > default["motion"] > hard["motion"]
    assert easy["distractors"] < default["distractors"] < hard["distractors"]
    assert easy["contrast"] > default["contrast"] > hard["contrast"]
    assert toy_parameters("hard", noise=0, distractors=1) == {**hard, "noise": 0.0, "distractors": 1}
    for bad in (dict(difficulty="medium"), dict(noise=-1), dict(motion=0), dict(distractors=1.5),
                dict(contrast=2)):
        with pytest.raises(FlowkitError):
            toy_parameters(**{"difficulty": "default", **bad})

    def spec(difficulty, **kw) -> ToySpec:
        return toy_specs(classes=("right",), videos_per_class=1, frames=4, size=(32, 32),
                         difficulty=difficulty, seed=2, **kw)[0]

    s_easy, s_hard = spec("easy"), spec("hard")
    assert s_hard.speed / s_easy.speed == pytest.approx(hard["motion"] / easy["motion"])
    assert (s_easy.noise, s_easy.distractors) == (0.0, 0) and s_hard.distractors == 6
    # the noise is what the parameter says: a frame minus its noise-free twin has that std
    clean = render_toy(dataclasses.replace(s_hard, noise=0.0)).astype(np.float64)
    noisy = render_toy(s_hard).astype(np.float64)
    assert (noisy - clean).std() == pytest.approx(hard["noise"], rel=0.1)
    # distractors move on their own: the true flow with them differs from the texture's alone
    assert np.array_equal(s_easy.flow(True), s_easy.flow())
    assert not np.array_equal(s_hard.flow(True), s_hard.flow())
    # lower contrast, lower texture spread (same appearance seed)
    assert render_toy(dataclasses.replace(s_easy, contrast=0.4)).std() < 0.6 * render_toy(s_easy).std()


# --- command line --------------------------------------------------------------------------------

def test_cli_writes_videos(tmp_path):
    out = tmp_path / "toy"
    result = CliRunner().invoke(command, [str(out), "--classes", "up,ccw", "--videos-per-class", "2",
                                          "--frames", "4", "--size", "16x24", "--difficulty", "hard",
                                          "--distractors", "1", "--seed", "5",
                                          "--test-fraction", "0.5"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 videos" in result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
        "ccw/ccw_0.mp4", "ccw/ccw_1.mp4", "up/up_0.mp4", "up/up_1.mp4"]
    manifest = json.loads((out / "toy.json").read_text())
    assert (manifest["difficulty"], manifest["distractors"], manifest["noise"], manifest["seed"]) == (
        "hard", 1, DIFFICULTIES["hard"]["noise"], 5)
    assert len((out / "testlist01.txt").read_text().splitlines()) == 2

    again = CliRunner().invoke(command, [str(out), "--classes", "up", "--frames", "3"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = CliRunner().invoke(command, [str(tmp_path / "b"), "--classes", "up,sideways"])
    assert bad.exit_code == 2 and "sideways" in bad.output
    size = CliRunner().invoke(command, [str(tmp_path / "c"), "--size", "64"])
    assert size.exit_code == 2 and "HxW" in size.output


@pytest.mark.parametrize("classes, hint", [("left_then_up,down", True), ("up,down,still", False),
                                           ("cw_fast,up", True)])
def test_cli_says_to_train_without_flips_when_a_mirror_swaps_classes(tmp_path, classes, hint):
    """A mirror turns left into right and cw into ccw, so train's default random flips mislabel
    those classes (62.5% against 100% with --no-flip): `flowkit toy` says to pass --no-flip when
    the classes move sideways or turn, and its help names it beside `flowkit extract`."""
    result = CliRunner().invoke(command, [str(tmp_path / "toy"), "--classes", classes,
                                          "--videos-per-class", "1", "--frames", "3", "--size",
                                          "16x16", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    note = ("note: train on it with `flowkit train ... --no-flip`: a mirror turns left into right "
            "and cw into ccw, so random flips would mislabel those classes")
    assert (note in result.output) == hint, result.output
    assert "`flowkit train ... --no-flip`" in " ".join(command.help.split())


@pytest.mark.parametrize("args, option", [(["--seed", "-1"], "--seed"), (["--fps", "-5"], "--fps"),
                                          (["--fps", "0"], "--fps")])
def test_cli_bad_seed_or_fps_is_one_line_exit_2_and_writes_nothing(tmp_path, args, option):
    from flowkit.cli import main

    out = tmp_path / "toy"
    result = CliRunner().invoke(main, ["toy", str(out), "--classes", "up", "--frames", "3",
                                       "--size", "16x16", *args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], result.output
    assert not out.exists()


def test_cli_ctrl_c_then_the_same_command_completes(tmp_path, monkeypatch):
    out = tmp_path / "toy"
    args = [str(out), "--classes", "up,down", "--videos-per-class", "2", "--frames", "3",
            "--size", "16x16", "--test-fraction", "0.5"]
    _interrupt_after(monkeypatch, 1)
    stopped = CliRunner().invoke(command, args)
    assert stopped.exit_code == 130 and "rerun the same command to resume" in stopped.output
    monkeypatch.undo()
    for again in (args, [*args, "--overwrite"]):
        result = CliRunner().invoke(command, again)
        assert result.exit_code == 0, result.output
        assert len(list(out.rglob("*.mp4"))) == 4 and (out / "toy.json").is_file()
