// Per-step cost of one ControlNet on a full-size model: a UNet step with CFG (batch 2) alone vs the
// ControlNet call (batch 2, hint embedding computed once per image as in the pipeline) + the UNet step
// with its residuals, alternated rep by rep so both see the same machine load; peak RSS before and
// after the ControlNet is loaded and run.
//   EASEL_BENCH_MODEL=/path/sd15.safetensors EASEL_BENCH_CN=/path/cn15.safetensors build/bin/bench_controlnet [reps] [size]
//   EASEL_LOW_MEMORY=1 EASEL_BENCH_MODEL=/path/sdxl.safetensors EASEL_BENCH_CN=/path/cnxl.safetensors build/bin/bench_controlnet 1 1024
// Make the random models with tools/make_bench_models.py and tools/bench_controlnet.py --save-cn.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench_util.h"
#include "control/controlnet.h"
#include "io/checkpoint.h"
#include "ops/ops.h"

using namespace easel;
using namespace easel::bench;

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const char* model = std::getenv("EASEL_BENCH_MODEL");
    const char* cn_path = std::getenv("EASEL_BENCH_CN");
    if (!model || !cn_path) fail("bench", "set EASEL_BENCH_MODEL and EASEL_BENCH_CN");
    const int reps = argc > 1 ? std::atoi(argv[1]) : 3;
    const int size = argc > 2 ? std::atoi(argv[2]) : 512;
    if (const char* t = std::getenv("EASEL_THREADS")) ops::set_num_threads(std::atoi(t));
    ops::set_compute_dtype(DType::F32);
    // EASEL_LOW_MEMORY=1: no packed-weight cache (the CLI's default for SDXL, whose packed f32 weights
    // would not fit next to the ControlNet's).
    if (std::getenv("EASEL_LOW_MEMORY")) ops::set_weight_cache_limit(0);
    Checkpoint ck = open_checkpoint(model);
    UNet2DConditionModel unet;
    unet.load(ck.unet, ck.config.unet);
    const int64_t hw = size / 8;
    Tensor x = randn({2, 4, hw, hw}, 1);
    Tensor ctx = randn({2, 77, (int64_t)ck.config.unet.cross_attention_dim}, 2);
    auto add = added_cond(ck.config, (float)size);
    UNetExtras ex;
    if (add) ex = add->extras;
    const std::vector<float> ts = {500.f, 500.f};
    unet.forward(x, ts, ctx, &ex);  // warm-up: packs the weights
    const double rss_unet = peak_rss_gib();

    ControlNetModel cn = load_controlnet(cn_path, &ck.config);
    Tensor guide = randn({1, 3, size, size}, 3);
    for (int64_t i = 0; i < guide.numel(); i++) guide.f32()[i] = 0.5f + 0.25f * std::clamp(guide.f32()[i], -2.f, 2.f);
    double t0 = now();
    Tensor emb = cn.embed_condition(guide);  // once per image
    const double t_hint = now() - t0;
    auto cn_step = [&] {
      ControlNetOutput o = cn.forward(x, ts, ctx, emb, ex.text_embeds, ex.time_ids);
      UNetExtras e = ex;
      e.down_residuals = &o.down;
      e.mid_residual = &o.mid;
      double a = now();
      unet.forward(x, ts, ctx, &e);
      return now() - a;
    };
    cn_step();  // warm-up
    const double rss_cn = peak_rss_gib();

    std::vector<double> plain, with_cn, cn_only;
    for (int r = 0; r < reps; r++) {
      double a = now();
      unet.forward(x, ts, ctx, &ex);
      plain.push_back(now() - a);
      a = now();
      double u = cn_step();
      with_cn.push_back(now() - a);
      cn_only.push_back(with_cn.back() - u);
    }
    std::printf("{\"size\": %d, \"reps\": %d, \"hint_embedding_once_s\": %.3f, \"unet_step_s\": %.3f, "
                "\"unet_step_min_s\": %.3f, \"cn_unet_step_s\": %.3f, \"cn_unet_step_min_s\": %.3f, "
                "\"cn_call_s\": %.3f, \"cn_overhead_median\": %.3f, \"cn_overhead_min\": %.3f, "
                "\"peak_rss_unet_gib\": %.2f, \"peak_rss_cn_gib\": %.2f}\n",
                size, reps, t_hint, median(plain), *std::min_element(plain.begin(), plain.end()), median(with_cn),
                *std::min_element(with_cn.begin(), with_cn.end()), median(cn_only),
                median(with_cn) / median(plain) - 1,
                *std::min_element(with_cn.begin(), with_cn.end()) / *std::min_element(plain.begin(), plain.end()) - 1,
                rss_unet, rss_cn);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_controlnet: %s\n", e.what());
    return 1;
  }
  return 0;
}
