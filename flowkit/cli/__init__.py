"""The ``flowkit`` command line: one click group, one module per command.

Exit codes (documented in the README):
    0  success
    1  the command ran but some items failed (e.g. videos that could not be decoded)
    2  bad usage or input the user can fix (a FlowkitError: missing store, bad option, ...)
    130 interrupted (Ctrl-C); finished work is kept
"""
from __future__ import annotations

import functools
import sys

import click

from .. import __version__
from ..errors import FlowkitError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def handle_errors(func):
    """Turn FlowkitError into one line on stderr and exit code 2; Ctrl-C into exit code 130."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FlowkitError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            click.echo("interrupted; finished work is kept, rerun the same command to resume", err=True)
            sys.exit(EXIT_INTERRUPTED)
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="flowkit")
def main():
    """flowkit: optical flow and motion features from video folders, in crash-safe HDF5 stores."""


def _register_commands() -> None:
    from . import benchmark, evaluate, extract, info, samples, show, toy, train, train_flow
    for module in (extract, info, show, benchmark, samples, toy, train, evaluate, train_flow):
        main.add_command(module.command)


_register_commands()
