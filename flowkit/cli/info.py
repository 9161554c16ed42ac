"""``flowkit info STORE``: what a store holds and how it was made."""
from __future__ import annotations

import json
import os
import sys

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..conventions import is_backward
from ..store import FlowStore
from . import EXIT_OK, EXIT_PARTIAL, handle_errors, summary
from .progress import RichProgress


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _table(s: dict) -> Table:
    table = Table(title=escape(f"flowkit store {s['path']}"), show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column()

    def row(name: str, value: str) -> None:
        # Cells are rich markup: the values name folders, classes and engines, escaped so that
        # "cat [HD]" prints as it is.
        table.add_row(name, escape(value))

    row("format", f"{s['format']} v{s['version']}")
    row("videos", str(s["videos"]))
    classes = s["classes"]["names"]
    row("classes", f"{len(classes)}" + (f" ({', '.join(classes[:8])}"
                                        f"{', ...' if len(classes) > 8 else ''})" if classes else ""))
    row("frames", f"{s['frames']} ({s['rgb_frames']} RGB stored)")
    if s.get("rgb_codec"):
        row("rgb", f"{', '.join(s['rgb_codec'])}; "
                   f"{_human_bytes(s['bytes_per_rgb_frame'])} per frame")
    for name, pairs in s["flow_pairs"].items():
        eng = s["engines"].get(name, {})
        quant = ", ".join(s["quantization"].get(name, []))
        params = ", ".join(f"{k}={v}" for k, v in eng.get("params", {}).items())
        backends = "/".join(s.get("backends", {}).get(name, []))
        per_pair = s.get("bytes_per_flow_pair", {}).get(name)
        seen = s.get("max_error_seen", {}).get(name)
        row(f"flow/{name}", f"{pairs} pairs, {quant}"
            + (f", {_human_bytes(per_pair)} per pair" if per_pair else "")
            + (f", largest coding error {seen:.3g} px" if seen else "")
            + f"; {eng.get('engine')} v{eng.get('version')} ({params})"
            + (f"; computed with {backends}" if backends else "")
            + ("; backward flow, frame t+1 -> t" if is_backward(name) else ""))
    row("sizes", ", ".join(f"{k} ({v})" for k, v in s["sizes"].items()))
    row("on disk", _human_bytes(s["bytes"]))
    if s.get("partials"):
        row("in progress", f"{s['partials']} partial files (being written, or left by a "
                           "writer that died: the next run removes those)")
    for w in s["warnings"]:
        row("warning", w)
    return table


def _echo_lines(lines: list[str], chunk: int = 10_000) -> None:
    """``lines`` on stdout, one per line, written in chunks (300k keys: no per-line echo), for a
    pipe: a reader that stops early (``| head``) ends the listing quietly, not with a
    BrokenPipeError."""
    try:
        for start in range(0, len(lines), chunk):
            sys.stdout.write("".join(f"{line}\n" for line in lines[start:start + chunk]))
        sys.stdout.flush()
    except BrokenPipeError:
        # stdout is gone; the interpreter's own flush at exit would raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@click.command("info", short_help=summary("info"))
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--validate", is_flag=True, help="Also open and check every video file; exit 1 on problems.")
@click.option("--deep", is_flag=True,
              help="With --validate: decode every frame and check the stated flow error bounds "
                   "(reads the whole store).")
@click.option("--repair-manifest", is_flag=True,
              help="First write a lost or unreadable store.json again, its classes from the "
                   "videos' labels.")
@click.option("--keys", "list_keys", is_flag=True,
              help="List the video keys (CLASS/VIDEO, no file extension: what show and "
                   "extract --redo take), one per line, and nothing else; with --json, a "
                   "\"keys\" list in the summary.")
@handle_errors
def command(store, as_json, validate, deep, repair_manifest, list_keys):
    """Summarise STORE: videos, classes, frames, codecs and bytes per frame, and the engines and
    parameters used. --validate opens every video file and reports problems (exit 1);
    --validate --deep also decodes every frame and checks the stated flow error bounds.

    \b
    Examples:
      flowkit info store/
      flowkit info store/ --validate --deep
      flowkit info store/ --keys | grep walk/
    """
    if deep and not validate:
        raise click.UsageError("--deep goes with --validate")
    if list_keys and validate and not as_json:
        raise click.UsageError("--keys prints the keys alone; run --validate without it, or add "
                               "--json for both")
    if repair_manifest:
        classes = FlowStore.rebuild_manifest(store)
        shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
        Console(stderr=True).print(f"rebuilt {store}/store.json: {len(classes)} classes ({shown})",
                                   highlight=False, markup=False)
    if list_keys and not as_json:
        with FlowStore(store) as fs:
            _echo_lines(fs.keys())
        sys.exit(EXIT_OK)
    with FlowStore(store) as fs, RichProgress(Console(stderr=True), transient=True) as progress:
        summary = fs.summary(progress)
        problems = fs.validate(deep=deep, progress=progress) if validate else []
        if list_keys:
            summary["keys"] = fs.keys()
    if validate:
        summary["problems"] = problems
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        console = Console()
        console.print(_table(summary))
        if validate:
            console.print("valid" if not problems else "\n".join(f"problem: {p}" for p in problems),
                          highlight=False, markup=False)
    sys.exit(EXIT_PARTIAL if problems else EXIT_OK)
