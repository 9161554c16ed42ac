"""Backward flow from the store: ClipDataset's ``flow_backward`` (alignment with the clip frames,
bound, flip, resize, multi-view, missing dataset), TrajectoryNet's ``backward_flow="store"`` (what
reaches the trajectory conv, logits against ``"derived"``), `flowkit train` / `evaluate` with it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import flowkit.models.trajectory as trajectory_module
from flowkit.cli.evaluate import command as evaluate_command
from flowkit.cli.train import command as train_command
from flowkit.data import (ClipDataset, Compose, Normalize, RandomHorizontalFlip, UniformClipSampler,
                          resize, test_transform)
from flowkit.errors import FlowkitError
from flowkit.models import classification_loss, create_model
from flowkit.models.trajectory import backward_from_forward, downsample_flow
from flowkit.store import FlowStore
from flowkit.train import flatten_views

SIZE = (16, 20)  # (H, W)
BOUND = 20.0     # pixels: flow_bound of float16 flow
LENGTHS = {"a/a0": 6, "a/a1": 5, "a/a2": 5, "b/b0": 6, "b/b1": 5, "b/b2": 5}
ENGINE = {"engine": "coded", "version": "1", "params": {}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py: why


def backward_pair(t: int) -> tuple[float, float]:
    """(u, v) pixels of backward pair t (frame t+1 -> t), distinct per pair."""
    return -(t + 1.0), t + 0.5


def write_store(path, backward: bool = True):
    """Videos of constant flow per pair: forward pair t is (u, v) = (t + 1, -(t + 1)), backward
    pair t is :func:`backward_pair`; float16 (exact for these values), frames filled with noise."""
    classes = sorted({key.split("/")[0] for key in LENGTHS})
    rng = np.random.default_rng(0)
    with FlowStore(path, mode="a", classes=classes) as store:
        for key, n in LENGTHS.items():
            name = key.split("/")[0]
            t = np.arange(n - 1, dtype=np.float32)[:, None, None]
            ones = np.ones((n - 1, *SIZE), np.float32)
            forward = np.stack([(t + 1) * ones, -(t + 1) * ones], axis=1)
            with store.writer(key, source=f"{key}.mp4", fps=25.0, label=classes.index(name),
                              label_name=name, flow_codec="float16", rgb_codec="raw") as writer:
                writer.append_rgb(rng.integers(0, 256, (n, *SIZE, 3), dtype=np.uint8))
                writer.append_flow("tvl1", forward, engine=ENGINE)
                if backward:
                    pairs = np.stack([-(t + 1) * ones, (t + 0.5) * ones], axis=1)
                    writer.append_flow("tvl1_backward", pairs,
                                       engine={**ENGINE, "direction": "backward"})
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("backward") / "store")


def expected_backward(frames, scale_u: float = 1.0, scale_v: float = 1.0) -> torch.Tensor:
    """``(2, T)`` normalised backward flow at frame indices ``frames``: pair ``i - 1`` (u scaled
    by ``scale_u``, v by ``scale_v``), 0 at i = 0."""
    out = torch.zeros(2, len(frames))
    for k, i in enumerate(frames):
        if i > 0:
            u, v = backward_pair(int(i) - 1)
            out[:, k] = torch.tensor([u * scale_u, v * scale_v]) / BOUND
    return out


# ----------------------------------------------------------------------------- the dataset

def test_backward_flow_is_pair_i_minus_1_over_the_bound(store):
    ds = ClipDataset(store, ["a/a0"], inputs=("rgb", "flow", "flow_backward"), flow_stack=2,
                     sampler=UniformClipSampler(1, 6, 1), transform=Normalize())
    item = ds[0]
    frames = ds.clip_indices(0)[0]
    assert frames.tolist() == [0, 1, 2, 3, 4, 5]          # includes frame 0, which has no pair
    back = item["flow_backward"]
    assert back.shape == (2, 6, *SIZE) and item["flow"].shape == (4, 6, *SIZE)  # no stacking
    want = expected_backward(frames)
    assert torch.equal(back, want[:, :, None, None].expand_as(back))
    assert float(item["flow_bound"]) == BOUND
    # Backward flow alone loads too, with its bound.
    alone = ClipDataset(store, ["a/a0"], inputs=("flow_backward",),
                        sampler=UniformClipSampler(1, 6, 1))[0]
    assert set(alone) == {"flow_backward", "flow_bound", "label", "index"}
    assert torch.equal(alone["flow_backward"], back)


def test_flip_negates_backward_u(store):
    def item(transform):
        return ClipDataset(store, ["b/b0"], inputs=("flow", "flow_backward"),
                           sampler=UniformClipSampler(1, 4, 1), transform=transform)[0]

    plain, flipped = item(Normalize()), item(Compose([RandomHorizontalFlip(1.0), Normalize()]))
    for name in ("flow", "flow_backward"):
        assert torch.equal(flipped[name][0], -plain[name][0])   # u
        assert torch.equal(flipped[name][1], plain[name][1])    # v
    assert (plain["flow_backward"][0] != 0).any()


def test_resize_scales_backward_u_and_v_per_axis():
    sample = {"flow_backward": torch.ones(2, 3, *SIZE)}
    out = resize(sample, (32, 10))["flow_backward"]                  # H x 2, W x 0.5
    assert out.shape == (2, 3, 32, 10)
    assert torch.allclose(out[0], torch.tensor(0.5)) and torch.allclose(out[1], torch.tensor(2.0))


def test_multi_clip_multi_crop_views(store):
    """2 clips x 3 crops: views are clip-major, crops resized (16 -> 8: flow x 0.5), and evaluation
    folds the views of flow_backward like those of rgb and flow."""
    ds = ClipDataset(store, ["a/a1", "b/b0"], inputs=("rgb", "flow", "flow_backward"),
                     sampler=UniformClipSampler(2, 3, 1), transform=test_transform(8, crops=3))
    item = ds[1]
    back = item["flow_backward"]
    assert back.shape == (6, 2, 3, 8, 8) and item["flow"].shape == (6, 2, 3, 8, 8)
    for c, frames in enumerate(ds.clip_indices(1)):
        want = expected_backward(frames, 0.5, 0.5)[:, :, None, None]
        for k in range(3):
            assert torch.allclose(back[c * 3 + k], want.expand(2, 3, 8, 8))
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    flat, views = flatten_views(batch)
    assert views == 6 and flat["flow_backward"].shape == (12, 2, 3, 8, 8)
    assert torch.equal(flat["flow_backward"][6:12], back)


def test_store_without_backward_flow_names_the_dataset_and_the_command(tmp_path):
    path = write_store(tmp_path / "forward_only", backward=False)
    with pytest.raises(FlowkitError) as err:
        ClipDataset(path, inputs=("rgb", "flow", "flow_backward"),
                    sampler=UniformClipSampler(1, 2, 1))
    message = str(err.value)
    assert "6 of 6 videos have no backward flow 'tvl1_backward'" in message
    assert f"flowkit extract VIDEOS -o {path} --backward --method tvl1" in message
    ClipDataset(path, inputs=("rgb", "flow"), sampler=UniformClipSampler(1, 2, 1))  # fine


# ----------------------------------------------------------------------------- TrajectoryNet

NET = dict(num_classes=3, width=4, layers=(1, 2, 1, 1))   # trajectory conv at 1/8: 32 -> 4


def batch(seed=0):
    """rgb and normalised flow ``(2, C, 4, 32, 32)``; backward = -f_{t-1} (b_0 is never used, so
    it gets noise): exactly what "derived" computes."""
    g = torch.Generator().manual_seed(seed)
    flow = torch.randn(2, 2, 4, 32, 32, generator=g) * 0.2
    backward = torch.randn(2, 2, 4, 32, 32, generator=g) * 0.2
    backward[:, :, 1:] = -flow[:, :, :-1]
    return {"rgb": torch.randn(2, 3, 4, 32, 32, generator=g), "flow": flow,
            "flow_backward": backward, "flow_bound": torch.full((2,), BOUND),
            "label": torch.tensor([0, 2])}


def pair_of_models(**kw):
    derived = create_model("trajectorynet", **NET, **kw)
    stored = create_model("trajectorynet", **NET, backward_flow="store", **kw)
    stored.load_state_dict(derived.state_dict())   # same parameter names: checkpoints load strictly
    return derived.eval(), stored.eval()


@pytest.mark.parametrize("kw", [{}, {"flow_pool": "max", "offsets": True}])
def test_store_backward_equal_to_derived_gives_the_same_logits(kw):
    derived, stored = pair_of_models(**kw)
    assert derived.inputs == ("rgb", "flow") and stored.inputs == ("rgb", "flow", "flow_backward")
    inputs = batch()
    torch.testing.assert_close(stored(inputs)["logits"], derived(inputs)["logits"])
    other = dict(inputs, flow_backward=inputs["flow_backward"] + 0.3)  # 6 px: 0.75 px at the block
    assert not torch.allclose(stored(other)["logits"], derived(other)["logits"])
    assert torch.equal(derived(other)["logits"], derived(inputs)["logits"])  # derived ignores it


def test_the_trajectory_conv_gets_the_stores_backward_flow_pooled(monkeypatch):
    seen = []
    original = trajectory_module.trajectory_conv

    def spy(x, forward_flow, backward_flow, *args, **kw):
        seen.append((forward_flow, backward_flow))
        return original(x, forward_flow, backward_flow, *args, **kw)

    monkeypatch.setattr(trajectory_module, "trajectory_conv", spy)
    derived, stored = pair_of_models()
    inputs = batch(1)
    inputs["flow_backward"] = torch.randn(2, 2, 4, 32, 32) * 0.2   # unrelated to the forward flow
    stored(inputs)
    derived(inputs)
    forward = downsample_flow(inputs["flow"] * BOUND, 8)              # pixels at 1/8
    (f_store, b_store), (f_derived, b_derived) = seen
    torch.testing.assert_close(f_store, forward)
    torch.testing.assert_close(b_store, downsample_flow(inputs["flow_backward"] * BOUND, 8))
    torch.testing.assert_close(f_derived, forward)
    torch.testing.assert_close(b_derived, backward_from_forward(forward))


def test_store_backward_trains_and_checks_its_input():
    model = create_model("trajectorynet", **NET, backward_flow="store")
    out = model(batch())
    classification_loss(out, batch()["label"]).backward()
    assert model.trajectory.weight.grad.abs().sum() > 0
    no_backward = {k: v for k, v in batch().items() if k != "flow_backward"}
    with pytest.raises(FlowkitError, match="needs flow_backward"):
        model(no_backward)
    with pytest.raises(FlowkitError, match="flow_source='store'"):
        create_model("trajectorynet", **NET, flow_source="motionnet", backward_flow="store")
    with pytest.raises(FlowkitError, match="backward_flow must be one of derived, store"):
        create_model("trajectorynet", **NET, backward_flow="tvl1")
    with pytest.raises(FlowkitError, match="modality must be one of rgb, flow"):
        create_model("s3d", **NET, modality="flow_backward")


# ----------------------------------------------------------------------------- training

TRAIN = ["--model", "trajectorynet", "--model-arg", "width=4", "--model-arg", "layers=[1,1,1,1]",
         "--model-arg", "backward_flow=store", "--frames", "4", "--size", "16", "--batch-size", "2",
         "--val-fraction", "0.34", "--workers", "0", "--device", "cpu", "--epochs", "1"]


def test_train_and_evaluate_with_store_backward_flow(store, tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(train_command, [str(store), "--out", str(run), *TRAIN, "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs_done"] == 1
    assert summary["model"]["kwargs"]["backward_flow"] == "store"
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"] == ["rgb", "flow", "flow_backward"]
    ev = CliRunner().invoke(evaluate_command, [str(run), "--clips", "2", "--crops", "3", "--json"],
                            catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    assert json.loads(ev.stdout)["views"] == 6


def test_train_refuses_a_store_without_backward_flow(tmp_path):
    path = write_store(tmp_path / "forward_only", backward=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(train_command, [str(path), "--out", str(run), *TRAIN],
                                catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "no backward flow 'tvl1_backward'" in result.stderr and "--backward" in result.stderr
    assert not run.exists()
