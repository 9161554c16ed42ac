#!/usr/bin/env bash
# The one-run device check (see benchmarks/gpu_check.py for what it measures). On a GPU machine,
# from a copy of the repository (flowkit need not be installed; PyAV need not be there):
#
#   OUT=/path/to/results benchmarks/gpu_check.sh          # about 5 minutes, at most 8
#   PYTHON=/opt/torch/.venv/bin/python3 OUT=... benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh --dry                         # anywhere: GPU parts skipped (CI runs this)
#
# Carry the imagecodecs wheel in .whl/ (pip download imagecodecs --no-deps --only-binary=:all:
# --python-version 3.12 -d .whl) so the feed writes the default JPEG-LS store.
# Writes into $OUT: nvidia-smi.txt, pytest_gpu.txt + pytest_gpu.xml (the gpu-marked tests, pass/skip
# counts), one JSON per measurement, gpu_check.json + gpu_check.md (the report), memcheck.txt
# (compute-sanitizer on the kernel tests). Every step has its own time limit, so a hang in one
# step still leaves the others' files.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=""
[ "${1:-}" = "--dry" ] && DRY="--dry"
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
    for candidate in /opt/torch/.venv/bin/python3 .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
    done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Wheels the device lacks (imagecodecs, for the store's JPEG-LS flow) travel in .whl/: installed
# into a scratch directory, never into the machine's environment.
if compgen -G ".whl/*.whl" >/dev/null; then
    WHEELS=$(mktemp -d)
    "$PYTHON" -m pip install -q --no-deps --no-index --target "$WHEELS" .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:$WHEELS"
fi
export PYTHONDONTWRITEBYTECODE=1
step() { echo "[gpu_check.sh] $(date -u +%H:%M:%S) $*"; }

step "python: $PYTHON; out: $OUT ${DRY:+(dry run)}"
if [ -z "$DRY" ]; then
    { date -u; nvidia-smi; } > "$OUT/nvidia-smi.txt" 2>&1
fi

step "gpu-marked tests"
timeout 150 "$PYTHON" -m pytest -q -m gpu tests -rs -p no:cacheprovider \
    --junitxml "$OUT/pytest_gpu.xml" > "$OUT/pytest_gpu.txt" 2>&1
echo "exit code $?" >> "$OUT/pytest_gpu.txt"
tail -n 3 "$OUT/pytest_gpu.txt"

step "measurements"
timeout 280 "$PYTHON" benchmarks/gpu_check.py --out "$OUT" --budget 230 $DRY > "$OUT/gpu_check.log" 2>&1
echo "exit code $?" >> "$OUT/gpu_check.log"
tail -n 2 "$OUT/gpu_check.log"

if [ -z "$DRY" ]; then
    step "compute-sanitizer memcheck on the kernel tests"
    if command -v compute-sanitizer >/dev/null 2>&1; then
        timeout 70 compute-sanitizer --tool memcheck --error-exitcode 99 "$PYTHON" -m pytest -q -m gpu \
            tests/test_cuda_kernels.py -k "not engine and not graphs" -p no:cacheprovider \
            > "$OUT/memcheck.txt" 2>&1
        echo "exit code $?" >> "$OUT/memcheck.txt"
        tail -n 3 "$OUT/memcheck.txt"
    else
        echo "compute-sanitizer not found on PATH" > "$OUT/memcheck.txt"
    fi
fi
step "done"
