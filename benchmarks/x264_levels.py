"""Does x264 encode the same frames to the same bytes on other CPUs? One machine, every x86 level.

``flowkit toy`` and ``flowkit samples`` write H.264 with the x264 of the PyAV wheel
(``flowkit/video.py``, ``write_video``), and the demo's score depends on those bytes. x264 picks its
SIMD code from the CPU, so a machine with other instructions may encode other bytes. This script
forces each level with ``x264-params asm=LEVEL`` (what x264 would choose on a CPU whose best is that
level) and encodes the same toy clips under three glibc ``MALLOC_PERTURB_`` fillings of fresh
memory, each in its own process; it reports per level how many videos differ between fillings
(the encoder reading memory it never wrote) and from the AVX2 bytes (the level flowkit caps x264
at on CPUs with AVX-512)::

    .venv/bin/python benchmarks/x264_levels.py              # -> benchmarks/results/x264_levels.md
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
LEVELS = ("avx512", "avx2", "avx", "sse4", "sse2", "0")  # "0": x264's plain C code
FILLINGS = ("0", "165", "77")
_CHILD = """
import sys, numpy as np
import flowkit.video as v
v._x264_params = lambda: "sync-lookahead=0:asm=" + sys.argv[3]
for i, clip in enumerate(np.load(sys.argv[1])):
    v.write_video(f"{sys.argv[2]}/{i}.mp4", clip)
"""


def encode(clips: Path, out: Path, level: str, filling: str) -> list[bytes]:
    out.mkdir(parents=True)
    env = {**os.environ, "MALLOC_PERTURB_": filling, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", _CHILD, str(clips), str(out), level], check=True, env=env)
    return [p.read_bytes() for p in sorted(out.glob("*.mp4"), key=lambda p: int(p.stem))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "results" / "x264_levels.md"), help="'-': stdout")
    args = ap.parse_args(argv)
    import av

    from flowkit.bench.harness import machine_info
    from flowkit.toy import render_toy, toy_specs

    started = time.perf_counter()
    specs = toy_specs(videos_per_class=2, frames=8, size=(64, 64))
    rows = []
    with tempfile.TemporaryDirectory(prefix="x264_levels_") as tmp:
        clips = Path(tmp) / "clips.npy"
        np.save(clips, np.stack([render_toy(s) for s in specs]))
        bytes_of = {lv: [encode(clips, Path(tmp) / lv / f, lv, f) for f in FILLINGS]
                    for lv in LEVELS}
    for level in LEVELS:
        runs = bytes_of[level]
        unstable = sum(len(set(v)) > 1 for v in zip(*runs))
        apart = sum(a != b for a, b in zip(runs[0], bytes_of["avx2"][0]))
        rows.append(f"| {level} | {unstable} | {apart} |")
    m = machine_info()
    text = "\n".join([
        "# x264's bytes at every x86 instruction level", "",
        "Command: `python benchmarks/x264_levels.py`  ",
        f"Machine: {m['cpu']}, {m['cores']} logical CPUs; PyAV {av.__version__} "
        f"(its own x264).  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"{len(specs)} toy clips (8 frames of 64x64, `flowkit toy` classes), encoded by "
        "`write_video` with `x264-params sync-lookahead=0:asm=LEVEL` in a fresh process for each "
        f"of the glibc `MALLOC_PERTURB_` fillings {', '.join(FILLINGS)}.", "",
        "| asm level | videos whose bytes differ between fillings | videos whose bytes differ "
        "from AVX2's |", "|---|---|---|", *rows, "",
        f"Total time {time.perf_counter() - started:.0f} s.", ""])
    if args.out != "-":
        Path(args.out).write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
