"""What `flowkit extract --max-memory` does to a run's peak memory on large frames.

One `flowkit samples` video of 5 frames at 1080x1920 (4 pairs), TV-L1 with a one-warp schedule
(the memory of an iteration does not depend on how many run; the pyramid is OpenCV's default),
`--workers 1 --batch 8 --no-compile`, once with `--max-memory 1G` (the budget allows one pair per
engine call) and once with `--max-memory none` (all four pairs in one call). The figure is the
peak resident set of the `flowkit extract` process (``RUSAGE_CHILDREN``), measured in a fresh
child process each time.

    .venv/bin/python benchmarks/max_memory.py     # -> benchmarks/results/max_memory.md
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEDULE = ["--param", "warps=1", "--param", "outer_iterations=1", "--param", "inner_iterations=2"]
# Each run in a child of a fresh child, so RUSAGE_CHILDREN holds that run alone.
MEASURE = """
import json, resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if proc.returncode != 0:
    sys.exit(proc.stderr[-3000:])
notes = [line.strip() for line in proc.stderr.splitlines() if "note:" in line]
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"peak": peak, "summary": json.loads(proc.stdout), "notes": notes}))
"""


def run(videos: Path, store: Path, budget: str) -> dict:
    cmd = [sys.executable, "-m", "flowkit", "extract", str(videos), "-o", str(store), "--workers",
           "1", "--batch", "8", "--no-compile", "--max-memory", budget, "--json", *SCHEDULE]
    out = subprocess.run([sys.executable, "-c", MEASURE, *cmd], capture_output=True, text=True,
                         check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    result = json.loads(out.stdout)
    shown = " ".join(shlex.quote(c) for c in ["flowkit", *cmd[3:]])
    return {"budget": budget, "peak_gb": result["peak"] / 2**30,
            "pairs": result["summary"]["pairs"], "notes": result["notes"],
            "command": shown.replace(str(videos), "VIDEOS").replace(str(store), "STORE")}


def main() -> int:
    from flowkit.bench.harness import machine_info
    from flowkit.samples import make_sample_videos

    m = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        videos = Path(tmp) / "videos"
        make_sample_videos(videos, classes=("pan_left",), videos_per_class=1, frames=5,
                           size=(1080, 1920))
        rows = [run(videos, Path(tmp) / f"store-{budget}", budget) for budget in ("1G", "none")]
    lines = ["# Extraction's peak memory under --max-memory (1080p TV-L1)", "",
             "Command: `.venv/bin/python benchmarks/max_memory.py`  ",
             f"Machine: {m['cpu']}, {m['cores']} logical CPUs, {m['platform']}; no GPU.  ",
             f"Date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
             "One 5-frame 1080x1920 `flowkit samples` video (4 pairs), TV-L1 with a one-warp "
             "schedule, one process; peak resident set of the `flowkit extract` process.", "",
             "| --max-memory | pairs | peak RSS GB | what the run said | command |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['budget']} | {r['pairs']} | {r['peak_gb']:.2f} | "
              f"{'; '.join(r['notes']) or '-'} | `{r['command']}` |" for r in rows]
    out = HERE / "results" / "max_memory.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
