// Semantic segmentation preprocessor "seg_upernet": UperNet-ConvNeXt trained on ADE20k (transformers'
// UperNetForSemanticSegmentation layout, e.g. https://huggingface.co/openmmlab/upernet-convnext-small), coloured
// with the ADE20k palette that ControlNet v1.1's seg model was trained on (controlnet_aux.util.ade_palette(), the
// palette of sd-webui-controlnet's seg_ufade20k / seg_ofade20k maps).
// Pipeline (tools/fixtures/seg_hed.py is the reference):
//   1. A1111's short-side resize to processor_res (INTER_CUBIC up / INTER_AREA down) without the 64-padding: the
//      image processor resizes to its fixed size anyway, and padding would be segmented and cropped.
//   2. transformers' image processor (SegformerImageProcessor, torchvision backend; preprocessor_config.json when
//      present beside config.json, else its defaults: 512x512, ImageNet mean/std): uint8 antialiased bilinear
//      resize, then (x - 255 mean) / (255 std) in float32.
//   3. the network -> logits [150, 512, 512]; post_process_semantic_segmentation: bilinear (align_corners=False)
//      to the step-1 size and argmax (fused here, so the full-size logits never exist); palette colours.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>

#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "preprocess/registry.h"
#include "preprocess/upernet.h"

namespace easel::pp {

namespace {

namespace fs = std::filesystem;

// controlnet_aux.util.ade_palette(): RGB per ADE20k class (wall, building, sky, floor, tree, ...).
constexpr uint8_t kAdePalette[150][3] = {
    {120, 120, 120}, {180, 120, 120}, {6, 230, 230}, {80, 50, 50}, {4, 200, 3}, {120, 120, 80}, {140, 140, 140}, {204, 5, 255},
    {230, 230, 230}, {4, 250, 7}, {224, 5, 255}, {235, 255, 7}, {150, 5, 61}, {120, 120, 70}, {8, 255, 51}, {255, 6, 82},
    {143, 255, 140}, {204, 255, 4}, {255, 51, 7}, {204, 70, 3}, {0, 102, 200}, {61, 230, 250}, {255, 6, 51}, {11, 102, 255},
    {255, 7, 71}, {255, 9, 224}, {9, 7, 230}, {220, 220, 220}, {255, 9, 92}, {112, 9, 255}, {8, 255, 214}, {7, 255, 224},
    {255, 184, 6}, {10, 255, 71}, {255, 41, 10}, {7, 255, 255}, {224, 255, 8}, {102, 8, 255}, {255, 61, 6}, {255, 194, 7},
    {255, 122, 8}, {0, 255, 20}, {255, 8, 41}, {255, 5, 153}, {6, 51, 255}, {235, 12, 255}, {160, 150, 20}, {0, 163, 255},
    {140, 140, 140}, {250, 10, 15}, {20, 255, 0}, {31, 255, 0}, {255, 31, 0}, {255, 224, 0}, {153, 255, 0}, {0, 0, 255},
    {255, 71, 0}, {0, 235, 255}, {0, 173, 255}, {31, 0, 255}, {11, 200, 200}, {255, 82, 0}, {0, 255, 245}, {0, 61, 255},
    {0, 255, 112}, {0, 255, 133}, {255, 0, 0}, {255, 163, 0}, {255, 102, 0}, {194, 255, 0}, {0, 143, 255}, {51, 255, 0},
    {0, 82, 255}, {0, 255, 41}, {0, 255, 173}, {10, 0, 255}, {173, 255, 0}, {0, 255, 153}, {255, 92, 0}, {255, 0, 255},
    {255, 0, 245}, {255, 0, 102}, {255, 173, 0}, {255, 0, 20}, {255, 184, 184}, {0, 31, 255}, {0, 255, 61}, {0, 71, 255},
    {255, 0, 204}, {0, 255, 194}, {0, 255, 82}, {0, 10, 255}, {0, 112, 255}, {51, 0, 255}, {0, 194, 255}, {0, 122, 255},
    {0, 255, 163}, {255, 153, 0}, {0, 255, 10}, {255, 112, 0}, {143, 255, 0}, {82, 0, 255}, {163, 255, 0}, {255, 235, 0},
    {8, 184, 170}, {133, 0, 255}, {0, 255, 92}, {184, 0, 255}, {255, 0, 31}, {0, 184, 255}, {0, 214, 255}, {255, 0, 112},
    {92, 255, 0}, {0, 224, 255}, {112, 224, 255}, {70, 184, 160}, {163, 0, 255}, {153, 0, 255}, {71, 255, 0}, {255, 0, 163},
    {255, 204, 0}, {255, 0, 143}, {0, 255, 235}, {133, 255, 0}, {255, 0, 235}, {245, 0, 255}, {255, 0, 122}, {255, 245, 0},
    {10, 190, 212}, {214, 255, 0}, {0, 204, 255}, {20, 0, 255}, {255, 255, 0}, {0, 153, 255}, {0, 41, 255}, {0, 255, 204},
    {41, 0, 255}, {41, 255, 0}, {173, 0, 255}, {0, 245, 255}, {71, 0, 255}, {122, 0, 255}, {0, 255, 184}, {0, 92, 255},
    {184, 255, 0}, {0, 133, 255}, {255, 214, 0}, {25, 194, 194}, {102, 255, 0}, {92, 0, 255},
};

PreprocessorInfo seg_info() {
  PreprocessorInfo i;
  i.name = "seg_upernet";
  i.description =
      "ADE20k segmentation, UperNet-ConvNeXt (transformers layout), ADE20k palette; the closest A1111 module is "
      "seg_ufade20k (UniFormer-UperNet), whose colours it shares";
  i.weight_files = {"config.json", "model.safetensors"};  // pytorch_model.bin is accepted instead
  i.weights_origin = "openmmlab/upernet-convnext-small on Hugging Face (-tiny, -base, -large and -xlarge also load)";
  return i;
}

struct Files {
  std::string weights, config, processor;  // config / processor: "" when absent
};

// The weights: run.model_path when it is a weight file, else model.safetensors or pytorch_model.bin found like the
// other preprocessors' files. config.json and preprocessor_config.json are optional and read beside the weights.
Files find_files(const PreprocessorInfo& info, const PreprocessRun& run) {
  Files f;
  std::error_code ec;
  const std::string name = fs::path(run.model_path).filename().string();
  if (!run.model_path.empty() && fs::is_regular_file(run.model_path, ec) && name != "config.json" &&
      name != "preprocessor_config.json") {
    f.weights = run.model_path;
  } else {
    try {
      f.weights = find_weights(info, "model.safetensors", run);
    } catch (const Error& e) {
      try {
        f.weights = find_weights(info, "pytorch_model.bin", run);
      } catch (const Error&) {
        throw Error(std::string(e.what()) + " (pytorch_model.bin was not found either)");
      }
    }
  }
  const fs::path dir = fs::path(f.weights).parent_path();
  if (fs::is_regular_file(dir / "config.json", ec)) f.config = (dir / "config.json").string();
  if (fs::is_regular_file(dir / "preprocessor_config.json", ec))
    f.processor = (dir / "preprocessor_config.json").string();
  return f;
}

struct Loaded {
  UperNet net;
  SegImageProcessor proc;
};

std::string stamp(const std::string& file) {
  if (file.empty()) return "-";
  std::error_code ec;
  auto t = fs::last_write_time(file, ec).time_since_epoch().count();
  return file + "@" + std::to_string(fs::file_size(file, ec)) + ":" + std::to_string(t);
}

// The last model used stays loaded (weights memory-mapped); reloaded when a file changes.
std::shared_ptr<const Loaded> load_cached(const Files& f) {
  static std::mutex mu;
  static std::string key;
  static std::shared_ptr<const Loaded> cached;
  const std::string k = stamp(f.weights) + "|" + stamp(f.config) + "|" + stamp(f.processor);
  std::lock_guard<std::mutex> lock(mu);
  if (cached && key == k) return cached;
  cached.reset();
  auto m = std::make_shared<Loaded>();
  m->net.load(load_weights(f.weights), f.config);
  m->proc = SegImageProcessor::load(f.processor);
  if (m->net.config.num_labels > 150)
    fail("preprocess", "seg_upernet: " + f.weights + " has " + std::to_string(m->net.config.num_labels) +
                           " labels; the ADE20k palette colours 150");
  cached = m, key = k;
  return cached;
}

cv::Mat run_seg(const cv::Mat& rgb, int res, const Params&, const PreprocessRun& run) {
  static const PreprocessorInfo info = seg_info();
  const auto m = load_cached(find_files(info, run));
  Padded pd = resize_with_pad(rgb, res);  // short side -> res; the padding is dropped below
  cv::Mat img = pd.crop(pd.img);          // CV_8UC3 RGB, continuous
  const Tensor pixel_values = m->proc(img.ptr<uint8_t>(), img.rows, img.cols);
  const Tensor logits = m->net(pixel_values);  // [1, L, proc h, proc w]
  const std::vector<int32_t> seg = segment_argmax(logits, img.rows, img.cols);
  cv::Mat out(img.rows, img.cols, CV_8UC3);
  uint8_t* d = out.ptr<uint8_t>();
  for (size_t i = 0; i < seg.size(); i++)
    for (int c = 0; c < 3; c++) d[3 * i + c] = kAdePalette[seg[i]][c];
  return out;
}

}  // namespace

void add_segmentation(std::vector<Entry>& v) { v.push_back({seg_info(), run_seg}); }

}  // namespace easel::pp
