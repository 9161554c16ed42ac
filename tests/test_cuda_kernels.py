"""CuPy backend (flowkit/cuda): every kernel against its torch twin.

Three tiers, so that most of this runs without a GPU:

1. nvcc compiles every ``.cu`` file (as the loader feeds it, ``#line`` prefix included) for sm_90,
   ptxas included, and reports the expected entry points without register spills (needs ``nvcc``).
2. Host emulation (``tests/cuda_emulation.py``): the same ``.cu`` sources compiled as C++ with g++
   and driven through the *Python wrappers* with ``launch`` / ``load_kernel`` swapped for the
   emulator, compared with the torch twins on CPU. This checks the kernels' arithmetic and indexing
   and the wrappers' argument lists (count and C types, parsed from the kernel signatures) without a
   device; not warp shuffles, atomics races, streams or CuPy. Whole engines run this way in
   ``tests/test_numerics.py``.
3. ``@pytest.mark.gpu``: the real kernels through CuPy against the torch twins on CUDA, random and
   real (skimage) inputs, backward passes against torch autograd, TV-L1 flow end to end.

Plus the CuPy-less path: asking for ``backend='cupy'`` without it raises one clear EngineError.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

import flowkit
import flowkit.cuda as fcuda
from cuda_emulation import assert_fixed_schedule_agrees, assert_tvl1_flows_agree
from flowkit.errors import EngineError
from flowkit.flow import costvolume as cv_twin
from flowkit.flow import numerics
from flowkit.flow import ops
from flowkit.flow import tvl1 as tvl1_twin

CUDA_DIR = Path(fcuda.__file__).parent
CU_FILES = sorted(CUDA_DIR.glob("*.cu"))
FAST_MATH_FILES = {"costvolume.cu"}

# Entry points the Python wrappers launch, per source file.
KERNELS = {
    "tvl1.cu": {"tvl1_primal", "tvl1_dual", "tvl1_stop_rule", "tvl1_linearize", "median_filter_3",
                "median_filter_5", "resize_bilinear"},
    "warp.cu": {"warp_bilinear_forward", "warp_bilinear_backward"},
    "costvolume.cu": {"correlation_forward", "correlation_backward", "soft_argmax_forward",
                      "soft_argmax_backward"},
}


# --------------------------------------------------------------------------- 1. nvcc compilation

def test_kernel_table_covers_every_source():
    assert {f.name for f in CU_FILES} == set(KERNELS)


@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_sources_are_self_contained(path):
    """NVRTC (CuPy's compiler) has no host headers: the kernels must not #include anything."""
    assert not re.search(r"^\s*#\s*include", path.read_text(), re.M)


def _nvcc(path: Path, workdir: Path) -> subprocess.CompletedProcess:
    src = workdir / path.name
    src.write_text(fcuda.kernel_source(path.name))
    cmd = ["nvcc", "-std=c++17", "-arch=sm_90", "-cubin", "-Xptxas", "-v",
           "-o", str(src.with_suffix(".cubin")), str(src)]
    if path.name in FAST_MATH_FILES:
        cmd.insert(1, "--use_fast_math")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found on PATH")
def test_every_cu_file_compiles_with_nvcc(tmp_path):
    with ThreadPoolExecutor(max_workers=len(CU_FILES)) as pool:
        results = dict(zip(CU_FILES, pool.map(lambda p: _nvcc(p, tmp_path), CU_FILES)))
    for path, res in results.items():
        assert res.returncode == 0, f"{path.name} does not compile:\n{res.stderr}"
        log = res.stdout + res.stderr
        entries = set(re.findall(r"Compiling entry function '(\w+)'", log))
        assert KERNELS[path.name] <= entries, f"{path.name}: missing {KERNELS[path.name] - entries}"
        spills = [m for m in re.findall(r"(\d+) bytes spill stores", log) if m != "0"]
        assert not spills, f"{path.name} spills registers:\n{log}"


# ------------------------------------------------------------------- without CuPy: a clear error

@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` now raises ImportError


def test_cupy_backend_without_cupy_raises_clear_error(no_cupy):
    from flowkit.cuda import costvolume, tvl1, warp

    assert not fcuda.is_available()
    for call in (lambda: fcuda.require(), lambda: fcuda.resolve_backend("cupy", "cuda"),
                 lambda: fcuda.load_kernel("tvl1_primal", "tvl1.cu"),
                 lambda: warp.warp(torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4)),
                 lambda: tvl1.median_filter(torch.zeros(1, 1, 4, 4)),
                 lambda: costvolume.cost_volume(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), 1)):
        with pytest.raises(EngineError, match=re.escape(fcuda.INSTALL_HINT)):
            call()
    assert fcuda.resolve_backend("auto", "cpu") == "torch"
    assert fcuda.resolve_backend("auto", "cuda") == "torch"
    assert fcuda.resolve_backend("torch", "cuda") == "torch"
    with pytest.raises(EngineError, match="backend must be one of"):
        fcuda.resolve_backend("opencv", "cpu")


@pytest.mark.parametrize("cupy_here", [False, True])
def test_cupy_backend_on_the_cpu_names_the_device_not_an_install(monkeypatch, cupy_here):
    """--backend cupy with the default --device cpu: installing CuPy would not help (and once it
    is installed the same hint came back), so the device is named whether CuPy imports or not."""
    monkeypatch.setattr(fcuda, "_import_cupy", lambda: object() if cupy_here else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(EngineError) as err:
        fcuda.resolve_backend("cupy", "cpu")
    assert str(err.value) == ("backend='cupy' runs on CUDA devices only, got device='cpu': pass "
                              "--device cuda (torch sees no CUDA device on this machine), or "
                              "--backend torch")


def test_resolve_backend_with_cupy_picks_by_device(monkeypatch):
    """With CuPy and a GPU there: ``backend="auto"`` runs the kernels on a CUDA device only (a CPU
    engine stays torch), and an explicit ``"cupy"`` on the CPU is refused, not silently run."""
    monkeypatch.setattr(fcuda, "is_available", lambda: True)
    monkeypatch.setattr(fcuda, "require", lambda: types.SimpleNamespace())
    assert fcuda.resolve_backend("auto", "cpu") == "torch"
    assert fcuda.resolve_backend("auto", "cuda") == "cupy"
    assert fcuda.resolve_backend("auto", "cuda:1") == "cupy"
    assert fcuda.resolve_backend("cupy", "cuda") == "cupy"
    assert fcuda.resolve_backend("torch", "cuda") == "torch"
    with pytest.raises(EngineError, match="CUDA devices only"):
        fcuda.resolve_backend("cupy", "cpu")


def test_load_kernel_loads_the_function_on_its_device_before_returning(monkeypatch):
    """The kernel's function is loaded (cuModuleGetFunction) inside its device's context when
    load_kernel returns, not lazily at its first launch: that launch may be inside a CUDA-graph
    capture (tvl1.WarpSolver), where loading is illegal on older drivers. A fake CuPy whose
    RawKernel loads only when ``.kernel`` is read (as CuPy's does, per device).

    Each source gets its compiler options: ``--use_fast_math`` for the cost volume only (TV-L1's
    hundreds of iterations and warp's autograd-checked gradients need exact division and exp)."""
    from flowkit.cuda import costvolume, tvl1

    current = [0]
    events = []
    options_of = {}

    class Device:
        def __init__(self, index=None):
            self.id = current[0] if index is None else index

        def __enter__(self):
            self.previous, current[0] = current[0], self.id

        def __exit__(self, *exc):
            current[0] = self.previous

    class RawKernel:
        def __init__(self, name):
            self.name = name

        @property
        def kernel(self):
            events.append(("load", self.name, current[0]))
            return object()

    class RawModule:
        def __init__(self, code, options):
            options_of[code.split('"')[1]] = tuple(options)  # kernel_source's `#line 1 "<file>"`

        def compile(self):
            events.append(("compile", current[0]))

        def get_function(self, name):
            return RawKernel(name)

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        RawModule=RawModule, cuda=types.SimpleNamespace(Device=Device)))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    fcuda._module.cache_clear()
    fcuda._function.cache_clear()
    try:
        first = fcuda.load_kernel("tvl1_stop_rule", "tvl1.cu", device_id=1)
        assert fcuda.load_kernel("tvl1_stop_rule", "tvl1.cu", device_id=1) is first  # memoized
        assert events == [("compile", 1), ("load", "tvl1_stop_rule", 1)]
        # As the wrappers load their kernels (a CPU tensor: the current device, 0).
        costvolume._kernel("correlation_forward", torch.zeros(1))
        fcuda.load_kernel("warp_bilinear_forward", "warp.cu")
        tvl1._kernel("tvl1_primal", torch.zeros(1))
    finally:
        fcuda._module.cache_clear()
        fcuda._function.cache_clear()
    assert current == [0]
    assert options_of == {"tvl1.cu": ("-std=c++17",), "warp.cu": ("-std=c++17",),
                          "costvolume.cu": ("-std=c++17", "--use_fast_math")}


def test_failed_graph_capture_is_exposed(monkeypatch):
    """A capture that fails falls back to eager launches, and says so: capture_failed() gives the
    reason (benchmarks/gpu_check.py records it), and later captures are not attempted."""
    from flowkit.cuda import graphs

    monkeypatch.setattr(graphs, "_failure", None)
    calls = []
    record = lambda: calls.append(1)
    before = graphs.captures()
    assert graphs.capture_failed() is None
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        replay = graphs.capture(record, "cpu")  # not a CUDA device: capture fails, on any machine
    assert replay is record and not calls
    reason = graphs.capture_failed()
    assert reason and reason.split(":")[0].endswith(("Error", "Exception")), reason
    assert graphs.capture(record, "cpu") is record and graphs.capture_failed() == reason
    assert graphs.captures() == before


def test_kernel_source_starts_with_line_directive():
    text = fcuda.kernel_source("warp.cu")
    assert text == '#line 1 "warp.cu"\n' + fcuda.read_source("warp.cu")


# ------------------------------------------------------------------------- 2. host emulation

@pytest.fixture
def emulated(emu):
    """The wrapper modules, with load_kernel / launch / check_cuda_float routed to the emulator."""
    from flowkit.cuda import costvolume, tvl1, warp

    return tvl1, warp, costvolume


def _tvl1_state(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, 2, h, w, generator=g) * 2
    p = torch.randn(b, 2, 2, h, w, generator=g) * 0.3
    grad = torch.randn(b, 2, h, w, generator=g) * 10
    grad[:, :, :2, :3] = 0  # flat image: the eps guard of the thresholding
    grad_sq = (grad * grad).sum(1, keepdim=True)
    rho_c = torch.randn(b, 1, h, w, generator=g) * 20
    return u, p, grad, grad_sq, rho_c


COEFFS = dict(lambda_theta=0.15 * 0.3, theta=0.3, tau_theta=0.25 / 0.3)


def test_host_tvl1_iteration_matches_torch(emulated):
    tvl1, _, _ = emulated
    state = _tvl1_state(2, 13, 37)
    want = tvl1_twin.iteration(*state, **COEFFS)
    got = tvl1.tvl1_iteration(*state, **COEFFS)
    # u: the same IEEE operations in the same order, so the same bits. p: torch's CPU float32
    # sqrt is not correctly rounded (1 ulp off at times; CUDA's sqrtf is), hence a 1-ulp tolerance.
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=3e-7, atol=1e-7)
    torch.testing.assert_close(got[2], want[2], rtol=1e-5, atol=1e-5)
    u, p = state[0].clone(), state[1].clone()
    u2, p2, err = tvl1.tvl1_iteration(u, p, *state[2:], **COEFFS, inplace=True)
    assert u2 is u and p2 is p
    torch.testing.assert_close(u, want[0], rtol=0, atol=0)
    torch.testing.assert_close(p, want[1], rtol=3e-7, atol=1e-7)


def test_host_linearize_matches_torch(emulated, photo_pair):
    tvl1, _, _ = emulated
    i0, i1 = photo_pair
    gx, gy = ops.centered_gradient(i1)
    stack = torch.cat((i1, gx, gy), 1)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(i0.shape[0], 2, *i0.shape[-2:], generator=g) * 3  # taps leave the image too
    want = tvl1_twin.linearize(i0, stack, u)
    got = tvl1.linearize(i0, stack, u)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-3)


def test_host_stop_rule_freezes_converged_pairs(emulated):
    tvl1, _, _ = emulated
    b = 300  # two blocks of BLOCK_1D threads, the second one partly out of range
    error = torch.rand(b, generator=torch.Generator().manual_seed(6)) * 2
    active = (torch.arange(b) % 3 != 0).to(torch.int32)  # frozen pairs stay frozen
    want = active * (error > 1.0).to(torch.int32)
    tvl1.stop_rule(error, active, 1.0)
    assert torch.equal(active, want) and not error.any()


@pytest.mark.parametrize("ksize", [3, 5])
def test_host_median_matches_torch(emulated, ksize):
    tvl1, _, _ = emulated
    x = torch.randn(2, 2, 11, 9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(tvl1.median_filter(x, ksize), ops.median_filter_torch(x, ksize))


@pytest.mark.parametrize("size,scale", [((8, 10), None), ((8, 10), (1.25, 1.25)), ((23, 30), None)])
def test_host_resize_matches_torch(emulated, size, scale):
    tvl1, _, _ = emulated
    x = torch.randn(2, 3, 10, 13, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(tvl1.resize_bilinear(x, size, scale), ops.resize_bilinear(x, size, scale),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_host_warp_forward_backward_match_autograd(emulated, padding_mode):
    _, warp, _ = emulated
    g = torch.Generator().manual_seed(4)
    image = torch.randn(2, 3, 9, 12, generator=g)
    flow = torch.randn(2, 2, 9, 12, generator=g) * 4  # many samples leave the image
    grad_out = torch.randn(2, 3, 9, 12, generator=g)
    results = []
    for fn in (warp.warp, ops.warp):
        im, fl = image.clone().requires_grad_(), flow.clone().requires_grad_()
        out = fn(im, fl, "bilinear", padding_mode)
        out.backward(grad_out)
        results.append((out.detach(), im.grad, fl.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window,stride,dilation", [(2, 1, 1), ((1, 2), 2, 2)])
def test_host_cost_volume_and_soft_argmax_match_autograd(emulated, window, stride, dilation):
    _, _, costvolume = emulated
    g = torch.Generator().manual_seed(5)
    f0 = torch.randn(2, 4, 7, 9, generator=g)
    f1 = torch.randn(2, 4, 7, 9, generator=g)
    results = []
    for mod in (costvolume, cv_twin):
        a, b = f0.clone().requires_grad_(), f1.clone().requires_grad_()
        cost = mod.cost_volume(a, b, window, stride, dilation)
        disp = mod.soft_argmax_displacement(cost, window, tau=0.2, dilation=dilation)
        (disp * torch.linspace(-1, 1, disp.numel()).view_as(disp)).sum().backward()
        results.append((cost.detach(), disp.detach(), a.grad, b.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_host_stop_rule_stops_nan_pairs_as_torch(emulated):
    """The torch twin keeps iterating only where ``error > eps``: a NaN error stops its pair (and
    does not keep the whole batch from leaving early)."""
    tvl1, _, _ = emulated
    error = torch.tensor([0.5, float("nan"), 2.0])
    active = torch.ones(3, dtype=torch.int32)
    running = error > 1.0  # flow.primal_dual._until_converged
    tvl1.stop_rule(error, active, 1.0)
    assert active.tolist() == running.int().tolist() == [0, 0, 1] and not error.any()


def test_host_wrappers_refuse_wrong_buffers(emulated):
    """The kernels get raw pointers (flowkit.cuda.launch): a mask, error or output buffer of the
    wrong dtype, layout, shape or device would be read as int32 / float32 rows of another pair.
    The wrappers refuse them with an EngineError (the emulator's own AssertionError is not it)."""
    tvl1, _, _ = emulated
    x = torch.randn(3, 2, 9, 11)
    ones = lambda dtype, n=3: torch.ones(n, dtype=dtype)
    bad_masks = [ones(torch.int64), ones(torch.bool), ones(torch.int32, 6)[::2], ones(torch.int32, 2),
                 torch.ones(3, dtype=torch.int32, device="meta")]
    for active in bad_masks:
        with pytest.raises(EngineError, match="active must"):
            tvl1.median_filter(x, 3, active=active)
        with pytest.raises(EngineError, match="active must"):
            tvl1.stop_rule(torch.zeros(3), active, 1.0)
    for error in (torch.zeros(3, dtype=torch.float64), torch.zeros(6)[::2]):
        with pytest.raises(EngineError, match="error must"):
            tvl1.stop_rule(error, ones(torch.int32), 1.0)
    for out in (x, x.double(), torch.empty(3, 2, 9, 10), torch.empty(3, 2, 11, 9).transpose(-1, -2)):
        with pytest.raises(EngineError, match="out"):
            tvl1.median_filter(x, 3, out=out)
    i0, u = torch.rand(3, 1, 9, 11), torch.randn(3, 2, 9, 11)
    stack = torch.rand(3, 3, 9, 11)
    outs = (torch.empty_like(u), torch.empty_like(i0), torch.empty_like(i0))
    for k, bad in ((0, u), (1, torch.empty_like(i0, dtype=torch.float64)), (2, torch.empty(3, 1, 9, 10)),
                   (2, outs[1])):
        with pytest.raises(EngineError, match="out"):
            tvl1.linearize(i0, stack, u, out=tuple(bad if i == k else t for i, t in enumerate(outs)))
    # The right buffers pass, and give the unchecked results.
    active = torch.tensor([1, 0, 1], dtype=torch.int32)
    got = tvl1.median_filter(x, 3, active=active, out=torch.empty_like(x))
    assert torch.equal(got[1], x[1]) and torch.equal(got[0], ops.median_filter_torch(x[:1], 3)[0])
    for a, b in zip(tvl1.linearize(i0, stack, u, out=outs), tvl1.linearize(i0, stack, u)):
        assert torch.equal(a, b)


def test_host_wrappers_refuse_a_partly_overlapping_out(emulated):
    """An ``out=`` that shares only part of the input's storage (a view starting half-way into it)
    is refused too: the median reads neighbours, so writing over input pixels not yet read would
    corrupt the result. Overlap is measured in bytes, not elements."""
    tvl1, _, _ = emulated
    storage = torch.randn(2 * 3 * 2 * 9 * 11)
    n = 3 * 2 * 9 * 11
    x = storage[:n].view(3, 2, 9, 11)
    out = storage[n // 2:n // 2 + n].view(3, 2, 9, 11)  # starts 2n bytes in: inside x's 4n bytes
    with pytest.raises(EngineError, match="must not share memory"):
        tvl1.median_filter(x, 3, out=out)
    assert torch.equal(tvl1.median_filter(x, 3, out=storage[n:].view(3, 2, 9, 11)),
                       tvl1.median_filter(x, 3))  # adjacent, not overlapping: accepted


def test_host_empty_images_launch_nothing(emulated, emu):
    """H or W = 0: no launch (a zero grid dimension is an invalid configuration on a device, and the
    emulator now says so), and resize refuses an empty source, as its torch twin does."""
    tvl1, warp, _ = emulated
    assert fcuda.grid_chunks(0, 5, 2) == [] and fcuda.grid_chunks(4, 0, 2) == []
    with pytest.raises(AssertionError, match="empty launch grid"):
        emu.kernels["tvl1.cu"].launch("median_filter_3", (1, 0, 1), fcuda.BLOCK_2D,
                                      (torch.zeros(1), torch.zeros(1), None, np.int32(1),
                                       np.int32(0), np.int32(5), np.int32(0)))
    for h, w in ((0, 5), (5, 0)):
        x = torch.randn(2, 1, h, w)
        assert tvl1.median_filter(x, 3).shape == x.shape
        assert tvl1.median_filter(x, 5, active=torch.ones(2, dtype=torch.int32)).shape == x.shape
        u, p = torch.zeros(2, 2, h, w), torch.zeros(2, 2, 2, h, w)
        lin = tvl1.linearize(x, x.expand(-1, 3, -1, -1), u)
        assert [t.shape for t in lin] == [u.shape, x.shape, x.shape]
        assert tvl1.tvl1_iteration(u, p, *lin, **COEFFS)[0].shape == u.shape
        assert warp.warp(x, u).shape == x.shape
        with pytest.raises(EngineError, match="empty image"):
            tvl1.resize_bilinear(x, (2, 2))
    with pytest.raises(RuntimeError):  # the twin
        ops.resize_bilinear(torch.randn(2, 1, 0, 5), (2, 2))
    assert emu.launches == []


def test_host_tvl1_engine_matches_torch_on_real_frames(emulated, photo_pair):
    """The emulated twin of test_gpu_tvl1_engine_backends_agree, with its bounds: with early stops
    the statistical one, and without them the sharp one, which a real disagreement (a 3x3 median
    where the engine runs a 5x5 one) fails by far."""
    params = dict(early_stop=True, outer_iterations=4)
    cupy = flowkit.create_engine("tvl1", backend="cupy", **params)(*photo_pair)
    assert_tvl1_flows_agree(cupy, flowkit.create_engine("tvl1", backend="torch", **params)(*photo_pair))
    fixed = dict(early_stop=False, outer_iterations=2, warps=2)
    cupy = flowkit.create_engine("tvl1", backend="cupy", **fixed)(*photo_pair)
    right = flowkit.create_engine("tvl1", backend="torch", **fixed)(*photo_pair)
    wrong = flowkit.create_engine("tvl1", backend="torch", median_filtering=3, **fixed)(*photo_pair)
    assert_fixed_schedule_agrees(cupy, right)
    with pytest.raises(AssertionError):
        assert_fixed_schedule_agrees(cupy, wrong)


# ------------------------------------------------------------------------------- 3. on a GPU

@pytest.fixture(scope="module")
def photo_pair():
    """Two real frames (B=2: astronaut and camera, 60x80 gray, [0, 255]); frame 1 is frame 0
    moved by a smooth sub-pixel flow."""
    import cv2
    from skimage import color, data

    frames0, frames1 = [], []
    for rgb in (data.astronaut(), np.dstack([data.camera()] * 3)):
        gray = cv2.resize((color.rgb2gray(rgb) * 255).astype(np.float32), (80, 60),
                          interpolation=cv2.INTER_AREA)
        yy, xx = np.mgrid[0:60, 0:80].astype(np.float32)
        fu = 1.5 + 0.8 * np.sin(yy / 9.0)
        fv = -0.75 + 0.5 * np.cos(xx / 13.0)
        moved = cv2.remap(gray, xx - fu, yy - fv, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frames0.append(gray)
        frames1.append(moved)
    as_t = lambda xs: torch.from_numpy(np.stack(xs)[:, None].copy())
    return as_t(frames0), as_t(frames1)


gpu = pytest.mark.gpu
needs_cupy = pytest.mark.skipif(not fcuda.is_available(), reason="needs CuPy: pip install -e .[cuda13] (or .[cuda12])")


@pytest.fixture
def cuda_modules():
    from flowkit.cuda import costvolume, tvl1, warp

    return tvl1, warp, costvolume


def _cuda(*tensors):
    return tuple(t.cuda() for t in tensors)


@gpu
@needs_cupy
def test_gpu_tvl1_iteration_matches_torch(cuda_modules, photo_pair):
    tvl1, _, _ = cuda_modules
    random_state = _cuda(*_tvl1_state(3, 61, 83))
    i0, i1 = _cuda(*photo_pair)
    gx, gy = ops.centered_gradient(i1)
    u = torch.zeros(2, 2, *i0.shape[-2:], device="cuda")
    real_state = (u, torch.zeros(2, 2, 2, *i0.shape[-2:], device="cuda"),
                  *tvl1_twin.linearize(i0, torch.cat((i1, gx, gy), 1), u))
    for state in (random_state, real_state):
        want = tvl1_twin.iteration(*state, **COEFFS)
        got = tvl1.tvl1_iteration(*state, **COEFFS)
        torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-5)
        torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got[2], want[2], rtol=1e-4, atol=1e-4)
        # 50 chained iterations stay together (no drift from a subtle rounding difference).
        a, b = state[:2], state[:2]
        for _ in range(50):
            a = tvl1_twin.iteration(*a, *state[2:], **COEFFS)[:2]
            b = tvl1.tvl1_iteration(*b, *state[2:], **COEFFS)[:2]
        assert (a[0] - b[0]).abs().max() < 1e-3


@gpu
@needs_cupy
def test_gpu_stop_rule_freezes_converged_pairs(cuda_modules):
    tvl1, _, _ = cuda_modules
    b = 300  # two blocks of BLOCK_1D threads: the bound check of the second one
    error = (torch.rand(b, generator=torch.Generator().manual_seed(6)) * 2).cuda()
    active = (torch.arange(b) % 3 != 0).to(torch.int32).cuda()
    want = active * (error > 1.0).to(torch.int32)
    tvl1.stop_rule(error, active, 1.0)
    assert torch.equal(active, want) and not error.any()


@gpu
@needs_cupy
def test_gpu_linearize_median_resize_match_torch(cuda_modules, photo_pair):
    tvl1, _, _ = cuda_modules
    i0, i1 = _cuda(*photo_pair)
    gx, gy = ops.centered_gradient(i1)
    stack = torch.cat((i1, gx, gy), 1)
    u = torch.randn(2, 2, *i0.shape[-2:], device="cuda") * 3
    for a, b in zip(tvl1.linearize(i0, stack, u), tvl1_twin.linearize(i0, stack, u)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-3)
    for ksize in (3, 5):
        x = torch.randn(3, 2, 45, 61, device="cuda")
        assert torch.equal(tvl1.median_filter(x, ksize), ops.median_filter_torch(x, ksize))
        assert torch.equal(tvl1.median_filter(i0, ksize), ops.median_filter_torch(i0, ksize))
    for size, scale in (((48, 64), (1.25, 1.25)), ((37, 50), None), ((120, 160), None)):
        torch.testing.assert_close(tvl1.resize_bilinear(i0, size, scale),
                                   ops.resize_bilinear(i0, size, scale), rtol=1e-6, atol=1e-4)


@gpu
@needs_cupy
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_gpu_warp_matches_torch_autograd(cuda_modules, photo_pair, padding_mode):
    _, warp, _ = cuda_modules
    i0, i1 = _cuda(*photo_pair)
    image = torch.cat((i0, i1), 1)                           # (2, 2, H, W) real frames
    flow = torch.randn(2, 2, *image.shape[-2:], device="cuda") * 3
    grad_out = torch.randn_like(image)
    results = []
    for fn in (warp.warp, ops.warp):
        im, fl = image.clone().requires_grad_(), flow.clone().requires_grad_()
        out = fn(im, fl, "bilinear", padding_mode)
        out.backward(grad_out)
        results.append((out.detach(), im.grad, fl.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-3)
    # torch's current stream is honoured: the same result on a side stream.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        on_side = warp.warp(image, flow, "bilinear", padding_mode)
    side.synchronize()
    torch.testing.assert_close(on_side, results[0][0], rtol=0, atol=0)


@gpu
@needs_cupy
@pytest.mark.parametrize("window,stride,dilation", [(4, 1, 1), ((2, 3), 2, 2)])
def test_gpu_cost_volume_matches_torch_autograd(cuda_modules, window, stride, dilation):
    _, _, costvolume = cuda_modules
    f0 = torch.randn(2, 16, 33, 47, device="cuda")
    f1 = torch.randn(2, 16, 33, 47, device="cuda")
    results = []
    for mod in (costvolume, cv_twin):
        a, b = f0.clone().requires_grad_(), f1.clone().requires_grad_()
        cost = mod.cost_volume(a, b, window, stride, dilation)
        disp = mod.soft_argmax_displacement(cost, window, tau=0.05, dilation=dilation)
        (disp * torch.linspace(-1, 1, disp.numel(), device="cuda").view_as(disp)).sum().backward()
        results.append((cost.detach(), disp.detach(), a.grad, b.grad))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)
    nx = numerics.create("cupy", "cuda")   # winner-take-all (tau=0) is routed to the twin
    wta = nx.soft_argmax_displacement(results[1][0], window, tau=0, dilation=dilation)
    torch.testing.assert_close(wta, cv_twin.soft_argmax_displacement(results[1][0], window, 0, dilation))
    with pytest.raises(EngineError, match="tau must be a positive number"):
        costvolume.soft_argmax_displacement(results[1][0], window, tau=0, dilation=dilation)


@gpu
@needs_cupy
def test_gpu_kernels_compile_once_per_device(cuda_modules):
    tvl1, _, _ = cuda_modules
    tvl1.median_filter(torch.randn(1, 1, 20, 30, device="cuda"), 5)
    before, handles = fcuda._module.cache_info(), fcuda._function.cache_info()
    tvl1.median_filter(torch.randn(4, 2, 57, 91, device="cuda"), 5)  # new sizes: no recompilation
    after = fcuda._module.cache_info()
    assert after.misses == before.misses and fcuda._function.cache_info().hits > handles.hits


@gpu
@needs_cupy
@pytest.mark.parametrize("early_stop", [False, True])
def test_gpu_tvl1_engine_backends_agree(photo_pair, early_stop):
    """The whole engine: CuPy kernels (CUDA graphs), torch on CUDA, torch on the CPU, real frames."""
    i0, i1 = photo_pair
    params = dict(early_stop=early_stop, outer_iterations=4)
    cpu = flowkit.create_engine("tvl1", backend="torch", **params)(i0, i1)
    torch_cuda = flowkit.create_engine("tvl1", device="cuda", backend="torch", **params)(i0, i1).cpu()
    engine = flowkit.create_engine("tvl1", device="cuda", backend="cupy", **params)
    assert engine.backend == "cupy"
    cupy = engine(i0, i1).cpu()
    # Without early stopping all three follow the same path to rounding; with it, a pair may stop
    # one iteration apart where its error is within rounding of epsilon, and at ill-posed border
    # pixels that grows to px (assert_tvl1_flows_agree says why and what was measured).
    for other in (torch_cuda, cpu):
        if early_stop:
            assert_tvl1_flows_agree(cupy, other)
        else:
            assert_fixed_schedule_agrees(cupy, other)
    assert torch.equal(engine(i0, i1).cpu(), cupy)  # replayed graphs: the same result again


@gpu
@needs_cupy
def test_gpu_tvl1_graphs_equal_eager_launches(photo_pair):
    from flowkit.cuda import graphs

    i0, i1 = photo_pair
    before = graphs.captures()
    graphed = flowkit.create_engine("tvl1", device="cuda", backend="cupy", outer_iterations=4)
    eager = flowkit.create_engine("tvl1", device="cuda", backend="cupy", outer_iterations=4)
    eager.numerics.warp_iterations.use_graphs = False
    got = graphed(i0, i1)
    captured = graphs.captures() - before
    assert torch.equal(got, eager(i0, i1))
    # Both sides eager would pass the comparison: the graphed engine must really have captured.
    failed = graphs.capture_failed()
    if failed and os.environ.get("PYTORCH_NO_CUDA_MEMORY_CACHING"):
        pytest.xfail(f"capture failed without torch's caching allocator (the memcheck run): {failed}")
    assert failed is None, f"CUDA graph capture failed, so both engines launched eagerly: {failed}"
    assert captured > 0, "the graphed engine captured no CUDA graph"


@gpu
@needs_cupy
def test_gpu_tvnet_and_costvolume_engines_agree(photo_pair):
    frames = tuple(t.expand(-1, 3, -1, -1).contiguous() for t in photo_pair)
    for name, kw, tol in (("tvnet", dict(scales=1, warps=1, iterations=50), 1e-3),
                          ("costvolume", dict(), 1e-3)):
        want = flowkit.create_engine(name, device="cuda", backend="torch", **kw)(*frames)
        got = flowkit.create_engine(name, device="cuda", backend="cupy", **kw)(*frames)
        assert (got - want).abs().mean() < tol, (name, float((got - want).abs().mean()))
