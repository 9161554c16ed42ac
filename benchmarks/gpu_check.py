"""The device check: everything a GPU machine lent for a few minutes should measure, in one run.

    python benchmarks/gpu_check.py --out OUT            # on the GPU machine (benchmarks/gpu_check.sh)
    python benchmarks/gpu_check.py --out OUT --dry      # anywhere: tiny sizes, GPU parts skipped

Sections, each written to ``OUT/<section>.json`` as it finishes (a crash or a timeout keeps what is
done), then ``OUT/gpu_check.json`` (all of them) and ``OUT/gpu_check.md`` (the report, with each
figure beside its goal and anchor):

- ``env``: GPU, driver, CUDA, torch, CuPy, numpy, OpenCV versions, ``nvidia-smi``, cores;
- ``agreement``: TV-L1 flows of the CuPy backend, torch on CUDA and torch on the CPU on the same real
  frames (synthetic pairs made from photographs): mean / max differences and each one's EPE;
- ``tvl1``: TV-L1 at OpenCV's defaults, 256x340: pairs/s and EPE per backend (cupy, torch) and batch
  (1, 16, 64, 256) on the synthetic set (:mod:`flowkit.bench.harness`: warm-up excluded);
- ``bandwidth``: achieved DRAM bandwidth of the fused iteration (88 bytes per pixel per iteration)
  against the device's peak and against a measured device-to-device copy;
- ``tvnet``: TVNet-50 (1 scale, 1 warp, 50 iterations) pairs/s per backend, 224x224;
- ``costvolume``: displacement maps/s per backend, 224x224, default window;
- ``feed``: ``flowkit extract``'s feed end to end on CUDA (frames made in memory, so no PyAV):
  pairs/s into a real store, batches across video boundaries, and stored flow against direct calls;
- ``opencv``: OpenCV's CPU TV-L1 on this host's cores (``cv2.optflow``), or why it is missing.

A time budget (``--budget``, seconds) skips what would not fit, saying so in its section.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import flowkit  # noqa: E402
from flowkit.bench import harness, synthetic_pairs  # noqa: E402

# Goals (issue "GPU path") and anchors (published or user-reported figures), for the report.
GOALS = {
    "tvl1": ">= 1000 pairs/s at 256x340, OpenCV defaults, at the torch path's EPE",
    "bandwidth": ">= 50% of HBM peak",
    "tvnet": ">= 3000 pairs/s (TVNet-50)",
    "costvolume": ">= 5000 maps/s at 224x224",
}
ANCHORS = {
    "tvl1": "OpenCV CUDA TV-L1: 14-45 fps as users report; 15 and 6.67 fps in the seed papers",
    "costvolume": "DDN paper: 53 fps",
}
# Theoretical DRAM bandwidth by device name (TB/s), where the driver does not report it.
PEAK_TBPS = {"H200": 4.8, "H100 SXM": 3.35, "H100 80GB HBM3": 3.35, "H100 PCIe": 2.0,
             "H100 NVL": 3.9, "A100-SXM4-80GB": 2.039, "A100-SXM4-40GB": 1.555,
             "A100-PCIE-40GB": 1.555, "A100 80GB PCIe": 1.935, "L40S": 0.864, "L4": 0.3}
ITERATION_BYTES_PER_PIXEL = 88  # flowkit/cuda/README.md: 48 (primal) + 40 (dual)


class Check:
    def __init__(self, out: Path, dry: bool, budget: float):
        self.out, self.dry, self.budget = out, dry, budget
        self.started = time.perf_counter()
        self.cuda = torch.cuda.is_available() and not dry
        self.results: dict = {}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def section(self, name: str, fn, needs_cuda: bool = True, min_seconds: float = 0.0):
        start = time.perf_counter()
        if needs_cuda and not self.cuda:
            result = {"status": "skipped", "reason": "dry run" if self.dry else "no CUDA device"}
        elif self.left() < min_seconds:
            result = {"status": "skipped", "reason": f"time budget: {self.left():.0f} s left, "
                                                     f"needs about {min_seconds:.0f} s"}
        else:
            try:
                result = {"status": "ok", **fn()}
            except Exception as exc:  # one section's failure must not lose the others
                result = {"status": "error", "reason": f"{type(exc).__name__}: {exc}",
                          "traceback": traceback.format_exc()}
        result["seconds"] = round(time.perf_counter() - start, 2)
        self.results[name] = result
        (self.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"[gpu_check] {name}: {result['status']} ({result['seconds']} s)", flush=True)
        return result


# ------------------------------------------------------------------------------------ sections

def env_section(check: Check) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "numpy": np.__version__,
            "cores": os.cpu_count(), "cpu": harness.machine_info()["cpu"],
            "flowkit": flowkit.__version__, "cuda_available": torch.cuda.is_available()}
    try:
        import cupy
        info["cupy"] = cupy.__version__
        info["cupy_cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
    except Exception as exc:
        info["cupy"] = f"missing ({type(exc).__name__}: {exc})"
    try:
        import cv2
        info["opencv"] = cv2.__version__
        info["opencv_optflow"] = hasattr(cv2, "optflow")
    except ImportError:
        info["opencv"] = None
    try:
        import av
        info["pyav"] = av.__version__
    except ImportError:
        info["pyav"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    sm_count=props.multi_processor_count,
                    capability=f"{props.major}.{props.minor}")
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                              "clocks.max.sm,clocks.max.memory,power.limit", "--format=csv"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"unavailable ({exc})"
    from flowkit import cuda
    info["cupy_backend_available"] = cuda.is_available()
    return info


def _frames(pairs, device):
    """uint8 RGB ``(B, 3, H, W)`` frame tensors of the pairs, on ``device``."""
    f0 = torch.stack([torch.from_numpy(p.frame0) for p in pairs]).permute(0, 3, 1, 2).contiguous()
    f1 = torch.stack([torch.from_numpy(p.frame1) for p in pairs]).permute(0, 3, 1, 2).contiguous()
    return f0.to(device), f1.to(device)


def agreement_section(check: Check) -> dict:
    """The same real frames through the three paths."""
    size, n = ((48, 64), 2) if check.dry else ((256, 340), 4)
    pairs = synthetic_pairs(n, size, seed=7)
    f0, f1 = _frames(pairs, "cpu")
    flows, timing = {}, {}
    runs = [("cpu", "cpu", "torch")]
    if check.cuda:
        runs += [("torch-cuda", "cuda", "torch"), ("cupy", "cuda", "cupy")]
    for name, device, backend in runs:
        engine = flowkit.create_engine("tvl1", device=device, backend=backend)
        start = time.perf_counter()
        flows[name] = engine(f0, f1).cpu()
        timing[name] = round(time.perf_counter() - start, 3)
    valid = np.stack([p.valid for p in pairs])
    result = {"size": "x".join(map(str, size)), "pairs": n, "seconds": timing,
              "epe": {k: harness.accuracy(list(v.numpy()), pairs)["epe"] for k, v in flows.items()},
              "differences": {}}
    names = list(flows)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            d = (flows[a] - flows[b]).abs()
            result["differences"][f"{a} vs {b}"] = {
                "mean_px": float(d.mean()), "max_px": float(d.max()),
                "p99_px": float(d.flatten().kthvalue(max(1, int(0.99 * d.numel()))).values),
                "valid_mean_px": float(d.permute(0, 2, 3, 1)[torch.from_numpy(valid)].mean())}
    return result


def tvl1_section(check: Check) -> dict:
    size = (48, 64) if check.dry else (256, 340)
    batches = (1, 4) if check.dry else (1, 16, 64, 256)
    backends = ("torch",) if not check.cuda else ("cupy", "torch")
    device = "cuda" if check.cuda else "cpu"
    pairs_all = synthetic_pairs(max(batches) if not check.dry else 4, size, seed=0)
    rows = []
    for backend in backends:
        for batch in batches:
            n = max(batch, 8) if not check.dry else 4
            if check.left() < 60 and not check.dry:
                rows.append({"backend": backend, "batch": batch, "status": "skipped",
                             "reason": "time budget"})
                continue
            # The torch path at batch 1 runs thousands of launches per pair: time 8 pairs only.
            (r,) = harness.run_benchmark(["tvl1"], pairs_all[:n], device=device, batch=batch,
                                         repeats=1, backend=backend,
                                         dataset={"dataset": "synthetic", "seed": 0})
            rows.append({"backend": r.get("backend"), "batch": batch, "pairs": n,
                         "status": r["status"], "reason": r["reason"],
                         "pairs_per_s": r["pairs_per_s"], "epe": r["epe"],
                         "warmup_s": r["warmup_s"], "peak_mem_mb": r["peak_mem_mb"]})
            print(f"[gpu_check]   tvl1 {backend} batch {batch}: {r['pairs_per_s']} pairs/s, "
                  f"EPE {r['epe']}", flush=True)
    return {"size": "x".join(map(str, size)), "params": "OpenCV DualTVL1 defaults", "rows": rows,
            "goal": GOALS["tvl1"], "anchor": ANCHORS["tvl1"]}


def _peak_tbps(name: str) -> float | None:
    for key, value in PEAK_TBPS.items():
        if key.lower() in name.lower():
            return value
    return None


def bandwidth_section(check: Check) -> dict:
    from flowkit.cuda import tvl1 as k

    b, h, w = 256, 256, 340
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(0)
    u = torch.randn(b, 2, h, w, device=dev, generator=g)
    p = torch.zeros(b, 2, 2, h, w, device=dev)
    grad = torch.randn(b, 2, h, w, device=dev, generator=g) * 10
    grad_sq = (grad * grad).sum(1, keepdim=True)
    rho = torch.randn(b, 1, h, w, device=dev, generator=g)
    coeffs = (0.045, 0.3, 0.25 / 0.3)
    for _ in range(3):
        k.tvl1_iteration(u, p, grad, grad_sq, rho, *coeffs, inplace=True)
    n = 50
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(n):
        k.tvl1_iteration(u, p, grad, grad_sq, rho, *coeffs, inplace=True)
    end.record()
    torch.cuda.synchronize()
    per_iter = start.elapsed_time(end) / 1e3 / n
    achieved = ITERATION_BYTES_PER_PIXEL * b * h * w / per_iter / 1e12
    # What this device's DRAM does in practice: a 4 GiB device-to-device copy (read + write).
    src = torch.empty(2**30, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    start.record()
    for _ in range(5):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    copy_tbps = 2 * src.numel() * 4 * 5 / (start.elapsed_time(end) / 1e3) / 1e12
    name = torch.cuda.get_device_name(0)
    peak = _peak_tbps(name)
    return {"problem": f"B={b}, {h}x{w}", "iteration_us": round(per_iter * 1e6, 1),
            "bytes_per_pixel": ITERATION_BYTES_PER_PIXEL, "achieved_tbps": round(achieved, 3),
            "peak_tbps": peak, "fraction_of_peak": round(achieved / peak, 3) if peak else None,
            "copy_tbps": round(copy_tbps, 3), "fraction_of_copy": round(achieved / copy_tbps, 3),
            "goal": GOALS["bandwidth"]}


def _engine_rate(name: str, kw: dict, backend: str, batch: int, size, passes: int, device: str):
    engine = flowkit.create_engine(name, device=device, backend=backend, **kw)
    pairs = synthetic_pairs(min(batch, 8), size, seed=3)
    reps = (batch + len(pairs) - 1) // len(pairs)
    f0, f1 = _frames(pairs * reps, device)
    f0, f1 = f0[:batch].contiguous(), f1[:batch].contiguous()
    engine(f0, f1)  # warm-up: compilation, graph capture, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(passes):
        out = engine(f0, f1)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"backend": engine.backend, "batch": batch, "pairs_per_s": round(batch * passes / seconds, 1),
            "shape": list(out.shape)}


def tvnet_section(check: Check) -> dict:
    size = (48, 64) if check.dry else (224, 224)
    device = "cuda" if check.cuda else "cpu"
    rows = []
    for backend in (("cupy", "torch") if check.cuda else ("torch",)):
        for batch in ((2,) if check.dry else (64, 256)):
            rows.append(_engine_rate("tvnet", dict(scales=1, warps=1, iterations=50), backend,
                                     batch, size, 1 if check.dry else 5, device))
    return {"size": "x".join(map(str, size)), "model": "TVNet-50 (1 scale, 1 warp, 50 iterations)",
            "rows": rows, "goal": GOALS["tvnet"]}


def costvolume_section(check: Check) -> dict:
    size = (48, 64) if check.dry else (224, 224)
    device = "cuda" if check.cuda else "cpu"
    rows = []
    for backend in (("cupy", "torch") if check.cuda else ("torch",)):
        for batch in ((2,) if check.dry else (64, 256)):
            rows.append(_engine_rate("costvolume", {}, backend, batch, size,
                                     1 if check.dry else 5, device))
    return {"size": "x".join(map(str, size)), "params": "patch features, window 4, tau 0.02",
            "rows": rows, "goal": GOALS["costvolume"], "anchor": ANCHORS["costvolume"]}


def feed_section(check: Check) -> dict:
    """``flowkit extract``'s feed on CUDA, frames from memory (this machine may lack PyAV)."""
    import shutil
    import threading

    from flowkit.feed import FeedOptions, run
    from flowkit.labels import VideoItem
    from flowkit.store import FlowStore
    from flowkit.video import VideoInfo

    size, lengths = ((48, 64), (5, 3, 6)) if check.dry else ((256, 340), (17, 33, 9, 65) * 8)
    device = "cuda" if check.cuda else "cpu"
    batch = 4 if check.dry else 128
    pairs = synthetic_pairs(8, size, seed=11)
    videos = {}
    for i, n in enumerate(lengths):  # "videos" alternating between two frames of a pair
        a, b = pairs[i % len(pairs)].frame0, pairs[i % len(pairs)].frame1
        videos[f"v{i:03d}"] = np.stack([a if t % 2 == 0 else b for t in range(n)])
    items = [VideoItem(path=Path(f"/mem/{k}.mp4"), key=k, label=0, label_name="mem") for k in videos]

    def decode(item, opts):
        frames = videos[item.key]
        info = VideoInfo(path=str(item.path), width=size[1], height=size[0], fps=25.0,
                         frame_count=len(frames), duration=len(frames) / 25.0, codec="memory")
        return info, iter(frames)

    engine = flowkit.create_engine("tvl1", device=device)
    calls = []
    lock = threading.Lock()

    class Counting:
        device, describe = engine.device, engine.describe

        def __call__(self, f0, f1):
            with lock:
                calls.append(int(f0.shape[0]))
            return engine(f0, f1)

    store_dir = check.out / "feed_store"
    shutil.rmtree(store_dir, ignore_errors=True)
    store = FlowStore(store_dir, "a", classes=["mem"])
    codecs = _store_codecs()
    start = time.perf_counter()
    results = list(run(items, store, Counting(),
                       FeedOptions(method="tvl1", batch=batch, **codecs), decode=decode))
    seconds = time.perf_counter() - start
    done = [r for r in results if r.status == "done"]
    key = items[1].key
    t = torch.from_numpy(videos[key]).permute(0, 3, 1, 2)
    direct = engine(t[:-1], t[1:]).cpu().numpy()
    stored = store.read_flow(key, "tvl1")
    total_pairs = sum(n - 1 for n in lengths)
    result = {"device": device, "backend": engine.backend, "videos": len(items),
              "pairs": total_pairs, "batch": batch, "engine_calls": calls,
              "seconds": round(seconds, 2), "pairs_per_s": round(total_pairs / seconds, 1),
              "done": len(done), "failed": [r.reason for r in results if r.status != "done"],
              "stored_vs_direct_max_px": float(np.abs(stored - direct).max()), **codecs,
              "store_bytes": sum(f.stat().st_size for f in store_dir.rglob("*.h5")),
              "store_write": _store_write(check, direct, videos[key])}
    shutil.rmtree(store_dir, ignore_errors=True)
    return result


def _store_codecs() -> dict:
    """The store's default codecs; float16 flow where imagecodecs (JPEG-LS) is not installed
    (carry its wheel in .whl/, see gpu_check.sh)."""
    import importlib.util

    if importlib.util.find_spec("imagecodecs") is not None:
        return {"flow_codec": "jpegls", "rgb_codec": "jpeg"}
    return {"flow_codec": "float16", "rgb_codec": "jpeg"}


def _store_write(check: Check, flow: np.ndarray, rgb: np.ndarray) -> dict:
    """Store write pairs/s (encode + HDF5) of one video's real flow and frames, with one encoding
    thread and with every core: can the store keep up with the engine on this host?"""
    import shutil

    from flowkit.store import FlowStore

    codecs = _store_codecs()
    engine = {"engine": "tvl1", "version": "1", "params": {}}
    rows = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        root = check.out / f"store_write_{threads}"
        shutil.rmtree(root, ignore_errors=True)
        store = FlowStore(root, "a", encode_threads=threads)
        repeats = 1 if check.dry else 4
        start = time.perf_counter()
        for r in range(repeats):
            with store.writer(f"v{r}", source="memory", fps=25.0, **codecs) as w:
                w.append_rgb(rgb)
                w.append_flow("tvl1", flow, engine)
        seconds = time.perf_counter() - start
        pairs = repeats * len(flow)
        rows[threads] = {"pairs_per_s": round(pairs / seconds, 1),
                         "pairs_per_s_per_thread": round(pairs / seconds / threads, 1)}
        shutil.rmtree(root, ignore_errors=True)
    return {"size": "x".join(map(str, flow.shape[-2:])), **codecs, "threads": rows}


def opencv_section(check: Check) -> dict:
    try:
        import cv2
    except ImportError:
        return {"available": False, "reason": "OpenCV is not installed"}
    if not hasattr(cv2, "optflow"):
        return {"available": False, "reason": f"cv2.optflow missing: OpenCV {cv2.__version__} "
                                              "without contrib (opencv-contrib-python)"}
    size = (48, 64) if check.dry else (256, 340)
    pairs = synthetic_pairs(2 if check.dry else 2 * os.cpu_count(), size, seed=0)
    (r,) = harness.run_benchmark(["opencv-tvl1"], pairs, repeats=1,
                                 dataset={"dataset": "synthetic", "seed": 0})
    return {"available": True, "size": "x".join(map(str, size)), "pairs": len(pairs),
            "pairs_per_s": r["pairs_per_s"], "epe": r["epe"], "opencv_threads": r["opencv_threads"],
            "cores": os.cpu_count()}


# -------------------------------------------------------------------------------------- report

def report(check: Check) -> str:
    r = check.results
    env = r.get("env", {})
    lines = ["# flowkit GPU check", "",
             f"Machine: {env.get('gpu', 'no GPU')} ({env.get('gpu_memory_gib', '?')} GiB), "
             f"{env.get('cores')} CPU cores ({env.get('cpu')}); torch {env.get('torch')} "
             f"(CUDA {env.get('torch_cuda')}), CuPy {env.get('cupy')}, driver "
             f"{env.get('cuda_driver')}, OpenCV {env.get('opencv')}, PyAV {env.get('pyav')}."
             + (" **Dry run: GPU parts skipped.**" if check.dry else ""), ""]
    for name, sec in r.items():
        if sec.get("status") != "ok":
            lines.append(f"- **{name}**: {sec.get('status')}: {sec.get('reason')}")
    tv = r.get("tvl1", {})
    if tv.get("status") == "ok":
        lines += ["", f"## TV-L1, OpenCV defaults, {tv['size']} (goal {tv['goal']}; anchor: "
                      f"{tv['anchor']})", "", "| backend | batch | pairs | pairs/s | EPE px |",
                  "|---|---|---|---|---|"]
        for row in tv["rows"]:
            lines.append(f"| {row.get('backend')} | {row['batch']} | {row.get('pairs', '-')} | "
                         f"{_fmt(row.get('pairs_per_s'))} | {_fmt(row.get('epe'))} |")
    bw = r.get("bandwidth", {})
    if bw.get("status") == "ok":
        lines += ["", f"## Fused iteration bandwidth (goal {bw['goal']})", "",
                  f"{bw['problem']}: {bw['iteration_us']} us per iteration, {bw['achieved_tbps']} "
                  f"TB/s = {bw['fraction_of_peak']} of the {bw['peak_tbps']} TB/s peak, "
                  f"{bw['fraction_of_copy']} of a measured copy ({bw['copy_tbps']} TB/s)."]
    for name in ("tvnet", "costvolume"):
        sec = r.get(name, {})
        if sec.get("status") == "ok":
            lines += ["", f"## {name}, {sec['size']} (goal {sec['goal']}"
                          + (f"; anchor: {sec['anchor']}" if sec.get("anchor") else "") + ")", "",
                      "| backend | batch | pairs/s |", "|---|---|---|"]
            lines += [f"| {row['backend']} | {row['batch']} | {row['pairs_per_s']} |"
                      for row in sec["rows"]]
    ag = r.get("agreement", {})
    if ag.get("status") == "ok":
        lines += ["", f"## Agreement on the same frames ({ag['size']}, {ag['pairs']} pairs)", "",
                  "| paths | mean px | p99 px | max px |", "|---|---|---|---|"]
        for k, d in ag["differences"].items():
            lines.append(f"| {k} | {d['mean_px']:.2e} | {d['p99_px']:.2e} | {d['max_px']:.3g} |")
        lines.append("")
        lines.append("EPE: " + ", ".join(f"{k} {_fmt(v)}" for k, v in ag["epe"].items()))
    fd = r.get("feed", {})
    if fd.get("status") == "ok":
        lines += ["", "## Extraction feed end to end",
                  "", f"{fd['videos']} videos, {fd['pairs']} pairs, batch {fd['batch']} on "
                      f"{fd['device']} ({fd['backend']}): {fd['pairs_per_s']} pairs/s into a store; "
                      f"engine calls {fd['engine_calls'][:12]}{'...' if len(fd['engine_calls']) > 12 else ''}; "
                      f"stored vs direct max {fd['stored_vs_direct_max_px']:.3g} px "
                      f"({fd['flow_codec']} flow, {fd['rgb_codec']} RGB)."]
        sw = fd["store_write"]
        lines += ["", f"Store write alone ({sw['size']}, {sw['flow_codec']} flow + {sw['rgb_codec']} "
                      "RGB, encode + HDF5): " + ", ".join(
                          f"{t} threads {v['pairs_per_s']} pairs/s ({v['pairs_per_s_per_thread']} "
                          "per thread)" for t, v in sw["threads"].items()) + "."]
    cv = r.get("opencv", {})
    if cv.get("status") == "ok":
        lines += ["", "## OpenCV CPU TV-L1 on this host", "",
                  (f"{cv['pairs_per_s']:.2f} pairs/s on {cv['cores']} cores ({cv['size']}), EPE "
                   f"{_fmt(cv['epe'])}" if cv.get("available") else f"missing: {cv['reason']}")]
    return "\n".join(lines) + "\n"


def _fmt(v):
    if v is None:
        return "-"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    ap.add_argument("--dry", action="store_true", help="tiny sizes, GPU parts skipped")
    ap.add_argument("--budget", type=float, default=330.0, help="seconds for all sections")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.dry, args.budget)
    check.section("env", lambda: env_section(check), needs_cuda=False)
    check.section("agreement", lambda: agreement_section(check), needs_cuda=False, min_seconds=30)
    check.section("bandwidth", lambda: bandwidth_section(check), min_seconds=10)
    check.section("tvnet", lambda: tvnet_section(check), needs_cuda=False, min_seconds=20)
    check.section("costvolume", lambda: costvolume_section(check), needs_cuda=False, min_seconds=20)
    check.section("feed", lambda: feed_section(check), needs_cuda=False, min_seconds=30)
    check.section("tvl1", lambda: tvl1_section(check), needs_cuda=False, min_seconds=60)
    check.section("opencv", lambda: opencv_section(check), needs_cuda=False, min_seconds=30)
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"dry": args.dry, "seconds": round(time.perf_counter() - check.started, 1),
         **check.results}, indent=2, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(report(check))
    print(report(check))
    return 0 if all(s.get("status") in ("ok", "skipped") for s in check.results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
