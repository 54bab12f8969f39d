// Preprocessor registry, parameter validation and dispatch. Names, parameter defaults and
// ranges follow sd-webui-controlnet's module list (legacy/preprocessor_compiled.py) where the
// module exists there; extra parameters come from controlnet_aux (lineart_standard).
#include "preprocess/preprocess.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>

#include <opencv2/core.hpp>

#include "core/error.h"
#include "preprocess/registry.h"

namespace easel {

namespace {

using pp::Entry;
using pp::Fn;

template <class F>
Fn wrap(F f) {
  return [f](const cv::Mat& m, int res, const pp::Params& p, const PreprocessRun&) { return f(m, res, p); };
}

const std::vector<Entry>& registry() {
  static const std::vector<Entry> r = [] {
    std::vector<Entry> v;
    auto add = [&](PreprocessorInfo info, Fn fn) { v.push_back({std::move(info), std::move(fn)}); };
    add({"canny", {"canny"}, "Canny edges (cv2.Canny) on the image resized to processor_res",
         {{"low", 100, 1, 255, "low hysteresis threshold"}, {"high", 200, 1, 255, "high hysteresis threshold"}}},
        wrap(pp::canny));
    add({"blur", {"blur_gaussian"}, "Gaussian blur of the resized image (tile/blur models)",
         {{"sigma", 9.0, 0.01, 64.0, "Gaussian sigma in pixels"}}},
        wrap(pp::blur));
    add({"invert", {"invert"}, "255 - image, at the input size (white background, black lines)", {}, false},
        wrap(pp::invert));
    add({"grayscale", {}, "gray (cv2 RGB2GRAY) of the image resized to processor_res", {}},
        wrap(pp::grayscale));
    add({"recolor_luminance", {"recolor_luminance"}, "luminance (Lab L) with gamma, at the input size (recolor models)",
         {{"gamma", 1.0, 0.1, 2.0, "gamma correction"}}, false},
        wrap(pp::recolor_luminance));
    add({"recolor_intensity", {"recolor_intensity"}, "intensity (HSV V) with gamma, at the input size (recolor models)",
         {{"gamma", 1.0, 0.1, 2.0, "gamma correction"}}, false},
        wrap(pp::recolor_intensity));
    add({"gradient", {}, "Sobel gradient magnitude of the gray image resized to processor_res",
         {{"ksize", 3, 1, 7, "Sobel aperture (1, 3, 5 or 7)"},
          {"scale", 0.0, 0.0, 16.0, "0: min-max normalise to 0..255; else magnitude * scale, clipped"}}},
        wrap(pp::gradient));
    add({"tile_resample", {"tile_resample"}, "tile: downsample by rate (INTER_AREA), at the input size",
         {{"rate", 1.0, 1.0, 8.0, "down sampling rate (below 1.1: unchanged)"}}, false},
        wrap(pp::tile_resample));
    add({"threshold", {"threshold"}, "binary: white where every channel is above the threshold",
         {{"threshold", 127, 0, 255, "binarization threshold"}}},
        wrap(pp::threshold));
    add({"scribble_xdog", {"scribble_xdog"}, "XDoG scribble: thresholded difference of Gaussians",
         {{"threshold", 32, 1, 64, "XDoG threshold"}}},
        wrap(pp::scribble_xdog));
    add({"lineart_standard", {"lineart_standard"}, "lines from white background (blur - image), normalised",
         {{"sigma", 6.0, 0.1, 64.0, "Gaussian sigma"},
          {"intensity_threshold", 8, 0, 255, "values above this set the normalising median"}}},
        wrap(pp::lineart_standard));
    add({"canny_aux", {}, "controlnet_aux CannyDetector: sides rounded to multiples of 64 (LANCZOS4 up), no padding",
         {{"low", 100, 1, 255, "low hysteresis threshold"}, {"high", 200, 1, 255, "high hysteresis threshold"}}},
        wrap(pp::canny_aux));
    add({"lineart_standard_aux", {}, "controlnet_aux LineartStandardDetector: 64-multiple resize, back to the input size",
         {{"sigma", 6.0, 0.1, 64.0, "Gaussian sigma"},
          {"intensity_threshold", 8, 0, 255, "values above this set the normalising median"}}},
        wrap(pp::lineart_standard_aux));
    add({"shuffle", {"shuffle"}, "content shuffle: the image warped by seeded smooth random flow",
         {{"f", 256, 1, 1024, "noise cell size in pixels"}}},
        [](const cv::Mat& m, int res, const pp::Params& p, const PreprocessRun& run) {
          return pp::shuffle(m, res, p, run.seed);
        });
    add({"color", {"t2ia_color_grid"}, "colour grid: 64x64-pixel cells of the average colour (T2I-Adapter color)", {}},
        wrap(pp::color));
    pp::add_openpose(v);
    pp::add_depth(v);
    pp::add_segmentation(v);
    pp::add_hed(v);
    return v;
  }();
  return r;
}

std::string valid_names() {
  std::string s;
  for (auto& e : registry()) s += (s.empty() ? "" : ", ") + e.info.name;
  return s;
}

const Entry& find_entry(const std::string& name) {
  for (auto& e : registry()) {
    if (e.info.name == name) return e;
    for (auto& a : e.info.a1111_names)
      if (a == name) return e;
  }
  fail("preprocess", "unknown preprocessor '" + name + "' (valid: " + valid_names() + ")");
}

std::string fmt(double x) {
  std::ostringstream o;
  o << x;
  return o.str();
}

// HWC3: gray -> 3 channels, RGBA composited on white in float32 (x * a + 255 * (1 - a), truncated).
cv::Mat hwc3(const Image& in) {
  cv::Mat out(in.height, in.width, CV_8UC3);
  for (int y = 0; y < in.height; y++) {
    const uint8_t* s = in.row(y);
    uint8_t* d = out.ptr<uint8_t>(y);
    for (int x = 0; x < in.width; x++) {
      if (in.channels == 3) {
        d[3 * x] = s[3 * x], d[3 * x + 1] = s[3 * x + 1], d[3 * x + 2] = s[3 * x + 2];
      } else if (in.channels == 1) {
        d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = s[x];
      } else {
        const float a = s[4 * x + 3] / 255.0f;
        for (int c = 0; c < 3; c++) {
          float v = (float)s[4 * x + c] * a + 255.0f * (1.0f - a);
          d[3 * x + c] = (uint8_t)std::min(std::max(v, 0.f), 255.f);
        }
      }
    }
  }
  return out;
}

Image to_image(const cv::Mat& m) {
  EASEL_CHECK(m.type() == CV_8UC3 && m.isContinuous(), "preprocess", "internal: guide is not 8-bit RGB");
  Image out;
  out.width = m.cols, out.height = m.rows, out.channels = 3;
  out.pixels.assign(m.data, m.data + (size_t)m.rows * m.cols * 3);
  return out;
}

}  // namespace

std::string pp::find_weights(const PreprocessorInfo& who, const std::string& file, const PreprocessRun& run) {
  namespace fs = std::filesystem;
  std::vector<std::string> dirs;
  std::error_code ec;
  if (!run.model_path.empty()) {
    const fs::path mp(run.model_path);
    if (fs::is_regular_file(mp, ec)) {
      if (mp.filename() == file || who.weight_files.size() <= 1) return run.model_path;
      dirs.push_back(mp.parent_path().empty() ? "." : mp.parent_path().string());  // siblings (hand/face next to body)
    } else if (fs::is_directory(mp, ec)) {
      dirs.push_back(run.model_path);
    } else {
      fail("preprocess", who.name + ": weight path '" + run.model_path + "' does not exist (expected " + file +
                             " or a directory holding it)");
    }
  } else {
    if (const char* env = std::getenv("EASEL_ANNOTATOR_DIR"); env && *env) dirs.push_back(env);
    dirs.push_back("models/annotators");
  }
  std::string searched;
  for (auto& d : dirs) {
    const fs::path f = fs::path(d) / file;
    if (fs::is_regular_file(f, ec)) return f.string();
    searched += (searched.empty() ? "" : ", ") + d;
  }
  fail("preprocess", who.name + ": weight file " + file + " not found (searched: " + searched + ")" +
                         (who.weights_origin.empty() ? "" : "; the original is " + who.weights_origin) +
                         ". Pass it (or its directory) with --model in easel preprocess, --annotator-dir in easel generate, or set EASEL_ANNOTATOR_DIR");
}

const std::vector<PreprocessorInfo>& preprocessors() {
  static const std::vector<PreprocessorInfo> v = [] {
    std::vector<PreprocessorInfo> out;
    for (auto& e : registry()) out.push_back(e.info);
    return out;
  }();
  return v;
}

const PreprocessorInfo& find_preprocessor(const std::string& name) { return find_entry(name).info; }

Image preprocess(const std::string& name, const Image& in, int processor_res,
                 const std::map<std::string, double>& params, const PreprocessRun& run) {
  const Entry& e = find_entry(name);
  const std::string& nm = e.info.name;
  // Parameters: known names, finite, in range; defaults for the rest.
  pp::Params p;
  for (auto& d : e.info.params) p[d.name] = d.value;
  for (auto& [k, v] : params) {
    auto it = std::find_if(e.info.params.begin(), e.info.params.end(), [&](auto& d) { return d.name == k; });
    if (it == e.info.params.end()) {
      std::string valid;
      for (auto& d : e.info.params) valid += (valid.empty() ? "" : ", ") + d.name;
      fail("preprocess", nm + ": unknown parameter '" + k + "' (valid: " + (valid.empty() ? "none" : valid) + ")");
    }
    if (!std::isfinite(v) || v < it->min || v > it->max)
      fail("preprocess", nm + ": parameter '" + k + "' = " + fmt(v) + " is out of range [" + fmt(it->min) + ", " +
                             fmt(it->max) + "]");
    p[k] = v;
  }
  if (nm == "gradient") {
    const int k = (int)p["ksize"];
    if (k != p["ksize"] || (k != 1 && k != 3 && k != 5 && k != 7))
      fail("preprocess", "gradient: parameter 'ksize' = " + fmt(p["ksize"]) + " must be 1, 3, 5 or 7");
  }
  if (processor_res < kMinProcessorRes || processor_res > kMaxProcessorRes)
    fail("preprocess", nm + ": processor resolution " + std::to_string(processor_res) + " is out of range [" +
                           std::to_string(kMinProcessorRes) + ", " + std::to_string(kMaxProcessorRes) + "]");
  // The input: size budget first (before touching pixels), then consistency.
  if (in.width <= 0 || in.height <= 0)
    fail("preprocess", nm + ": empty input image (" + std::to_string(in.width) + "x" + std::to_string(in.height) + ")");
  const int64_t npix = (int64_t)in.width * in.height;
  if (npix > kMaxPreprocessPixels)
    fail("preprocess", nm + ": input image " + std::to_string(in.width) + "x" + std::to_string(in.height) + " (" +
                           std::to_string(npix) + " pixels) is over the " + std::to_string(kMaxPreprocessPixels) +
                           "-pixel budget; downscale it first");
  if ((in.channels != 1 && in.channels != 3 && in.channels != 4) ||
      in.pixels.size() != (size_t)npix * in.channels)
    fail("preprocess", nm + ": malformed input image (" + std::to_string(in.width) + "x" + std::to_string(in.height) +
                           "x" + std::to_string(in.channels) + ", " + std::to_string(in.pixels.size()) + " bytes)");
  if (e.info.uses_resolution) {  // bounded work and memory: the size the image is resized to
    const double k = double(processor_res) / std::min(in.width, in.height);
    const double tw = std::round(in.width * k), th = std::round(in.height * k);
    if (tw * th > (double)kMaxProcessPixels)
      fail("preprocess", nm + ": processing size " + std::to_string((long long)tw) + "x" + std::to_string((long long)th) + " (resolution " +
                             std::to_string(processor_res) + " on the short side of " + std::to_string(in.width) +
                             "x" + std::to_string(in.height) + ") is over the " + std::to_string(kMaxProcessPixels) +
                             "-pixel budget; lower the resolution or crop the image");
  }
  try {
    cv::Mat out = e.fn(hwc3(in), processor_res, p, run);
    if (!out.isContinuous()) out = out.clone();
    return to_image(out);
  } catch (const cv::Exception& ex) {
    fail("preprocess", nm + ": OpenCV error: " + ex.what());
  }
}

}  // namespace easel
