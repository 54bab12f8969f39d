#!/usr/bin/env bash
# Produces every figure in BENCHMARKS.md on this machine, in one run:
#   bash bench/run_all.sh [THREADS]   (default 2)   -> prints, and writes bench/results-<host>.txt
# Needs: a Release build (scripts/build.sh), the random full-size model
# (python tools/make_bench_models.py --family sd15 --dtype f16 --out /work/models/sd15.safetensors)
# and, for the PyTorch comparison, a venv with tools/requirements.txt (PY=/path/to/python).
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
MODEL=${EASEL_BENCH_MODEL:-/work/models/sd15.safetensors}
PY=${PY:-/work/venv/ref/bin/python}
export OMP_NUM_THREADS=$T EASEL_THREADS=$T EASEL_VERBOSE=1
out=bench/results-${EASEL_BENCH_TAG:-$(hostname)}.txt
{
  echo "# $(date -u) $(lscpu | grep 'Model name' | sed 's/  */ /g'), threads=$T, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "## machine peak (bench_ops: matmul 2048^3, conv, attention)"
  build/bin/bench_ops --benchmark_filter='BM_Matmul/mode:[012]/M:2048|BM_Conv2d|BM_Attention' 2>&1 | grep -E "^BM_|^Bench"
  echo "## easel: SD1.5 512x512, f16 checkpoint, f32 compute, packed-weight cache"
  EASEL_BENCH_MODEL=$MODEL build/bin/bench_sd --benchmark_filter='BM_(UNetStep|VAEDecode)/0/512/1|BM_TextEncode/0' 2>&1 | grep -E "^BM_"
  echo "## easel: same, no weight cache (low-memory mode)"
  EASEL_BENCH_MODEL=$MODEL build/bin/bench_sd --benchmark_filter='BM_UNetStep/0/512/0' 2>&1 | grep -E "^BM_"
  echo "## easel: whole CLI run, 512x512, 4 steps euler, f16 checkpoint (peak RSS via /usr/bin/time)"
  /usr/bin/time -f "wall %e s, peak RSS %M KiB" build/bin/easel generate -m "$MODEL" -p "a photo of a cat" -n blurry \
    --steps 4 --sampler euler -W 512 -H 512 -t "$T" --no-hash -o /tmp/easel-bench.png 2>&1 | grep -E "^\[easel\]|^wall"
  /usr/bin/time -f "wall %e s, peak RSS %M KiB (--low-memory)" build/bin/easel generate -m "$MODEL" -p "a photo of a cat" \
    -n blurry --steps 4 --sampler euler -W 512 -H 512 -t "$T" --no-hash --low-memory -o /tmp/easel-bench.png 2>&1 | grep -E "^\[easel\]|^wall"
  echo "## PyTorch/diffusers, same work, same threads"
  (cd tools && $PY bench_diffusers.py --family sd15 --threads "$T" --reps 2 | tail -1)
} 2>&1 | tee "$out"
