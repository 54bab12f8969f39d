// HED soft edges (src/preprocess/hed.cpp) against controlnet_aux's ControlNetHED_Apache2 / sd-webui-controlnet's
// hed, hed_safe and scribble_hed on a real photo, with a narrowed random ControlNetHED.pth (same keys as
// lllyasviel/Annotators' file; tests/fixtures/hed, written by tools/fixtures/seg_hed.py).
// Tolerances: projections and the float edge in fp32 (oneDNN vs PyTorch convolution order). The guides come from
// truncating edge * 255 (or safe_step's int(edge * 3)) and thresholds; an fp32 difference of ~1e-6 can move a
// value across an integer boundary, so the soft edge may be 1 level off at a few pixels; the quantised and
// thresholded guides may differ only where the float edge sits within that error of a boundary (the generator
// reports the smallest distances in tests/fixtures/hed/manifest.json: ~4e-5 levels and ~6e-6).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>

#include "common.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "preprocess/hed.h"
#include "preprocess/preprocess.h"

using namespace easel;
using easel::test::allclose;
using easel::test::fixture;
using easel::test::max_abs;

namespace {

Image photo() { return read_image(fixture("preprocess/inputs/chelsea.png"), 0); }

pp::HedNet load_net() {
  pp::HedNet net;
  net.load(load_weights(fixture("hed/ControlNetHED.pth")));
  return net;
}

Image run(const std::string& name, const std::string& model, const Image& in, int res = 128) {
  PreprocessRun r;
  r.model_path = model;
  return preprocess(name, in, res, {}, r);
}

// {max |diff|, pixels that differ}
std::pair<int, int> compare(const Image& a, const Image& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.width != b.width || a.height != b.height || a.channels != b.channels) return {999, -1};
  int m = 0, n = 0;
  for (size_t i = 0; i < a.pixels.size(); i++) {
    const int d = std::abs(int(a.pixels[i]) - int(b.pixels[i]));
    m = std::max(m, d);
    n += d > 0;
  }
  return {m, n};
}

}  // namespace

TEST(Hed, WidthsFromWeights) {
  pp::HedNet net = load_net();
  ASSERT_EQ(net.blocks.size(), 5u);
  const int64_t widths[5] = {4, 8, 12, 16, 16};
  const size_t layers[5] = {2, 2, 3, 3, 3};
  for (int b = 0; b < 5; b++) {
    EXPECT_EQ(net.blocks[b].convs.size(), layers[b]);
    EXPECT_EQ(net.blocks[b].convs[0].weight.size(0), widths[b]);
  }
}

TEST(Hed, NetworkMatchesReference) {
  pp::HedNet net = load_net();
  WeightStore ref = test::load_ref("hed/ref.safetensors");
  const Tensor& padded = ref.get("padded");  // u8 [128, 192, 3]: A1111's resize_image_with_pad output
  const int H = (int)padded.size(0), W = (int)padded.size(1);
  const uint8_t* px = padded.data<uint8_t>();
  Tensor x = Tensor::empty({1, 3, H, W});
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < H * W; i++) x.f32()[c * H * W + i] = px[3 * i + c];
  std::vector<Tensor> proj = net(x);
  ASSERT_EQ(proj.size(), 5u);
  for (int i = 0; i < 5; i++) {
    const Tensor& r = ref.get("projection" + std::to_string(i + 1));
    EXPECT_TRUE(allclose(proj[i], r, 1e-5f * max_abs(r), 1e-4f)) << "projection" << i + 1;
  }
  std::vector<double> edge = pp::hed_edge(net, px, H, W);
  const Tensor& re = ref.get("edge");  // f32 [128, 192]
  Tensor ours = Tensor::empty({H, W});
  for (int i = 0; i < H * W; i++) ours.f32()[i] = (float)edge[i];
  EXPECT_TRUE(allclose(ours, re, 2e-6f, 1e-5f));
}

TEST(Hed, HalfPrecisionWeights) {
  // lllyasviel's ControlNetHED.pth stores f16 tensors, which HEDdetector casts to f32 (.float()): f16 weights must
  // give what their f32 values give.
  WeightStore w = load_weights(fixture("hed/ControlNetHED.pth"));
  std::map<std::string, Tensor> half, rounded;
  for (auto& [k, t] : w.tensors) half[k] = t.to(DType::F16), rounded[k] = half[k].to(DType::F32);
  const std::string d = test::temp_dir("hed_f16");
  save_safetensors(d + "/half.safetensors", half, {});
  save_safetensors(d + "/rounded.safetensors", rounded, {});
  pp::HedNet a, b;
  a.load(load_weights(d + "/half.safetensors"));
  b.load(load_weights(d + "/rounded.safetensors"));
  EXPECT_EQ(a.blocks[0].convs[0].weight.dtype(), DType::F16);
  Tensor x = test::ramp({1, 3, 64, 96}, 10.0f);
  for (int64_t i = 0; i < x.numel(); i++) x.f32()[i] = std::fmod(x.f32()[i] * 37.0f, 255.0f);
  std::vector<Tensor> pa = a(x), pb = b(x);
  for (int i = 0; i < 5; i++) EXPECT_TRUE(allclose(pa[i], pb[i], 1e-5f * max_abs(pb[i]), 1e-4f)) << i;
}

TEST(Hed, GuidesMatchA1111) {
  const std::string model = fixture("hed/ControlNetHED.pth");
  const int npix = 128 * 171;
  {
    auto [m, n] = compare(run("softedge_hed", model, photo()), read_image(fixture("hed/softedge_hed.png"), 3));
    EXPECT_LE(m, 1);
    EXPECT_LE(n, 3 * npix / 1000);  // 1-level flips at truncation boundaries only
  }
  for (auto name : {"softedge_hedsafe", "scribble_hed"}) {
    auto [m, n] = compare(run(name, model, photo()), read_image(fixture(std::string("hed/") + name + ".png"), 3));
    EXPECT_LE(n, 3 * 4) << name;  // a handful of boundary pixels at most (none expected)
  }
  // the A1111 module names resolve to the same entries
  EXPECT_EQ(find_preprocessor("softedge_hed").weight_files, (std::vector<std::string>{"ControlNetHED.pth"}));
  EXPECT_EQ(find_preprocessor("scribble_hed").name, "scribble_hed");
  EXPECT_EQ(find_preprocessor("hed").name, "softedge_hed");  // sd-webui-controlnet's older names
  EXPECT_EQ(find_preprocessor("hed_safe").name, "softedge_hedsafe");
  EXPECT_EQ(find_preprocessor("fake_scribble").name, "scribble_hed");
}

TEST(Hed, BadInputs) {
  const std::string empty = test::temp_dir("hed_empty");
  EXPECT_ERROR(run("softedge_hed", empty, photo()), "ControlNetHED.pth");
  EXPECT_ERROR(run("softedge_hed", empty, photo()), "lllyasviel/Annotators");
  // a wrong file: the segmentation model's weights
  EXPECT_ERROR(run("softedge_hed", fixture("seg/upernet/model.safetensors"), photo()), "'norm'");
  // 1x1: upscaled to the processor resolution, padded to 64
  Image one;
  one.width = one.height = 1, one.channels = 3, one.pixels = {10, 200, 30};
  for (auto name : {"softedge_hed", "softedge_hedsafe", "scribble_hed"}) {
    Image g = run(name, fixture("hed/ControlNetHED.pth"), one, 64);
    EXPECT_EQ(g.width, 64);
    EXPECT_EQ(g.height, 64);
  }
}
