// UperNet decode head on a ConvNeXt backbone (transformers UperNetForSemanticSegmentation). See upernet.h.
#include "preprocess/upernet.h"

#include <algorithm>
#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"

namespace easel::pp {

void UperNetConvModule::load(const WeightStore& w, const std::string& prefix, int64_t in, int64_t out, int k) {
  conv_weight = w.get(nn::join(prefix, "conv.weight"), {out, in, k, k});
  conv_bias = w.get_opt(nn::join(prefix, "conv.bias"), {out});
  const std::string bn = nn::join(prefix, "batch_norm");
  bn_weight = w.get(bn + ".weight", {out});
  bn_bias = w.get(bn + ".bias", {out});
  bn_mean = w.get(bn + ".running_mean", {out});
  bn_var = w.get(bn + ".running_var", {out});
  pad = k / 2;
}

Tensor UperNetConvModule::operator()(const Tensor& x) const {
  Tensor y = ops::conv2d_ex(x, conv_weight, conv_bias, ops::ConvParams::same(1, pad));
  y = ops::batch_norm(y, bn_mean, bn_var, bn_weight, bn_bias, 1e-5f);
  ops::relu_(y);
  return y;
}

namespace {

using json = nlohmann::json;

json read_json(const std::string& file) { return read_json_object(file, "upernet"); }

Tensor up(const Tensor& x, int64_t h, int64_t w) {
  if (x.size(2) == h && x.size(3) == w) return x;  // PyTorch copies; same values
  return ops::interpolate_bilinear(x, h, w, /*align_corners=*/false);
}

}  // namespace

void UperNet::load(const WeightStore& w, const std::string& config_json) {
  backbone.load(w, "backbone");
  const auto& hs = backbone.hidden_sizes;
  config = UperNetConfig{};
  if (!config_json.empty()) {
    const json j = read_json(config_json);
    auto bad = [&](const std::string& what) { fail("upernet", config_json + ": " + what); };
    try {
      if (j.contains("pool_scales") && !j["pool_scales"].is_null())
        config.pool_scales = j["pool_scales"].get<std::vector<int>>();
      if (j.contains("backbone_config") && j["backbone_config"].is_object()) {
        const json& b = j["backbone_config"];
        if (b.contains("model_type") && b["model_type"].is_string() && b["model_type"] != "convnext")
          bad("backbone model_type '" + b["model_type"].get<std::string>() + "' is not supported (only convnext)");
        if (b.contains("hidden_sizes") && b["hidden_sizes"].get<std::vector<int64_t>>() != hs)
          bad("backbone_config.hidden_sizes disagree with the weights' stage widths");
        if (b.contains("depths") && b["depths"].get<std::vector<int>>() != backbone.depths)
          bad("backbone_config.depths disagree with the weights' layer counts");
        if (b.contains("hidden_act") && b["hidden_act"] != "gelu")
          bad("backbone hidden_act '" + b["hidden_act"].get<std::string>() + "' is not supported (only gelu)");
        if (b.contains("out_features") && b["out_features"].is_array()) {
          std::vector<std::string> want;
          for (size_t s = 0; s < hs.size(); s++) want.push_back("stage" + std::to_string(s + 1));
          if (b["out_features"].get<std::vector<std::string>>() != want)
            bad("backbone out_features must be every stage (stage1..stage" + std::to_string(hs.size()) + ")");
        }
      }
    } catch (const json::exception& e) {
      bad(std::string("unexpected field type (") + e.what() + ")");
    }
    if (config.pool_scales.empty() || std::any_of(config.pool_scales.begin(), config.pool_scales.end(),
                                                  [](int s) { return s < 1 || s > 64; }))
      bad("pool_scales must be 1..64");
  }
  const std::string dh = "decode_head.";
  const Tensor& cw = w.get(dh + "classifier.weight");
  if (cw.dim() != 4 || cw.size(2) != 1 || cw.size(3) != 1)
    fail("upernet", w.source + ": decode_head.classifier.weight has shape " + shape_str(cw.shape()) +
                        ", expected [labels, hidden, 1, 1]");
  config.num_labels = cw.size(0);
  config.hidden_size = cw.size(1);
  const int64_t C = config.hidden_size;
  classifier_weight = cw;
  classifier_bias = w.get(dh + "classifier.bias", {config.num_labels});
  if (w.has(dh + "psp_modules." + std::to_string(config.pool_scales.size()) + ".1.conv.weight"))
    fail("upernet", w.source + ": more PSP modules than pool_scales (" + std::to_string(config.pool_scales.size()) +
                        ") in " + (config_json.empty() ? "the default config" : config_json));
  psp_modules.resize(config.pool_scales.size());
  for (size_t i = 0; i < psp_modules.size(); i++)
    psp_modules[i].load(w, dh + "psp_modules." + std::to_string(i) + ".1", hs.back(), C, 1);
  bottleneck.load(w, dh + "bottleneck", hs.back() + (int64_t)psp_modules.size() * C, C, 3);
  lateral_convs.resize(hs.size() - 1);
  fpn_convs.resize(hs.size() - 1);
  for (size_t i = 0; i + 1 < hs.size(); i++) {
    lateral_convs[i].load(w, dh + "lateral_convs." + std::to_string(i), hs[i], C, 1);
    fpn_convs[i].load(w, dh + "fpn_convs." + std::to_string(i), C, C, 3);
  }
  fpn_bottleneck.load(w, dh + "fpn_bottleneck", (int64_t)hs.size() * C, C, 3);
}

Tensor UperNet::decode_head(const std::vector<Tensor>& feats) const {
  const size_t n = feats.size();
  std::vector<Tensor> lat(n);
  for (size_t i = 0; i + 1 < n; i++) lat[i] = lateral_convs[i](feats[i]);  // [N, C, h_i, w_i]
  {  // PSP on the coarsest map
    const Tensor& x = feats.back();
    std::vector<Tensor> cat{x};
    for (size_t i = 0; i < psp_modules.size(); i++) {
      const int s = config.pool_scales[i];
      cat.push_back(up(psp_modules[i](ops::adaptive_avg_pool2d(x, s, s)), x.size(2), x.size(3)));
    }
    lat[n - 1] = bottleneck(ops::concat(cat, 1));
  }
  for (size_t i = n - 1; i > 0; i--) ops::add_(lat[i - 1], up(lat[i], lat[i - 1].size(2), lat[i - 1].size(3)));
  std::vector<Tensor> fpn(n);
  for (size_t i = 0; i + 1 < n; i++) fpn[i] = fpn_convs[i](lat[i]);
  fpn[n - 1] = lat[n - 1];
  for (size_t i = n - 1; i > 0; i--) fpn[i] = up(fpn[i], fpn[0].size(2), fpn[0].size(3));
  Tensor h = fpn_bottleneck(ops::concat(fpn, 1));
  return ops::conv2d_ex(h, classifier_weight, classifier_bias, ops::ConvParams::same(1, 0));
}

Tensor UperNet::operator()(const Tensor& pixel_values) const {
  Tensor logits = decode_head(backbone(pixel_values));
  return up(logits, pixel_values.size(2), pixel_values.size(3));
}

std::vector<uint8_t> resize_bilinear_aa_u8(const uint8_t* rgb, int h, int w, int oh, int ow) {
  struct Taps {
    std::vector<int> lo, n;       // first input index and tap count per output
    std::vector<int16_t> k;       // ksize weights per output
    int ksize = 0;
    unsigned prec = 0;
  };
  // ATen _compute_indices_int16_weights_aa with the linear (triangle) filter, align_corners=False.
  auto taps = [](int in, int out) {
    Taps t;
    const double scale = double(in) / out;
    const double support = scale >= 1.0 ? scale : 1.0;  // interp_size 2 * 0.5, scaled when downscaling
    const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    t.ksize = (int)std::ceil(support) * 2 + 1;
    std::vector<double> wd((size_t)out * t.ksize, 0.0);
    t.lo.resize(out), t.n.resize(out);
    for (int i = 0; i < out; i++) {
      const double center = scale * (i + 0.5);
      const int64_t xmin = std::max<int64_t>((int64_t)(center - support + 0.5), 0);
      const int64_t xsize = std::min<int64_t>((int64_t)(center + support + 0.5), in) - xmin;
      double total = 0;
      double* wp = &wd[(size_t)i * t.ksize];
      for (int64_t j = 0; j < xsize; j++) {
        double x = (j + xmin - center + 0.5) * invscale;
        x = x < 0 ? -x : x;
        wp[j] = x < 1.0 ? 1.0 - x : 0.0;
        total += wp[j];
      }
      if (total != 0.0)
        for (int64_t j = 0; j < xsize; j++) wp[j] /= total;
      t.lo[i] = (int)xmin, t.n[i] = (int)xsize;
    }
    double wmax = wd[0];
    for (double v : wd) wmax = std::max(wmax, v);
    for (t.prec = 0; t.prec < 22; t.prec++)
      if ((int)(0.5 + wmax * (1 << (t.prec + 1))) >= (1 << 15)) break;
    t.k.resize(wd.size());
    for (size_t i = 0; i < wd.size(); i++)
      t.k[i] = (int16_t)(wd[i] < 0 ? (int)(-0.5 + wd[i] * (1 << t.prec)) : (int)(0.5 + wd[i] * (1 << t.prec)));
    return t;
  };
  auto clamp_u8 = [](int v) { return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v)); };
  std::vector<uint8_t> cur(rgb, rgb + (size_t)h * w * 3);
  if (ow != w) {  // horizontal pass
    const Taps t = taps(w, ow);
    std::vector<uint8_t> nxt((size_t)h * ow * 3);
#pragma omp parallel for if ((int64_t)h * ow > 65536)
    for (int y = 0; y < h; y++)
      for (int x = 0; x < ow; x++) {
        const int16_t* k = &t.k[(size_t)x * t.ksize];
        for (int c = 0; c < 3; c++) {
          int s = 1 << (t.prec - 1);
          for (int j = 0; j < t.n[x]; j++) s += cur[((size_t)y * w + t.lo[x] + j) * 3 + c] * k[j];
          nxt[((size_t)y * ow + x) * 3 + c] = clamp_u8(s >> t.prec);
        }
      }
    cur.swap(nxt);
    w = ow;
  }
  if (oh != h) {  // vertical pass
    const Taps t = taps(h, oh);
    std::vector<uint8_t> nxt((size_t)oh * w * 3);
#pragma omp parallel for if ((int64_t)oh * w > 65536)
    for (int y = 0; y < oh; y++) {
      const int16_t* k = &t.k[(size_t)y * t.ksize];
      for (int x = 0; x < w * 3; x++) {
        int s = 1 << (t.prec - 1);
        for (int j = 0; j < t.n[y]; j++) s += cur[(size_t)(t.lo[y] + j) * w * 3 + x] * k[j];
        nxt[(size_t)y * w * 3 + x] = clamp_u8(s >> t.prec);
      }
    }
    cur.swap(nxt);
  }
  return cur;
}

SegImageProcessor SegImageProcessor::load(const std::string& file) {
  SegImageProcessor p;
  if (file.empty()) return p;
  const json j = read_json(file);
  auto bad = [&](const std::string& what) { fail("upernet", file + ": " + what); };
  try {
    auto flag = [&](const char* k, bool& v) {
      if (j.contains(k) && !j[k].is_null()) v = j[k].get<bool>();
    };
    flag("do_resize", p.do_resize);
    flag("do_rescale", p.do_rescale);
    flag("do_normalize", p.do_normalize);
    if (j.contains("rescale_factor") && !j["rescale_factor"].is_null())
      p.rescale_factor = j["rescale_factor"].get<double>();
    for (const char* k : {"image_mean", "image_std"}) {
      if (!j.contains(k) || j[k].is_null()) continue;
      auto v = j[k].is_array() ? j[k].get<std::vector<double>>() : std::vector<double>(3, j[k].get<double>());
      if (v.size() != 3) bad(std::string(k) + " must have 3 values");
      std::copy(v.begin(), v.end(), std::string(k) == "image_mean" ? p.mean : p.std);
    }
    if (j.contains("resample") && !j["resample"].is_null() && j["resample"].get<int>() != 2)
      bad("resample " + std::to_string(j["resample"].get<int>()) + " is not supported (only 2, bilinear)");
    if (j.contains("size") && !j["size"].is_null()) {
      const json& sz = j["size"];
      if (sz.is_number_integer()) {
        p.height = p.width = sz.get<int>();
      } else if (sz.is_object() && sz.contains("height") && sz.contains("width")) {
        p.height = sz["height"].get<int>(), p.width = sz["width"].get<int>();
      } else {
        bad("size must be {\"height\": H, \"width\": W}");
      }
    }
  } catch (const json::exception& e) {
    bad(std::string("unexpected field type (") + e.what() + ")");
  }
  if (p.height < 32 || p.width < 32 || p.height > 4096 || p.width > 4096) bad("size must be 32..4096");
  for (int c = 0; c < 3; c++)
    if (!(p.std[c] > 0) || !std::isfinite(p.mean[c])) bad("image_std must be positive and image_mean finite");
  if (!(p.rescale_factor > 0)) bad("rescale_factor must be positive");
  return p;
}

Tensor SegImageProcessor::operator()(const uint8_t* rgb, int h, int w) const {
  std::vector<uint8_t> img;
  if (do_resize) {
    img = resize_bilinear_aa_u8(rgb, h, w, height, width);
    h = height, w = width;
  } else {
    img.assign(rgb, rgb + (size_t)h * w * 3);
  }
  // torchvision: mean/std become float32 tensors times 1 / rescale_factor (float32 arithmetic), then
  // x.sub_(mean).div_(std) in float32.
  float m[3], s[3];
  const float inv = (float)(1.0 / rescale_factor);
  for (int c = 0; c < 3; c++) {
    m[c] = do_rescale ? (float)mean[c] * inv : (float)mean[c];
    s[c] = do_rescale ? (float)std[c] * inv : (float)std[c];
  }
  Tensor t = Tensor::empty({1, 3, h, w});
  float* d = t.f32();
  const size_t n = (size_t)h * w;
  for (int c = 0; c < 3; c++)
    for (size_t i = 0; i < n; i++) {
      const float x = img[i * 3 + c];
      d[c * n + i] = do_normalize ? (x - m[c]) / s[c] : (do_rescale ? x * (float)rescale_factor : x);
    }
  return t;
}

std::vector<int32_t> segment_argmax(const Tensor& logits, int oh, int ow) {
  EASEL_CHECK(logits.dim() == 4 && logits.size(0) == 1, "upernet", "segment_argmax: logits " + logits.str());
  const int64_t L = logits.size(1), H = logits.size(2), W = logits.size(3);
  // ATen upsample_bilinear2d taps (align_corners=False, no scale factor): float arithmetic.
  struct Tap {
    int64_t i0, i1;
    float w0, w1;
  };
  auto taps = [](int64_t in, int64_t out) {
    std::vector<Tap> t(out);
    const float scale = (float)in / (float)out;
    for (int64_t i = 0; i < out; i++) {
      float src = scale * ((float)i + 0.5f) - 0.5f;
      if (src < 0) src = 0;
      const int64_t i0 = std::min((int64_t)std::floor(src), in - 1);
      const float l1 = std::min(std::max(src - (float)i0, 0.f), 1.f);
      t[i] = {i0, i0 + (i0 < in - 1 ? 1 : 0), 1.f - l1, l1};
    }
    return t;
  };
  const auto th = taps(H, oh), tw = taps(W, ow);
  const float* lp = logits.f32();
  std::vector<int32_t> out((size_t)oh * ow);
#pragma omp parallel
  {
    std::vector<float> best(ow);
#pragma omp for
    for (int y = 0; y < oh; y++) {
      int32_t* arg = &out[(size_t)y * ow];
      std::fill(best.begin(), best.end(), -INFINITY);
      std::fill(arg, arg + ow, 0);
      const Tap& a = th[y];
      for (int64_t c = 0; c < L; c++) {
        const float* r0 = lp + (c * H + a.i0) * W;
        const float* r1 = lp + (c * H + a.i1) * W;
        for (int x = 0; x < ow; x++) {
          const Tap& b = tw[x];
          const float v = a.w0 * (b.w0 * r0[b.i0] + b.w1 * r0[b.i1]) + a.w1 * (b.w0 * r1[b.i0] + b.w1 * r1[b.i1]);
          if (v > best[x]) best[x] = v, arg[x] = (int32_t)c;
        }
      }
    }
  }
  return out;
}

}  // namespace easel::pp
