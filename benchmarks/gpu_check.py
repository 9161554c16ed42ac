"""The device check: everything a GPU machine lent for a few minutes should measure, in one run.

    python benchmarks/gpu_check.py --out OUT            # on the GPU machine (benchmarks/gpu_check.sh)
    python benchmarks/gpu_check.py --out OUT --dry      # anywhere: tiny sizes, GPU parts skipped

Sections, in this order; ``OUT/gpu_check.json`` (all of them) and ``OUT/gpu_check.md`` (the report,
with each figure beside its goal and anchor) are rewritten after every section and every measurement
row, so a crash or a timeout keeps what is done. Nothing else goes into ``OUT``: the device tool
brings back at most 8 files, and gpu_check.sh writes the others:

- ``env``: GPU, driver, CUDA, torch, CuPy, numpy, OpenCV versions, ``nvidia-smi``, cores, and a
  CUDA-graph capture probe of one CuPy launch;
- ``agreement``: TV-L1 flows of the CuPy backend, torch on CUDA and torch on the CPU on the same real
  frames (synthetic pairs made from photographs): mean / max differences and each one's EPE;
- ``bandwidth``: achieved DRAM bandwidth of the fused iteration (88 bytes per pixel per iteration)
  against the device's peak and against a measured device-to-device copy;
- ``tvl1``: TV-L1 at OpenCV's defaults, 256x340: pairs/s and EPE per backend (cupy, torch) and batch
  (1, 16, 64, 256) on the synthetic set, 64 distinct pairs repeated to fill the larger batches
  (:mod:`flowkit.bench.harness`: warm-up excluded);
- ``tvnet``: TVNet-50 (1 scale, 1 warp, 50 iterations) pairs/s per backend, 224x224;
- ``costvolume``: displacement maps/s per backend, 224x224, default window;
- ``feed``: ``flowkit extract``'s feed end to end on CUDA (frames made in memory, so no PyAV):
  pairs/s into a real store (in a scratch directory, not in ``OUT``), batches across video
  boundaries, and stored flow against direct calls;
- ``opencv``: OpenCV's CPU TV-L1 on this host's cores (``cv2.optflow``), or why it is missing.

Every measurement row (method x backend x batch) runs on its own: an exception (a CuPy compile
error, a CUDA runtime error, out of memory) becomes a row with ``status: "failed"`` and its reason,
and the section goes on. Rows of the CuPy TV-L1 solver (tvl1, tvnet, agreement) record whether
CUDA-graph capture has failed in the process (``flowkit.cuda.graphs.capture_failed``; then they ran
eagerly), and so does the report.

A time budget (``--budget``, seconds) skips what would not fit, saying so in its section. SIGTERM
(gpu_check.sh's time limit) stops the run with the report written and the section in progress
marked ``interrupted``. Exit status: 0 when every section and row is ok or skipped, 1 otherwise,
2 when stopped.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
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
    """The run's state: time budget, results so far, and the files in ``OUT`` kept up to date.

    ``OUT/gpu_check.json`` / ``OUT/gpu_check.md`` (the report so far) are rewritten after every row
    and section, so a run killed by its time limit still leaves a report of what it measured.
    """

    def __init__(self, out: Path, dry: bool, budget: float):
        self.out, self.dry, self.budget = out, dry, budget
        self.started = time.perf_counter()
        self.cuda = torch.cuda.is_available() and not dry
        self.results: dict = {}
        self.interrupted: str | None = None

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
            print(f"[gpu_check] {name} ({self.left():.0f} s of the budget left)", flush=True)
            try:
                result = {"status": "ok", **fn()}
            except Exception as exc:  # one section's failure must not lose the others
                partial = self.results.get(name, {})  # the rows it finished (Rows), kept
                result = {**{k: v for k, v in partial.items() if k != "status"}, "status": "error",
                          "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if isinstance(result.get("rows"), list):
            result["failed_rows"] = sum(r.get("status") not in ("ok", "skipped") for r in result["rows"])
        result["seconds"] = round(time.perf_counter() - start, 2)
        self.results[name] = result
        self.write_report()
        print(f"[gpu_check] {name}: {result['status']} ({result['seconds']} s)", flush=True)
        return result

    def summary(self) -> dict:
        return {"dry": self.dry, "seconds": round(time.perf_counter() - self.started, 1),
                "budget_s": self.budget, "interrupted": self.interrupted,
                "cuda_graph_capture_failed": graph_capture_failed(),
                "cuda_graphs_captured": _graphs().captures(), **self.results}

    def write_report(self) -> None:
        _write_text(self.out / "gpu_check.json", json.dumps(self.summary(), indent=2, default=str) + "\n")
        try:
            text = report(self)
        except Exception:  # a report bug must not stop the measurements: gpu_check.json has it all
            text = f"# flowkit GPU check\n\nThe report failed (see gpu_check.json):\n\n```\n" \
                   f"{traceback.format_exc()}```\n"
        _write_text(self.out / "gpu_check.md", text)


class Rows:
    """The measurement rows of one section (method x backend x batch): each runs on its own, so one
    failure (a CuPy compile error, a CUDA runtime error, out of memory) is recorded as a row with
    ``status: "failed"`` and the section goes on. After each row the section's JSON (``status:
    "running"``, ``meta`` and the rows so far) and the report are rewritten.
    """

    def __init__(self, check: Check, section: str, **meta):
        self.check, self.section, self.meta = check, section, meta
        self.rows: list[dict] = []

    def run(self, info: dict, fn, cuda_graphs: bool = False) -> dict:
        """``fn()`` -> dict (may set ``status``/``reason`` itself), merged over ``info``.

        ``cuda_graphs``: a row of the CuPy TV-L1 solver (TV-L1, TVNet): record whether CUDA-graph
        capture has failed in this process so far (then its outer iterations launched eagerly).
        """
        start = time.perf_counter()
        try:
            row = {**info, "status": "ok", **fn()}
        except Exception as exc:
            row = {**info, "status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=-8)}
            _release_cuda_memory()
        if cuda_graphs:
            row["cuda_graph_capture_failed"] = graph_capture_failed()
            row["cuda_graphs_captured"] = _graphs().captures()
        row["seconds"] = round(time.perf_counter() - start, 2)
        return self._add(row)

    def skip(self, info: dict, reason: str) -> dict:
        return self._add({**info, "status": "skipped", "reason": reason})

    def _add(self, row: dict) -> dict:
        self.rows.append(row)
        self.check.results[self.section] = {"status": "running", **self.payload()}
        self.check.write_report()
        label = " ".join(f"{k} {row[k]}" for k in ("path", "backend", "batch") if k in row)
        figures = ", ".join(f"{k} {_fmt(row[k])}" for k in ("pairs_per_s", "epe") if row.get(k) is not None)
        print(f"[gpu_check]   {self.section} {label}: {row['status']}"
              + (f", {figures}" if figures else "")
              + (f" ({row['reason']})" if row.get("reason") and row["status"] != "ok" else ""), flush=True)
        return row

    def payload(self) -> dict:
        return {**self.meta, "rows": list(self.rows)}


def _graphs():
    from flowkit.cuda import graphs  # imports nothing of CuPy

    return graphs


def graph_capture_failed() -> str | None:
    """Why CUDA-graph capture failed in this process (``flowkit.cuda.graphs``), or None."""
    return _graphs().capture_failed()


def _release_cuda_memory() -> None:
    """After a failed row: drop what it left in torch's cache (an OOM at batch 256 must not starve
    the next rows)."""
    try:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # a broken context: the next row will say so
        pass


def _write_text(path: Path, text: str) -> None:
    """Replace ``path`` atomically: a kill mid-write leaves the previous version, never half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_PAIRS: dict = {}


def _pairs(n: int, size, seed: int) -> list:
    """``synthetic_pairs(n, size, seed)``, generated once per (size, seed) and sliced (pair i
    depends on (seed, i) only, so the first k of n pairs are the k pairs)."""
    key = (tuple(size), seed)
    if len(_PAIRS.get(key, ())) < n:
        _PAIRS[key] = synthetic_pairs(n, tuple(size), seed=seed)
    return _PAIRS[key][:n]


def _tile(pairs: list, n: int) -> list:
    """``n`` pairs: ``pairs`` repeated as often as needed."""
    return [pairs[i % len(pairs)] for i in range(n)]


# ------------------------------------------------------------------------------------ sections

def env_section(check: Check) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "numpy": np.__version__,
            "cores": os.cpu_count(), "cpu": harness.machine_info()["cpu"],
            "flowkit": flowkit.__version__, "cuda_available": torch.cuda.is_available(),
            "cupy_cache_dir": os.environ.get("CUPY_CACHE_DIR")}
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
                             capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        info["nvidia_smi"] = f"unavailable ({exc})"
    from flowkit import cuda
    info["cupy_backend_available"] = cuda.is_available()
    if not check.cuda:
        info["cuda_graph_probe"] = {"ok": None, "reason": "dry run" if check.dry else "no CUDA device"}
    elif not info["cupy_backend_available"]:
        info["cuda_graph_probe"] = {"ok": None, "reason": "CuPy backend not available"}
    else:
        try:
            info["cuda_graph_probe"] = _graph_probe()
        except Exception as exc:
            info["cuda_graph_probe"] = {"ok": False, "reason": f"{type(exc).__name__}: {exc}",
                                        "phase": "eager launch"}
    info["cuda_graph_capture_failed"] = graph_capture_failed()
    return info


def _graph_probe() -> dict:
    """Can a CuPy launch be captured into a CUDA graph on this machine? One stopping-rule launch,
    first eagerly (compiles tvl1.cu and loads the kernel, as the solver does before capturing), then
    captured with torch and replayed. Independent of :mod:`flowkit.cuda.graphs`: a failure here is
    reported, and does not switch the engines to eager launches."""
    from flowkit.cuda import tvl1 as k

    def state():
        return (torch.tensor([0.5, 2.0], device="cuda"),
                torch.ones(2, dtype=torch.int32, device="cuda"))

    error, active = state()
    k.stop_rule(error, active, 1.0)
    torch.cuda.synchronize()
    if active.tolist() != [0, 1] or error.tolist() != [0.0, 0.0]:
        return {"ok": False, "reason": f"eager stop rule gave active {active.tolist()}, "
                                       f"error {error.tolist()} (want [0, 1], [0, 0])"}
    error, active = state()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            k.stop_rule(error, active, 1.0)
    except Exception as exc:
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}", "phase": "capture"}
    torch.cuda.synchronize()
    captured_ran = active.tolist() != [1, 1]  # a capture must not execute the kernel
    graph.replay()
    torch.cuda.synchronize()
    ok = active.tolist() == [0, 1] and error.tolist() == [0.0, 0.0] and not captured_ran
    return {"ok": ok, "phase": "replay",
            **({} if ok else {"reason": f"replay gave active {active.tolist()}, error "
                                        f"{error.tolist()}; kernel ran during capture: {captured_ran}"})}


def _frames(pairs, device):
    """uint8 RGB ``(B, 3, H, W)`` frame tensors of the pairs, on ``device``."""
    f0 = torch.stack([torch.from_numpy(p.frame0) for p in pairs]).permute(0, 3, 1, 2).contiguous()
    f1 = torch.stack([torch.from_numpy(p.frame1) for p in pairs]).permute(0, 3, 1, 2).contiguous()
    return f0.to(device), f1.to(device)


def agreement_section(check: Check) -> dict:
    """The same real frames through the three paths (each path a row: one failing keeps the others)."""
    size, n = ((48, 64), 2) if check.dry else ((256, 340), 4)
    pairs = _pairs(n, size, seed=7)
    f0, f1 = _frames(pairs, "cpu")
    flows = {}
    rows = Rows(check, "agreement", size="x".join(map(str, size)), pairs=n)
    runs = [("cpu", "cpu", "torch")]
    if check.cuda:
        runs += [("torch-cuda", "cuda", "torch"), ("cupy", "cuda", "cupy")]
    for name, device, backend in runs:
        def run(name=name, device=device, backend=backend):
            engine = flowkit.create_engine("tvl1", device=device, backend=backend)
            start = time.perf_counter()
            flow = engine(f0, f1).cpu()
            seconds = time.perf_counter() - start
            flows[name] = flow
            return {"backend": engine.backend, "path_seconds": round(seconds, 3),
                    "epe": harness.accuracy(list(flow.numpy()), pairs)["epe"]}
        rows.run({"path": name, "device": device, "backend": backend}, run,
                 cuda_graphs=backend == "cupy")
    valid = np.stack([p.valid for p in pairs])
    result = {**rows.payload(),
              "path_seconds": {r["path"]: r.get("path_seconds") for r in rows.rows if r["status"] == "ok"},
              "epe": {r["path"]: r.get("epe") for r in rows.rows if r["status"] == "ok"},
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


TVL1_DISTINCT_PAIRS = 64  # generated (~0.2 s each at 256x340), then repeated to fill the batch


def tvl1_section(check: Check) -> dict:
    size = (48, 64) if check.dry else (256, 340)
    batches = (1, 4) if check.dry else (1, 16, 64, 256)
    backends = ("torch",) if not check.cuda else ("cupy", "torch")
    device = "cuda" if check.cuda else "cpu"
    distinct = 4 if check.dry else TVL1_DISTINCT_PAIRS
    pairs_all = _pairs(distinct, size, seed=0)
    rows = Rows(check, "tvl1", size="x".join(map(str, size)), params="OpenCV DualTVL1 defaults",
                distinct_pairs=distinct, pairs_note=f"{distinct} distinct pairs, repeated",
                goal=GOALS["tvl1"], anchor=ANCHORS["tvl1"])
    for backend in backends:
        for batch in batches:
            # The torch path at batch 1 runs thousands of launches per pair: time 8 pairs only.
            n = 4 if check.dry else max(batch, 8)
            info = {"backend": backend, "batch": batch, "pairs": n}
            if check.left() < 60 and not check.dry:
                rows.skip(info, f"time budget: {check.left():.0f} s left")
                continue

            def run(backend=backend, batch=batch, n=n):
                (r,) = harness.run_benchmark(["tvl1"], _tile(pairs_all, n), device=device,
                                             batch=batch, repeats=1, backend=backend,
                                             dataset={"dataset": "synthetic", "seed": 0})
                return {"backend": r.get("backend") or backend, "status": r["status"],
                        "reason": r["reason"], "pairs_per_s": r.get("pairs_per_s"),
                        "epe": r.get("epe"), "warmup_s": r.get("warmup_s"),
                        "peak_mem_mb": r.get("peak_mem_mb")}
            rows.run(info, run, cuda_graphs=backend == "cupy")
    return rows.payload()


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
    del u, p, grad, grad_sq, rho
    # What this device's DRAM does in practice: a 4 GiB device-to-device copy (read + write).
    src = torch.empty(2**30, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    try:
        dst.copy_(src)
        torch.cuda.synchronize()
        start.record()
        for _ in range(5):
            dst.copy_(src)
        end.record()
        torch.cuda.synchronize()
        copy_tbps = 2 * src.numel() * 4 * 5 / (start.elapsed_time(end) / 1e3) / 1e12
    finally:
        del src, dst
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(0)
    peak = _peak_tbps(name)
    return {"problem": f"B={b}, {h}x{w}", "iteration_us": round(per_iter * 1e6, 1),
            "bytes_per_pixel": ITERATION_BYTES_PER_PIXEL, "achieved_tbps": round(achieved, 3),
            "peak_tbps": peak, "fraction_of_peak": round(achieved / peak, 3) if peak else None,
            "copy_tbps": round(copy_tbps, 3), "fraction_of_copy": round(achieved / copy_tbps, 3),
            "goal": GOALS["bandwidth"]}


def _engine_rate(name: str, kw: dict, backend: str, batch: int, size, passes: int, device: str):
    engine = flowkit.create_engine(name, device=device, backend=backend, **kw)
    f0, f1 = _frames(_tile(_pairs(min(batch, 8), size, seed=3), batch), device)
    engine(f0, f1)  # warm-up: compilation, graph capture, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(passes):
        out = engine(f0, f1)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"backend": engine.backend, "pairs_per_s": round(batch * passes / seconds, 1),
            "shape": list(out.shape)}


def _rates_section(check: Check, name: str, kw: dict, cuda_graphs: bool, **meta) -> dict:
    size = (48, 64) if check.dry else (224, 224)
    device = "cuda" if check.cuda else "cpu"
    rows = Rows(check, name, size="x".join(map(str, size)), **meta)
    for backend in (("cupy", "torch") if check.cuda else ("torch",)):
        for batch in ((2,) if check.dry else (64, 256)):
            rows.run({"backend": backend, "batch": batch},
                     lambda backend=backend, batch=batch: _engine_rate(
                         name, kw, backend, batch, size, 1 if check.dry else 5, device),
                     cuda_graphs=cuda_graphs and backend == "cupy")
    return rows.payload()


def tvnet_section(check: Check) -> dict:
    return _rates_section(check, "tvnet", dict(scales=1, warps=1, iterations=50), True,
                          model="TVNet-50 (1 scale, 1 warp, 50 iterations)", goal=GOALS["tvnet"])


def costvolume_section(check: Check) -> dict:
    return _rates_section(check, "costvolume", {}, False, params="patch features, window 4, tau 0.02",
                          goal=GOALS["costvolume"], anchor=ANCHORS["costvolume"])


def feed_section(check: Check) -> dict:
    """``flowkit extract``'s feed on CUDA, frames from memory (this machine may lack PyAV)."""
    import threading

    from flowkit.feed import FeedOptions, run
    from flowkit.labels import VideoItem
    from flowkit.store import FlowStore
    from flowkit.video import VideoInfo

    size, lengths = ((48, 64), (5, 3, 6)) if check.dry else ((256, 340), (17, 33, 9, 65) * 8)
    device = "cuda" if check.cuda else "cpu"
    batch = 4 if check.dry else 128
    pairs = _pairs(8, size, seed=11)
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

    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_feed_"))  # not in OUT: nothing to fetch
    try:
        store_dir = scratch / "feed_store"
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
        return {"device": device, "backend": engine.backend, "videos": len(items),
                "pairs": total_pairs, "batch": batch, "engine_calls": calls,
                "seconds_feed": round(seconds, 2), "pairs_per_s": round(total_pairs / seconds, 1),
                "done": len(done), "failed": [r.reason for r in results if r.status != "done"],
                # A max alone cannot tell a few ill-posed pixels (on an H200 it was 2 px, cause not
                # found) from a wrong flow: the mean and the 99th percentile can.
                "stored_vs_direct_max_px": float(np.abs(stored - direct).max()),
                "stored_vs_direct_mean_px": float(np.abs(stored - direct).mean()),
                "stored_vs_direct_p99_px": float(np.quantile(np.abs(stored - direct), 0.99)), **codecs,
                "store_bytes": sum(f.stat().st_size for f in store_dir.rglob("*.h5")),
                **({"cuda_graph_capture_failed": graph_capture_failed()}
                   if engine.backend == "cupy" else {}),
                "store_write": _store_write(check, direct, videos[key])}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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
    from flowkit.store import FlowStore

    codecs = _store_codecs()
    engine = {"engine": "tvl1", "version": "1", "params": {}}
    rows = {}
    for threads in sorted({1, os.cpu_count() or 1}):
        root = Path(tempfile.mkdtemp(prefix=f"gpu_check_store_write_{threads}_"))
        try:
            store = FlowStore(root / "store", "a", encode_threads=threads)
            repeats = 1 if check.dry else 4
            start = time.perf_counter()
            for r in range(repeats):
                with store.writer(f"v{r}", source="memory", fps=25.0, **codecs) as w:
                    w.append_rgb(rgb)
                    w.append_flow("tvl1", flow, engine)
            seconds = time.perf_counter() - start
        finally:
            shutil.rmtree(root, ignore_errors=True)
        pairs = repeats * len(flow)
        rows[threads] = {"pairs_per_s": round(pairs / seconds, 1),
                         "pairs_per_s_per_thread": round(pairs / seconds / threads, 1)}
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
    pairs = _pairs(2 if check.dry else 2 * (os.cpu_count() or 1), size, seed=0)
    (r,) = harness.run_benchmark(["opencv-tvl1"], pairs, repeats=1,
                                 dataset={"dataset": "synthetic", "seed": 0})
    return {"available": True, "size": "x".join(map(str, size)), "pairs": len(pairs),
            "pairs_per_s": r["pairs_per_s"], "epe": r["epe"], "opencv_threads": r["opencv_threads"],
            "cores": os.cpu_count()}


# -------------------------------------------------------------------------------------- report

SHOWN = ("ok", "running", "interrupted")  # sections whose (partial) figures the report shows


def report(check: Check) -> str:
    r = check.results
    env = r.get("env", {})
    lines = ["# flowkit GPU check", "",
             f"Machine: {env.get('gpu', 'no GPU')} ({env.get('gpu_memory_gib', '?')} GiB), "
             f"{env.get('cores')} CPU cores ({env.get('cpu')}); torch {env.get('torch')} "
             f"(CUDA {env.get('torch_cuda')}), CuPy {env.get('cupy')}, driver "
             f"{env.get('cuda_driver')}, OpenCV {env.get('opencv')}, PyAV {env.get('pyav')}."
             + (" **Dry run: GPU parts skipped.**" if check.dry else ""), ""]
    lines.append(f"{round(time.perf_counter() - check.started)} s of a {check.budget:.0f} s budget; "
                 f"sections done: {', '.join(k for k, v in r.items() if v.get('status') != 'running') or 'none'}"
                 + (f"; **{check.interrupted}**" if check.interrupted else "") + ".")
    failed = graph_capture_failed()
    probe = env.get("cuda_graph_probe") or {}
    lines += ["", "CUDA graphs (CuPy TV-L1 solver): "
              + (f"**capture FAILED: {failed}**; the cupy TV-L1/TVNet rows since then launched "
                 "eagerly" if failed else
                 f"no capture failed ({_graphs().captures()} graphs captured)")
              + (f"; probe: {'ok' if probe.get('ok') else probe.get('reason')}" if probe else "") + "."]
    problems = [f"- **{name}**: {sec.get('status')}: {sec.get('reason')}"
                for name, sec in r.items() if sec.get("status") not in ("ok", "running", "skipped")]
    skipped = [f"- **{name}**: {sec.get('reason')}"
               for name, sec in r.items() if sec.get("status") == "skipped"]
    for name, sec in r.items():
        for row in sec.get("rows") or ():
            label = " ".join(str(row[k]) for k in ("path", "backend", "batch") if k in row)
            if row.get("status") == "skipped":
                skipped.append(f"- **{name}** {label}: {row.get('reason')}")
            elif row.get("status") != "ok":
                problems.append(f"- **{name}** {label}: {row.get('status')}: {row.get('reason')}")
    if problems:
        lines += ["", "Problems:", ""] + problems
    if skipped:
        lines += ["", "Skipped:", ""] + skipped
    tv = r.get("tvl1", {})
    if tv.get("status") in SHOWN:
        lines += ["", f"## TV-L1, OpenCV defaults, {tv.get('size')}, {tv.get('pairs_note')} (goal "
                      f"{tv.get('goal')}; anchor: {tv.get('anchor')})", "",
                  "| backend | batch | pairs | pairs/s | EPE px | status |", "|---|---|---|---|---|---|"]
        for row in tv.get("rows", []):
            lines.append(f"| {row.get('backend')} | {row['batch']} | {row.get('pairs', '-')} | "
                         f"{_fmt(row.get('pairs_per_s'))} | {_fmt(row.get('epe'))} | {_status(row)} |")
    bw = r.get("bandwidth", {})
    if bw.get("status") == "ok":
        lines += ["", f"## Fused iteration bandwidth (goal {bw['goal']})", "",
                  f"{bw['problem']}: {bw['iteration_us']} us per iteration, {bw['achieved_tbps']} "
                  f"TB/s = {bw['fraction_of_peak']} of the {bw['peak_tbps']} TB/s peak, "
                  f"{bw['fraction_of_copy']} of a measured copy ({bw['copy_tbps']} TB/s)."]
    for name in ("tvnet", "costvolume"):
        sec = r.get(name, {})
        if sec.get("status") in SHOWN:
            lines += ["", f"## {name}, {sec.get('size')} (goal {sec.get('goal')}"
                          + (f"; anchor: {sec['anchor']}" if sec.get("anchor") else "") + ")", "",
                      "| backend | batch | pairs/s | status |", "|---|---|---|---|"]
            lines += [f"| {row.get('backend')} | {row['batch']} | {_fmt(row.get('pairs_per_s'))} | "
                      f"{_status(row)} |" for row in sec.get("rows", [])]
    ag = r.get("agreement", {})
    if ag.get("status") in SHOWN:
        lines += ["", f"## Agreement on the same frames ({ag.get('size')}, {ag.get('pairs')} pairs)", ""]
        if ag.get("differences"):
            lines += ["| paths | mean px | p99 px | max px |", "|---|---|---|---|"]
            for k, d in ag["differences"].items():
                lines.append(f"| {k} | {d['mean_px']:.2e} | {d['p99_px']:.2e} | {d['max_px']:.3g} |")
            lines.append("")
        lines.append("EPE: " + ", ".join(f"{row['path']} {_fmt(row.get('epe'))} ({_status(row)})"
                                         for row in ag.get("rows", [])))
    fd = r.get("feed", {})
    if fd.get("status") == "ok":
        lines += ["", "## Extraction feed end to end",
                  "", f"{fd['videos']} videos, {fd['pairs']} pairs, batch {fd['batch']} on "
                      f"{fd['device']} ({fd['backend']}): {fd['pairs_per_s']} pairs/s into a store; "
                      f"engine calls {fd['engine_calls'][:12]}{'...' if len(fd['engine_calls']) > 12 else ''}; "
                      f"stored vs direct mean {_fmt(fd.get('stored_vs_direct_mean_px'))} px, 99th "
                      f"percentile {_fmt(fd.get('stored_vs_direct_p99_px'))} px, max "
                      f"{fd['stored_vs_direct_max_px']:.3g} px "
                      f"({fd['flow_codec']} flow, {fd['rgb_codec']} RGB"
                      + ("; imagecodecs missing, so float16 flow instead of the default JPEG-LS"
                         if fd["flow_codec"] != "jpegls" else "") + ")."]
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


def _status(row: dict) -> str:
    if row.get("status") == "ok":
        return "ok"
    reason = str(row.get("reason") or "").replace("|", "/").replace("\n", " ")
    return f"{row.get('status')}: {reason[:100]}{'...' if len(reason) > 100 else ''}"


# Sections in the order they run: (name, function, needs CUDA, seconds it needs from the budget).
# The headline figures (bandwidth, TV-L1) come first, right after the environment and the quick
# three-way agreement on real frames.
SECTIONS = (
    ("env", env_section, False, 0),
    ("agreement", agreement_section, False, 30),
    ("bandwidth", bandwidth_section, True, 10),
    ("tvl1", tvl1_section, False, 60),
    ("tvnet", tvnet_section, False, 20),
    ("costvolume", costvolume_section, False, 20),
    ("feed", feed_section, False, 30),
    ("opencv", opencv_section, False, 30),
)


def _terminated(signum, frame):
    raise SystemExit(f"stopped by signal {signal.Signals(signum).name}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    ap.add_argument("--dry", action="store_true", help="tiny sizes, GPU parts skipped")
    ap.add_argument("--budget", type=float, default=330.0, help="seconds for all sections")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args.out, args.dry, args.budget)
    # gpu_check.sh's time limit sends SIGTERM: unwind (scratch directories removed) and write the
    # report with what is done, the section in progress marked as interrupted.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        for name, fn, needs_cuda, min_seconds in SECTIONS:
            check.section(name, lambda fn=fn: fn(check), needs_cuda=needs_cuda,
                          min_seconds=min_seconds)
    except (SystemExit, KeyboardInterrupt) as exc:
        check.interrupted = f"{exc or type(exc).__name__} (the time limit?); not run: " + (
            ", ".join(n for n, *_ in SECTIONS if n not in check.results
                      or check.results[n].get("status") == "running") or "none")
        for sec in check.results.values():
            if sec.get("status") == "running":
                sec["status"] = "interrupted"
                sec["reason"] = str(exc) or type(exc).__name__
        check.write_report()
        print(f"[gpu_check] {check.interrupted}", flush=True)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    check.write_report()
    text = report(check)
    print(text)
    ok = all(s.get("status") in ("ok", "skipped") and not s.get("failed_rows")
             for s in check.results.values())
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
