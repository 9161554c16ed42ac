"""Middlebury colour coding: wheel, saturation, hue by direction, unknown flow, files and grids."""
import cv2
import numpy as np
import pytest
import torch

from flowkit.errors import FlowkitError
from flowkit.viz import colorwheel_legend, flow_grid, flow_to_color, make_colorwheel, save_flow_png


def constant(u, v, h=4, w=5):
    flow = np.zeros((2, h, w), np.float32)
    flow[0], flow[1] = u, v
    return flow


def test_colorwheel_segments():
    wheel = make_colorwheel()
    assert wheel.shape == (55, 3)
    # Segment starts: red, yellow, green, cyan, blue, magenta (RY=15, YG=6, GC=4, CB=11, BM=13, MR=6).
    starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255),
              36: (0, 0, 255), 49: (255, 0, 255)}
    for index, colour in starts.items():
        assert tuple(wheel[index]) == colour
    assert tuple(wheel[1]) == (255, 17, 0)      # floor(255 * 1 / 15)
    assert tuple(wheel[54]) == (255, 0, 43)     # 255 - floor(255 * 5 / 6)


def test_zero_flow_is_white():
    image = flow_to_color(np.zeros((2, 6, 7), np.float32))
    assert image.shape == (6, 7, 3) and image.dtype == np.uint8
    assert (image == 255).all()


def test_plus_x_is_first_wheel_colour_at_full_saturation():
    assert tuple(make_colorwheel()[0]) == (255, 0, 0)
    image = flow_to_color(constant(2.5, 0.0))
    assert (image == (255, 0, 0)).all()
    # Half the maximum magnitude: halfway to white (floor(255 * 0.5), as the reference writes it).
    assert tuple(flow_to_color(constant(1.0, 0.0), max_flow=2.0)[0, 0]) == (255, 127, 127)


def test_plus_y_is_the_wheel_colour_a_quarter_turn_on():
    wheel = make_colorwheel().astype(np.float64)
    position = 54 / 4                            # +y is 90 degrees clockwise on screen from +x;
    k, frac = int(position), position - int(position)   # one turn spans 54 wheel intervals
    expected = np.floor(255 * ((1 - frac) * wheel[k] / 255 + frac * wheel[k + 1] / 255))
    assert tuple(flow_to_color(constant(0.0, 3.0))[0, 0]) == tuple(expected.astype(np.uint8))
    assert tuple(flow_to_color(constant(0.0, 3.0))[0, 0]) == (255, 229, 0)


def _reference_colour(u, v):
    """Baker et al.'s colorcode.cpp (as its Python port flow_vis computes it), written from the
    paper's code: u, v already divided by the maximum radius."""
    wheel = make_colorwheel().astype(np.float64)
    ncols = len(wheel)
    rad = np.sqrt(u * u + v * v)
    fk = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(int)
    k1 = k0 + 1
    k1[k1 == ncols] = 0
    f = fk - k0
    out = np.zeros(u.shape + (3,), np.uint8)
    for i in range(3):
        col0, col1 = wheel[k0, i] / 255.0, wheel[k1, i] / 255.0
        col = (1 - f) * col0 + f * col1
        col = np.where(rad <= 1, 1 - rad * (1 - col), col * 0.75)
        out[..., i] = np.floor(255 * col)
    return out


def test_colour_coding_is_the_middlebury_reference_exactly():
    """Every pixel as the reference codes it: one turn over 54 wheel intervals from
    atan2(-v, -u), linear interpolation, saturation 1 - r (1 - colour), 0.75 beyond the maximum,
    floor. (Before: the angle over 55 intervals and rounding, up to 43 levels off.)"""
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-1.3, 1.3, (2, 300, 300))
    angles = np.linspace(0, 2 * np.pi, 721)[:-1]
    u = np.concatenate([u.ravel(), np.cos(angles), 0.5 * np.cos(angles)])[None]
    v = np.concatenate([v.ravel(), np.sin(angles), 0.5 * np.sin(angles)])[None]
    mine = flow_to_color(np.stack([u, v]), max_flow=1.0)
    assert np.array_equal(mine, _reference_colour(u, v))
    # scaled by max_flow first: the same colours for the same normalised vectors
    assert np.array_equal(flow_to_color(np.stack([4 * u, 4 * v]), max_flow=4.0), mine)
    # just above +x the wheel's last colour, at +x its first (the reference's seam)
    assert tuple(flow_to_color(constant(1.0, -1e-9), max_flow=1.0)[0, 0]) == (255, 0, 43)
    assert tuple(flow_to_color(constant(1.0, -0.0), max_flow=1.0)[0, 0]) == (255, 0, 0)


def test_direction_changes_hue_not_magnitude():
    colours = {tuple(flow_to_color(constant(np.cos(a), np.sin(a)))[0, 0])
               for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)}
    assert len(colours) == 12
    for colour in colours:                      # full saturation: some channel is 0, some is 255
        assert min(colour) <= 1 and max(colour) == 255


def test_over_max_flow_is_darkened():
    image = flow_to_color(constant(4.0, 0.0), max_flow=2.0)
    assert tuple(image[0, 0]) == (191, 0, 0)


def test_unknown_flow_is_black_and_does_not_set_the_scale():
    flow = constant(1.0, 0.0)
    flow[0, 0, 0] = np.nan
    flow[1, 0, 1] = np.inf
    flow[0, 0, 2] = 1e10                         # Middlebury's unknown marker
    image = flow_to_color(flow)
    assert (image[0, :3] == 0).all()
    assert (image[1:] == (255, 0, 0)).all()
    assert (flow_to_color(np.full((2, 3, 3), np.nan)) == 0).all()


def test_torch_input_and_bad_shape():
    assert np.array_equal(flow_to_color(torch.from_numpy(constant(0.3, -0.7))),
                          flow_to_color(constant(0.3, -0.7)))
    with pytest.raises(FlowkitError, match=r"\(2, H, W\)"):
        flow_to_color(np.zeros((4, 5, 2)))
    with pytest.raises(FlowkitError, match="max_flow"):
        flow_to_color(constant(1, 0), max_flow=0)


def test_save_flow_png_writes_rgb_as_bgr(tmp_path):
    path = tmp_path / "flow.png"
    save_flow_png(path, constant(1.0, 0.0))
    bgr = cv2.imread(str(path))
    assert tuple(bgr[0, 0]) == (0, 0, 255)
    with pytest.raises(FlowkitError, match="cannot write"):
        save_flow_png(tmp_path / "missing" / "flow.png", constant(1.0, 0.0))


def test_legend_and_grid():
    legend = colorwheel_legend(33)
    assert legend.shape == (33, 33, 3)
    assert (legend[16, 16] == 255).all() and (legend[0, 0] == 255).all()
    assert tuple(legend[16, 32]) == (255, 0, 0)  # right edge of the disc: +x at full saturation

    frames = [np.full((4, 5, 3), i * 50, np.uint8) for i in range(3)]
    flows = [constant(1.0, 0.0), constant(0.0, 2.0)]
    grid = flow_grid(frames, flows, gap=1)
    assert grid.shape == (2 * 4 + 1, 2 * 5 + 1, 3)
    assert (grid[:4, :5] == 0).all() and (grid[5:, :5] == 50).all()
    assert tuple(grid[0, 6]) == (255, 127, 127)  # shared scale: max magnitude over both flows is 2
    assert flow_grid(frames, flows, legend=True).shape == (10, 5 + 2 + 5 + 2 + 4, 3)
    tgrid = flow_grid(torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in frames]),
                      torch.from_numpy(np.stack(flows)), gap=1)
    assert np.array_equal(tgrid, grid)
    with pytest.raises(FlowkitError, match="frames"):
        flow_grid(frames[:1], flows)


def test_grid_legend_prints_the_shared_scale():
    """flow_grid's legend is the colour key at the grid's own scale with that scale printed
    ("rim 2.2 px"): a reader can only turn colours into pixels if the key says what the rim
    means."""
    from flowkit.viz import robust_max_flow

    flows = np.zeros((2, 2, 32, 40), np.float32)
    flows[0, 0], flows[1, 1] = -2.2, 1.5
    grid = flow_grid(None, flows, legend=True, gap=0)
    assert grid.shape == (64, 40 + 32, 3)
    scaled = colorwheel_legend(32, robust_max_flow(list(flows)))
    assert not np.array_equal(scaled, colorwheel_legend(32))  # the printed scale is visible
    np.testing.assert_array_equal(grid[:32, 40:], scaled)
    assert (grid[32:, 40:] == 255).all()


def test_show_writes_the_video_at_the_stored_frame_rate(tmp_path):
    """`flowkit show STORE VIDEO -o out.mp4` plays at the video's own frame rate (10 fps here, not
    a fixed 25): the clip of the flow then lasts as long as the source and lines up with it."""
    from click.testing import CliRunner

    from flowkit.cli import main
    from flowkit.store import FlowStore

    rng = np.random.default_rng(0)
    with FlowStore(tmp_path / "store", "a", classes=["up"]) as store:
        with store.writer("up/up_0", source="up_0.mp4", fps=10.0, label=0, label_name="up",
                          flow_codec="float16") as w:
            w.append_rgb(rng.integers(0, 256, (3, 24, 32, 3), dtype=np.uint8))
            w.append_flow("tvl1", rng.normal(0, 1, (2, 2, 24, 32)).astype(np.float32),
                          engine={"engine": "tvl1", "version": "test", "params": {}})
    out = tmp_path / "flow.mp4"
    result = CliRunner().invoke(main, ["show", str(tmp_path / "store"), "up/up_0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    video = cv2.VideoCapture(str(out))
    try:
        assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
        assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 2  # one frame per flow pair
    finally:
        video.release()
