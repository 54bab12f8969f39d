// HED soft-edge preprocessors (softedge_hed, softedge_hedsafe, scribble_hed). See hed.h for the references.
// A1111 (scripts/processor.py): resize_image_with_pad(img, res), apply_hed on the padded image, remove_pad; the
// scribble variant thins the cropped soft edges with annotator.util.nms and thresholds them.
#include "preprocess/hed.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <mutex>
#include <tuple>

#include <opencv2/imgproc.hpp>

#include "core/error.h"
#include "preprocess/registry.h"

namespace easel::pp {

void HedNet::load(const WeightStore& w) {
  norm = w.get("norm", {1, 3, 1, 1}).to(DType::F32);
  blocks.clear();
  int64_t in = 3;
  for (int b = 1; b <= 5; b++) {
    const std::string p = "block" + std::to_string(b);
    Block blk;
    const int64_t c = w.get(p + ".convs.0.weight").size(0);
    for (int i = 0; w.has(p + ".convs." + std::to_string(i) + ".weight"); i++) {
      blk.convs.emplace_back();
      blk.convs.back().load(w, p + ".convs." + std::to_string(i), i == 0 ? in : c, c, 3, 1, 1);
    }
    blk.projection.load(w, p + ".projection", c, 1, 1, 1, 0);
    blocks.push_back(std::move(blk));
    in = c;
  }
}

std::vector<Tensor> HedNet::operator()(const Tensor& x) const {
  EASEL_CHECK(x.dim() == 4 && x.size(0) == 1 && x.size(1) == 3, "hed", "input must be [1, 3, H, W], got " + x.str());
  Tensor h = x.clone();  // h = x - norm
  const int64_t n = x.size(2) * x.size(3);
  const float* nm = norm.f32();
  float* hp = h.f32();
  for (int c = 0; c < 3; c++)
    for (int64_t i = 0; i < n; i++) hp[c * n + i] -= nm[c];
  std::vector<Tensor> proj;
  for (size_t b = 0; b < blocks.size(); b++) {
    if (b > 0) {
      if (h.size(2) < 2 || h.size(3) < 2) fail("hed", "input " + x.str() + " is too small for 4 poolings");
      h = ops::max_pool2d(h, 2, 2);
    }
    for (auto& conv : blocks[b].convs) {
      h = conv(h);
      ops::relu_(h);
    }
    proj.push_back(blocks[b].projection(h));
  }
  return proj;
}

std::vector<double> hed_edge(const HedNet& net, const uint8_t* rgb, int H, int W) {
  Tensor x = Tensor::empty({1, 3, H, W});  // rearrange 'h w c -> 1 c h w', float
  float* xp = x.f32();
  const size_t n = (size_t)H * W;
  for (size_t i = 0; i < n; i++)
    for (int c = 0; c < 3; c++) xp[c * n + i] = rgb[3 * i + c];
  const std::vector<Tensor> proj = net(x);
  // cv2.resize(e, (W, H), INTER_LINEAR) per projection; np.mean over the 5 in float32 (sequential sum / 5).
  cv::Mat sum;
  for (const Tensor& p : proj) {
    cv::Mat e((int)p.size(2), (int)p.size(3), CV_32F, const_cast<float*>(p.f32())), r;
    cv::resize(e, r, cv::Size(W, H), 0, 0, cv::INTER_LINEAR);
    if (sum.empty()) sum = r.clone();
    else sum += r;
  }
  std::vector<double> edge(n);
  const float cnt = (float)proj.size();
  const float* s = sum.ptr<float>();
  for (size_t i = 0; i < n; i++) edge[i] = 1.0 / (1.0 + std::exp(-(double)(s[i] / cnt)));
  return edge;
}

namespace {

// (edge * 255).clip(0, 255).astype(uint8), after safe_step(edge) (float32: int(edge * 3) / 2) when safe.
cv::Mat hed_to_u8(const cv::Mat& edge, bool safe) {
  cv::Mat out(edge.size(), CV_8U);
  for (int y = 0; y < edge.rows; y++) {
    const double* s = edge.ptr<double>(y);
    uint8_t* d = out.ptr<uint8_t>(y);
    for (int i = 0; i < edge.cols; i++) {
      double v;
      if (safe) {  // safe_step(x, 2): float32 throughout
        const float q = (float)(int32_t)((float)s[i] * 3.0f) / 2.0f;
        v = (double)(q * 255.0f);
      } else {
        v = s[i] * 255.0;
      }
      v = v < 0 ? 0 : (v > 255 ? 255 : v);
      d[i] = (uint8_t)v;  // astype(uint8) truncates
    }
  }
  return out;
}

// sd-webui-controlnet's scribble from a soft-edge map: nms(x, 127, 3.0), GaussianBlur(sigma 3), > 4 -> 255.
cv::Mat scribble_from_edges(const cv::Mat& edge_u8) {
  // annotator.util.nms(x, 127, 3.0): float32 blur, keep local maxima along 4 directions, threshold.
  cv::Mat x;
  edge_u8.convertTo(x, CV_32F);
  cv::GaussianBlur(x, x, cv::Size(0, 0), 3.0);
  const uint8_t k[4][9] = {{0, 0, 0, 1, 1, 1, 0, 0, 0}, {0, 1, 0, 0, 1, 0, 0, 1, 0},
                           {1, 0, 0, 0, 1, 0, 0, 0, 1}, {0, 0, 1, 0, 1, 0, 1, 0, 0}};
  cv::Mat y = cv::Mat::zeros(x.size(), CV_32F);
  for (auto& f : k) {
    cv::Mat d;
    cv::dilate(x, d, cv::Mat(3, 3, CV_8U, const_cast<uint8_t*>(f)));
    x.copyTo(y, d == x);  // np.putmask(y, dilate(x) == x, x)
  }
  cv::Mat z = cv::Mat::zeros(x.size(), CV_8U);
  z.setTo(255, y > 127);
  cv::Mat b;
  cv::GaussianBlur(z, b, cv::Size(0, 0), 3.0);
  cv::Mat out = cv::Mat::zeros(b.size(), CV_8U);
  out.setTo(255, b > 4);
  return out;
}

namespace fs = std::filesystem;

// name: A1111's module name; legacy: its older name (sd-webui-controlnet's preprocessor_aliases).
PreprocessorInfo hed_info(const std::string& name, const std::string& legacy, const std::string& desc) {
  PreprocessorInfo i;
  i.name = name;
  i.a1111_names = {name, legacy};
  i.description = desc;
  i.weight_files = {"ControlNetHED.pth"};
  i.weights_origin = "lllyasviel/Annotators on Hugging Face (ControlNetHED.pth)";
  return i;
}

// The last weights used stay loaded; reloaded when the file changes.
std::shared_ptr<const HedNet> load_cached(const std::string& file) {
  static std::mutex mu;
  static std::string key;
  static std::shared_ptr<const HedNet> cached;
  std::error_code ec;
  const std::string k = file + "@" + std::to_string(fs::file_size(file, ec)) + ":" +
                        std::to_string(fs::last_write_time(file, ec).time_since_epoch().count());
  std::lock_guard<std::mutex> lock(mu);
  if (cached && key == k) return cached;
  cached.reset();
  auto net = std::make_shared<HedNet>();
  net->load(load_weights(file));
  cached = net, key = k;
  return cached;
}

enum class Mode { Soft, Safe, Scribble };

Fn hed_fn(const PreprocessorInfo& info, Mode mode) {
  return [info, mode](const cv::Mat& rgb, int res, const Params&, const PreprocessRun& run) {
    const auto net = load_cached(find_weights(info, "ControlNetHED.pth", run));
    Padded pd = resize_with_pad(rgb, res);
    std::vector<double> edge = hed_edge(*net, pd.img.ptr<uint8_t>(), pd.img.rows, pd.img.cols);
    cv::Mat e = pd.crop(hed_to_u8(cv::Mat(pd.img.rows, pd.img.cols, CV_64F, edge.data()), mode == Mode::Safe));
    if (mode == Mode::Scribble) e = scribble_from_edges(e);
    cv::Mat out;
    cv::cvtColor(e, out, cv::COLOR_GRAY2RGB);
    return out;
  };
}

}  // namespace

void add_hed(std::vector<Entry>& v) {
  const std::tuple<const char*, const char*, const char*, Mode> entries[] = {
      {"softedge_hed", "hed", "HED soft edges (ControlNetHED.pth), sigmoid of the fused side outputs", Mode::Soft},
      {"softedge_hedsafe", "hed_safe", "HED soft edges quantised by safe_step to 0, 127, 255 (fewer hidden details)",
       Mode::Safe},
      {"scribble_hed", "fake_scribble", "scribble from HED edges: non-maximum suppression, blur, threshold",
       Mode::Scribble}};
  for (auto& [name, legacy, desc, mode] : entries) {
    PreprocessorInfo info = hed_info(name, legacy, desc);
    v.push_back({info, hed_fn(info, mode)});
  }
}

}  // namespace easel::pp
