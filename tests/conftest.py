"""Fixtures shared by flowkit's tests: sample video folders (good and broken) and the `gpu` skip.

Nothing here imports PyAV at import time (only the fixtures that encode video do), so the suite's
``gpu`` tests run on a machine without it (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from flowkit.samples import make_sample_videos, render_sample, sample_specs
from flowkit.video import write_video


def run_cli(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """``flowkit ARGS`` in this process: click's runner on ``flowkit.cli.main`` in standalone
    mode, as the console script runs it (one-line errors, exit codes), returned as a
    CompletedProcess. For usage errors and ``--help``, which end before any work: a subprocess
    spends seconds importing torch for each. An exception the CLI did not handle (a traceback in
    a real process) is raised here."""
    from click.testing import CliRunner

    from flowkit.cli import main

    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", **(env or {})})
    r = runner.invoke(main, [str(a) for a in args], prog_name="flowkit")
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return subprocess.CompletedProcess(["flowkit", *map(str, args)], r.exit_code, r.stdout,
                                       r.stderr)

# The tiny sample configuration: enough for every code path, fast to decode and to run flow on.
SAMPLE_CLASSES = ("pan_left", "zoom_in")
SAMPLE_VIDEOS_PER_CLASS = 2
SAMPLE_FRAMES = 8
SAMPLE_SIZE = (64, 80)  # (H, W)


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when torch sees no CUDA device (torch is imported only if needed).
    With ``FLOWKIT_GPU_TEST_DEVICE=cpu`` the tests of a module that runs on that device (its
    ``DEVICE``: tests/test_cuda_training.py) are kept: a dry run of them on the CPU."""
    dry = os.environ.get("FLOWKIT_GPU_TEST_DEVICE") == "cpu"
    gpu_items = [item for item in items if item.get_closest_marker("gpu")
                 and not (dry and getattr(getattr(item, "module", None), "DEVICE", None) == "cpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory) -> Path:
    """Root of a tiny sample folder: ``root/<class>/<class>_<i>.mp4``.

    2 classes (``pan_left``, ``zoom_in``) x 2 videos, 8 frames each, 64x80 (H x W), 25 fps, made
    from real photographs with known motion (``flowkit.samples.sample_specs`` with the arguments
    in ``SAMPLE_*`` above gives the true flow). Session-scoped: do not modify it; copy it first.
    """
    root = tmp_path_factory.mktemp("sample_videos")
    make_sample_videos(root, classes=SAMPLE_CLASSES, videos_per_class=SAMPLE_VIDEOS_PER_CLASS,
                       frames=SAMPLE_FRAMES, size=SAMPLE_SIZE)
    return root


class BadVideoSet(NamedTuple):
    """A class-folder tree mixing good and broken videos; ``root, paths = bad_videos`` works."""

    root: Path
    paths: dict[str, Path]


def _photo_frames(frames: int, size: tuple[int, int], index: int = 0) -> np.ndarray:
    """Real-photo frames with motion: ``(T, H, W, 3)`` uint8 (encoders compress them like video)."""
    spec = sample_specs(classes=("pan_right",), videos_per_class=index + 1, frames=frames, size=size)[index]
    return render_sample(spec)


def _truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _encode_h264(path: Path, frames: np.ndarray, container_options: dict | None = None) -> Path:
    """Encode with libx264, a keyframe every 6 frames; ``container_options`` go to the muxer."""
    import av  # here, not at the top: the GPU machine runs the suite's gpu tests without PyAV

    with av.open(str(path), mode="w", options=container_options or {}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"g": "6", "crf": "18"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def _audio_only(path: Path) -> Path:
    """A valid mp4 holding only an AAC audio track (0.1 s of silence)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="session")
def bad_videos(tmp_path_factory) -> BadVideoSet:
    """Good and broken videos in two class folders; returns ``BadVideoSet(root, paths)``.

    What each name exercises, and what PyAV 18 does with it (checked in tests/test_video.py):

    - ``good_0``, ``good_1``: valid 24-frame 64x80 h264 mp4s (``classA``, ``classB``).
    - ``empty``: 0-byte ``.mp4``; PyAV raises InvalidDataError on open, flowkit says "empty file".
    - ``text``: a text file named ``.mp4``; InvalidDataError on open ("not a video ...").
      (Named ``.txt``, ffmpeg's tty demuxer would open it as a video; flowkit rejects that too.)
    - ``audio_only``: a valid mp4 with no video stream -> "no video stream".
    - ``truncated``: a 48-frame mp4 cut to half its bytes. PyAV writes the moov atom (the index) at the
      end, so the cut file fails to open at all: InvalidDataError -> "header is truncated/corrupt".
    - ``truncated_faststart``: mp4 with the moov atom first (movflags=faststart), cut in half. It
      opens and decodes ~10 of 48 frames, then the demuxer meets EOF; with frame threading ffmpeg ends the
      stream quietly (single-threaded it raises InvalidDataError from avcodec_send_packet), so
      flowkit catches it by comparing with the frame count the moov declares -> "truncated".
    - ``truncated_mkv``: a 48-frame mkv cut in half; decodes ~12 frames and ends without any
      error; mkv has no frame count, flowkit compares with DURATION x fps -> "truncated".
    - ``one_frame``: a valid 1-frame video (gives no flow pair; must not crash anything).
    - ``odd_size``: a valid 12-frame video of 45x61 (odd sizes, differs from the rest).
    - ``not_video_ext``: ``notes.txt`` next to the videos; folder scans must ignore it by extension.

    Session-scoped: do not modify; copy the files you need to change.
    """
    root = tmp_path_factory.mktemp("bad_videos")
    a, b = root / "classA", root / "classB"
    a.mkdir()
    b.mkdir()
    frames = _photo_frames(24, (64, 80))
    paths = {
        "good_0": write_video(a / "good_0.mp4", frames),
        "good_1": write_video(b / "good_1.mp4", _photo_frames(24, (64, 80), index=1)),
        "one_frame": write_video(b / "one_frame.mp4", frames[:1]),
        "odd_size": write_video(b / "odd_size.mp4", _photo_frames(12, (45, 61))),
        "audio_only": _audio_only(a / "audio_only.mp4"),
    }
    paths["empty"] = a / "empty.mp4"
    paths["empty"].write_bytes(b"")
    paths["text"] = a / "text.mp4"
    paths["text"].write_text("this is not a video\n" * 20)
    paths["not_video_ext"] = b / "notes.txt"
    paths["not_video_ext"].write_text("annotations, not a video\n")

    # Sources of the truncated cases, encoded outside the tree (only the cut copies go in it).
    # 48 frames with a keyframe every 6 spread the bytes over the stream, so cutting at half the
    # bytes lands mid-stream and some frames still decode (with the default GOP the first
    # keyframe is most of a short file and the cut would leave nothing decodable).
    sources = tmp_path_factory.mktemp("bad_video_sources")
    long_frames = _photo_frames(48, (64, 80), index=2)
    full_mp4 = _encode_h264(sources / "full.mp4", long_frames)
    full_mkv = _encode_h264(sources / "full.mkv", long_frames)
    full_faststart = _encode_h264(sources / "faststart.mp4", long_frames, {"movflags": "+faststart"})
    paths["truncated"] = _truncate(full_mp4, a / "truncated.mp4")
    paths["truncated_mkv"] = _truncate(full_mkv, b / "truncated_mkv.mkv")
    paths["truncated_faststart"] = _truncate(full_faststart, b / "truncated_faststart.mp4")
    return BadVideoSet(root, paths)


# A tiny store written directly (no decoding, no flow engine): for the data, model and training tests.
TINY_CLASSES = ("right", "down", "left")
TINY_VIDEOS_PER_CLASS = 4
TINY_FRAMES = 10
TINY_SIZE = (24, 32)  # (H, W)
TINY_SPEED = 2  # pixels per frame
_TINY_DIRECTIONS = {"right": (1, 0), "down": (0, 1), "left": (-1, 0)}


def tiny_video(class_name: str, index: int, frames: int = TINY_FRAMES,
               size: tuple[int, int] = TINY_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb (T, H, W, 3) uint8, flow (T-1, 2, H, W) float32)``: a random periodic texture moving
    by ``TINY_SPEED`` pixels per frame in the class's direction; the flow is exact (integer shifts
    of a periodic image)."""
    rng = np.random.default_rng(1000 * TINY_CLASSES.index(class_name) + index)
    h, w = size
    texture = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    dx, dy = (TINY_SPEED * d for d in _TINY_DIRECTIONS[class_name])
    # Frame t shows texture shifted by t*(dx, dy): content at p moves to p + (dx, dy).
    rgb = np.stack([np.roll(texture, (t * dy, t * dx), axis=(0, 1)) for t in range(frames)])
    flow = np.zeros((frames - 1, 2, h, w), np.float32)
    flow[:, 0], flow[:, 1] = dx, dy
    return rgb, flow


def write_tiny_store(path: Path, flow_codec: str = "float16", rgb: bool = True,
                     flow_name: str | None = "tvl1") -> Path:
    """Write the tiny store (``TINY_CLASSES`` x ``TINY_VIDEOS_PER_CLASS`` videos) at ``path``."""
    from flowkit.store import FlowStore

    with FlowStore(path, mode="a", classes=list(TINY_CLASSES)) as store:
        for label, name in enumerate(TINY_CLASSES):
            for i in range(TINY_VIDEOS_PER_CLASS):
                frames, flow = tiny_video(name, i)
                with store.writer(f"{name}/{name}_{i}", source=f"{name}/{name}_{i}.mp4", fps=25.0,
                                  label=label, label_name=name, source_size=TINY_SIZE,
                                  flow_codec=flow_codec, rgb_codec="raw") as w:
                    if rgb:
                        w.append_rgb(frames)
                    if flow_name:
                        w.append_flow(flow_name, flow, engine={
                            "engine": "exact", "version": "1", "params": {"speed": TINY_SPEED}})
    return path


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """Path of a tiny store: 3 classes (right, down, left) x 4 videos, 10 frames of 24x32, rgb and
    exact ``tvl1`` flow (float16). Session-scoped: read it, never write to it."""
    return write_tiny_store(tmp_path_factory.mktemp("tiny") / "store")


@pytest.fixture(scope="session")
def host_kernels(tmp_path_factory):
    """Every ``flowkit/cuda/*.cu`` compiled for the CPU (``tests/cuda_emulation.py``)."""
    import cuda_emulation
    import flowkit.cuda

    if not cuda_emulation.available():
        pytest.skip("g++ not found: host emulation of the kernels needs a C++ compiler")
    return cuda_emulation.compile_all(Path(flowkit.cuda.__file__).parent,
                                      tmp_path_factory.mktemp("host_kernels"))


@pytest.fixture
def emu(host_kernels, monkeypatch):
    """``flowkit.cuda`` routed to the host kernels for one test: ``backend="cupy"`` runs on the
    CPU; returns the :class:`cuda_emulation.Emulator` (its launch log, its graph captures)."""
    import cuda_emulation

    return cuda_emulation.route_to_host(monkeypatch, host_kernels)


@pytest.fixture
def one_torch_thread():
    """One torch thread for a test, restored afterwards: on a loaded 2-core machine OpenMP's
    spinning threads make tiny TV-L1 batches and tiny models many times slower with 2 threads
    (measured 51 s vs 0.9 s for 8 TV-L1 pairs at 64x80; ~60 s vs 5 s for tests/test_train.py).
    A module takes it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rotate_mp4(src: Path, dst: Path) -> None:
    """Copy an mp4 with its track header's display matrix set to a 90-degree rotation (what a
    phone writes for a portrait video)."""
    data = bytearray(src.read_bytes())
    i = data.find(b"tkhd")
    version = data[i + 4]
    offset = i + 8 + (28 if version == 1 else 20) + 8 + 8
    data[offset:offset + 36] = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    dst.write_bytes(bytes(data))


def hang_hdf5(path: Path) -> None:
    """Damage a video file flowkit wrote so that HDF5 loops forever reading its root attributes
    (32 zero bytes at offset 400: the root group's attribute storage; HDF5 2.0 / h5py 3.16 loop
    inside ``f.attrs``). Checked in a child process; an HDF5 that fails instead skips the test."""
    import subprocess
    import sys

    import h5py

    data = bytearray(path.read_bytes())
    data[400:432] = bytes(32)
    path.write_bytes(bytes(data))
    try:
        subprocess.run([sys.executable, "-c", "import h5py, sys; "
                        "dict(h5py.File(sys.argv[1], 'r').attrs)", str(path)],
                       timeout=3, capture_output=True)
    except subprocess.TimeoutExpired:
        return
    pytest.skip(f"HDF5 {h5py.version.hdf5_version} does not loop on this damage")
