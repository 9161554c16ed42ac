"""``flowkit train-flow ENGINE ...``: train the motion engines that learn (one subcommand each)."""
from __future__ import annotations

import click

from . import summary


@click.group("train-flow", short_help=summary("train-flow"))
def command():
    """Train a learnable motion engine; `flowkit extract --method NAME --weights CKPT` uses the
    result.

    \b
    Examples:
      flowkit train-flow tvnet --out tvnet.pt
      flowkit train-flow motionnet videos/ --out motionnet.pt
    """


def _register_subcommands() -> None:
    # One module per trainable engine, each defining a click command named `command`.
    import importlib
    for name in ("train_tvnet", "train_motionnet"):  # e.g. ("train_tvnet", "train_motionnet"): add yours here
        command.add_command(importlib.import_module(f"{__package__}.{name}").command)


_register_subcommands()
