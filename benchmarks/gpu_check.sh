#!/usr/bin/env bash
# The one-run device check (see benchmarks/gpu_check.py for what it measures). On a GPU machine,
# from a copy of the repository (flowkit need not be installed; PyAV need not be there):
#
#   OUT=/path/to/results benchmarks/gpu_check.sh          # about 5 minutes, never more than 8.5
#   PYTHON=/opt/torch/.venv/bin/python3 OUT=... benchmarks/gpu_check.sh
#   benchmarks/gpu_check.sh --dry                         # anywhere: GPU parts skipped (CI runs this)
#
# Carry the imagecodecs wheel in .whl/ (pip download imagecodecs --no-deps --only-binary=:all:
# --python-version 3.12 -d .whl) so the feed writes the default JPEG-LS store.
# Writes six files into $OUT, since the device tool brings back at most 8: nvidia-smi.txt,
# pytest_gpu.txt (the gpu-marked tests, one line per test and the pass/skip counts), gpu_check.log,
# gpu_check.json + gpu_check.md (the report, rewritten after every section and row, so a killed run
# still leaves one), memcheck.txt (compute-sanitizer on the kernel tests, or why it did not run). Every step has its own time limit, and all of them together stay
# within GPU_CHECK_LIMIT seconds (default 490, plus a few seconds of kill grace): a step that would
# run past it gets less time, so a hang in one step still leaves the others' files.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=""
[ "${1:-}" = "--dry" ] && DRY="--dry"
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
LIMIT=${GPU_CHECK_LIMIT:-490}
DEADLINE=$((SECONDS + LIMIT))
if [ -z "${PYTHON:-}" ]; then
    for candidate in /opt/torch/.venv/bin/python3 .venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
    done
fi
SCRATCH=()
cleanup() { [ ${#SCRATCH[@]} -eq 0 ] || rm -rf "${SCRATCH[@]}"; }
trap cleanup EXIT
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# CuPy's kernel cache defaults to ~/.cupy, and `import cupy` fails where home is read-only: a scratch
# cache, shared by the steps below (each compiles the kernels once for all of them).
if [ -z "${CUPY_CACHE_DIR:-}" ]; then
    CUPY_CACHE_DIR=$(mktemp -d) && SCRATCH+=("$CUPY_CACHE_DIR")
    export CUPY_CACHE_DIR
fi
# Wheels the device lacks (imagecodecs, for the store's JPEG-LS flow) travel in .whl/: installed
# into a scratch directory, never into the machine's environment.
if compgen -G ".whl/*.whl" >/dev/null; then
    WHEELS=$(mktemp -d) && SCRATCH+=("$WHEELS")
    timeout -k 5 60 "$PYTHON" -m pip install -q --no-deps --no-index --target "$WHEELS" .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:$WHEELS"
fi
export PYTHONDONTWRITEBYTECODE=1
step() { echo "[gpu_check.sh] $(date -u +%H:%M:%S) $*"; }
# seconds CAP RESERVE: what a step may take, CAP at most, leaving RESERVE seconds (the later steps'
# share) before the deadline; 5 s of each step's kill grace (timeout -k 5) are counted too.
seconds() {
    local left=$((DEADLINE - SECONDS - $2 - 5))
    if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}

step "python: $PYTHON; out: $OUT ${DRY:+(dry run)}; limit ${LIMIT} s; CUPY_CACHE_DIR=$CUPY_CACHE_DIR"
if [ -z "$DRY" ]; then
    { date -u; timeout -k 5 20 nvidia-smi; echo "exit code $?"; } > "$OUT/nvidia-smi.txt" 2>&1
fi

# Reserves: after the tests, the measurements need 240 s and memcheck 60 s (a dry run has no
# memcheck, and its tests only collect and skip, though slowly on a loaded CI machine).
if [ -z "$DRY" ]; then
    CAP_TESTS=120; RESERVE_TESTS=300; RESERVE_MEASURE=60
else
    CAP_TESTS=150; RESERVE_TESTS=0; RESERVE_MEASURE=0
fi
T=$(seconds "$CAP_TESTS" "$RESERVE_TESTS")
step "gpu-marked tests (${T} s at most)"
if [ "$T" -ge 20 ]; then
    timeout -k 5 "$T" "$PYTHON" -m pytest -q -m gpu tests -rA -p no:cacheprovider -W ignore \
        > "$OUT/pytest_gpu.txt" 2>&1
    echo "exit code $?" >> "$OUT/pytest_gpu.txt"
else
    echo "not run: ${T} s left of the ${LIMIT} s limit" > "$OUT/pytest_gpu.txt"
fi
tail -n 3 "$OUT/pytest_gpu.txt"

T=$(seconds 280 "$RESERVE_MEASURE")
step "measurements (${T} s at most)"
if [ "$T" -ge 30 ]; then
    # The script's own budget leaves room for the last section to overrun it and for the report.
    timeout -k 5 "$T" "$PYTHON" benchmarks/gpu_check.py --out "$OUT" --budget $((T - 50 > 20 ? T - 50 : 20)) \
        $DRY > "$OUT/gpu_check.log" 2>&1
    echo "exit code $?" >> "$OUT/gpu_check.log"
else
    echo "not run: ${T} s left of the ${LIMIT} s limit" > "$OUT/gpu_check.log"
fi
tail -n 2 "$OUT/gpu_check.log"
{
    echo
    echo "## gpu-marked tests (pytest_gpu.txt)"
    echo
    tail -n 3 "$OUT/pytest_gpu.txt" | sed 's/^/    /'
} >> "$OUT/gpu_check.md"

# compute-sanitizer: rarely on PATH on these machines; also where CUDA toolkits and pip's nvidia
# wheels (nvidia-cuda-sanitizer-api) put it.
find_sanitizer() {
    local c base
    if command -v compute-sanitizer >/dev/null 2>&1; then command -v compute-sanitizer; return 0; fi
    for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
             /usr/local/cuda/compute-sanitizer/compute-sanitizer \
             /usr/local/cuda-*/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer; do
        if [ -f "$c" ] && [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    base=$(timeout 30 "$PYTHON" -c 'import nvidia, os; print("\n".join(os.path.dirname(p) for p in nvidia.__path__))' 2>/dev/null)
    [ -n "$base" ] || return 1
    while IFS= read -r c; do
        [ -n "$c" ] && { echo "$c"; return 0; }
    done < <(while IFS= read -r d; do
                 find "$d/nvidia" -maxdepth 5 -name compute-sanitizer -type f -perm -u+x 2>/dev/null
             done <<< "$base")
    return 1
}

if [ -z "$DRY" ]; then
    SANITIZER=$(find_sanitizer) || SANITIZER=""
    T=$(seconds 70 0)
    step "compute-sanitizer memcheck on the kernel tests (${T} s at most)"
    if [ -z "$SANITIZER" ]; then
        MEMCHECK="not run: compute-sanitizer not found (PATH, /usr/local/cuda*/bin, pip's nvidia tree)"
        echo "$MEMCHECK" > "$OUT/memcheck.txt"
    elif [ "$T" -lt 20 ]; then
        MEMCHECK="not run: ${T} s left of the ${LIMIT} s limit ($SANITIZER)"
        echo "$MEMCHECK" > "$OUT/memcheck.txt"
    else
        # Without torch's caching allocator every tensor is its own cudaMalloc, so an out-of-bounds
        # access is caught instead of landing inside a larger cached block.
        echo "$SANITIZER" > "$OUT/memcheck.txt"
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout -k 5 "$T" "$SANITIZER" --tool memcheck \
            --error-exitcode 99 "$PYTHON" -m pytest -q -rs -m gpu tests/test_cuda_kernels.py \
            -k "not engine" -p no:cacheprovider >> "$OUT/memcheck.txt" 2>&1
        code=$?
        echo "exit code $code" >> "$OUT/memcheck.txt"
        MEMCHECK="exit code $code (99: memory errors; 124/137: time limit); $SANITIZER; $(grep -m1 'ERROR SUMMARY' "$OUT/memcheck.txt" || echo 'no ERROR SUMMARY line')"
    fi
    tail -n 3 "$OUT/memcheck.txt"
    printf '\n## compute-sanitizer memcheck (memcheck.txt)\n\n%s\n' "$MEMCHECK" >> "$OUT/gpu_check.md"
fi
step "done in $SECONDS s; report: $OUT/gpu_check.md"
