#!/bin/sh
# The GPU speed measurement (heartjax.bench_gpu) in one command, from any folder, on a machine
# that has JAX with CUDA, flax, optax, orbax, pandas and pyarrow but no venv: wheels carried in
# .whl/ (ml-collections) are installed aside first. Writes $OUT/gpu_bench.json after each
# section (OUT: runs/gpu_bench unless set) and stops after 6 minutes whatever happens;
# arguments go to heartjax.bench_gpu (`--quick`: a short run on any machine).
set -eu
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu_bench}"
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --no-index --no-deps --upgrade --target /tmp/site .whl/*.whl
    PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" exec timeout -k 10 360 \
    python3 -u -m heartjax.bench_gpu --out "$OUT/gpu_bench.json" "$@"
