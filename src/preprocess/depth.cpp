// Depth preprocessors: Depth Anything V2 and MiDaS DPT-Hybrid (depth and normal map), as sd-webui-controlnet runs them:
//   scripts/preprocessor/legacy/processor.py (resize_image_with_pad, remove_pad; depth_anything_v2 with
//   colored=False, midas, midas_normal), annotator/depth_anything_v2.py (DepthAnythingV2Detector),
//   annotator/midas/__init__.py (apply_midas; the same as controlnet_aux 0.0.10 MidasDetector after its resize).
// The networks: depth_anything.h, dpt_hybrid.h. Loaded models are cached (the last one of each kind).
// numpy evaluates a * b + c as two roundings: no FMA contraction in the 8-bit conversions below.
#pragma GCC optimize("fp-contract=off")

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <mutex>

#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "preprocess/depth_anything.h"
#include "preprocess/dpt_hybrid.h"
#include "preprocess/registry.h"

namespace easel::pp {

namespace {

namespace fs = std::filesystem;

// The last model of each kind, keyed by file, size and modification time.
template <class M>
std::shared_ptr<const M> cached(const std::string& path) {
  static std::mutex mu;
  static std::string key;
  static std::shared_ptr<const M> model;
  std::error_code ec;
  const fs::path p(path);
  const fs::path f = fs::is_directory(p, ec) ? p / "model.safetensors" : p;
  const std::string k = f.string() + "|" + std::to_string(fs::file_size(f, ec)) + "|" +
                        std::to_string(fs::last_write_time(f, ec).time_since_epoch().count());
  std::lock_guard<std::mutex> lk(mu);
  if (!model || key != k) {
    model.reset();  // free the previous one first
    model = std::make_shared<const M>(M::load(path));
    key = k;
  }
  return model;
}

// The first of info.weight_files found (see find_weights); a file given directly is used as it is, a directory
// holding a transformers model.safetensors is used as the folder.
std::string weight_path(const PreprocessorInfo& info, const PreprocessRun& run) {
  std::error_code ec;
  if (!run.model_path.empty() && fs::is_regular_file(run.model_path, ec)) return run.model_path;
  std::string first;
  for (auto& f : info.weight_files) {
    try {
      std::string p = find_weights(info, f, run);
      return f == "model.safetensors" ? fs::path(p).parent_path().string() : p;
    } catch (const Error& e) {
      if (first.empty()) first = e.what();
    }
  }
  std::string names;
  for (auto& f : info.weight_files) names += (names.empty() ? "" : ", ") + f;
  fail("preprocess", info.name + ": no weight file found (expected one of: " + names + "). " + first);
}

cv::Mat gray3(const cv::Mat& g) {
  cv::Mat out;
  cv::cvtColor(g, out, cv::COLOR_GRAY2RGB);
  return out;
}

// (d - min) / (max - min) * 255, truncated to u8 (torch float32 then numpy astype), as [h, w] CV_8U.
cv::Mat minmax_u8(const float* d, int h, int w) {
  const int64_t n = (int64_t)h * w;
  const auto [lo, hi] = std::minmax_element(d, d + n);
  const float mn = *lo, den = *hi - *lo;
  cv::Mat out(h, w, CV_8U, cv::Scalar(0));
  if (!(den > 0.f) || !std::isfinite(den)) return out;  // flat map (the reference divides by zero)
  for (int64_t i = 0; i < n; i++) {
    const float v = (d[i] - mn) / den * 255.0f;
    out.data[i] = (uint8_t)std::min(std::max(v, 0.f), 255.f);
  }
  return out;
}

// ---- Depth Anything V2 (annotator/depth_anything_v2.py DepthAnythingV2Detector.__call__)

cv::Mat depth_anything_v2(const PreprocessorInfo& info, const cv::Mat& rgb, int res, const PreprocessRun& run) {
  auto model = cached<DepthAnythingV2>(weight_path(info, run));
  Padded pd = resize_with_pad(rgb, res);  // continuous (copyMakeBorder allocates)
  const int H = pd.img.rows, W = pd.img.cols;
  Tensor d = model->forward(depth_anything_input(pd.img.ptr<uint8_t>(), H, W));  // [1, h, w]
  d = ops::interpolate_bilinear(d.reshape({1, 1, d.size(1), d.size(2)}), H, W, /*align_corners=*/false);
  return gray3(pd.crop(minmax_u8(d.f32(), H, W)));
}

// ---- MiDaS (annotator/midas apply_midas)

struct MidasOut {
  cv::Mat depth, normal;  // padded size; CV_8U, CV_8UC3 (normal only when asked)
};

MidasOut midas(const PreprocessorInfo& info, const cv::Mat& img, const PreprocessRun& run, bool normal, double bg_th,
               double a = 2.0 * M_PI) {
  auto model = cached<DptHybrid>(weight_path(info, run));
  const int H = img.rows, W = img.cols;
  Tensor x = Tensor::empty({1, 3, H, W});  // image / 127.5 - 1 (float32), NCHW
  for (int y = 0; y < H; y++) {
    const uint8_t* s = img.ptr<uint8_t>(y);
    for (int xx = 0; xx < W; xx++)
      for (int c = 0; c < 3; c++) x.f32()[((int64_t)c * H + y) * W + xx] = float(s[3 * xx + c]) / 127.5f - 1.0f;
  }
  Tensor d = model->forward(x);  // [1, H, W]
  const float* dp = d.f32();
  MidasOut o;
  // depth_pt -= min; depth_pt /= max; (depth_pt * 255).clip(0, 255).astype(uint8)
  const auto [lo, hi] = std::minmax_element(dp, dp + (int64_t)H * W);
  const float mn = *lo, mx = *hi - *lo;
  cv::Mat dn(H, W, CV_32F);
  for (int64_t i = 0; i < (int64_t)H * W; i++) dn.ptr<float>()[i] = (mx > 0.f) ? (dp[i] - mn) / mx : 0.f;
  o.depth = cv::Mat(H, W, CV_8U);
  for (int64_t i = 0; i < (int64_t)H * W; i++)
    o.depth.data[i] = (uint8_t)std::min(std::max(dn.ptr<float>()[i] * 255.0f, 0.f), 255.f);
  if (normal) {  // Sobel of the raw depth; background (normalised depth < bg_th) flat; [x, y, z] -> RGB (z, y, x)
    cv::Mat raw(H, W, CV_32F, const_cast<float*>(dp)), gx, gy;
    cv::Sobel(raw, gx, CV_32F, 1, 0, 3);
    cv::Sobel(raw, gy, CV_32F, 0, 1, 3);
    const float z = float(a), th = float(bg_th);
    o.normal = cv::Mat(H, W, CV_8UC3);
    auto u8 = [](float v) { return (uint8_t)std::min(std::max(v * 127.5f + 127.5f, 0.f), 255.f); };
    for (int64_t i = 0; i < (int64_t)H * W; i++) {
      float nx = gx.ptr<float>()[i], ny = gy.ptr<float>()[i], nz = z;
      if (dn.ptr<float>()[i] < th) nx = ny = 0.f;
      const float len = std::sqrt(nx * nx + ny * ny + nz * nz);
      uint8_t* p = o.normal.data + 3 * i;
      p[0] = u8(nz / len), p[1] = u8(ny / len), p[2] = u8(nx / len);
    }
  }
  return o;
}

const char* kDaOrigin =
    "depth-anything/Depth-Anything-V2-Small (Base, Large): depth_anything_v2_vit{s,b,l}.pth; "
    "MackinationsAi/Depth-Anything-V2_Safetensors (A1111's download); or a transformers folder "
    "(config.json + model.safetensors) from depth-anything/Depth-Anything-V2-Small-hf";

}  // namespace

void add_depth(std::vector<Entry>& v) {
  PreprocessorInfo da{"depth_anything_v2", {"depth_anything_v2"},
                      "Depth Anything V2 relative depth (any size: vits/vitb/vitl; original .pth/.safetensors or "
                      "transformers folder), min-max normalised gray",
                      {}};
  da.weight_files = {"depth_anything_v2_vitl.safetensors", "depth_anything_v2_vitl.pth", "depth_anything_v2_vitb.pth",
                     "depth_anything_v2_vits.pth", "model.safetensors"};
  da.weights_origin = kDaOrigin;
  v.push_back({da, [info = da](const cv::Mat& rgb, int res, const Params&, const PreprocessRun& run) {
                 return depth_anything_v2(info, rgb, res, run);
               }});

  PreprocessorInfo md{"depth_midas", {"depth_midas", "depth"}, "MiDaS v3 DPT-Hybrid depth (ControlNet depth models)", {}};
  md.weight_files = {"dpt_hybrid-midas-501f0c75.pt"};
  md.weights_origin = "lllyasviel/Annotators (or lllyasviel/ControlNet annotator/ckpts)";
  v.push_back({md, [info = md](const cv::Mat& rgb, int res, const Params&, const PreprocessRun& run) {
                 Padded pd = resize_with_pad(rgb, res);
                 return gray3(pd.crop(midas(info, pd.img, run, false, 0.0).depth));
               }});

  PreprocessorInfo nm{"normal_midas", {"normal_midas"}, "normal map from MiDaS DPT-Hybrid depth (Sobel, flat background)",
                      {{"bg_threshold", 0.4, 0.0, 1.0, "normalised depth below this is background (flat normal)"}}};
  nm.weight_files = md.weight_files;
  nm.weights_origin = md.weights_origin;
  v.push_back({nm, [info = nm](const cv::Mat& rgb, int res, const Params& p, const PreprocessRun& run) {
                 Padded pd = resize_with_pad(rgb, res);
                 return pd.crop(midas(info, pd.img, run, true, p.at("bg_threshold")).normal);
               }});
}

}  // namespace easel::pp
