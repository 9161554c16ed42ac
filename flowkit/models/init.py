"""Initialise backbones from a local torchvision-format ResNet state dict (ImageNet weights).

``load_torchvision_resnet(model, path)`` maps a torchvision ResNet checkpoint (``conv1.weight``,
``layer1.0.bn1.running_var``, ..., ``fc.weight``) onto a :class:`~flowkit.models.resnet.ResNet2d`,
a :class:`~flowkit.models.resnet3d.ResNet3d`, or every backbone of a registered classifier:

- 2D kernels ``(O, I, k, k)`` are inflated to the 3D kernels they meet: ``(O, I, 1, k, k)`` for the
  separable network (unsqueeze t), repeated over ``kt`` and divided by ``kt`` for inflated kernels
  (so a static clip gives the 2D network's activations, Carreira & Zisserman 2017);
- the first conv of a network with ``in_channels != 3`` (flow stacks) gets cross-modality init
  (Wang et al., TSN 2016): the RGB filters averaged over their 3 input channels, replicated to
  ``in_channels``;
- ``fc`` is loaded into the classifier's head only when the shapes match, else reported as skipped;
- parameters the 2D file cannot have (separable temporal convs ``*_t``) keep their initialisation
  and are reported as missing.

Classifiers take part by defining ``backbones() -> list[nn.Module]`` (ResNet2d / ResNet3d
instances) and optionally ``heads() -> list[nn.Linear | None]`` (the classifier on each backbone,
same order; None for a backbone without one). A model whose ResNet is split over several modules
(DDN: a shared stem and ``layer1``, then stages 2-4 in every branch) returns :func:`resnet_view`
modules: its own modules shown under torchvision's names, so the file's tensors load into them;
reports name every tensor by its name in the model (``appearance.stages.0.0.conv1.weight``).
``init_from_file(model, path)`` (``flowkit train --init FILE``) also accepts a checkpoint of the
model itself (keys of ``model.state_dict()``, optionally under ``"model"`` / ``"state_dict"``); a
file is taken for a torchvision ResNet by its own layout (:func:`is_torchvision_resnet`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .. import checkpoints
from ..errors import FlowkitError
from .resnet import ResNet2d
from .resnet3d import ResNet3d

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a local ``torch.save`` file (``weights_only=True``), unwrapped and de-``module.``-ed.

    A dict holding the state dict under ``state_dict`` / ``model`` / ``model_state_dict`` /
    ``model_state`` (training checkpoints) is unwrapped; DataParallel's ``module.`` prefix is removed
    (:func:`flowkit.checkpoints.state_dict_of`).
    """
    obj = checkpoints.read_torch_file(path, what="weights file", hint=(
        "give a local torchvision ResNet state dict, e.g. written by "
        "torch.save(resnet18(weights=...).state_dict(), FILE)"))
    return checkpoints.state_dict_of(obj, str(path))


def is_torchvision_resnet(state: dict) -> bool:
    """Whether ``state`` has torchvision's ResNet layout: ``conv1.weight`` and ``layer1`` ..
    ``layer4`` at its top level (``fc`` optional), whatever model it is meant for."""
    stages = {key.split(".", 1)[0] for key in state if key.startswith("layer")}
    return "conv1.weight" in state and {"layer1", "layer2", "layer3", "layer4"} <= stages


class _ResNetView(nn.Module):
    """Existing modules registered under other names (see :func:`resnet_view`)."""

    def __init__(self, parts: dict[str, nn.Module]):
        super().__init__()
        for name, module in parts.items():
            self.add_module(name, module)


def resnet_view(**parts: nn.Module) -> nn.Module:
    """A module whose children are ``parts`` under the given (torchvision) names, e.g.
    ``resnet_view(layer2=branch.stages[0], layer3=branch.stages[1], ...)``: what ``backbones()``
    returns for a ResNet whose parts do not sit in one ResNet module. It shares the parts' tensors
    (loading into it loads into the model) and is built on demand, never registered in the model,
    so the model's state dict keeps its own names. Parts with no torchvision counterpart may be
    given too (e.g. an entry conv as ``entry``): they are reported as missing."""
    return _ResNetView(parts)


def _is_temporal_only(key: str) -> bool:
    """Keys the 2D layout has no counterpart for (separable temporal convs and their BN)."""
    return any(part.endswith("_t") for part in key.split(".")[:-1])


def _convert(key: str, src: torch.Tensor, dst: torch.Tensor, source: str, where: str
             ) -> tuple[torch.Tensor, list[str]]:
    """``src`` reshaped for ``dst`` (inflation / cross-modality) and what was done to it."""
    done: list[str] = []
    if src.shape == dst.shape:
        return src.to(dst.dtype), done
    w = src
    if src.dim() == 4 and dst.dim() in (4, 5):
        o, i, kh, kw = src.shape
        od, idst = dst.shape[:2]
        if o == od and (kh, kw) == tuple(dst.shape[-2:]):
            if i != idst:
                if key != "conv1.weight":
                    w = None  # only the stem can change its input modality
                else:
                    w = w.mean(dim=1, keepdim=True).expand(o, idst, kh, kw).clone()
                    done.append("cross_modality")
            if w is not None and dst.dim() == 5:
                kt = dst.shape[2]
                w = w.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
                done.append("inflated")
            if w is not None and w.shape == dst.shape:
                return w.to(dst.dtype), done
    raise FlowkitError(f"{source}: key {key!r} has shape {tuple(src.shape)} but {where} needs "
                       f"{tuple(dst.shape)}; the file's ResNet depth/width does not match the model's")


def _targets(model: nn.Module) -> list[tuple[str, nn.Module, nn.Linear | None, str]]:
    """``(prefix, backbone, head, head_prefix)`` for a backbone or a classifier with ``backbones()``."""
    if isinstance(model, (ResNet2d, ResNet3d)):
        head = getattr(model, "fc", None)
        return [("", model, head if isinstance(head, nn.Linear) else None, "fc.")]
    if not hasattr(model, "backbones"):
        raise FlowkitError(f"{type(model).__name__} has no ResNet backbone to initialise "
                           f"(it defines no backbones() method)")
    backbones = list(model.backbones())
    heads = list(model.heads()) if hasattr(model, "heads") else [None] * len(backbones)
    if len(heads) != len(backbones):
        raise FlowkitError(f"{type(model).__name__}.heads() must match backbones() one to one")
    names = {id(m): n for n, m in model.named_modules()}

    def prefix(m: nn.Module | None, default: str) -> str:
        return names[id(m)] + "." if m is not None and names.get(id(m)) else default

    return [(prefix(b, ""), b, h, prefix(h, prefix(b, "") + "fc.")) for b, h in zip(backbones, heads)]


def load_resnet_state(model: nn.Module, state: dict[str, torch.Tensor], *, source: str = "state dict",
                      strict: bool = False) -> dict:
    """Load a torchvision-format ResNet ``state`` into ``model`` (see :func:`load_torchvision_resnet`)."""
    if "conv1.weight" not in state:
        first = ", ".join(list(state)[:3])
        raise FlowkitError(f"{source}: not a torchvision-format ResNet state dict (no 'conv1.weight'; "
                           f"keys start {first})")
    report: dict = {"source": source, "format": "torchvision", "loaded": [], "inflated": [],
                    "cross_modality": [], "missing": [], "skipped": {}, "unexpected": []}
    used: set[str] = set()
    targets = _targets(model)
    names = {id(m): n for n, m in model.named_modules()}
    any_head = any(head is not None for _, _, head, _ in targets)

    def model_key(backbone: nn.Module, prefix: str, key: str) -> str:
        """``key`` of ``backbone`` as the model names it (a view's parts keep their own names)."""
        owner, _, leaf = key.rpartition(".")
        name = names.get(id(backbone.get_submodule(owner) if owner else backbone))
        return f"{name}.{leaf}" if name else prefix + key

    for prefix, backbone, head, head_prefix in targets:
        own = backbone.state_dict()
        new = {}
        for key, value in own.items():
            where = model_key(backbone, prefix, key)
            if key not in state:
                report["missing"].append(where)
                continue
            new[key], done = _convert(key, state[key], value, source, where)
            used.add(key)
            report["loaded"].append(where)
            for what in done:
                report[what].append(where)
        backbone.load_state_dict(new, strict=False)
        for key in ("fc.weight", "fc.bias"):
            if key not in state:
                continue
            used.add(key)
            if head is None and any_head:
                continue  # a part without a classifier (DDN's stem); the heads report the fc
            param = getattr(head, key[3:], None) if head is not None else None
            where = head_prefix + key[3:]
            if param is None:
                report["skipped"][where] = f"{prefix.rstrip('.') or type(model).__name__} has no fc head"
            elif param.shape != state[key].shape:
                report["skipped"][where] = (f"shape {tuple(state[key].shape)} != head "
                                            f"{tuple(param.shape)} (other classes)")
            else:
                with torch.no_grad():
                    param.copy_(state[key])
                report["loaded"].append(where)
    report["unexpected"] = sorted(set(state) - used)
    if strict:
        missing = [k for k in report["missing"] if not _is_temporal_only(k)]
        if missing or report["unexpected"]:
            raise FlowkitError(f"{source}: strict load failed; missing {missing[:5]} "
                               f"unexpected {report['unexpected'][:5]}")
    return report


def load_torchvision_resnet(model: nn.Module, path: str | Path, *, strict: bool = False) -> dict:
    """Initialise ``model``'s ResNet backbone(s) from a local torchvision ResNet state-dict file.

    Args:
        model: a ResNet2d / ResNet3d, or a classifier with ``backbones()`` (and ``heads()``).
        path: file written by ``torch.save(state_dict, path)`` (read with ``weights_only=True``).
        strict: raise if a 2D-layout key of a backbone is missing from the file (temporal ``*_t``
            keys are never required) or the file has keys no backbone uses.

    Returns:
        report dict: ``loaded`` / ``inflated`` / ``cross_modality`` / ``missing`` (model keys, with
        the backbone's prefix, e.g. ``appearance.layer1.0.conv1_t.weight``), ``skipped`` (file key ->
        reason, e.g. fc with another class count), ``unexpected`` (file keys nothing used),
        ``source`` and ``format``.

    Raises:
        FlowkitError: unreadable file, not a ResNet state dict, or a shape that cannot be mapped
        (the message names the file and the key).
    """
    return load_resnet_state(model, read_state_dict(path), source=str(path), strict=strict)


def init_from_file(model: nn.Module, path: str | Path) -> dict:
    """``flowkit train --init FILE``: torchvision ResNet weights, or a checkpoint of this model.

    A file with torchvision's ResNet layout (:func:`is_torchvision_resnet`; or any file with
    ``conv1.weight`` for a model that has no ``conv1.weight`` of its own) goes through
    :func:`load_torchvision_resnet` into ``model.backbones()``. Otherwise its keys are matched
    against ``model.state_dict()``; tensors with equal shape are loaded, others are reported in
    ``skipped`` (e.g. ``fc`` for another class count). Raises FlowkitError naming the file when
    most of its tensors (or all its parameters) do not fit the model: it is another model's file.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    if (isinstance(model, (ResNet2d, ResNet3d)) or is_torchvision_resnet(state)
            or ("conv1.weight" in state and "conv1.weight" not in own)):
        return load_resnet_state(model, state, source=str(path))
    loadable, skipped = {}, {}
    for key, value in state.items():
        if key not in own:
            skipped[key] = "not in the model"
        elif own[key].shape != value.shape:
            skipped[key] = f"shape {tuple(value.shape)} != model {tuple(own[key].shape)}"
        else:
            loadable[key] = value
    params = dict(model.named_parameters())
    if not any(k in params for k in loadable) or len(skipped) > len(loadable):
        example = ", ".join(f"{k} ({why})" for k, why in list(skipped.items())[:3])
        raise FlowkitError(f"{path}: neither a torchvision ResNet state dict nor a checkpoint of "
                           f"model {getattr(model, 'model_name', '') or type(model).__name__!r}: "
                           f"{len(skipped)} of its {len(state)} tensors do not fit, e.g. {example}")
    model.load_state_dict(loadable, strict=False)
    return {"source": str(path), "format": "model", "loaded": sorted(loadable),
            "missing": sorted(set(own) - set(loadable)), "skipped": skipped, "inflated": [],
            "cross_modality": [], "unexpected": sorted(k for k in skipped if k not in own)}
