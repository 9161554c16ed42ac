"""The ``flowkit`` command line: one click group, one module per command.

Exit codes (documented in the README):
    0  success
    1  the command ran but some items failed (e.g. videos that could not be decoded), or a rank
       of a distributed run failed (train: rerun with --resume)
    2  bad usage or input the user can fix (a FlowkitError: missing store, bad option, ...)
    130 interrupted (Ctrl-C); finished work is kept (by the commands that resume: the message says)
    143 terminated (SIGTERM, as sent by Slurm, Kubernetes, `timeout`); as 130
"""
from __future__ import annotations

import errno
import functools
import importlib
import re
import sys
from typing import Sequence

import click

from ..version import __version__
from ..errors import FlowkitError, use_plain_warnings

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143

# Every command: its module, or "module:attribute" (imported only when the command runs, so
# `flowkit --help` imports neither torch nor PyAV) and the one-line summary `flowkit --help` lists.
# The commands take their short help from here too (:func:`summary`), so the two never disagree.
COMMANDS = {
    "extract": ("extract", "Compute optical flow / motion features of a video folder into a store."),
    "info": ("info", "Summarise a store: videos, classes, sizes, engines; --validate checks it."),
    "show": ("show", "Picture or video of a stored flow, colour-coded."),
    "benchmark": ("benchmark", "Speed (pairs/s) and accuracy (EPE) of engines and OpenCV peers."),
    "samples": ("samples", "Write a small video folder with known motion (photographs)."),
    "toy": ("toy", "Write a toy action dataset whose classes differ only in motion."),
    "train": ("train", "Train a video classifier on a store."),
    "evaluate": ("evaluate", "Evaluate a trained classifier (clips x crops, top-1, per class)."),
    "train-flow": ("train_flow", "Train a learnable motion engine (tvnet, motionnet)."),
    "export": ("interop:export_group", "Write a store as mmaction2 / denseflow rawframes."),
    "import": ("interop:import_group", "Read rawframes / denseflow HDF5 into a store."),
    "split-lists": ("split_lists", "A dataset's official split (HMDB51) as UCF101-style lists."),
}


def summary(name: str) -> str:
    """The one-line help of command ``name`` (see :data:`COMMANDS`)."""
    return COMMANDS[name][1]


# What a stopped command says it kept: one that resumes (extract, import, toy), and one that
# writes its results only at the end (evaluate, benchmark, show), which must not promise a resume.
KEPT_RESUME = "finished work is kept, rerun the same command to resume"
KEPT_NOTHING = "nothing was written; rerun the same command"
# train-flow's second Ctrl-C: the checkpoint holds the epochs finished before it, and the same
# command without --resume would refuse to write over it
KEPT_EPOCHS = "--out holds the finished epochs; continue with the same command plus --resume"


def handle_errors(func=None, *, stopped: str = KEPT_RESUME):
    """Turn FlowkitError into one line on stderr and exit code 2; Ctrl-C into exit code 130 and
    SIGTERM (a stop with reason "terminated", see :mod:`flowkit.cli.progress`) into 143, with a
    line saying ``stopped``: what was kept and how to go on. ``@handle_errors`` for a command that
    resumes; ``@handle_errors(stopped=KEPT_NOTHING + " to ...")`` for one that keeps nothing."""
    if func is None:
        return functools.partial(handle_errors, stopped=stopped)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except FlowkitError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(EXIT_USAGE)
        except OSError as exc:
            refusal = _refused_path(exc)
            if refusal is None:
                raise
            click.echo(f"error: {refusal}", err=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt as exc:
            if str(exc) == "terminated":
                click.echo(f"terminated (SIGTERM); {stopped}", err=True)
                sys.exit(EXIT_TERMINATED)
            click.echo(f"interrupted; {stopped}", err=True)
            sys.exit(EXIT_INTERRUPTED)
    return wrapper


#: errno -> (what the file system said, the fix) for a path a command could not create or write
_REFUSALS = {
    errno.EROFS: ("read-only file system", "choose a writable place (-o / --out)"),
    errno.EACCES: ("permission denied", "fix its permissions or choose another place (-o / --out)"),
    errno.EPERM: ("operation not permitted", "fix its permissions or choose another place"),
    errno.ENOSPC: ("no space left on device", "free space or choose another place (-o / --out)"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota or choose another place"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another place"),
    errno.EEXIST: ("a file is in the way of a folder", "choose another place"),
}


def _refused_path(exc: OSError) -> str | None:
    """One line for an OSError the file system raised on a path a user chose (a read-only run
    folder, an output folder without permission), else None: a traceback stays a traceback."""
    if exc.errno not in _REFUSALS or not exc.filename:
        return None
    said, fix = _REFUSALS[exc.errno]
    return f"{said}: {exc.filename}; {fix}"


def stop_exit_code(stop) -> int:
    """130 for a run stopped by Ctrl-C, 143 for one stopped by SIGTERM (a :class:`StopFlag`)."""
    return EXIT_TERMINATED if stop.reason == "terminated" else EXIT_INTERRUPTED


def one_line(exc: BaseException) -> str:
    """The user's message of ``exc``: a DataLoader worker's error arrives as "Caught X in
    DataLoader worker process N" + the worker's traceback; its last line holds the message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        name, _, message = last.partition(": ")
        return message if message and "." in name else last
    return text


# Raised by a group invoked without a command (click >= 8.2; older click prints the help itself
# and exits 0). A usage error, but its message is the whole help.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _dash_value_hint(exc: click.UsageError, args: Sequence[str]) -> str:
    """For an unknown option close to no real one, of a command that takes arguments: how to
    pass an argument that starts with '-' (a Kinetics key is a YouTube id, "-1Kf0ktVsQ4_000005_
    000015"), which click reads as options ("No such option '-1'") unless it follows ``--``.
    Only when ``args`` (the command line) holds such a value: a single-dash token longer than a
    short option that holds the unknown option's letter (click reads ``-hQf0...`` as ``-h``, then
    ``-Q``), not a mistyped ``-j`` or ``--bogus``."""
    if not isinstance(exc, click.NoSuchOption) or exc.possibilities or exc.ctx is None:
        return ""
    if re.fullmatch(r"--[a-z][a-z0-9-]*", exc.option_name):  # a mistyped option, not a value
        return ""
    letter = exc.option_name.lstrip("-")
    if not any(a.startswith("-") and not a.startswith("--") and len(a) > 2 and "=" not in a
               and letter in a[1:] for a in args):
        return ""
    names = [p.human_readable_name for p in exc.ctx.command.params
             if isinstance(p, click.Argument)]
    if not names:
        return ""
    return (f"; a value that starts with '-' (e.g. a YouTube id) goes after `--`: "
            f"{exc.ctx.command_path} [OPTIONS] -- {' '.join(names)}")


class LazyGroup(click.Group):
    """A click group whose commands are imported when used, not when listed; usage errors (a bad
    option value, a missing argument) are one line, like every other error, exit code 2; a group
    given no command shows its help (exit code 2 on click >= 8.2, as click does)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        use_plain_warnings()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:
            # `flowkit` or `flowkit train-flow` alone: the group's help, as click shows it (on
            # stderr, exit code 2 since click 8.2), not squashed into one error line.
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f"; see `{exc.ctx.command_path} --help`" if exc.ctx is not None else ""
            message = " ".join(exc.format_message().split()).rstrip(".")
            hint = _dash_value_hint(exc, sys.argv[1:] if args is None else args)
            click.echo(f"error: {message}{hint}{where}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("aborted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(result if isinstance(result, int) else EXIT_OK)

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        # "module" or "module:attribute" (one module may hold several commands)
        module, _, attribute = COMMANDS[name][0].partition(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attribute or "command")

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="flowkit")
def main():
    """flowkit: optical flow and motion features from video folders, in crash-safe HDF5 stores.

    Extract motion from a folder of videos into a store, look at it, and train and evaluate
    action classifiers on it. `flowkit COMMAND --help` explains each command with examples.

    \b
    Examples:
      flowkit samples videos/ && flowkit extract videos/ -o store/
      flowkit show store/ pan_left/pan_left_0 -o flow.png
    """
