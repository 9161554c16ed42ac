"""The device check (benchmarks/gpu_check.sh) runs here in its dry mode, so it cannot rot; and
everything it needs works on a machine without PyAV, as the lent GPU machine is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    sections = ("env", "agreement", "bandwidth", "tvnet", "costvolume", "feed", "tvl1", "opencv")
    for name in sections:
        assert summary[name]["status"] in ("ok", "skipped"), (name, summary[name])
        assert (out / f"{name}.json").is_file()
    assert summary["bandwidth"]["status"] == "skipped"            # needs a GPU
    assert summary["env"]["pyav"] is None                         # ran without PyAV
    assert summary["feed"]["engine_calls"] == [4, 4, 3]           # batches across videos
    feed = summary["feed"]
    assert feed["done"] == 3 and feed["flow_codec"] == "jpegls"  # the default store
    assert feed["stored_vs_direct_max_px"] <= 0.1
    write = feed["store_write"]
    assert write["flow_codec"] == "jpegls" and write["threads"]["1"]["pairs_per_s"] > 0
    assert [r["batch"] for r in summary["tvl1"]["rows"]] == [1, 4]
    assert all(r["status"] == "ok" and r["epe"] < 1 for r in summary["tvl1"]["rows"])
    report = (out / "gpu_check.md").read_text()
    assert "Dry run" in report and "| torch | 4 |" in report
    tests = (out / "pytest_gpu.txt").read_text()
    assert "exit code 0" in tests and "skipped" in tests and "error" not in tests.lower()


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
