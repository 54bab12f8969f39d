// LoRA apply / remove timings on a full-size model (Google Benchmark):
//   EASEL_BENCH_MODEL=/work/models/sd15.safetensors EASEL_BENCH_LORA=lora.safetensors build/bin/bench_lora
// Apply = read + map the file, compute every ΔW and merge (lora::Merger) and re-load the UNet/text
// encoders from the stores (Pipeline::set_loras); remove = set_loras({}) (the original tensors back).
// The packed-weight cache is cleared by both, so the next step re-packs the touched weights.
#include <benchmark/benchmark.h>

#include <cstdlib>

#include "lora/lora_apply.h"
#include "pipeline/pipeline.h"

using namespace easel;

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

void BM_LoraApply(benchmark::State& st) {
  Env& e = env();
  for (auto _ : st) {
    lora::LoraSpec s{lora::read_lora(e.lora, e.pipe->checkpoint()), 0.8f, 0.8f};
    e.pipe->set_loras({s});
    st.PauseTiming();
    e.pipe->set_loras({});
    st.ResumeTiming();
  }
}

void BM_LoraRemove(benchmark::State& st) {
  Env& e = env();
  for (auto _ : st) {
    st.PauseTiming();
    lora::LoraSpec s{lora::read_lora(e.lora, e.pipe->checkpoint()), 0.8f, 0.8f};
    e.pipe->set_loras({s});
    st.ResumeTiming();
    e.pipe->set_loras({});
  }
}

}  // namespace

BENCHMARK(BM_LoraRead)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_LoraApply)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK(BM_LoraRemove)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
BENCHMARK_MAIN();
