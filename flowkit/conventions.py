"""Conventions every part of flowkit shares (docs/architecture.md, "Conventions").

Flow is ``(..., 2, H, W)`` float in pixels at the stored resolution: channel 0 is u (+x right),
channel 1 is v (+y down), and ``flow[t]`` maps pixel p of frame t to ``p + flow(p)`` in frame t+1
(OpenCV's convention). Frames are ``(T, C, H, W)`` (a batch of pairs ``(B, C, H, W)`` twice),
intensities in [0, 255]; RGB channel order.
"""
from __future__ import annotations

#: The inputs a classifier can take from a store.
MODALITIES = ("rgb", "flow", "flow_backward")

#: Backward flow is stored beside the forward flow it reverses, under the forward name plus this
#: suffix: ``flow/tvl1_backward[t]`` maps pixel p of frame t+1 to ``p + flow(p)`` in frame t
#: (pair t computed the other way round), so both datasets hold ``T - 1`` pairs indexed alike.
BACKWARD_SUFFIX = "_backward"


def backward_name(name: str) -> str:
    """The store name of the backward flow of forward flow ``name``: ``"tvl1"`` ->
    ``"tvl1_backward"``."""
    return f"{name}{BACKWARD_SUFFIX}"


def is_backward(name: str) -> bool:
    """Whether the flow dataset ``name`` holds backward flow (frame t+1 -> frame t)."""
    return name.endswith(BACKWARD_SUFFIX)

#: ImageNet statistics of RGB in [0, 1] (torchvision's), for networks pretrained on it.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: L2-normalisation floor of feature vectors in cosine similarities: a zero vector (zero padding,
#: a flat patch) has cosine 0 with anything (cost volumes, torch and CUDA alike).
COSINE_EPS = 1e-6

#: BT.601 luma weights of R, G, B: OpenCV's ``COLOR_RGB2GRAY``, used by every engine on RGB.
LUMA_RGB = (0.299, 0.587, 0.114)

__all__ = ["MODALITIES", "BACKWARD_SUFFIX", "backward_name", "is_backward", "IMAGENET_MEAN", "IMAGENET_STD", "COSINE_EPS", "LUMA_RGB"]
