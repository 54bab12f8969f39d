// SDXL UNet (base and refiner) against diffusers (tools/fixtures/sdxl.py:
// tests/fixtures/sdxl/ref_unet.safetensors, ref_unet_refiner.safetensors), block by block, with the
// added conditioning (pooled text embeds + time ids -> add_time_proj -> add_embedding) checked on its own.
// Weights: through open_checkpoint (diffusers folders and LDM single files with label_emb.0.0/0.2), and
// the diffusers unet/ subfolder with load_weights + parse_unet_config for the other tests.
// Tiny shapes: base (32, 64, 64), DownBlock2D first, transformer depth (1, 1, 2) (mid block 2, up
// blocks mirrored), one 64-dim head per level, 6 time ids; refiner (32, 64, 64, 64), DownBlock2D first and
// last, depth (1, 1, 1, 2) (mid block 2), 5 time ids.
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common.h"
#include "io/checkpoint.h"
#include "io/diffusers_folder.h"
#include "models/unet.h"

using namespace easel;
using test::ts_key;
using test::error_of;
using test::ramp;
using test::temp_dir;
using json = nlohmann::json;

namespace {

std::string sdxl(const std::string& rel) { return test::fixture("sdxl/" + rel); }

// As test_unet.cpp: fp32 reductions in a different order through ~40 chained layers.
constexpr float kAtol = 1e-4f, kRtol = 1e-4f;

struct Model {
  UNet2DConditionModel unet;
  WeightStore w;
};

Model load_unet(const std::string& folder) {
  Model m;
  m.w = load_weights(sdxl(folder + "/unet/diffusion_pytorch_model.safetensors"));
  m.unet.load(m.w, parse_unet_config(sdxl(folder + "/unet/config.json")));
  return m;
}

struct Source {
  const char* name;
  const char* path;  // checkpoint under tests/fixtures/sdxl: diffusers folder or LDM single file
  const char* ref;
  int n_ids;         // time ids per row
};

class SDXLUNetRef : public ::testing::TestWithParam<Source> {};

TEST_P(SDXLUNetRef, MatchesDiffusersBlockByBlock) {
  const Source src = GetParam();
  Checkpoint ck = open_checkpoint(sdxl(src.path));
  UNet2DConditionModel unet;
  unet.load(ck.unet, ck.config.unet);
  const UNetConfig& cfg = unet.config;
  EXPECT_EQ(cfg.addition_embed_type, "text_time");
  ASSERT_TRUE(unet.add_embedding.has_value());
  auto unused = ck.unet.unused();
  EXPECT_TRUE(unused.empty()) << unused.size() << " unused UNet keys, e.g. " << unused.front();

  WeightStore ref = load_weights(sdxl(src.ref));
  Tensor sample = ref.get("sample").to(DType::F32);              // [2, 4, 8, 8]
  Tensor ctx = ref.get("encoder_hidden_states").to(DType::F32);  // [2, 77, cross]
  Tensor text_embeds = ref.get("text_embeds").to(DType::F32);    // [2, 32]
  Tensor time_ids = ref.get("time_ids").to(DType::F32);          // [2, n_ids]
  ASSERT_EQ(time_ids.shape(), (Shape{2, src.n_ids}));
  auto timesteps = json::parse(ref.metadata.at("timesteps")).get<std::vector<double>>();
  ASSERT_GE(timesteps.size(), 2u);
  for (double ts : timesteps) {
    SCOPED_TRACE("t=" + std::to_string(ts));
    std::string key = ts_key(ts);
    int compared = 0;
    UNetExtras ex;
    ex.text_embeds = &text_embeds;
    ex.time_ids = &time_ids;
    ex.trace = [&](const std::string& name, const Tensor& out) {
      std::string k = key + "." + name;
      if (!ref.has(k)) return;
      const Tensor& r = ref.get(k);
      float tol = std::max(1.0f, test::max_abs(r));
      auto res = test::allclose(out, r, kAtol * tol, kRtol);
      EXPECT_TRUE(res) << name;
      compared++;
    };
    Tensor out = unet.forward(sample, {(float)ts}, ctx, &ex);
    // Every dumped module was visited, add_time_proj and add_embedding included.
    EXPECT_TRUE(ref.has(key + ".add_embedding") && ref.has(key + ".add_time_proj"));
    EXPECT_EQ(compared, (int)ref.keys_with_prefix(key + ".").size() - 1);
    auto r = test::allclose(out, ref.get(key + ".out"), kAtol, kRtol);
    EXPECT_TRUE(r);
    std::printf("[%s t=%g] %d blocks, out %s\n", src.name, ts, compared, r.message());
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SDXLUNetRef,
                         ::testing::Values(Source{"base_diffusers", "diffusers", "ref_unet.safetensors", 6},
                                           Source{"base_ldm", "sdxl_ldm.safetensors", "ref_unet.safetensors", 6},
                                           Source{"refiner_diffusers", "refiner", "ref_unet_refiner.safetensors", 5},
                                           Source{"refiner_ldm", "sdxl_refiner_ldm.safetensors",
                                                  "ref_unet_refiner.safetensors", 5}),
                         [](const auto& info) { return std::string(info.param.name); });

// The time embedding with the added term, through the free function the ControlNet shares.
TEST(SDXLUNet, TimeEmbedWithAddedConditioning) {
  Model m = load_unet("diffusers");
  WeightStore ref = load_weights(sdxl("ref_unet.safetensors"));
  Tensor te = ref.get("text_embeds").to(DType::F32), ids = ref.get("time_ids").to(DType::F32);
  auto timesteps = json::parse(ref.metadata.at("timesteps")).get<std::vector<double>>();
  const std::string k = ts_key(timesteps[0]);
  Tensor want = ops::add(ref.get(k + ".time_embedding"), ref.get(k + ".add_embedding"));  // emb + aug_emb
  std::vector<float> ts(2, (float)timesteps[0]);
  Tensor got = unet_time_embed(m.unet.config, m.unet.time_embedding, &*m.unet.add_embedding, ts, &te, &ids);
  auto r = test::allclose(got, want, 1e-5f * std::max(1.f, test::max_abs(want)), 1e-5f);
  EXPECT_TRUE(r);
  std::printf("temb %s\n", r.message());
  EXPECT_TRUE(test::allclose(m.unet.time_embed(ts, &te, &ids), got, 0, 0));
  // The added term matters: different time ids give a different embedding.
  Tensor ids2 = ids.clone();
  ids2.f32()[0] += 64;
  EXPECT_FALSE(test::allclose(m.unet.time_embed(ts, &te, &ids2), got, 1e-3f, 0));
  // add_time_proj = timestep_embedding of each id (flip_sin_to_cos, freq_shift of the config), [B*n, dim].
  EXPECT_TRUE(test::allclose(timestep_embedding(ids.to_vector(), m.unet.config.addition_time_embed_dim,
                                                m.unet.config.flip_sin_to_cos, (float)m.unet.config.freq_shift),
                             ref.get(k + ".add_time_proj"), 1e-6f, 1e-5f));
}

TEST(SDXLUNet, RejectsMissingOrBadAddedConditioning) {
  Model m = load_unet("diffusers");
  const UNetConfig& cfg = m.unet.config;
  Tensor sample = Tensor::zeros({2, 4, 8, 8}), ctx = Tensor::zeros({2, 77, cfg.cross_attention_dim});
  Tensor te = Tensor::zeros({2, 32}), ids = Tensor::zeros({2, 6});
  auto run = [&](const Tensor* t, const Tensor* i) {
    return error_of([&] {
      UNetExtras ex;
      ex.text_embeds = t;
      ex.time_ids = i;
      m.unet.forward(sample, {1.f}, ctx, &ex);
    });
  };
  EXPECT_NE(error_of([&] { m.unet.forward(sample, {1.f}, ctx); }).find("needs text_embeds"), std::string::npos);
  EXPECT_NE(run(&te, nullptr).find("needs text_embeds"), std::string::npos);
  Tensor te_bad = Tensor::zeros({2, 31}), ids5 = Tensor::zeros({2, 5}), te_b1 = Tensor::zeros({1, 32});
  for (auto [t, i] : {std::pair{&te_bad, &ids}, {&te, &ids5}, {&te_b1, &ids}}) {
    std::string e = run(t, i);
    EXPECT_NE(e.find("projection_class_embeddings_input_dim 80"), std::string::npos) << e;
  }
  EXPECT_EQ(run(&te, &ids), "");  // the right shapes run

  // A config without added conditioning rejects text_embeds (the UNet would silently ignore them).
  UNetConfig plain = cfg;
  plain.addition_embed_type.clear();
  UNet2DConditionModel u;
  u.load(m.w, plain);
  EXPECT_FALSE(u.add_embedding.has_value());
  EXPECT_NE(error_of([&] {
              UNetExtras ex;
              ex.text_embeds = &te;
              ex.time_ids = &ids;
              u.forward(sample, {1.f}, ctx, &ex);
            }).find("without SDXL added conditioning"),
            std::string::npos);
  // Wrong projection input size names the add_embedding key.
  UNetConfig bad = cfg;
  bad.projection_class_embeddings_input_dim = 81;
  EXPECT_NE(error_of([&] { u.load(m.w, bad); }).find("add_embedding.linear_1.weight"), std::string::npos);
  bad = cfg;
  bad.addition_embed_type = "text_image";
  EXPECT_NE(error_of([&] { u.load(m.w, bad); }).find("text_image"), std::string::npos);
}

// diffusers' SDXL block layout: per-level transformer depth, mid block = the last level's depth,
// up blocks mirror the down blocks, 64-dim heads.
TEST(SDXLUNet, BlockLayout) {
  Model m = load_unet("diffusers");
  const auto& d = m.unet.down_blocks;
  ASSERT_EQ(d.size(), 3u);
  EXPECT_TRUE(d[0].attentions.empty());
  EXPECT_EQ(d[1].attentions.at(0).transformer_blocks.size(), 1u);
  EXPECT_EQ(d[2].attentions.at(1).transformer_blocks.size(), 2u);
  EXPECT_FALSE(d[2].downsampler.has_value());
  EXPECT_EQ(m.unet.mid_block.attentions.at(0).transformer_blocks.size(), 2u);
  EXPECT_EQ(m.unet.up_blocks[0].attentions.at(2).transformer_blocks.size(), 2u);
  EXPECT_EQ(m.unet.up_blocks[1].attentions.at(0).transformer_blocks.size(), 1u);
  EXPECT_TRUE(m.unet.up_blocks[2].attentions.empty());
  // 64 channels / 64-dim heads (config attention_head_dim 1 = heads, not the head size; heads > 1 from
  // channels / 64: test_checkpoint's real SD2.1 layout).
  EXPECT_EQ(d[2].attentions[0].transformer_blocks[0].attn1.heads, 1);
  EXPECT_TRUE(d[2].attentions[0].linear_proj);
}

}  // namespace
