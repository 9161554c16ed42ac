"""The shape of the code base (docs/architecture.md, "Layers"): every import between flowkit's parts
points down the layers, no module imports one that imports it back (lazy imports inside functions
count too), and `flowkit --help` loads neither torch nor PyAV."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import flowkit

ROOT = Path(flowkit.__file__).parent

# The layers, bottom up; a part may import its own layer's parts (without a loop) and lower ones.
LAYERS = [
    {"errors", "version", "conventions", "files", "progress", "registry", "checkpoints", "layers",
     "distributed"},
    {"video", "labels", "store", "cuda", "viz", "samples", "toy", "rawframes", "denseflow",
     "annotations", "jpeg"},
    {"flow", "data"},
    {"models"},
    {"feed", "extract", "shards", "bench", "train", "interop"},
    {"cli", "__main__"},
]
LAYER = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def _module(path: Path) -> str:
    parts = ["flowkit", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """flowkit module -> the flowkit modules it imports, anywhere in its source."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in files else base)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name and target != "flowkit":
                    graph[name].add(target)
    return graph


def part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def test_every_part_has_a_layer():
    parts = {part(m) for m in import_graph()} | {part(_module(p)) for p in ROOT.rglob("*.py")}
    assert parts - {"flowkit"} <= set(LAYER), sorted(parts - set(LAYER) - {"flowkit"})


def test_imports_point_down():
    wrong = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                   if LAYER.get(part(b), -1) > LAYER.get(part(a), 99))
    assert not wrong, "imports that point up the layers:\n" + "\n".join(wrong)


def test_no_import_loops():
    graph = import_graph()
    loops = []

    def visit(node, path, on_path, done):
        on_path.add(node)
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                loops.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, path, on_path, done)
        path.pop()
        on_path.discard(node)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [], set(), done)
    assert not loops, "import loops:\n" + "\n".join(loops)
    # Between parts too: a part never imports one that imports it.
    parts = defaultdict(set)
    for a, targets in graph.items():
        for b in targets:
            if part(a) != part(b):
                parts[part(a)].add(part(b))
    mutual = sorted(f"{a} <-> {b}" for a in parts for b in parts[a] if a in parts.get(b, ()))
    assert not mutual, mutual


def test_help_imports_neither_torch_nor_pyav():
    code = ("import sys\nfrom flowkit.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'av', 'cv2', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "extract" in out.stdout and "train-flow" in out.stdout


def test_parts_load_on_first_use_after_a_bare_import_flowkit():
    """README's `flowkit.flow.costvolume.warped_difference` and `flowkit.data.ClipDataset` work
    after `import flowkit` alone, which still loads neither torch nor h5py; unknown names (and
    `__main__`, which would run the CLI, and dotted names: `hasattr(flowkit, "x.y")` raised
    ModuleNotFoundError) still raise AttributeError."""
    code = ("import sys, flowkit\n"
            "print(sorted(m for m in ('torch', 'av', 'h5py') if m in sys.modules))\n"
            "print(flowkit.flow.costvolume.warped_difference.__name__, "
            "flowkit.data.ClipDataset.__name__)\n"
            "for name in ('nope', '__main__', 'x.y'):\n"
            "    try:\n        getattr(flowkit, name)\n    except AttributeError as exc:\n"
            "        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "[]", "warped_difference ClipDataset", "module 'flowkit' has no attribute 'nope'",
        "module 'flowkit' has no attribute '__main__'", "module 'flowkit' has no attribute 'x.y'"]


def test_command_summaries_are_the_commands_short_help():
    from flowkit.cli import COMMANDS, main

    for name, (_, summary) in COMMANDS.items():
        assert main.get_command(None, name).short_help == summary
