"""The device check (benchmarks/gpu_check.sh) runs here in its dry mode, so it cannot rot; and
everything it needs works on a machine without PyAV, as the lent GPU machine is."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The store's default flow codec is JPEG-LS (imagecodecs); without it the check writes float16 flow
# and says so.
FLOW_CODEC = "jpegls" if importlib.util.find_spec("imagecodecs") is not None else "float16"


@pytest.fixture
def gpu_check(monkeypatch):
    """benchmarks/gpu_check.py as a module, with its pair cache emptied afterwards."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    yield gpu_check
    gpu_check._PAIRS.clear()


@pytest.fixture
def without_pyav(tmp_path):
    """An environment in which ``import av`` fails, as on the GPU machine."""
    hide = tmp_path / "hide_pyav"
    hide.mkdir()
    (hide / "av.py").write_text('raise ImportError("PyAV is hidden for this test")\n')
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide), str(ROOT)]),
            "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


@pytest.mark.slow
def test_dry_run_writes_every_result(tmp_path, without_pyav):
    out = tmp_path / "out"
    env = {**without_pyav, "OUT": str(out), "PYTHON": sys.executable}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["dry"] is True
    # The headline figures (bandwidth, TV-L1) right after the environment and the agreement.
    sections = ("env", "agreement", "bandwidth", "tvl1", "tvnet", "costvolume", "feed", "opencv")
    assert [k for k in summary if k in sections] == list(sections)
    for name in sections:
        assert summary[name]["status"] in ("ok", "skipped"), (name, summary[name])
    # The device tool brings back at most 8 files (a run with more lost its report and test results);
    # on a GPU nvidia-smi.txt and memcheck.txt come too.
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json", "gpu_check.log", "gpu_check.md", "pytest_gpu.txt"]
    assert summary["interrupted"] is None and summary["cuda_graph_capture_failed"] is None
    assert summary["bandwidth"]["status"] == "skipped"            # needs a GPU
    assert summary["env"]["pyav"] is None                         # ran without PyAV
    assert summary["env"]["cuda_graph_probe"]["ok"] is None       # needs a GPU
    assert summary["env"]["cupy_cache_dir"]                       # a scratch cache, not ~/.cupy
    assert summary["feed"]["engine_calls"] == [4, 4, 3]           # batches across videos
    feed = summary["feed"]
    assert feed["done"] == 3 and feed["flow_codec"] == FLOW_CODEC  # the default store
    assert feed["stored_vs_direct_max_px"] <= 0.1
    assert feed["stored_vs_direct_mean_px"] <= 0.1 and feed["stored_vs_direct_p99_px"] <= 0.1
    write = feed["store_write"]
    assert write["flow_codec"] == FLOW_CODEC and write["threads"]["1"]["pairs_per_s"] > 0
    tvl1 = summary["tvl1"]
    assert [r["batch"] for r in tvl1["rows"]] == [1, 4] and tvl1["failed_rows"] == 0
    assert all(r["status"] == "ok" and r["epe"] < 1 for r in tvl1["rows"])
    assert tvl1["pairs_note"] == "4 distinct pairs, repeated"
    assert all(r["status"] == "ok" for name in ("agreement", "tvnet", "costvolume")
               for r in summary[name]["rows"])
    assert not list(out.glob("*store*")), "scratch stores belong in a temporary directory"
    report = (out / "gpu_check.md").read_text()
    assert "Dry run" in report and "| torch | 4 |" in report and "Problems" not in report
    assert "no capture failed" in report and "## gpu-marked tests" in report
    tests = (out / "pytest_gpu.txt").read_text()
    assert "exit code 0" in tests and "skipped" in tests and "error" not in tests.lower()
    assert "exit code 0" in (out / "gpu_check.log").read_text()


@pytest.mark.slow
def test_gpu_training_tests_pass_on_the_cpu(without_pyav):
    """tests/test_cuda_training.py runs only where CUDA is; its dry run on the CPU (without PyAV, as
    on the GPU machine) keeps it from breaking unseen between device sessions."""
    env = {**without_pyav, "FLOWKIT_GPU_TEST_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(ROOT / "tests" / "test_cuda_training.py")], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", res.stdout) and "skipped" not in res.stdout, res.stdout[-500:]


def test_a_failing_row_is_recorded_and_the_section_goes_on(gpu_check, tmp_path, monkeypatch):
    """One row raising what is not a FlowkitError (a CuPy compile error, a CUDA runtime error): the
    row says so, the next rows run, and gpu_check.json and the report hold each row as it ends."""
    check = gpu_check.Check(tmp_path, dry=True, budget=100)
    seen = []

    def run_benchmark(methods, pairs, batch, **kw):
        seen.append((batch, len(pairs), len({p.name for p in pairs})))
        if batch == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        assert json.loads((tmp_path / "gpu_check.json").read_text())["tvl1"]["rows"][0]["status"] == "failed"
        assert "illegal memory access" in (tmp_path / "gpu_check.md").read_text()
        return [{"backend": kw["backend"], "status": "ok", "reason": None, "pairs_per_s": 12.5,
                 "epe": 0.25, "warmup_s": 0.1, "peak_mem_mb": None}]

    monkeypatch.setattr(gpu_check.harness, "run_benchmark", run_benchmark)
    result = check.section("tvl1", lambda: gpu_check.tvl1_section(check), needs_cuda=False)
    assert result["status"] == "ok" and result["failed_rows"] == 1
    failed, ok = result["rows"]
    assert failed["status"] == "failed" and failed["batch"] == 1
    assert failed["reason"] == "RuntimeError: CUDA error: an illegal memory access was encountered"
    assert ok["status"] == "ok" and ok["batch"] == 4 and ok["pairs_per_s"] == 12.5
    assert seen[1] == (4, 4, 4)  # the distinct pairs, tiled to the batch
    saved = json.loads((tmp_path / "gpu_check.json").read_text())["tvl1"]
    assert saved["status"] == "ok" and [r["status"] for r in saved["rows"]] == ["failed", "ok"]
    report = (tmp_path / "gpu_check.md").read_text()
    assert "| torch | 4 | 4 | 12.5 | 0.25 | ok |" in report
    assert "- **tvl1** torch 1: failed: RuntimeError: CUDA error" in report
    assert gpu_check._tile([1, 2, 3], 7) == [1, 2, 3, 1, 2, 3, 1]


def test_a_failing_section_keeps_its_finished_rows(gpu_check, tmp_path):
    check = gpu_check.Check(tmp_path, dry=True, budget=100)

    def section():
        rows = gpu_check.Rows(check, "costvolume", size="48x64")
        rows.run({"backend": "torch", "batch": 2}, lambda: {"pairs_per_s": 2.0})
        raise ValueError("after the first row")

    result = check.section("costvolume", section, needs_cuda=False)
    assert result["status"] == "error" and result["reason"] == "ValueError: after the first row"
    assert result["rows"][0]["pairs_per_s"] == 2.0 and result["failed_rows"] == 0
    assert json.loads((tmp_path / "gpu_check.json").read_text())["costvolume"]["status"] == "error"
    assert "- **costvolume**: error: ValueError" in (tmp_path / "gpu_check.md").read_text()


def test_cupy_rows_record_graph_capture(gpu_check, tmp_path, monkeypatch):
    from flowkit.cuda import graphs

    check = gpu_check.Check(tmp_path, dry=True, budget=100)
    rows = gpu_check.Rows(check, "tvnet", size="48x64")
    assert rows.run({"backend": "cupy", "batch": 2}, lambda: {}, cuda_graphs=True)[
        "cuda_graph_capture_failed"] is None
    monkeypatch.setattr(graphs, "_failure", "RuntimeError: operation not permitted when stream "
                                            "is capturing")
    row = rows.run({"backend": "cupy", "batch": 4}, lambda: {"pairs_per_s": 1.0}, cuda_graphs=True)
    assert row["cuda_graph_capture_failed"].startswith("RuntimeError: operation not permitted")
    assert "cuda_graph_capture_failed" not in rows.run({"backend": "torch", "batch": 2}, lambda: {})
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["cuda_graph_capture_failed"].startswith("RuntimeError")
    assert summary["tvnet"]["status"] == "running" and len(summary["tvnet"]["rows"]) == 3
    assert "capture FAILED: RuntimeError" in (tmp_path / "gpu_check.md").read_text()


def test_report_is_rewritten_after_every_section_and_kept_when_stopped(gpu_check, tmp_path,
                                                                     monkeypatch):
    out = tmp_path / "out"
    seen = {}

    def first(check):
        return {"figure": 1}

    def second(check):  # the report already holds the first section
        seen["json"] = json.loads((out / "gpu_check.json").read_text())
        seen["md"] = (out / "gpu_check.md").read_text()
        rows = gpu_check.Rows(check, "second")
        rows.run({"backend": "torch", "batch": 1}, lambda: {"pairs_per_s": 3.0})
        gpu_check._terminated(signal.SIGTERM, None)  # what gpu_check.sh's time limit sends

    monkeypatch.setattr(gpu_check, "SECTIONS", (("first", first, False, 0), ("second", second, False, 0),
                                                ("third", first, False, 0)))
    assert gpu_check.main(["--out", str(out), "--dry", "--budget", "100"]) == 2
    assert seen["json"]["first"] == {"status": "ok", "figure": 1, "seconds": seen["json"]["first"]["seconds"]}
    assert "sections done: first" in seen["md"]
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["interrupted"].startswith("stopped by signal SIGTERM")
    assert summary["interrupted"].endswith("not run: second, third")
    assert summary["second"]["status"] == "interrupted" and summary["second"]["rows"][0]["pairs_per_s"] == 3.0
    assert "third" not in summary
    assert "stopped by signal SIGTERM" in (out / "gpu_check.md").read_text()


def test_memcheck_selects_the_kernel_graph_and_stop_rule_tests():
    """compute-sanitizer runs the kernel tests, the stop rule's and the CUDA-graph replay's included
    (not the slow whole-engine ones), without torch's caching allocator, as the script's last step."""
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    line = next(x for x in script.splitlines() if "--tool memcheck" in x)
    assert "PYTORCH_NO_CUDA_MEMORY_CACHING=1" in line and "timeout" in line
    selection = re.search(r'-k "([^"]+)"', script[script.index("--tool memcheck"):]).group(1)
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu",
                          "tests/test_cuda_kernels.py", "-k", selection, "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("test_gpu_stop_rule_freezes_converged_pairs", "test_gpu_tvl1_graphs_equal_eager_launches",
                 "test_gpu_tvl1_iteration_matches_torch", "test_gpu_warp_matches_torch_autograd"):
        assert name in res.stdout, (name, res.stdout)
    assert "engine_backends_agree" not in res.stdout


def test_cli_and_gpu_tests_work_without_pyav(without_pyav, tmp_path):
    run = lambda *args: subprocess.run([sys.executable, *args], env=without_pyav, cwd=ROOT,
                                       capture_output=True, text=True, timeout=300)
    res = run("-m", "flowkit", "--help")
    assert res.returncode == 0 and "extract" in res.stdout, res.stderr
    res = run("-m", "flowkit", "benchmark", "--methods", "tvl1", "--size", "32x40", "--pairs", "2",
              "--repeats", "1", "--param", "nscales=1", "--param", "warps=1")
    assert res.returncode == 0 and "tvl1" in res.stdout, res.stderr
    res = run("-m", "pytest", "-q", "-m", "gpu", "--collect-only", "tests/test_cuda_kernels.py",
              "tests/test_tvl1.py", "-p", "no:cacheprovider")
    assert res.returncode == 0, res.stdout + res.stderr
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded anyway")
    res = run("-c", f"import flowkit.video as v; v.probe({str(clip)!r})")
    assert "VideoError" in res.stderr and "pip install av" in res.stderr, res.stderr
