"""The registry of video classifiers: ``create_model(name, **kw)`` and ``list_models()``
(a :class:`flowkit.registry.Registry`)."""
from __future__ import annotations

import inspect
import os
import typing
from pathlib import Path
from typing import Any, Callable

from ..errors import FlowkitError
from ..registry import Registry
from .base import VideoClassifier

MODELS: Registry[VideoClassifier] = Registry("model", name_attr="model_name")


def register_model(name: str) -> Callable[[type[VideoClassifier]], type[VideoClassifier]]:
    """Class decorator: make the class creatable as ``create_model(name, **kw)``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of the registered classifiers, sorted."""
    return MODELS.names()


def model_class(name: str) -> type[VideoClassifier]:
    return MODELS.get(name)


def model_parameters(name: str) -> list[str]:
    """Keyword arguments accepted by ``create_model(name, ...)``."""
    return MODELS.parameters(name)


def check_model_kwargs(name: str, kw: dict[str, Any]) -> None:
    """Check ``kw`` against what ``create_model(name, ...)`` declares, without building anything:
    unknown names, and values of the wrong kind for the constructor's annotations (``int``,
    ``float``, ``bool``, ``str``, ``X | None``, sequences; typed as engine parameters are,
    :mod:`flowkit.flow.params`), so ``--model-arg width=abc`` is one line naming the argument,
    what it must be and the value, not a ``ValueError`` from deep inside the model. Ranges stay
    with the model (``width >= 1``).

    Raises:
        FlowkitError: an unknown model or keyword, or a value of the wrong kind.
    """
    from ..flow.params import coerce_value, describe_annotation

    cls = MODELS.get(name)
    MODELS.check_keywords(name, kw, strict=True)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: the model checks its own values
        return
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()}
    for key, value in kw.items():
        if key not in hints or coerce_value(hints[key], value)[0]:
            continue
        default = defaults.get(key, inspect.Parameter.empty)
        example = "" if default is None or default is inspect.Parameter.empty \
            else f" (default {list(default) if isinstance(default, tuple) else default!r})"
        kind = describe_annotation(hints[key])
        raise FlowkitError(f"model {name!r}: {key} must be {kind}{example}, got {value!r}")


def create_model(name: str, **kw) -> VideoClassifier:
    """Build the classifier registered as ``name``.

    Unknown keyword names and values of the wrong kind raise :class:`~flowkit.errors.FlowkitError`
    (:func:`check_model_kwargs`). The keywords are kept on the model (``model.model_kwargs``) so a
    checkpoint can rebuild it.
    """
    check_model_kwargs(name, kw)
    return _build(name, kw)


def rebuild_model(name: str, **kw) -> VideoClassifier:
    """The classifier of a saved run (a checkpoint's ``model.kwargs``), built from keywords as
    they were accepted when the run was made: not typed again, so a run made before
    :func:`check_model_kwargs` existed (``offsets=1`` for true, say) still loads. Unknown names
    still raise, and so does a file keyword whose file is gone (:func:`check_recorded_files`).

    Keywords of a part the run's model never built (``motionnet_weights`` with store flow,
    recorded before models refused them: :meth:`VideoClassifier.unused_kwargs`) are dropped, not
    refused: they never changed the model, so the rebuild is the one trained, and the run still
    evaluates; ``model.model_kwargs`` keeps them as recorded."""
    unused = MODELS.get(name).unused_kwargs(kw)
    used = {key: value for key, value in kw.items() if key not in unused}
    check_recorded_files(name, used)
    model = _build(name, used)
    model.model_kwargs = dict(kw)
    return model


def _build(name: str, kw: dict[str, Any]) -> VideoClassifier:
    model = MODELS.create(name, **kw)
    model.model_kwargs = dict(kw)
    return model


def rebuild_run_model(model: dict[str, Any], *, restoring: bool) -> VideoClassifier:
    """The classifier a run's ``model`` entry describes (config.json's or a checkpoint's: its
    ``name``, ``kwargs`` and, for a model that reads files, ``kwargs_without_files``).

    ``restoring``: a checkpoint's weights will replace the built ones. Then the run's file
    keywords are not read at all when the run recorded how to build without them: a file gone
    (a ``tvnet_weights=`` checkpoint not copied with the run), or replaced by weights of another
    architecture (retrained under the same name), changes nothing. Otherwise
    :func:`rebuild_model`'s error says where the run expected the file.
    """
    if not isinstance(model, dict) or not isinstance(model.get("kwargs"), dict) \
            or not isinstance(model.get("name"), str):
        whole = isinstance(model, dict) and isinstance(model.get("model"), dict)
        raise FlowkitError("rebuild_run_model takes a run's model entry, a dict with name and "
                           f"kwargs; got {_shown(model)}"
                           + (" (a whole run config?); pass its model entry: "
                              "rebuild_run_model(config['model'], ...)" if whole else
                              "; pass config['model'] of the run's config.json (json.load)"))
    name, kw = model["name"], dict(model["kwargs"])
    without = model.get("kwargs_without_files")
    if restoring and isinstance(without, dict):
        built = rebuild_model(name, **without)  # (its file keywords are None: nothing to read)
        built.model_kwargs = kw  # the run's own keywords, recorded again as they were
        return built
    return rebuild_model(name, **kw)


def load_run_weights(model: VideoClassifier, recorded: dict[str, Any], state: dict[str, Any],
                     source: str) -> None:
    """Load a run's checkpoint weights ``state`` (from ``source``, for messages) into ``model``,
    rebuilt by :func:`rebuild_run_model` from the run's ``model`` entry ``recorded``.
    FlowkitError when they do not fit; for a model rebuilt from a file keyword's file (a run
    recorded before ``kwargs_without_files``) it says that file now holds another architecture
    than the run was trained from (retrained under the same name). ``state`` may be the whole
    flowkit checkpoint (``torch.load(last.pt)``): its ``model`` weights are loaded."""
    from ..checkpoints import state_dict_of

    state = state_dict_of(state, source)  # a whole checkpoint: its weights, not its other keys
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
        if len(detail) > 300:  # torch lists every missing key: one line, not a screenful
            detail = detail[:300] + " ..."
        name, kw = recorded["name"], recorded["kwargs"]
        # a file the rebuild read (one that is gone failed the rebuild already)
        read = [] if isinstance(recorded.get("kwargs_without_files"), dict) else [
            key for key in getattr(MODELS.get(name), "file_kwargs", ()) if kw.get(key)]
        why = (f"; the model was rebuilt from {read[0]} {kw[read[0]]}, which now "
               "holds another architecture than the run was trained from: put the original file "
               "back at that path" if read else "")
        raise FlowkitError(f"the weights of {source} do not fit the model rebuilt from the run's "
                           f"keywords ({detail}){why}") from None


def _shown(obj: Any) -> str:
    """``obj`` in a message: a dict by its keys (a config.json would fill the screen)."""
    if isinstance(obj, dict):
        keys = list(obj)
        return f"a dict of {', '.join(map(str, keys[:6]))}{', ...' if len(keys) > 6 else ''}"
    return type(obj).__name__


def missing_files(name: str, kw: dict[str, Any]) -> list[str]:
    """The file keywords of ``kw`` (model ``name``'s ``file_kwargs``) whose file is not there."""
    return [key for key in getattr(MODELS.get(name), "file_kwargs", ())
            if kw.get(key) and isinstance(kw[key], (str, os.PathLike))
            and not Path(kw[key]).is_file()]


def absolute_file_kwargs(name: str, kw: dict[str, Any]) -> dict[str, Any]:
    """``kw`` with the file keywords of model ``name`` (its ``file_kwargs``, e.g.
    ``tvnet_weights``) as absolute paths: a run records them so, since the model reads the file
    again whenever the run is rebuilt (evaluate, resume), from whatever folder that runs in."""
    files = getattr(MODELS.get(name), "file_kwargs", ())
    return {key: (str(Path(value).resolve()) if key in files and value
                  and isinstance(value, (str, os.PathLike)) else value)
            for key, value in kw.items()}


def check_recorded_files(name: str, kw: dict[str, Any]) -> None:
    """FlowkitError when a file keyword of a saved run (``tvnet_weights=...``) names a file that
    is not there: the model reads it before the run's own weights replace it (it fixes a part's
    architecture), so the message says where the run expected it. A relative path (recorded by a
    flowkit before :func:`absolute_file_kwargs`) is read against the current folder."""
    for key in missing_files(name, kw):
        value = kw[key]
        why = "the model is rebuilt from that file before the run's weights replace it"
        if Path(value).is_absolute():
            raise FlowkitError(f"model {name!r}: {key} {value}, recorded with the run, is not "
                               f"there; {why}, so put it back at that path")
        raise FlowkitError(f"model {name!r}: {key} {value}, recorded with the run as a relative "
                           f"path (by an older flowkit), is not in this folder "
                           f"({Path(value).resolve()}); {why}: run from the folder the run was "
                           "trained in, or put the file there")
