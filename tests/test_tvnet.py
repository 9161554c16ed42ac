"""TVNet: equals fixed-schedule TV-L1 untrained, is differentiable in every relaxation, its flow loss
prefers the true flow, training lowers EPE, checkpoints round-trip through the CLI and the engine."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import flowkit
from flowkit.bench import synthetic_pairs
from flowkit.cli import main
from flowkit.train.tvnet import evaluate, samples_from_pairs, split, train_epoch
from flowkit.errors import EngineError
from flowkit.flow import ops, tvl1
from flowkit.flow.tvnet import TVNet, flow_loss

SIZE = (48, 64)


def _gray_batch(pairs):
    to = lambda key: ops.to_gray(torch.stack([torch.from_numpy(getattr(p, key)).permute(2, 0, 1)
                                              for p in pairs]))
    return to("frame0"), to("frame1")


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs(4, size=SIZE, seed=11, kinds=("smooth", "small", "translation", "affine"))


@pytest.mark.parametrize("swi", [(1, 1, 50), (3, 2, 5)])
def test_untrained_equals_fixed_schedule_tvl1(pairs, swi):
    i0, i1 = _gray_batch(pairs)
    net = TVNet(*swi)
    with torch.no_grad():
        flow = net(i0, i1)
    ref = tvl1.tvl1_flow(i0, i1, tvl1.TVL1Params(nscales=swi[0], warps=swi[1], inner_iterations=swi[2],
                                                  outer_iterations=1, median_filtering=0,
                                                  early_stop=False, scale_step=0.5))
    assert net.config.tvl1_params() == tvl1.TVL1Params(
        nscales=swi[0], warps=swi[1], inner_iterations=swi[2], outer_iterations=1,
        median_filtering=0, early_stop=False, scale_step=0.5)
    assert flow.abs().max() > 0.5  # it found motion, so the comparison means something
    assert (flow - ref).abs().max() < 1e-4


def test_engine_untrained_is_tvl1_and_describes_itself(pairs):
    frames0 = torch.stack([torch.from_numpy(p.frame0).permute(2, 0, 1) for p in pairs[:2]])
    frames1 = torch.stack([torch.from_numpy(p.frame1).permute(2, 0, 1) for p in pairs[:2]])
    engine = flowkit.create_engine("tvnet", scales=2, warps=1, iterations=10)
    ref = flowkit.create_engine("tvl1", nscales=2, warps=1, inner_iterations=10, outer_iterations=1,
                                median_filtering=0, early_stop=False, scale_step=0.5)
    flow = engine(frames0, frames1)
    assert flow.shape == (2, 2, *SIZE) and flow.dtype == torch.float32
    assert (flow - ref(frames0, frames1)).abs().max() < 1e-4
    params = engine.params
    assert params["trained"] is False and params["weights"] is None
    assert (params["scales"], params["warps"], params["iterations"]) == (2, 1, 10)
    import json
    json.dumps(engine.describe())
    assert "tvnet" in flowkit.list_engines()


def test_shapes_batch_independence_and_bad_input(pairs):
    i0, i1 = _gray_batch(pairs)
    net = TVNet(1, 1, 10)
    with torch.no_grad():
        batched = net(i0, i1)
        single = net(i0[1:2], i1[1:2])
        f64 = net(i0.double(), i1.double())
    assert batched.shape == (4, 2, *SIZE)
    assert f64.dtype == torch.float64
    assert (batched[1:2] - single).abs().max() < 1e-5
    assert (batched.double() - f64).abs().max() < 1e-3
    with pytest.raises(EngineError):
        net(i0[:, :, :2, :2], i1[:, :, :2, :2])
    with pytest.raises(EngineError):
        net(i0, i1[:2])
    with pytest.raises(EngineError):
        TVNet(scales=0)


def test_module_refuses_unit_range_frames_as_the_engine_does(pairs):
    """[0, 1] frames give TVNet (lambda tuned for [0, 255]) near-zero flow: the module refuses
    them with the engine's message instead of returning it (a +2 px shift read 0.08 px). uint8
    frames are never guessed at; check=False (the engine, which checked already) skips it."""
    i0, i1 = _gray_batch(pairs[:1])
    net = TVNet(1, 1, 2)
    with pytest.raises(EngineError, match=r"i0 is float with values in \[0, 1\]: .*multiply by "
                                          r"255"):
        net(i0 / i0.max(), i1 / i1.max())
    bad = i1.clone()
    bad[0, 0, 3, 4] = torch.nan
    with pytest.raises(EngineError, match="i1 has 1 NaN"):
        net(i0, bad)
    with torch.no_grad():
        assert net(i0.round().to(torch.uint8), i1.round().to(torch.uint8)).shape == (1, 2, *SIZE)
        assert net(i0 / 255, i1 / 255, check=False).shape == (1, 2, *SIZE)
    with pytest.raises(EngineError, match=r"frames0 is float with values in \[0, 0\.\d+\]: "
                                          r".*multiply by 255"):
        flowkit.create_engine("tvnet", scales=1, warps=1, iterations=2)(i0 / 255, i1 / 255)


@pytest.mark.parametrize("bad", [dict(scales=0), dict(warps=0), dict(iterations=0), dict(tau=-1),
                                 dict(lambda_=0), dict(theta=0), dict(zfactor=0), dict(zfactor=1)])
def test_param_ranges_are_checked_before_any_engine_is_built(bad):
    """The ranges are TVNetConfig's; check_engine_params (the CLI's check before any work) used to
    accept them, so `flowkit benchmark` measured the other methods first and then lost tvnet."""
    key = next(iter(bad))
    with pytest.raises(EngineError, match=f"tvnet: {key} must be"):
        flowkit.flow.check_engine_params("tvnet", bad)
    with pytest.raises(EngineError, match=f"tvnet: {key} must be"):
        flowkit.create_engine("tvnet", **bad)
    flowkit.flow.check_engine_params("tvnet", {"scales": 1, "zfactor": 0.7})  # in range: fine


def test_benchmark_refuses_a_bad_tvnet_param_before_measuring(tmp_path):
    from conftest import run_cli

    r = run_cli("benchmark", "--methods", "tvl1,tvnet", "--param", "tvnet:scales=0", "--pairs",
                "1", "--repeats", "1", "--size", "48x64", "--json", tmp_path / "bench.json")
    assert r.returncode == 2 and "scales must be a positive integer" in r.stderr, r.stderr + r.stdout


def test_gradients_reach_every_parameter():
    # 40x40 with zfactor 0.5 gives a 2-level pyramid (20x20 is the last level >= 16 px).
    torch.manual_seed(0)
    pair = synthetic_pairs(1, size=(40, 40), seed=5, kinds=("smooth",))
    i0, i1 = _gray_batch(pair)
    net = TVNet(scales=2, warps=2, iterations=3)
    flow = net(i0, i1)
    loss = (flow - torch.from_numpy(pair[0].flow)).square().mean() + flow_loss(i0, i1, flow)
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_flow_loss_gradcheck():
    g = torch.Generator().manual_seed(0)
    i0 = torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64) * 255
    i1 = torch.rand(1, 1, 5, 6, generator=g, dtype=torch.float64) * 255
    # Non-integer flow keeps bilinear sampling away from its kinks at integer positions.
    flow = (torch.rand(1, 2, 5, 6, generator=g, dtype=torch.float64) * 1.6 - 0.8 + 0.05)
    flow.requires_grad_(True)
    i0.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, f: flow_loss(a, i1, f, 0.15, 1e-6), (i0, flow))


def test_flow_loss_prefers_true_flow(pairs):
    i0, i1 = _gray_batch(pairs)
    gt = torch.stack([torch.from_numpy(p.flow) for p in pairs])
    true = flow_loss(i0, i1, gt)
    zero = flow_loss(i0, i1, torch.zeros_like(gt))
    assert true.ndim == 0 and float(true) < 0.6 * float(zero)


def test_flow_loss_smoothness_sums_both_flow_components():
    """The smoothness term is ``mean(|grad u1| + |grad u2|)`` (the docstring's formula, in pixels per
    pixel): with I0 == I1 constant the data term is 0, and a flow u = v = x on an 8-wide frame has
    |grad| = 1 per component except in the last column (forward difference 0 there), so the loss is
    (1 + 1) * 7/8; with v = 0 it is 7/8."""
    i0 = torch.full((1, 1, 4, 8), 100.0)
    ramp = torch.arange(8, dtype=torch.float32).expand(4, 8)
    both = torch.stack([ramp, ramp])[None]
    assert float(flow_loss(i0, i0.clone(), both)) == pytest.approx(2 * 7 / 8, abs=1e-5)
    only_u = torch.stack([ramp, torch.zeros_like(ramp)])[None]
    assert float(flow_loss(i0, i0.clone(), only_u)) == pytest.approx(7 / 8, abs=1e-5)


def test_epe_loss_averages_over_valid_pixels_only():
    """With sparse ground truth (KITTI-like: half the pixels valid) the EPE is the mean over the
    valid pixels, so it does not shrink with the share of pixels lacking ground truth: a constant
    (1, 1) error is sqrt(2), not sqrt(2) / 2; no valid pixel gives 0, not NaN."""
    from flowkit.flow.tvnet import epe_loss
    gt = torch.zeros(1, 2, 4, 4)
    flow = torch.ones(1, 2, 4, 4)
    valid = torch.zeros(1, 4, 4, dtype=torch.bool)
    valid[:, :2] = True
    assert float(epe_loss(flow, gt, valid)) == pytest.approx(2 ** 0.5, rel=1e-6)
    assert float(epe_loss(flow, gt)) == pytest.approx(2 ** 0.5, rel=1e-6)
    assert float(epe_loss(flow, gt, torch.zeros_like(valid))) == 0.0


def test_training_steps_reduce_epe():
    # Small motions (|flow| < 2 px), full-batch Adam: 20 steps lower EPE by ~2.5 % (measured 0.2222 -> 0.2166).
    samples = samples_from_pairs(synthetic_pairs(4, size=(32, 40), seed=3, kinds=("small",)))
    idx = list(range(len(samples)))
    net = TVNet(scales=1, warps=1, iterations=10)
    before = evaluate(net, samples, idx, 4)["epe"]
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(20):
        train_epoch(net, optimizer, samples, idx, 4, np.random.default_rng(epoch))
    after = evaluate(net, samples, idx, 4)["epe"]
    assert after < 0.985 * before, (before, after)


def _train(tmp_path, *extra, out="tvnet.pt"):
    ckpt = tmp_path / out
    args = ["train-flow", "tvnet", "--pairs", "5", "--size", "32x40", "--iterations", "5",
            "--batch", "2", "--lr", "0.01", "--val-fraction", "0.2", "--seed", "1",
            "--out", str(ckpt), *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return ckpt


def test_checkpoint_round_trip_and_resume(tmp_path):
    ckpt = _train(tmp_path, "--epochs", "1")
    saved = torch.load(ckpt, weights_only=True)
    assert set(saved) >= {"config", "state_dict", "epoch", "optimizer", "val_epe"}
    assert saved["epoch"] == 1 and saved["val_epe"] is not None

    net = TVNet(**saved["config"])
    net.load_state_dict(saved["state_dict"])
    assert not torch.equal(net.forward_kernels, TVNet(**saved["config"]).forward_kernels)
    pair = synthetic_pairs(1, size=(32, 40), seed=99)[0]
    f0 = torch.from_numpy(pair.frame0).permute(2, 0, 1)[None]
    f1 = torch.from_numpy(pair.frame1).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = net(ops.to_gray(f0), ops.to_gray(f1))
    engine = flowkit.create_engine("tvnet", weights=str(ckpt))
    assert torch.equal(engine(f0, f1), expected)
    params = engine.params
    assert params["trained"] is True and params["weights"] == str(ckpt)
    assert len(params["weights_sha256"]) == 12 and params["iterations"] == 5

    resumed = _train(tmp_path, "--epochs", "2", "--resume")
    again = torch.load(resumed, weights_only=True)
    assert again["epoch"] == 2 and len(again["history"]) == 2
    assert again["history"][0] == saved["history"][0]
    assert flowkit.create_engine("tvnet", weights=str(ckpt)).params["weights_sha256"] != \
        params["weights_sha256"]


def test_mismatched_checkpoint_raises(tmp_path):
    ckpt = _train(tmp_path, "--epochs", "1")
    with pytest.raises(EngineError, match="iterations=5"):
        flowkit.create_engine("tvnet", weights=str(ckpt), iterations=50)
    flowkit.create_engine("tvnet", weights=str(ckpt), iterations=5, scales=1)  # matching is fine
    saved = torch.load(ckpt, weights_only=True)
    saved["config"]["iterations"] = 7      # weights no longer fit the architecture
    torch.save(saved, tmp_path / "broken.pt")
    with pytest.raises(EngineError, match="do not fit"):
        flowkit.create_engine("tvnet", weights=str(tmp_path / "broken.pt"))
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(EngineError, match="not a TVNet checkpoint"):
        flowkit.create_engine("tvnet", weights=str(tmp_path / "foreign.pt"))
    with pytest.raises(EngineError, match="not found"):
        flowkit.create_engine("tvnet", weights=str(tmp_path / "missing.pt"))


def test_store_with_a_12_digit_digest_is_extended_by_the_same_weights(tmp_path):
    """Stores record tvnet's weights by the first 12 hex digits of their SHA-256 (motionnet by all
    64, README says which): a record written that way from another directory still fits a rerun
    with the same weights, which records with the same digits. Recording all 64 would make such
    stores refuse every rerun: the store check compares digests as text."""
    from dataclasses import asdict

    from flowkit import checkpoints
    from flowkit.extract import ExtractConfig, build_engine, store_request
    from flowkit.files import file_sha256
    from flowkit.store import FlowStore
    from flowkit.store.compat import compare_with_store

    net = TVNet(1, 1, 10)
    ckpt = tmp_path / "tv.pt"
    checkpoints.save_checkpoint(ckpt, "tvnet", {"config": asdict(net.config),
                                                "state_dict": net.state_dict()})
    config = ExtractConfig(method="tvnet", engine_params={"weights": str(ckpt)}, rgb=False,
                           flow_codec="float16")
    engine = build_engine(config)
    old = engine.describe()
    old["params"] = dict(old["params"], weights="/elsewhere/tv.pt",
                         weights_sha256=file_sha256(ckpt, 12))
    with FlowStore(tmp_path / "store", mode="a", classes=["a"]) as store:
        with store.writer("a/v0", source="a/v0.mp4", fps=25.0, label=0, label_name="a",
                          source_size=(8, 8), flow_codec="float16") as w:
            w.append_flow("tvnet", np.zeros((1, 2, 8, 8), np.float32), engine=old)
    comparison = compare_with_store(FlowStore(tmp_path / "store"), ["a/v0"],
                                    store_request(config, engine))
    assert comparison.ok, comparison.message()
    assert engine.params["weights_sha256"] == file_sha256(ckpt, 12)


def test_resume_with_other_architecture_fails_cleanly(tmp_path):
    _train(tmp_path, "--epochs", "1")
    result = CliRunner().invoke(main, ["train-flow", "tvnet", "--pairs", "5", "--size", "32x40",
                                       "--iterations", "6", "--epochs", "2", "--resume",
                                       "--out", str(tmp_path / "tvnet.pt")])
    assert result.exit_code == 2 and "--resume" in result.output


def test_resume_takes_the_checkpoints_options_and_refuses_others(tmp_path):
    # Like classifier training: options left out come from the checkpoint, and given ones that
    # differ (another learning rate, batch, split, seed) are refused by name; only --epochs changes.
    straight = _train(tmp_path, "--epochs", "2", out="straight.pt")
    ckpt = _train(tmp_path, "--epochs", "1")
    runner = CliRunner()
    bad = runner.invoke(main, ["train-flow", "tvnet", "--out", str(ckpt), "--resume", "--epochs",
                               "2", "--lr", "0.5", "--batch", "3", "--seed", "7",
                               "--val-fraction", "0.5"])
    assert bad.exit_code == 2
    for wrong in ("--lr=0.01", "--batch=2", "--seed=1", "--val-fraction=0.2"):
        assert wrong in bad.output, bad.output
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    resumed = runner.invoke(main, ["train-flow", "tvnet", "--out", str(ckpt), "--resume",
                                   "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    a, b = torch.load(straight, weights_only=True), torch.load(ckpt, weights_only=True)
    assert b["epoch"] == 2 and b["args"] == a["args"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # Without --resume an existing checkpoint is never overwritten.
    again = runner.invoke(main, ["train-flow", "tvnet", "--out", str(ckpt), "--epochs", "1"])
    assert again.exit_code == 2 and "--resume" in again.output
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2


def test_ground_truth_folder_trains_at_its_own_size(tmp_path):
    import cv2
    from flowkit.bench.flo import write_flo
    for i, pair in enumerate(synthetic_pairs(2, size=(32, 40), seed=0)):
        seq = tmp_path / "gt" / f"seq{i}"
        seq.mkdir(parents=True)
        cv2.imwrite(str(seq / "frame10.png"), pair.frame0[..., ::-1])
        cv2.imwrite(str(seq / "frame11.png"), pair.frame1[..., ::-1])
        write_flo(seq / "flow10.flo", pair.flow)
    args = ["train-flow", "tvnet", "--data", str(tmp_path / "gt"), "--layout", "middlebury",
            "--iterations", "3", "--epochs", "1", "--out", str(tmp_path / "gt.pt")]
    resized = CliRunner().invoke(main, [*args, "--size", "16x20"])   # was silently ignored
    assert resized.exit_code == 2 and "--size" in resized.output
    assert not (tmp_path / "gt.pt").exists()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert torch.load(tmp_path / "gt.pt", weights_only=True)["val_epe"] is not None


def test_split_keeps_the_pairs_of_a_video_on_one_side():
    """Consecutive pairs of a video share frames: validation must not share one with training."""
    videos = ["a.mp4"] * 7 + ["b.mp4"] * 5 + ["c.mp4"] * 6 + ["d.mp4"] * 2
    for seed in range(5):
        train, val = split(len(videos), 0.25, seed, videos)
        assert sorted(train + val) == list(range(20)) and len(val) >= 5
        assert not {videos[i] for i in train} & {videos[i] for i in val}
    # whole videos as close to the share as they allow: a 49-pair video never validates for 13
    videos = ["long.mp4"] * 49 + ["short.mp4"] * 15
    for seed in range(4):
        assert split(64, 0.2, seed, videos)[1] == list(range(49, 64))
    # one video: a block at its end, the bordering pair (it shares a frame) left out
    train, val = split(10, 0.2, 0, ["a.mp4"] * 10)
    assert (train, val) == (list(range(7)), [8, 9])
    for n, fraction in ((3, 0.5), (10, 0.9), (4, 0.9)):
        train, val = split(n, fraction, 0, ["a.mp4"] * n)
        assert train and val and max(train) + 1 < min(val), (n, fraction, train, val)
    # independent pairs (ground truth) are drawn as before
    assert split(10, 0.2, 3) == split(10, 0.2, 3, [None] * 10)
    assert len(split(10, 0.2, 3)[1]) == 2


def test_unsupervised_training_on_video_folder(sample_videos, tmp_path):
    result = CliRunner().invoke(main, [
        "train-flow", "tvnet", "--data", str(sample_videos), "--unsupervised", "--pairs", "6",
        "--iterations", "5", "--epochs", "1", "--batch", "3", "--out", str(tmp_path / "u.pt")])
    assert result.exit_code == 0, result.output
    saved = torch.load(tmp_path / "u.pt", weights_only=True)
    assert saved["val_epe"] is None and saved["val_loss"] is not None


@pytest.mark.parametrize("dense", [True, False])
def test_evaluate_does_not_depend_on_the_batch_size(dense):
    """Validation loss and EPE are means over every validation pixel with ground truth, so
    ``--batch`` changes neither: runs with other batch sizes stay comparable, and a last short
    batch counts no more than its share. With sparse ground truth (the synthetic pairs' valid
    masks differ pair by pair) the loss once weighted each batch by its pairs, not its pixels:
    batch 1 gave 3.91 where batch 5 gave 3.21."""
    samples = samples_from_pairs(synthetic_pairs(5, size=(24, 32), seed=0))
    if dense:
        for sample in samples:
            sample.valid[:] = True
    else:
        assert len({int(s.valid.sum()) for s in samples}) > 1  # masks of different sizes
    net = TVNet(scales=1, warps=1, iterations=3)
    idx = list(range(5))
    whole = evaluate(net, samples, idx, 5)
    for batch in (1, 2):
        got = evaluate(net, samples, idx, batch)
        assert got["loss"] == pytest.approx(whole["loss"], rel=1e-5), (batch, got, whole)
        assert got["epe"] == pytest.approx(whole["epe"], rel=1e-5), (batch, got, whole)
    assert whole["loss"] == pytest.approx(whole["epe"], rel=1e-5)  # supervised: the EPE itself


def test_evaluate_epe_ignores_pixels_without_ground_truth():
    """Sparse ground truth (``valid`` False) carries no flow: whatever the flow files hold there,
    the reported EPE is the mean over the valid pixels only."""
    samples = samples_from_pairs(synthetic_pairs(2, size=(24, 32), seed=1))
    for sample in samples:
        sample.valid[:, :16] = False
    net = TVNet(scales=1, warps=1, iterations=3)
    clean = evaluate(net, samples, [0, 1], 2)["epe"]
    with torch.no_grad():
        flow = net(torch.stack([s.i0 for s in samples]), torch.stack([s.i1 for s in samples]))
    gt = torch.stack([s.flow for s in samples])
    valid = torch.stack([s.valid for s in samples])
    expected = float(torch.linalg.vector_norm(flow - gt, dim=1)[valid].mean())
    assert clean == pytest.approx(expected, rel=1e-5)
    for sample in samples:
        sample.flow[:, ~sample.valid] = 1e6     # garbage where there is no ground truth
    assert evaluate(net, samples, [0, 1], 2)["epe"] == pytest.approx(clean, rel=1e-6)


def test_fit_stops_after_the_epoch_in_which_stop_was_requested(tmp_path):
    """Ctrl-C during epoch 1 (the stop flag already set when it ends) keeps that epoch's checkpoint
    and returns, instead of training the remaining epochs."""
    from flowkit.progress import StopFlag
    from flowkit.train.tvnet import TVNetConfig, TVNetTrainConfig, fit
    samples = samples_from_pairs(synthetic_pairs(4, size=(24, 32), seed=0))
    stop = StopFlag()
    stop.set()
    config = TVNetTrainConfig(TVNetConfig(scales=1, warps=1, iterations=2), epochs=3, batch=2)
    history = fit(config, samples, tmp_path / "t.pt", stop=stop)
    assert [row["epoch"] for row in history] == [1]
    assert torch.load(tmp_path / "t.pt", weights_only=True)["epoch"] == 1


def test_split_of_videos_always_keeps_a_training_side():
    """However high ``--val-fraction`` and however unequal the videos, validation never takes every
    pair: a run with nothing to train on would be useless."""
    for videos in (["a"] + ["b"] * 10, ["a"] * 10 + ["b"], ["a"] * 3 + ["b"] * 3, ["a", "b", "c"]):
        n = len(videos)
        for seed in range(6):
            for fraction in (0.5, 0.9, 0.99):
                train, val = split(n, fraction, seed, videos)
                assert train and val, (videos, seed, fraction, train, val)
                assert sorted(train + val) == list(range(n))
                assert not {videos[i] for i in train} & {videos[i] for i in val}


def test_split_of_independent_pairs_is_seeded():
    """Independent pairs are drawn at random from the seed: the same seed gives the same split (a
    resumed run validates on the same pairs), another seed another one, and validation holds
    ``round(n * fraction)`` pairs."""
    splits = [split(10, 0.3, seed) for seed in range(5)]
    for seed, (train, val) in enumerate(splits):
        assert split(10, 0.3, seed) == (train, val)
        assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert len({tuple(val) for _, val in splits}) > 1
    assert len(split(20, 0.25, 0)[1]) == 5


def test_samples_from_videos_returns_exactly_the_pairs_asked(sample_videos):
    """``--pairs K`` on a video folder gives K pairs when the videos hold more (within one video
    and across videos: the sample videos hold 7 pairs each)."""
    from flowkit.train.tvnet import samples_from_videos
    for k in (4, 9):
        samples = samples_from_videos(sample_videos, (32, 40), k)
        assert len(samples) == k
        assert all(s.flow is None and s.video for s in samples)


def test_unsupervised_fit_trains_on_the_flow_loss_not_the_epe(tmp_path, monkeypatch):
    """``--unsupervised`` on pairs with ground truth trains on TVNet's flow loss L_f; the ground
    truth only reports EPE (it is never the training loss)."""
    from flowkit.train import tvnet as tvtrain
    samples = samples_from_pairs(synthetic_pairs(4, size=(24, 32), seed=0))

    def no_epe_loss(*args, **kwargs):
        raise AssertionError("the EPE loss was used for unsupervised training")
    monkeypatch.setattr(tvtrain, "epe_loss", no_epe_loss)
    config = tvtrain.TVNetTrainConfig(tvtrain.TVNetConfig(scales=1, warps=1, iterations=2),
                                      epochs=1, batch=4, unsupervised=True, val_fraction=0.25)
    history = tvtrain.fit(config, samples, tmp_path / "u.pt")
    row = history[0]
    assert row["train_epe"] is not None and row["val_epe"] is not None
    assert row["train_loss"] != pytest.approx(row["train_epe"])


def test_cli_passes_clip_through(tmp_path):
    """``--clip 0`` (no gradient clipping) reaches training and is recorded in the checkpoint."""
    ckpt = _train(tmp_path, "--epochs", "1", "--clip", "0")
    assert torch.load(ckpt, weights_only=True)["args"]["clip"] == 0.0


def _video_args(data, out, *extra):
    return ["train-flow", "tvnet", "--data", str(data), "--unsupervised", "--pairs", "4",
            "--size", "32x40", "--iterations", "2", "--batch", "2", "--out", str(out), *extra]


def test_resume_finds_the_data_folder_however_it_is_typed(sample_videos, tmp_path, monkeypatch):
    """The checkpoint records a data folder by its absolute path: `vids`, `vids/`, the absolute
    path and a resume from another directory (options left out) all continue it. An older
    checkpoint's relative path matches the folder it names; another folder is still refused."""
    import shutil
    shutil.copytree(sample_videos, tmp_path / "vids")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    first = runner.invoke(main, _video_args("vids", "t.pt", "--epochs", "1"))
    assert first.exit_code == 0, first.output
    assert torch.load("t.pt", weights_only=True)["args"]["data"] == str(tmp_path.resolve() / "vids")
    again = runner.invoke(main, _video_args("vids/", "t.pt", "--epochs", "2", "--resume"))
    assert again.exit_code == 0, again.output
    monkeypatch.chdir(tmp_path / "sub")
    elsewhere = runner.invoke(main, ["train-flow", "tvnet", "--out", "../t.pt", "--resume",
                                     "--epochs", "3"])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert torch.load("../t.pt", weights_only=True)["epoch"] == 3
    other = runner.invoke(main, _video_args(sample_videos, "../t.pt", "--epochs", "4", "--resume"))
    assert other.exit_code == 2 and "--data=" in other.output, other.output
    # As an earlier flowkit wrote it: the folder as typed, relative to where it was trained.
    ckpt = torch.load("../t.pt", weights_only=True)
    ckpt["args"]["data"] = "vids"
    torch.save(ckpt, "../t.pt")
    lost = runner.invoke(main, ["train-flow", "tvnet", "--out", "../t.pt", "--resume",
                                "--epochs", "4"])
    assert lost.exit_code == 2 and "pass --data with the folder's path" in lost.output, lost.output
    typed = runner.invoke(main, _video_args(tmp_path / "vids", "../t.pt", "--epochs", "4",
                                            "--resume"))
    assert typed.exit_code == 0, typed.output
    assert torch.load("../t.pt", weights_only=True)["epoch"] == 4


def test_same_data_compares_folders_not_spellings(tmp_path, monkeypatch):
    from flowkit.train.tvnet import same_data
    (tmp_path / "a" / "vids").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "a" / "vids")
    assert same_data(absolute, "a/vids/") and same_data(absolute, "./a/../a/vids")
    assert same_data("a/vids", absolute) and same_data("vids", absolute)  # older, relative records
    assert not same_data(absolute, "a") and not same_data("synthetic", absolute)
    assert not same_data("b/vids", absolute) and same_data("synthetic", "synthetic")


def test_a_second_stop_says_to_resume(tmp_path, monkeypatch):
    """A second Ctrl-C or SIGTERM stops at once: its line says to add --resume (the same command
    without it refuses to write over the checkpoint of the finished epochs)."""
    from flowkit.progress import Stopped
    from flowkit.train import tvnet as tvtrain

    def stopped_now(*args, **kwargs):
        raise Stopped("terminated")
    monkeypatch.setattr(tvtrain, "fit", stopped_now)
    result = CliRunner().invoke(main, ["train-flow", "tvnet", "--pairs", "2", "--size", "16x16",
                                       "--out", str(tmp_path / "t.pt")])
    assert result.exit_code == 143
    assert "continue with the same command plus --resume" in result.output, result.output


def test_a_stop_during_the_last_epoch_finishes_normally(tmp_path, monkeypatch):
    """A stop asked for while the last epoch runs comes after training finished: exit 0 and the
    --json summary, not "continue with --resume" (which would have nothing to do)."""
    import json
    from flowkit.train import tvnet as tvtrain
    real = tvtrain.fit

    def fit_stopped_in_the_last_epoch(*args, stop=None, **kwargs):
        history = real(*args, stop=stop, **kwargs)
        stop.set("terminated")
        return history
    monkeypatch.setattr(tvtrain, "fit", fit_stopped_in_the_last_epoch)
    result = CliRunner().invoke(main, ["train-flow", "tvnet", "--pairs", "2", "--size", "16x16",
                                       "--iterations", "2", "--epochs", "1", "--json",
                                       "--out", str(tmp_path / "t.pt")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"][-1]["epoch"] == 1
    assert "--resume" not in result.output


def test_an_unreadable_video_is_skipped_with_a_line(sample_videos, tmp_path):
    """One bad video (a 0-byte file) never stops a run: it is skipped, named, and training goes on
    with the others; when no video can be read, the error says so."""
    import shutil
    shutil.copytree(sample_videos, tmp_path / "vids")
    (tmp_path / "vids" / "pan_left" / "aaa_empty.mp4").write_bytes(b"")
    result = CliRunner(env={"COLUMNS": "250"}).invoke(
        main, _video_args(tmp_path / "vids", tmp_path / "t.pt", "--epochs", "1"))
    assert result.exit_code == 0, result.output
    assert "skipping pan_left/aaa_empty.mp4: " in result.output
    assert "4 pairs from 4 of 5 videos" in result.output
    assert torch.load(tmp_path / "t.pt", weights_only=True)["epoch"] == 1
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.mp4").write_bytes(b"")
    none = CliRunner().invoke(main, _video_args(tmp_path / "bad", tmp_path / "b.pt"))
    assert none.exit_code == 2 and "(1 of 1 unreadable" in none.output, none.output


def test_pairs_are_spread_over_the_videos(sample_videos, tmp_path):
    """``--pairs`` is shared evenly by the videos (not taken from the first ones by name); a short
    video's unused share goes to the others; with fewer pairs than videos the seed draws which
    videos give one. The log line says how many videos of how many found were read."""
    import shutil
    from collections import Counter
    from flowkit.train.tvnet import samples_from_videos
    from flowkit.video import write_video
    shutil.copytree(sample_videos, tmp_path / "vids")
    write_video(tmp_path / "vids" / "pan_left" / "a_short.mp4",
                np.random.default_rng(0).integers(0, 255, (3, 64, 80, 3), dtype=np.uint8))
    logs = []
    samples = samples_from_videos(tmp_path / "vids", (32, 40), 15, log=logs.append)
    counts = Counter(s.video.rsplit("/", 1)[-1] for s in samples)
    assert len(samples) == 15 and counts["a_short.mp4"] == 2, counts
    assert sorted(counts.values()) == [2, 3, 3, 3, 4], counts
    assert logs == [f"{tmp_path / 'vids'}: 15 pairs from 5 of 5 videos (--pairs 15, shared "
                    "evenly)"]
    drawn = {seed: {s.video for s in samples_from_videos(sample_videos, (32, 40), 2, seed)}
             for seed in range(4)}
    assert all(len(videos) == 2 for videos in drawn.values())
    assert drawn[1] == {s.video for s in samples_from_videos(sample_videos, (32, 40), 2, 1)}
    assert len({frozenset(videos) for videos in drawn.values()}) > 1, drawn
