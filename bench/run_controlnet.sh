#!/usr/bin/env bash
# One ControlNet on full-size SD1.5 at 512x512 (random f16 weights): easel's per-step cost with and without
# it (bench_controlnet, peak RSS) and diffusers' on the same work, in one run; CLI_RSS=1 adds whole CLI runs.
#   bash bench/run_controlnet.sh [THREADS]   -> prints, and writes bench/results-controlnet-<host>.txt
# Needs: the SD1.5 model (tools/make_bench_models.py --family sd15 --dtype f16) and the random ControlNet
# (tools/bench_controlnet.py --save-cn FILE --only-save); EASEL_BENCH_MODEL / EASEL_BENCH_CN point at them.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-2}
MODEL=${EASEL_BENCH_MODEL:-/work/models/sd15.safetensors}
CN=${EASEL_BENCH_CN:-/work/models/cn15.safetensors}
BIN=${EASEL_BIN:-build/bin}
PY=${PY:-/work/venv/ref/bin/python}
GUIDE=tests/fixtures/controlnet/guide_a.png
export OMP_NUM_THREADS=$T EASEL_VERBOSE=1
out=bench/results-controlnet-${EASEL_BENCH_TAG:-$(hostname)}.txt
run() {  # whole CLI runs, 2 euler steps, for the peak RSS
  /usr/bin/time -f "wall %e s, peak RSS %M KiB" $BIN/easel generate -m "$MODEL" -p "a photo of a cat" -n blurry \
    --steps 2 --sampler euler -W 512 -H 512 -t "$T" --no-hash --precision f32 -o /tmp/easel-cn-bench.png "$@" 2>&1 |
    grep -E "^\[easel\] (sampling step|control)|^wall"
}
{
  echo "# $(date -u) $(lscpu | grep 'Model name' | sed 's/  */ /g'), threads=$T, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "## easel: UNet step vs ControlNet call + UNet step (batch 2, alternated reps)"
  EASEL_THREADS=$T EASEL_BENCH_MODEL=$MODEL EASEL_BENCH_CN=$CN $BIN/bench_controlnet ${REPS:-3} 512
  echo "## diffusers: the same (same threads, alternated reps)"
  (cd tools && $PY bench_controlnet.py --threads "$T" --reps ${REPS:-3})
  if [ -n "${CLI_RSS:-}" ]; then
    echo "## easel CLI, whole runs: plain / one ControlNet"
    run
    run --control "controlnet:$CN:$GUIDE"
  fi
  echo "# end load: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$out"
