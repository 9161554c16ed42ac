"""Does an extraction run fit the store it writes into? Checked before anything is computed.

A store holds every video at one frame size and frame step, cut at one ``--max-frames`` (or
whole), with one RGB codec, and each engine's flow with one set of parameters and one flow codec. A run whose options differ would either fail
on every video after computing it (a new engine's flow at another size than the video's RGB),
silently skip videos made with other options (an engine the store already has), or mix sizes in
one store. :func:`compare_with_store` reads the finished videos' metadata and lists what differs;
:meth:`Comparison.message` names the exact ``flowkit extract`` options that would match the store.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..conventions import BACKWARD_SUFFIX, backward_name, is_backward
from ..errors import FlowkitError
from ..video import output_size
from .codecs import Codec, codec_spec
from .layout import json_default

# Videos of the store read as a reference when none of the run's videos is in it yet.
REFERENCE_VIDEOS = 3
#: The codecs ``flowkit extract --lossless`` chooses (flow, RGB); it refuses codec options.
LOSSLESS = ("float16", "raw")


def param_option(key: str, value: Any) -> str:
    """The ``flowkit extract`` option that sets engine parameter ``key`` to the stored ``value``:
    ``--weights PATH``, ``--param key=JSON``, or ``no ...`` for None."""
    if key == "weights":
        return f"--weights {value}" if value else "no --weights"
    return f"no --param {key}" if value is None else f"--param {key}={json.dumps(value)}"


@dataclass(frozen=True)
class Request:
    """What a run would write: frame ``size`` (None, short side, or ``(H, W)``), ``step``, whether
    it stores ``rgb`` and with which codecs, the engine's ``describe()`` (name, version, params)
    under the flow name ``method``, and ``max_frames``, the frames it keeps of a video at most."""
    method: str
    engine: dict
    size: int | tuple[int, int] | None
    step: int
    rgb: bool
    rgb_codec: Codec
    flow_codec: Codec
    #: the engine's parameter names a user sets (``--param``); other recorded values (a weights
    #: file's digest, ...) follow from them and are not suggested as options
    param_names: tuple[str, ...] = ()
    max_frames: int | None = None
    #: the engine parameters (``describe()["params"]``) this run would record without its
    #: ``--weights`` (its other ``--param`` values kept), made on demand; None: not known. The
    #: weights set an engine's architecture, so a hint that drops them names the stored values
    #: that differ from these (``--param iterations=10``): the one suggested command then fits.
    unweighted: Callable[[], dict] | None = field(default=None, compare=False)

    @property
    def other_direction(self) -> str:
        """The flow name of the other direction of ``method``: ``tvl1`` <-> ``tvl1_backward``."""
        if is_backward(self.method):
            return self.method[:-len(BACKWARD_SUFFIX)]
        return backward_name(self.method)

    def differences(self, meta: dict, joining: bool = False) -> dict[str, tuple[Any, Any]]:
        """``{option: (stored, requested)}`` for one finished video's metadata
        (:meth:`flowkit.store.FlowStore.meta` or ``metas``); empty when the run fits it. A video's
        RGB is never written again, so the RGB codec counts only with ``joining``: the run adds
        new videos beside this one; a run asking for RGB (``rgb``) differs from a video that holds
        this flow without RGB (made with ``--no-rgb``): the run would skip it and write none. So does a video longer than this run's ``max_frames`` when
        no limit cut it (made without the limit, or before flowkit recorded it), whereas one
        that a ``max_frames`` cut (its ``max_frames`` attribute) differs whenever this run would
        keep more of it. A video without this flow but with the other direction's
        (``tvl1_backward`` beside ``tvl1``) compares that flow's engine version and parameters
        (``pair_params``, ``pair_engine_version``): the two directions of a trajectory are made
        alike."""
        out: dict[str, tuple[Any, Any]] = {}
        stored = (int(meta["height"]), int(meta["width"]))
        source = (int(meta.get("source_height", stored[0])),
                  int(meta.get("source_width", stored[1])))
        if min(source) > 0 and output_size(*source, self.size) != stored:
            out["size"] = (stored, output_size(*source, self.size))
        if int(meta.get("step", 1)) != int(self.step):
            out["step"] = (int(meta.get("step", 1)), int(self.step))
        cut = meta.get("max_frames")
        if (cut is not None and (self.max_frames is None or self.max_frames > int(cut))) or (
                joining and self.max_frames is not None
                and int(meta["num_frames"]) > self.max_frames):
            out["max_frames"] = (None if cut is None else int(cut), self.max_frames)
        if joining and self.rgb and meta.get("rgb_codec") \
                and meta["rgb_codec"] != codec_spec(self.rgb_codec):
            out["rgb_codec"] = (meta["rgb_codec"], codec_spec(self.rgb_codec))
        flow = meta["flows"].get(self.method)
        if flow is not None and self.rgb and not meta.get("has_rgb", True):
            # the run would skip this video, so its RGB asked for would never be written (a
            # run adding another flow to it writes its RGB too)
            out["rgb"] = (False, True)
        if flow is not None:
            spec = flow["codec_spec"]
            if spec != codec_spec(self.flow_codec):
                out["flow_codec"] = (spec, codec_spec(self.flow_codec))
            out.update(self._engine_differences(flow))
        elif self.other_direction in meta["flows"]:
            out.update({f"pair_{option}": values for option, values
                        in self._engine_differences(meta["flows"][self.other_direction]).items()})
        return out

    def _engine_differences(self, flow: dict) -> dict[str, tuple[Any, Any]]:
        """The engine version and parameters of a stored flow's record against this run's. A
        weights file counts by its content (``weights_sha256``), not its path; a record that
        names one by path alone (an older flowkit's) is ``weights_unchecked``: no run matches it."""
        out: dict[str, tuple[Any, Any]] = {}
        if str(flow.get("engine_version")) != str(self.engine["version"]):
            out["engine_version"] = (flow.get("engine_version"), self.engine["version"])
        requested = _plain(self.engine["params"])
        params = _plain(flow.get("params", {}))
        changed = {k for k in set(params) | set(requested) if params.get(k) != requested.get(k)}
        digest = params.get("weights_sha256")
        if digest is not None and digest == requested.get("weights_sha256"):
            changed.discard("weights")  # the same weights, wherever the file lies now
        elif params.get("weights") is not None and digest is None \
                and requested.get("weights_sha256") is not None:
            # Recorded by an older flowkit by path alone: the weights behind it cannot be checked
            # (the file may have been replaced since), and no option would make the run fit.
            out["weights_unchecked"] = (params["weights"], requested.get("weights"))
            changed -= {"weights", "weights_sha256"}
        changed = sorted(changed)
        if changed:
            out["params"] = ({k: params.get(k) for k in changed},
                             {k: requested.get(k) for k in changed})
        return out


@dataclass
class Comparison:
    """The run against the store: per option, the stored values seen, the requested one, and
    which videos differ."""
    store: str
    request: Request
    checked: int = 0
    differing: dict[str, list[str]] = field(default_factory=dict)  # option -> keys
    stored: dict[str, list[Any]] = field(default_factory=dict)    # option -> stored values
    metas: dict[str, dict] = field(default_factory=dict)           # key -> meta of checked videos
    joining: bool = False  # the run adds videos that are not in the store yet
    reference: bool = False  # none of the run's videos is in the store: others were compared
    #: ``(engine, backend)`` of the stored flow when another engine wrote it (an imported flow:
    #: ``mmaction2-rawframes``, backend ``external``); its version and parameters say nothing
    foreign: tuple[str, str] | None = None

    @property
    def ok(self) -> bool:
        return not self.differing

    def keys(self) -> set[str]:
        """Videos whose stored options differ from the run's."""
        return {k for keys in self.differing.values() for k in keys}

    def matching_options(self) -> list[str]:
        """The ``flowkit extract`` options that make the run fit the store."""
        opts: list[str] = []
        if "size" in self.differing:
            opts.append(_size_option(self.metas.values()))
        if "step" in self.differing:
            opts.append(f"--step {self.stored['step'][0]}")
        if "max_frames" in self.differing:
            cuts = [c for c in self.stored["max_frames"] if c is not None]
            opts.append(f"--max-frames {cuts[0]}" if cuts else "no --max-frames")
        if "rgb" in self.differing:
            opts.append("--no-rgb")
        if "rgb_codec" in self.differing:
            opts.append(f"--rgb-codec {self.stored['rgb_codec'][0]}")
        if "flow_codec" in self.differing:
            opts.append(f"--flow-codec {self.stored['flow_codec'][0]}")
        if {"rgb_codec", "flow_codec"} & self.differing.keys() and (
                codec_spec(self.request.flow_codec), codec_spec(self.request.rgb_codec)) == LOSSLESS:
            # --lossless's codecs: it refuses a codec option, so both are named and it is dropped
            opts += [f"--{option.replace('_', '-')} {self._codec(option)}"
                     for option in ("rgb_codec", "flow_codec")] + ["no --lossless"]
        for option in ("params", "pair_params"):
            stored = self.stored.get(option, [{}])[0]
            for key, value in stored.items():
                if key == "weights_sha256" and value and "weights" not in stored:
                    # same path, other content: the file was replaced since
                    opts.append(f"--weights FILE (a file whose weights_sha256 is {value}; "
                                f"{self.request.engine['params'].get('weights')} holds other "
                                "weights now)")
                if key in self.request.param_names:
                    opts.append(param_option(key, value))
            if stored.get("weights", "") is None and "weights" in self.request.param_names:
                opts += self._architecture_options(option)
        return list(dict.fromkeys(o for o in opts if o))

    def _architecture_options(self, option: str) -> list[str]:
        """``--param k=v`` for the store's recorded values of the flow behind ``option``
        (``params``: the run's flow, ``pair_params``: the other direction's) that differ from
        what this run records without ``--weights`` (:attr:`Request.unweighted`): the weights
        fixed them (a checkpoint's architecture), the run without them would take the defaults."""
        name = self.request.method if option == "params" else self.request.other_direction
        key = self.differing[option][0]
        recorded = _plain(self.metas[key]["flows"][name].get("params", {}))
        try:
            defaults = _plain(self.request.unweighted()) if self.request.unweighted else {}
        except FlowkitError:  # the engine cannot be built without weights: name every value
            defaults = {}
        return [param_option(k, v) for k, v in sorted(recorded.items())
                if k in self.request.param_names and k != "weights" and v is not None
                and defaults.get(k, object()) != v]

    def _codec(self, option: str) -> str:
        """The codec spec the store holds for ``option`` (``rgb_codec``, ``flow_codec``): the
        stored one where it differs, else the run's."""
        if option in self.differing:
            return self.stored[option][0]
        return codec_spec(getattr(self.request, option))

    def message(self) -> str:
        """One line: what differs, the options that match the store, and the ways out. When the
        run's videos are not in the store (``reference``: its other videos were compared), it
        says why ``--redo-mismatched`` cannot help: it recomputes only the run's videos, so the
        store would hold both kinds. A flow another engine wrote (``foreign``) is named as such:
        no option of this engine matches it."""
        if self.foreign is not None:
            return self._foreign_message()
        parts = []
        for option, keys in self.differing.items():
            what = describe_difference(self.request, option, self.stored[option][0],
                                       self.request_value(option))
            parts.append(f"{what} ({len(keys)} of {self.checked} videos checked)")
        opts = self.matching_options()
        given = " ".join(o for o in opts if not o.startswith("no "))
        dropped = " and ".join(o.removeprefix("no ") for o in opts if o.startswith("no "))
        match = " ".join(filter(None, [given and f"with {given}",
                                      dropped and f"{'and ' if given else ''}without {dropped}"]))
        fix = f"Rerun {match} to extend this store, " if match else \
            "Rerun with the store's options, "
        if any(o.endswith("weights_unchecked") for o in self.differing):
            fix = ""  # no option matches weights that cannot be checked: recompute or a new store
        head = f"store {self.store} was made with other options: {'; '.join(parts)}. "
        if self.reference:
            return (head + "None of this run's videos is in the store, so --redo-mismatched "
                    "would not change those videos (it recomputes only this run's) and the store "
                    f"would mix both kinds. Nothing was computed. "
                    f"{_capitalize(fix + 'write')} a new store (-o NEW_STORE), or run over the "
                    "store's videos too (their VIDEO_DIR) with --redo-mismatched to recompute "
                    "them all with the new options")
        pair = ""
        if any(option.startswith("pair_") for option in self.differing):
            pair = (f"; flow/{self.request.other_direction} keeps its parameters until it is "
                    "recomputed the same way")
        return (head + f"Nothing was computed. {_capitalize(fix + 'add')} --redo-mismatched to "
                f"recompute those videos with the new options (replacing what the store holds "
                f"for them{pair}), or write a new store (-o NEW_STORE)")

    def _foreign_message(self) -> str:
        engine, backend = self.foreign
        method, asked = self.request.method, self.request.engine["engine"]
        how = "imported from rawframes" if backend == "external" else f"backend {backend}"
        keys = sorted(self.keys())
        head = (f"store {self.store} holds flow {method!r} written by engine {engine!r} ({how}; "
                f"{len(keys)} of {self.checked} videos checked, e.g. {keys[0]!r}), not by "
                f"flowkit's {asked!r} engine, and one flow name holds one engine's flow. Nothing "
                "was computed. ")
        redo = ("" if self.reference else "add --redo-mismatched to replace it with computed "
                "flow for this run's videos, ")
        return (head + f"Write a new store (-o NEW_STORE), {redo}or keep both side by side: "
                f"import the rawframes under another name (`flowkit import rawframes ... "
                f"--flow-name rawframes`) and extract --method {asked} beside it")

    def request_value(self, option: str) -> Any:
        for meta in self.metas.values():
            diff = self.request.differences(meta, self.joining)
            if option in diff:
                return diff[option][1]
        return None


_LABELS = {"size": "frame size", "step": "frame step", "max_frames": "frames cut at (--max-frames)",
           "rgb": "RGB frames", "rgb_codec": "rgb codec",
           "flow_codec": "flow codec", "engine_version": "engine version",
           "params": "engine parameters",
           "weights_unchecked": "weights file (recorded by path alone by an older flowkit, "
                                "with no digest of its content: whether the file asked for holds "
                                "the same weights cannot be told)"}


def compare_with_store(store, keys: Iterable[str], request: Request,
                       progress=None) -> Comparison:
    """Compare ``request`` with the finished videos among ``keys`` in ``store`` (a
    :class:`~flowkit.store.FlowStore`; their metadata from :meth:`~flowkit.store.FlowStore.metas`,
    the store's index); when none of them is in the store, with up to :data:`REFERENCE_VIDEOS` of
    its other videos (so new videos join a store of one size). Unreadable videos are not checked
    (they are redone). ``progress``: a bar over the videos new to the store's index."""
    keys = list(keys)
    checked = store.metas(keys, progress)
    joining = len(checked) < len(keys)  # new videos join the store: their RGB must match
    reference = not checked
    if reference:
        checked = store.metas(store.keys()[:REFERENCE_VIDEOS])
    result = Comparison(str(store.path), request, checked=len(checked), metas=checked,
                        joining=joining, reference=reference)
    for key, meta in checked.items():
        for option, (stored, _) in request.differences(meta, joining).items():
            result.differing.setdefault(option, []).append(key)
            if stored not in result.stored.setdefault(option, []):
                result.stored[option].append(stored)
    # The index holds no engine name: one video's file tells who wrote the flow.
    engine_keys = result.differing.get("params", []) + result.differing.get("engine_version", [])
    if engine_keys:
        flow = store.meta(engine_keys[0])["flows"].get(request.method, {})
        if flow.get("engine", request.engine["engine"]) != request.engine["engine"]:
            result.foreign = (str(flow["engine"]), str(flow.get("backend", "")))
    pair_keys = (result.differing.get("pair_params", [])
                 + result.differing.get("pair_engine_version", []))
    if pair_keys:  # another engine's other direction (imported flow): nothing to make alike
        flow = store.meta(pair_keys[0])["flows"].get(request.other_direction, {})
        if flow.get("engine", request.engine["engine"]) != request.engine["engine"]:
            for option in ("pair_params", "pair_engine_version"):
                result.differing.pop(option, None)
                result.stored.pop(option, None)
    return result


def _plain(params: Any) -> dict:
    """Params as JSON values (tuples become lists), so stored and requested compare alike."""
    if isinstance(params, str):
        params = json.loads(params)
    return json.loads(json.dumps(params, sort_keys=True, default=json_default))


def _size_option(metas: Iterable[dict]) -> str:
    """The ``--size`` that gives every video its stored size: none, the short side, or HxW."""
    metas = list(metas)
    sizes = [(int(m["height"]), int(m["width"])) for m in metas]
    sources = [(int(m.get("source_height", h)), int(m.get("source_width", w)))
               for m, (h, w) in zip(metas, sizes)]
    candidates = [None, min(sizes[0]), sizes[0]]
    for size in candidates:
        if all(output_size(*src, size) == got for src, got in zip(sources, sizes)):
            if size is None:
                return "no --size"
            return f"--size {size}" if isinstance(size, int) else f"--size {size[0]}x{size[1]}"
    return ""  # the store mixes sizes: no single --size matches all of it


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def describe_difference(request: Request, option: str, stored: Any, asked: Any) -> str:
    """``"<what> <stored> in the store, <asked> asked"`` for one option of
    :meth:`Request.differences` (a ``pair_`` option names the other direction's flow)."""
    plain = option.removeprefix("pair_")
    label = _LABELS.get(option) or (
        f"{_LABELS.get(plain, plain)} of flow/{request.other_direction} (the other direction of "
        f"flow/{request.method})")
    return f"{label} {_show(plain, stored)} in the store, {_show(plain, asked)} asked"


def _show(option: str, value: Any) -> str:
    if option == "max_frames" and value is None:
        return "none"
    if option == "rgb":
        return "stored (--rgb)" if value else "none (--no-rgb)"
    if option == "size" and isinstance(value, tuple):
        return f"{value[0]}x{value[1]}"
    if option.endswith("params") and isinstance(value, dict):
        return ", ".join(f"{k}={json.dumps(v)}" for k, v in value.items())
    return str(value)


__all__ = ["Request", "Comparison", "compare_with_store", "describe_difference",
           "REFERENCE_VIDEOS"]
