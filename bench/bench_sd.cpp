// Full-size Stable Diffusion timings (Google Benchmark): one UNet step with CFG (batch 2),
// VAE decode, text encode; peak RSS reported as a counter.
//   EASEL_BENCH_MODEL=/path/sd15.safetensors build/bin/bench_sd --benchmark_filter=...
//   EASEL_BENCH_MODEL=/path/sdxl.safetensors build/bin/bench_sd --benchmark_filter='BM_UNetStep/0/1024/1'
// Make the random full-size checkpoints with tools/make_bench_models.py. SDXL checkpoints (base or
// refiner) get the added conditioning (pooled text embeds + time ids) in the UNet step, and the text
// encode runs both encoders as diffusers' StableDiffusionXLPipeline.encode_prompt.
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <cstdlib>
#include <memory>
#include <random>

#include "io/checkpoint.h"
#include "models/clip.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/vae_tiling.h"
#include "ops/ops.h"
#include "bench_util.h"

using namespace easel;
using namespace easel::bench;

namespace {

struct Models {
  Checkpoint ckpt;
  UNet2DConditionModel unet;
  AutoencoderKL vae;
  CLIPTextModel text;    // SD1/SD2; SDXL base: CLIP-L (absent in the refiner)
  CLIPTextModel text_2;  // SDXL: OpenCLIP bigG with projection
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
    const ModelConfig& c = m->ckpt.config;
    if (c.has_text_1()) m->text.load(m->ckpt.text_encoder, c.text);
    if (c.is_sdxl()) m->text_2.load(m->ckpt.text_encoder_2, c.text_2);
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

// One sampling step of a size x size image with guidance: UNet on batch 2.
void BM_UNetStep(benchmark::State& st) {
  set_precision(st);
  Models& m = models();
  int64_t hw = st.range(1) / 8;
  Tensor x = randn({2, 4, hw, hw}, 1);
  Tensor ctx = randn({2, 77, (int64_t)m.ckpt.config.unet.cross_attention_dim}, 2);
  auto add = added_cond(m.ckpt.config, (float)st.range(1));
  const UNetExtras* ex = add ? &add->extras : nullptr;
  m.unet.forward(x, {500.f, 500.f}, ctx, ex);  // warm-up: packs weights, creates primitives
  for (auto _ : st) benchmark::DoNotOptimize(m.unet.forward(x, {500.f, 500.f}, ctx, ex));
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

// Tiled decode (--vae-tiling, diffusers enable_tiling): args {size, tile px}. Peak memory is one tile's.
void BM_VAEDecodeTiled(benchmark::State& st) {
  ops::set_compute_dtype(DType::F32);
  ops::set_weight_cache_limit((size_t)64 << 30);
  Models& m = models();
  int64_t hw = st.range(0) / 8;
  Tensor z = randn({1, 4, hw, hw}, 3);
  VAETiling opt;
  opt.tile_px = (int)st.range(1);
  st.SetLabel("f32, tile " + std::to_string(opt.tile_px) + " px");
  for (auto _ : st) benchmark::DoNotOptimize(vae_decode_tiled(m.vae, z, opt));
  st.counters["peak_rss_GiB"] = peak_rss_gib();
}

void BM_TextEncode(benchmark::State& st) {
  set_precision(st);
  Models& m = models();
  Tensor ids = Tensor::zeros({2, 77}, DType::I64);
  for (int i = 0; i < 77; i++) ids.data<int64_t>()[i] = ids.data<int64_t>()[77 + i] = i == 0 ? 49406 : 320 + i;
  const ModelConfig& c = m.ckpt.config;
  if (!c.is_sdxl()) {
    for (auto _ : st) benchmark::DoNotOptimize(m.text.forward(ids, 1));
    return;
  }
  // SDXL: penultimate hidden states of both encoders (raw, concatenated on channels by the caller),
  // pooled = text_projection(final_layer_norm(last layer of bigG) at the EOS token).
  for (auto _ : st) {
    if (c.has_text_1()) benchmark::DoNotOptimize(m.text.hidden_states(ids, c.text.num_hidden_layers - 1).back());
    std::vector<Tensor> hs = m.text_2.hidden_states(ids);  // [0] embeddings .. [n] last layer
    benchmark::DoNotOptimize(hs[hs.size() - 2]);
    Tensor pooled = CLIPTextModel::pooled(m.text_2.final_layer_norm(hs.back()), ids);  // [2, C]
    benchmark::DoNotOptimize(m.text_2.project(pooled));                               // [2, proj]
  }
}

}  // namespace

// Sizes: 512 (SD1/SD2), 1024 (SDXL, one timed step: ~1 min each on 2 cores).
BENCHMARK(BM_UNetStep)->ArgsProduct({{0, 1}, {512}, {1, 0}})->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();
BENCHMARK(BM_UNetStep)->ArgsProduct({{0, 1}, {1024}, {1, 0}})->Unit(benchmark::kSecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_VAEDecode)->ArgsProduct({{0, 1}, {512, 1024}, {1, 0}})->Unit(benchmark::kSecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_VAEDecodeTiled)->Args({1024, 512})->Args({512, 256})->Unit(benchmark::kSecond)->Iterations(1)->UseRealTime();
BENCHMARK(BM_TextEncode)->ArgsProduct({{0, 1}, {512}, {1}})->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK_MAIN();
