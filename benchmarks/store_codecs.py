"""How big is a store, how faithful, how fast? Every flow and RGB codec against JPEG rawframes.

Real video: the sample videos (scikit-image photographs panned, zoomed and rotated by known
motions, encoded with PyAV) at 128x160 and at 256x340, decoded, and their TV-L1 flow (OpenCV's
default parameters) computed in float32: the reference every codec is measured against.

- Flow: each candidate codes every flow pair on one thread: KiB per pair, mean / max absolute
  error against the float32 flow (and the error on pixels beyond rawframes' +-20 px clip), encode
  and decode pairs/s per core. Candidates: mmaction2/denseflow rawframes (clip +-20 px, 8 bits, JPEG
  q95, as ``flow_x``/``flow_y`` images); flowkit's store codecs (``jpegls`` at 0.05/0.1/0.2 px,
  lossless and near-lossless JPEG-LS, ``float16``, ``uint8``); and other error-bounded or lossless candidates through ``imagecodecs``
  (SZ3, ZFP, LERC, PNG and JPEG-XL of the 0.2 px quantised flow).
- RGB: rawframes' JPEG q95 (default tables), flowkit's ``jpeg`` (q95 and q90, optimised tables)
  and ``raw``: KiB per frame, PSNR against the decoded frames, encode / decode frames/s per core.
- Stores: the default, lossless and uint8 stores of the same videos written through
  ``FlowStore`` with one encoding thread: bytes per frame (flow + RGB) against rawframes, and write /
  read pairs/s per core including HDF5.
- Recognition: the toy recipe of ``benchmarks/recognition.py`` (CIDC on TV-L1 flow) trained on a
  store written with the default codecs and on a lossless one, 3 seeds: top-1 and training clips/s.

    .venv/bin/python benchmarks/store_codecs.py            # writes benchmarks/results/store_codecs.md
    .venv/bin/python benchmarks/store_codecs.py --quick    # smoke run, Markdown to stdout
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import flowkit  # noqa: E402
from flowkit.samples import make_sample_videos  # noqa: E402
from flowkit.store import FlowStore, flow_codec, rgb_codec  # noqa: E402
from flowkit.video import load_frames  # noqa: E402

RAW_BOUND, RAW_QUALITY = 20.0, 95


# ------------------------------------------------------------------------------------ the data

def videos_and_flow(root: Path, size, frames: int, per_class: int, quick: bool):
    """Sample videos at ``size``: decoded RGB frames and float32 TV-L1 flow, per video."""
    make_sample_videos(root, videos_per_class=per_class, frames=frames, size=size)
    params = dict(nscales=2, warps=1, outer_iterations=2) if quick else {}
    engine = flowkit.create_engine("tvl1", compile=not quick, **params)
    out = []
    for path in sorted(root.rglob("*.mp4")):
        rgb = load_frames(path)
        t = torch.from_numpy(rgb).permute(0, 3, 1, 2)
        flow = torch.cat([engine(t[i:min(i + 8, len(t) - 1)], t[i + 1:i + 9])
                          for i in range(0, len(t) - 1, 8)])
        out.append((path, rgb, flow.numpy()))
    return out


# --------------------------------------------------------------------------------- the codecs

def rawframes_encode(f: np.ndarray) -> bytes:
    """flow_x and flow_y JPEGs as denseflow writes them (length-prefixed here, to keep one blob)."""
    q = np.rint((np.clip(f, -RAW_BOUND, RAW_BOUND) + RAW_BOUND) * 255 / (2 * RAW_BOUND))
    x, y = (cv2.imencode(".jpg", q[c].astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, RAW_QUALITY])[1]
            .tobytes() for c in range(2))
    return len(x).to_bytes(4, "little") + x + y


def rawframes_decode(blob: bytes, shape) -> np.ndarray:
    n = int.from_bytes(blob[:4], "little")
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE)
              for b in (blob[4:4 + n], blob[4 + n:])]
    return np.stack(images).astype(np.float32) * (2 * RAW_BOUND / 255) - RAW_BOUND


def _quantised(f: np.ndarray, step: float = 0.2) -> np.ndarray:
    return np.clip(np.rint(f / step) + 32768, 0, 65535).astype(np.uint16).reshape(-1, f.shape[-1])


def imagecodecs_candidates() -> dict:
    """name -> (encode(f) -> bytes, decode(bytes, shape) -> f); other codecs considered."""
    import imagecodecs as ic

    def quantised(encode, decode, step=0.2):
        return (lambda f: encode(_quantised(f, step)),
                lambda b, shape: ((decode(b).astype(np.float32) - 32768) * step).reshape(shape))
    return {
        "SZ3, absolute error 0.1 px": (
            lambda f: ic.sz3_encode(np.ascontiguousarray(f), mode="abs", abs=0.1),
            lambda b, shape: ic.sz3_decode(b, shape=shape, dtype=np.float32)),
        "ZFP, tolerance 0.1 px": (
            lambda f: ic.zfp_encode(np.ascontiguousarray(f), level=0.1, mode="a"),
            lambda b, shape: ic.zfp_decode(b)),
        "LERC + zstd, max error 0.1 px": (
            lambda f: ic.lerc_encode(np.ascontiguousarray(f), level=0.1, compression="zstd"),
            lambda b, shape: ic.lerc_decode(b)),
        "0.2 px steps, PNG (16-bit)": quantised(lambda q: ic.png_encode(q, level=9), ic.png_decode),
        "0.2 px steps, JPEG-XL lossless": quantised(
            lambda q: ic.jpegxl_encode(q, lossless=True, effort=7), ic.jpegxl_decode),
    }


def measure_flow(name: str, encode, decode, flows: list[np.ndarray]) -> dict:
    t0 = time.perf_counter()
    blobs = [encode(f) for f in flows]
    t1 = time.perf_counter()
    backs = [decode(b, f.shape) for b, f in zip(blobs, flows)]
    t2 = time.perf_counter()
    errs = np.concatenate([np.abs(b - f).ravel() for b, f in zip(backs, flows)])
    far = np.concatenate([np.abs(b - f)[np.abs(f) > RAW_BOUND] for b, f in zip(backs, flows)])
    return {"codec": name, "kib": sum(len(b) for b in blobs) / len(flows) / 1024,
            "mean_err": float(errs.mean()), "max_err": float(errs.max()),
            "far_max_err": float(far.max()) if far.size else None,
            "enc_per_s": len(flows) / (t1 - t0), "dec_per_s": len(flows) / (t2 - t1)}


def flow_rows(flows: list[np.ndarray]) -> list[dict]:
    rows = [measure_flow("rawframes: clip +-20 px, 8 bits, JPEG q95", rawframes_encode,
                         rawframes_decode, flows)]
    for spec, near, label in (
            ("jpegls:0.1", 0, "flowkit jpegls, max error 0.1 px (default)"),
            ("jpegls:0.05", 0, "flowkit jpegls, max error 0.05 px"),
            ("jpegls:0.2", 0, "flowkit jpegls, max error 0.2 px"),
            ("jpegls:0.1", 16, "flowkit jpegls, max error 0.1 px, near-lossless (near 16)"),
            ("float16", None, "flowkit float16 (`--lossless`)"),
            ("uint8:20", None, "flowkit uint8, bound 20 px (gzip)")):
        codec = flow_codec(spec, **({} if near is None else {"near": near}))
        decode = ((lambda b, shape, c=codec: c.decode(b)) if codec.storage == "encoded" else
                  (lambda b, shape, c=codec: _array_decode(c, b, shape)))
        rows.append(measure_flow(label, lambda f, c=codec: c.encode(f)[0], decode, flows))
    for label, (enc, dec) in imagecodecs_candidates().items():
        rows.append(measure_flow(label, enc, dec, flows))
    return rows


def _array_decode(codec, chunk: bytes, shape) -> np.ndarray:
    """Undo an array codec's pre-compressed chunk (what HDF5's filters do when reading)."""
    import zlib

    raw = zlib.decompress(chunk)
    dtype = np.dtype(codec.stored_dtype)
    if dtype.itemsize > 1:  # un-shuffle
        raw = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, -1).T.tobytes()
    return codec.from_stored(np.frombuffer(raw, dtype).reshape(shape))



# ------------------------------------------------------------------------------------------ rgb

def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def rgb_rows(frames: list[np.ndarray]) -> list[dict]:
    """Every RGB codec on every decoded frame: KiB/frame, PSNR, frames/s per core."""
    def rawframes_encode(x):
        return cv2.imencode(".jpg", np.ascontiguousarray(x[..., ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, RAW_QUALITY])[1].tobytes()

    def rawframes_decode(b):
        return cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]

    candidates = {f"rawframes: JPEG q{RAW_QUALITY} (default tables)": (rawframes_encode,
                                                                      rawframes_decode)}
    for spec, label in (("jpeg:95", "flowkit jpeg q95, optimised tables (default)"),
                        ("jpeg:90", "flowkit jpeg q90"), ("raw", "flowkit raw (lossless option)")):
        codec = rgb_codec(spec)
        decode = (codec.decode if codec.storage == "encoded" else
                  (lambda b, c=codec, shape=frames[0].shape: _array_decode(c, b, shape)))
        candidates[label] = (lambda x, c=codec: c.encode(x)[0], decode)
    rows = []
    for label, (encode, decode) in candidates.items():
        t0 = time.perf_counter()
        blobs = [encode(x) for x in frames]
        t1 = time.perf_counter()
        backs = [decode(b) for b in blobs]
        t2 = time.perf_counter()
        rows.append({"codec": label, "kib": sum(map(len, blobs)) / len(frames) / 1024,
                     "psnr": statistics.mean(_psnr(a, b) for a, b in zip(frames, backs)),
                     "enc_per_s": len(frames) / (t1 - t0), "dec_per_s": len(frames) / (t2 - t1)})
    return rows


# --------------------------------------------------------------------------------------- stores

STORES = {  # label -> (flow codec, rgb codec)
    "default (`flowkit extract`)": ("jpegls:0.1", "jpeg:95"),
    "`--lossless`": ("float16", "raw"),
    "`--flow-codec uint8:20`": ("uint8:20", "jpeg:95"),
}


def rawframes_on_disk(videos, root: Path) -> dict:
    """Write every video as denseflow does (``img_%05d.jpg``, ``flow_x_%05d.jpg``,
    ``flow_y_%05d.jpg``); bytes per frame as file sizes and as blocks the file system allocated."""
    for i, (_, rgb, flow) in enumerate(videos):
        d = root / "rawframes" / str(i)
        d.mkdir(parents=True)
        for t, x in enumerate(rgb, 1):
            cv2.imwrite(str(d / f"img_{t:05d}.jpg"), x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                                    RAW_QUALITY])
        for t, f in enumerate(flow, 1):
            q = np.rint((np.clip(f, -RAW_BOUND, RAW_BOUND) + RAW_BOUND) * 255 / (2 * RAW_BOUND))
            for c, axis in enumerate("xy"):
                cv2.imwrite(str(d / f"flow_{axis}_{t:05d}.jpg"), q[c].astype(np.uint8),
                            [cv2.IMWRITE_JPEG_QUALITY, RAW_QUALITY])
    return _disk_usage((root / "rawframes").rglob("*.jpg"), sum(len(r) for _, r, _ in videos))


def _disk_usage(files, frames: int) -> dict:
    stats = [p.stat() for p in files]
    return {"bytes": sum(s.st_size for s in stats) / frames,
            "allocated": sum(s.st_blocks * 512 for s in stats) / frames, "files": len(stats)}


def store_rows(videos, root: Path, rawframes: dict) -> list[dict]:
    """Each store configuration written through ``FlowStore`` with one encoding thread, then read
    back whole in one process: bytes per frame, write and read pairs/s per core."""
    pairs = sum(len(f) for _, _, f in videos)
    rows = []
    for label, (fc, rc) in STORES.items():
        path = root / f"store_{fc.replace(':', '_')}"
        store = FlowStore(path, mode="a", encode_threads=1)
        t0 = time.perf_counter()
        for i, (video, rgb, flow) in enumerate(videos):
            with store.writer(f"v/{i}", source=str(video), fps=25.0, flow_codec=fc,
                              rgb_codec=rc) as w:
                w.append_rgb(rgb)
                w.append_flow("tvl1", flow, {"engine": "tvl1", "version": "1", "params": {}})
        write_s = time.perf_counter() - t0
        reader = FlowStore(path)
        t0 = time.perf_counter()
        for i in range(len(videos)):
            reader.read_flow(f"v/{i}")
        read_flow_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(len(videos)):
            reader.read_rgb(f"v/{i}")
        read_rgb_s = time.perf_counter() - t0
        summary = reader.summary()
        frames = sum(len(r) for _, r, _ in videos)
        usage = _disk_usage((path / "videos").rglob("*.h5"), frames)
        errors = [float(np.abs(reader.read_flow(f"v/{i}") - f).max()) for i, (_, _, f) in
                  enumerate(videos)]
        rows.append({"store": label, "flow_codec": fc, "rgb_codec": rc,
                     "rgb_bytes": summary["bytes_per_rgb_frame"],
                     "flow_bytes": summary["bytes_per_flow_pair"]["tvl1"],
                     "file_bytes": usage["bytes"], "allocated": usage["allocated"],
                     "vs_rawframes": usage["bytes"] / rawframes["bytes"],
                     "allocated_vs_rawframes": usage["allocated"] / rawframes["allocated"],
                     "max_err": max(errors), "clipped": summary["clipped"].get("tvl1", 0),
                     "write_per_s": pairs / write_s, "read_flow_per_s": pairs / read_flow_s,
                     "read_rgb_per_s": frames / read_rgb_s,
                     "validate_deep": FlowStore(path).validate(deep=True)})
    return rows


# ---------------------------------------------------------------------------------- recognition

def recognition_rows(work: Path, seeds, epochs: int, per_class: int, jobs: int) -> tuple[list, str]:
    """CIDC (TV-L1 flow) on the default toy set: a default store vs a lossless one, same videos."""
    import recognition as R

    log = work / "log.txt"
    videos = work / "toy_default"
    if not (videos / "toy.json").is_file():
        R._flowkit(["toy", str(videos), *R.TOY_SETS["default"], "--videos-per-class",
                    str(per_class)], log)
    config = R.Config("CIDC (TV-L1 flow, bidirectional)", "cidc", ("modality=flow",))
    rows = []
    for label, extra in (("default codecs", []), ("--lossless", ["--lossless"])):
        store = work / ("store_lossless" if extra else "store_default")
        R._flowkit(["extract", str(videos), "-o", str(store), "--method", "tvl1", *extra], log,
                   threads=2)
        with cf.ThreadPoolExecutor(jobs) as pool:
            runs = {s: work / "runs" / store.name / f"seed{s}" for s in seeds}
            results = dict(zip(seeds, pool.map(
                lambda s: R.train_and_evaluate(config, s, epochs, videos, store, runs[s], log),
                seeds)))
        clips = [statistics.mean(json.loads(line)["clips_per_s"] for line in
                                 (runs[s] / "metrics.jsonl").read_text().splitlines())
                 for s in seeds]
        info = FlowStore(store).summary()
        rows.append({"store": label, "top1": [results[s].top1 for s in seeds], "clips_per_s": clips,
                     "bytes_per_frame": info["bytes_per_rgb_frame"] +
                     info["bytes_per_flow_pair"]["tvl1"]})
    toy = json.loads((videos / "toy.json").read_text())
    return rows, R._toy_facts(toy, videos)


# ------------------------------------------------------------------------------------- Markdown

def _num(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def flow_table(rows) -> list[str]:
    out = ["| flow codec | KiB/pair | mean abs err px | max abs err px | max err where abs(flow) > 20 px "
           "| encode pairs/s | decode pairs/s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['codec']} | {r['kib']:.2f} | {r['mean_err']:.4f} | {r['max_err']:.3f} | "
                   f"{_num(r['far_max_err'])} | {r['enc_per_s']:.0f} | {r['dec_per_s']:.0f} |")
    return out


def rgb_table(rows) -> list[str]:
    out = ["| RGB codec | KiB/frame | PSNR dB | encode frames/s | decode frames/s |",
           "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['codec']} | {r['kib']:.2f} | {_num(r['psnr'], '{:.1f}')} | "
                   f"{r['enc_per_s']:.0f} | {r['dec_per_s']:.0f} |")
    return out


def store_table(rows, rawframes: dict) -> list[str]:
    out = ["| store | flow / rgb codec | flow B/pair | rgb B/frame | file B/frame (vs rawframes) | "
           "allocated B/frame (vs rawframes) | flow max err px | clipped values | write pairs/s/core | "
           "read flow pairs/s/worker | read rgb frames/s/worker | `validate --deep` |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|",
           f"| rawframes ({rawframes['files']} JPEG files) | JPEG q95 / JPEG q95 | | | "
           f"{rawframes['bytes']:.0f} | {rawframes['allocated']:.0f} | | | | | | |"]
    for r in rows:
        out.append(f"| {r['store']} | `{r['flow_codec']}` / `{r['rgb_codec']}` | "
                   f"{r['flow_bytes']:.0f} | {r['rgb_bytes']:.0f} | {r['file_bytes']:.0f} "
                   f"({r['vs_rawframes']:.2f}x) | {r['allocated']:.0f} "
                   f"({r['allocated_vs_rawframes']:.2f}x) | {r['max_err']:.3f} | {r['clipped']} | "
                   f"{r['write_per_s']:.0f} | {r['read_flow_per_s']:.0f} | {r['read_rgb_per_s']:.0f} | "
                   f"{'clean' if not r['validate_deep'] else '; '.join(r['validate_deep'])} |")
    return out


def recognition_table(rows) -> list[str]:
    out = ["| store | B/frame (rgb + flow) | top-1 % per seed | top-1 % mean | training clips/s "
           "per seed |", "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['store']} | {r['bytes_per_frame']:.0f} | "
                   f"{' / '.join(f'{100 * t:.1f}' for t in r['top1'])} | "
                   f"{100 * statistics.mean(r['top1']):.1f} | "
                   f"{' / '.join(f'{c:.1f}' for c in r['clips_per_s'])} |")
    return out


def _machine() -> str:
    from flowkit.bench.harness import machine_info
    import imagecodecs

    m = machine_info()
    return (f"{m['cpu']}, {m['cores']} logical CPUs, {m['platform']}; torch {torch.__version__}, "
            f"OpenCV {cv2.__version__}, imagecodecs {imagecodecs.__version__}, load average "
            f"{m['loadavg_1m']} at start")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/flowkit-store-codecs")
    ap.add_argument("--seeds", type=int, nargs="+", default=(0, 1, 2))
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--jobs", type=int, default=2, help="training runs at a time, one thread each")
    ap.add_argument("--quick", action="store_true",
                    help="tiny videos, short TV-L1, 1 seed of 1 epoch; Markdown to stdout")
    ap.add_argument("--out", default=str(HERE / "results" / "store_codecs.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cv2.setNumThreads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # (videos per class, frames): 4 classes; 256x340 is rawframes' usual size
    sizes = {(64, 80): (1, 8)} if args.quick else {(128, 160): (1, 64), (256, 340): (1, 64)}
    if args.quick:
        args.seeds, args.epochs, per_class, args.out = (0,), 1, 3, None
    else:
        per_class = 16
    command = shlex.join([Path(sys.executable).name, "benchmarks/store_codecs.py",
                          *(argv if argv is not None else sys.argv[1:])])
    t_start = time.perf_counter()
    doc = ["# Store codecs against JPEG rawframes", "",
           f"Command: `{command}`  ", f"Machine: {_machine()}, no GPU.  ",
           f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
           "Video: `flowkit.samples` (scikit-image photographs panned, zoomed and rotated at 1-3 "
           "px/frame, H.264 through PyAV), decoded; flow: TV-L1 with OpenCV's default parameters "
           "in float32, the reference for every error below. *rawframes* is what mmaction2 / "
           "denseflow write: flow clipped to +-20 px, 8 bits, `flow_x`/`flow_y` JPEG q95, and "
           "`img` JPEG q95. Speeds are one thread (per core); B = bytes, KiB = 1024 B. Stores: "
           "*file B/frame* counts the files' sizes (HDF5 overhead included: about 10 KB per video "
           "file plus about 100 B per stored frame), *allocated* the blocks the file system "
           "(ext4, 4 KiB blocks) gave them, what `du` reports: rawframes' three small files per "
           "frame each round up to whole blocks. 4 videos per size, 64 frames each.", ""]
    for size, (per_class_size, frames) in sizes.items():
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            videos = videos_and_flow(Path(tmp) / "videos", size, frames, per_class_size, args.quick)
            flows = [f for _, _, fl in videos for f in fl]
            rgbs = [x for _, r, _ in videos for x in r]
            fr, rr = flow_rows(flows), rgb_rows(rgbs)
            rawframes = rawframes_on_disk(videos, Path(tmp))
            sr = store_rows(videos, Path(tmp), rawframes)
        far = np.concatenate([np.abs(f).ravel() for f in flows])
        doc += [f"## {size[0]}x{size[1]}: {len(videos)} videos, {len(flows)} flow pairs, "
                f"{len(rgbs)} frames", "",
                f"Flow magnitude: {100 * np.mean(far > RAW_BOUND):.2f}% of flow values beyond "
                f"+-{RAW_BOUND:.0f} px (largest {far.max():.1f} px).", "",
                "### Flow", "", *flow_table(fr), "", "### RGB", "", *rgb_table(rr), "",
                "### Stores (flow + RGB, HDF5, one encoding thread)", "",
                *store_table(sr, rawframes), ""]
    print("recognition ...", file=sys.stderr)
    rows, facts = recognition_rows(work / "recognition", list(args.seeds), args.epochs, per_class,
                                   args.jobs)
    import recognition as R
    doc += ["## Recognition: CIDC on a default store vs a lossless store", "",
            f"Toy set `flowkit toy TOY --difficulty default --videos-per-class {per_class}`: "
            f"{facts}. Stores: `flowkit extract TOY -o STORE --method tvl1` with and without "
            "`--lossless`. Every run: `flowkit train STORE --model cidc --model-arg modality=flow "
            f"{shlex.join(R.COMMON)} --epochs {args.epochs} --seed S --split-list trainlist01.txt`, "
            "then `flowkit evaluate RUN STORE --checkpoint last --split-list testlist01.txt "
            f"--clips 1 --crops 1`; {args.jobs} runs at a time with one thread each, so clips/s "
            "includes the other run's contention.", "", *recognition_table(rows), "",
            f"Total time {time.perf_counter() - t_start:.0f} s.", ""]
    R.write_markdown("\n".join(doc), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
