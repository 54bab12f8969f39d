// AutoencoderKL against diffusers (tools/gen_fixtures.py: tests/fixtures/{sd1,sd2}/ref_vae.safetensors):
// encoder and decoder stage by stage, then encode_moments/decode end to end.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common.h"
#include "models/vae.h"

using namespace easel;
using json = nlohmann::json;

namespace {

// EASEL_TEST_FIXTURES overrides the fixture root (for private reference dumps).
std::string fx(const std::string& rel) {
  if (const char* d = std::getenv("EASEL_TEST_FIXTURES")) return std::string(d) + "/" + rel;
  return test::fixture(rel);
}

// VAEConfig from a diffusers vae/config.json.
VAEConfig read_vae_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error("cannot open " + path);
  json j = json::parse(f);
  VAEConfig c;
  c.in_channels = j.at("in_channels");
  c.out_channels = j.at("out_channels");
  c.latent_channels = j.at("latent_channels");
  c.block_out_channels = j.at("block_out_channels").get<std::vector<int>>();
  c.layers_per_block = j.at("layers_per_block");
  c.norm_num_groups = j.at("norm_num_groups");
  c.scaling_factor = j.value("scaling_factor", 0.18215f);
  return c;
}

float max_abs(const Tensor& t) {
  float m = 0;
  for (float v : t.to_vector()) m = std::max(m, std::fabs(v));
  return m;
}

// Tolerance: fp32 torch on one thread vs our fp32 kernels differ only in accumulation order
// (~1e-7 relative per reduction); over ~25 chained convs/norms on O(1)-O(10) activations that
// compounds to ~1e-5. Allow 1e-4 absolute per unit of the tensor's magnitude + 1e-4 relative.
constexpr float kAtol = 1e-4f, kRtol = 1e-4f;

::testing::AssertionResult close(const Tensor& a, const Tensor& ref) {
  return test::allclose(a, ref, kAtol * std::max(1.0f, max_abs(ref)), kRtol);
}

class VAERef : public ::testing::TestWithParam<std::string> {};

TEST_P(VAERef, MatchesDiffusersStageByStage) {
  const std::string fam = GetParam();
  std::string ref_path = fx(fam + "/ref_vae.safetensors");
  std::string dir = fx(fam + "/diffusers/vae");
  if (!std::filesystem::exists(ref_path)) GTEST_SKIP() << "fixture " << ref_path << " not generated yet";

  VAEConfig cfg = read_vae_config(dir + "/config.json");
  WeightStore w = load_weights(dir + "/diffusion_pytorch_model.safetensors");
  AutoencoderKL vae;
  vae.load(w, cfg);
  EXPECT_TRUE(w.unused().empty()) << "unused VAE key, e.g. " << w.unused().front();

  WeightStore ref = load_weights(ref_path);
  auto act = [&](const std::string& n) { return ref.get("act." + n); };

  // Encoder, stage by stage (each stage fed our own previous output).
  Tensor image = ref.get("image").to(DType::F32);  // [1, 3, H, W] in (-1, 1)
  Tensor h = vae.encoder.conv_in(image);
  EXPECT_TRUE(close(h, act("encoder.conv_in")));
  for (size_t i = 0; i < vae.encoder.down_blocks.size(); i++) {
    const auto& blk = vae.encoder.down_blocks[i];
    for (const auto& r : blk.resnets) h = r(h, Tensor());
    if (blk.downsampler) h = (*blk.downsampler)(h);
    EXPECT_TRUE(close(h, act("encoder.down_blocks." + std::to_string(i)))) << "encoder.down_blocks." << i;
  }
  h = vae.encoder.mid_block(h);
  EXPECT_TRUE(close(h, act("encoder.mid_block")));
  h = vae.encoder.conv_out(vae.encoder.conv_norm_out(h, true));
  EXPECT_TRUE(close(h, act("encoder.conv_out")));

  Tensor moments = vae.encode_moments(image);  // [1, 8, h, w]
  auto rm = close(moments, ref.get("moments"));
  EXPECT_TRUE(rm) << "moments";
  std::printf("[%s] moments: %s\n", fam.c_str(), rm.message());

  // Decoder, stage by stage.
  Tensor z = ref.get("latent").to(DType::F32);  // [1, 4, h, w]
  h = vae.post_quant_conv(z);
  EXPECT_TRUE(close(h, act("post_quant_conv")));
  h = vae.decoder.conv_in(h);
  EXPECT_TRUE(close(h, act("decoder.conv_in")));
  h = vae.decoder.mid_block(h);
  EXPECT_TRUE(close(h, act("decoder.mid_block")));
  for (size_t i = 0; i < vae.decoder.up_blocks.size(); i++) {
    const auto& blk = vae.decoder.up_blocks[i];
    for (const auto& r : blk.resnets) h = r(h, Tensor());
    if (blk.upsampler) h = (*blk.upsampler)(h);
    EXPECT_TRUE(close(h, act("decoder.up_blocks." + std::to_string(i)))) << "decoder.up_blocks." << i;
  }
  h = vae.decoder.conv_norm_out(h);
  EXPECT_TRUE(close(h, act("decoder.conv_norm_out")));

  Tensor decoded = vae.decode(z);  // [1, 3, H, W]
  auto rd = close(decoded, ref.get("decoded"));
  EXPECT_TRUE(rd) << "decoded";
  std::printf("[%s] decoded: %s\n", fam.c_str(), rd.message());

  // The fixture's weights are fp16-representable, so weights stored as F16 (kept compact, converted
  // by the ops) must give the same numbers up to accumulation order.
  WeightStore w16;
  for (auto& [k, t] : w.tensors) w16.tensors[k] = t.to(DType::F16);
  AutoencoderKL v16;
  v16.load(w16, cfg);
  EXPECT_TRUE(close(v16.decode(z), ref.get("decoded"))) << "f16 weights";
}

INSTANTIATE_TEST_SUITE_P(Families, VAERef, ::testing::Values("sd1", "sd2"));

TEST(VAE, RejectsBadInputs) {
  std::string dir = fx("sd1/diffusers/vae");
  if (!std::filesystem::exists(dir + "/config.json")) GTEST_SKIP() << "fixture " << dir << " not generated yet";
  VAEConfig cfg = read_vae_config(dir + "/config.json");
  WeightStore w = load_weights(dir + "/diffusion_pytorch_model.safetensors");
  AutoencoderKL vae;
  vae.load(w, cfg);
  EXPECT_THROW(vae.encode_moments(Tensor::zeros({1, 3, 60, 64})), Error);  // not a multiple of 8
  EXPECT_THROW(vae.encode_moments(Tensor::zeros({1, 4, 64, 64})), Error);
  EXPECT_THROW(vae.decode(Tensor::zeros({1, 3, 8, 8})), Error);
  VAEConfig bad = cfg;
  bad.latent_channels = 8;
  try {
    AutoencoderKL v;
    v.load(w, bad);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("conv_out.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
