"""The backend switch and the GPU-shaped control flow, proven without a GPU.

- ``backend="cupy"`` runs the *whole* engines (tvl1, tvnet, costvolume) through their CuPy code path
  with the kernels host-emulated (``tests/cuda_emulation.py``) and matches ``backend="torch"`` on
  real frames: bit for bit where both round alike (``same_rounding``), to a measured tolerance
  against the unmodified torch backend;
- the sync-free epsilon rule (mask on the device, host reads every k iterations) gives the same
  flows as reading it every iteration;
- the CUDA-graph replay (emulated: record without running, replay the recording) equals eager
  launches, and the graphs are captured once per problem size;
- launches beyond CUDA's grid-z limit are split instead of failing;
- the backend is resolved, reported and recorded.
"""
from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch
from skimage import data

import flowkit
import flowkit.cuda as fcuda
from cuda_emulation import assert_tvl1_flows_agree
from flowkit.errors import EngineError
from flowkit.flow import numerics, tvl1

SMALL_TVL1 = dict(nscales=3, warps=2, outer_iterations=3, inner_iterations=10)


@pytest.fixture(scope="module")
def frames():
    """Real frames, RGB uint8 ``(3, 3, 48, 64)`` twice: astronaut, coffee and chelsea, each moved
    by its own smooth flow (one pair moves little, so it stops early; the others do not)."""
    f0, f1 = [], []
    for k, image in enumerate((data.astronaut(), data.coffee(), data.chelsea())):
        rgb = cv2.resize(image, (64, 48), interpolation=cv2.INTER_AREA).astype(np.float32)
        yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
        fu = (0.2, 1.5, -2.0)[k] + 0.6 * np.sin(yy / 7.0)
        fv = (0.1, -0.8, 1.0)[k] + 0.4 * np.cos(xx / 11.0)
        moved = cv2.remap(rgb, xx + fu, yy + fv, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        f0.append(moved)
        f1.append(rgb)
    as_t = lambda xs: torch.from_numpy(np.clip(np.stack(xs), 0, 255).round().astype(np.uint8)
                                       ).permute(0, 3, 1, 2).contiguous()
    return as_t(f0), as_t(f1)


# ------------------------------------------------------------------------------ whole engines

TVL1_CASES = [dict(SMALL_TVL1, early_stop=False),
              dict(SMALL_TVL1, epsilon=0.05),                                  # early stops
              dict(nscales=5, warps=5, outer_iterations=10, inner_iterations=30)]  # OpenCV's defaults
TVL1_IDS = ["fixed", "early-stop", "opencv-defaults"]


@pytest.fixture
def same_rounding(emu, monkeypatch):
    """Torch numerics rounded as the kernels round, to compare control flow bit for bit.

    The torch twins differ from the kernels in the last bit in three places, none of them control
    flow: torch's CPU float32 ``sqrt`` is not always correctly rounded (CUDA's ``sqrtf`` is), and
    CPU ``grid_sample`` (bicubic, in ``linearize``) and ``resize_bilinear`` order and contract their
    arithmetic differently. With a correctly rounded sqrt and the kernels' linearize and resize, the
    rest of the torch path (pyramid, warps, iterations, median, epsilon rule) must equal the cupy
    path exactly.
    """
    from flowkit.cuda import tvl1 as tvl1_cupy

    sqrt = torch.sqrt
    monkeypatch.setattr(torch, "sqrt", lambda x: sqrt(x.double()).to(x.dtype))

    def torch_numerics(**kw):
        return dataclasses.replace(numerics.create("torch", "cpu", **kw),
                                   linearize=tvl1_cupy.linearize,
                                   resize_bilinear=tvl1_cupy.resize_bilinear)
    return torch_numerics


@pytest.mark.parametrize("params", TVL1_CASES, ids=TVL1_IDS)
def test_tvl1_cupy_path_is_the_torch_path_bit_for_bit(emu, same_rounding, frames, params):
    engine = flowkit.create_engine("tvl1", backend="torch", **params)
    engine.numerics = same_rounding()
    want = engine(*frames)
    got = flowkit.create_engine("tvl1", backend="cupy", **params)(*frames)
    assert torch.equal(got, want), float((got - want).abs().max())
    assert {"tvl1_primal", "tvl1_dual", "tvl1_linearize", "resize_bilinear"} <= set(emu.launches)
    if params.get("early_stop", True):
        assert {"tvl1_stop_rule", "median_filter_5"} <= set(emu.launches)


@pytest.mark.parametrize("params", TVL1_CASES, ids=TVL1_IDS)
def test_tvl1_cupy_backend_matches_torch(emu, frames, params):
    """End to end against the unmodified torch backend: ulp-level differences (see
    ``same_rounding``) grow through TV-L1's iterations where the problem is ill-posed, and can move
    a pair's epsilon stop by an iteration. Measured on these frames: max 2e-3 px for the fixed
    schedule; with early stops, the bound of the ``gpu`` test (``assert_tvl1_flows_agree``: short
    schedule max 5e-4 px; OpenCV's defaults mean 0.007 px, 0.09 px 6 px inside the border, a few
    border pixels up to 6.9 px)."""
    torch_engine = flowkit.create_engine("tvl1", backend="torch", **params)
    cupy_engine = flowkit.create_engine("tvl1", backend="cupy", **params)
    assert (torch_engine.backend, cupy_engine.backend) == ("torch", "cupy")
    got, want = cupy_engine(*frames), torch_engine(*frames)
    if not params.get("early_stop", True):
        diff = (got - want).abs()
        assert diff.max() < 1e-2 and diff.mean() < 1e-4, (float(diff.max()), float(diff.mean()))
    else:
        assert_tvl1_flows_agree(got, want)


def test_tvl1_cupy_path_stops_each_pair_on_its_own(emu, frames):
    """A pair that converges early is frozen while the others iterate: the batch's flows equal the
    pairs computed alone."""
    engine = flowkit.create_engine("tvl1", backend="cupy", **SMALL_TVL1, epsilon=0.05)
    together = engine(*frames)
    for k in range(3):
        alone = engine(frames[0][k:k + 1], frames[1][k:k + 1])
        assert (together[k:k + 1] - alone).abs().max() < 1e-4


@pytest.mark.parametrize("trained", [False, True])
def test_tvnet_cupy_backend_matches_torch(emu, same_rounding, frames, trained, tmp_path):
    kw = dict(scales=2, warps=2, iterations=8)
    if trained:  # per-iteration kernels that differ from [-1, 1]: passed to the kernels as arguments
        net = flowkit.flow.tvnet.TVNet(**kw)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in (net.forward_kernels, net.divergence_kernels):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            net.u0.add_(torch.tensor([0.3, -0.2]))
        path = tmp_path / "tvnet.pt"
        torch.save({"format": "flowkit-tvnet", "config": kw, "state_dict": net.state_dict()}, path)
        kw = dict(weights=str(path))
    got = flowkit.create_engine("tvnet", backend="cupy", **kw)(*frames)
    engine = flowkit.create_engine("tvnet", backend="torch", **kw)
    want = engine(*frames)
    assert (got - want).abs().max() < 1e-2 and (got - want).abs().mean() < 1e-4
    engine.net.set_numerics(same_rounding())
    assert torch.equal(engine(*frames), got)


def test_tvnet50_cupy_backend_matches_torch(emu, same_rounding, frames):
    """The paper's TVNet-50: 1 scale, 1 warp, 50 iterations."""
    kw = dict(scales=1, warps=1, iterations=50)
    got = flowkit.create_engine("tvnet", backend="cupy", **kw)(*frames)
    engine = flowkit.create_engine("tvnet", backend="torch", **kw)
    assert (got - engine(*frames)).abs().mean() < 1e-4
    engine.net.set_numerics(same_rounding())
    assert torch.equal(engine(*frames), got)


@pytest.mark.parametrize("kw", [dict(), dict(max_displacement=[2, 3], stride=2, dilation=2, tau=0.05)])
def test_costvolume_cupy_backend_matches_torch(emu, frames, kw):
    want = flowkit.create_engine("costvolume", backend="torch", **kw)(*frames)
    got = flowkit.create_engine("costvolume", backend="cupy", **kw)(*frames)
    # The kernel sums over channels in another order than torch's: cosines to ~1e-7, and the
    # softmax at tau=0.02 amplifies that by 1/tau.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=2e-4)
    assert {"correlation_forward", "soft_argmax_forward"} <= set(emu.launches)


def test_costvolume_cupy_backend_winner_take_all(emu, frames):
    """tau=0: the argmax of cosines that agree to ~1e-7 can flip where two candidates tie."""
    want = flowkit.create_engine("costvolume", backend="torch", tau=0)(*frames)
    got = flowkit.create_engine("costvolume", backend="cupy", tau=0)(*frames)
    flips = (got != want).float().mean()
    assert flips < 1e-3, float(flips)


def test_cupy_tvl1_refuses_a_median_without_kernel(emu):
    with pytest.raises(EngineError, match="median_filtering=7"):
        flowkit.create_engine("tvl1", backend="cupy", median_filtering=7)
    assert numerics.check_median(numerics.create("cupy", "cpu"), 7, "auto").backend == "torch"


# -------------------------------------------------------------- the sync-free epsilon rule (torch)

def _gray(frames):
    return tuple(flowkit.flow.ops.to_gray(f) for f in frames)


@pytest.mark.parametrize("sync_every", [3, 10, 1000])
def test_masked_epsilon_rule_equals_per_iteration_rule(frames, sync_every):
    """OpenCV's rule read every iteration (finished pairs leave at once) vs the device-side mask
    read every k iterations (finished pairs frozen in between): the same flows."""
    prm = tvl1.TVL1Params(**SMALL_TVL1, epsilon=0.05)
    i0, i1 = _gray(frames)
    every = tvl1.tvl1_flow(i0, i1, prm, numerics=numerics.create("torch", "cpu", sync_every=1))
    masked = tvl1.tvl1_flow(i0, i1, prm, numerics=numerics.create("torch", "cpu",
                                                                    sync_every=sync_every))
    assert (every - masked).abs().max() < 1e-5


def test_epsilon_rule_is_opencvs(frames):
    """A pair stops at the first iteration whose update is <= epsilon, that iteration applied:
    count the iterations of one warp by hand."""
    i0, i1 = _gray(frames)
    prm = tvl1.TVL1Params(nscales=1, warps=1, outer_iterations=4, inner_iterations=10, epsilon=0.05,
                          median_filtering=0)
    h, w = i0.shape[-2:]
    eps = prm.epsilon ** 2 * h * w
    zeros = torch.zeros(3, 2, h, w)
    gx, gy = flowkit.flow.ops.centered_gradient(i1.float())
    lin = tvl1.linearize(i0.float(), torch.cat((i1.float(), gx, gy), 1), zeros)
    coeffs = dict(lambda_theta=prm.lambda_ * prm.theta, theta=prm.theta, tau_theta=prm.tau / prm.theta)
    expected, stops = [], []
    for k in range(3):
        u, p = zeros[k:k + 1], torch.zeros(1, 2, 2, h, w)
        for n in range(40):
            u, p, err = tvl1.iteration(u, p, *(t[k:k + 1] for t in lin), **coeffs)
            if err.item() <= eps:
                break
        expected.append(u)
        stops.append(n + 1)
    assert min(stops) < 40 and len(set(stops)) > 1, stops  # the rule fires, at different times
    schedule = tvl1.Schedule(outer=4, inner=10, median=0, scaled_eps=eps, **coeffs)
    for sync_every in (1, 7):
        u, _ = tvl1.warp_iterations(zeros, torch.zeros(3, 2, 2, h, w), lin, schedule,
                                    sync_every=sync_every)
        assert torch.equal(u, torch.cat(expected))


def test_cupy_rule_equals_torch_rule_warp_by_warp(emu, frames):
    """One warp on the emulated device path (mask in the kernels, read once per outer iteration)
    against the torch path read every iteration: u bit-exact or within 1e-4 px."""
    h, w = frames[0].shape[-2:]
    _assert_warp_iterations_agree(frames, tvl1.Schedule(
        outer=4, inner=10, median=5, lambda_theta=0.045, theta=0.3, tau_theta=0.25 / 0.3,
        scaled_eps=0.05 ** 2 * h * w))
    # One sync per outer iteration at most: the graph of an outer iteration holds its 10 iterations.
    assert emu.launches.count("tvl1_stop_rule") <= 40


def test_cupy_per_iteration_kernels_follow_the_outer_iterations(emu, frames):
    """A fixed schedule of several outer iterations with its own finite-difference kernels per
    iteration (a trained TVNet with medians between): outer iteration k runs kernels
    ``k*inner..(k+1)*inner-1`` on the device, as the torch path does, not the first ones again."""
    g = torch.Generator().manual_seed(0)
    kernels = tuple({"forward": torch.tensor((-1.0, 1.0)) + 0.3 * torch.randn(2, generator=g),
                     "divergence": torch.tensor((-1.0, 1.0)) + 0.3 * torch.randn(2, generator=g)}
                    for _ in range(3 * 2))
    _assert_warp_iterations_agree(frames, tvl1.Schedule(
        outer=3, inner=2, median=3, lambda_theta=0.045, theta=0.3, tau_theta=0.25 / 0.3,
        kernels=kernels))


def _assert_warp_iterations_agree(frames, schedule) -> None:
    """The emulated CuPy path's warp iterations equal torch's (1e-4) on ``frames``' three pairs,
    from zero flow."""
    i0, i1 = (g.float() for g in _gray(frames))
    h, w = i0.shape[-2:]
    gx, gy = flowkit.flow.ops.centered_gradient(i1)
    stack = torch.cat((i1, gx, gy), 1)
    u = torch.zeros(3, 2, h, w)
    torch_nx, cupy_nx = numerics.create("torch", "cpu"), numerics.create("cupy", "cpu")
    want = torch_nx.warp_iterations(u, torch.zeros(3, 2, 2, h, w), torch_nx.linearize(i0, stack, u),
                                    schedule)
    got = cupy_nx.warp_iterations(u, torch.zeros(3, 2, 2, h, w), cupy_nx.linearize(i0, stack, u),
                                  schedule)
    for a, b in zip(got, want):
        assert (a - b).abs().max() < 1e-4


# ------------------------------------------------------------------------- CUDA graphs, emulated

def test_graph_replay_equals_eager_launches_and_is_captured_once(emu, frames, monkeypatch):
    params = dict(SMALL_TVL1, epsilon=0.05)
    graphed = flowkit.create_engine("tvl1", backend="cupy", **params)
    first = graphed(*frames)
    captures = emu.captures
    assert captures == len(tvl1_levels(frames, params))  # one graph per pyramid level
    again = graphed(*frames)
    assert emu.captures == captures, "the second batch of the same size recaptured its graphs"
    assert torch.equal(first, again)
    eager = flowkit.create_engine("tvl1", backend="cupy", **params)
    eager.numerics.warp_iterations.use_graphs = False
    assert torch.equal(eager(*frames), first)
    assert emu.captures == captures


def test_warp_solver_keeps_buffers_of_two_batch_sizes(emu, frames):
    """Each batch size holds a whole pyramid of static buffers (48 B/px per pair): the solver keeps
    those of the last two batch sizes (full batches and a video's tail batch replay their graphs)
    and drops the others with their graphs, instead of holding up to 16 sizes whatever their
    bytes."""
    params = dict(nscales=2, warps=1, outer_iterations=1, inner_iterations=2)
    engine = flowkit.create_engine("tvl1", backend="cupy", **params)
    solver = engine.numerics.warp_iterations
    pyramid = sum(h * w for h, w in tvl1_levels(frames, params))
    held = []
    for batch in (3, 2, 3, 2, 1, 3):
        engine(frames[0][:batch], frames[1][:batch])
        held.append(solver.held_bytes())
    need = lambda b: 48 * b * pyramid + 8 * b * len(tvl1_levels(frames, params))  # + error, active
    assert held == [need(3), need(3) + need(2), need(3) + need(2), need(3) + need(2),
                    need(2) + need(1), need(1) + need(3)]
    # The last two batch sizes replay their graphs; one dropped (2, when 3 came back after 1)
    # recaptures on new buffers: its graphs went with its old ones.
    captures = emu.captures
    engine(frames[0][:1], frames[1][:1])
    assert emu.captures == captures
    engine(frames[0][:2], frames[1][:2])
    assert emu.captures == captures + len(tvl1_levels(frames, params))


def tvl1_levels(frames, params):
    return flowkit.flow.ops.pyramid_sizes(*frames[0].shape[-2:], params["nscales"], 0.8)


# ------------------------------------------------------------------------- grid-z limit, emulated

def test_launches_beyond_grid_z_limit_are_split(emu, frames, monkeypatch):
    want_tvl1 = flowkit.create_engine("tvl1", backend="cupy", **SMALL_TVL1)(*frames)
    want_cv = flowkit.create_engine("costvolume", backend="cupy", max_displacement=2)(*frames)
    monkeypatch.setattr(fcuda, "MAX_GRID_Z", 2)  # 3 pairs, 25 candidates per pair: many slices
    got_tvl1 = flowkit.create_engine("tvl1", backend="cupy", **SMALL_TVL1)(*frames)
    got_cv = flowkit.create_engine("costvolume", backend="cupy", max_displacement=2)(*frames)
    assert torch.equal(got_tvl1, want_tvl1) and torch.equal(got_cv, want_cv)


def test_backward_launches_beyond_grid_z_limit_are_split(emu, monkeypatch):
    """Training through the cupy warp and cost volume on a batch beyond the grid-z limit: every
    slice of a split backward launch (warp, correlation, soft-argmax) must write its own planes,
    so the input gradients equal the one-launch gradients (not slice 0's planes over and over)."""
    from flowkit.cuda import costvolume, warp

    g = torch.Generator().manual_seed(7)
    image, flow = torch.randn(3, 2, 5, 7, generator=g), torch.randn(3, 2, 5, 7, generator=g) * 2
    f0, f1 = torch.randn(3, 2, 6, 8, generator=g), torch.randn(3, 2, 6, 8, generator=g)

    def grads():
        im, fl = image.clone().requires_grad_(), flow.clone().requires_grad_()
        warp.warp(im, fl).backward(torch.linspace(-1, 1, im.numel()).view_as(im))
        a, b = f0.clone().requires_grad_(), f1.clone().requires_grad_()
        disp = costvolume.displacement_map(a, b, max_displacement=1, tau=0.2)
        (disp * torch.linspace(-1, 1, disp.numel()).view_as(disp)).sum().backward()
        return im.grad, fl.grad, a.grad, b.grad

    want = grads()
    monkeypatch.setattr(fcuda, "MAX_GRID_Z", 2)  # 3 pairs, 6 (pair, channel) planes: 2 or 3 slices
    launched = len(emu.launches)
    got = grads()
    assert {"warp_bilinear_backward", "correlation_backward", "soft_argmax_backward"} <= set(
        emu.launches[launched:])
    for name, g_got, g_want in zip(("image", "flow", "f0", "f1"), got, want):
        assert torch.equal(g_got, g_want), name


def test_grid_chunks_cover_every_plane():
    chunks = fcuda.grid_chunks(100, 300, 150000)
    assert [c[1] for c in chunks] == [0, 65535, 131070]
    assert sum(c[0][2] for c in chunks) == 150000
    assert all(c[0][:2] == (10, 13) for c in chunks)
    with pytest.raises(EngineError, match="rows"):
        fcuda.grid_chunks(65535 * 8 + 1, 4, 1)


# ---------------------------------------------------------------------- resolution and records

def test_backend_auto_is_torch_without_cuda_and_recorded(frames):
    for name in ("tvl1", "tvnet", "costvolume"):
        engine = flowkit.create_engine(name, backend="auto")
        assert engine.backend == "torch" and engine.describe()["backend"] == "torch"
        assert "backend" not in engine.params


def test_backend_cupy_on_the_cpu_says_it_needs_a_cuda_device():
    with pytest.raises(EngineError, match=r"backend='cupy' runs on CUDA devices only, got "
                                          r"device='cpu': pass --device cuda"):
        flowkit.create_engine("tvl1", backend="cupy")
    with pytest.raises(EngineError, match="backend must be one of"):
        flowkit.create_engine("tvl1", backend="opencl")
