"""Torch datasets of clips from a flowkit store: RGB frames, flow stacks and backward flow, aligned
per frame.

Reproducible randomness without ``worker_init_fn``. Every random choice for item ``index`` (clip
position, crop, flip) comes from a generator built from ``(seed, epoch, index)``
(:meth:`ClipDataset.rng`), never from global or per-worker state. So a sample depends only on those
three numbers: the same whatever the number of DataLoader workers or which worker reads it, and a
run resumed at epoch ``e`` after ``dataset.set_epoch(e)`` sees exactly the samples it would have
seen. Call ``set_epoch`` before iterating a DataLoader each epoch; with ``persistent_workers=True``
the workers keep the dataset copy they were started with, so leave that option off.

HDF5 files are opened lazily in the process that reads (FlowStore keeps per-process handles and
drops inherited ones after a fork); the constructor closes the handles it used to read metadata, so
nothing is open when DataLoader workers fork. The dataset pickles (spawned workers reopen files).

The default ``torch.utils.data.default_collate`` batches items; no custom collate is needed.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..conventions import backward_name, is_backward
from ..errors import FlowkitError, shell_word
from ..store import FlowStore
from .samplers import flow_indices
from .splits import MAX_LISTED, as_store, label_map, missing_keys_error
from .transforms import MODALITIES, Normalize, Transform

FLOAT_FLOW_BOUND = 20.0  # pixels: flow_bound of float16 flow (uint8 flow has its own)


@dataclass(frozen=True)
class VideoInfo:
    """What the dataset needs to know about one video, read once at construction."""

    key: str
    num_frames: int
    label: int
    flow_bound: float  # pixels


class ClipDataset(Dataset):
    """Clips of the videos ``keys`` of ``store`` for a classifier.

    Args:
        store: a :class:`~flowkit.store.FlowStore` or its path.
        keys: store keys (default: all videos of the store, sorted); repeats are allowed.
        inputs: modalities to load, distinct names among ``"rgb"``, ``"flow"`` and
            ``"flow_backward"`` (a model's ``model.inputs``).
        sampler: clip sampler (:mod:`flowkit.data.samplers`), called as
            ``sampler(num_frames, rng) -> list of (T,) frame-index arrays``; with ``"flow"`` among
            the inputs as ``sampler(num_frames, rng, flow_stack=L)``, so that it places the clips
            with every position's stack of ``L`` flows inside the video's ``num_frames - 1`` flows
            (the library's samplers do; a sampler whose signature takes no ``flow_stack`` is called
            without it, and stacks past the last flow are clamped).
        transform: called as ``transform(sample, rng) -> sample`` on ``rgb (3, T, H, W)`` 0..255,
            ``flow (2L, T, H, W)`` and ``flow_backward (2, T, H, W)`` pixels
            (:mod:`flowkit.data.transforms`); it must normalise
            (:func:`~flowkit.data.transforms.train_transform` and ``test_transform`` do). Default:
            :class:`~flowkit.data.transforms.Normalize` only.
        flow_name: flow dataset to read (the extraction ``--method``); backward flow is read from
            ``flow/<flow_name>_backward`` (:func:`~flowkit.conventions.backward_name`).
        flow_stack: L, consecutive flows stacked per clip position (a model's ``model.flow_stack``);
            forward flow only: backward flow is one flow per position.
        seed: base of every random choice (non-negative).
        classes: the class names labels index (a trained run's); a store whose class list does
            not begin with them has its labels matched to them by name, -1 for a class not among
            them (:func:`~flowkit.data.splits.label_map`). Default: the store's.
        views: whether items carry a leading views dim. ``None``: exactly when
            ``sampler.clips * transform.crops > 1``; ``True``: always (evaluation with 1 view);
            ``False``: never (an error for multi-view samplers or transforms).
        flow_bound: pixels mapped to 1, what every flow is divided by (a trained run's
            ``config.flow_bound``, so that a store of another flow codec gives the model the
            scale it was trained on). Default: each video's bound in the store (20 for float
            flow, a uint8 codec's own).

    ``dataset[i]`` is a dict (``V = num_views = clips * crops``, clip-major: view ``c * crops + k``
    is crop ``k`` of clip ``c``):

    - ``rgb``  float32 ``(3, T, h, w)`` or ``(V, 3, T, h, w)``, ImageNet-normalised;
    - ``flow`` float32 ``(2L, T, h, w)`` or ``(V, 2L, T, h, w)``: at clip position ``t`` (frame
      ``i_t``) flows ``i_t .. i_t + L - 1`` as ``(u_0, v_0, u_1, ...)``, divided by ``flow_bound``.
      The sampler keeps them inside the video (``i_t <= (num_frames - 1) - L``, so the clip's
      frames end ``L`` frames before the video does); only a video too short for one clip and its
      stacks (``num_frames < span + L``) has its frames and flows clamped to the last ones;
    - ``flow_backward`` float32 ``(2, T, h, w)`` or ``(V, 2, T, h, w)``: at clip position ``t`` the
      backward flow from frame ``i_t`` to ``i_t - 1`` (store pair ``i_t - 1`` of the backward
      dataset; zeros at ``i_t = 0``), divided by the same ``flow_bound``;
    - ``flow_bound`` float32 scalar (pixels; the ``flow_bound`` given, else the store's bound for
      uint8 flow, that of the forward flow when the store has it, else 20);
    - ``label`` int64 scalar (0-based, -1 if unlabelled); ``index`` int64 scalar (``i``).

    Only the requested modalities (and ``flow_bound`` with either flow) are present.
    """

    def __init__(self, store: FlowStore | str | os.PathLike, keys: Sequence[str] | None = None, *,
                 inputs: Sequence[str] = ("rgb",), sampler, transform: Transform | None = None,
                 flow_name: str = "tvl1", flow_stack: int = 1, seed: int = 0,
                 views: bool | None = None, classes: Sequence[str] | None = None,
                 flow_bound: float | None = None):
        # a class is callable too: RandomClipSampler for RandomClipSampler(...) fails at ds[0]
        if (not callable(sampler) or isinstance(sampler, type)
                or not (transform is None or callable(transform)) or isinstance(transform, type)):
            raise FlowkitError("sampler must be a clip sampler (e.g. RandomClipSampler(frames=8)) "
                               "and transform a callable (sample, rng) -> sample or None")
        self.store = as_store(store)
        self.inputs = _check_inputs(inputs)
        self.sampler = sampler
        self.transform = transform if transform is not None else Normalize()
        self.flow_name = str(flow_name)
        self.flow_stack = _non_negative("flow_stack", flow_stack, minimum=1)
        self.seed = _non_negative("seed", seed)
        self.flow_bound = _bound(flow_bound)
        self.epoch = 0
        self.keys = _check_keys(self.store, keys)
        self.clips = int(getattr(sampler, "clips", 1))
        self.crops = int(getattr(self.transform, "crops", 1))
        self.num_views = self.clips * self.crops
        self.views = self._check_views(views)
        # Forward flow stacks must fit after each clip position; RGB and backward flow (one pair
        # before the position) need only the frames, and keep the plain call.
        self._sampler_args = ({"flow_stack": self.flow_stack}
                             if "flow" in self.inputs and _takes_flow_stack(sampler) else {})
        try:
            # a dataset of views is scored, not trained on: a missing flow's hint says so
            info = read_video_info(self.store, sorted(set(self.keys)), self.inputs, self.flow_name,
                                   evaluating=self.views)
        finally:
            self.store.close()  # nothing stays open when DataLoader workers fork
        self.videos = [info[key] for key in self.keys]
        if self.flow_bound is not None:
            self.videos = [dataclasses.replace(v, flow_bound=self.flow_bound) for v in self.videos]
        mapping = label_map(self.store.classes, classes) if classes is not None else None
        if mapping is not None:
            self.videos = [dataclasses.replace(v, label=mapping[v.label]
                                               if 0 <= v.label < len(mapping) else -1)
                           for v in self.videos]

    def _check_views(self, views: bool | None) -> bool:
        if views is None:
            return self.num_views > 1
        if not views and self.num_views > 1:
            raise FlowkitError(f"views=False but the sampler makes {self.clips} clips and the "
                               f"transform {self.crops} crops per video; use views=True "
                               "(evaluation) or a single-view sampler and transform (training)")
        return bool(views)

    # -- sampling

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def labels(self) -> list[int]:
        """Label of every item, ``(len(self),)``."""
        return [v.label for v in self.videos]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random clips, crops and flips ``__getitem__`` returns."""
        self.epoch = _non_negative("epoch", epoch)

    def rng(self, index: int) -> np.random.Generator:
        """Generator of item ``index`` in the current epoch: a function of (seed, epoch, index)."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def clip_indices(self, index: int) -> list[np.ndarray]:
        """Frame indices of item ``index``'s clips this epoch (those ``__getitem__`` reads)."""
        return self._sample(self.videos[index], self.rng(index))

    def _sample(self, video: VideoInfo, rng: np.random.Generator) -> list[np.ndarray]:
        """The sampler's clips of ``video``: with forward flow, placed so that the stacks fit."""
        return self.sampler(video.num_frames, rng, **self._sampler_args)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} videos")
        video, rng = self.videos[index], self.rng(index)
        clips = self._sample(video, rng)
        frames = np.concatenate(clips)  # all clips in time: one transform call, same crop for all
        sample: dict = {}
        if "rgb" in self.inputs:
            sample["rgb"] = self._read_rgb(video, frames)
        if "flow" in self.inputs:
            sample["flow"] = self._read_flow(video, frames)
        if "flow_backward" in self.inputs:
            sample["flow_backward"] = self._read_backward_flow(video, frames)
        has_flow = self.inputs != ("rgb",)  # flow or flow_backward: Normalize divides by the bound
        if has_flow:
            sample["flow_bound"] = video.flow_bound
        sample = self.transform(sample, rng)
        item = {name: self._to_views(sample[name], len(clips)) for name in self.inputs}
        if has_flow:
            item["flow_bound"] = torch.tensor(video.flow_bound, dtype=torch.float32)
        item["label"] = torch.tensor(video.label, dtype=torch.int64)
        item["index"] = torch.tensor(index, dtype=torch.int64)
        return item

    # -- reading

    def _read_rgb(self, video: VideoInfo, frames: np.ndarray) -> torch.Tensor:
        """float32 ``(3, N, H, W)`` in 0..255 for frame indices ``(N,)``."""
        data = torch.from_numpy(self.store.read_rgb(video.key, frames))  # each frame read once
        return data.permute(3, 0, 1, 2).float()

    def _read_flow(self, video: VideoInfo, frames: np.ndarray) -> torch.Tensor:
        """float32 ``(2L, N, H, W)`` pixels: the flow stacks at frame indices ``(N,)``."""
        index = flow_indices(frames, video.num_frames, self.flow_stack)  # (N, L)
        stacks = torch.from_numpy(
            self.store.read_flow(video.key, self.flow_name, index.reshape(-1)))  # (N * L, 2, H, W)
        n, (h, w) = len(frames), stacks.shape[-2:]
        return stacks.reshape(n, 2 * self.flow_stack, h, w).permute(1, 0, 2, 3)

    def _read_backward_flow(self, video: VideoInfo, frames: np.ndarray) -> torch.Tensor:
        """float32 ``(2, N, H, W)`` pixels: at frame indices ``(N,)`` the backward flow to the
        previous frame, store pair ``i - 1`` (frame 0 has none: zeros)."""
        pairs = self.store.read_flow(video.key, backward_name(self.flow_name),
                                     np.maximum(frames - 1, 0))  # (N, 2, H, W)
        pairs = np.where((frames > 0)[:, None, None, None], pairs, np.float32(0))
        return torch.from_numpy(pairs).permute(1, 0, 2, 3)

    def _to_views(self, x: torch.Tensor, clips: int) -> torch.Tensor:
        """``(C, clips*T, h, w)`` or ``(K, C, clips*T, h, w)`` -> ``(clips*K, C, T, h, w)``
        (clip-major), or ``(C, T, h, w)`` when the dataset has no views dim."""
        if x.dim() == 4:
            x = x[None]
        crops, channels, total, h, w = x.shape
        if crops != self.crops:
            raise FlowkitError(f"the transform made {crops} views per clip but its `crops` "
                               f"attribute says {self.crops}; give the transform a correct "
                               "`crops` attribute")
        x = x.reshape(crops, channels, clips, total // clips, h, w).permute(2, 0, 1, 3, 4, 5)
        x = x.reshape(clips * crops, channels, total // clips, h, w)
        return x if self.views else x[0]

    def __repr__(self) -> str:
        return (f"ClipDataset({self.store.path}, {len(self)} videos, inputs={self.inputs}, "
                f"sampler={self.sampler!r}, transform={self.transform!r}, "
                f"flow_name={self.flow_name!r}, flow_stack={self.flow_stack}, seed={self.seed}, "
                f"views={self.views} ({self.num_views}))")


# ----------------------------------------------------------------------------- construction checks

def _non_negative(name: str, value: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise FlowkitError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _bound(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < np.inf:
        raise FlowkitError(f"flow_bound must be a positive number of pixels or None, got {value!r}")
    return float(value)


def _takes_flow_stack(sampler) -> bool:
    """Whether ``sampler`` can be called with ``flow_stack=`` (a keyword it names, or ``**kw``)."""
    try:
        parameters = inspect.signature(sampler).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): call it the plain way
        return False
    return any(p.name == "flow_stack" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               or p.kind is p.VAR_KEYWORD for p in parameters)


def _check_inputs(inputs: Sequence[str] | str) -> tuple[str, ...]:
    inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
    unknown = [m for m in inputs if m not in MODALITIES]
    if not inputs or unknown or len(set(inputs)) != len(inputs):
        raise FlowkitError(f"inputs must be distinct names among {MODALITIES}, got {inputs!r}")
    return inputs


def _check_keys(store: FlowStore, keys: Sequence[str] | None) -> list[str]:
    known = store.keys()
    if keys is None:
        if not known:
            raise FlowkitError(f"store {store.path} has no videos; extract some with "
                               f"`flowkit extract VIDEOS -o {shell_word(store.path)}`")
        return known
    if isinstance(keys, str):
        raise FlowkitError(f"keys must be a list of store keys, got the string {keys!r}")
    keys = list(keys)
    if not keys:
        raise FlowkitError(f"the key list for store {store.path} is empty; pass keys=None for "
                           "all videos, or check the split that produced it")
    known = set(known)
    missing = list(dict.fromkeys(k for k in keys if k not in known))
    if missing:
        raise missing_keys_error(store, missing, "the dataset keys")
    return keys


def read_video_info(store: FlowStore, keys: Sequence[str], inputs: Sequence[str],
                    flow_name: str, *, evaluating: bool = False) -> dict[str, VideoInfo]:
    """:class:`VideoInfo` of each key; raises :class:`FlowkitError` if a video lacks an input,
    with the ways out of a training run, or of an evaluation (``evaluating``: the model's flow
    is fixed, so no other flow is offered).
    The metadata comes from the store's index (:meth:`FlowStore.metas`: a file is opened only
    when it is new or changed since it was indexed)."""
    datasets = {"flow": flow_name, "flow_backward": backward_name(flow_name)}
    needed = [datasets[m] for m in inputs if m in datasets]  # the flow datasets the inputs read
    info, no_rgb, no_pairs = {}, [], []
    no_flow: dict[str, list[str]] = {name: [] for name in needed}
    # The flows of the videos lacking each needed one (not of all videos: the error says what
    # *those* videos could train on instead).
    have: dict[str, set[str]] = {name: set() for name in needed}
    metas = store.metas(keys)
    for key in keys:
        meta = metas[key] if key in metas else store.meta(key)  # unreadable: meta() says why
        flows = meta["flows"]
        if "rgb" in inputs and not meta["has_rgb"]:
            no_rgb.append(key)
        for name in needed:
            if name not in flows:
                no_flow[name].append(key)
                have[name].update(flows)
        if needed and meta["num_frames"] < 2 and all(name in flows for name in needed):
            no_pairs.append(key)
        flow = flows.get(flow_name) or flows.get(backward_name(flow_name))
        bound = float(flow["bound"]) if flow and flow.get("bound") is not None else FLOAT_FLOW_BOUND
        info[key] = VideoInfo(key, meta["num_frames"], int(meta.get("label", -1)), bound)
    for name, without in no_flow.items():
        if without:
            what = f"{'backward flow' if is_backward(name) else 'flow'} {name!r}"
            raise _missing_error(store, without, len(keys), what,
                                 _missing_flow_fix(store, name, flow_name, have[name],
                                                   without[0], metas, evaluating))
    if no_rgb:
        fix = (IMPORT_NO_RGB if store.imported(no_rgb[0]) else
               "the store was extracted with --no-rgb; extract into a new store with frames: "
               f"`flowkit extract VIDEOS -o NEW_STORE --rgb --method {flow_name}` (extract skips "
               f"videos already in {store.path})")
        raise _missing_error(store, no_rgb, len(keys), "rgb frames",
                             f"{fix}, or use a flow-only model")
    if no_pairs:
        raise _missing_error(store, no_pairs, len(keys), "flow (fewer than 2 frames)",
                             "leave these videos out of the keys")
    return info


#: How imported videos without RGB frames get them (``flowkit import rawframes`` made them).
IMPORT_NO_RGB = ("they were imported without RGB frames (their rawframes folders hold no img_*.jpg, "
                 "or the import ran with --no-rgb); rerun `flowkit import rawframes RAWFRAMES_DIR "
                 "-o STORE` with the frames there (a rerun adds what the store lacks)")


def _missing_flow_fix(store: FlowStore, name: str, flow_name: str, have: set[str],
                      example: str, metas: dict[str, dict], evaluating: bool = False) -> str:
    """How to get flow dataset ``name`` (forward ``flow_name`` or its backward flow) that video
    ``example`` and others lack (``have``: the flows those videos hold; ``metas``: the index
    entries of the run's videos): ``flowkit import rawframes`` when the store's flow of that
    name was imported (:func:`_flow_records`; an import into a name of computed flow is
    refused), else ``flowkit extract --method`` where an engine of that name makes it, with the
    ``--weights`` and ``--param`` the store's flow of that name was made with
    (:func:`_engine_options`); or leave the videos out, or (training only) train on a flow every
    video has."""
    from ..flow import ENGINES  # the error path only: the engines' modules are not needed else

    backward = is_backward(name)
    records = _flow_records(store, name, metas)
    imported = (all("source_format" in (f.get("params") or {}) for f in records) if records
                else store.imported(example))  # no video holds it: what made the video tells
    if imported and not records and _no_flow_held(store):
        # frames without flow images imported (Jester's): a rerun of the import adds nothing
        return _rgb_only_fix(store, flow_name, backward, evaluating)
    if flow_name in ENGINES and not imported:
        # a backward flow no video holds yet is made with the forward one's options
        made = records or (_flow_records(store, flow_name, metas) if backward else [])
        options, unknown = _engine_options(flow_name, made)
        command = (f"`flowkit extract VIDEOS -o {shell_word(store.path)}"
                   f"{' --backward' if backward else ''} --method {flow_name}{options}` (VIDEOS: "
                   f"the source videos of these, as the store was extracted from{unknown})")
    else:
        command = (f"`flowkit import rawframes RAWFRAMES_DIR -o {shell_word(store.path)}"
                   f"{'' if flow_name == 'tvl1' else f' --flow-name {flow_name}'}` (RAWFRAMES_DIR: "
                   f"{'denseflow flow_x_m1_* files or <video>_m1.h5' if backward else 'rawframes'}"
                   " of these videos; a rerun adds what the store lacks)")
    # A flow every video of the run has (not just those lacking this one) is one to train on.
    common = set.intersection(*(set(m["flows"]) for m in metas.values())) if metas else set()
    common = sorted(n for n in common if not is_backward(n))
    others = []
    if any(name in m["flows"] for m in metas.values()):  # some have it: use those
        others.append(f"or leave these videos out: {'evaluate' if evaluating else 'train on'} a "
                      "--split-list of the others, one KEY.mp4 a line (`flowkit info "
                      f"{shell_word(store.path)} --keys` lists the keys)")
    if evaluating:  # the run's model was trained on this flow: no other flow or keyword serves
        pass
    elif backward:
        others.append("or let trajectorynet approximate it from the forward flow "
                      "(`--model-arg backward_flow=derived`, its default)")
    elif common:
        others.append(f"or train on flow every video has (`flowkit train --flow-name "
                      f"{common[0]}`, flow_name={common[0]!r} in Python)")
    return (f"they have: {', '.join(sorted(have)) or 'no flow'}; "
            + ", ".join([f"add it with {command}", *others]))


#: The models that read no flow from the store, with the arguments that make them so (each
#: builds with inputs ("rgb",): tests/test_data.py checks it against the model registry).
RGB_MODELS = ("ddn", "tvnet (flow_source=tvnet, its default)",
              "trajectorynet with flow_source=motionnet",
              "cidc, resnet2d, i3d or s3d with modality=rgb")


def _no_flow_held(store: FlowStore) -> bool:
    """Whether no video of the store holds any flow (its index: no file opened)."""
    return not any(meta["flows"] for meta in store.metas(store.keys()).values())


def _rgb_only_fix(store: FlowStore, flow_name: str, backward: bool, evaluating: bool) -> str:
    """The fix for flow missing from a store of imported videos none of which holds flow: most
    often frames without flow images (``flowkit import rawframes`` of Jester's frames), which no
    rerun of the import gives flow, so the source videos' extraction (flowkit computes flow from
    video files) or, training, a model that needs no flow (:data:`RGB_MODELS`); an import run
    with ``--no-flow`` (the store cannot tell the two apart) is rerun without it."""
    from ..flow import ENGINES  # the error path only

    command = f"flowkit extract VIDEOS -o NEW_STORE{' --backward' if backward else ''}"
    if flow_name in ENGINES:
        command = f"`{command} --method {flow_name}`"
    else:  # an import's --flow-name, no engine's: extract's flow is then tvl1
        command = f"`{command}`, then --flow-name tvl1"
    models = ("" if evaluating  # the run's model was trained on this flow: no other model serves
              else f", or train a model that needs no flow: {'; '.join(RGB_MODELS)} "
                   "(--model-arg KEY=VALUE)")
    return ("they have: no flow; they were imported without flow, and no video of the store "
            "holds any. Imported from frames without flow images (img_* files only, as "
            "Jester's), no rerun of the import adds it: flowkit computes flow from video files, "
            f"so extract the source videos into a store ({command}){models}. If their rawframes "
            "do hold flow images and the import ran with --no-flow, rerun `flowkit import "
            f"rawframes RAWFRAMES_DIR -o {store.path}` without it (a rerun adds what the store "
            "lacks)")


def _flow_records(store: FlowStore, name: str, metas: dict[str, dict]) -> list[dict]:
    """The records of the store's flow ``name`` (engine version and ``params``; an imported flow's
    name a ``source_format``, flow an engine computed has none), from the index entries of the
    run's videos (``metas``) that hold it, else of all the store's videos (the index: a 300k
    store's files are statted, not opened); empty when no video holds it. Mixed (an old store):
    not imported, as an import beside computed flow is refused."""
    for source in (lambda: metas, lambda: store.metas(store.keys())):
        flows = [m["flows"][name] for m in source().values() if name in m["flows"]]
        if flows:
            return flows
    return []


def _engine_options(method: str, records: list[dict]) -> tuple[str, str]:
    """The ``flowkit extract`` options beyond ``--method`` that make engine ``method``'s flow as
    the store's ``records`` of it were made (the first one: a store holds one set of options per
    flow): ``--weights`` and each ``--param`` other than the engine's default, rendered as
    :func:`flowkit.store.compat.param_option` does (a parameter whose default is None follows
    from the weights, when there are some). Without a record, for an engine that needs a
    checkpoint: ``--weights CKPT`` and, as the second item, where to read it."""
    from ..flow.registry import engine_class
    from ..store.compat import param_option

    params_class = engine_class(method).Params
    defaults = {f.name: f.default for f in dataclasses.fields(params_class)} if params_class else {}
    if not records:
        if "weights" not in defaults:
            return "", ""
        return (" --weights CKPT", "; CKPT and any --param: those the run's flow was extracted "
                "with, which `flowkit info` of the store it was trained on shows")
    params = records[0].get("params") or {}
    weights = params.get("weights")
    options = [param_option("weights", weights)] if weights else []
    for key, value in params.items():
        if key == "weights" or key not in defaults:
            continue  # (weights_sha256 and other values that follow from the options)
        default = defaults[key]
        if default is None and weights:
            continue  # read from the checkpoint (motionnet's num_frames)
        same = value == default or (isinstance(value, (list, tuple)) and default is not None
                                    and all(v == default for v in value))  # [4, 4] for 4
        if not same:
            options.append(param_option(key, value))
    return "".join(f" {o}" for o in options), ""


def _missing_error(store: FlowStore, keys: list[str], total: int, what: str,
                   fix: str) -> FlowkitError:
    shown = ", ".join(repr(k) for k in keys[:MAX_LISTED])
    more = ", ..." if len(keys) > MAX_LISTED else ""
    return FlowkitError(f"store {store.path}: {len(keys)} of {total} videos have no {what} "
                        f"(e.g. {shown}{more}); {fix}")
