"""Ground truth and accuracy for optical flow: ``.flo`` IO, EPE / angular / outlier metrics, and
ground-truth pairs (synthetic from real photographs, a real stereo pair, Middlebury / Sintel folders).

    from flowkit.bench import synthetic_pairs, flow_metrics
    for pair in synthetic_pairs(16):
        flow = ...                                   # (2, H, W) estimate for pair.frame0 -> pair.frame1
        print(pair.name, flow_metrics(flow, pair.flow, pair.valid, pair.occluded))
"""
from .flo import FLO_MAGIC, BenchError, read_flo, write_flo
from .metrics import angular_error, end_point_error, epe_map, flow_metrics, outlier_rate
from .synthetic import KINDS, PHOTOS, FlowPair, load_flow_folder, stereo_pairs, synthetic_pairs

__all__ = [
    "BenchError", "FLO_MAGIC", "read_flo", "write_flo",
    "end_point_error", "epe_map", "angular_error", "outlier_rate", "flow_metrics",
    "FlowPair", "KINDS", "PHOTOS", "synthetic_pairs", "stereo_pairs", "load_flow_folder",
]
