"""MotionNet: shapes at 5 scales, the unsupervised loss, the engine's refusal without weights,
checkpoints through the CLI (train, resume, extract), and that a short CPU run learns real flow."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import flowkit
from flowkit.bench import synthetic_pairs
from flowkit.cli import main
from flowkit.train.motionnet import ClipSource
from flowkit.train.motionnet import MotionNetTrainConfig as TrainConfig
from flowkit.train.motionnet import evaluate_epe, sample_eval_set, save_checkpoint, train
from flowkit.errors import EngineError, FlowkitError, VideoError
from flowkit.flow import ops
from flowkit.flow.motionnet import (PHOTOMETRIC_WEIGHTS, SMOOTHNESS_WEIGHTS, SSIM_WEIGHTS,
                                    MotionNet, downsample, photometric_loss, smoothness_loss,
                                    ssim_loss, unsupervised_loss)
from flowkit.samples import render_sample, sample_specs
from flowkit.store import FlowStore

TINY = 1 / 16


def _clip(b, m, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, m + 1, 3, h, w, generator=g) * 255


def _loss_terms(clip, flows):
    """``[(photometric, ssim, smoothness)]`` per entry of ``flows`` (scales 1/2, 1/4, ...), from the
    per-term functions: frames block-averaged by 2 per scale, frame t+1 warped back onto frame t."""
    b, t, c, h, w = clip.shape
    images = clip.float().reshape(b * t, c, h, w) / 255
    terms = []
    for flow in flows:
        images = downsample(images, 2)
        hs, ws = images.shape[-2:]
        frames = images.reshape(b, t, c, hs, ws)
        target, source = frames[:, :-1].reshape(-1, c, hs, ws), frames[:, 1:].reshape(-1, c, hs, ws)
        pair = flow.reshape(-1, 2, hs, ws)
        terms.append((photometric_loss(target, source, pair),
                      ssim_loss(ops.warp(source, pair), target), smoothness_loss(pair)))
    return terms


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An (untrained) M=2 checkpoint in the format `flowkit train-flow motionnet` writes."""
    torch.manual_seed(0)
    net = MotionNet(num_frames=2, width=TINY)
    path = tmp_path_factory.mktemp("motionnet") / "m2.pt"
    save_checkpoint(path, {"config": {"num_frames": 2, "width": TINY}, "state_dict": net.state_dict(),
                           "epoch": 0, "step": 0, "loss": None})
    return path


@pytest.mark.parametrize("m, size", [(1, (37, 51)), (4, (37, 51)), (2, (64, 96))])
def test_output_shapes_at_five_scales(m, size):
    h, w = size
    net = MotionNet(num_frames=m, width=TINY)
    clip = _clip(2, m, h, w)
    flows = net(clip)
    assert len(flows) == 5
    for k, flow in enumerate(flows):
        f = 2 ** (k + 1)
        assert flow.shape == (2, 2 * m, -(-h // f), -(-w // f))
        assert torch.isfinite(flow).all()
    # Frames stacked along channels are the same input.
    stacked = net(clip.reshape(2, 3 * (m + 1), h, w))
    assert all(torch.equal(a, b) for a, b in zip(flows, stacked))
    assert MotionNet.full_resolution(flows, (h, w)).shape == (2, 2 * m, h, w)


def test_wrong_number_of_frames_is_rejected():
    with pytest.raises(EngineError, match="3 RGB frames"):
        MotionNet(num_frames=2, width=TINY)(_clip(1, 3, 32, 32))


@pytest.mark.parametrize("m", [1, 3])
def test_loss_is_finite_and_reaches_every_parameter(m):
    net = MotionNet(num_frames=m, width=TINY)
    clip = _clip(2, m, 40, 56)
    flows = net(clip)
    total = unsupervised_loss(clip, flows)
    assert total.dim() == 0 and torch.isfinite(total)
    # Every one of the 5 scales counts, each term with the prototxt's weight of its scale.
    with torch.no_grad():
        weights = zip(PHOTOMETRIC_WEIGHTS, SSIM_WEIGHTS, SMOOTHNESS_WEIGHTS)
        expected = sum(wp * p + ws * s + wm * sm
                       for (p, s, sm), (wp, ws, wm) in zip(_loss_terms(clip, flows), weights))
    assert len(flows) == 5 and float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    total.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_photometric_loss_prefers_the_true_flow():
    for pair in synthetic_pairs(2, size=(64, 80), kinds=("translation",)):
        f0 = torch.from_numpy(pair.frame0).permute(2, 0, 1)[None].float() / 255
        f1 = torch.from_numpy(pair.frame1).permute(2, 0, 1)[None].float() / 255
        flow = torch.from_numpy(pair.flow)[None]
        true, zero = photometric_loss(f0, f1, flow), photometric_loss(f0, f1, torch.zeros_like(flow))
        assert true < 0.5 * zero, (pair.name, float(true), float(zero))
        # Sign convention: warping frame t+1 back by the flow gives frame t, not the negated flow.
        assert true < photometric_loss(f0, f1, -flow)
        assert ssim_loss(ops.warp(f1, flow), f0) < ssim_loss(f1, f0)


def test_unsupervised_loss_of_a_known_motion_at_all_scales():
    """The loss of the true flow at every scale is below that of zero flow (and the scale grid of
    the loss matches the network's: flows of the network's sizes are accepted)."""
    spec = sample_specs(classes=("pan_right",), videos_per_class=1, frames=3, size=(64, 96))[0]
    clip = torch.from_numpy(render_sample(spec)).permute(0, 3, 1, 2)[None].float()
    gt = torch.from_numpy(spec.flow())
    true_flows, zero_flows = [], []
    for k in range(5):
        f = 2 ** (k + 1)
        g = downsample(gt[None], f)[0] / f
        true_flows.append(g.repeat(2, 1, 1)[None])
        zero_flows.append(torch.zeros_like(true_flows[-1]))
    assert unsupervised_loss(clip, true_flows) < unsupervised_loss(clip, zero_flows)
    (photometric_true, _, _), (photometric_zero, _, _) = (_loss_terms(clip, true_flows)[0],
                                                          _loss_terms(clip, zero_flows)[0])
    assert photometric_true < 0.5 * photometric_zero
    with pytest.raises(EngineError, match="does not match"):
        unsupervised_loss(clip[:, :2], true_flows)


def test_smoothness_is_minimal_for_constant_flow():
    flow = torch.ones(1, 2, 16, 16) * 3
    floor = 2 * 1e-6 ** 0.3                    # the Charbonnier epsilon, for x and y differences
    assert smoothness_loss(flow) == pytest.approx(floor, rel=1e-4)
    assert smoothness_loss(flow + torch.randn(1, 2, 16, 16)) > 0.5


def test_engine_refuses_to_run_without_weights():
    assert "motionnet" in flowkit.list_engines()
    with pytest.raises(EngineError) as err:
        flowkit.create_engine("motionnet")
    message = str(err.value)
    assert "train-flow motionnet" in message and "--weights" in message


def test_engine_rejects_a_foreign_file_and_mismatched_config(tmp_path, checkpoint):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(EngineError, match="bad.pt"):
        flowkit.create_engine("motionnet", weights=str(bad))
    with pytest.raises(EngineError, match="num_frames"):
        flowkit.create_engine("motionnet", weights=str(checkpoint), num_frames=10)


def test_engine_pairs_and_clips(checkpoint):
    engine = flowkit.create_engine("motionnet", weights=str(checkpoint))
    assert engine.params["num_frames"] == 2 and engine.params["weights"] == str(checkpoint)
    clip = _clip(1, 6, 30, 44)[0].to(torch.uint8)           # T = 7 frames, M = 2
    flows = engine.flow_clip(clip)
    assert flows.shape == (6, 2, 30, 44) and flows.dtype == torch.float32
    # Consecutive pairs (what extraction passes) are run as the same clip.
    assert torch.allclose(engine(clip[:-1], clip[1:]), flows, atol=1e-5)
    # A clip shorter than M+1 (padded by repeating the last frame) and unrelated pairs.
    assert engine.flow_clip(clip[:2]).shape == (1, 2, 30, 44)
    shuffled0, shuffled1 = clip[[0, 3, 5]], clip[[2, 1, 6]]
    pairwise = engine(shuffled0, shuffled1)
    assert pairwise.shape == (3, 2, 30, 44)
    assert torch.allclose(pairwise[1], engine.flow_clip(torch.stack([clip[3], clip[1]]))[0], atol=1e-5)
    # Gray frames are replicated to RGB.
    assert engine(clip[:2, :1], clip[1:3, :1]).shape == (2, 2, 30, 44)


def test_engine_refuses_channels_last_frames_with_the_permute(checkpoint):
    """(T, H, W, 3) frames, as load_frames returns them, said "got 40 channels" (H): the shape
    and the permute that fixes them are named, as the other engines do (ops.channels_error)."""
    engine = flowkit.create_engine("motionnet", weights=str(checkpoint))
    frames = torch.zeros(3, 40, 48, 3, dtype=torch.uint8)
    with pytest.raises(EngineError, match=r"got shape \(2, 40, 48, 3\); they look channels-last "
                                          r".*permute\(0, 3, 1, 2\)"):
        engine(frames[:2], frames[1:])
    with pytest.raises(EngineError, match=r"permute\(0, 3, 1, 2\)"):
        engine.flow_clip(frames)


def test_engine_clip_windows_overlap_at_the_end_and_the_earlier_window_counts(checkpoint):
    """A clip of T frames runs in windows of M+1 frames, the last moved back to end at the last
    frame; a pair two windows cover takes its flow from the earlier one (which saw it in its
    own place, not moved), so the flow of a pair never depends on where the clip ends."""
    engine = flowkit.create_engine("motionnet", weights=str(checkpoint))  # M = 2
    clip = _clip(1, 5, 30, 44)[0].to(torch.uint8)  # T = 6: windows at frames 0, 2 and 3
    flows = engine.flow_clip(clip)
    with torch.no_grad():
        windows = engine._run(torch.stack([clip[0:3], clip[2:5], clip[3:6]]).float())
    expected = torch.stack([windows[0, 0], windows[0, 1], windows[1, 0], windows[1, 1],
                            windows[2, 1]])
    assert torch.allclose(flows, expected, atol=1e-5)
    assert not torch.allclose(windows[1, 1], windows[2, 0], atol=1e-3)  # the overlap differs


def test_engine_records_the_weights_by_absolute_path_and_digest(tmp_path, checkpoint,
                                                                 monkeypatch):
    """The same file named relative or absolute records alike (it used to record the path as
    given); a store record of an older flowkit, with the relative path and the same digest, still
    matches: the digest tells the weights, wherever the file lies now."""
    from flowkit.store import flow_codec, rgb_codec
    from flowkit.store.compat import Request

    monkeypatch.chdir(checkpoint.parent)
    relative = flowkit.create_engine("motionnet", weights=checkpoint.name)
    absolute = flowkit.create_engine("motionnet", weights=str(checkpoint))
    assert relative.describe() == absolute.describe()
    assert relative.params["weights"] == str(checkpoint)
    request = Request(method="motionnet", engine=absolute.describe(), size=None, step=1, rgb=False,
                      rgb_codec=rgb_codec("raw"), flow_codec=flow_codec("float16"),
                      param_names=("weights", "num_frames", "width"))
    old = dict(absolute.params, weights=checkpoint.name)  # as an older flowkit recorded it
    meta = lambda params: {"height": 8, "width": 8, "num_frames": 3, "flows": {"motionnet": {
        "codec_spec": "float16", "engine_version": absolute.version, "params": params}}}
    assert request.differences(meta(old)) == {}
    other = dict(old, weights_sha256="0" * 64)  # other weights under that name
    assert set(request.differences(meta(other))["params"][0]) == {"weights", "weights_sha256"}


def _train_args(video_dir, out, *extra):
    return ["train-flow", "motionnet", str(video_dir), "--out", str(out), "--num-frames", "2",
            "--width", str(TINY), "--size", "64x80", "--steps-per-epoch", "2", "--batch", "2",
            "--lr", "1e-3", *extra]


def test_cli_checkpoint_round_trip_and_extract(sample_videos, tmp_path):
    ckpt = tmp_path / "motionnet.pt"
    runner = CliRunner()
    result = runner.invoke(main, _train_args(sample_videos, ckpt, "--epochs", "1", "--json",
                                             "--eval-samples"))
    assert result.exit_code == 0, result.output
    saved = torch.load(ckpt, weights_only=True)
    assert {"config", "state_dict", "optimizer", "epoch", "step", "loss"} <= set(saved)
    assert saved["epoch"] == 1 and saved["step"] == 2 and np.isfinite(saved["loss"])
    assert saved["history"][0]["epe"] is not None
    engine = flowkit.create_engine("motionnet", weights=str(ckpt))
    frames = _clip(1, 4, 64, 80)[0]
    assert engine(frames[:-1], frames[1:]).shape == (4, 2, 64, 80)
    # Without --resume an existing checkpoint is never overwritten.
    again = runner.invoke(main, _train_args(sample_videos, ckpt, "--epochs", "1"))
    assert again.exit_code == 2 and "--resume" in again.output
    # The checkpoint drives extraction end to end.
    store = tmp_path / "store"
    result = runner.invoke(main, ["extract", str(sample_videos), "-o", str(store), "--method",
                                  "motionnet", "--weights", str(ckpt), "--batch", "4"])
    assert result.exit_code == 0, result.output
    with FlowStore(store) as s:
        key = s.keys()[0]
        flow = s.read_flow(key, "motionnet")
        assert flow.shape == (7, 2, 64, 80) and np.isfinite(flow).all()
        assert s.meta(key)["flows"]["motionnet"]["params"]["num_frames"] == 2
    # A store with RGB frames is a training source too.
    from_store = runner.invoke(main, _train_args(store, tmp_path / "s.pt", "--epochs", "1"))
    assert from_store.exit_code == 0, from_store.output


@pytest.mark.parametrize("option", ["--epochs", "--batch"])
def test_cli_refuses_zero_epochs_or_batch(tmp_path, option):
    """--epochs 0 or --batch 0 is a usage error (exit 2, "must be >= 1") before any video is read
    or a checkpoint written: zero would train nothing, or fail later with a confusing error."""
    args = _train_args(tmp_path, tmp_path / "m.pt", "--epochs", "1")
    args[args.index(option) + 1] = "0"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert f"{option}: must be >= 1, got 0" in result.output, result.output
    assert not (tmp_path / "m.pt").exists()


def test_cli_resume_continues_exactly(sample_videos, tmp_path):
    runner = CliRunner()
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    assert runner.invoke(main, _train_args(sample_videos, straight, "--epochs", "2")).exit_code == 0
    assert runner.invoke(main, _train_args(sample_videos, resumed, "--epochs", "1")).exit_code == 0
    result = runner.invoke(main, _train_args(sample_videos, resumed, "--epochs", "2", "--resume"))
    assert result.exit_code == 0, result.output
    assert "resuming at step 2" in result.output
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert (b["epoch"], b["step"]) == (2, 4) and len(b["history"]) == 2
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    # Resuming with a different network is refused.
    bad = runner.invoke(main, _train_args(sample_videos, resumed, "--epochs", "3", "--resume",
                                          "--width", "0.125"))
    assert bad.exit_code == 2 and "width" in bad.output


def test_resume_is_exact_with_a_broken_video_and_refuses_other_options(tmp_path):
    # A video that fails to load is dropped from the sampler's list; the checkpoint records it, so
    # a resumed run draws the same clips as one run straight through.
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8) for _ in range(3)]

    def broken():
        raise VideoError("broken.mp4: cannot decode")

    def source():
        return ClipSource([(f"v{i}", lambda v=v: v) for i, v in enumerate(videos)]
                          + [("broken", broken)], (32, 32))

    def config(epochs, **kw):
        return TrainConfig(num_frames=2, width=TINY, size=(32, 32), epochs=epochs,
                           steps_per_epoch=3, batch=2, **kw)

    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    train(source(), config(2), straight)
    train(source(), config(1), resumed)
    assert torch.load(resumed, weights_only=True)["dropped"] == ["broken"]
    # Another learning rate or seed is a new run, as in classifier training: refused by name.
    with pytest.raises(FlowkitError, match=r"--lr=0\.0001 \(given 0\.5\), --seed=0 \(given 9\)"):
        train(source(), config(2, lr=0.5, seed=9), resumed, resume=True)
    train(source(), config(2), resumed, resume=True)
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow
def test_short_cpu_run_learns_the_known_flow():
    """Width 1/8, M=1, 64x80, 300 Adam steps of 4 clips on rendered pan videos (about 25 s of
    one core). Measured: EPE 2.27 px -> 1.14 px (zero flow 2.18 px); loss 19.1 (epoch 1) -> 12.9."""
    torch.set_num_threads(1)
    size = (64, 80)
    specs = sample_specs(classes=("pan_left", "pan_right", "pan_up", "pan_down"), videos_per_class=2,
                         frames=16, size=size)
    source = ClipSource.from_arrays([render_sample(s) for s in specs])
    eval_set = sample_eval_set(1, size)      # other photos/speeds than the training videos
    config = TrainConfig(num_frames=1, width=0.125, size=size, epochs=6, steps_per_epoch=50,
                         batch=4, lr=2e-3, seed=0)
    torch.manual_seed(config.seed)
    before = evaluate_epe(MotionNet(num_frames=1, width=0.125), eval_set)
    _, history = train(source, config, eval_set=eval_set)
    after = history[-1]
    print(f"EPE {before['epe']:.3f} -> {after['epe']:.3f} px (zero flow {before['epe_zero']:.3f}); "
          f"loss {history[0]['loss']:.2f} (epoch 1) -> {after['loss']:.2f}")
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    assert after["epe"] <= 0.7 * before["epe"], (before, history)
    assert after["epe"] < 0.75 * before["epe_zero"], (before, history)


def _folder_with_a_broken_video(root):
    """Two short random videos and one file that is not a video, in class folders."""
    from flowkit.video import write_video

    rng = np.random.default_rng(0)
    for name in ("a/v0.mp4", "a/v1.mp4"):
        write_video(root / name, rng.integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    (root / "b").mkdir()
    (root / "b" / "broken.mp4").write_bytes(b"not a video")
    return root


def _tiny_args(source, out, *extra):
    return ["train-flow", "motionnet", str(source), "--out", str(out), "--num-frames", "2",
            "--width", str(TINY), "--size", "32x32", "--steps-per-epoch", "4", "--batch", "2",
            "--lr", "1e-3", *extra]


def test_resume_is_exact_when_the_source_is_spelled_differently(tmp_path, monkeypatch):
    # The checkpoint names a video that failed to load relative to SOURCE, so `vids`, `./vids`
    # and the absolute path all find it again (they named it by the path as typed).
    _folder_with_a_broken_video(tmp_path / "vids")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    straight = runner.invoke(main, _tiny_args(tmp_path / "vids", "straight.pt", "--epochs", "2"))
    assert straight.exit_code == 0, straight.output
    first = runner.invoke(main, _tiny_args("vids", "resumed.pt", "--epochs", "1"))
    assert first.exit_code == 0, first.output
    assert len(torch.load("resumed.pt", weights_only=True)["dropped"]) == 1  # failed in epoch 1
    resumed = runner.invoke(main, _tiny_args(tmp_path / "vids", "resumed.pt", "--epochs", "2",
                                             "--resume"))
    assert resumed.exit_code == 0, resumed.output
    a, b = (torch.load(p, weights_only=True) for p in ("straight.pt", "resumed.pt"))
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert "leaving out 1 videos that failed to load before: b/broken.mp4" in resumed.output
    assert "skipping" not in resumed.output  # not tried again
    assert b["dropped"] == ["b/broken.mp4"]


@pytest.mark.parametrize("typed", ["vids", "./vids", "ABSOLUTE/vids"])
def test_a_checkpoint_that_named_videos_as_typed_still_resumes_exactly(tmp_path, monkeypatch,
                                                                        typed):
    from flowkit.video import write_video

    _folder_with_a_broken_video(tmp_path / "vids")
    # A good video whose name ends the broken one's: the longest ending is the one meant.
    write_video(tmp_path / "vids" / "broken.mp4",
                np.random.default_rng(1).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(num_frames=2, width=TINY, size=(32, 32), epochs=1, steps_per_epoch=4,
                         batch=2)
    straight, resumed = tmp_path / "straight.pt", tmp_path / "resumed.pt"
    train(ClipSource.from_path("vids", (32, 32)), TrainConfig(**{**config.__dict__, "epochs": 2}),
          straight)
    train(ClipSource.from_path("vids", (32, 32)), config, resumed)
    # As an earlier flowkit wrote it: the path as typed, no "naming".
    ckpt = torch.load(resumed, weights_only=True)
    assert ckpt.pop("naming") == "relative" and ckpt["dropped"] == ["b/broken.mp4"]
    ckpt["dropped"] = [f"{typed.replace('ABSOLUTE', str(tmp_path))}/b/broken.mp4"]
    torch.save(ckpt, resumed)
    logs = []

    class Log(flowkit.progress.Progress):
        def log(self, message):
            logs.append(message)

    train(ClipSource.from_path(tmp_path / "vids", (32, 32)),
          TrainConfig(**{**config.__dict__, "epochs": 2}), resumed, resume=True, progress=Log())
    assert any(m.startswith("leaving out 1 videos") and m.endswith(": b/broken.mp4")
               for m in logs), logs
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    assert b["dropped"] == ["b/broken.mp4"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_only_videos_actually_left_out_are_reported():
    source = ClipSource([("a/x.mp4", lambda: None), ("b/y.mp4", lambda: None)], (8, 8))
    assert source.drop(["b/y.mp4", "gone/z.mp4"]) == (["b/y.mp4"], ["gone/z.mp4"])
    assert [name for name, _ in source.loaders] == ["a/x.mp4"] and source.dropped == ["b/y.mp4"]
    # Matching a typed path by its ending picks the longest name that fits.
    source = ClipSource([("x.mp4", lambda: None), ("a/x.mp4", lambda: None)], (8, 8))
    assert source.drop(["/data/vids/a/x.mp4", "store:x.mp4"], legacy=True) == (
        ["a/x.mp4", "x.mp4"], [])


def _stop_during(monkeypatch, when: str):
    """Make the CLI's training see a Ctrl-C: "first" while epoch 1 runs, "last" while the last
    epoch runs (the stop flag is polled after each epoch)."""
    import flowkit.train.motionnet as module

    real = module.train

    def train_with_a_stop(*args, stop=None, **kw):
        if when == "first":
            stop.set("interrupted")
        result = real(*args, stop=stop, **kw)
        if when == "last":
            stop.set("interrupted")
        return result

    monkeypatch.setattr(module, "train", train_with_a_stop)


def test_ctrl_c_during_the_last_epoch_finishes_normally(sample_videos, tmp_path, monkeypatch):
    _stop_during(monkeypatch, "last")
    result = CliRunner().invoke(main, _train_args(sample_videos, tmp_path / "m.pt", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert "done" in result.output and "--resume" not in result.output


def test_ctrl_c_with_an_epoch_left_exits_130_and_says_resume(sample_videos, tmp_path, monkeypatch):
    _stop_during(monkeypatch, "first")
    result = CliRunner().invoke(main, _train_args(sample_videos, tmp_path / "m.pt", "--epochs", "2"))
    assert result.exit_code == 130, result.output
    assert "--resume" in result.output
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 1


def test_a_second_stop_says_to_resume(sample_videos, tmp_path, monkeypatch):
    """A second Ctrl-C or SIGTERM stops at once: its line says to add --resume (the same command
    without it refuses to write over the checkpoint of the finished epochs)."""
    import flowkit.train.motionnet as module
    from flowkit.progress import Stopped

    def stopped_now(*args, **kwargs):
        raise Stopped("terminated")
    monkeypatch.setattr(module, "train", stopped_now)
    result = CliRunner().invoke(main, _train_args(sample_videos, tmp_path / "m.pt", "--epochs", "2"))
    assert result.exit_code == 143
    assert "continue with the same command plus --resume" in result.output, result.output


def test_a_video_of_exactly_num_frames_plus_one_frames_is_usable():
    """A clip of M frames needs M + 1 (``--num-frames 2``: 3); a video that long is enough, with
    its only start frame, rather than being skipped as too short."""
    video = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    clips = ClipSource.from_arrays([video]).sample(np.random.default_rng(0), 2, 3)
    assert tuple(clips.shape) == (2, 3, 3, 16, 16)
    assert torch.equal(clips[0], torch.from_numpy(video).permute(0, 3, 1, 2))


def test_epoch_loss_is_the_mean_of_its_steps_losses(monkeypatch):
    """The loss reported (and checkpointed) per epoch is the mean over that epoch's steps, not the
    last step's or their sum: it is what a user compares epochs and runs by."""
    import flowkit.flow.motionnet as flow_module

    values = iter([1.0, 2.0, 3.0, 6.0])

    def fixed_loss(clips, flows):
        anchor = sum(f.sum() for f in flows) * 0.0  # keeps the graph so backward() works
        return anchor + next(values)
    monkeypatch.setattr(flow_module, "unsupervised_loss", fixed_loss)
    video = np.random.default_rng(0).integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    config = TrainConfig(num_frames=1, width=TINY, size=(16, 16), epochs=1, steps_per_epoch=4,
                         batch=1)
    _, history = train(ClipSource.from_arrays([video]), config)
    assert history[0]["loss"] == pytest.approx(3.0)


def test_cli_passes_the_learning_rate_through(sample_videos, tmp_path):
    """``--lr`` reaches the optimiser's configuration and is recorded in the checkpoint."""
    args = _train_args(sample_videos, tmp_path / "m.pt", "--epochs", "1")
    args[args.index("--lr") + 1] = "0.01"
    args[args.index("--steps-per-epoch") + 1] = "1"
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert torch.load(tmp_path / "m.pt", weights_only=True)["config"]["lr"] == 0.01


def test_cli_prints_bracketed_names_as_they_are(tmp_path):
    """Video and checkpoint names with brackets print as they are: rich markup made "skipping
    b/dog [live].mp4" read "skipping b/dog .mp4", and a "[/b]" raised MarkupError (exit 1)."""
    root = _folder_with_a_broken_video(tmp_path / "vids [HD]")
    (root / "dog [live] [").mkdir()  # the class and file names make "[/b]"
    (root / "b" / "broken.mp4").rename(root / "dog [live] [" / "b].mp4")
    out = tmp_path / "motionnet [a].pt"
    result = CliRunner(env={"COLUMNS": "500"}).invoke(main, _tiny_args(
        root, out, "--epochs", "1", "--steps-per-epoch", "1"))
    assert result.exit_code == 0, result.output
    assert "skipping dog [live] [/b].mp4: " in result.output, result.output
    # the command to paste holds the path shell-quoted (brackets are glob characters)
    assert f"from {root}" in result.output and f"--weights '{out}'`" in result.output
