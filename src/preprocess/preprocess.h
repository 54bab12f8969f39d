// ControlNet preprocessors: turn a photo into the guide image a ControlNet was trained on.
// Classical ones (no weights) run on OpenCV like the reference annotators:
//   sd-webui-controlnet: https://github.com/Mikubill/sd-webui-controlnet
//     scripts/preprocessor/legacy/processor.py (resize_image_with_pad, canny, threshold,
//     scribble_xdog, lineart_standard, shuffle, blur_gaussian, recolor_*), annotator/color,
//     annotator/shuffle
//   controlnet_aux: https://github.com/huggingface/controlnet_aux (util.HWC3, lineart_standard)
// Resizing follows A1111's resize_image_with_pad: the short side is scaled to processor_res
// (INTER_CUBIC up, INTER_AREA down), edge-padded to a multiple of 64 for processing, and the
// padding cropped off, so the guide keeps the photo's aspect ratio at processor_res.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/image.h"

namespace easel {

struct PreprocessParam {
  std::string name;  // key for params / the CLI's --param key=value
  double value;      // default
  double min, max;   // accepted range (inclusive)
  std::string help;
};

struct PreprocessorInfo {
  std::string name;                     // easel's name (`easel preprocess NAME`)
  std::vector<std::string> a1111_names; // sd-webui-controlnet "module" names accepted as aliases
  std::string description;
  std::vector<PreprocessParam> params;
  bool uses_resolution = true;  // false: works at the input size (A1111 hides the slider)
  // Neural preprocessors: the weight files they load (the reference's file names, e.g.
  // "body_pose_model.pth") and where the originals are published. Empty for classical ones.
  std::vector<std::string> weight_files;
  std::string weights_origin;
};

// Per-run inputs beyond the image and parameters.
struct PreprocessRun {
  uint64_t seed = 0;       // `shuffle`: numpy's np.random.seed(seed) stream
  // Neural preprocessors: a weight file, or a directory holding PreprocessorInfo::weight_files.
  // Empty: $EASEL_ANNOTATOR_DIR, then ./models/annotators.
  std::string model_path;
  std::string* json_out = nullptr;  // pose preprocessors: OpenPose-format keypoint JSON when set
};

// Every preprocessor, in listing order.
const std::vector<PreprocessorInfo>& preprocessors();
// By easel name or A1111 module name; throws easel::Error listing the valid names.
const PreprocessorInfo& find_preprocessor(const std::string& name);

// Processor resolution bounds (A1111's "Preprocessor resolution" slider) and the input budget:
// larger inputs are refused before any work (a 10000x10000 photo needs downscaling first).
constexpr int kMinProcessorRes = 64, kMaxProcessorRes = 2048;
constexpr int64_t kMaxPreprocessPixels = int64_t(64) << 20;
// Processing size (short side at processor_res): extreme aspect ratios are refused above this.
constexpr int64_t kMaxProcessPixels = int64_t(16) << 20;

// Runs preprocessor `name` on `in` (gray, RGB or RGBA; RGBA is composited on white like
// HWC3). processor_res: the short side to process at (default 512). params: by name, missing
// ones take their defaults. seed: for `shuffle` (numpy's np.random.seed(seed) stream).
// Returns a 3-channel RGB guide. Errors (easel::Error) name the preprocessor and the bad key,
// listing the valid ones: "[preprocess] canny: unknown parameter 'lo' (valid: low, high)".
Image preprocess(const std::string& name, const Image& in, int processor_res,
                 const std::map<std::string, double>& params, const PreprocessRun& run);
inline Image preprocess(const std::string& name, const Image& in, int processor_res,
                        const std::map<std::string, double>& params, uint64_t seed = 0) {
  PreprocessRun run;
  run.seed = seed;
  return preprocess(name, in, processor_res, params, run);
}

}  // namespace easel
