"""The TVNet end-to-end classifier ("End-to-End Learning of Motion Representation for Video
Understanding", Fan, Huang, Gan, Ermon, Gong & Huang, CVPR 2018), registered as ``tvnet``.

TVNet (:class:`flowkit.flow.tvnet.TVNet`, the engine's own network: unrolled TV-L1 with trainable
kernels) runs *inside* the model on consecutive RGB frames; its flow-like output is stacked, as the
temporal stream of a two-stream network stacks optical flow, into a 2D ResNet::

    rgb (B, 3, T, H, W) -> [0, 255] -> luma -> pairs (t, t+1), t = 0 .. T-2
        -> TVNet -> flow (B (T-1), 2, H, W) pixels -> / 20 -> stack (B, 2 (T-1), H, W)
        -> ResNet2d (``backbone``) -> global average pool -> ``fc`` -> motion logits (B, K)

Training loss ``L = L_c + lambda * L_f``: ``L_c`` the cross-entropy, ``L_f`` TVNet's unsupervised
flow loss on the same pairs (:func:`flowkit.flow.tvnet.flow_loss`: its data term weighted by the
TVNet's own TV-L1 lambda, 0.15, plus the smoothness term), returned as ``aux_loss = lambda * L_f``
with ``lambda = flow_lambda`` (0.1 by default). TVNet's parameters train at ``tvnet_lr_scale``
times the run's learning rate (their own optimiser group, :meth:`lr_scales`, no weight decay), or
not at all with ``freeze_tvnet=true`` (then TVNet is fixed TV-L1 and ``L_f`` is not computed). An
untrained TVNet is exactly TV-L1 with a fixed schedule, so training starts from classical flow;
``tvnet_weights=CKPT`` starts from ``flowkit train-flow tvnet`` weights instead.

``flow_source="store"`` replaces TVNet by the store's precomputed flow (``flowkit extract --method
tvl1``: the same scaling, the same classifier, and with ``--step 1`` the same pairs; the store's
flow of a clip frame always spans one video frame): the paper's "TV-L1 flow as input" baseline. ``rgb_stream=true`` adds an RGB network (a per-frame 2D ResNet, logits averaged over time,
as ``resnet2d``) and fuses the two streams late, softmax scores averaged with ``fusion`` =
(RGB weight, motion weight), the paper's 1:2 by default; each stream keeps its own cross-entropy.

With ``flow_source="tvnet"`` the model needs only RGB, for training and for evaluation. With
``"store"`` TVNet's keywords (``tvnet_weights``, ``freeze_tvnet``, ``tvnet_*``, ``flow_lambda``)
are refused: no TVNet is built to read them.

``frames`` is the clip length T (``flowkit train`` passes ``--frames``); the pairs are consecutive
clip frames, so with ``--step S`` TVNet's flow spans S video frames (the store's stays one), and with TSN ``--segments`` pairs
also join the last frame of one segment to the first of the next. ``tvnet_weights`` is read again
whenever the model is rebuilt (``flowkit evaluate``, ``--resume``), before the run's own weights
replace it (it fixes TVNet's architecture), so keep that file where it was: ``flowkit train``
records it by absolute path. ``frames`` given as a keyword must equal the clip length (the trainer
refuses another before it writes anything).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Optional, Sequence

import torch
from torch import nn

from ..conventions import IMAGENET_MEAN, IMAGENET_STD  # the data pipeline's, undone for TVNet
from ..errors import FlowkitError
from ..flow import ops
from ..flow.tvnet import TVNet, TVNetConfig, flow_loss, tvnet_from_checkpoint
from .base import VideoClassifier
from .branches import weighted_late_fusion
from .registry import register_model
from .resnet import ResNet2d, clip_input

FLOW_SOURCES = ("tvnet", "store")
#: Pixels mapped to 1 at the classifier's input (the store's float flow bound, DEFAULT 20 px).
FLOW_SCALE = 20.0
#: The paper's TVNet-50: 1 scale, 1 warp, 50 iterations.
DEFAULT_TVNET = {"scales": 1, "warps": 1, "iterations": 50}


@register_model("tvnet")
class TVNetClassifier(VideoClassifier):
    """TVNet inside a classifier (module docstring).

    Args:
        num_classes: K.
        frames: T, frames per clip (``flowkit train`` fills it in from ``--frames``); the motion
            network takes ``2 (T - 1)`` channels.
        depth, width, layers, dropout: the 2D ResNet of each stream.
        flow_source: ``"tvnet"`` (computed from ``rgb``) or ``"store"`` (the batch's ``flow``).
        flow_lambda: lambda of ``L = L_c + lambda * L_f`` (0: classification loss only).
        tvnet_lr_scale: TVNet's learning rate as a fraction of the run's.
        freeze_tvnet: keep TVNet fixed (its untrained state is TV-L1; or ``tvnet_weights``).
        tvnet_scales, tvnet_warps, tvnet_iterations: TVNet's architecture (default TVNet-50, or the
            checkpoint's with ``tvnet_weights``; given values must match the checkpoint).
        tvnet_weights: a ``flowkit train-flow tvnet`` checkpoint to start TVNet from.
        rgb_stream: add an RGB stream fused late with the motion stream.
        fusion: ``[rgb weight, motion weight]`` of the late fusion (the paper: 1:2).

    Inputs: ``rgb`` ``(B, 3, T, H, W)`` ImageNet-normalised (``flow_source="tvnet"`` or
    ``rgb_stream``); ``flow`` ``(B, 2L, T, H, W)`` and ``flow_bound`` ``(B,)`` with ``"store"``.
    Outputs: ``logits`` ``(B, K)``; ``aux_loss`` (``lambda * L_f``) while TVNet trains;
    ``stream_logits`` ``[rgb, motion]`` with ``rgb_stream``.
    """
    file_kwargs = ("tvnet_weights",)
    part_kwargs = {key: ("flow_source", "tvnet") for key in
                   ("flow_lambda", "tvnet_lr_scale", "freeze_tvnet", "tvnet_scales", "tvnet_warps",
                    "tvnet_iterations", "tvnet_weights")}

    def __init__(self, num_classes: int, frames: int = 16, depth: int = 18, width: int = 64,
                 layers: Optional[Sequence[int]] = None, dropout: float = 0.0,
                 flow_source: str = "tvnet", flow_lambda: float = 0.1, tvnet_lr_scale: float = 0.1,
                 freeze_tvnet: bool = False, tvnet_scales: Optional[int] = None,
                 tvnet_warps: Optional[int] = None, tvnet_iterations: Optional[int] = None,
                 tvnet_weights: Optional[str] = None, rgb_stream: bool = False,
                 fusion: Sequence[float] = (1.0, 2.0)):
        super().__init__(num_classes)
        if flow_source not in FLOW_SOURCES:
            raise FlowkitError(f"tvnet flow_source must be one of {', '.join(FLOW_SOURCES)}, got "
                               f"{flow_source!r}")
        # TVNet's keywords with store flow: recorded with the run, never read
        self.refuse_unused(flow_source=flow_source, flow_lambda=flow_lambda,
                           tvnet_lr_scale=tvnet_lr_scale, freeze_tvnet=freeze_tvnet,
                           tvnet_scales=tvnet_scales, tvnet_warps=tvnet_warps,
                           tvnet_iterations=tvnet_iterations, tvnet_weights=tvnet_weights)
        if int(frames) < 2:
            raise FlowkitError(f"tvnet needs clips of at least 2 frames (consecutive pairs), got "
                               f"frames={frames}; pass --frames 2 or more")
        if not flow_lambda >= 0 or not tvnet_lr_scale > 0:
            raise FlowkitError(f"tvnet flow_lambda must be >= 0 and tvnet_lr_scale > 0, got "
                               f"{flow_lambda} and {tvnet_lr_scale}")
        fusion = tuple(float(w) for w in fusion)
        if len(fusion) != 2 or min(fusion) < 0 or sum(fusion) <= 0:
            raise FlowkitError(f"tvnet fusion must be [rgb weight, motion weight], non-negative, "
                               f"got {list(fusion)}")
        self.frames, self.flow_source = int(frames), flow_source
        self.flow_lambda, self.tvnet_lr_scale = float(flow_lambda), float(tvnet_lr_scale)
        self.freeze_tvnet, self.rgb_stream, self.fusion = bool(freeze_tvnet), bool(rgb_stream), fusion
        motion_input = "rgb" if flow_source == "tvnet" else "flow"
        self.inputs = tuple(dict.fromkeys((["rgb"] if rgb_stream else []) + [motion_input]))
        self.flow_stack = 1
        self.min_frames = 2
        self.tvnet: Optional[TVNet] = None
        if flow_source == "tvnet":
            self.tvnet = self._build_tvnet(tvnet_weights, tvnet_scales, tvnet_warps, tvnet_iterations)
            if self.freeze_tvnet:
                self.tvnet.requires_grad_(False)
        self.backbone = ResNet2d(depth, 2 * (self.frames - 1), width, layers)
        self.dropout = nn.Dropout(float(dropout))
        self.fc = nn.Linear(self.backbone.stage_channels[-1], self.num_classes)
        if self.rgb_stream:
            self.rgb_backbone = ResNet2d(depth, 3, width, layers)
            self.rgb_fc = nn.Linear(self.rgb_backbone.stage_channels[-1], self.num_classes)
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1),
                             persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1),
                             persistent=False)

    @staticmethod
    def _build_tvnet(weights, scales, warps, iterations) -> TVNet:
        requested = {"scales": scales, "warps": warps, "iterations": iterations}
        if weights:
            net, _ = tvnet_from_checkpoint(weights, **requested)
            return net
        return TVNet(**{k: (DEFAULT_TVNET[k] if v is None else int(v)) for k, v in requested.items()})

    # ------------------------------------------------------------------------------ hooks

    def kwargs_without_files(self) -> dict | None:
        """The keywords with ``tvnet_weights`` dropped and its TVNet's scales, warps and
        iterations given instead; None for a checkpoint whose TV-L1 constants (tau, lambda,
        theta, zfactor) are not TVNet's defaults, which no keyword sets."""
        kw = {**self.model_kwargs, "tvnet_weights": None}
        if self.tvnet is None:
            return kw
        config, default = self.tvnet.config, TVNetConfig()
        if any(getattr(config, k) != getattr(default, k)
               for k in ("tau", "lambda_", "theta", "zfactor")):
            return None
        return {**kw, "tvnet_scales": config.scales, "tvnet_warps": config.warps,
                "tvnet_iterations": config.iterations}

    def backbones(self) -> list[nn.Module]:
        """``[backbone]`` (motion, cross-modality init) plus ``rgb_backbone`` with an RGB stream."""
        return [self.backbone] + ([self.rgb_backbone] if self.rgb_stream else [])

    def heads(self) -> list[nn.Linear]:
        return [self.fc] + ([self.rgb_fc] if self.rgb_stream else [])

    def lr_scales(self) -> dict[str, float]:
        """TVNet's parameters train at ``tvnet_lr_scale`` x the learning rate (none when frozen)."""
        return {"tvnet.": self.tvnet_lr_scale} if self.tvnet is not None and not self.freeze_tvnet else {}

    def describe(self) -> dict:
        out = {"flow_source": self.flow_source, "frames": self.frames, "flow_scale_px": FLOW_SCALE,
               "rgb_stream": self.rgb_stream,
               "fusion": {"rgb": self.fusion[0], "motion": self.fusion[1]} if self.rgb_stream else None}
        if self.tvnet is not None:
            out.update(flow_lambda=self.flow_lambda if not self.freeze_tvnet else 0.0,
                       loss="L_c + flow_lambda * L_f" if not self.freeze_tvnet and self.flow_lambda
                       else "L_c", tvnet_lr_scale=self.tvnet_lr_scale,
                       freeze_tvnet=self.freeze_tvnet, tvnet=asdict(self.tvnet.config))
        return out

    # ------------------------------------------------------------------------------ motion

    def tvnet_pairs(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Consecutive gray frames of an ImageNet-normalised clip: ``i0``, ``i1``
        ``(B (T-1), 1, H, W)`` in [0, 255] (pair ``b * (T-1) + t`` is frames t, t+1 of clip b)."""
        b, _, t, h, w = rgb.shape
        frames = ((rgb * self.rgb_std + self.rgb_mean) * 255.0).clamp(0, 255)
        gray = ops.to_gray(frames.transpose(1, 2).reshape(b * t, 3, h, w)).reshape(b, t, 1, h, w)
        return (gray[:, :-1].reshape(b * (t - 1), 1, h, w),
                gray[:, 1:].reshape(b * (t - 1), 1, h, w))

    def motion(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The flows of the clip's T-1 pairs in pixels, ``(B, T-1, 2, H, W)``, and ``aux_loss``
        (``lambda * L_f`` while TVNet trains, else None)."""
        if self.flow_source == "store":
            flow = inputs["flow"]
            if flow.dim() != 5 or flow.shape[1] < 2 or flow.shape[1] % 2:
                raise FlowkitError(f"tvnet expects flow of shape (B, 2L, T, H, W), got "
                                   f"{tuple(flow.shape)}")
            self._check_frames(flow)
            bound = inputs.get("flow_bound")
            bound = flow.new_full((flow.shape[0],), FLOW_SCALE) if bound is None else bound
            pixels = flow[:, :2, :-1] * bound.to(flow.dtype).view(-1, 1, 1, 1, 1)
            return pixels.transpose(1, 2), None
        rgb = clip_input(self, inputs, "rgb", 3)
        self._check_frames(rgb)
        aux = None
        # The unrolled TV-L1 iterations run in float32 also under AMP (float16 would lose them).
        with torch.autocast(rgb.device.type, enabled=False):
            i0, i1 = self.tvnet_pairs(rgb.float())
            # [0, 255] by tvnet_pairs: no intensity check (a dark clip must not stop training)
            if self.freeze_tvnet:
                with torch.no_grad():
                    flow = self.tvnet(i0, i1, check=False)
            else:
                flow = self.tvnet(i0, i1, check=False)
                if self.flow_lambda > 0:
                    aux = self.flow_lambda * flow_loss(i0, i1, flow, self.tvnet.config.lambda_)
        b = rgb.shape[0]
        return flow.reshape(b, self.frames - 1, 2, *flow.shape[-2:]), aux

    def _check_frames(self, x: torch.Tensor) -> None:
        if x.shape[2] != self.frames:
            raise FlowkitError(f"tvnet was built for clips of {self.frames} frames, got "
                               f"{x.shape[2]} (input {tuple(x.shape)}); create the model with "
                               f"frames={x.shape[2]} (flowkit train sets it from --frames)")

    # ------------------------------------------------------------------------------ forward

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict:
        self.check_inputs(inputs)
        flow, aux = self.motion(inputs)
        b, _, _, h, w = flow.shape
        stacked = (flow / FLOW_SCALE).reshape(b, 2 * (self.frames - 1), h, w)
        motion_logits = self.fc(self.dropout(self.backbone(stacked).mean(dim=(2, 3))))
        out: dict = {}
        if aux is not None:
            out["aux_loss"] = aux
        if not self.rgb_stream:
            out["logits"] = motion_logits
            return out
        rgb = clip_input(self, inputs, "rgb", 3)
        rgb_logits = self.rgb_fc(self.dropout(self.rgb_backbone(rgb).mean(dim=(3, 4)).transpose(1, 2)))
        streams = [rgb_logits.mean(dim=1), motion_logits]
        out["logits"] = weighted_late_fusion(streams, self.fusion)
        out["stream_logits"] = streams
        return out


__all__ = ["FLOW_SOURCES", "FLOW_SCALE", "TVNetClassifier"]
