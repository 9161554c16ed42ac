"""Option parsers shared by the commands: engine parameters and frame sizes."""
from __future__ import annotations

import json

import click


def parse_params(pairs: tuple[str, ...]) -> dict:
    """``("warps=3", "tau=0.2", "early_stop=false")`` -> ``{"warps": 3, "tau": 0.2, "early_stop": False}``.

    Values are read as JSON where they parse (numbers, true/false, lists), else kept as strings.
    """
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def parse_size(text: str | None) -> int | tuple[int, int] | None:
    """``None`` keeps the size, ``"256"`` is the short side, ``"256x340"`` is (height, width)."""
    if text is None:
        return None
    try:
        if "x" in text.lower():
            h, w = (int(v) for v in text.lower().split("x"))
            if h > 0 and w > 0:
                return h, w
        elif int(text) > 0:
            return int(text)
    except ValueError:
        pass
    raise click.BadParameter(f"expected SHORT_SIDE or HxW (e.g. 256 or 256x340), got {text!r}",
                             param_hint="--size")
