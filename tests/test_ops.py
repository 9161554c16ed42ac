"""Shared numerics: each op against an independent reference (OpenCV or a direct formula),
gradcheck in float64, and bad input."""
import cv2
import numpy as np
import pytest
import torch

from flowkit.errors import EngineError
from flowkit.flow import ops


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 24, 31, generator=g) * 255


def test_warp_zero_flow_is_identity(image):
    out = ops.warp(image, torch.zeros(2, 2, 24, 31))
    torch.testing.assert_close(out, image, atol=1e-3, rtol=0)


def test_warp_integer_translation_shifts(image):
    flow = torch.zeros(2, 2, 24, 31)
    flow[:, 0] = 2.0   # sample 2 px to the right
    flow[:, 1] = -1.0  # and 1 px up
    out = ops.warp(image, flow)
    torch.testing.assert_close(out[..., 1:, :-2], image[..., :-1, 2:], atol=1e-3, rtol=0)
    assert out[..., :, -2:].abs().max() < 1e-3  # samples that leave the image are zero
    assert out[..., 0, :].abs().max() < 1e-3


def test_warp_bicubic_matches_opencv_remap():
    rng = np.random.default_rng(1)
    img = rng.uniform(0, 255, (30, 40)).astype(np.float32)
    fu = rng.uniform(-1.5, 1.5, (30, 40)).astype(np.float32)
    fv = rng.uniform(-1.5, 1.5, (30, 40)).astype(np.float32)
    yy, xx = np.mgrid[0:30, 0:40].astype(np.float32)
    ref = cv2.remap(img, xx + fu, yy + fv, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    out = ops.warp(torch.from_numpy(img)[None, None], torch.from_numpy(np.stack([fu, fv]))[None],
                   mode="bicubic")[0, 0].numpy()
    # OpenCV quantises sampling positions to 1/32 px; interior agreement is within that.
    inner = (slice(3, -3), slice(3, -3))
    assert np.abs(out - ref)[inner].mean() < 0.5


def test_warp_gradcheck():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(1, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    flow = (torch.rand(1, 2, 6, 7, dtype=torch.float64, generator=g) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(ops.warp, (img, flow))


def test_warp_rejects_bad_shapes(image):
    with pytest.raises(EngineError, match="flow"):
        ops.warp(image, torch.zeros(2, 3, 24, 31))
    with pytest.raises(EngineError, match="shape"):
        ops.warp(image[0], torch.zeros(2, 24, 31))


def _opencv_centered_gradient(src):
    """OpenCV DualTVL1's centeredGradient written out: central inside, half one-sided at borders."""
    h, w = src.shape
    dx, dy = np.zeros_like(src), np.zeros_like(src)
    for y in range(h):
        for x in range(w):
            dx[y, x] = 0.5 * (src[y, min(x + 1, w - 1)] - src[y, max(x - 1, 0)])
            dy[y, x] = 0.5 * (src[min(y + 1, h - 1), x] - src[max(y - 1, 0), x])
    return dx, dy


def test_centered_gradient_matches_opencv_rules():
    src = np.random.default_rng(3).uniform(0, 255, (9, 11)).astype(np.float32)
    gx, gy = ops.centered_gradient(torch.from_numpy(src)[None, None])
    rx, ry = _opencv_centered_gradient(src)
    np.testing.assert_allclose(gx[0, 0].numpy(), rx, atol=1e-4)
    np.testing.assert_allclose(gy[0, 0].numpy(), ry, atol=1e-4)


def test_forward_gradient_and_divergence_are_negative_adjoints():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(2, 2, 8, 9, dtype=torch.float64, generator=g)
    px = torch.randn(2, 2, 8, 9, dtype=torch.float64, generator=g)
    py = torch.randn(2, 2, 8, 9, dtype=torch.float64, generator=g)
    # The TV-L1 iteration keeps p's x-component zero in the last column, y-component in the last row.
    px[..., -1] = 0
    py[..., -1, :] = 0
    ux, uy = ops.forward_gradient(u)
    lhs = (ux * px + uy * py).sum()
    rhs = -(u * ops.divergence(px, py)).sum()
    torch.testing.assert_close(lhs, rhs)
    assert torch.all(ux[..., -1] == 0) and torch.all(uy[..., -1, :] == 0)


def test_divergence_matches_opencv_first_row_and_column():
    px = torch.arange(12.0).view(1, 1, 3, 4)
    py = torch.arange(12.0).view(1, 1, 3, 4) * 2
    div = ops.divergence(px, py)[0, 0]
    assert div[0, 0] == px[0, 0, 0, 0] + py[0, 0, 0, 0]
    assert div[0, 2] == px[0, 0, 0, 2] - px[0, 0, 0, 1] + py[0, 0, 0, 2]
    assert div[2, 0] == px[0, 0, 2, 0] + py[0, 0, 2, 0] - py[0, 0, 1, 0]


@pytest.mark.parametrize("fn", [
    lambda x: ops.centered_gradient(x)[0],
    lambda x: ops.forward_gradient(x)[1],
    lambda x: ops.divergence(x, x * 2),
    lambda x: ops.resize_bilinear(x, (4, 6)),
])
def test_differentiable_ops_gradcheck(fn):
    x = torch.rand(1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


def test_custom_kernel_equals_default():
    x = torch.rand(1, 1, 6, 6)
    k = torch.tensor([-0.5, 0.0, 0.5])
    for a, b in zip(ops.centered_gradient(x), ops.centered_gradient(x, k)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ops.divergence(x, x, torch.tensor([-1.0, 1.0])), ops.divergence(x, x))


def test_default_kernels_make_no_tensor_per_call(monkeypatch):
    """The default taps are plain numbers: a tensor made from them on every call is a blocking
    host-to-device copy on CUDA, a synchronisation per TV-L1 iteration. Results equal the
    explicit kernels' bit for bit."""
    x = torch.rand(2, 1, 7, 9)
    explicit = (ops.centered_gradient(x, torch.tensor([-0.5, 0.0, 0.5])),
                ops.forward_gradient(x, torch.tensor([-1.0, 1.0])),
                ops.divergence(x, x, torch.tensor([-1.0, 1.0])))

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor was built for the default kernel")

    monkeypatch.setattr(torch, "tensor", refuse)
    default = (ops.centered_gradient(x), ops.forward_gradient(x), ops.divergence(x, x))
    for a, b in zip(default[:2], explicit[:2]):
        assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert torch.equal(default[2], explicit[2])


@pytest.mark.parametrize("size", [(256, 340), (37, 53)])
def test_resize_matches_opencv_scale_factor(size):
    img = np.random.default_rng(5).uniform(0, 255, size).astype(np.float32)
    ref = cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    out = ops.resize_bilinear(torch.from_numpy(img)[None, None], ref.shape, scale=(1.25, 1.25))
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=2e-3)


def test_resize_upsampling_matches_opencv_dsize():
    img = np.random.default_rng(6).uniform(-3, 3, (20, 27)).astype(np.float32)
    ref = cv2.resize(img, (34, 25), interpolation=cv2.INTER_LINEAR)
    out = ops.resize_bilinear(torch.from_numpy(img)[None, None], (25, 34))
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-4)


def test_pyramid_sizes_follow_opencv():
    assert ops.pyramid_sizes(256, 340, 5, 0.8) == [(256, 340), (205, 272), (164, 218), (131, 174),
                                                   (105, 139)]
    # Stops before a level under 16 px.
    assert ops.pyramid_sizes(24, 300, 5, 0.5) == [(24, 300)]
    img = np.random.default_rng(7).uniform(0, 255, (256, 340)).astype(np.float32)
    levels = ops.image_pyramid(torch.from_numpy(img)[None, None], ops.pyramid_sizes(256, 340, 3, 0.8), 0.8)
    ref = cv2.resize(cv2.resize(img, None, fx=0.8, fy=0.8), None, fx=0.8, fy=0.8)
    np.testing.assert_allclose(levels[2][0, 0].numpy(), ref, atol=2e-3)


def test_median_filter_matches_opencv_and_torch_twin():
    x = torch.randn(2, 2, 19, 23)
    ref = np.stack([cv2.medianBlur(c, 5) for c in x.reshape(-1, 19, 23).numpy()]).reshape(x.shape)
    np.testing.assert_array_equal(ops.median_filter(x, 5).numpy(), ref)
    torch.testing.assert_close(ops.median_filter_torch(x, 5), ops.median_filter(x, 5))
    with pytest.raises(EngineError, match="odd"):
        ops.median_filter(x, 4)


def test_median_filter_over_5_runs_on_cpu_float32():
    """OpenCV's medianBlur takes float32 only up to 5x5, so a larger window on CPU float32 (the
    TV-L1 default input) goes through the torch version instead of failing with cv2.error:
    ``--param median_filtering=7`` must run. Reference: numpy median of edge-padded windows."""
    x = torch.randn(2, 2, 19, 23)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (3, 3), (3, 3)), mode="edge")
    ref = np.median(np.lib.stride_tricks.sliding_window_view(padded, (7, 7), axis=(2, 3)), axis=(-2, -1))
    np.testing.assert_array_equal(ops.median_filter(x, 7).numpy(), ref)
    import flowkit
    engine = flowkit.create_engine("tvl1", median_filtering=7, nscales=1, warps=1,
                                   outer_iterations=1, inner_iterations=2)
    frames = torch.rand(2, 1, 24, 31, generator=torch.Generator().manual_seed(0)) * 255
    assert torch.isfinite(engine(frames[:1], frames[1:])).all()


def _layouts():
    """The same RGB frames contiguous and channels-last (as decoded (T, H, W, 3) frames permuted)."""
    hwc = torch.randint(0, 256, (4, 37, 53, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    return hwc.permute(0, 3, 1, 2).contiguous(), hwc.permute(0, 3, 1, 2)


def test_luma_is_the_same_bits_for_any_layout_and_keeps_the_dtype():
    contiguous, channels_last = _layouts()
    gray = ops.to_gray(contiguous)
    assert gray.is_contiguous() and gray.dtype == torch.float32
    assert torch.equal(ops.to_gray(channels_last), gray)
    x = contiguous.double()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    assert torch.equal(ops.luma(x), (r * 0.299 + g * 0.587) + b * 0.114)  # left to right, float64 kept
    with pytest.raises(EngineError, match="channels"):
        ops.luma(x[:, :2])


@pytest.mark.gpu
def test_luma_on_cuda_is_the_cpus_for_any_layout():
    """A sum over channels may order its additions by layout on CUDA: three products added left to
    right are IEEE-rounded the same on both devices (not yet run on a GPU)."""
    contiguous, channels_last = _layouts()
    want = ops.to_gray(contiguous)
    for frames in (contiguous, channels_last):
        assert torch.equal(ops.to_gray(frames.cuda()).cpu(), want)


def test_to_gray_uses_opencv_luma():
    rgb = np.random.default_rng(8).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    ref = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY)
    out = ops.to_gray(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-3)
    with pytest.raises(EngineError, match="channels"):
        ops.to_gray(torch.zeros(1, 2, 4, 4))
