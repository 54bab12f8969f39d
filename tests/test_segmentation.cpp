// seg_upernet (src/preprocess/segmentation.cpp, upernet.cpp, convnext.cpp) against transformers'
// UperNetForSemanticSegmentation + SegformerImageProcessor on a tiny random model with the real architecture and
// key names (tests/fixtures/seg, written by tools/fixtures/seg_hed.py), on a real photo.
// Tolerances: the network is compared in fp32 (oneDNN vs PyTorch accumulation order: ~1e-6 relative per op over
// ~10 layers); the preprocessing is integer arithmetic and must match exactly; the class maps must be identical
// (the generator checks that every pixel's top-2 logit margin, >= 1.9e-4, is far above the fp32 error).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common.h"
#include "io/image.h"
#include "preprocess/preprocess.h"
#include "preprocess/upernet.h"

using namespace easel;
using easel::pp::UperNet;
using easel::test::allclose;
using easel::test::fixture;
using easel::test::max_abs;
namespace fs = std::filesystem;

namespace {

const char* kPhoto = "preprocess/inputs/chelsea.png";

UperNet load_net() {
  UperNet net;
  net.load(load_weights(fixture("seg/upernet/model.safetensors")), fixture("seg/upernet/config.json"));
  return net;
}

Image photo() { return read_image(fixture(kPhoto), 0); }

// Pixels that differ between two RGB images of the same size (-1: sizes differ).
int differing(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height || a.channels != b.channels) return -1;
  int n = 0;
  for (size_t i = 0; i < a.pixels.size(); i += a.channels)
    n += !std::equal(&a.pixels[i], &a.pixels[i] + a.channels, &b.pixels[i]);
  return n;
}

std::string folder_with_processor_64() {
  const std::string d = test::temp_dir("seg64");
  for (auto f : {"model.safetensors", "config.json"}) fs::copy_file(fixture("seg/upernet/") + f, d + "/" + f);
  fs::copy_file(fixture("seg/preprocessor_config_64.json"), d + "/preprocessor_config.json");
  return d;
}

Image run(const std::string& model_path, const Image& in, int res = 128) {
  PreprocessRun r;
  r.model_path = model_path;
  return preprocess("seg_upernet", in, res, {}, r);
}

void write_text(const std::string& path, const std::string& s) { std::ofstream(path) << s; }

}  // namespace

TEST(Segmentation, ConfigFromWeights) {
  UperNet net = load_net();
  EXPECT_EQ(net.backbone.hidden_sizes, (std::vector<int64_t>{8, 16, 24, 32}));
  EXPECT_EQ(net.backbone.depths, (std::vector<int>{1, 1, 2, 1}));
  EXPECT_EQ(net.config.hidden_size, 16);
  EXPECT_EQ(net.config.num_labels, 150);
  EXPECT_EQ(net.config.pool_scales, (std::vector<int>{1, 2, 3, 6}));
}

TEST(Segmentation, NetworkMatchesTransformers) {
  UperNet net = load_net();
  WeightStore ref = test::load_ref("seg/ref.safetensors");
  const Tensor& pv = ref.get("pixel_values");  // [1, 3, 64, 64]
  std::vector<Tensor> feats = net.features(pv);
  ASSERT_EQ(feats.size(), 4u);
  for (int i = 0; i < 4; i++) {
    const Tensor& r = ref.get("feature" + std::to_string(i));
    EXPECT_TRUE(allclose(feats[i], r, 1e-5f * max_abs(r), 1e-4f)) << "feature" << i;
  }
  Tensor head = net.decode_head(feats);
  const Tensor& rh = ref.get("decode_logits");  // [1, 150, 16, 16]
  EXPECT_TRUE(allclose(head, rh, 1e-5f * max_abs(rh), 1e-4f));
  Tensor logits = net(pv);  // [1, 150, 64, 64]
  ASSERT_EQ(logits.shape(), (Shape{1, 150, 64, 64}));
  const Tensor& rl = ref.get("logits_c8");
  EXPECT_TRUE(allclose(logits.slice0(0, 1).reshape({150, 64 * 64}).slice0(0, 8).reshape({1, 8, 64, 64}), rl,
                       1e-5f * max_abs(rl), 1e-4f));
  // argmax at the resized photo's size: the reference class map
  const Tensor& seg = ref.get("seg64");  // i32 [128, 171]
  std::vector<int32_t> ours = pp::segment_argmax(logits, (int)seg.size(0), (int)seg.size(1));
  const int32_t* rs = seg.data<int32_t>();
  int diff = 0;
  std::set<int32_t> classes;
  for (size_t i = 0; i < ours.size(); i++) diff += ours[i] != rs[i], classes.insert(rs[i]);
  EXPECT_EQ(diff, 0);
  EXPECT_GE(classes.size(), 4u);  // a non-trivial map
}

TEST(Segmentation, ImageProcessorMatchesTorchvision) {
  // The processor's uint8 antialiased resize and normalisation of the A1111-resized photo (the short-side resize
  // itself is the classical preprocessors' resize_with_pad, checked by GuideMatchesReference).
  WeightStore ref = test::load_ref("seg/ref.safetensors");
  const Tensor& resized = ref.get("resized");  // u8 [128, 171, 3]
  auto proc = pp::SegImageProcessor::load(fixture("seg/preprocessor_config_64.json"));
  EXPECT_EQ(proc.height, 64);
  Tensor pv = proc(resized.data<uint8_t>(), (int)resized.size(0), (int)resized.size(1));
  // one uint8 level is 1 / (255 * 0.229) = 0.017: any resize difference shows
  EXPECT_TRUE(allclose(pv, ref.get("pixel_values"), 2e-6f, 0));
  // upscaling and the 512 default go through the same kernel
  auto dflt = pp::SegImageProcessor::load("");
  EXPECT_EQ(dflt.height, 512);
  EXPECT_EQ(dflt(resized.data<uint8_t>(), 128, 171).shape(), (Shape{1, 3, 512, 512}));
}

TEST(Segmentation, AntialiasedResizeMatchesTorch) {
  // torchvision's resize(uint8, bilinear, antialias=True) of the resized photo: up, down and mixed
  WeightStore ref = test::load_ref("seg/ref.safetensors");
  const Tensor& src = ref.get("resized");  // u8 [128, 171, 3]
  for (auto [h, w] : {std::pair{512, 512}, {200, 150}, {64, 64}, {97, 300}}) {
    const std::string name = std::to_string(h) + "x" + std::to_string(w);
    Image r = read_image(fixture("seg/resize_" + name + ".png"), 3);
    std::vector<uint8_t> ours =
        pp::resize_bilinear_aa_u8(src.data<uint8_t>(), (int)src.size(0), (int)src.size(1), h, w);
    ASSERT_EQ(r.pixels.size(), ours.size()) << name;
    int diff = 0;
    for (size_t i = 0; i < ours.size(); i++) diff += ours[i] != r.pixels[i];
    EXPECT_EQ(diff, 0) << name;
  }
}

TEST(Segmentation, GuideMatchesReference) {
  // processor size 64 (preprocessor_config.json beside the weights), and the default 512
  Image g64 = run(folder_with_processor_64(), photo());
  Image r64 = read_image(fixture("seg/guide_size64.png"), 3);
  EXPECT_EQ(g64.width, 171);
  EXPECT_EQ(g64.height, 128);
  EXPECT_EQ(differing(g64, r64), 0);
  Image g512 = run(fixture("seg/upernet"), photo());
  EXPECT_EQ(differing(g512, read_image(fixture("seg/guide_size512.png"), 3)), 0);
  // the weight file itself (config.json found beside it), and pytorch_model.bin
  EXPECT_EQ(differing(run(fixture("seg/upernet/model.safetensors"), photo()), g512), 0);
  EXPECT_EQ(differing(run(fixture("seg/upernet_bin"), photo()), g512), 0);
  // every colour is an ADE20k palette entry (wall, building, ... are never black)
  std::set<uint32_t> colours;
  for (size_t i = 0; i < g512.pixels.size(); i += 3)
    colours.insert(g512.pixels[i] << 16 | g512.pixels[i + 1] << 8 | g512.pixels[i + 2]);
  EXPECT_GE(colours.size(), 4u);
  EXPECT_EQ(colours.count(0), 0u);
}

TEST(Segmentation, Registered) {
  const PreprocessorInfo& i = find_preprocessor("seg_upernet");
  EXPECT_EQ(i.weight_files, (std::vector<std::string>{"config.json", "model.safetensors"}));
  EXPECT_NE(i.weights_origin.find("openmmlab/upernet-convnext"), std::string::npos);
}

TEST(Segmentation, BadInputs) {
  // missing weights: the message names the expected file and where it comes from
  const std::string empty = test::temp_dir("seg_empty");
  EXPECT_ERROR(run(empty, photo()), "model.safetensors");
  EXPECT_ERROR(run(empty, photo()), "openmmlab/upernet-convnext");
  // a wrong file: HED's weights, and a file that holds no weights
  EXPECT_ERROR(run(fixture("hed/ControlNetHED.pth"), photo()), "backbone.embeddings.patch_embeddings.weight");
  const std::string d = test::temp_dir("seg_bad");
  write_text(d + "/notes.txt", "not a checkpoint");
  EXPECT_ERROR(run(d + "/notes.txt", photo()), "notes.txt");
  // config.json disagreeing with the weights
  const std::string c = test::temp_dir("seg_cfg");
  fs::copy_file(fixture("seg/upernet/model.safetensors"), c + "/model.safetensors");
  write_text(c + "/config.json", R"({"backbone_config": {"model_type": "convnext", "depths": [3, 3, 9, 3]}})");
  EXPECT_ERROR(run(c, photo()), "depths");
  write_text(c + "/config.json", "{}");
  write_text(c + "/preprocessor_config.json", R"({"resample": 3, "size": {"height": 64, "width": 64}})");
  EXPECT_ERROR(run(c, photo()), "resample");
  // a 1x1 image is upscaled to the processor resolution (the convolutions' zero padding may still vary the map)
  Image one;
  one.width = one.height = 1, one.channels = 3, one.pixels = {200, 30, 90};
  Image g = run(fixture("seg/upernet"), one, 64);
  EXPECT_EQ(g.width, 64);
  EXPECT_EQ(g.height, 64);
  std::set<uint32_t> colours;
  for (size_t i = 0; i < g.pixels.size(); i += 3)
    colours.insert(g.pixels[i] << 16 | g.pixels[i + 1] << 8 | g.pixels[i + 2]);
  EXPECT_EQ(colours.count(0), 0u);
}
