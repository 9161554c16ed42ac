"""TV-L1: zero flow on identical frames, recovery of known motion on real images, OpenCV parity,
batch independence, registry and bad input."""
import cv2
import numpy as np
import pytest
import torch
from skimage import color, data

import flowkit
from flowkit.bench import end_point_error, synthetic_pairs
from flowkit.errors import EngineError
from flowkit.flow import tvl1

SIZE = (96, 128)


@pytest.fixture(scope="module")
def photo():
    gray = color.rgb2gray(data.astronaut()) * 255
    return cv2.resize(gray.astype(np.float32), SIZE[::-1], interpolation=cv2.INTER_AREA)


def _pair(photo, fu, fv):
    """Frame 1 is the photo; frame 0 samples it at p + flow(p), so flow is the exact ground truth."""
    h, w = photo.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    i0 = cv2.remap(photo, xx + fu, yy + fv, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return as_t(i0), as_t(photo), np.stack([fu, fv]).astype(np.float32)


def _epe(flow, gt, border=8):
    inner = (slice(None), slice(border, -border), slice(border, -border))
    return float(np.sqrt(((flow - gt)[inner] ** 2).sum(0)).mean())


def test_identical_frames_give_zero_flow(photo):
    x = torch.from_numpy(photo)[None, None]
    flow = flowkit.create_engine("tvl1")(x, x)
    assert flow.shape == (1, 2, *SIZE) and flow.dtype == torch.float32
    assert flow.abs().max() == 0


@pytest.mark.parametrize("shift", [(1.5, -0.75), (-3.25, 2.0)])
def test_recovers_translation(photo, shift):
    h, w = photo.shape
    fu, fv = np.full((h, w), shift[0], np.float32), np.full((h, w), shift[1], np.float32)
    i0, i1, gt = _pair(photo, fu, fv)
    flow = flowkit.create_engine("tvl1")(i0, i1)[0].numpy()
    assert _epe(flow, gt) < 0.1
    np.testing.assert_allclose(np.median(flow[:, 8:-8, 8:-8], axis=(1, 2)), shift, atol=0.05)


def test_recovers_smooth_flow(photo):
    h, w = photo.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    fu = 2.0 * np.sin(2 * np.pi * yy / h) + 0.5
    fv = 1.5 * np.cos(2 * np.pi * xx / w)
    i0, i1, gt = _pair(photo, fu, fv)
    assert _epe(flowkit.create_engine("tvl1")(i0, i1)[0].numpy(), gt) < 0.3


def test_epe_within_10_percent_of_opencv_on_ground_truth():
    """Issue 2's parity criterion, on the built-in ground-truth set (real photographs, known flow)."""
    pairs = synthetic_pairs(n=8, size=(96, 128), seed=3)
    gray = lambda im: cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)
    opencv = cv2.optflow.DualTVL1OpticalFlow_create()
    ref = np.stack([opencv.calc(gray(p.frame0), gray(p.frame1), None).transpose(2, 0, 1) for p in pairs])
    batch0 = torch.from_numpy(np.stack([gray(p.frame0) for p in pairs]))[:, None]
    batch1 = torch.from_numpy(np.stack([gray(p.frame1) for p in pairs]))[:, None]
    ours = flowkit.create_engine("tvl1")(batch0, batch1).numpy()
    gt = np.stack([p.flow for p in pairs])
    valid = np.stack([p.valid for p in pairs])
    epe_ours, epe_ref = end_point_error(ours, gt, valid), end_point_error(ref, gt, valid)
    assert epe_ours <= 1.10 * epe_ref, (epe_ours, epe_ref)
    # Same algorithm, same parameters: the flows themselves agree, not just their error.
    assert np.abs(ours - ref).mean() < 0.05


def test_batch_equals_pairs_run_alone(photo):
    """Each pair stops on its own epsilon rule: batching must not change any pair's result."""
    h, w = photo.shape
    pairs = [_pair(photo, np.full((h, w), s, np.float32), np.full((h, w), -s / 2, np.float32))
             for s in (0.0, 0.8, 2.5)]
    i0 = torch.cat([p[0] for p in pairs])
    i1 = torch.cat([p[1] for p in pairs])
    engine = flowkit.create_engine("tvl1")
    batched = engine(i0, i1)
    for k in range(3):
        torch.testing.assert_close(batched[k:k + 1], engine(i0[k:k + 1], i1[k:k + 1]),
                                   atol=1e-4, rtol=0)


def test_early_stop_false_runs_fixed_schedule(photo):
    """With a huge epsilon, early stopping ends each warp after one iteration; without it, the full
    schedule runs and moves further."""
    h, w = photo.shape
    i0, i1, gt = _pair(photo, np.full((h, w), 2.0, np.float32), np.zeros((h, w), np.float32))
    kw = dict(nscales=1, warps=1, inner_iterations=20, outer_iterations=1, median_filtering=0,
              epsilon=1e3)
    one_step = tvl1.TVL1(**kw)(i0, i1)
    full = tvl1.TVL1(early_stop=False, **kw)(i0, i1)
    manual = tvl1.TVL1(**{**kw, "inner_iterations": 1})(i0, i1)
    torch.testing.assert_close(one_step, manual)
    assert not torch.allclose(one_step, full)


def test_rgb_input_uses_luma(photo):
    rgb = torch.from_numpy(np.repeat(photo[None], 3, 0))[None]
    engine = flowkit.create_engine("tvl1", nscales=2, warps=1)
    torch.testing.assert_close(engine(rgb, rgb.roll(1, -1)),
                               engine(rgb[:, :1], rgb[:, :1].roll(1, -1)), atol=1e-3, rtol=0)


def test_registry_and_params():
    assert "tvl1" in flowkit.list_engines()
    engine = flowkit.create_engine("tvl1", warps=3)
    assert engine.params["warps"] == 3 and engine.params["tau"] == 0.25
    assert engine.params["inner_iterations"] == 30 and engine.params["outer_iterations"] == 10
    assert engine.params["scale_step"] == 0.8 and engine.params["median_filtering"] == 5
    assert engine.describe() == {"engine": "tvl1", "version": engine.version, "params": engine.params,
                                 "backend": "torch"}
    with pytest.raises(EngineError, match="unknown engine 'nope'"):
        flowkit.create_engine("nope")
    with pytest.raises(EngineError, match="no parameter warpz.*accepted"):
        flowkit.create_engine("tvl1", warpz=3)
    with pytest.raises(EngineError, match="scale_step"):
        flowkit.create_engine("tvl1", scale_step=1.5)


@pytest.mark.parametrize("name, value", [("theta", float("inf")), ("epsilon", float("nan"))])
def test_float_params_must_be_finite(name, value):
    """A NaN or infinite float parameter (a typo'd config, a failed computation) is refused when
    the engine is made, instead of running and silently writing NaN or meaningless flow."""
    with pytest.raises(EngineError, match=f"{name} must be a number"):
        flowkit.create_engine("tvl1", **{name: value})


@pytest.mark.parametrize("size", [-5, -1, 2])
def test_median_size_must_be_odd_or_none(size):
    """A negative size used to be accepted, run as no median and recorded as given."""
    for check in (lambda: flowkit.create_engine("tvl1", median_filtering=size),
                  lambda: flowkit.flow.check_engine_params("tvl1", {"median_filtering": size})):
        with pytest.raises(EngineError, match=f"median_filtering must be an odd size.*got {size}"):
            check()
    for none in (0, 1):
        assert flowkit.create_engine("tvl1", median_filtering=none).params["median_filtering"] == none


def test_bad_input():
    engine = flowkit.create_engine("tvl1")
    with pytest.raises(EngineError, match="differ in shape"):
        engine(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(EngineError, match="shape"):
        engine(torch.zeros(8, 8), torch.zeros(8, 8))
    with pytest.raises(EngineError, match="3x3"):
        engine(torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8))


@pytest.mark.slow
def test_compiled_iteration_matches_eager():
    """torch.compile reorders float arithmetic, which can move a pair's epsilon stop by an
    iteration; the flows must still agree on average and in accuracy."""
    pairs = synthetic_pairs(n=4, size=(96, 128), seed=1)
    gray = lambda im: torch.from_numpy(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY))[None]
    b0, b1 = torch.stack([gray(p.frame0) for p in pairs]), torch.stack([gray(p.frame1) for p in pairs])
    eager = flowkit.create_engine("tvl1")(b0, b1)
    compiled = flowkit.create_engine("tvl1", compile=True)(b0, b1)
    assert (eager - compiled).abs().mean() < 0.01
    gt, valid = np.stack([p.flow for p in pairs]), np.stack([p.valid for p in pairs])
    assert end_point_error(compiled.numpy(), gt, valid) <= 1.02 * end_point_error(eager.numpy(), gt, valid)


@pytest.mark.slow
def test_compiled_engine_runs_a_lone_pair_compiled(monkeypatch):
    """The last pair iterating in a warp (a batch shrunk to one, or a batch of one) runs the
    compiled iteration, never the eager one: at OpenCV's defaults that tail is most of the work."""
    from flowkit.flow import primal_dual

    primal_dual.get_iteration(True)  # the compiled iteration, made from the real function
    eager, real = [], primal_dual.iteration
    monkeypatch.setattr(primal_dual, "iteration",
                        lambda *a, **k: eager.append(a[0].shape[0]) or real(*a, **k))
    pairs = synthetic_pairs(n=2, size=(48, 64), seed=2)
    gray = lambda im: torch.from_numpy(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY))[None]
    b0, b1 = torch.stack([gray(p.frame0) for p in pairs]), torch.stack([gray(p.frame1) for p in pairs])
    engine = flowkit.create_engine("tvl1", compile=True, nscales=2, warps=2)
    engine(b0[:1], b1[:1])
    engine(b0, b1)
    assert eager == []


def test_a_failed_compile_is_tried_once_then_eager(monkeypatch):
    """Where torch.compile cannot compile (no C++ compiler), an engine made with compile=True
    warns once and iterates eagerly: it must not retrace (seconds) at every iteration."""
    from flowkit.flow import primal_dual

    attempts = []

    def failing_compile(fn, **kwargs):
        def compiled(*args, **kw):
            attempts.append(1)
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setattr(primal_dual, "_compiled_iteration", None)
    monkeypatch.setattr(torch, "compile", failing_compile)
    pairs = synthetic_pairs(n=1, size=(24, 32), seed=2)
    gray = lambda im: torch.from_numpy(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY))[None]
    i0, i1 = gray(pairs[0].frame0)[None], gray(pairs[0].frame1)[None]
    schedule = dict(nscales=1, warps=2, outer_iterations=2, inner_iterations=5, early_stop=False)
    with pytest.warns(RuntimeWarning, match="torch.compile failed") as warned:
        flow = flowkit.create_engine("tvl1", compile=True, **schedule)(i0, i1)
    eager = flowkit.create_engine("tvl1", **schedule)(i0, i1)
    assert len(attempts) == 1 and len(warned) == 1
    assert torch.equal(flow, eager)


@pytest.mark.gpu
def test_cuda_matches_cpu(photo):
    h, w = photo.shape
    i0, i1, _ = _pair(photo, np.full((h, w), 1.25, np.float32), np.full((h, w), 0.5, np.float32))
    cpu = flowkit.create_engine("tvl1")(i0, i1)
    gpu = flowkit.create_engine("tvl1", device="cuda")(i0, i1).cpu()
    assert (cpu - gpu).abs().mean() < 1e-2
