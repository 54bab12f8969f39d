// T2I-Adapter parity with diffusers 0.42 on tiny adapters (tests/fixtures/t2i_adapter, written by
// tools/fixtures/t2i_adapter.py): full_adapter, light_adapter and full_adapter_xl module outputs (square and odd
// sizes), the TencentARC key layout (torch pickle and safetensors) loading to the same model, the pipeline
// helpers (guide preprocessing, scale / MultiAdapter sum / CFG copies, the conditioning-factor rule, UNet fit
// checks) and bad inputs.
#include <filesystem>
#include <fstream>

#include "common.h"
#include "control/control_unit.h"
#include "control/t2i_adapter.h"
#include "io/diffusers_folder.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "ops/ops.h"
#include "pipeline/pipeline.h"

using namespace easel;

namespace {

namespace fs = std::filesystem;

std::string fx(const std::string& rel) { return test::fixture("t2i_adapter/" + rel); }

// fp32 convolutions in another order than PyTorch's: ~1e-6 of the magnitude.
void expect_features(const std::vector<Tensor>& got, const WeightStore& ref, const std::string& prefix, size_t n) {
  ASSERT_EQ(got.size(), n);
  for (size_t i = 0; i < n; i++) {
    const Tensor& r = ref.get(prefix + std::to_string(i));
    EXPECT_TRUE(test::allclose(got[i], r, 2e-5f * std::max(1.0f, test::max_abs(r)), 1e-4f)) << prefix << i;
  }
}

Tensor u8_to01(const Tensor& u8) {
  Tensor t = Tensor::empty(u8.shape());
  const uint8_t* s = u8.data<uint8_t>();
  for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = (float)s[i] / 255.0f;
  return t;
}

void expect_same_model(const T2IAdapter& a, const T2IAdapter& b) {
  EXPECT_EQ(a.config.adapter_type, b.config.adapter_type);
  EXPECT_EQ(a.config.in_channels, b.config.in_channels);
  EXPECT_EQ(a.config.channels, b.config.channels);
  EXPECT_EQ(a.config.num_res_blocks, b.config.num_res_blocks);
  EXPECT_EQ(a.config.downscale_factor, b.config.downscale_factor);
  ASSERT_EQ(a.body.size(), b.body.size());
}

// Every type: the diffusers folder against the reference features, at both sizes.
void check_module(const std::string& name, const std::string& type, bool sdxl, int64_t total_df) {
  SCOPED_TRACE(name);
  T2IAdapter a = T2IAdapter::load(fx(name));
  EXPECT_EQ(a.config.adapter_type, type);
  EXPECT_EQ(a.format, "diffusers");
  EXPECT_EQ(a.is_sdxl(), sdxl);
  EXPECT_EQ(a.total_downscale_factor(), total_df);
  WeightStore ref = test::load_ref("t2i_adapter/ref_" + name + ".safetensors");
  const size_t n = a.body.size();
  for (int j = 0; j < 2; j++) {
    Tensor x = u8_to01(ref.get("in_u8_" + std::to_string(j)));
    expect_features(a.forward(x), ref, "feat_" + std::to_string(j) + "_", n);
  }
}

}  // namespace

TEST(T2IAdapter, FullMatchesDiffusers) { check_module("full", "full_adapter", false, 64); }
TEST(T2IAdapter, LightMatchesDiffusers) { check_module("light", "light_adapter", false, 64); }
TEST(T2IAdapter, FullXLMatchesDiffusers) { check_module("xl", "full_adapter_xl", true, 32); }

TEST(T2IAdapter, TencentARCLayoutLoadsTheSameModel) {
  struct Case { const char* folder; const char* original; };
  for (const Case& c : {Case{"full", "full_tencentarc.pth"}, Case{"light", "light_tencentarc.safetensors"},
                        Case{"xl", "xl_tencentarc.safetensors"}}) {
    SCOPED_TRACE(c.original);
    T2IAdapter d = T2IAdapter::load(fx(c.folder));
    T2IAdapter o = T2IAdapter::load(fx(c.original));  // no config.json: sizes and type from the shapes
    EXPECT_EQ(o.format, "tencentarc");
    expect_same_model(d, o);
    WeightStore ref = test::load_ref(std::string("t2i_adapter/ref_") + c.folder + ".safetensors");
    Tensor x = u8_to01(ref.get("in_u8_1"));
    std::vector<Tensor> fd = d.forward(x), fo = o.forward(x);
    ASSERT_EQ(fd.size(), fo.size());
    for (size_t i = 0; i < fd.size(); i++) EXPECT_EQ(test::max_abs(ops::add(fd[i], ops::scale(fo[i], -1))), 0.0f);
  }
  // The diffusers weights file alone (no config.json next to it) gives the same config as the folder.
  expect_same_model(T2IAdapter::load(fx("full")), T2IAdapter::load(fx("full/diffusion_pytorch_model.safetensors")));
}

TEST(T2IAdapter, GuidePreprocessingMatchesDiffusers) {
  // diffusers' _preprocess_adapter_image on a gray guide of another size (80x72 -> 64x64 Lanczos, / 255).
  T2IAdapter a = T2IAdapter::load(fx("sd1_adapter"));
  ASSERT_EQ(a.config.in_channels, 1);
  Image guide = read_image(fx("guide_80x72.png"));
  Tensor x = t2i_adapter_input(guide, 64, 64, 1);
  EXPECT_EQ(x.shape(), (Shape{1, 1, 64, 64}));
  expect_features(a.forward(x), test::load_ref("t2i_adapter/ref_sd1_input.safetensors"), "feat_", 2);
  // The control-unit path: the RGB guide resized first, then gray (what the pipeline run used).
  Image g64 = resize_image(guide, 64, 64, ResizeFilter::Lanczos);
  expect_features(a.forward_rgb01(image_to_tensor01(g64)), test::load_ref("t2i_adapter/ref_sd1.safetensors"),
                  "adapter_feat_", 2);
  // A 3-channel adapter takes RGB.
  EXPECT_EQ(t2i_adapter_input(guide, 40, 24, 3).shape(), (Shape{1, 3, 24, 40}));
}

TEST(T2IAdapter, AdapterStateScalesSumsAndCopies) {
  std::vector<Tensor> f1 = {test::ramp({1, 2, 2, 2}, 0.5f), test::ramp({1, 3, 1, 1}, -1.0f)};
  std::vector<Tensor> f2 = {test::ramp({1, 2, 2, 2}, 2.0f), test::ramp({1, 3, 1, 1}, 0.25f)};
  // One adapter: features * scale, then [v] * 2 for CFG.
  std::vector<Tensor> s = t2i_adapter_state({f1}, {0.8f}, 2);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].shape(), (Shape{2, 2, 2, 2}));
  for (int64_t i = 0; i < 8; i++) {
    EXPECT_EQ(s[0].f32()[i], f1[0].f32()[i] * 0.8f);
    EXPECT_EQ(s[0].f32()[8 + i], f1[0].f32()[i] * 0.8f);
  }
  // MultiAdapter: w0 * f0 + w1 * f1, in that order.
  std::vector<Tensor> m = t2i_adapter_state({f1, f2}, {0.6f, 1.3f}, 1);
  for (int64_t i = 0; i < 3; i++) EXPECT_EQ(m[1].f32()[i], f1[1].f32()[i] * 0.6f + f2[1].f32()[i] * 1.3f);
  // Adapters must agree on shapes.
  EXPECT_ERROR(t2i_adapter_state({f1, {f2[0]}}, {1.f, 1.f}, 1), "same number of features");
  EXPECT_ERROR(t2i_adapter_state({f1, {f2[1], f2[0]}}, {1.f, 1.f}, 1), "same downscaling");
  EXPECT_ERROR(t2i_adapter_state({f1}, {1.f, 1.f}, 1), "one scale per adapter");
}

TEST(T2IAdapter, ConditioningFactorRule) {
  // StableDiffusionXLAdapterPipeline: i < int(num_inference_steps * adapter_conditioning_factor).
  // The reference run (5 steps, factor 0.5) passed the features at steps 0 and 1 only.
  WeightStore ref = test::load_ref("t2i_adapter/ref_sdxl.safetensors");
  EXPECT_EQ(ref.metadata.at("adapter_applied"), "[true, true, false, false, false]");
  const bool want[5] = {true, true, false, false, false};
  for (int i = 0; i < 5; i++) EXPECT_EQ(t2i_adapter_active(i, 5, 0.5), want[i]) << i;
  for (int i = 0; i < 5; i++) EXPECT_TRUE(t2i_adapter_active(i, 5, 1.0));
  for (int i = 0; i < 5; i++) EXPECT_FALSE(t2i_adapter_active(i, 5, 0.0));
}

TEST(T2IAdapter, FitsTheUNetOrRefusesClearly) {
  const UNetConfig sd1 = parse_unet_config(test::fixture("sd1/diffusers/unet/config.json"));
  const UNetConfig xl = parse_unet_config(test::fixture("sdxl/diffusers/unet/config.json"));
  T2IAdapter a1 = T2IAdapter::load(fx("sd1_adapter"));
  T2IAdapter ax = T2IAdapter::load(fx("sdxl_adapter"));
  check_t2i_adapter(a1, sd1, 64, 64);
  check_t2i_adapter(ax, xl, 64, 64);
  check_t2i_adapter(ax, xl, 96, 64);
  // The features go exactly where the reference put them (diffusers accepted these runs); the checks agree.
  EXPECT_ERROR(check_t2i_adapter(a1, xl, 64, 64), "(full_adapter, SD1/SD2) does not fit the SDXL UNet");
  EXPECT_ERROR(check_t2i_adapter(ax, sd1, 64, 64), "(full_adapter_xl, SDXL) does not fit the SD1/SD2 UNet");
  EXPECT_ERROR(check_t2i_adapter(ax, xl, 64, 72), "not a multiple of the adapter's downscale factor 16");
  EXPECT_ERROR(a1.forward(Tensor::zeros({1, 1, 60, 64})), "not a multiple");
  EXPECT_ERROR(a1.forward(Tensor::zeros({1, 3, 64, 64})), "guide should be [N, 1, H, W]");
}

TEST(T2IAdapter, BadInputs) {
  const std::string tmp = test::temp_dir("t2i_bad");
  EXPECT_ERROR(T2IAdapter::load(tmp + "/missing.safetensors"), "missing.safetensors");
  // Not an adapter: a Stable Diffusion checkpoint, a ControlNet, a Control-LoRA.
  EXPECT_ERROR(T2IAdapter::load(test::fixture("sd1/sd1_ldm.safetensors")), "not a T2I-Adapter");
  EXPECT_ERROR(T2IAdapter::load(test::fixture("controlnet/sd1_cn/diffusion_pytorch_model.safetensors")),
               "looks like a ControlNet");
  EXPECT_ERROR(T2IAdapter::load(fx("control_lora_sdxl.safetensors")), "it is a Control-LoRA");
  // Truncated file.
  {
    std::ifstream in(fx("light_tencentarc.safetensors"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream o(tmp + "/trunc.safetensors", std::ios::binary);
    o.write(bytes.data(), (std::streamsize)(bytes.size() / 2));
  }
  EXPECT_ERROR(T2IAdapter::load(tmp + "/trunc.safetensors"), "trunc.safetensors");
  // A folder without config.json, a config with an unknown type, a config that does not match the weights.
  fs::create_directories(tmp + "/noconfig");
  EXPECT_ERROR(T2IAdapter::load(tmp + "/noconfig"), "no config.json");
  fs::create_directories(tmp + "/badtype");
  fs::copy_file(fx("full/diffusion_pytorch_model.safetensors"), tmp + "/badtype/diffusion_pytorch_model.safetensors");
  std::ofstream(tmp + "/badtype/config.json") << R"({"_class_name": "T2IAdapter", "adapter_type": "style"})";
  EXPECT_ERROR(T2IAdapter::load(tmp + "/badtype"), "unsupported adapter_type 'style'");
  std::ofstream(tmp + "/badtype/config.json")
      << R"({"_class_name": "T2IAdapter", "adapter_type": "full_adapter", "in_channels": 1, "channels": [8, 16, 16, 16]})";
  EXPECT_ERROR(T2IAdapter::load(tmp + "/badtype"), "has shape");
  std::ofstream(tmp + "/badtype/config.json") << R"({"_class_name": "ControlNetModel"})";
  EXPECT_ERROR(T2IAdapter::load(tmp + "/badtype"), "not a T2IAdapter");
  // Extra tensors (e.g. an original Adapter with skep convs) are refused, not ignored.
  {
    WeightStore w = load_weights(fx("light_tencentarc.safetensors"));
    std::map<std::string, Tensor> t(w.tensors.begin(), w.tensors.end());
    t["body.0.skep.weight"] = test::ramp({4, 4, 1, 1}, 0.1f);
    save_safetensors(tmp + "/extra.safetensors", t);
  }
  EXPECT_ERROR(T2IAdapter::load(tmp + "/extra.safetensors"), "unexpected tensor(s)");
}

// ---- end to end (the control units of control/control_unit.h, as the CLI's --control t2i:...) -------------
namespace {

ControlUnit adapter_unit(const std::string& model, const UNetConfig& unet, float strength, double end = 1.0,
                         const std::string& guide = "guide_80x72.png") {
  auto ad = std::make_shared<T2IAdapter>(T2IAdapter::load(fx(model)));
  check_t2i_adapter(*ad, unet, 64, 64);
  ControlUnit u;
  u.name = fx(model);
  u.adapter = [ad](const Tensor& g01) { return ad->forward_rgb01(g01); };
  u.guide = read_image(fx(guide), 3);
  u.strength = strength;  // adapter_conditioning_scale
  u.end = end;            // adapter_conditioning_factor (SDXL pipeline)
  u.resize_mode = ResizeMode::JustResize;  // diffusers stretches the guide (PIL Lanczos)
  return u;
}

void run_and_compare(const Pipeline& pipe, GenerateOptions o, const std::string& ref_name) {
  test::generate_and_compare(pipe, std::move(o), "t2i_adapter/" + ref_name + ".safetensors");
}

GenerateOptions options(bool sdxl) { return test::tiny_options(sdxl); }

}  // namespace

TEST(T2IAdapterPipeline, SD1MatchesStableDiffusionAdapterPipeline) {
  // Gray full adapter, adapter_conditioning_scale 0.8, guide 80x72 stretched to 64x64.
  auto pipe = Pipeline::load(test::fixture("sd1/sd1_ldm.safetensors"));
  GenerateOptions o = options(false);
  o.control.push_back(adapter_unit("sd1_adapter", pipe->config().unet, 0.8f));
  run_and_compare(*pipe, o, "ref_sd1");
}

TEST(T2IAdapterPipeline, TwoAdaptersMatchMultiAdapter) {
  // MultiAdapter: 0.6 * gray adapter(guide resized) + 1.1 * RGB adapter(64x64 guide).
  auto pipe = Pipeline::load(test::fixture("sd1/sd1_ldm.safetensors"));
  GenerateOptions o = options(false);
  o.control.push_back(adapter_unit("sd1_adapter", pipe->config().unet, 0.6f));
  o.control.push_back(adapter_unit("sd1_adapter_rgb", pipe->config().unet, 1.1f, 1.0, "guide_rgb_64.png"));
  run_and_compare(*pipe, o, "ref_sd1_multi");
}

TEST(T2IAdapterPipeline, SDXLMatchesStableDiffusionXLAdapterPipeline) {
  // full_adapter_xl (its 4th feature goes to the mid block), scale 1.2, adapter_conditioning_factor 0.5 of 5
  // steps: features at steps 0 and 1 only.
  auto pipe = Pipeline::load(test::fixture("sdxl/sdxl_ldm.safetensors"));
  GenerateOptions o = options(true);
  o.control.push_back(adapter_unit("sdxl_adapter", pipe->config().unet, 1.2f, 0.5));
  run_and_compare(*pipe, o, "ref_sdxl");
}
