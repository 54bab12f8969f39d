#!/usr/bin/env bash
# Every SDXL figure in one run (full-size SDXL base, 1024x1024, guidance = batch 2):
#   bash bench/run_sdxl.sh [THREADS]   (default 2)   -> prints, and writes bench/results-sdxl-<tag>.txt
# Needs: a Release build with benchmarks (scripts/build.sh; EASEL_BIN=dir to use another build's bin/),
# the random full-size model (python tools/make_bench_models.py --family sdxl --dtype f16
# --out /work/models/sdxl.safetensors) and, for the PyTorch comparison, a venv with tools/requirements.txt
# (PY=/path/to/python). EASEL_BENCH_SIZE=512 gives a quicker smoke run; EASEL_BENCH_SKIP="cli diffusers"
# leaves parts out. One UNet step takes about a minute per engine on 2 cores: the whole run ~30 min.
# Parts, most important first: machine peak, easel UNet step (packed-weight cache) + VAE decode + text
# encode, diffusers (same work, FLOPs per step), easel UNet step without weight cache (low-memory mode),
# whole CLI runs under /usr/bin/time (default, --low-memory), then a summary. (--vae-tiling in the CLI
# tiles at the VAE's sample_size, 1024 px for SDXL: a no-op at 1024x1024, so bench_sd times 512 px tiles.)
set -uo pipefail  # no -e: a failing part is reported and the others still run
cd "$(dirname "$0")/.."
T=${1:-2}
MODEL=${EASEL_BENCH_MODEL:-/work/models/sdxl.safetensors}
S=${EASEL_BENCH_SIZE:-1024}
BIN=${EASEL_BIN:-build/bin}
PY=${PY:-/work/venv/ref/bin/python}
SKIP=${EASEL_BENCH_SKIP:-}
FAMILY=${EASEL_BENCH_FAMILY:-sdxl}
export OMP_NUM_THREADS=$T EASEL_THREADS=$T EASEL_VERBOSE=1
out=bench/results-sdxl-${EASEL_BENCH_TAG:-$(hostname)}.txt
skip() { [[ " $SKIP " == *" $1 "* ]]; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
cli() {  # label, extra flags...
  local label=$1; shift
  echo "### $label ($(date -u +%H:%M:%S), load $(load))"
  /usr/bin/time -f "wall %e s, peak RSS %M KiB ($label)" "$BIN/easel" generate -m "$MODEL" -p "a photo of a cat" \
    -n blurry --sampler euler -W "$S" -H "$S" -t "$T" --no-hash -o /tmp/easel-sdxl-bench.png "$@" 2>&1 |
    grep -E "^\[easel\]|^wall|rror"
}
{
  echo "# $(date -u) $(lscpu | grep 'Model name' | sed 's/  */ /g'), threads=$T, load: $(load)"
  echo "# easel $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src apps 2>/dev/null || echo ' (+ uncommitted src/apps changes)'), binaries: $BIN"
  echo "# model: $MODEL ($(du -h "$MODEL" | cut -f1)), size ${S}x${S}, batch 2 (guidance)"
  echo "## machine peak (bench_ops: matmul 2048^3 f32 oneDNN, conv 3x3, attention)"
  "$BIN/bench_ops" --benchmark_filter='BM_Matmul/mode:1/M:2048|BM_Conv2d/mode:1/C:320|BM_Attention/mode:1/L:4096/Lk:4096' 2>&1 |
    grep -E "^BM_"
  echo "## easel: SDXL UNet step ${S}x${S}, text encode (both encoders); f16 checkpoint, f32 compute, packed-weight cache ($(date -u +%H:%M:%S), load $(load))"
  EASEL_BENCH_MODEL=$MODEL "$BIN/bench_sd" --benchmark_filter="BM_UNetStep/0/$S/1/|BM_TextEncode/0/" 2>&1 | grep -E "^BM_|rror"
  echo "## easel: VAE decode ${S}x${S}, untiled and tiled (--vae-tiling, tiles of half the size), one process each for peak RSS"
  EASEL_BENCH_MODEL=$MODEL "$BIN/bench_sd" --benchmark_filter="BM_VAEDecode/0/$S/1/" 2>&1 | grep -E "^BM_|rror"
  EASEL_BENCH_MODEL=$MODEL "$BIN/bench_sd" --benchmark_filter="BM_VAEDecodeTiled/$S/" 2>&1 | grep -E "^BM_|rror"
  if ! skip diffusers; then
    echo "## PyTorch/diffusers fp32, same work, same threads ($(date -u +%H:%M:%S), load $(load))"
    (cd tools && /usr/bin/time -f "wall %e s, peak RSS %M KiB (diffusers)" \
      "$PY" bench_diffusers.py --family "$FAMILY" --size "$S" --threads "$T" --reps 1 2>&1 | tail -3)
  fi
  echo "## easel: same UNet step, no weight cache (low-memory mode) ($(date -u +%H:%M:%S), load $(load))"
  EASEL_BENCH_MODEL=$MODEL "$BIN/bench_sd" --benchmark_filter="BM_UNetStep/0/$S/0/" 2>&1 | grep -E "^BM_|rror"
  if ! skip cli; then
    echo "## easel: whole CLI run, ${S}x${S}, euler, f16 checkpoint (peak RSS via /usr/bin/time)"
    cli "default, 2 steps" --steps 2
    cli "--low-memory, 2 steps" --steps 2 --low-memory
  fi
  echo "# done $(date -u), load: $(load)"
} 2>&1 | tee "$out"

# Summary from the lines above: s/step, ratio, FLOP-bound time at the measured peak, RSS.
"$PY" - "$out" <<'EOF' | tee -a "$out"
import json, re, sys
txt = open(sys.argv[1]).read()
def num(pat, default=None, cast=float):
    m = re.search(pat, txt, re.M)
    return cast(m.group(1)) if m else default
def secs(name):  # Google Benchmark line -> seconds (its Time column, any unit)
    m = re.search(r"^" + re.escape(name) + r"\S*\s+([\d.]+) (s|ms|us)\b", txt, re.M)
    return float(m.group(1)) * {"s": 1, "ms": 1e-3, "us": 1e-6}[m.group(2)] if m else None
def rss(name):
    m = re.search(r"^" + re.escape(name) + r".*peak_rss_GiB=([\d.]+)", txt, re.M)
    return float(m.group(1)) if m else None
size = num(r"size (\d+)x", cast=int)
peak = num(r"^BM_Matmul/mode:1/M:2048\S*.*GFLOP/s=([\d.]+)")
e_step, e_low = secs(f"BM_UNetStep/0/{size}/1/"), secs(f"BM_UNetStep/0/{size}/0/")
e_vae, e_txt = secs(f"BM_VAEDecode/0/{size}/1/"), secs("BM_TextEncode/0/")
e_vae_t = secs(f"BM_VAEDecodeTiled/{size}/")
d = next((json.loads(l) for l in txt.splitlines() if l.startswith('{"family"')), {})
f = lambda x, p=2: "n/a" if x is None else f"{x:.{p}f}"  # noqa: E731
print("## summary")
print(f"machine f32 peak (matmul 2048^3): {f(peak, 1)} GFLOP/s")
tf = d.get("unet_step_tflop")
if tf and peak:
    print(f"UNet step FLOPs (torch.utils.flop_counter): {tf:.3f} TFLOP -> FLOP-bound time {tf * 1e3 / peak:.1f} s")
print(f"UNet step s: easel {f(e_step)} (cache), {f(e_low)} (no cache); diffusers {f(d.get('unet_step_s'))}")
if e_step and d.get("unet_step_s"):
    bound = tf * 1e3 / peak
    print(f"  easel speed-up vs diffusers: {d['unet_step_s'] / e_step:.2f}x; step / FLOP-bound time: easel "
          f"{e_step / bound:.2f}x ({tf * 1e3 / e_step:.0f} GFLOP/s), diffusers {d['unet_step_s'] / bound:.2f}x "
          f"({tf * 1e3 / d['unet_step_s']:.0f} GFLOP/s)")
print(f"VAE decode s: easel {f(e_vae)} (peak RSS {f(rss(f'BM_VAEDecode/0/{size}/1/'))} GiB), tiled {f(e_vae_t)} "
      f"(peak RSS {f(rss(f'BM_VAEDecodeTiled/{size}/'))} GiB); diffusers {f(d.get('vae_decode_s'))} "
      f"({f(d.get('vae_decode_tflop'), 3)} TFLOP)")
print(f"text encode ms: easel {f(e_txt and e_txt * 1e3, 0)}, diffusers {f(d.get('text_encode_s') and d['text_encode_s'] * 1e3, 0)}")
print(f"peak RSS GiB: easel bench_sd cache {f(rss(f'BM_UNetStep/0/{size}/1/'))}, no cache {f(rss(f'BM_UNetStep/0/{size}/0/'))}; "
      f"diffusers UNet part {f(d.get('peak_rss_unet_gib'))}")
for m in re.finditer(r"^wall ([\d.]+) s, peak RSS (\d+) KiB \((.*)\)", txt, re.M):
    print(f"  {m.group(3)}: wall {m.group(1)} s, peak RSS {int(m.group(2)) / 2**20:.2f} GiB")
EOF