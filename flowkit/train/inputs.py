"""What the training videos were extracted with: recorded by a run, compared when it is evaluated.

A run's ``config.json`` (and its checkpoints) hold ``extraction``: ``{"step": 1, "flow":
{"tvl1": {"engine_version": "1", "params": {...}}}}``, the frame step of its training videos and,
per flow the model reads, the engine version and parameters the store records for them (the first
training video's: a store holds each flow with one set of parameters, :mod:`flowkit.store.compat`).
:func:`extraction_notes` compares them with a few of the videos a run is evaluated on: flow made
with another ``--step`` or other engine parameters changes the score without any error, so the
evaluation says so (a note, not a refusal: scoring on such flow may be meant, a robustness test).
Another flow size, flow name or flow codec is handled where the clips are made (rescaled, refused,
divided by the run's bound), and is not compared here. A run recorded before ``extraction``
existed gets no note.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from ..conventions import backward_name
from ..store.compat import REFERENCE_VIDEOS, param_option
from ..store.layout import json_default

EXTRACTION_KEY = "extraction"
#: What of an imported flow's record (``flowkit import rawframes``) says how its values were made;
#: the rest (``naming``: the files' names and numbering) and the importer's version do not.
IMPORTED_FLOW_KEYS = ("source_format", "bound", "image_format", "step")


def flow_names(inputs: Sequence[str], flow_name: str) -> list[str]:
    """The store flows a model with ``inputs`` (``model.inputs``) reads: ``flow_name`` for
    ``flow``, its backward name (``tvl1_backward``) for ``flow_backward``."""
    names = [flow_name] if "flow" in inputs else []
    return names + ([backward_name(flow_name)] if "flow_backward" in inputs else [])


def training_extraction(store, keys: Sequence[str], flows: Sequence[str]) -> dict[str, Any] | None:
    """The ``extraction`` record of a new run: the frame ``step`` of its first training video of
    ``keys`` and, for each of ``flows`` that video holds, its ``engine_version`` and ``params``
    (:meth:`~flowkit.store.FlowStore.metas`); None without a readable video."""
    metas = store.metas(list(keys[:1]))
    if not metas:
        return None
    meta = next(iter(metas.values()))
    flow = {name: {"engine_version": meta["flows"][name].get("engine_version"),
                   "params": _plain(meta["flows"][name].get("params") or {})}
            for name in flows if name in meta["flows"]}
    return {"step": int(meta.get("step", 1)), "flow": flow}


def extraction_notes(store, keys: Sequence[str], run_config: dict) -> list[str]:
    """Notes naming how the evaluated videos ``keys`` (up to :data:`REFERENCE_VIDEOS` of them,
    spread over the list) were extracted otherwise than the run's training videos (its
    ``extraction`` record): another frame step, engine version or engine parameters. Empty when
    they match or the run records nothing (an older run)."""
    recorded = run_config.get(EXTRACTION_KEY)
    if not recorded or not keys:
        return []
    sample = list(keys[::max(1, len(keys) // REFERENCE_VIDEOS)][:REFERENCE_VIDEOS])
    found: dict[str, tuple[str, str]] = {}  # what differs: (here, trained on), first seen
    for meta in store.metas(sample).values():
        for what, values in _differences(meta, recorded).items():
            found.setdefault(what, values)
    if not found:
        return []
    # forward and backward flow share their options: each is named once
    here = ", ".join(dict.fromkeys(v[0] for v in found.values()))
    trained = " ".join(dict.fromkeys(v[1] for v in found.values()))
    return [f"the evaluated videos were extracted otherwise than the run's training videos "
            f"({len(sample)} sampled): made with {here} here, the run was trained on {trained}: "
            f"re-extract with "
            f"{trained} to score the run as trained (on purpose, e.g. a robustness test: ignore "
            "this)"]


def _differences(meta: dict, recorded: dict) -> dict[str, tuple[str, str]]:
    """``{what: (this video's option, the training videos' option)}`` for one video's metadata."""
    out = {}
    step = int(meta.get("step", 1))
    if "step" in recorded and step != int(recorded["step"]):
        out["step"] = (f"--step {step}", f"--step {int(recorded['step'])}")
    for name, trained in (recorded.get("flow") or {}).items():
        flow = meta["flows"].get(name)
        if flow is None:  # a flow the store lacks is refused where the clips are made
            continue
        params, wanted = _plain(flow.get("params") or {}), _plain(trained.get("params") or {})
        imported = "source_format" in params or "source_format" in wanted
        if imported:  # how the files were named is no property of the flow, nor the importer's
            # version: the format, quantisation and step are (interop/ingest.py's record)
            params, wanted = ({k: v for k, v in d.items() if k in IMPORTED_FLOW_KEYS}
                              for d in (params, wanted))
        elif str(flow.get("engine_version")) != str(trained.get("engine_version")):
            out[f"{name} version"] = (f"{name} engine version {flow.get('engine_version')}",
                                      f"{name} engine version {trained.get('engine_version')}")
        changed = sorted(k for k in set(params) | set(wanted) if params.get(k) != wanted.get(k))
        digest = params.get("weights_sha256")
        if digest is not None and digest == wanted.get("weights_sha256"):
            changed = [k for k in changed if k != "weights"]  # the same weights, moved
        for key in changed:
            out[f"{name} {key}"] = (_option(key, params.get(key)), _option(key, wanted.get(key)))
    return out


def _option(key: str, value: Any) -> str:
    """The extract option of a stored parameter; a weights file's digest names the file's content
    (no option sets it: ``--weights`` does)."""
    if key == "weights_sha256":
        return f"--weights of sha256 {str(value)[:12]}" if value else "no --weights"
    return param_option(key, value)


def _plain(params: Any) -> dict:
    """Params as JSON values (tuples become lists), so a record and a store compare alike."""
    if isinstance(params, str):
        params = json.loads(params)
    return json.loads(json.dumps(params, sort_keys=True, default=json_default))
