"""The README's ```python blocks run as written, on the files `make demo` makes (made small here:
demo/videos from `flowkit.samples`, demo/store by `flowkit.extract`)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit.extract import ExtractConfig, extract
from flowkit.labels import scan_videos
from flowkit.samples import make_sample_videos

README = Path(__file__).resolve().parents[1] / "README.md"
CHEAP_TVL1 = {"nscales": 2, "warps": 1, "outer_iterations": 2, "inner_iterations": 10}


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert python_blocks(README.read_text())


@pytest.fixture
def demo_files(tmp_path, monkeypatch) -> Path:
    """``demo/videos`` and ``demo/store`` as `make demo` writes them, tiny, in a fresh cwd."""
    videos = tmp_path / "demo" / "videos"
    make_sample_videos(videos, classes=("pan_left", "zoom_in"), videos_per_class=1, frames=5,
                       size=(32, 40))
    items, classes = scan_videos(videos)
    extract(items, tmp_path / "demo" / "store",
            ExtractConfig(method="tvl1", engine_params=CHEAP_TVL1), classes=classes)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text()))))
def test_readme_python_block_runs_as_written(demo_files, index):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        namespace: dict = {}
        exec(compile(python_blocks(README.read_text())[index], f"README.md block {index}", "exec"),
             namespace)
    finally:
        torch.set_num_threads(threads)
    if "flow" in namespace and isinstance(namespace["flow"], torch.Tensor):
        assert namespace["flow"].shape == (4, 2, 32, 40)  # 5 frames -> 4 pairs, u and v
    if "flows" in namespace:
        assert isinstance(namespace["flows"], np.ndarray) and namespace["flows"].shape[1] == 2
        assert namespace["rgb"].shape == (namespace["n"], 32, 40, 3)
