"""TrajectoryNet (Zhao, Xiong, Lin, NeurIPS 2018) and its separable-3D baseline ``s3d``.

``s3d``: the separable-3D ResNet (``ResNet3d(kind="separable")``: every spatial conv followed by a
temporal conv ``convN_t`` of size 3), global average pooling over (T, H, W), ``fc``.

``trajectorynet``: the same network with one temporal conv replaced by a trajectory convolution
(:class:`~flowkit.models.trajectory.TrajectoryConv`), by default the paper's choice, the temporal
part of the first conv of ``res3b`` (``"layer2.1.conv1_t"`` for ResNet-18, at 1/8 of the input
resolution; ``trajectory_block`` picks another). Apart from that module the two have the same
parameter names and shapes (with ``offsets=False`` even the replaced module's weight has the same
name and shape), so an ``s3d`` checkpoint loads into ``trajectorynet`` and vice versa; with zero
flow both compute the same.

Where the trajectories come from (``flow_source``):

``"store"``  the batch's ``flow`` ``(B, 2L, T, H, W)`` (the first flow of the stack is used), in
    pixels ``flow * flow_bound``; pooled to the block's resolution (``flow_pool="avg"`` block mean,
    or ``"max"``: the vector of largest magnitude per block) and divided by the block's stride
    (:func:`~flowkit.models.trajectory.downsample_flow`). The flow at clip position t is the flow
    from frame ``i_t`` to ``i_t + 1``; with a frame step of 1 (the paper's dense clips) that is the
    flow to the next clip frame. The backward flow comes from ``backward_flow``:

    ``"derived"`` (default)  ``b_t ~= -f_{t-1}``, the previous position's forward flow negated at
        the same pixel (:func:`~flowkit.models.trajectory.backward_from_forward`): exact for
        uniform flow, off by about ``grad(f) b`` elsewhere (at moving edges and occlusions); with
        a frame step > 1 it is the flow measured at frame ``i_{t-1}``.
    ``"store"``  the batch's ``flow_backward`` ``(B, 2, T, H, W)``, the store's backward flow from
        frame ``i_t`` to ``i_t - 1`` (``flow/<name>_backward``, written by ``flowkit extract
        --backward``), in pixels ``flow_backward * flow_bound``, pooled and divided by the stride
        exactly as the forward flow. The store needs that dataset; the model's ``inputs`` name it.
``"motionnet"``  a :class:`~flowkit.flow.motionnet.MotionNet` inside the model predicts the flow
    of the RGB clip (ImageNet-normalised RGB is mapped back to [0, 255], what MotionNet takes). Its
    prediction at the block's scale is used directly (MotionNet's scale 1/8 grid is the ResNet's
    stage-2 grid; otherwise the full-resolution flow is pooled as above). It is fine-tuned with the
    classifier: ``L = gamma * L_unsup + L_cls``, returned as ``aux_loss = gamma * unsupervised_loss``
    (gamma = 0.01 by default). Clips longer than MotionNet's M+1 frames are cut into windows
    starting at 0, M, 2M, ... (the last one moved back to end at the clip's last frame); shorter
    clips are padded by repeating their last frame. Pass trained weights with
    ``motionnet_weights=PATH`` (``flowkit train-flow motionnet``); without them MotionNet starts
    from random weights and learns only from this loss. The file is read again whenever the model
    is rebuilt (``flowkit evaluate``, ``--resume``; it fixes MotionNet's architecture), so keep it
    where it was: ``flowkit train`` records it by absolute path.

With MotionNet the backward flow is always derived. MotionNet's keywords (``motionnet_weights``,
``motionnet_width``, ``motionnet_frames``, ``gamma``) with ``flow_source="store"`` are refused:
nothing would read them.

``offsets=True`` also feeds the BatchNorm-normalised trajectory offsets to the trajectory conv as
extra input channels (the paper's "trajectory offsets as motion features").
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..conventions import IMAGENET_MEAN, IMAGENET_STD  # the data pipeline's, undone for MotionNet
from ..errors import FlowkitError
from ..flow import motionnet as motionnet_module
from ..flow.motionnet import MotionNet, unsupervised_loss
from .registry import register_model
from .resnet import clip_input
from .resnet3d import ResNet3dClassifier
from .trajectory import TrajectoryConv, resize_flow_to

FLOW_SOURCES = ("store", "motionnet")
BACKWARD_FLOWS = ("derived", "store")
FLOW_POOLS = ("avg", "max")
#: MotionNet-(11), the paper's default, when no checkpoint fixes M.
DEFAULT_MOTIONNET_FRAMES = 10
DEFAULT_FLOW_BOUND = 20.0


@register_model("s3d")
class S3D(ResNet3dClassifier):
    """Separable-3D ResNet classifier (TrajectoryNet's baseline) on ``rgb`` or ``flow``.

    Submodules ``backbone`` (``ResNet3d(kind="separable")``), ``dropout``, ``fc``.
    Inputs: ``inputs[modality]`` ``(B, C, T, H, W)``. Output: ``{"logits": (B, K)}``.
    """

    def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
                 layers: Optional[Sequence[int]] = None, modality: str = "rgb", flow_stack: int = 1,
                 dropout: float = 0.0, temporal_init: str = "default"):
        super().__init__(num_classes, depth, width, layers, modality, flow_stack, dropout,
                         kind="separable", temporal_init=temporal_init)


def _split_block(name: str) -> tuple[str, str]:
    parent, _, attr = name.rpartition(".")
    return parent, attr


@register_model("trajectorynet")
class TrajectoryNet(ResNet3dClassifier):
    """S3D with a trajectory convolution in place of one temporal conv (module docstring).

    Args:
        num_classes: K.
        depth, width, layers, dropout, temporal_init: as ``s3d``.
        trajectory_block: dotted name, inside the backbone, of the temporal conv to replace
            (``backbone.temporal_convs()`` lists them). Default (None): the paper's res3b1, the
            first temporal conv of the second block of stage 2: ``"layer2.1.conv1_t"`` for
            ResNet-18/34 (``"layer2.1.conv2_t"`` in a Bottleneck, the only one it has; block 0 when
            ``layers`` gives stage 2 a single block).
        flow_source: ``"store"`` (input ``flow``) or ``"motionnet"`` (predicted from ``rgb``).
        backward_flow: ``"derived"`` (``b_t ~= -f_{t-1}``) or ``"store"`` (input
            ``flow_backward``; needs ``flow_source="store"``).
        flow_pool: ``"avg"`` or ``"max"`` pooling of full-resolution flow to the block's grid.
        offsets: concatenate the BN-normalised trajectory offsets as motion features.
        gamma: weight of MotionNet's unsupervised loss (``flow_source="motionnet"``).
        motionnet_weights: path of a MotionNet checkpoint (``flowkit train-flow motionnet``).
        motionnet_width: width multiplier of a MotionNet built without a checkpoint.
        motionnet_frames: M of such a MotionNet (default: the checkpoint's, else 10).

    Inputs: ``rgb`` ``(B, 3, T, H, W)`` ImageNet-normalised; ``flow`` ``(B, 2L, T, H, W)`` and
    ``flow_bound`` ``(B,)`` for ``flow_source="store"``; ``flow_backward`` ``(B, 2, T, H, W)`` for
    ``backward_flow="store"`` (both flows divided by ``flow_bound``).
    Outputs: ``logits`` (B, K); ``aux_loss`` (scalar, already weighted) with ``"motionnet"``.
    """
    file_kwargs = ("motionnet_weights",)
    part_kwargs = {key: ("flow_source", "motionnet") for key in
                   ("gamma", "motionnet_weights", "motionnet_width", "motionnet_frames")}

    def __init__(self, num_classes: int, depth: int = 18, width: int = 64,
                 layers: Optional[Sequence[int]] = None, dropout: float = 0.0,
                 temporal_init: str = "default", trajectory_block: Optional[str] = None,
                 flow_source: str = "store", flow_pool: str = "avg", offsets: bool = False,
                 gamma: float = 0.01, motionnet_weights: Optional[str] = None,
                 motionnet_width: float = 1.0, motionnet_frames: Optional[int] = None,
                 backward_flow: str = "derived"):
        super().__init__(num_classes, depth, width, layers, "rgb", 1, dropout, kind="separable",
                         temporal_init=temporal_init)
        if flow_source not in FLOW_SOURCES:
            raise FlowkitError(f"trajectorynet flow_source must be one of {', '.join(FLOW_SOURCES)}, "
                               f"got {flow_source!r}")
        if flow_pool not in FLOW_POOLS:
            raise FlowkitError(f"trajectorynet flow_pool must be one of {', '.join(FLOW_POOLS)}, "
                               f"got {flow_pool!r}")
        if backward_flow not in BACKWARD_FLOWS:
            raise FlowkitError(f"trajectorynet backward_flow must be one of "
                               f"{', '.join(BACKWARD_FLOWS)}, got {backward_flow!r}")
        if backward_flow == "store" and flow_source != "store":
            raise FlowkitError("trajectorynet backward_flow='store' reads the store's backward "
                               "flow beside its forward flow: it needs flow_source='store'")
        # MotionNet's keywords with store flow: recorded with the run, never read
        self.refuse_unused(flow_source=flow_source, gamma=gamma,
                           motionnet_weights=motionnet_weights, motionnet_width=motionnet_width,
                           motionnet_frames=motionnet_frames)
        self.flow_source, self.flow_pool, self.gamma = flow_source, flow_pool, float(gamma)
        self.backward_flow = backward_flow
        self.trajectory_block = trajectory_block or self._default_block()
        self._replace_block(self.trajectory_block, bool(offsets))
        #: Input pixels per feature pixel at the trajectory conv (4, 8, 16, 32 in stages 1-4), read
        #: from the backbone: full-resolution flow is pooled and divided by exactly this.
        self.trajectory_stride = self.backbone.output_stride(self.trajectory_block)
        self.inputs = ("rgb", "flow") if flow_source == "store" else ("rgb",)
        if backward_flow == "store":
            self.inputs += ("flow_backward",)
        self.motionnet: Optional[MotionNet] = None
        if flow_source == "motionnet":
            self.motionnet = self._build_motionnet(motionnet_weights, motionnet_width,
                                                   motionnet_frames)
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1),
                             persistent=False)
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1),
                             persistent=False)

    @property
    def trajectory(self) -> TrajectoryConv:
        """The trajectory conv inside the backbone (not registered twice: names stay s3d's)."""
        return self.backbone.get_submodule(self.trajectory_block)

    # -------------------------------------------------------------------------------- building

    def kwargs_without_files(self) -> dict | None:
        """The keywords with ``motionnet_weights`` dropped and its MotionNet's width and frames
        given instead (all a MotionNet checkpoint fixes besides the weights)."""
        kw = {**self.model_kwargs, "motionnet_weights": None}
        if self.motionnet is not None:
            kw.update(motionnet_width=self.motionnet.width,
                      motionnet_frames=self.motionnet.num_frames)
        return kw

    def _default_block(self) -> str:
        index = min(1, len(self.backbone.layer2) - 1)
        conv = "conv1_t" if self.backbone.block_kind == "basic" else "conv2_t"
        return f"layer2.{index}.{conv}"

    def _replace_block(self, name: str, offsets: bool) -> None:
        names = [n for n, _ in self.backbone.temporal_convs()]
        if name not in names:
            raise FlowkitError(f"trajectory_block {name!r} is not a temporal conv of this backbone; "
                               f"choose one of: {', '.join(names)}")
        parent_name, attr = _split_block(name)
        parent = self.backbone.get_submodule(parent_name) if parent_name else self.backbone
        conv = TrajectoryConv.from_conv3d(getattr(parent, attr), offsets=offsets)
        setattr(parent, attr, conv)

    @staticmethod
    def _build_motionnet(weights: Optional[str], width: float, frames: Optional[int]) -> MotionNet:
        if weights:
            ckpt = motionnet_module.load_checkpoint(weights)
            net = motionnet_module.model_from_checkpoint(ckpt, weights)
            if frames is not None and int(frames) != net.num_frames:
                raise FlowkitError(f"trajectorynet: motionnet_frames={frames} does not match the "
                                   f"checkpoint {weights} (num_frames={net.num_frames}); leave it out")
            return net
        return MotionNet(num_frames=int(frames or DEFAULT_MOTIONNET_FRAMES), width=float(width))

    # -------------------------------------------------------------------------------- flow

    def _store_flow(self, inputs: dict[str, torch.Tensor], rgb: torch.Tensor,
                    name: str = "flow") -> torch.Tensor:
        """The batch's ``name`` (``flow`` or ``flow_backward``) as ``(B, 2, T, H, W)`` pixels at the
        clip's resolution (the first flow of a stack)."""
        flow = inputs[name]
        b, _, t, h, w = rgb.shape
        if flow.dim() != 5 or flow.shape[1] < 2 or flow.shape[1] % 2 \
                or (flow.shape[0], *flow.shape[2:]) != (b, t, h, w):
            raise FlowkitError(f"trajectorynet: {name} {tuple(flow.shape)} does not match rgb "
                               f"{tuple(rgb.shape)}; expected (B, 2L, T, H, W) with rgb's B, T, H, W")
        bound = inputs.get("flow_bound")
        if bound is None:
            bound = flow.new_full((b,), DEFAULT_FLOW_BOUND)
        return flow[:, :2].to(rgb.dtype) * bound.to(rgb.dtype).view(-1, 1, 1, 1, 1)

    def _windows(self, t: int) -> list[int]:
        m = self.motionnet.num_frames
        return [min(s, max(t - 1 - m, 0)) for s in range(0, max(t - 1, 1), m)]

    def _motionnet_flow(self, rgb: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """MotionNet on the clip: per-scale clip flows ``(B, 2, T, h_s, w_s)`` (finest 1/2 first,
        pixels at that scale) and the weighted unsupervised loss."""
        b, _, t, h, w = rgb.shape
        m = self.motionnet.num_frames
        frames = ((rgb * self.rgb_std + self.rgb_mean) * 255.0).clamp(0, 255).transpose(1, 2)
        if t < m + 1:   # (B, T, 3, H, W): repeat the last frame up to M+1
            frames = torch.cat([frames, frames[:, -1:].expand(-1, m + 1 - t, -1, -1, -1)], dim=1)
        starts = self._windows(t)
        windows = torch.stack([frames[:, s: s + m + 1] for s in starts], dim=1)  # (B, n, M+1, ...)
        windows = windows.reshape(b * len(starts), m + 1, 3, h, w)
        flows = self.motionnet(windows)                                  # 5 x (B n, 2M, h_s, w_s)
        loss = unsupervised_loss(windows, flows)
        # Clip flow j (frame j -> j+1) from the first window that holds it.
        source = {}
        for wi, s in enumerate(starts):
            for j in range(m):
                if s + j < t - 1 and s + j not in source:
                    source[s + j] = (wi, j)
        per_scale = []
        for f in flows:
            f = f.reshape(b, len(starts), m, 2, *f.shape[-2:])
            pairs = [f[:, source[j][0], source[j][1]] for j in range(t - 1)]
            pairs.append(torch.zeros_like(f[:, 0, 0]))                    # t = T-1 -> T: unused
            per_scale.append(torch.stack(pairs, dim=2))                  # (B, 2, T, h_s, w_s)
        return per_scale, self.gamma * loss

    def _flow_provider(self, full_size: tuple[int, int], full: Optional[torch.Tensor] = None,
                       scales: Sequence[torch.Tensor] = (),
                       full_backward: Optional[torch.Tensor] = None):
        """A callable ``(h, w) -> (forward_flow, backward_flow)`` for
        :meth:`TrajectoryConv.set_flow`: MotionNet's scale 1/s if the block's stride s is one of its
        scales (``scales[k]`` is scale 1/2^(k+1)), else ``full`` (or MotionNet's finest scale
        upsampled to ``full_size``) pooled by s (:func:`resize_flow_to`, which checks the grid);
        the backward flow is ``full_backward`` pooled alike, or None (the conv derives it) without
        one. Flows ``(B, 2, T, H, W)`` in pixels of their resolution."""
        stride = self.trajectory_stride

        def provide(size: tuple[int, int]):
            for k, f in enumerate(scales):
                if 2 ** (k + 1) == stride and tuple(f.shape[-2:]) == tuple(size):
                    return f, None
            base = full
            if base is None:
                fine = scales[0]
                b, _, t, hs, ws = fine.shape
                # full_resolution takes MotionNet's list of scales and upsamples the first one.
                up = MotionNet.full_resolution([fine.transpose(1, 2).reshape(b * t, 2, hs, ws)],
                                               full_size)
                base = up.reshape(b, t, 2, *up.shape[-2:]).transpose(1, 2)
            backward = (None if full_backward is None
                        else resize_flow_to(full_backward, size, self.flow_pool, stride=stride))
            return resize_flow_to(base, size, self.flow_pool, stride=stride), backward
        return provide

    # -------------------------------------------------------------------------------- forward

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rgb = clip_input(self, inputs, "rgb", 3)
        out: dict[str, torch.Tensor] = {}
        full_size = tuple(rgb.shape[-2:])
        if self.flow_source == "store":
            backward = (self._store_flow(inputs, rgb, "flow_backward")
                        if self.backward_flow == "store" else None)
            provider = self._flow_provider(full_size, full=self._store_flow(inputs, rgb),
                                           full_backward=backward)
        else:
            scales, out["aux_loss"] = self._motionnet_flow(rgb)
            provider = self._flow_provider(full_size, scales=scales)
        self.trajectory.set_flow(provider)
        try:
            features = self.backbone(rgb).mean(dim=(2, 3, 4))
        finally:
            self.trajectory.set_flow(None)
        out["logits"] = self.fc(self.dropout(features))
        return out


__all__ = ["BACKWARD_FLOWS", "FLOW_POOLS", "FLOW_SOURCES", "S3D", "TrajectoryNet"]
