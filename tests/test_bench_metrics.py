"""Flow metrics against hand-computed values, numpy and torch, batched and not, with masks."""
import math

import numpy as np
import pytest
import torch

from flowkit.bench import (BenchError, angular_error, end_point_error, epe_map, flow_metrics,
                           outlier_rate)


def field(u, v, h=3, w=4):
    flow = np.zeros((2, h, w), np.float32)
    flow[0], flow[1] = u, v
    return flow


def test_constant_error_3_4_gives_epe_5():
    gt = field(1.0, -2.0)
    flow = field(4.0, 2.0)
    assert end_point_error(flow, gt) == 5.0
    assert end_point_error(torch.from_numpy(flow), torch.from_numpy(gt)) == 5.0
    assert np.allclose(epe_map(flow, gt), 5.0) and epe_map(flow, gt).shape == (3, 4)


def test_known_angles():
    # (1, 0, 1) vs (0, 0, 1): 45 degrees. (1, 0, 1) vs (-1, 0, 1): orthogonal, 90 degrees.
    assert angular_error(field(1.0, 0.0), field(0.0, 0.0)) == pytest.approx(45.0)
    assert angular_error(field(1.0, 0.0), field(-1.0, 0.0)) == pytest.approx(90.0)
    assert angular_error(field(2.0, 3.0), field(2.0, 3.0)) == pytest.approx(0.0, abs=1e-5)


def test_valid_mask_excludes_pixels():
    gt = field(0.0, 0.0)
    flow = field(0.0, 0.0)
    flow[0, 0, 0] = 100.0                        # one bad pixel...
    valid = np.ones((3, 4), bool)
    valid[0, 0] = False                          # ...excluded
    assert end_point_error(flow, gt) == pytest.approx(100.0 / 12)
    assert end_point_error(flow, gt, valid) == 0.0
    assert outlier_rate(flow, gt) == pytest.approx(1 / 12)
    assert outlier_rate(flow, gt, valid) == 0.0
    assert math.isnan(end_point_error(flow, gt, np.zeros((3, 4), bool)))


def test_outlier_threshold_is_strict():
    gt = field(0.0, 0.0)
    flow = field(3.0, 4.0)                       # EPE exactly 5
    flow[:, 0, :] = 0.0                          # first row exact
    assert outlier_rate(flow, gt, threshold=5.0) == 0.0
    assert outlier_rate(flow, gt, threshold=4.999) == pytest.approx(8 / 12)
    nan_flow = field(np.nan, 0.0)
    assert outlier_rate(nan_flow, gt) == 1.0     # NaN estimates are wrong, not ignored


def test_unknown_ground_truth_is_ignored():
    gt = field(1.0, 1.0)
    gt[0, 1, 1] = 1e10                           # Middlebury unknown
    gt[1, 2, 2] = np.nan
    flow = field(1.0, 1.0)
    assert end_point_error(flow, gt) == 0.0


def test_batched_torch_and_shared_mask():
    gt = torch.zeros(2, 2, 3, 4)
    flow = torch.zeros(2, 2, 3, 4)
    flow[0, 0] = 3.0                             # item 0: EPE 3, item 1: EPE 0
    assert end_point_error(flow, gt) == pytest.approx(1.5)   # pixel-weighted over the batch
    valid = torch.zeros(2, 3, 4, dtype=torch.bool)
    valid[0] = True
    assert end_point_error(flow, gt, valid) == pytest.approx(3.0)
    shared = np.zeros((3, 4), bool)
    shared[0] = True                             # (H, W) mask applies to every item
    assert end_point_error(flow, gt, shared) == pytest.approx(1.5)
    emap = epe_map(flow.requires_grad_(), gt)
    assert isinstance(emap, torch.Tensor) and emap.shape == (2, 3, 4)
    emap[0, 0, 0].backward()                     # usable as a loss


def test_flow_metrics_dict_with_occlusion():
    gt = field(0.0, 0.0)
    flow = field(0.0, 0.0)
    flow[0, 2, :] = 6.0                          # last row wrong (occluded there)
    occluded = np.zeros((3, 4), bool)
    occluded[2] = True
    m = flow_metrics(flow, gt, occluded=occluded)
    assert set(m) == {"epe", "epe_noc", "outliers", "angular"}
    assert m["epe"] == pytest.approx(2.0)
    assert m["epe_noc"] == 0.0
    assert m["outliers"] == pytest.approx(1 / 3)
    expected_angle = math.degrees(math.acos(1 / math.sqrt(37))) / 3
    assert m["angular"] == pytest.approx(expected_angle)
    assert flow_metrics(flow, gt)["epe_noc"] == m["epe"]


def test_shape_errors():
    with pytest.raises(BenchError, match="differ in shape"):
        end_point_error(field(0, 0), field(0, 0, h=4))
    with pytest.raises(BenchError, match=r"\(2, H, W\)"):
        end_point_error(np.zeros((3, 3, 4)), np.zeros((3, 3, 4)))
    with pytest.raises(BenchError, match="valid must have shape"):
        end_point_error(field(0, 0), field(0, 0), valid=np.ones((4, 3), bool))


def test_flow_metrics_counts_nan_estimates_as_outliers():
    """An engine that outputs NaN got those pixels wrong: flow_metrics counts them as outliers
    (like outlier_rate), instead of a NaN comparison quietly scoring them as inliers."""
    nan = field(np.nan, np.nan)
    assert flow_metrics(nan, field(0.0, 0.0))["outliers"] == 1.0
    one = field(0.0, 0.0)
    one[:, 0, 0] = np.nan
    assert flow_metrics(one, field(0.0, 0.0))["outliers"] == pytest.approx(1 / 12)


def test_epe_noc_ignores_invalid_pixels():
    """epe_noc is over pixels that are valid and not occluded: a huge error where the ground truth
    is invalid changes neither epe nor epe_noc (a non-occluded but invalid pixel is still
    unknown)."""
    gt = field(0.0, 0.0)
    flow = gt.copy()
    flow[0, 2] = 50.0                              # error only on the last row
    valid = np.ones((3, 4), bool)
    valid[2] = False                               # ... which has no ground truth
    occluded = np.zeros((3, 4), bool)
    occluded[0, 0] = True
    m = flow_metrics(flow, gt, valid, occluded)
    assert m["epe"] == 0 and m["epe_noc"] == 0 and m["outliers"] == 0
