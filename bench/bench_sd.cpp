// Full-size Stable Diffusion timings (Google Benchmark): one UNet step with CFG (batch 2),
// VAE decode, text encode; peak RSS reported as a counter.
//   EASEL_BENCH_MODEL=/path/sd15.safetensors build/bin/bench_sd --benchmark_filter=...
// Make the random full-size checkpoints with tools/make_bench_models.py.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdlib>
#include <memory>
#include <random>

#include "io/checkpoint.h"
#include "models/clip.h"
#include "models/unet.h"
#include "models/vae.h"
#include "ops/ops.h"

using namespace easel;

namespace {

double peak_rss_gib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss / (1024.0 * 1024.0);  // KiB -> GiB
}

Tensor randn(const Shape& s, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n;
  Tensor t = Tensor::empty(s);
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = n(g);
  return t;
}

struct Models {
  Checkpoint ckpt;
  UNet2DConditionModel unet;
  AutoencoderKL vae;
  CLIPTextModel text;
};

Models& models() {
  static std::unique_ptr<Models> m;
  if (!m) {
    const char* path = std::getenv("EASEL_BENCH_MODEL");
    if (!path) fail("bench", "set EASEL_BENCH_MODEL to a full-size checkpoint (tools/make_bench_models.py)");
    m = std::make_unique<Models>();
    m->ckpt = open_checkpoint(path);
    m->unet.load(m->ckpt.unet, m->ckpt.config.unet);
    m->vae.load(m->ckpt.vae, m->ckpt.config.vae);
    m->text.load(m->ckpt.text_encoder, m->ckpt.config.text);
  }
  return *m;
}

// Args: {precision 0 = f32 / 1 = bf16, image size, weight cache 1 = packed weights kept / 0 = none}.
// Without the cache each step re-packs the f16 weights (low-memory mode); run the two modes in
// separate processes (--benchmark_filter) since peak RSS is per process.
void set_precision(benchmark::State& st) {
  ops::set_compute_dtype(st.range(0) ? DType::BF16 : DType::F32);
  bool cache = st.range(2) != 0;
  ops::set_winograd(std::getenv("EASEL_WINOGRAD") != nullptr);
  ops::set_weight_cache_limit(cache ? (size_t)64 << 30 : 0);
  st.SetLabel(std::string(st.range(0) ? "bf16 matmul" : "f32") + (cache ? ", weight cache" : ", no weight cache") +
              (ops::winograd() ? ", winograd" : ""));
}

// One sampling step of a 512x512 image with guidance: UNet on batch 2.
void BM_UNetStep(benchmark::State& st) {
  set_precision(st);
  Models& m = models();
  int64_t hw = st.range(1) / 8;
  Tensor x = randn({2, 4, hw, hw}, 1);
  Tensor ctx = randn({2, 77, (int64_t)m.ckpt.config.unet.cross_attention_dim}, 2);
  m.unet.forward(x, {500.f, 500.f}, ctx);  // warm-up: packs weights, creates primitives
  for (auto _ : st) benchmark::DoNotOptimize(m.unet.forward(x, {500.f, 500.f}, ctx));
  st.counters["peak_rss_GiB"] = peak_rss_gib();
}

void BM_VAEDecode(benchmark::State& st) {
  set_precision(st);
  Models& m = models();
  int64_t hw = st.range(1) / 8;
  Tensor z = randn({1, 4, hw, hw}, 3);
  for (auto _ : st) benchmark::DoNotOptimize(m.vae.decode(z));
  st.counters["peak_rss_GiB"] = peak_rss_gib();
}

void BM_TextEncode(benchmark::State& st) {
  set_precision(st);
  Models& m = models();
  Tensor ids = Tensor::zeros({2, 77}, DType::I64);
  for (int i = 0; i < 77; i++) ids.data<int64_t>()[i] = ids.data<int64_t>()[77 + i] = i == 0 ? 49406 : 320 + i;
  for (auto _ : st) benchmark::DoNotOptimize(m.text.forward(ids, 1));
}

}  // namespace

BENCHMARK(BM_UNetStep)->ArgsProduct({{0, 1}, {512}, {1, 0}})->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();
BENCHMARK(BM_VAEDecode)->ArgsProduct({{0, 1}, {512}, {1, 0}})->Unit(benchmark::kSecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_TextEncode)->ArgsProduct({{0, 1}, {512}, {1}})->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK_MAIN();
