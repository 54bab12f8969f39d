// LoRA apply / remove timings on a full-size model (Google Benchmark):
//   EASEL_BENCH_MODEL=/work/models/sd15.safetensors EASEL_BENCH_LORA=lora.safetensors build/bin/bench_lora
// Apply = read + map the file, compute every ΔW and merge (lora::Merger) and re-load the UNet/text
// encoders from the stores (Pipeline::set_loras); remove = set_loras({}) (the original tensors back).
// The packed-weight cache is cleared by both, so the next step re-packs the touched weights.
// BM_LoraStep: one UNet step with CFG (batch 2) without a LoRA, merged, and in bypass mode, so the
// per-step cost of each mode is measured on the same weights in the same process.
// Make the random LoRA with tools/make_bench_lora.py.
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "bench_util.h"
#include "lora/lora_apply.h"
#include "models/unet.h"
#include "ops/ops.h"
#include "pipeline/pipeline.h"

using namespace easel;
using namespace easel::bench;
using Mode = Pipeline::LoraApply;

namespace {

struct Env {
  std::unique_ptr<Pipeline> pipe;
  std::string lora;
};

Env& env() {
  static Env e = [] {
    const char* m = std::getenv("EASEL_BENCH_MODEL");
    const char* l = std::getenv("EASEL_BENCH_LORA");
    if (!m || !l) fail("bench", "set EASEL_BENCH_MODEL and EASEL_BENCH_LORA");
    return Env{Pipeline::load(m), l};
  }();
  return e;
}

void BM_LoraRead(benchmark::State& st) {
  Env& e = env();
  for (auto _ : st) benchmark::DoNotOptimize(lora::read_lora(e.lora, e.pipe->checkpoint()));
}

// Arg: 1 = merge, 2 = bypass.
Mode mode_of(int64_t a) { return a == 1 ? Mode::Merge : Mode::Bypass; }

void BM_LoraApply(benchmark::State& st) {
  Env& e = env();
  st.SetLabel(st.range(0) == 1 ? "merge" : "bypass");
  for (auto _ : st) {
    lora::LoraSpec s{lora::read_lora(e.lora, e.pipe->checkpoint()), 0.8f, 0.8f};
    e.pipe->set_loras({s}, mode_of(st.range(0)));
    st.PauseTiming();
    e.pipe->set_loras({});
    st.ResumeTiming();
  }
}

void BM_LoraRemove(benchmark::State& st) {
  Env& e = env();
  st.SetLabel(st.range(0) == 1 ? "merge" : "bypass");
  for (auto _ : st) {
    st.PauseTiming();
    lora::LoraSpec s{lora::read_lora(e.lora, e.pipe->checkpoint()), 0.8f, 0.8f};
    e.pipe->set_loras({s}, mode_of(st.range(0)));
    st.ResumeTiming();
    e.pipe->set_loras({});
  }
}

// Args: {0 = no LoRA / 1 = merged / 2 = bypass, image size, weight cache 1 = kept / 0 = none (low-memory)}.
void BM_LoraStep(benchmark::State& st) {
  Env& e = env();
  ops::set_weight_cache_limit(st.range(2) ? (size_t)64 << 30 : 0);
  ops::clear_weight_cache();
  if (st.range(0)) {
    lora::LoraSpec s{lora::read_lora(e.lora, e.pipe->checkpoint()), 0.8f, 0.8f};
    e.pipe->set_loras({s}, mode_of(st.range(0)));
  } else {
    e.pipe->set_loras({});
  }
  st.SetLabel(std::string(st.range(0) == 0 ? "no LoRA" : st.range(0) == 1 ? "merged" : "bypass") +
              (st.range(2) ? ", weight cache" : ", no weight cache"));
  const ModelConfig& c = e.pipe->checkpoint().config;
  UNet2DConditionModel unet;  // on the pipeline's (merged or original) weights
  unet.load(e.pipe->checkpoint().unet, c.unet);
  const int64_t hw = st.range(1) / 8;
  Tensor x = randn({2, 4, hw, hw}, 1), ctx = randn({2, 77, (int64_t)c.unet.cross_attention_dim}, 2);
  auto add = added_cond(c, (float)st.range(1));
  const UNetExtras* ex = add ? &add->extras : nullptr;
  unet.forward(x, {500.f, 500.f}, ctx, ex);  // warm-up: packs weights, creates primitives
  for (auto _ : st) benchmark::DoNotOptimize(unet.forward(x, {500.f, 500.f}, ctx, ex));
  st.counters["peak_rss_GiB"] = peak_rss_gib();
  e.pipe->set_loras({});
}

}  // namespace

BENCHMARK(BM_LoraRead)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_LoraApply)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_LoraRemove)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
// Steps: SD1.5 512 with the weight cache (the CLI default), SDXL 1024 without (its low-memory default).
BENCHMARK(BM_LoraStep)->ArgsProduct({{0, 1, 2}, {512}, {1}})->Unit(benchmark::kSecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_LoraStep)->ArgsProduct({{0, 1, 2}, {1024}, {0}})->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);
BENCHMARK_MAIN();
