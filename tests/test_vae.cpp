// AutoencoderKL against diffusers (tools/gen_fixtures.py: tests/fixtures/{sd1,sd2}/ref_vae.safetensors):
// encoder and decoder stage by stage, then encode_moments/decode end to end. Loaded through
// open_checkpoint from the sd1 diffusers folder (f32) and the LDM single files (f16 VAE weights,
// attention q/k/v/proj_out converted from [C,C,1,1] convs).
#include <cmath>
#include <cstdio>

#include "common.h"
#include "io/checkpoint.h"
#include "models/vae.h"

using namespace easel;

namespace {

// Tolerance: fp32 torch on one thread vs our fp32 kernels differ only in accumulation order
// (~1e-7 relative per reduction); over ~25 chained convs/norms on O(1)-O(10) activations that
// compounds to ~1e-5. Allow 1e-4 absolute per unit of the tensor's magnitude + 1e-4 relative.
constexpr float kAtol = 1e-4f, kRtol = 1e-4f;

::testing::AssertionResult close(const Tensor& a, const Tensor& ref) {
  return test::allclose(a, ref, kAtol * std::max(1.0f, test::max_abs(ref)), kRtol);
}

struct Source {
  const char* name;  // test name suffix
  const char* path;  // checkpoint under tests/fixtures
  const char* ref;   // reference dump under tests/fixtures
};

class VAERef : public ::testing::TestWithParam<Source> {};

TEST_P(VAERef, MatchesDiffusersStageByStage) {
  const Source src = GetParam();
  Checkpoint ck = open_checkpoint(test::fixture(src.path));
  AutoencoderKL vae;
  vae.load(ck.vae, ck.config.vae);
  auto unused = ck.vae.unused();
  EXPECT_TRUE(unused.empty()) << unused.size() << " unused VAE keys, e.g. " << unused.front();
  const std::string fam = src.name;

  WeightStore ref = test::load_ref(src.ref);
  // Compares against the activation dump where the fixture has one.
  int compared = 0;
  auto check = [&](const Tensor& h, const std::string& n) {
    if (!ref.has("act." + n)) return;
    EXPECT_TRUE(close(h, ref.get("act." + n))) << n;
    compared++;
  };

  // Encoder, stage by stage (each stage fed our own previous output).
  Tensor image = ref.get("image").to(DType::F32);  // [1, 3, H, W] in (-1, 1)
  Tensor h = vae.encoder.conv_in(image);
  check(h, "encoder.conv_in");
  for (size_t i = 0; i < vae.encoder.down_blocks.size(); i++) {
    const auto& blk = vae.encoder.down_blocks[i];
    for (const auto& r : blk.resnets) h = r(h, Tensor());
    if (blk.downsampler) h = (*blk.downsampler)(h);
    check(h, "encoder.down_blocks." + std::to_string(i));
  }
  h = vae.encoder.mid_block(h);
  check(h, "encoder.mid_block");
  h = vae.encoder.conv_out(vae.encoder.conv_norm_out(h, true));
  check(h, "encoder.conv_out");
  check(vae.quant_conv(h), "quant_conv");

  Tensor moments = vae.encode_moments(image);  // [1, 8, h, w]
  auto rm = close(moments, ref.get("moments"));
  EXPECT_TRUE(rm) << "moments";
  std::printf("[%s] moments: %s\n", fam.c_str(), rm.message());

  // Decoder, stage by stage.
  Tensor z = ref.get("latent").to(DType::F32);  // [1, 4, h, w]
  h = vae.post_quant_conv(z);
  check(h, "post_quant_conv");
  h = vae.decoder.conv_in(h);
  check(h, "decoder.conv_in");
  h = vae.decoder.mid_block(h);
  check(h, "decoder.mid_block");
  for (size_t i = 0; i < vae.decoder.up_blocks.size(); i++) {
    const auto& blk = vae.decoder.up_blocks[i];
    for (const auto& r : blk.resnets) h = r(h, Tensor());
    if (blk.upsampler) h = (*blk.upsampler)(h);
    check(h, "decoder.up_blocks." + std::to_string(i));
  }
  h = vae.decoder.conv_norm_out(h);
  check(h, "decoder.conv_norm_out");
  check(vae.decoder.conv_out(ops::silu(h)), "decoder.conv_out");

  Tensor decoded = vae.decode(z);  // [1, 3, H, W]
  auto rd = close(decoded, ref.get("decoded"));
  EXPECT_TRUE(rd) << "decoded";
  std::printf("[%s] decoded: %s\n", fam.c_str(), rd.message());

  // Every dumped activation was compared (a renamed dump key cannot silently drop a check).
  EXPECT_EQ(compared, (int)ref.keys_with_prefix("act.").size());
  EXPECT_GE(compared, 8);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, VAERef,
                         ::testing::Values(Source{"sd1_diffusers", "sd1/diffusers", "sd1/ref_vae.safetensors"},
                                           Source{"sd1_ldm", "sd1/sd1_ldm.safetensors", "sd1/ref_vae.safetensors"},
                                           Source{"sd2_ldm", "sd2/sd2_ldm.safetensors", "sd2/ref_vae.safetensors"},
                                           Source{"sdxl_ldm", "sdxl/sdxl_ldm.safetensors", "sdxl/ref_vae.safetensors"},
                                           Source{"sdxl_diffusers", "sdxl/diffusers", "sdxl/ref_vae.safetensors"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(VAE, RejectsBadInputs) {
  Checkpoint ck = open_checkpoint(test::fixture("sd1/diffusers"));
  const VAEConfig& cfg = ck.config.vae;
  const WeightStore& w = ck.vae;
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
