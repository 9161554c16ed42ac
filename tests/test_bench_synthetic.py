"""Ground-truth sets: synthetic pairs (determinism, kinds, warp consistency), the real stereo pair
(sign of the flow), and the Middlebury / Sintel folder readers on tiny fake folders."""
import cv2
import numpy as np
import pytest
import torch

from flowkit.bench import (KINDS, BenchError, FlowPair, load_flow_folder, stereo_pairs,
                           synthetic_pairs, write_flo)
from flowkit.flow.ops import warp


@pytest.fixture(scope="module")
def pairs():
    return synthetic_pairs(16, seed=0)


def warp_errors(pair: FlowPair, sign: float = 1.0) -> tuple[float, float]:
    """Mean |warp(frame1, sign * gt) - frame0| and |frame1 - frame0| on valid, visible pixels."""
    frame1 = torch.from_numpy(pair.frame1).permute(2, 0, 1)[None].float()
    flow = torch.from_numpy(sign * pair.flow)[None]
    warped = warp(frame1, flow, mode="bilinear")[0].permute(1, 2, 0).numpy()
    visible = pair.valid & ~pair.occluded
    frame0 = pair.frame0.astype(np.float32)
    return (float(np.abs(warped - frame0)[visible].mean()),
            float(np.abs(pair.frame1.astype(np.float32) - frame0)[visible].mean()))


def test_shapes_dtypes_names(pairs):
    assert len(pairs) == 16
    assert [p.name.split("-")[0] for p in pairs[:6]] == list(KINDS)
    for p in pairs:
        assert p.frame0.shape == p.frame1.shape == (128, 160, 3)
        assert p.frame0.dtype == p.frame1.dtype == np.uint8
        assert p.flow.shape == (2, 128, 160) and p.flow.dtype == np.float32
        assert p.valid.shape == p.occluded.shape == (128, 160)
        assert p.valid.dtype == p.occluded.dtype == bool
        assert np.isfinite(p.flow).all()
        assert p.valid.mean() > 0.8
        assert (p.valid & p.occluded).sum() < 0.2 * p.valid.sum()


def test_same_seed_identical_other_seed_differs(pairs):
    again = synthetic_pairs(16, seed=0)
    for a, b in zip(pairs, again):
        assert a.name == b.name
        for field in ("frame0", "frame1", "flow", "valid", "occluded"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
    # Pair i does not depend on n.
    assert np.array_equal(synthetic_pairs(3, seed=0)[2].frame0, pairs[2].frame0)
    other = synthetic_pairs(2, seed=1)
    assert not np.array_equal(other[0].flow, pairs[0].flow)


def test_motion_ranges(pairs):
    for p in pairs:
        magnitude = np.hypot(*p.flow)
        kind = p.name.split("-")[0]
        if kind == "small":
            assert magnitude.max() < 2.0
        elif kind == "large":
            assert 5.0 < magnitude.min() and magnitude.max() < 15.0
        elif kind == "translation":
            assert np.ptp(p.flow[0]) == 0 and np.ptp(p.flow[1]) == 0
            assert not float(p.flow[0, 0, 0]).is_integer()     # sub-pixel


def test_masks_follow_the_targets(pairs):
    h, w = 128, 160
    y, x = np.mgrid[0:h, 0:w]
    for p in pairs:
        tx, ty = x + p.flow[0], y + p.flow[1]
        inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
        assert np.array_equal(p.valid, inside)
        assert p.occluded[~inside].all()
    occlusion = [p for p in pairs if p.name.startswith("occlusion")]
    # The foreground covers background pixels inside the frame: real occlusions, not only borders.
    assert all((p.occluded & p.valid).sum() > 50 for p in occlusion)
    # The foreground is a region of one translation (the smooth background never repeats a vector).
    for p in occlusion:
        _, counts = np.unique(p.flow.reshape(2, -1), axis=1, return_counts=True)
        assert counts.max() > 0.02 * p.flow[0].size


def test_warping_frame1_by_gt_reproduces_frame0(pairs):
    # Measured at seed 0: ground truth 0.52-1.92 grey levels per pair (mean 1.33); zero flow
    # 4.1-35 (mean 13), at least 3.3x the ground truth's error on every pair.
    errors = np.array([warp_errors(p) for p in pairs])
    gt_err, zero_err = errors[:, 0], errors[:, 1]
    assert gt_err.mean() < 1.6
    assert gt_err.max() < 2.2
    assert (zero_err > 2.5 * gt_err).all()
    assert zero_err.mean() > 8 * gt_err.mean()


def test_backward_ground_truth_carries_frame0_onto_frame1(pairs):
    h, w = 128, 160
    y, x = np.mgrid[0:h, 0:w]
    for p in pairs:
        assert p.backward.shape == (2, h, w) and p.backward.dtype == np.float32
        sx, sy = x + p.backward[0], y + p.backward[1]
        inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
        assert inside[p.backward_valid].all() and 0.8 < p.backward_valid.mean() < 1.0
        assert p.backward_occluded[~p.backward_valid].all()
        # Warping frame 0 by it reproduces frame 1 where both see the same surface, as well as the
        # forward ground truth does the other way round; zero flow does far worse.
        frame0 = torch.from_numpy(p.frame0).permute(2, 0, 1)[None].float()
        warped = warp(frame0, torch.from_numpy(p.backward)[None], mode="bilinear")[0]
        visible = p.backward_valid & ~p.backward_occluded
        frame1 = p.frame1.astype(np.float32)
        error = np.abs(warped.permute(1, 2, 0).numpy() - frame1)[visible].mean()
        zero = np.abs(p.frame0 - frame1)[visible].mean()
        assert error < 2.2 and zero > 2.5 * error, p.name
        derived = np.hypot(*(p.backward + p.flow))[p.backward_valid]    # |b - (-f)| per pixel
        kind = p.name.split("-")[0]
        if kind == "translation":
            assert np.array_equal(p.backward, -p.flow)
        elif kind == "occlusion":
            # The object uncovers background that frame 0 does not show, and there -f (the
            # object's motion at that pixel of frame 0) is off by the relative motion, > 2 px.
            uncovered = p.backward_occluded & p.backward_valid
            assert uncovered.sum() > 50
            assert np.median(np.hypot(*(p.backward + p.flow))[uncovered]) > 2.0
        else:  # smooth fields: -f(q) is off by about grad(f) b, under a pixel
            assert derived.max() < 1.0
        if kind == "affine":
            # Exact inverse: the forward flow (affine, so bilinear interpolation is exact) at the
            # source q + b(q) carries it back onto q.
            forward_at_source = warp(torch.from_numpy(p.flow)[None].double(),
                                     torch.from_numpy(p.backward)[None].double(), mode="bilinear")[0]
            residual = np.hypot(*(forward_at_source.numpy() + p.backward))[p.backward_valid]
            assert residual.max() < 1e-4 and derived.mean() > 0.01


def test_kinds_noise_and_errors():
    only = synthetic_pairs(2, size=(48, 64), kinds=["occlusion"], seed=3)
    assert [p.name.split("-")[0] for p in only] == ["occlusion", "occlusion"]
    assert only[0].frame0.shape == (48, 64, 3)
    clean = synthetic_pairs(1, size=(48, 64), seed=5)[0]
    noisy = synthetic_pairs(1, size=(48, 64), seed=5, noise=3.0)[0]
    assert np.array_equal(clean.flow, noisy.flow)
    diff = noisy.frame0.astype(float) - clean.frame0
    assert 2.0 < diff.std() < 4.0
    with pytest.raises(BenchError, match="unknown synthetic kinds"):
        synthetic_pairs(1, kinds=["spin"])


def test_small_frames_keep_the_flow_invertible():
    """On small frames the sinusoid fields are scaled so that each component's gradient stays at
    most 0.5: every accepted size generates (at 24x32 pairs 0, 1 and 7 of seed 0 failed to invert
    before, at 16x16 nearly all), and the backward ground truth inverts the forward flow."""
    for size in ((24, 32), (16, 16)):
        pairs = synthetic_pairs(8, size=size, seed=0, kinds=["smooth"])
        for p in pairs:
            assert p.flow.shape == (2, *size) and np.isfinite(p.backward).all()
            # one pixel apart, a component changes by at most its largest gradient
            for axis in (1, 2):
                assert np.abs(np.diff(p.flow, axis=axis)).max() <= 0.5 + 1e-6
            forward_at_source = warp(torch.from_numpy(p.flow)[None].double(),
                                     torch.from_numpy(p.backward)[None].double(),
                                     mode="bilinear")[0]
            residual = np.hypot(*(forward_at_source.numpy() + p.backward))[p.backward_valid]
            assert residual.mean() < 0.05
    # the other kinds (1 px fields, rotations) at the smallest size
    assert len(synthetic_pairs(12, size=(16, 16), seed=1)) == 12


def test_backward_truth_that_cannot_converge_is_a_bench_error(monkeypatch):
    """Without the gradient bound the fixed point diverges: one line naming the pair and what to
    change, a BenchError (the CLI's exit 2), not a bare RuntimeError traceback."""
    from flowkit.bench import synthetic

    monkeypatch.setattr(synthetic, "MAX_GRADIENT", 100.0, raising=False)
    with pytest.raises(BenchError, match=r"synthetic pair 0 \(smooth, seed 0, size 24x32\).*"
                                         r"larger --size or another --seed"):
        synthetic_pairs(1, size=(24, 32), seed=0)


def test_stereo_sign_and_masks():
    pairs = stereo_pairs(scales=(0.5, 0.25))
    assert [p.name for p in pairs] == ["motorcycle-x0.5", "motorcycle-x0.25"]
    assert pairs[0].frame0.shape == (250, 370, 3) and pairs[1].flow.shape == (2, 125, 185)
    for p in pairs:
        assert (p.flow[1] == 0).all() and (p.flow[0][p.valid] < 0).all()
        assert not p.valid.all() and p.occluded[~p.valid].all()
        right_sign, zero = warp_errors(p, 1.0)
        wrong_sign, _ = warp_errors(p, -1.0)
        # Measured: 6.6 / 6.0 grey levels with u = -d; 46.9 / 44.4 with u = +d; 36.9 / 33.6 for zero flow.
        assert right_sign < 10.0
        assert wrong_sign > 4 * right_sign and zero > 3 * right_sign


# ------------------------------------------------------------------------------- folder readers

def write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def fake_pair(rng, h=6, w=8):
    frames = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    flow = rng.normal(size=(2, h, w)).astype(np.float32)
    return frames, flow


def test_middlebury_official_layout(tmp_path):
    rng = np.random.default_rng(0)
    frames, flow = fake_pair(rng)
    flow[:, 1, 2] = 1.7e9                          # unknown flow
    for seq in ("Venus", "Dimetrodon"):
        write_rgb(tmp_path / "other-data" / seq / "frame10.png", frames[0])
        write_rgb(tmp_path / "other-data" / seq / "frame11.png", frames[1])
        (tmp_path / "other-gt-flow" / seq).mkdir(parents=True)
        write_flo(tmp_path / "other-gt-flow" / seq / "flow10.flo", flow)
    write_rgb(tmp_path / "other-data" / "Backyard" / "frame10.png", frames[0])   # no ground truth
    pairs = load_flow_folder(tmp_path)
    assert [p.name for p in pairs] == ["Dimetrodon", "Venus"]
    p = pairs[0]
    assert np.array_equal(p.frame0, frames[0]) and np.array_equal(p.frame1, frames[1])
    assert not p.valid[1, 2] and p.valid.sum() == p.valid.size - 1
    assert p.flow[0, 1, 2] == 0 and np.array_equal(p.flow[:, p.valid], flow[:, p.valid])
    assert not p.occluded.any()
    assert [q.name for q in load_flow_folder(tmp_path, sequences=["Venus"])] == ["Venus"]


def test_middlebury_flat_layout_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    frames, flow = fake_pair(rng)
    seq = tmp_path / "RubberWhale"
    write_rgb(seq / "frame10.png", frames[0])
    write_rgb(seq / "frame11.png", frames[1])
    write_flo(seq / "flow10.flo", flow)
    assert load_flow_folder(tmp_path)[0].name == "RubberWhale"
    assert load_flow_folder(seq)[0].name == "RubberWhale"             # the sequence folder itself
    (seq / "frame11.png").unlink()
    with pytest.raises(BenchError, match=r"frame11\.png: missing frame"):
        load_flow_folder(tmp_path)
    write_rgb(seq / "frame11.png", frames[1][:5])
    with pytest.raises(BenchError, match=r"flow10\.flo: flow .* does not match"):
        load_flow_folder(tmp_path)
    with pytest.raises(BenchError, match="no such folder"):
        load_flow_folder(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError, match="no Middlebury pairs"):
        load_flow_folder(empty)
    with pytest.raises(BenchError, match="unknown layout"):
        load_flow_folder(tmp_path, layout="kitti")


def test_sintel_layout(tmp_path):
    rng = np.random.default_rng(2)
    training = tmp_path / "training"
    frames = rng.integers(0, 256, (3, 6, 8, 3), dtype=np.uint8)
    for i, frame in enumerate(frames, start=1):
        write_rgb(training / "clean" / "alley_1" / f"frame_{i:04d}.png", frame)
    flows = rng.normal(size=(2, 2, 6, 8)).astype(np.float32)
    (training / "flow" / "alley_1").mkdir(parents=True)
    for i, flow in enumerate(flows, start=1):
        write_flo(training / "flow" / "alley_1" / f"frame_{i:04d}.flo", flow)
    occ = np.zeros((6, 8), np.uint8)
    occ[0, :3] = 255
    (training / "occlusions" / "alley_1").mkdir(parents=True)
    assert cv2.imwrite(str(training / "occlusions" / "alley_1" / "frame_0002.png"), occ)

    pairs = load_flow_folder(tmp_path, layout="sintel")
    assert [p.name for p in pairs] == ["alley_1/frame_0001", "alley_1/frame_0002"]
    assert np.array_equal(pairs[1].frame0, frames[1]) and np.array_equal(pairs[1].frame1, frames[2])
    assert np.array_equal(pairs[1].flow, flows[1])
    assert not pairs[0].occluded.any() and pairs[1].occluded.sum() == 3 and pairs[1].occluded[0, 0]
    assert pairs[0].valid.all()
    assert len(load_flow_folder(training, layout="sintel")) == 2          # the training folder itself
    with pytest.raises(BenchError, match=r"no final/ image folder \(found \['clean', 'occlusions'\]\)"):
        load_flow_folder(tmp_path, layout="sintel", sintel_pass="final")


def test_sintel_invalid_mask_marks_pixels_invalid(tmp_path):
    """Sintel's training/invalid/<scene>/frame_%04d.png marks pixels whose ground truth is wrong:
    exactly those pixels are left out of the metrics (not valid), every other pixel stays valid,
    so a method is neither scored on bad truth nor on only the marked pixels."""
    rng = np.random.default_rng(3)
    training = tmp_path / "training"
    frames, flow = fake_pair(rng)
    for i, frame in enumerate(frames, start=1):
        write_rgb(training / "clean" / "cave_2" / f"frame_{i:04d}.png", frame)
    (training / "flow" / "cave_2").mkdir(parents=True)
    write_flo(training / "flow" / "cave_2" / "frame_0001.flo", flow)
    invalid = np.zeros((6, 8), np.uint8)
    invalid[2, 5] = 255
    (training / "invalid" / "cave_2").mkdir(parents=True)
    assert cv2.imwrite(str(training / "invalid" / "cave_2" / "frame_0001.png"), invalid)
    (pair,) = load_flow_folder(tmp_path, layout="sintel")
    assert not pair.valid[2, 5] and pair.valid.sum() == pair.valid.size - 1
    assert pair.flow[0, 2, 5] == 0 and np.array_equal(pair.flow[:, pair.valid], flow[:, pair.valid])
