// ControlNet parity with diffusers 0.42 on the tiny models (tests/fixtures/controlnet, written by
// tools/fixtures/controlnet.py): module outputs (diffusers folder, diffusers-keyed single file, lllyasviel
// file), end-to-end pipelines (one ControlNet, resized guide, window, guess mode, two ControlNets, img2img,
// SDXL), the A1111 control-mode scales and resize modes, and bad inputs.
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common.h"
#include "control/control_unit.h"
#include "io/safetensors.h"
#include "lora/lora_apply.h"
#include "pipeline/pipeline.h"

using namespace easel;

namespace {

const char* kPrompt = "a photo of a cat wearing a hat";

// Module outputs: fp32 accumulation-order differences only (~1e-6 of the magnitude).
void expect_module_matches(const ControlNetModel& cn, const std::string& ref_name) {
  WeightStore ref = test::load_ref("controlnet/" + ref_name);
  Tensor sample = ref.get("sample").to(DType::F32);
  Tensor ctx = ref.get("encoder_hidden_states").to(DType::F32);
  Tensor cond = ref.get("controlnet_cond").to(DType::F32);  // [1, 3, 64, 64], broadcast over the batch
  Tensor te, ids;
  if (ref.has("text_embeds")) te = ref.get("text_embeds").to(DType::F32), ids = ref.get("time_ids").to(DType::F32);
  Tensor emb = cn.embed_condition(cond);
  EXPECT_TRUE(test::allclose(emb, ref.get("cond_embedding"), 1e-4f * std::max(1.0f, test::max_abs(emb)), 1e-4f));
  const int n_down = std::stoi(ref.metadata.at("n_down"));
  ASSERT_EQ((int)cn.num_down_residuals(), n_down);
  auto check = [&](const ControlNetOutput& o, const std::string& key) {
    ASSERT_EQ((int)o.down.size(), n_down);
    for (int i = 0; i < n_down; i++) {
      const Tensor& r = ref.get(key + ".down_" + std::to_string(i));
      EXPECT_TRUE(test::allclose(o.down[i], r, 1e-4f * std::max(1.0f, test::max_abs(r)), 1e-4f)) << key << " " << i;
    }
    const Tensor& r = ref.get(key + ".mid");
    EXPECT_TRUE(test::allclose(o.mid, r, 1e-4f * std::max(1.0f, test::max_abs(r)), 1e-4f)) << key << " mid";
  };
  const Tensor* tep = te.defined() ? &te : nullptr;
  const Tensor* idp = ids.defined() ? &ids : nullptr;
  check(cn.forward(sample, {981.0f}, ctx, emb, tep, idp), "t981");
  // Guess mode at strength 0.8: diffusers' logspace(-1, 0, n + 1) * 0.8 on the outputs.
  ControlNetOutput g = cn.forward(sample, {501.0f}, ctx, emb, tep, idp);
  std::vector<float> s = control_scales(g.down.size() + 1, 0.8f, ControlMode::Balanced, /*guess_mode=*/true);
  for (size_t i = 0; i < g.down.size(); i++) g.down[i] = ops::scale(g.down[i], s[i]);
  g.mid = ops::scale(g.mid, s.back());
  check(g, "guess");
}

TEST(ControlNet, ModuleMatchesDiffusersSD1) {
  auto base = open_checkpoint(test::fixture("sd1/sd1_ldm.safetensors")).config;
  for (const char* path : {"controlnet/sd1_cn", "controlnet/sd1_cn/diffusion_pytorch_model.safetensors",
                           "controlnet/sd1_cn_lllyasviel.safetensors"}) {
    SCOPED_TRACE(path);
    ControlNetModel cn = load_controlnet(test::fixture(path), &base);
    EXPECT_EQ(cn.config.family, "sd1");
    EXPECT_EQ(cn.num_down_residuals(), 6u);  // conv_in + 2 levels x (2 layers) + 1 downsampler
    expect_module_matches(cn, "ref_cn_sd1.safetensors");
  }
  // Without a base model the family and heads come from the weights.
  expect_module_matches(load_controlnet(test::fixture("controlnet/sd1_cn_lllyasviel.safetensors")),
                        "ref_cn_sd1.safetensors");
}

TEST(ControlNet, ModuleMatchesDiffusersSDXL) {
  auto base = open_checkpoint(test::fixture("sdxl/sdxl_ldm.safetensors")).config;
  for (const char* path : {"controlnet/sdxl_cn", "controlnet/sdxl_cn/diffusion_pytorch_model.safetensors"}) {
    SCOPED_TRACE(path);
    ControlNetModel cn = load_controlnet(test::fixture(path), &base);
    EXPECT_EQ(cn.config.family, "sdxl");
    // DownBlock2D, then a CrossAttnDownBlock2D with zero transformer layers, then one with a layer.
    EXPECT_TRUE(cn.down_blocks[0].attentions.empty());
    ASSERT_EQ(cn.down_blocks[1].attentions.size(), 2u);
    EXPECT_TRUE(cn.down_blocks[1].attentions[0].transformer_blocks.empty());
    EXPECT_EQ(cn.down_blocks[2].attentions[0].transformer_blocks.size(), 1u);
    expect_module_matches(cn, "ref_cn_sdxl.safetensors");
  }
}

TEST(ControlNet, GlobalPoolingFromTheLllyasvielYaml) {
  // shuffle v1.1: control_v11e_sd15_shuffle.yaml sets global_average_pooling; outputs are H, W means and
  // the unit conditions the conditional half only (diffusers forces guess mode, without its scales).
  const std::string dir = test::temp_dir("cn_pool");
  std::filesystem::copy_file(test::fixture("controlnet/sd1_cn_lllyasviel.safetensors"), dir + "/shuffle.safetensors");
  std::ofstream(dir + "/shuffle.yaml") << "model:\n  params:\n    control_stage_config:\n      params:\n"
                                          "        global_average_pooling: True\n";
  ControlNetModel pooled = load_controlnet(dir + "/shuffle.safetensors");
  ControlNetModel plain = load_controlnet(test::fixture("controlnet/sd1_cn_lllyasviel.safetensors"));
  EXPECT_TRUE(pooled.config.global_pool_conditions);
  EXPECT_FALSE(plain.config.global_pool_conditions);
  WeightStore ref = test::load_ref("controlnet/ref_cn_sd1.safetensors");
  Tensor sample = ref.get("sample").to(DType::F32), ctx = ref.get("encoder_hidden_states").to(DType::F32);
  Tensor emb = plain.embed_condition(ref.get("controlnet_cond").to(DType::F32));
  ControlNetOutput a = pooled.forward(sample, {981.0f}, ctx, emb), b = plain.forward(sample, {981.0f}, ctx, emb);
  ASSERT_EQ(a.down.size(), b.down.size());
  for (size_t i = 0; i <= a.down.size(); i++) {
    const Tensor& p = i < a.down.size() ? a.down[i] : a.mid;
    const Tensor& q = i < b.down.size() ? b.down[i] : b.mid;
    ASSERT_EQ(p.shape(), q.shape());  // the mean at every position (diffusers' broadcast add)
    const int64_t hw = q.size(2) * q.size(3);
    for (int64_t c = 0; c < q.size(0) * q.size(1); c++) {
      double m = 0;
      for (int64_t j = 0; j < hw; j++) m += q.f32()[c * hw + j];
      for (int64_t j = 0; j < hw; j += 3) EXPECT_NEAR(p.f32()[c * hw + j], m / hw, 1e-5) << i;
    }
  }
  // In a run: the conditional half only, strength without guess-mode scales.
  ControlUnit u;
  u.name = "shuffle";
  u.controlnet = std::make_shared<ControlNetModel>(std::move(pooled));
  u.guide = read_image(test::fixture("controlnet/guide_a.png"), 3);
  u.strength = 0.5f;
  std::vector<ControlUnit> us{u};
  ControlRunner r(us, 64, 64, /*cfg_on=*/true, /*guess_mode=*/false);
  UNetExtras ex;
  Tensor lat = sample.slice0(0, 1);
  r.step(0, 4, lat, 981.0f, ctx, nullptr, nullptr, ex);
  ASSERT_TRUE(ex.mid_residual);
  Tensor gemb = plain.embed_condition(image_to_tensor01(u.guide));
  Tensor want = plain.forward(lat, {981.0f}, ctx.slice0(1, 1), gemb).mid;  // unpooled, cond half
  EXPECT_EQ(test::max_abs(ex.mid_residual->slice0(0, 1)), 0.0f);
  const int64_t hw = want.size(2) * want.size(3);
  for (int64_t c = 0; c < want.size(1); c++) {
    double m = 0;
    for (int64_t j = 0; j < hw; j++) m += want.f32()[c * hw + j];
    EXPECT_NEAR(ex.mid_residual->slice0(1, 1).f32()[c * hw], 0.5 * m / hw, 1e-4) << c;
  }
}

TEST(ControlNet, V11PthWithBareKeysEqualsDiffusers) {
  // v1.1 form: torch .pth (zip pickle), bare LDM keys; a micro model (one level, mid block without attention).
  ControlNetModel a = load_controlnet(test::fixture("controlnet/micro_v11.pth"));
  ControlNetModel b = load_controlnet(test::fixture("controlnet/micro_diffusers.safetensors"));
  EXPECT_FALSE(a.config.mid_block_attention);
  ASSERT_EQ(a.num_down_residuals(), 2u);
  Tensor x = test::ramp({2, 4, 1, 1}, 0.2f), ctx = test::ramp({2, 3, 768}, -0.5f);
  Tensor g = test::ramp({1, 3, 8, 8}, 0.01f);
  ControlNetOutput oa = a.forward(x, {300.0f}, ctx, a.embed_condition(g));
  ControlNetOutput ob = b.forward(x, {300.0f}, ctx, b.embed_condition(g));
  for (size_t i = 0; i < oa.down.size(); i++) EXPECT_TRUE(test::allclose(oa.down[i], ob.down[i], 0, 0)) << i;
  EXPECT_TRUE(test::allclose(oa.mid, ob.mid, 0, 0));
  EXPECT_GT(test::max_abs(oa.mid), 0.0f);
}

TEST(ControlNet, Describe) {
  std::string d = describe_controlnet(test::fixture("controlnet/sd1_cn_lllyasviel.safetensors"));
  EXPECT_NE(d.find("layout: lllyasviel"), std::string::npos) << d;
  EXPECT_NE(d.find("residuals: 6 down + mid"), std::string::npos) << d;
  d = describe_controlnet(test::fixture("controlnet/sdxl_cn"));
  EXPECT_NE(d.find("base model: SDXL"), std::string::npos) << d;
  EXPECT_NE(d.find("attention depth per level (-1 none): [-1, 0, 1]"), std::string::npos) << d;
  EXPECT_EQ(describe_controlnet(test::fixture("sd1/ref_unet.safetensors")), "");  // not a ControlNet
  EXPECT_EQ(describe_controlnet(test::fixture("sd1/diffusers")), "");
}

// ---- end to end -----------------------------------------------------------------------------
struct E2E {
  std::string name;  // reference dump
  bool sdxl = false;
};

GenerateOptions base_options(bool sdxl) { return test::tiny_options(sdxl); }

ControlUnit unit(const std::string& model, const ModelConfig& base, const std::string& guide, float strength = 1.0f,
                 double start = 0.0, double end = 1.0) {
  ControlUnit u;
  u.name = test::fixture(model);
  u.controlnet = std::make_shared<ControlNetModel>(load_controlnet(u.name, &base));
  u.guide = read_image(test::fixture(guide), 3);
  u.strength = strength, u.start = start, u.end = end;
  u.resize_mode = ResizeMode::JustResize;  // diffusers resizes guides by stretching
  return u;
}

// Tolerances as tests/test_pipeline.cpp (a wrong residual gives errors of order 0.1-1).
void run_and_compare(const Pipeline& pipe, GenerateOptions o, const std::string& ref_name) {
  test::generate_and_compare(pipe, std::move(o), "controlnet/" + ref_name + ".safetensors");
}

class SD1ControlNet : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pipe_ = Pipeline::load(test::fixture("sd1/sd1_ldm.safetensors")).release(); }
  static void TearDownTestSuite() { delete pipe_; }
  static Pipeline* pipe_;
};
Pipeline* SD1ControlNet::pipe_ = nullptr;

TEST_F(SD1ControlNet, OneControlNet) {
  GenerateOptions o = base_options(false);
  o.control.push_back(unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_a.png", 0.9f));
  run_and_compare(*pipe_, o, "ref_sd1_one");
}

TEST_F(SD1ControlNet, WithALora) {
  // diffusers: load_lora_weights(sd1_kohya) at 0.8 on the UNet and text encoder; the ControlNet untouched.
  auto pipe = Pipeline::load(test::fixture("sd1/sd1_ldm.safetensors"));
  lora::LoraSpec spec;
  spec.file = lora::read_lora(test::fixture("lora/sd1_kohya.safetensors"), pipe->checkpoint());
  spec.unet_strength = spec.te_strength = 0.8f;
  for (auto mode : {Pipeline::LoraApply::Merge, Pipeline::LoraApply::Bypass}) {
    pipe->set_loras({spec}, mode);
    GenerateOptions o = base_options(false);
    o.control.push_back(unit("controlnet/sd1_cn", pipe->config(), "controlnet/guide_a.png", 0.9f));
    run_and_compare(*pipe, o, "ref_sd1_lora");
  }
}

TEST_F(SD1ControlNet, LllyasvielFileGivesTheSameImage) {
  GenerateOptions o = base_options(false);
  o.control.push_back(unit("controlnet/sd1_cn_lllyasviel.safetensors", pipe_->config(), "controlnet/guide_a.png", 0.9f));
  run_and_compare(*pipe_, o, "ref_sd1_one");
  GenerateOptions o2 = base_options(false);
  o2.control.push_back(unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_a.png", 0.9f));
  GenerateResult a = pipe_->generate(o), b = pipe_->generate(o2);
  EXPECT_EQ(test::max_abs(ops::add(a.latents, ops::scale(b.latents, -1.0f))), 0.0f);  // identical weights
}

TEST_F(SD1ControlNet, GuideOfAnotherSizeIsResized) {
  GenerateOptions o = base_options(false);
  o.control.push_back(unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_b_80x48.png"));
  std::vector<Image> used;
  o.on_guides = [&](const std::vector<Image>& g) { used = g; };
  run_and_compare(*pipe_, o, "ref_sd1_resized");
  ASSERT_EQ(used.size(), 1u);
  EXPECT_EQ(used[0].width, 64);
  EXPECT_EQ(used[0].height, 64);
}

TEST_F(SD1ControlNet, GuessMode) {
  GenerateOptions o = base_options(false);
  o.cfg_scale = 4.0f;
  o.control_guess_mode = true;
  o.control.push_back(unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_a.png"));
  run_and_compare(*pipe_, o, "ref_sd1_guess");
}

TEST_F(SD1ControlNet, StartEndWindow) {
  GenerateOptions o = base_options(false);
  o.control.push_back(unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_a.png", 1.0f, 0.25, 0.75));
  run_and_compare(*pipe_, o, "ref_sd1_window");
}

TEST_F(SD1ControlNet, TwoControlNetsSummed) {
  GenerateOptions o = base_options(false);
  o.steps = 5;
  o.control.push_back(unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_a.png", 0.6f, 0.0, 0.8));
  // The second unit: the same weights as an lllyasviel file, another guide, strength and window.
  o.control.push_back(
      unit("controlnet/sd1_cn_lllyasviel.safetensors", pipe_->config(), "controlnet/guide_b_80x48.png", 1.3f, 0.2, 1.0));
  run_and_compare(*pipe_, o, "ref_sd1_multi");
}

TEST_F(SD1ControlNet, Img2Img) {
  GenerateOptions o = base_options(false);
  o.steps = 5;
  o.init_image = read_image(test::fixture("controlnet/init_image.png"), 3);
  o.strength = 0.6f;
  o.control.push_back(unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_a.png", 1.1f, 0.0, 0.7));
  run_and_compare(*pipe_, o, "ref_sd1_img2img");
}

// "ControlNet is more important" = the soft weights on the conditional half only: with strength s at
// every output that is what guess mode does with its own scales, so a unit whose soft weights equal
// guess mode's logspace cannot be built; instead check the two halves directly through the runner.
TEST_F(SD1ControlNet, ControlModesScaleTheResiduals) {
  ControlUnit u = unit("controlnet/sd1_cn", pipe_->config(), "controlnet/guide_a.png", 0.7f);
  Tensor lat = test::ramp({1, 4, 8, 8}, 0.1f);
  Tensor ctx = test::ramp({2, 77, 64}, -0.3f);
  auto residuals = [&](ControlMode m, bool cfg, bool guess) {
    ControlUnit v = u;
    v.control_mode = m;
    std::vector<ControlUnit> us{v};
    ControlRunner r(us, 64, 64, cfg, guess);
    UNetExtras ex;
    r.step(0, 4, lat, 901.0f, cfg ? ctx : ctx.slice0(1, 1), nullptr, nullptr, ex);
    std::vector<Tensor> out = *ex.down_residuals;
    out.push_back(*ex.mid_residual);
    return out;
  };
  std::vector<Tensor> bal = residuals(ControlMode::Balanced, true, false);
  std::vector<Tensor> pr = residuals(ControlMode::Prompt, true, false);
  std::vector<Tensor> ctl = residuals(ControlMode::Control, true, false);
  ASSERT_EQ(bal.size(), 7u);  // 6 down + mid
  for (size_t i = 0; i < bal.size(); i++) {
    // prompt: balanced * 0.825^(n-1-i) on both halves
    float w = (float)std::pow(0.825, (double)(bal.size() - 1 - i));
    EXPECT_TRUE(test::allclose(pr[i], ops::scale(bal[i], w), 1e-5f, 1e-5f)) << i;
    // control: the same on the conditional half, zeros on the unconditional half
    EXPECT_EQ(test::max_abs(ctl[i].slice0(0, 1)), 0.0f) << i;
    EXPECT_TRUE(test::allclose(ctl[i].slice0(1, 1), ops::scale(bal[i].slice0(1, 1), w), 1e-4f, 1e-4f)) << i;
    EXPECT_GT(test::max_abs(bal[i].slice0(0, 1)), 0.0f);
  }
}

TEST(ControlNetSDXL, TwoControlNetsMatchDiffusers) {
  auto pipe = Pipeline::load(test::fixture("sdxl/sdxl_ldm.safetensors"));
  GenerateOptions o = base_options(true);
  o.control.push_back(unit("controlnet/sdxl_cn", pipe->config(), "controlnet/guide_a.png", 0.8f));
  o.control.push_back(unit("controlnet/sdxl_cn/diffusion_pytorch_model.safetensors", pipe->config(),
                           "controlnet/guide_b_80x48.png", 0.5f));
  run_and_compare(*pipe, o, "ref_sdxl_multi");
}

TEST(ControlNetSDXL, GuessModeWithWindowMatchesDiffusers) {
  auto pipe = Pipeline::load(test::fixture("sdxl/sdxl_ldm.safetensors"));
  GenerateOptions o = base_options(true);
  o.control_guess_mode = true;
  o.control.push_back(unit("controlnet/sdxl_cn", pipe->config(), "controlnet/guide_a.png", 0.9f, 0.2, 1.0));
  run_and_compare(*pipe, o, "ref_sdxl_guess");
}

// ---- A1111 formulas -------------------------------------------------------------------------
TEST(ControlUnit, ScalesFollowA1111AndDiffusers) {
  auto bal = control_scales(13, 0.7f, ControlMode::Balanced, false);
  for (float s : bal) EXPECT_FLOAT_EQ(s, 0.7f);
  auto soft = control_scales(13, 0.7f, ControlMode::Prompt, false);
  for (int i = 0; i < 13; i++) EXPECT_FLOAT_EQ(soft[i], (float)(0.7 * std::pow(0.825, 12 - i))) << i;
  EXPECT_FLOAT_EQ(soft[12], 0.7f);                      // mid block
  EXPECT_NEAR(soft[0], 0.7 * 0.0994140, 1e-6);          // 0.825^12 = 0.099414...
  EXPECT_EQ(control_scales(13, 0.7f, ControlMode::Control, false), soft);
  auto guess = control_scales(13, 2.0f, ControlMode::Balanced, true);
  EXPECT_FLOAT_EQ(guess[0], 0.2f);
  EXPECT_FLOAT_EQ(guess[12], 2.0f);
  EXPECT_NEAR(guess[6], 2.0 * std::pow(10.0, -0.5), 1e-6);
  auto t2i = control_scales(4, 1.5f, ControlMode::Prompt, false, true);
  EXPECT_EQ(t2i, (std::vector<float>{0.375f, 0.93f, 1.2375f, 1.5f}));
  EXPECT_EQ(control_scales(4, 1.5f, ControlMode::Balanced, false, true), std::vector<float>(4, 1.5f));
}

TEST(ControlUnit, WindowIsDiffusersControlnetKeep) {
  // 10 steps, start 0.2, end 0.75: i/10 < 0.2 drops 0, 1; (i+1)/10 > 0.75 drops 7, 8, 9.
  std::vector<bool> want = {false, false, true, true, true, true, true, false, false, false};
  for (size_t i = 0; i < 10; i++) EXPECT_EQ(control_active(0.2, 0.75, i, 10), want[i]) << i;
  for (size_t i = 0; i < 7; i++) EXPECT_TRUE(control_active(0.0, 1.0, i, 7));
}

Image pattern(int w, int h) {
  Image im;
  im.width = w, im.height = h, im.channels = 3;
  im.pixels.resize((size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      uint8_t* p = im.row(y) + 3 * x;
      p[0] = (uint8_t)(x * 255 / std::max(1, w - 1));
      p[1] = (uint8_t)(y * 255 / std::max(1, h - 1));
      p[2] = (uint8_t)((x == 0 || y == 0 || x == w - 1 || y == h - 1) ? 200 : 10);
    }
  return im;
}

TEST(ControlUnit, ResizeModesFollowA1111Geometry) {
  // A 100x50 guide to 64x64. Crop and resize: k = max(64/50, 64/100) = 1.28 -> 128x64, crop x 32..95.
  Image g = pattern(100, 50);
  Image crop = resize_guide(g, 64, 64, ResizeMode::CropResize);
  Image full = resize_image(g, 128, 64, ResizeFilter::Lanczos);
  ASSERT_EQ(crop.width, 64);
  ASSERT_EQ(crop.height, 64);
  for (int y = 0; y < 64; y += 7)
    for (int x = 0; x < 64; x += 5)
      for (int c = 0; c < 3; c++) EXPECT_EQ(crop.row(y)[3 * x + c], full.row(y)[3 * (x + 32) + c]);
  // Resize and fill: k = min = 0.64 -> 64x32 at y 16..47; the rest is the median border colour:
  // borders = 2*100 + 2*50 = 300 values per channel; blue is 200 on every border pixel.
  Image fill = resize_guide(g, 64, 64, ResizeMode::ResizeFill);
  Image small = resize_image(g, 64, 32, ResizeFilter::Lanczos);
  std::vector<int> red;
  for (int x = 0; x < 100; x++) red.push_back(x * 255 / 99), red.push_back(x * 255 / 99);
  for (int y = 0; y < 50; y++) red.push_back(0), red.push_back(255);
  std::sort(red.begin(), red.end());
  const int med_r = (red[149] + red[150]) / 2;
  for (int x = 0; x < 64; x++) {
    EXPECT_EQ(fill.row(0)[3 * x + 0], med_r);
    EXPECT_EQ(fill.row(63)[3 * x + 2], 200);
    EXPECT_EQ(fill.row(16)[3 * x + 1], small.row(0)[3 * x + 1]);
    EXPECT_EQ(fill.row(47)[3 * x + 0], small.row(31)[3 * x + 0]);
  }
  // Just resize: stretched (diffusers' PIL Lanczos).
  Image just = resize_guide(g, 64, 64, ResizeMode::JustResize);
  EXPECT_EQ(just.pixels, resize_image(g, 64, 64, ResizeFilter::Lanczos).pixels);
  // Same size: untouched in every mode.
  Image same = pattern(64, 64);
  for (auto m : {ResizeMode::JustResize, ResizeMode::CropResize, ResizeMode::ResizeFill})
    EXPECT_EQ(resize_guide(same, 64, 64, m).pixels, same.pixels);
  EXPECT_EQ(parse_resize_mode("Crop and Resize"), ResizeMode::CropResize);
  EXPECT_EQ(parse_control_mode("My prompt is more important"), ControlMode::Prompt);
  EXPECT_ERROR(parse_resize_mode("stretch"), "unknown resize mode");
  EXPECT_ERROR(parse_control_mode("x"), "unknown control mode");
}

// ---- bad input ------------------------------------------------------------------------------
TEST(ControlNetBadInput, RefusedWithClearErrors) {
  auto sd1 = open_checkpoint(test::fixture("sd1/sd1_ldm.safetensors")).config;
  auto xl = open_checkpoint(test::fixture("sdxl/sdxl_ldm.safetensors")).config;
  // An SD1 ControlNet on SDXL, and the other way round: refused, naming the file.
  EXPECT_ERROR(load_controlnet(test::fixture("controlnet/sd1_cn"), &xl), "sd1_cn: this ControlNet is for SD1.x");
  EXPECT_ERROR(load_controlnet(test::fixture("controlnet/sdxl_cn"), &sd1), "this ControlNet is for SDXL");
  // Single files (no config.json): the family comes from the weights.
  EXPECT_ERROR(load_controlnet(test::fixture("controlnet/sd1_cn_lllyasviel.safetensors"), &xl),
               "sd1_cn_lllyasviel.safetensors: this ControlNet is for SD1.x (cross-attention 64, 2 levels), the "
               "model is SDXL (cross-attention 128, 3 levels)");
  EXPECT_ERROR(load_controlnet(test::fixture("controlnet/sdxl_cn/diffusion_pytorch_model.safetensors"), &sd1),
               "this ControlNet is for SDXL");
  EXPECT_ERROR(load_controlnet(test::fixture("controlnet/nope.safetensors")), "nope.safetensors: file not found");
  // Not a ControlNet at all.
  EXPECT_ERROR(load_controlnet(test::fixture("sd1/ref_unet.safetensors")), "not a ControlNet");
  // Truncated: half of the file.
  std::string dir = test::temp_dir("cn_bad");
  {
    std::ifstream in(test::fixture("controlnet/sd1_cn_lllyasviel.safetensors"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(dir + "/half.safetensors", std::ios::binary).write(bytes.data(), bytes.size() / 2);
    std::ofstream(dir + "/tiny.pth", std::ios::binary).write(bytes.data(), 5);
  }
  EXPECT_ERROR(load_controlnet(dir + "/half.safetensors"), "half.safetensors");
  EXPECT_ERROR(load_controlnet(dir + "/tiny.pth"), "tiny.pth");
  // A folder without config.json.
  EXPECT_ERROR(load_controlnet(dir), "config.json");
  // A tensor no ControlNet layer uses (e.g. a class embedding): refused, not ignored.
  {
    WeightStore w = load_weights(test::fixture("controlnet/sd1_cn/diffusion_pytorch_model.safetensors"));
    w.tensors["class_embedding.linear_1.weight"] = Tensor::zeros({4, 4});
    save_safetensors(dir + "/extra.safetensors", w.tensors);
  }
  EXPECT_ERROR(load_controlnet(dir + "/extra.safetensors"), "extra.safetensors: 1 tensor(s) this ControlNet layout "
                                                            "does not use, e.g. 'class_embedding.linear_1.weight'");

  // Unit settings.
  auto pipe = Pipeline::load(test::fixture("sd1/sd1_ldm.safetensors"));
  GenerateOptions o = base_options(false);
  o.control.push_back(unit("controlnet/sd1_cn", pipe->config(), "controlnet/guide_a.png"));
  o.control[0].start = 0.8, o.control[0].end = 0.3;
  EXPECT_ERROR(pipe->validate(o), "is not before end");
  o.control[0].start = 0.0, o.control[0].end = 1.0;
  o.control[0].strength = 2.5f;
  EXPECT_ERROR(pipe->validate(o), "strength 2.500000 is outside [0, 2]");
  o.control[0].strength = -0.1f;
  EXPECT_ERROR(pipe->validate(o), "outside [0, 2]");
  o.control[0].strength = NAN;
  EXPECT_ERROR(pipe->validate(o), "outside [0, 2]");
  o.control[0].strength = 1.0f;
  o.control[0].guide = Image();
  EXPECT_ERROR(pipe->validate(o), "no guide image");
  // An SDXL ControlNet unit given to the SD1 pipeline (loaded without a base check).
  o.control[0].guide = read_image(test::fixture("controlnet/guide_a.png"), 3);
  o.control[0].controlnet = std::make_shared<ControlNetModel>(load_controlnet(test::fixture("controlnet/sdxl_cn")));
  EXPECT_ERROR(pipe->validate(o), "does not fit the sd1 model");
}

}  // namespace

// ---- CLI ------------------------------------------------------------------------------------
namespace cli {

struct Run {
  int status;
  std::string err;
};

Run easel(const std::string& args) {
  static const std::string errf = test::temp_dir("cn_cli_err") + "/stderr.txt";
  int rc = std::system((std::string(EASEL_BIN) + "/easel " + args + " 2>'" + errf + "' >/dev/null").c_str());
  std::ifstream f(errf);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc), std::string((std::istreambuf_iterator<char>(f)), {})};
}

std::string gen_args(const std::string& out) {
  return "generate -m '" + test::fixture("sd1/sd1_ldm.safetensors") +
         "' -p 'a photo of a cat wearing a hat' -n blurry --cfg-scale 7.5 --steps 4 --seed 1234 --sampler euler "
         "-W 64 -H 64 --precision f32 --no-hash -o '" + out + "' ";
}

std::string cn(const std::string& rest) { return "controlnet:" + test::fixture("controlnet/sd1_cn") + ":" + rest; }

}  // namespace cli

TEST(ControlNetCLI, GenerateMatchesDiffusersAndAppliesPerUnitFlags) {
  const std::string dir = test::temp_dir("cn_cli");
  // One ControlNet: the diffusers reference image.
  cli::Run r = cli::easel(cli::gen_args(dir + "/one.png") + "--control '" + cli::cn(test::fixture("controlnet/guide_a.png")) + ":0.9'");
  ASSERT_EQ(r.status, 0) << r.err;
  WeightStore ref = test::load_ref("controlnet/ref_sd1_one.safetensors");
  test::expect_image_close(read_image(dir + "/one.png", 3), ref.get("image_u8"));
  auto text = read_png_text(dir + "/one.png");
  ASSERT_FALSE(text.empty());
  EXPECT_NE(text[0].second.find("ControlNet 0: \"Module: none, Model: sd1_cn, Weight: 0.9, Resize Mode: Crop and Resize"),
            std::string::npos) << text[0].second;
  // Per-unit flags: --resize-mode before any --control is the default; --control-mode after the first
  // unit is that unit's; --save-guide after the second writes the second guide (80x48 stretched to 64x64).
  r = cli::easel(cli::gen_args(dir + "/two.png") + "--resize-mode just_resize --control '" +
                 cli::cn(test::fixture("controlnet/guide_a.png")) + ":0.6:0:0.8' --control-mode prompt --control '" +
                 cli::cn(test::fixture("controlnet/guide_b_80x48.png")) + ":1.3:0.2:1' --save-guide '" + dir +
                 "/g1.png'");
  ASSERT_EQ(r.status, 0) << r.err;
  text = read_png_text(dir + "/two.png");
  const std::string& p = text[0].second;
  EXPECT_NE(p.find("ControlNet 0: \"Module: none, Model: sd1_cn, Weight: 0.6, Resize Mode: Just Resize, Guidance Start: 0, "
                   "Guidance End: 0.8, Control Mode: My prompt is more important\""),
            std::string::npos) << p;
  EXPECT_NE(p.find("ControlNet 1: \"Module: none, Model: sd1_cn, Weight: 1.3, Resize Mode: Just Resize, Guidance Start: 0.2, "
                   "Guidance End: 1, Control Mode: Balanced\""),
            std::string::npos) << p;
  Image g1 = read_image(dir + "/g1.png", 3);
  EXPECT_EQ(g1.pixels,
            resize_image(read_image(test::fixture("controlnet/guide_b_80x48.png"), 3), 64, 64, ResizeFilter::Lanczos).pixels);
}

TEST(ControlNetCLI, Img2ImgMatchesDiffusers) {
  // StableDiffusionControlNetImg2ImgPipeline: strength 0.6, 5 steps, conditioning scale 1.1, end 0.7.
  const std::string dir = test::temp_dir("cn_cli_i2i");
  std::string args = cli::gen_args(dir + "/i2i.png");
  args.replace(args.find("--steps 4"), 9, "--steps 5");
  cli::Run r = cli::easel(args + "-i '" + test::fixture("controlnet/init_image.png") + "' --strength 0.6 --control '" +
                          cli::cn(test::fixture("controlnet/guide_a.png")) + ":1.1:0:0.7'");
  ASSERT_EQ(r.status, 0) << r.err;
  test::expect_image_close(read_image(dir + "/i2i.png", 3),
                           test::load_ref("controlnet/ref_sd1_img2img.safetensors").get("image_u8"));
}

TEST(ControlNetCLI, PreprocessThenGenerate) {
  // --preprocess NAME:key=value on a photo gives the same guide as `easel preprocess`.
  const std::string dir = test::temp_dir("cn_cli_pp");
  const std::string photo = test::fixture("controlnet/init_image.png");
  cli::Run r = cli::easel(cli::gen_args(dir + "/o.png") + "--control '" + cli::cn(photo) +
                          "' --preprocess canny:low=50,high=120 --preprocess-res 64 --save-guide '" + dir + "/g.png'");
  ASSERT_EQ(r.status, 0) << r.err;
  r = cli::easel("preprocess canny '" + photo + "' -o '" + dir + "/ref.png' --res 64 --low 50 --high 120");
  ASSERT_EQ(r.status, 0) << r.err;
  Image g = read_image(dir + "/g.png", 3), ref = read_image(dir + "/ref.png", 3);
  EXPECT_EQ(g.pixels, ref.pixels);
  EXPECT_NE(read_png_text(dir + "/o.png")[0].second.find("Module: canny"), std::string::npos);
  r = cli::easel(cli::gen_args(dir + "/bad.png") + "--control '" + cli::cn(photo) + "' --preprocess canny:low");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("expected NAME[:key=value,...]"), std::string::npos) << r.err;
}

TEST(ControlNetCLI, AdapterAndControlLoraKinds) {
  const std::string dir = test::temp_dir("cn_cli_kinds");
  const std::string t2i = test::fixture("t2i_adapter");
  // --control t2i: diffusers' StableDiffusionAdapterPipeline image (tests/test_t2i_adapter.cpp's reference).
  cli::Run r = cli::easel(cli::gen_args(dir + "/t2i.png") + "--resize-mode just_resize --control 't2i:" + t2i +
                          "/sd1_adapter:" + t2i + "/guide_80x72.png:0.8'");
  ASSERT_EQ(r.status, 0) << r.err;
  test::expect_image_close(read_image(dir + "/t2i.png", 3),
                           test::load_ref("t2i_adapter/ref_sd1.safetensors").get("image_u8"));
  // --control control_lora on the tiny SDXL model runs (ComfyUI's bias rule; its parity is in test_control_lora).
  r = cli::easel("generate -m '" + test::fixture("sdxl/sdxl_ldm.safetensors") +
                 "' -p 'a cat' -W 64 -H 64 --steps 2 --no-hash -o '" + dir + "/cl.png' --control 'control_lora:" + t2i +
                 "/control_lora_sdxl.safetensors:" + t2i + "/guide_cl.png:0.9'");
  EXPECT_EQ(r.status, 0) << r.err;
  // An SD1 adapter on SDXL: refused, naming the file.
  r = cli::easel("generate -m '" + test::fixture("sdxl/sdxl_ldm.safetensors") + "' -p 'a cat' -W 64 -H 64 --steps 2 -o '" +
                 dir + "/x.png' --control 't2i:" + t2i + "/sd1_adapter:" + t2i + "/guide_cl.png'");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("sd1_adapter"), std::string::npos) << r.err;
}

TEST(ControlNetCLI, BadInputsFailWithClearMessages) {
  const std::string dir = test::temp_dir("cn_cli_bad");
  const std::string out = dir + "/out.png";
  const std::string guide = test::fixture("controlnet/guide_a.png");
  auto expect_fail = [&](const std::string& extra, const std::string& needle) {
    cli::Run r = cli::easel(cli::gen_args(out) + extra);
    EXPECT_EQ(r.status, 1) << extra << "\n" << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << extra << "\nstderr: " << r.err;
    EXPECT_FALSE(std::filesystem::exists(out));
  };
  expect_fail("--control '" + cli::cn(guide) + ":3'", "outside [0, 2]");
  expect_fail("--control '" + cli::cn(guide) + ":1:0.9:0.2'", "is not before end");
  expect_fail("--control 'controlnet:" + test::fixture("controlnet/sdxl_cn") + ":" + guide + "'",
              "sdxl_cn: this ControlNet is for SDXL");
  expect_fail("--control 'controlnet:/nonexistent/cn.safetensors:" + guide + "'", "/nonexistent/cn.safetensors: file not found");
  expect_fail("--control '" + cli::cn("/nonexistent/guide.png") + "'", "/nonexistent/guide.png");
  expect_fail("--control 'lineart:" + test::fixture("controlnet/sd1_cn") + ":" + guide + "'", "KIND controlnet, t2i or control_lora");
  expect_fail("--control 'controlnet:onlyone'", "expected KIND:MODEL:IMAGE");
  expect_fail("--control-mode prompt", "need a --control unit");
  expect_fail("--control '" + cli::cn(guide) + "' --control-mode loud", "unknown control mode 'loud'");
  expect_fail("--control '" + cli::cn(guide) + "' --preprocess nosuch", "nosuch");
  {
    std::ifstream in(test::fixture("controlnet/sd1_cn_lllyasviel.safetensors"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(dir + "/trunc.safetensors", std::ios::binary).write(bytes.data(), bytes.size() - 1000);
  }
  expect_fail("--control 'controlnet:" + dir + "/trunc.safetensors:" + guide + "'", "trunc.safetensors");
}

// ---- C API ----------------------------------------------------------------------------------
extern "C" {
#include "pipeline/easel_c.h"
}

TEST(ControlNetCAPI, AddControlNetMatchesDiffusers) {
  easel_pipeline* p = nullptr;
  ASSERT_EQ(easel_load(test::fixture("sd1/sd1_ldm.safetensors").c_str(), &p), 0) << easel_last_error();
  Image g = read_image(test::fixture("controlnet/guide_a.png"), 3);
  const std::string cn = test::fixture("controlnet/sd1_cn");
  ASSERT_EQ(easel_add_controlnet(p, cn.c_str(), g.pixels.data(), g.width, g.height, 0.9f, 0.0f, 1.0f, 0, 0), 0)
      << easel_last_error();
  easel_generate_params q;
  easel_default_params(&q);
  q.prompt = kPrompt;
  q.negative_prompt = "blurry";
  q.steps = 4;
  q.cfg_scale = 7.5f;
  q.seed = 1234;
  q.sampler = "euler";
  q.width = q.height = 64;
  Image out;
  out.width = out.height = 64, out.channels = 3;
  out.pixels.resize(64 * 64 * 3);
  ASSERT_EQ(easel_generate(p, &q, out.pixels.data()), 0) << easel_last_error();
  test::expect_image_close(out, test::load_ref("controlnet/ref_sd1_one.safetensors").get("image_u8"));
  // Bad inputs: a status and a message naming the problem.
  EXPECT_NE(easel_add_controlnet(p, cn.c_str(), g.pixels.data(), g.width, g.height, 2.5f, 0.0f, 1.0f, 0, 0), 0);
  EXPECT_NE(std::string(easel_last_error()).find("outside [0, 2]"), std::string::npos) << easel_last_error();
  const std::string xl = test::fixture("controlnet/sdxl_cn");
  EXPECT_NE(easel_add_controlnet(p, xl.c_str(), g.pixels.data(), g.width, g.height, 1.0f, 0.0f, 1.0f, 0, 0), 0);
  EXPECT_NE(std::string(easel_last_error()).find("this ControlNet is for SDXL"), std::string::npos);
  EXPECT_NE(easel_add_controlnet(p, cn.c_str(), g.pixels.data(), g.width, g.height, 1.0f, 0.0f, 1.0f, 3, 0), 0);
  EXPECT_EQ(easel_clear_controlnets(p), 0);
  easel_free(p);
}
