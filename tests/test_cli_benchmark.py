"""``flowkit benchmark``: table, --json, --plot, unknown methods, missing peers (via click's CliRunner)."""
import json

import cv2
import pytest
from click.testing import CliRunner

from flowkit.cli.benchmark import command

# Two tiny pairs and a cut-down tvl1: the whole command runs in about a second on an idle machine
# (one thread: multi-threaded torch slows down badly on a CPU shared with other test processes).
TINY = ["--size", "40x48", "--pairs", "2", "--batch", "2", "--repeats", "1", "--threads", "1",
        "--param", "nscales=2", "--param", "warps=1", "--param", "outer_iterations=2"]


@pytest.fixture
def runner():
    return CliRunner()


def test_table_json_and_plot(runner, tmp_path):
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = runner.invoke(command, ["--methods", "tvl1,opencv-farneback,opencv-dis", *TINY,
                                     "--json", str(out_json), "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    for name in ("tvl1", "opencv-farneback", "opencv-dis", "pairs/s", "EPE-noc"):
        assert name in result.output
    results = json.loads(out_json.read_text())
    assert [r["method"] for r in results] == ["tvl1", "opencv-farneback", "opencv-dis"]
    assert all(r["status"] == "ok" and r["epe"] >= 0 for r in results)
    assert results[0]["params"]["nscales"] == 2 and results[0]["params"]["warps"] == 1
    assert results[0]["machine"]["torch_threads"] == 1 and results[1]["opencv_threads"] == 1
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_to_stdout_is_parseable(runner):
    result = runner.invoke(command, ["--methods", "opencv-dis", "--param", "preset=fast",
                                     "--size", "32x32", "--pairs", "2", "--repeats", "1",
                                     "--json", "-"])
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)
    assert r["method"] == "opencv-dis" and r["params"] == {"preset": "fast"}


def test_unknown_method_exits_2_listing_valid_names(runner):
    result = runner.invoke(command, ["--methods", "tvl1,flownet"])
    assert result.exit_code == 2
    assert "unknown method 'flownet'" in result.output
    assert "opencv-tvl1" in result.output and "costvolume" in result.output


def test_bad_usage_exits_2(runner):
    result = runner.invoke(command, ["--methods", "opencv-dis", "--param", "winsize=3"])
    assert result.exit_code == 2 and "winsize" in result.output
    result = runner.invoke(command, ["--dataset", "sintel"])
    assert result.exit_code == 2 and "PATH" in result.output


def test_missing_peer_exits_1_with_reason(runner, monkeypatch):
    monkeypatch.delattr(cv2.optflow, "DualTVL1OpticalFlow_create")
    result = runner.invoke(command, ["--methods", "opencv-tvl1,opencv-dis", "--size", "32x32",
                                     "--pairs", "2", "--repeats", "1"])
    assert result.exit_code == 1, result.output
    assert "missing" in result.output and "DualTVL1OpticalFlow_create" in result.output


def test_bad_peer_parameter_is_one_line_exit_2(runner):
    """An out-of-range OpenCV-peer parameter is refused before anything is measured, one line and
    exit 2 (before: a cv2.error traceback after the first method had run, losing its row)."""
    result = runner.invoke(command, ["--methods", "opencv-farneback,opencv-tvl1", "--size", "32x32",
                                     "--pairs", "1", "--repeats", "1",
                                     "--param", "opencv-tvl1:scale_step=1.5"])
    assert result.exit_code == 2, result.output
    assert "error: --param: opencv-tvl1: scale_step must be in (0, 1), got 1.5" in result.output
    assert "pairs/s" not in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(command, ["--methods", "opencv-tvl1", "--param", "early_stop=False"])
    assert result.exit_code == 2 and "early_stop must be true or false" in result.output


def test_small_synthetic_size_runs(runner):
    """--size 24x32: the synthetic pairs' flow stays invertible on small frames (before, the
    backward ground truth's iteration diverged with a RuntimeError traceback)."""
    result = runner.invoke(command, ["--methods", "opencv-farneback", "--size", "24x32",
                                     "--pairs", "2", "--repeats", "1", "--json", "-"])
    assert result.exit_code == 0, result.output
    (r,) = json.loads(result.stdout)
    assert r["status"] == "ok" and r["size"] == "24x32" and r["pairs"] == 2


def test_seed_picks_the_synthetic_pairs_and_is_recorded(runner):
    """--seed reaches the synthetic pairs: another seed measures other pairs (another EPE), and
    the results record the seed each was run with, so a reported number can be reproduced."""
    epe = {}
    for seed in (0, 7):
        result = runner.invoke(command, ["--methods", "opencv-dis", "--size", "32x40", "--pairs",
                                         "2", "--repeats", "1", "--threads", "1", "--seed",
                                         str(seed), "--json", "-"])
        assert result.exit_code == 0, result.output
        (r,) = json.loads(result.stdout)
        assert r["dataset_info"]["seed"] == seed
        epe[seed] = r["epe"]
    assert epe[0] != epe[7]


@pytest.mark.slow  # about 8 s on one CPU thread: torch.compile of a cut-down tvl1
def test_compile_both_adds_the_compiled_row(runner):
    """--compile both measures tvl1 eager and torch.compiled side by side: the user asked for the
    comparison, so the compiled row must be there (a few seconds of compiling on a tiny pair)."""
    result = runner.invoke(command, ["--methods", "tvl1", "--compile", "both", "--size", "32x40",
                                     "--pairs", "1", "--batch", "1", "--repeats", "1",
                                     "--threads", "1", "--param", "nscales=1", "--param",
                                     "warps=1", "--param", "outer_iterations=1", "--json", "-"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["method"], r["compile"], r["status"]) for r in rows] == [
        ("tvl1", False, "ok"), ("tvl1 (compiled)", True, "ok")]


def test_reasons_print_brackets_as_they_are(runner, monkeypatch):
    """A reason is printed as it is: rich markup ate the install hint's ``.[cuda12]`` and a
    closing ``[/b]`` raised MarkupError (exit 1 with a traceback)."""
    from flowkit.bench import harness
    from flowkit.errors import FlowkitError

    def build_method(name, *args, **kwargs):
        raise FlowkitError("needs CuPy: pip install -e .[cuda13] or .[cuda12]; see a [/b] file")

    monkeypatch.setattr(harness, "build_method", build_method)
    result = runner.invoke(command, ["--methods", "tvl1", "--size", "32x32", "--pairs", "1",
                                     "--repeats", "1"])
    assert result.exit_code == 1, result.output
    assert ("tvl1 missing: needs CuPy: pip install -e .[cuda13] or .[cuda12]; see a [/b] file"
            in result.output), result.output


def test_motionnet_without_weights_names_the_benchmarks_param(runner):
    """motionnet's hint named `flowkit extract --method motionnet --weights`, an option the
    benchmark does not have; here the weights are a --param."""
    result = runner.invoke(command, ["--methods", "motionnet", "--size", "32x32", "--pairs", "1",
                                     "--repeats", "1", "--json", "-"])
    assert result.exit_code == 1, result.output
    [row] = json.loads(result.stdout)
    assert row["status"] == "failed" and "train-flow motionnet" in row["reason"]
    assert "`--param motionnet:weights=motionnet.pt`" in row["reason"], row["reason"]
    assert "--weights" not in row["reason"]
    from flowkit.bench.harness import weights_as_param
    assert weights_as_param("pass weights=PATH (flowkit extract --weights CKPT), a torchvision",
                            "costvolume") == ("pass weights=PATH (`--param costvolume:weights="
                                              "CKPT`), a torchvision")


def test_weights_that_do_not_load_exit_2_before_anything_is_measured(runner, tmp_path):
    """`--param tvnet:weights=nope.pt` is refused in one line with exit 2, as `flowkit extract
    --weights nope.pt` is; before, tvl1 was measured first and tvnet's row said "missing"."""
    result = runner.invoke(command, ["--methods", "tvl1,tvnet", *TINY, "--param",
                                     f"tvnet:weights={tmp_path / 'nope.pt'}"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: --param: no such tvnet weights: ")
    assert len(result.output.strip().splitlines()) == 1 and "│" not in result.output  # no table


@pytest.mark.parametrize("start, end, noted", [(0.2, 1.71, False), (1.5, 0.3, True)])
def test_busy_note_judges_the_load_when_the_run_began(runner, monkeypatch, start, end, noted):
    """The load at the end includes the benchmark's own threads: a quiet machine whose load the
    run itself raised to 1.71 on 2 cores got "other processes compete for the CPU"."""
    from flowkit.bench import harness
    collect = harness.collect

    def with_loads(*args, **kwargs):
        results = collect(*args, **kwargs)
        for r in results:
            r["machine"].update(loadavg_1m=start, loadavg_1m_end=end, cores=2)
        return results

    monkeypatch.setattr(harness, "collect", with_loads)
    result = runner.invoke(command, ["--methods", "opencv-dis", "--size", "32x32", "--pairs", "1",
                                     "--repeats", "1"])
    assert result.exit_code == 0, result.output
    note = f"note: load average {start} on 2 cores when the run began: other processes compete"
    assert (note in result.output) == noted and ("note: load" in result.output) == noted


def test_run_benchmarks_without_cuda_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    """benchmarks/run_benchmarks.py --device cuda on a machine without CUDA: `error: ...` and exit
    2, as flowkit's CLI (before: a BenchError traceback)."""
    import importlib.util
    from pathlib import Path

    import torch

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "run_benchmarks.py"
    spec = importlib.util.spec_from_file_location("run_benchmarks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "results.md"
    assert module.main(["--only", "tvl1-cpu", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("error: --device cuda: CUDA is not available "
                                    "(torch.cuda.is_available() is False); use --device cpu")
    assert "Traceback" not in err and not out.exists()
