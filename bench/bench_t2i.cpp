// T2I-Adapter cost (Google Benchmark): one adapter forward on a full-size adapter with random weights
// (TencentARC's SD1.5 full_adapter [320, 640, 1280, 1280] x 2 res blocks, light_adapter, SDXL
// full_adapter_xl), and, with EASEL_BENCH_MODEL, one SD1.5 UNet step (batch 2) without and with the
// adapter's features added in the down blocks -- the two costs the adapter adds to a run.
//   build/bin/bench_t2i --benchmark_filter=BM_T2IAdapter
//   EASEL_BENCH_MODEL=/work/models/sd15.safetensors build/bin/bench_t2i --benchmark_filter=BM_T2IStep
// PyTorch side: tools/bench_t2i_adapter.py. Make the model with tools/make_bench_models.py.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>

#include "bench_util.h"
#include "control/t2i_adapter.h"
#include "io/checkpoint.h"
#include "models/unet.h"
#include "ops/ops.h"

using namespace easel;
using namespace easel::bench;

namespace {

// A full-size adapter with N(0, 1/fan_in) weights (as tools/fixtures/tiny.randomize), built in memory.
T2IAdapter random_adapter(const T2IAdapterConfig& c) {
  // Build once with every key, then fill: from_weights checks names and shapes.
  WeightStore w;
  w.source = "random " + c.adapter_type;
  uint32_t seed = 1;
  auto conv = [&](const std::string& p, int64_t in, int64_t out, int64_t k) {
    Tensor t = randn({out, in, k, k}, seed++);
    const float s = 1.0f / std::sqrt((float)(in * k * k));
    for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] *= s;
    w.tensors[p + ".weight"] = t;
    Tensor b = randn({out}, seed++);
    for (int64_t i = 0; i < out; i++) b.f32()[i] *= 0.05f;
    w.tensors[p + ".bias"] = b;
  };
  const int64_t cin = (int64_t)c.in_channels * c.downscale_factor * c.downscale_factor;
  const auto& ch = c.channels;
  auto resnets = [&](const std::string& p, int64_t C, int64_t k2) {
    for (int j = 0; j < c.num_res_blocks; j++) {
      conv(p + ".resnets." + std::to_string(j) + ".block1", C, C, 3);
      conv(p + ".resnets." + std::to_string(j) + ".block2", C, C, k2);
    }
  };
  if (c.adapter_type == "light_adapter") {
    std::vector<std::pair<int64_t, int64_t>> io = {{cin, ch[0]}};
    for (size_t i = 0; i + 1 < ch.size(); i++) io.push_back({ch[i], ch[i + 1]});
    io.push_back({ch.back(), ch.back()});
    for (size_t i = 0; i < io.size(); i++) {
      const std::string p = "body." + std::to_string(i);
      conv(p + ".in_conv", io[i].first, io[i].second / 4, 1);
      resnets(p, io[i].second / 4, 3);
      conv(p + ".out_conv", io[i].second / 4, io[i].second, 1);
    }
  } else {
    conv("conv_in", cin, ch[0], 3);
    for (size_t i = 0; i < ch.size(); i++) {
      const std::string p = "body." + std::to_string(i);
      const int64_t in = i == 0 ? ch[0] : ch[i - 1];
      if (in != ch[i]) conv(p + ".in_conv", in, ch[i], 1);
      resnets(p, ch[i], 1);
    }
  }
  return T2IAdapter::from_weights(w, c, w.source);
}

T2IAdapterConfig config_of(int64_t kind) {
  T2IAdapterConfig c;
  if (kind == 1) {
    c.adapter_type = "light_adapter", c.channels = {320, 640, 1280}, c.num_res_blocks = 4;
  } else if (kind == 2) {
    c.adapter_type = "full_adapter_xl", c.downscale_factor = 16, c.in_channels = 1;  // canny/sketch XL: gray
  }
  return c;
}

// Args: {0 = full_adapter (SD1.5, RGB), 1 = light_adapter, 2 = full_adapter_xl (gray), image size}.
void BM_T2IAdapter(benchmark::State& st) {
  const T2IAdapterConfig c = config_of(st.range(0));
  const T2IAdapter a = random_adapter(c);
  ops::set_weight_cache_limit((size_t)64 << 30);  // the CLI's default (packed weights kept)
  const int64_t size = st.range(1);
  Tensor guide = randn({1, c.in_channels, size, size}, 9);
  for (int64_t i = 0; i < guide.numel(); i++) guide.f32()[i] = guide.f32()[i] > 0 ? 1.f : 0.f;  // an edge map
  a.forward(guide);  // warm-up: oneDNN primitives and packed weights
  for (auto _ : st) benchmark::DoNotOptimize(a.forward(guide));
  st.SetLabel(c.adapter_type);
  st.counters["peak_rss_gib"] = peak_rss_gib();
}

// One SD1.5 step at 512x512 with CFG (batch 2); Arg 1: with the full adapter's features (scaled, two
// copies for the batch) added inside the down blocks.
void BM_T2IStep(benchmark::State& st) {
  const char* path = std::getenv("EASEL_BENCH_MODEL");
  if (!path) {
    st.SkipWithError("set EASEL_BENCH_MODEL to a full-size SD1.5 checkpoint (tools/make_bench_models.py)");
    return;
  }
  static Checkpoint ck = open_checkpoint(path);
  static UNet2DConditionModel unet = [] {
    UNet2DConditionModel u;
    u.load(ck.unet, ck.config.unet);
    return u;
  }();
  ops::set_weight_cache_limit((size_t)64 << 30);
  Tensor x = randn({2, 4, 64, 64}, 1), ctx = randn({2, 77, ck.config.unet.cross_attention_dim}, 2);
  UNetExtras ex;
  std::vector<Tensor> state;
  if (st.range(0)) {
    const T2IAdapter a = random_adapter(config_of(0));
    Tensor guide = randn({1, 3, 512, 512}, 9);
    check_t2i_adapter(a, ck.config.unet, 512, 512);
    state = t2i_adapter_state({a.forward(guide)}, {1.0f}, 2);
    ex.down_intrablock = &state;
  }
  unet.forward(x, {981.f, 981.f}, ctx, &ex);  // warm-up (packs the weights)
  for (auto _ : st) benchmark::DoNotOptimize(unet.forward(x, {981.f, 981.f}, ctx, &ex));
  st.SetLabel(st.range(0) ? "with adapter features" : "plain");
}

}  // namespace

BENCHMARK(BM_T2IAdapter)->Args({0, 512})->Args({1, 512})->Args({2, 1024})->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_T2IStep)->Arg(0)->Arg(1)->Unit(benchmark::kSecond)->Iterations(2)->UseRealTime();
BENCHMARK_MAIN();
