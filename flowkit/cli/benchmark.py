"""``flowkit benchmark``: speed and accuracy of flow engines and their OpenCV peers on ground truth.

Which engine, on which device, at what cost in accuracy: every method runs on the same pairs, warm-up
excluded (reported as ``warm-up``), then ``--repeats`` timed passes; see :mod:`flowkit.bench.harness`
for exactly what is measured.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..bench import harness
from ..errors import FlowkitError
from . import EXIT_OK, EXIT_PARTIAL, KEPT_NOTHING, handle_errors, summary
from .options import (BACKENDS, backend_option, check_output_file, parse_device, parse_params,
                      refuse_option_params)
from .progress import RichProgress

DEFAULT_METHODS = harness.DEFAULT_METHODS
#: Engine keywords the harness sets from --backend and --compile: a --param for one is refused,
#: naming the option.
OPTION_PARAMS = {
    "backend": backend_option,
    "compile": lambda v: ("--compile on" if v is True else "--compile off" if v is False
                          else "--compile off|on|both"),
}


def results_table(results: list[dict[str, Any]]) -> Table:
    """The rich table: one row per method."""
    first = results[0]
    m = first["machine"]
    # Title and caption are rich markup: the names in them come from outside (a CPU or GPU model,
    # a dataset), escaped so that brackets in them print as they are.
    title = escape(f"{first['dataset']} {first['size']}, {first['pairs']} pairs, "
                   f"{first['repeats']} repeats")
    caption = escape(f"{m['cpu']}, {m['cores']} cores, torch {first['versions']['torch']} "
                     f"({m['torch_threads']} threads), OpenCV {first['versions']['opencv']} "
                     f"({m['opencv_threads']} threads)" + (f", {m['gpu']}" if m.get("gpu") else "")
                     + f"; load {m['loadavg_1m']}")
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for name, justify in [("method", "left"), ("device", "left"), ("backend", "left"),
                          ("batch", "right"),
                          ("pairs/s", "right"), ("EPE", "right"), ("EPE-noc", "right"),
                          ("outliers", "right"), ("AE °", "right"), ("warm-up s", "right"),
                          ("peak mem MB", "right")]:
        table.add_column(name, justify=justify, no_wrap=True)
    for r in results:
        if r["status"] != "ok":
            table.add_row(r["method"], r["device"], r.get("backend") or "-", str(r["batch"]),
                          f"[red]{r['status']}[/red]", *["-"] * 6)
            continue
        table.add_row(r["method"], r["device"], r.get("backend") or "-", str(r["batch"]),
                      _num(r["pairs_per_s"], 3),
                      _num(r["epe"], 3), _num(r["epe_noc"], 3),
                      "-" if r["outliers"] is None else f"{100 * r['outliers']:.1f}%",
                      _num(r["angular"], 3), f"{r['warmup_s']:.2f}",
                      "-" if r["peak_mem_mb"] is None else f"{r['peak_mem_mb']:.1f}")
    return table


def _num(value: float | None, digits: int) -> str:
    """``digits`` significant digits, no exponent for ordinary magnitudes."""
    if value is None:
        return "-"
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def plot_results(results: list[dict[str, Any]], path: str | Path) -> Path:
    """EPE against pairs/s (log x), one labelled point per method that ran; a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [r for r in results if r["status"] == "ok" and r["pairs_per_s"] and r["epe"] is not None]
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # Labels alternate above and below in speed order, so that neighbours do not overprint.
    for i, r in enumerate(sorted(ok, key=lambda r: r["pairs_per_s"])):
        ax.scatter(r["pairs_per_s"], r["epe"], s=36)
        ax.annotate(f"{r['method']} ({r['device']})", (r["pairs_per_s"], r["epe"]),
                    textcoords="offset points", xytext=(6, 5 if i % 2 == 0 else -12), fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.15)  # room above the top point for its label, below the title
    ax.set_ylim(bottom=0)
    ax.set_xlabel("pairs / s (log scale)")
    ax.set_ylabel("mean end-point error (px)")
    if results:
        r = results[0]
        ax.set_title(f"{r['dataset']} {r['size']}, {r['pairs']} pairs; {r['machine']['cpu']}",
                     fontsize=9)
    missing = [r["method"] for r in results if r["status"] != "ok"]
    if missing:
        fig.text(0.01, 0.01, f"not run: {', '.join(missing)}", fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png")
    return path


def _check_outputs(json_out: str | None, plot_out: str | None) -> None:
    """Before measuring anything: the output files can be written where asked."""
    for option, out in (("--json", None if json_out == "-" else json_out), ("--plot", plot_out)):
        if out:
            check_output_file(option, out)
    if plot_out and Path(plot_out).suffix.lower() != ".png":
        raise FlowkitError(f"--plot {plot_out}: the plot is a PNG image; name it .png")


@click.command("benchmark", short_help=summary("benchmark"))
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--methods", default=DEFAULT_METHODS, show_default=True,
              help="Comma-separated methods: flowkit engines (tvl1, tvnet, ...), OpenCV peers "
                   "(opencv-tvl1, opencv-dis, opencv-farneback), or 'all'.")
@click.option("--device", default="cpu", show_default=True,
              help="Device of the flowkit engines: cpu or cuda[:N] (OpenCV peers run on the CPU).")
@click.option("--size", default=None,
              help="HxW. synthetic: frame size (default 128x160); stereo: the height picks the scale "
                   "(or give a scale, e.g. 0.5; default 0.25); folders: resize frames and scale the "
                   "flow (default: as stored).")
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1),
              help="Pairs per engine call (OpenCV peers always take one).")
@click.option("--backend", type=click.Choice(BACKENDS), default="auto",
              show_default=True,
              help="Numerics of the engines with CuPy kernels (tvl1, tvnet, costvolume); the "
                   "table's backend column says what each ran on.")
@click.option("--compile", "compile_", type=click.Choice(["off", "on", "both"]), default="off",
              show_default=True,
              help="torch.compile the engines that can be (tvl1); both: run them eager and "
                   "compiled, side by side.")
@click.option("--dataset", default="synthetic", show_default=True,
              type=click.Choice(harness.DATASETS),
              help="Ground truth: built-in synthetic pairs or stereo pair, or a folder given as PATH "
                   "after it (--dataset middlebury PATH, --dataset sintel PATH).")
@click.option("--pairs", default=None, type=click.IntRange(min=1),
              help=f"Number of pairs (synthetic: default {harness.DEFAULT_SYNTHETIC_PAIRS}; folders: the first "
                   "N by name, default all).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="Timed passes over the dataset; pairs/s uses the median.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the synthetic pairs.")
@click.option("--param", "params", multiple=True, metavar="[METHOD:]KEY=VALUE",
              help="Method parameter, repeatable. KEY=VALUE sets every selected method that has it "
                   "(nscales=2 sets tvl1 and opencv-tvl1 alike); METHOD:KEY=VALUE sets one "
                   "(opencv-dis:preset=fast). Typed and range-checked for engines and OpenCV "
                   "peers alike before anything runs.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="CPU threads for torch and OpenCV alike (default: their own defaults, recorded "
                   "in the results).")
@click.option("--json", "json_out", default=None, metavar="OUT",
              help="Write the results as JSON to OUT ('-' prints them to stdout, the table then "
                   "goes to stderr).")
@click.option("--plot", "plot_out", default=None, metavar="OUT.png",
              help="Write an EPE vs pairs/s scatter plot (PNG).")
@handle_errors(stopped=KEPT_NOTHING + " to benchmark")  # --json/--plot are written at the end
def command(path, methods, device, size, batch, backend, compile_, dataset, pairs, repeats, seed,
            params, threads, json_out, plot_out):
    """FPS and end-point error of flow engines and OpenCV peers on ground truth.

    \b
    Examples:
      flowkit benchmark --methods tvl1,opencv-tvl1 --compile both --size 256x340 --pairs 16
      flowkit benchmark --dataset sintel /data/Sintel --pairs 20 --size 0.5 --json sintel.json
      flowkit benchmark --device cuda --backend cupy --batch 64 --size 256x340 --pairs 64

    Exits 1 when a method could not run (e.g. opencv-tvl1 without opencv-contrib, or OpenCV
    raising an error inside it); its row says missing or failed and the reason is printed below
    the table. A bad option or --param value (wrong type, out of range) exits 2 with one line
    before anything is measured.
    """
    device = parse_device(device)
    _check_outputs(json_out, plot_out)
    method_params = parse_params(params)
    refuse_option_params(method_params, OPTION_PARAMS)
    console = Console(stderr=json_out == "-")
    if not console.is_terminal:
        console.width = max(console.width, 140)  # keep rows whole in logs and pipes
    with RichProgress(Console(stderr=True), transient=True) as progress:
        results = harness.collect(methods, device, size, batch, dataset, path, pairs, repeats,
                                  seed, method_params, threads, progress=progress,
                                  backend=backend, compile=compile_)
    console.print(results_table(results))
    for r in results:
        if r["status"] != "ok":
            # Plain text: reasons quote install hints (pip install -e .[cuda12]) and errors.
            console.print(f"{r['method']} {r['status']}: {r['reason']}", highlight=False,
                          markup=False)
    m = results[0]["machine"]
    # The start load only: the load at the end includes the benchmark's own threads.
    load = m["loadavg_1m"]
    if load is not None and m["cores"] and load > 0.5 * m["cores"]:
        advice = "" if threads else "; try --threads 1 for a like-for-like comparison"
        console.print(f"note: load average {load} on {m['cores']} cores when the run began: other "
                      "processes compete for the CPU, the timings are low (multi-threaded torch "
                      f"suffers most{advice})", highlight=False)
    if json_out == "-":
        click.echo(json.dumps(results, indent=2, allow_nan=False))
    elif json_out:
        Path(json_out).write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
        console.print(f"results written to {json_out}", highlight=False, markup=False)
    if plot_out:
        console.print(f"plot written to {plot_results(results, plot_out)}", highlight=False,
                      markup=False)
    raise SystemExit(EXIT_PARTIAL if any(r["status"] != "ok" for r in results) else EXIT_OK)
