// UNet2DConditionModel against diffusers (tools/gen_fixtures.py: tests/fixtures/{sd1,sd2}/ref_unet.safetensors),
// block by block, loaded through open_checkpoint from a diffusers folder (config.json, f32) and from
// LDM single files (config detected from shapes; sd2's weights are all f16, kept compact).
// SD1: conv projections, 8 heads; SD2: linear projections, 64-dim heads.
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common.h"
#include "io/checkpoint.h"
#include "models/unet.h"

using namespace easel;
using test::ts_key;
using json = nlohmann::json;

namespace {

// Tolerance: the reference is fp32 torch on one thread; we differ only in the order of fp32
// accumulations (conv/matmul/softmax/norm reductions over up to a few thousand terms, ~1e-7
// relative each). Through ~40 chained layers on O(1) activations that compounds to ~1e-5; we
// allow 1e-4 absolute + 1e-4 relative, scaled by the tensor's magnitude for the rare O(10) ones.
constexpr float kAtol = 1e-4f, kRtol = 1e-4f;


struct Source {
  const char* name;  // test name suffix
  const char* path;  // checkpoint under tests/fixtures
  const char* ref;   // reference dump under tests/fixtures
};

class UNetRef : public ::testing::TestWithParam<Source> {};

TEST_P(UNetRef, MatchesDiffusersBlockByBlock) {
  const Source src = GetParam();
  Checkpoint ck = open_checkpoint(test::fixture(src.path));
  UNet2DConditionModel unet;
  unet.load(ck.unet, ck.config.unet);
  auto unused = ck.unet.unused();
  EXPECT_TRUE(unused.empty()) << unused.size() << " unused UNet keys, e.g. " << unused.front();

  WeightStore ref = test::load_ref(src.ref);
  Tensor sample = ref.get("sample").to(DType::F32);               // [2, 4, 8, 8]
  Tensor ctx = ref.get("encoder_hidden_states").to(DType::F32);   // [2, 77, cross]
  auto timesteps = json::parse(ref.metadata.at("timesteps")).get<std::vector<double>>();
  ASSERT_FALSE(timesteps.empty());
  for (double ts : timesteps) {
    SCOPED_TRACE("t=" + std::to_string(ts));
    std::string key = ts_key(ts);
    int compared = 0;
    UNetExtras ex;
    ex.trace = [&](const std::string& name, const Tensor& out) {
      std::string k = key + "." + name;
      if (!ref.has(k)) return;
      const Tensor& r = ref.get(k);
      float tol = std::max(1.0f, test::max_abs(r));
      EXPECT_TRUE(test::allclose(out, r, kAtol * tol, kRtol)) << name;
      compared++;
    };
    // The first timestep is passed once for the whole batch (diffusers broadcasts a 0-d timestep).
    std::vector<float> tv = ts == timesteps.front() ? std::vector<float>{(float)ts}
                                                     : std::vector<float>(sample.size(0), (float)ts);
    Tensor out = unet.forward(sample, tv, ctx, &ex);
    // Every dumped module was visited (top-level blocks, plus sub-modules where dumped).
    EXPECT_EQ(compared, (int)ref.keys_with_prefix(key + ".").size() - 1);
    auto r = test::allclose(out, ref.get(key + ".out"), kAtol, kRtol);
    EXPECT_TRUE(r);
    std::printf("[%s t=%g] %s\n", src.name, ts, r.message());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, UNetRef,
                         ::testing::Values(Source{"sd1_diffusers", "sd1/diffusers", "sd1/ref_unet.safetensors"},
                                           Source{"sd1_ldm", "sd1/sd1_ldm.safetensors", "sd1/ref_unet.safetensors"},
                                           Source{"sd2_ldm", "sd2/sd2_ldm.safetensors", "sd2/ref_unet.safetensors"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(UNet, TimestepEmbeddingMatchesFormula) {
  // diffusers get_timestep_embedding(t, 8, flip_sin_to_cos=True, downscale_freq_shift=0):
  // freq_i = exp(-ln(10000) * i / 4), emb = [cos(t f), sin(t f)].
  Tensor e = timestep_embedding({0.0f, 10.0f}, 8, true, 0.0f);
  ASSERT_EQ(e.shape(), (Shape{2, 8}));
  for (int i = 0; i < 4; i++) {
    double f = std::exp(-std::log(10000.0) * i / 4.0);
    EXPECT_NEAR(e.f32()[i], 1.0, 1e-7);
    EXPECT_NEAR(e.f32()[4 + i], 0.0, 1e-7);
    EXPECT_NEAR(e.f32()[8 + i], std::cos(10.0 * f), 2e-6);
    EXPECT_NEAR(e.f32()[12 + i], std::sin(10.0 * f), 2e-6);
  }
  // freq_shift 1 (SD's LDM config uses 0; diffusers' default is 1): denominator half - 1.
  Tensor e1 = timestep_embedding({3.0f}, 8, false, 1.0f);
  EXPECT_NEAR(e1.f32()[1], std::sin(3.0 * std::exp(-std::log(10000.0) / 3.0)), 2e-6);
}

TEST(UNet, RejectsBadInputs) {
  Checkpoint ck = open_checkpoint(test::fixture("sd1/diffusers"));
  const UNetConfig& cfg = ck.config.unet;
  const WeightStore& w = ck.unet;
  UNet2DConditionModel unet;
  unet.load(w, cfg);
  Tensor ctx = Tensor::zeros({1, 77, cfg.cross_attention_dim});
  EXPECT_THROW(unet.forward(Tensor::zeros({1, 4, 9, 8}), {1.0f}, ctx), Error);  // not a multiple of 2^(levels-1)
  EXPECT_THROW(unet.forward(Tensor::zeros({1, 3, 8, 8}), {1.0f}, ctx), Error);  // wrong channels
  EXPECT_THROW(unet.forward(Tensor::zeros({1, 4, 8, 8}), {1.0f}, Tensor::zeros({1, 77, 5})), Error);
  EXPECT_THROW(unet.forward(Tensor::zeros({2, 4, 8, 8}), {1.0f, 2.0f, 3.0f}, ctx), Error);
  // A wrong config names the offending key.
  UNetConfig bad = cfg;
  bad.cross_attention_dim += 1;
  try {
    UNet2DConditionModel u;
    u.load(w, bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attn2.to_k.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
