// UNet2DConditionModel against diffusers (tools/gen_fixtures.py: tests/fixtures/{sd1,sd2}/ref_unet.safetensors),
// block by block. SD1: conv projections, 8 heads; SD2: linear projections, 64-dim heads.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "common.h"
#include "models/unet.h"

using namespace easel;
using json = nlohmann::json;

namespace {

// EASEL_TEST_FIXTURES overrides the fixture root (for private reference dumps).
std::string fx(const std::string& rel) {
  if (const char* d = std::getenv("EASEL_TEST_FIXTURES")) return std::string(d) + "/" + rel;
  return test::fixture(rel);
}

std::vector<int> int_or_list(const json& j, size_t n) {
  if (j.is_array()) return j.get<std::vector<int>>();
  return std::vector<int>(n, j.get<int>());
}

// UNetConfig from a diffusers unet/config.json.
UNetConfig read_unet_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error("cannot open " + path);
  json j = json::parse(f);
  UNetConfig c;
  c.in_channels = j.at("in_channels");
  c.out_channels = j.at("out_channels");
  c.sample_size = j.value("sample_size", 64);
  c.block_out_channels = j.at("block_out_channels").get<std::vector<int>>();
  size_t n = c.block_out_channels.size();
  c.down_block_types = j.at("down_block_types").get<std::vector<std::string>>();
  c.up_block_types = j.at("up_block_types").get<std::vector<std::string>>();
  c.layers_per_block = j.at("layers_per_block");
  c.attention_head_dim = int_or_list(j.at("attention_head_dim"), n);
  if (j.contains("num_attention_heads") && !j["num_attention_heads"].is_null())
    c.num_attention_heads = int_or_list(j["num_attention_heads"], n);
  c.transformer_layers_per_block = int_or_list(j.value("transformer_layers_per_block", json(1)), n);
  c.cross_attention_dim = j.at("cross_attention_dim");
  c.use_linear_projection = j.value("use_linear_projection", false);
  c.norm_num_groups = j.at("norm_num_groups");
  c.norm_eps = j.at("norm_eps");
  c.flip_sin_to_cos = j.at("flip_sin_to_cos");
  c.freq_shift = j.at("freq_shift");
  return c;
}

// diffusers' fixture key for a timestep: f"t{ts:g}" with '.' -> 'p'.
std::string ts_key(double ts) {
  char b[64];
  std::snprintf(b, sizeof b, "t%g", ts);
  std::string s = b;
  for (char& ch : s)
    if (ch == '.') ch = 'p';
  return s;
}

float max_abs(const Tensor& t) {
  float m = 0;
  for (float v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

// Tolerance: the reference is fp32 torch on one thread; we differ only in the order of fp32
// accumulations (conv/matmul/softmax/norm reductions over up to a few thousand terms, ~1e-7
// relative each). Through ~40 chained layers on O(1) activations that compounds to ~1e-5; we
// allow 1e-4 absolute + 1e-4 relative, scaled by the tensor's magnitude for the rare O(10) ones.
constexpr float kAtol = 1e-4f, kRtol = 1e-4f;


class UNetRef : public ::testing::TestWithParam<std::string> {};

TEST_P(UNetRef, MatchesDiffusersBlockByBlock) {
  const std::string fam = GetParam();
  std::string ref_path = fx(fam + "/ref_unet.safetensors");
  std::string dir = fx(fam + "/diffusers/unet");
  if (!std::filesystem::exists(ref_path)) GTEST_SKIP() << "fixture " << ref_path << " not generated yet";

  UNetConfig cfg = read_unet_config(dir + "/config.json");
  WeightStore w = load_weights(dir + "/diffusion_pytorch_model.safetensors");
  UNet2DConditionModel unet;
  unet.load(w, cfg);
  EXPECT_TRUE(w.unused().empty()) << "unused UNet key, e.g. " << w.unused().front();

  WeightStore ref = load_weights(ref_path);
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
      float tol = std::max(1.0f, max_abs(r));
      EXPECT_TRUE(test::allclose(out, r, kAtol * tol, kRtol)) << name;
      compared++;
    };
    Tensor out = unet.forward(sample, std::vector<float>(sample.size(0), (float)ts), ctx, &ex);
    // Every dumped module was visited (top-level blocks, plus sub-modules where dumped).
    EXPECT_EQ(compared, (int)ref.keys_with_prefix(key + ".").size() - 1);
    auto r = test::allclose(out, ref.get(key + ".out"), kAtol, kRtol);
    EXPECT_TRUE(r);
    std::printf("[%s t=%g] %s\n", fam.c_str(), ts, r.message());

    // Same weights stored as float16 (the fixtures' values are fp16-representable, so this tests
    // the compact-weight path, not rounding): same result up to accumulation order.
    if (ts == timesteps.front()) {
      WeightStore w16;
      for (auto& [k, t] : w.tensors) w16.tensors[k] = t.to(DType::F16);
      UNet2DConditionModel u16;
      u16.load(w16, cfg);
      Tensor o16 = u16.forward(sample, {(float)ts}, ctx);  // one timestep broadcast to the batch
      EXPECT_TRUE(test::allclose(o16, ref.get(key + ".out"), kAtol, kRtol)) << "f16 weights";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Families, UNetRef, ::testing::Values("sd1", "sd2"));

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
  std::string dir = fx("sd1/diffusers/unet");
  if (!std::filesystem::exists(dir + "/config.json")) GTEST_SKIP() << "fixture " << dir << " not generated yet";
  UNetConfig cfg = read_unet_config(dir + "/config.json");
  WeightStore w = load_weights(dir + "/diffusion_pytorch_model.safetensors");
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
