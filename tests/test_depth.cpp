// Depth preprocessors (src/preprocess/depth*.cpp, dpt*.cpp) against tools/fixtures/depth.py: tiny random Depth Anything V2
// (transformers folder and the original .pth layout of the same weights) and MiDaS DPT-Hybrid (controlnet_aux's
// DPTDepthModel at reduced widths, original .pt layout), network outputs at fp32 tolerance and the A1111 pipelines'
// 8-bit guides on a real photo.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "common.h"
#include "io/image.h"
#include "preprocess/depth_anything.h"
#include "preprocess/dpt_hybrid.h"
#include "preprocess/preprocess.h"

using namespace easel;
using easel::test::allclose;
using easel::test::fixture;
using easel::test::max_abs;

namespace {

const WeightStore& refs() {
  static const WeightStore r = test::load_ref("depth/refs.safetensors");
  return r;
}

Tensor ref(const std::string& k) { return refs().get(k).to(DType::F32); }

std::string da_pth() { return fixture("depth/depth_anything_v2_vits.pth"); }
std::string da_hf() { return fixture("depth/da_hf"); }
std::string midas_pt() { return fixture("depth/dpt_hybrid-midas-501f0c75.pt"); }

// fp32 through ~20 layers of random weights (measured: max |diff| 4e-6..6e-6 on outputs up to 1.5..6.6, about 1e-6
// of the range): tolerance 2e-5 of the range.
::testing::AssertionResult close(const Tensor& a, const Tensor& b) { return allclose(a, b, 2e-5f * max_abs(b), 1e-4f); }

Image photo() { return read_image(fixture("preprocess/inputs/chelsea.png"), 0); }

PreprocessRun with_model(const std::string& path) {
  PreprocessRun r;
  r.model_path = path;
  return r;
}

struct Diff {
  int max = 0, n = 0;
};
// Against a reference PNG (gray references are compared with every channel of the guide).
Diff compare(const Image& out, const std::string& rel) {
  Image r = read_image(fixture(rel), 3);
  if (const char* d = std::getenv("EASEL_DEPTH_DUMP"))  // debugging: the outputs beside the references
    write_png(std::string(d) + "/" + std::filesystem::path(rel).filename().string(), out);
  EXPECT_EQ(out.width, r.width);
  EXPECT_EQ(out.height, r.height);
  EXPECT_EQ(out.channels, 3);
  Diff d;
  if (out.width != r.width || out.height != r.height) return {999, -1};
  for (size_t i = 0; i < out.pixels.size(); i++) {
    const int e = std::abs(int(out.pixels[i]) - int(r.pixels[i]));
    d.max = std::max(d.max, e);
    d.n += e > 0;
  }
  std::printf("[ depth    ] %s: max |diff| %d, %d of %zu values differ\n", rel.c_str(), d.max, d.n, out.pixels.size());
  return d;
}

size_t distinct(const Image& im) { return std::set<uint8_t>(im.pixels.begin(), im.pixels.end()).size(); }

}  // namespace

TEST(DepthAnything, LoadsBothLayouts) {
  auto a = pp::DepthAnythingV2::load(da_pth()), b = pp::DepthAnythingV2::load(da_hf());
  EXPECT_EQ(a.layout, "original");
  EXPECT_EQ(b.layout, "transformers");
  EXPECT_EQ(a.C, 64);
  EXPECT_EQ(a.heads, 1);
  EXPECT_EQ(a.blocks.size(), 4u);
  EXPECT_EQ(a.taps, (std::array<int, 4>{0, 1, 2, 3}));
  EXPECT_EQ(b.taps, a.taps);  // from config.json's out_indices [1, 2, 3, 4]
  EXPECT_FALSE(a.blocks[0].ls1.to_vector().empty());
  // The table maps every tensor: same values under both layouts.
  EXPECT_TRUE(allclose(a.blocks[3].qkv.weight, b.blocks[3].qkv.weight, 0, 0));
  EXPECT_TRUE(allclose(a.neck.refinenet[3].rcu1.conv2.weight, b.neck.refinenet[3].rcu1.conv2.weight, 0, 0));
  EXPECT_TRUE(allclose(a.head.conv3.bias, b.head.conv3.bias, 0, 0));
}

TEST(DepthAnything, NetworkMatchesReference) {
  auto orig = pp::DepthAnythingV2::load(da_pth()), hf = pp::DepthAnythingV2::load(da_hf());
  // 42x70: a 3x5 grid, position embeddings interpolated (each layout as its reference does).
  Tensor x = ref("da_x");
  Tensor yo = orig.forward(x), yh = hf.forward(x);
  ASSERT_EQ(yo.shape(), (Shape{1, 42, 70}));
  EXPECT_TRUE(close(yo.reshape({42, 70}), ref("da_x_orig")));
  EXPECT_TRUE(close(yh.reshape({42, 70}), ref("da_x_hf")));
  // The two interpolations differ (the references by ~1% of the range here): each layout keeps its own.
  EXPECT_GT(test::max_abs(ops::add(ref("da_x_orig"), ops::scale(ref("da_x_hf"), -1.f))), 1e-3f);
  // 56x56: the native 4x4 grid, no interpolation: both layouts give identical outputs.
  Tensor s = ref("da_sq");
  Tensor so = orig.forward(s), sh = hf.forward(s);
  EXPECT_TRUE(allclose(so, sh, 0, 0));
  EXPECT_TRUE(close(so.reshape({56, 56}), ref("da_sq_orig")));
}

TEST(DepthAnything, InputMatchesAnnotator) {
  // The A1111 network input (channel swap, /255, cubic resize to 518 x multiple of 14, ImageNet normalisation),
  // sampled every 16 pixels.
  Image padded = read_image(fixture("depth/chelsea_padded.png"), 3);  // resize_with_pad(chelsea, 128): 192x128
  Tensor x = pp::depth_anything_input(padded.pixels.data(), padded.height, padded.width);
  Tensor shape = refs().get("da_pipe_input_shape");
  ASSERT_EQ(x.shape(), (Shape{shape.data<int64_t>()[0], shape.data<int64_t>()[1], shape.data<int64_t>()[2],
                              shape.data<int64_t>()[3]}));
  const int64_t H = x.size(2), W = x.size(3);
  Tensor sub = ref("da_pipe_input_sub");
  const int64_t sh = sub.size(1), sw = sub.size(2);
  Tensor mine = Tensor::empty({3, sh, sw});
  for (int64_t c = 0; c < 3; c++)
    for (int64_t y = 0; y < sh; y++)
      for (int64_t xx = 0; xx < sw; xx++) mine.f32()[(c * sh + y) * sw + xx] = x.f32()[(c * H + y * 16) * W + xx * 16];
  EXPECT_TRUE(allclose(mine, sub, 1e-6f, 1e-6f));
}

TEST(DptHybrid, NetworkMatchesReference) {
  auto m = pp::DptHybrid::load(midas_pt());
  EXPECT_EQ(m.C, 128);
  EXPECT_EQ(m.heads, 2);
  EXPECT_EQ(m.taps, (std::array<int, 2>{0, 3}));
  EXPECT_EQ(m.stages.size(), 3u);
  Tensor y = m.forward(ref("midas_x"));
  ASSERT_EQ(y.shape(), (Shape{1, 32, 64}));
  EXPECT_TRUE(close(y.reshape({32, 64}), ref("midas_x_out")));
}

// The 8-bit guides: same image as the reference up to 1-level steps where the reference's float value lies within
// fp32 rounding of an integer (astype(uint8) truncates, so 2e-5 relative noise can move a pixel across a level).
TEST(DepthPreprocess, DepthAnythingPipelineBothLayouts) {
  for (auto [path, png] : {std::pair{da_pth(), "depth/da_orig_chelsea.png"}, std::pair{da_hf(), "depth/da_hf_chelsea.png"}}) {
    Image out = preprocess("depth_anything_v2", photo(), 128, {}, with_model(path));
    Diff d = compare(out, png);
    EXPECT_LE(d.max, 1) << png;
    EXPECT_LE(d.n, (int)out.pixels.size() / 1000) << png << ": " << d.n << " values differ";
    EXPECT_GT(distinct(out), 100u);
  }
}

TEST(DepthPreprocess, MidasPipelines) {
  Image depth = preprocess("depth_midas", photo(), 128, {}, with_model(midas_pt()));
  Diff d = compare(depth, "depth/midas_depth_chelsea.png");
  EXPECT_LE(d.max, 1);
  EXPECT_LE(d.n, (int)depth.pixels.size() / 1000) << d.n << " values differ";
  EXPECT_GT(distinct(depth), 100u);
  Image alias = preprocess("depth", photo(), 128, {}, with_model(midas_pt()));
  EXPECT_EQ(alias.pixels, depth.pixels);
  Image normal = preprocess("normal_midas", photo(), 128, {{"bg_threshold", 0.4}}, with_model(midas_pt()));
  Diff n = compare(normal, "depth/midas_normal_chelsea.png");
  EXPECT_LE(n.max, 1);
  EXPECT_LE(n.n, (int)normal.pixels.size() / 1000) << n.n << " values differ";
}

TEST(DepthPreprocess, WeightLookupAndErrors) {
  // Missing weights: the message names the expected file(s) and where they come from.
  const std::string empty = test::temp_dir("depth_empty");
  EXPECT_ERROR(preprocess("depth_midas", photo(), 128, {}, with_model(empty)), "dpt_hybrid-midas-501f0c75.pt");
  EXPECT_ERROR(preprocess("depth_midas", photo(), 128, {}, with_model(empty)), "lllyasviel/Annotators");
  EXPECT_ERROR(preprocess("depth_anything_v2", photo(), 128, {}, with_model(empty)), "depth_anything_v2_vits.pth");
  EXPECT_ERROR(preprocess("depth_anything_v2", photo(), 128, {}, with_model(empty)), "Depth-Anything-V2-Small");
  // A directory holding the original file by its name is found.
  const std::string dir = test::temp_dir("depth_dir");
  std::filesystem::copy_file(da_pth(), dir + "/depth_anything_v2_vits.pth");
  Image a = preprocess("depth_anything_v2", photo(), 128, {}, with_model(dir));
  EXPECT_LE(compare(a, "depth/da_orig_chelsea.png").max, 1);
  // Wrong files: the other depth model, a UNet.
  EXPECT_ERROR(preprocess("depth_anything_v2", photo(), 128, {}, with_model(midas_pt())), "MiDaS DPT-Hybrid checkpoint");
  EXPECT_ERROR(preprocess("depth_midas", photo(), 128, {}, with_model(da_pth())), "Depth Anything V2 checkpoint");
  const std::string unet = fixture("sd1/diffusers/unet/diffusion_pytorch_model.safetensors");
  EXPECT_ERROR(preprocess("depth_midas", photo(), 128, {}, with_model(unet)), "not a MiDaS DPT-Hybrid checkpoint");
  EXPECT_ERROR(preprocess("depth_anything_v2", photo(), 128, {}, with_model(unet)), "not a Depth Anything V2 checkpoint");
  const std::string metric = test::temp_dir("depth_metric") + "/depth_anything_v2_metric_hypersim_vits.pth";
  std::filesystem::copy_file(da_pth(), metric);
  EXPECT_ERROR(preprocess("depth_anything_v2", photo(), 128, {}, with_model(metric)), "metric depth models are not supported");
  EXPECT_ERROR(preprocess("normal_midas", photo(), 128, {{"bg_threshold", 2.0}}, with_model(midas_pt())), "out of range");
}

TEST(DepthPreprocess, OnePixelImage) {
  // 1x1: resized to the processor resolution like any photo (a flat 128x128 input; the networks' position
  // embeddings and zero padding still shape the map), no error.
  Image one;
  one.width = one.height = 1, one.channels = 3;
  one.pixels = {120, 80, 40};
  for (const char* name : {"depth_anything_v2", "depth_midas"}) {
    Image out = preprocess(name, one, 128, {}, with_model(std::string(name) == "depth_midas" ? midas_pt() : da_pth()));
    EXPECT_EQ(out.width, 128);
    EXPECT_EQ(out.height, 128);
  }
}
