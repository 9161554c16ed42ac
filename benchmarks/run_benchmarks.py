"""Regenerate ``benchmarks/RESULTS.md`` from scratch: every configured ``flowkit benchmark`` run, in
this process, with the exact equivalent command, the machine, the date, versions and the table.

    python benchmarks/run_benchmarks.py                 # all runs -> benchmarks/RESULTS.md
    python benchmarks/run_benchmarks.py --quick         # tiny smoke run, Markdown to stdout
    python benchmarks/run_benchmarks.py --only tvl1-cpu --device cuda --out /tmp/r.md
    python benchmarks/run_benchmarks.py --scripts-only  # keep the engine runs, recopy results/*.md

Each run is given as the command-line arguments of ``flowkit benchmark``; they are parsed by that
command's own option parser and executed by the function behind it, so the command printed above a
table is the command that produced it. No number in RESULTS.md is written by hand.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import re
import shlex
import sys
import time
from pathlib import Path

from flowkit.bench.harness import collect
from flowkit.cli.benchmark import command
from flowkit.cli.options import parse_params
from flowkit.errors import FlowkitError
from flowkit.progress import LineProgress

HERE = Path(__file__).resolve().parent

# (id, title, what it answers, flowkit benchmark arguments)
RUNS = [
    ("tvl1-cpu", "TV-L1 on the CPU: flowkit against OpenCV at OpenCV's default parameters",
     "flowkit's `tvl1` (eager and with `compile=True`, 8 pairs per call) and OpenCV's "
     "`DualTVL1OpticalFlow` with the same (default) parameters, measured in the same run on 16 "
     "synthetic pairs of 256x340 real-photo frames, the frame size of two-stream extraction.",
     ["--methods", "tvl1,opencv-tvl1", "--compile", "both", "--size", "256x340", "--pairs", "16",
      "--batch", "8", "--repeats", "3"]),
    ("all-synthetic", "Every method on the synthetic set, 128x160",
     "All registered engines and the OpenCV peers on 16 synthetic pairs (six motion kinds, "
     "including occlusions and 5-15 px motion).",
     ["--methods", "all", "--size", "128x160", "--pairs", "16", "--batch", "8", "--repeats", "3"]),
    ("all-stereo-0.25", "Every method on the Motorcycle stereo pair at scale 0.25",
     "Real imagery with real (disparity) ground truth: Middlebury 2014 Motorcycle as shipped by "
     "scikit-image, left -> right, at 1/4 of 500x741.",
     ["--methods", "all", "--dataset", "stereo", "--size", "0.25", "--repeats", "3"]),
    ("all-stereo-0.5", "Every method on the Motorcycle stereo pair at scale 0.5",
     "The same pair at 1/2 of 500x741 (disparities up to about 30 px).",
     ["--methods", "all", "--dataset", "stereo", "--size", "0.5", "--repeats", "3"]),
]

# --quick: the same runs, tiny and single-threaded (robust on a busy machine), to prove the script
# works end to end; its numbers mean nothing.
QUICK = {
    "tvl1-cpu": ["--methods", "tvl1,opencv-tvl1", "--compile", "both", "--size", "64x85",
                 "--pairs", "2",
                 "--batch", "2", "--repeats", "1", "--threads", "1"],
    "all-synthetic": ["--methods", "all", "--size", "48x64", "--pairs", "2", "--batch", "2",
                      "--repeats", "1", "--threads", "1"],
    "all-stereo-0.25": ["--methods", "all", "--dataset", "stereo", "--size", "0.1", "--repeats",
                        "1", "--threads", "1"],
    "all-stereo-0.5": ["--methods", "all", "--dataset", "stereo", "--size", "0.15", "--repeats",
                       "1", "--threads", "1"],
}

COLUMNS = ["method", "device", "batch", "pairs/s", "pass s: median (min-max)", "EPE", "EPE-noc",
           "outliers >3px", "AE °", "warm-up s", "peak mem MB"]


def run(args: list[str]) -> tuple[list[dict], float]:
    """Parse ``args`` with ``flowkit benchmark``'s own parser and run them; (results, seconds)."""
    ctx = command.make_context("benchmark", list(args))
    p = ctx.params
    start = time.perf_counter()
    results = collect(methods=p["methods"], device=p["device"], size=p["size"], batch=p["batch"],
                      dataset=p["dataset"], path=p["path"], pairs=p["pairs"], repeats=p["repeats"],
                      seed=p["seed"], params=parse_params(p["params"]), threads=p["threads"],
                      progress=LineProgress(every=30), compile=p["compile_"],
                      backend=p["backend"])
    return results, time.perf_counter() - start


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _sig(value, digits: int = 3) -> str:
    """``digits`` significant digits, without an exponent for values from 1e-3 up."""
    if value is None:
        return "-"
    if value == 0 or abs(value) < 1e-3:
        return f"{value:.2e}"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{decimals}f}"


def table(results: list[dict]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(
        ":--" if i < 2 else "--:" for i in range(len(COLUMNS))) + "|"]
    for r in results:
        if r["status"] != "ok":
            cells = [r["method"], r["device"], str(r["batch"]), r["status"]] + ["-"] * 7
        else:
            cells = [f"`{r['method']}`", r["device"], str(r["batch"]), _sig(r["pairs_per_s"]),
                     f"{_sig(r['median_pass_s'])} "
                     f"({_sig(r['min_pass_s'])}-{_sig(r['max_pass_s'])})",
                     _f(r["epe"], ".3f"), _f(r["epe_noc"], ".3f"),
                     "-" if r["outliers"] is None else f"{100 * r['outliers']:.1f} %",
                     _f(r["angular"], ".2f"), _f(r["warmup_s"], ".2f"), _f(r["peak_mem_mb"], ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratios(results: list[dict]) -> list[str]:
    """flowkit's TV-L1 variants against OpenCV's TV-L1 of the same run, computed from the results."""
    ok = {r["method"]: r for r in results if r["status"] == "ok" and r["pairs_per_s"]}
    ref = ok.get("opencv-tvl1")
    if ref is None:
        return []
    return [f"- `{name}` ({r['device']}): {_sig(r['pairs_per_s'] / ref['pairs_per_s'])}x the pairs/s "
            f"of `opencv-tvl1`; EPE {_f(r['epe'], '.3f')} vs {_f(ref['epe'], '.3f')} px"
            for name, r in ok.items() if re.match(r"tvl1\b(?!-)", name)]  # tvl1, tvl1 (compiled)


def machine_lines(r: dict) -> list[str]:
    m, v = r["machine"], r["versions"]
    return [
        f"- CPU: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable); torch threads "
        f"{m['torch_threads']}, OpenCV threads {m['opencv_threads']}; GPU: {m['gpu'] or 'none used'}",
        f"- Versions: flowkit {v['flowkit']}, torch {v['torch']}, OpenCV {v['opencv']}, "
        f"numpy {v['numpy']}, Python {v['python']}; {m['platform']}",
    ]


def section(run_id: str, title: str, about: str, args: list[str], results: list[dict],
            seconds: float, when: str, first: bool = True) -> list[str]:
    m = results[0]["machine"]
    cmd = shlex.join(["flowkit", "benchmark", *args])
    # The load at the end includes the benchmark's own threads; only the start says whether other
    # processes were competing.
    start_load = m["loadavg_1m"]
    busy = start_load is not None and bool(m["cores"]) and start_load > 0.5 * m["cores"]
    if not first:
        verdict = ("the start load includes this script's previous section; check the first "
                   "section's verdict for other processes")
    else:
        verdict = ("**busy machine**: other processes were competing for the CPU, timings are low"
                   if busy else "quiet machine")
    lines = [f"## {title}", "", about, "", "```", cmd, "```", "",
             f"- Run `{run_id}` at {when}, {seconds:.0f} s; 1-minute load average "
             f"{m['loadavg_1m']} at the start, {m['loadavg_1m_end']} at the end on "
             f"{m['cores']} cores: {verdict}",
             *machine_lines(results[0]), "", *table(results), ""]
    extra = ratios(results)
    if extra:
        lines += [*extra, ""]
    for r in results:
        if r["status"] != "ok":
            lines.append(f"- `{r['method']}` {r['status']}: {r['reason']}")
    params = {r["method"]: r["params"] for r in results if r["status"] == "ok"}
    lines += ["", "<details><summary>parameters</summary>", ""]
    lines += [f"- `{name}`: " + ", ".join(f"{k}={v}" for k, v in p.items()) for name, p in params.items()]
    lines += ["", "</details>", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny versions of the runs, to check the script (Markdown to stdout "
                             "unless --out)")
    parser.add_argument("--out", default=None,
                        help="Markdown file to write (default benchmarks/RESULTS.md; '-' stdout)")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated run ids ({', '.join(r[0] for r in RUNS)})")
    parser.add_argument("--device", default=None, help="add --device DEVICE to every run")
    parser.add_argument("--scripts-only", action="store_true",
                        help="keep RESULTS.md's engine runs as they are and only recopy the other "
                             "scripts' results/*.md into it")
    opts = parser.parse_args(argv)
    if opts.scripts_only:
        return refresh_script_results(Path(opts.out or HERE / "RESULTS.md"))
    out = opts.out or ("-" if opts.quick else str(HERE / "RESULTS.md"))
    wanted = None if opts.only is None else set(opts.only.split(","))
    unknown = (wanted or set()) - {r[0] for r in RUNS}
    if unknown:
        parser.error(f"unknown run ids {sorted(unknown)}; choose from {[r[0] for r in RUNS]}")

    now = lambda: dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    doc = ["# flowkit benchmark results", "",
           f"Generated by `python benchmarks/run_benchmarks.py"
           f"{' --quick' if opts.quick else ''}` on {now()}. Do not edit by hand: rerun the script "
           "(on a quiet machine). Each section gives the `flowkit benchmark` command that "
           "reproduces it.", ""]
    if opts.quick:
        doc += ["**QUICK SMOKE RUN**: tiny frames, 1 repeat; the numbers only show that the "
                "script works.", ""]
    doc += ["What is measured (details in `flowkit/bench/harness.py`): warm-up (first batch; "
            "includes torch.compile for the compiled runs) is excluded and reported; pairs/s = pairs / "
            "median of the timed passes over the dataset, each pass including the copy of the flow "
            "to host memory; OpenCV computes one pair per call with its own threads; peak memory "
            "is the peak resident set (CPU) or `torch.cuda.max_memory_allocated` (CUDA) during the "
            "passes above the level before the method was created; EPE / EPE-noc / outliers (EPE > 3 px) / angular error are means over "
            "the pairs.", ""]
    todo = [r for r in RUNS if wanted is None or r[0] in wanted]
    for i, (run_id, title, about, args) in enumerate(todo):
        if opts.quick:
            title, about = f"{title} (quick version)", f"Smoke-test version of: {about}"
            args = QUICK[run_id]
        args = list(args)
        if opts.device:
            args += ["--device", opts.device]
        print(f"[{run_id}] {shlex.join(['flowkit', 'benchmark', *args])}", file=sys.stderr)
        when = now()
        try:
            results, seconds = run(args)
        except FlowkitError as exc:  # e.g. --device cuda without CUDA: one line, as flowkit's CLI
            print(f"error: {exc}", file=sys.stderr)
            return 2
        doc += section(run_id, title, about, args, results, seconds, when, first=i == 0)
        for r in results:
            print(f"  {r['method']:<18} {r['status']:<8} pairs/s {_sig(r['pairs_per_s'])}"
                  f"  EPE {_f(r['epe'], '.3f')}", file=sys.stderr)
        if out != "-" and i + 1 < len(todo):
            # Finished runs survive an interrupted regeneration; the marker says it is unfinished.
            pending = ", ".join(r[0] for r in todo[i + 1:])
            _write(out, doc + [f"**INCOMPLETE**: still to run: {pending}."])
    doc += script_results()
    if out == "-":
        sys.stdout.write(_text(doc))
    else:
        _write(out, doc)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def script_results() -> list[str]:
    """The results of the other scripts (paper trends of the engines, recognition evidence, store
    codecs, 1 vs 2 torchrun processes).

    Each ``results/*.md`` is written by the script named at its top, with its command and machine;
    it is copied here whole, two heading levels down, so RESULTS.md holds every measured number.
    """
    files = sorted((HERE / "results").glob("*.md"))
    if not files:
        return []
    lines = ["## Results of the other scripts: engine paper trends, recognition, store codecs, "
             "scale-out", "",
             "Copied from the files below as they are on disk now (rerun their scripts to refresh "
             "them; each gives its own command and machine, and the date where it records "
             "one):", ""]
    lines += [f"- [{f.read_text().splitlines()[0].lstrip('# ').strip()}](results/{f.name})"
              for f in files]
    for f in files:
        lines.append("")
        lines += [("##" + line) if line.startswith("#") else line
                  for line in f.read_text().rstrip().splitlines()]
    return lines + [""]


def refresh_script_results(path: Path) -> int:
    """Replace the script-results section of an existing RESULTS.md (everything from its heading
    on) with :func:`script_results` of the files on disk now; the engine runs above stay."""
    heading = "## Results of the other scripts"
    lines = path.read_text().splitlines()
    cut = next((i for i, line in enumerate(lines) if line.startswith(heading)), len(lines))
    _write(str(path), lines[:cut] + script_results())
    print(f"refreshed the script results in {path}", file=sys.stderr)
    return 0


def _text(lines: list[str]) -> str:
    return "\n".join(lines).rstrip() + "\n"


def _write(path: str, lines: list[str]) -> None:
    Path(path).write_text(_text(lines))


if __name__ == "__main__":
    sys.exit(main())
