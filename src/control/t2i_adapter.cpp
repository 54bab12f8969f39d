// T2I-Adapter: loading (diffusers and TencentARC layouts), forward, and the pipeline helpers.
// References in t2i_adapter.h.
#include "control/t2i_adapter.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "io/diffusers_folder.h"
#include "io/json_file.h"
#include "ops/ops.h"

namespace easel {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

const char* kWhere = "t2i_adapter";

[[noreturn]] void bad(const std::string& path, const std::string& what) { fail(kWhere, path + ": " + what); }

// ---- small ops (f32 activations) ----

// nn.PixelUnshuffle(r): [N, C, H, W] -> [N, C*r*r, H/r, W/r], out channel c*r*r + i*r + j holds x[c, h*r+i, w*r+j].
Tensor pixel_unshuffle(const Tensor& x, int64_t r) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), h = H / r, w = W / r;
  Tensor y = Tensor::empty({N, C * r * r, h, w});
  const float* src = x.f32();
  float* dst = y.f32();
#pragma omp parallel for collapse(2)
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < r; j++) {
          float* o = dst + ((n * C + c) * r * r + i * r + j) * h * w;
          const float* s = src + (n * C + c) * H * W;
          for (int64_t yy = 0; yy < h; yy++)
            for (int64_t xx = 0; xx < w; xx++) o[yy * w + xx] = s[(yy * r + i) * W + xx * r + j];
        }
  return y;
}

// nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True): windows that stick out past the border
// average only the pixels inside (PyTorch's divisor with zero padding).
Tensor avg_pool2_ceil(const Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), h = (H + 1) / 2, w = (W + 1) / 2;
  Tensor y = Tensor::empty({N, C, h, w});
  const float* src = x.f32();
  float* dst = y.f32();
#pragma omp parallel for
  for (int64_t nc = 0; nc < N * C; nc++) {
    const float* s = src + nc * H * W;
    float* o = dst + nc * h * w;
    for (int64_t yy = 0; yy < h; yy++) {
      const int64_t y0 = 2 * yy, y1 = std::min(y0 + 2, H);
      for (int64_t xx = 0; xx < w; xx++) {
        const int64_t x0 = 2 * xx, x1 = std::min(x0 + 2, W);
        float sum = 0;
        for (int64_t a = y0; a < y1; a++)
          for (int64_t b = x0; b < x1; b++) sum += s[a * W + b];
        o[yy * w + xx] = sum / (float)((y1 - y0) * (x1 - x0));
      }
    }
  }
  return y;
}

void relu_inplace(Tensor& x) {
  float* p = x.f32();
  const int64_t n = x.numel();
#pragma omp parallel for simd if (n > 32768)
  for (int64_t i = 0; i < n; i++) p[i] = p[i] > 0 ? p[i] : 0;
}

// ---- config ----

int get_int(const json& j, const std::string& file, const char* name, int def) {
  if (!j.contains(name) || j[name].is_null()) return def;
  if (!j[name].is_number_integer()) bad(file, std::string("field '") + name + "' should be an integer");
  return j[name].get<int>();
}

T2IAdapterConfig read_config(const std::string& file) {
  const json j = read_json_object(file, kWhere);
  if (j.contains("_class_name") && j["_class_name"].is_string() && j["_class_name"] != "T2IAdapter")
    bad(file, "is a " + j["_class_name"].get<std::string>() + " config, not a T2IAdapter");
  T2IAdapterConfig c;
  if (j.contains("adapter_type") && !j["adapter_type"].is_null()) {
    if (!j["adapter_type"].is_string()) bad(file, "field 'adapter_type' should be a string");
    c.adapter_type = j["adapter_type"].get<std::string>();
  }
  c.in_channels = get_int(j, file, "in_channels", c.in_channels);
  c.num_res_blocks = get_int(j, file, "num_res_blocks", c.num_res_blocks);
  c.downscale_factor = get_int(j, file, "downscale_factor", c.adapter_type == "full_adapter_xl" ? 16 : 8);
  if (c.adapter_type == "light_adapter") c.channels = {320, 640, 1280};  // LightAdapter's default
  if (j.contains("channels") && !j["channels"].is_null()) {
    if (!j["channels"].is_array()) bad(file, "field 'channels' should be a list of integers");
    c.channels.clear();
    for (const auto& v : j["channels"]) {
      if (!v.is_number_integer()) bad(file, "field 'channels' should be a list of integers");
      c.channels.push_back(v.get<int>());
    }
  }
  return c;
}

void validate(const T2IAdapterConfig& c, const std::string& path) {
  if (c.adapter_type != "full_adapter" && c.adapter_type != "full_adapter_xl" && c.adapter_type != "light_adapter")
    bad(path, "unsupported adapter_type '" + c.adapter_type +
                  "' (expected full_adapter, full_adapter_xl or light_adapter)");
  if (c.channels.empty() || c.in_channels < 1 || c.num_res_blocks < 1 || c.downscale_factor < 1 ||
      std::any_of(c.channels.begin(), c.channels.end(), [](int v) { return v < 1; }))
    bad(path, "invalid config (channels, in_channels, num_res_blocks and downscale_factor must be positive)");
  if (c.adapter_type == "light_adapter" &&
      std::any_of(c.channels.begin(), c.channels.end(), [](int v) { return v % 4 != 0; }))
    bad(path, "light_adapter channels must be multiples of 4");
}

// ---- key layouts ----

// "body.N.rest" -> N (or -1).
int body_index(const std::string& k, std::string* rest = nullptr) {
  static const std::regex re(R"(^body\.(\d+)\.(.+)$)");
  std::smatch m;
  if (!std::regex_match(k, m, re)) return -1;
  if (rest) *rest = m[2];
  return std::stoi(m[1]);
}

std::string not_adapter_hint(const WeightStore& w) {
  if (w.has("lora_controlnet")) return " (it is a Control-LoRA)";
  for (const auto& [k, t] : w.tensors) {
    if (k.find("controlnet_cond_embedding") != std::string::npos || k.find("input_hint_block") != std::string::npos)
      return " (it looks like a ControlNet)";
    if (k.rfind("model.diffusion_model.", 0) == 0 || k.rfind("down_blocks.", 0) == 0)
      return " (it looks like a Stable Diffusion model or UNet)";
    if (k.find("lora_") != std::string::npos) return " (it looks like a LoRA)";
  }
  return "";
}

// TencentARC names -> diffusers names (without "adapter."), following the inverse of diffusers'
// scripts/convert_original_t2i_adapter.py. `light`: body.I.body.J -> body.I.resnets.J; full:
// body.(I*R+J) -> body.I.resnets.J, its in_conv -> body.I.in_conv (R = num_res_blocks).
WeightStore rename_tencentarc(const WeightStore& w, bool light, int R, const std::string& path) {
  WeightStore o;
  o.source = w.source;
  o.metadata = w.metadata;
  static const std::regex light_re(R"(^body\.(\d+)\.body\.(\d+)\.(.+)$)");
  for (const auto& [k, t] : w.tensors) {
    std::string name = k, rest;
    std::smatch m;
    if (light) {
      if (std::regex_match(k, m, light_re)) name = "body." + m[1].str() + ".resnets." + m[2].str() + "." + m[3].str();
    } else if (int n = body_index(k, &rest); n >= 0) {
      const int i = n / R, j = n % R;
      if (rest.rfind("in_conv.", 0) == 0) {
        if (j != 0) bad(path, "key '" + k + "': an in_conv only on the first block of a level (" +
                                  std::to_string(R) + " res blocks per level)");
        name = "body." + std::to_string(i) + "." + rest;
      } else {
        name = "body." + std::to_string(i) + ".resnets." + std::to_string(j) + "." + rest;
      }
    }
    o.tensors[name] = t;
  }
  return o;
}

// Sizes from diffusers-named weights (no config.json).
T2IAdapterConfig infer_config(const WeightStore& w, const std::string& path) {
  T2IAdapterConfig c;
  int n_body = 0;
  for (const auto& [k, t] : w.tensors) n_body = std::max(n_body, body_index(k) + 1);
  auto n_resnets = [&](int i) {
    int r = 0;
    while (w.has("body." + std::to_string(i) + ".resnets." + std::to_string(r) + ".block1.weight")) r++;
    return r;
  };
  c.num_res_blocks = n_resnets(0);
  if (n_body == 0 || c.num_res_blocks == 0) bad(path, "no adapter blocks (body.0.resnets.0.block1.weight)");
  const auto out_ch = [&](const std::string& key) { return (int)w.get(key).size(0); };
  if (!w.has("conv_in.weight")) {
    if (!w.has("body.0.in_conv.weight") || !w.has("body.0.out_conv.weight"))
      bad(path, "neither conv_in (full adapter) nor body.0.in_conv/out_conv (light adapter) found");
    c.adapter_type = "light_adapter";
    c.downscale_factor = 8;
    const int64_t cin = w.get("body.0.in_conv.weight").size(1);
    if (cin % 64 != 0) bad(path, "light adapter input has " + std::to_string(cin) + " channels, not a multiple of 64");
    c.in_channels = (int)(cin / 64);
    c.channels.clear();
    for (int i = 0; i + 1 < n_body; i++) c.channels.push_back(out_ch("body." + std::to_string(i) + ".out_conv.weight"));
    if (c.channels.empty()) bad(path, "a light adapter needs at least two blocks");
    return c;
  }
  const Tensor& ci = w.get("conv_in.weight");
  if (ci.dim() != 4) bad(path, "conv_in.weight should be 4-D, got " + shape_str(ci.shape()));
  const int64_t cin = ci.size(1);
  if (cin == 64 || cin == 192) {
    c.adapter_type = "full_adapter";
    c.downscale_factor = 8;
  } else if (cin == 256 || cin == 768) {
    c.adapter_type = "full_adapter_xl";
    c.downscale_factor = 16;
  } else {
    bad(path, "conv_in takes " + std::to_string(cin) +
                  " channels: cannot tell the downscale factor (64/192: SD1/SD2 adapter, 256/768: SDXL); "
                  "use a diffusers folder with its config.json");
  }
  c.in_channels = (int)(cin / (c.downscale_factor * c.downscale_factor));
  c.channels.clear();
  int ch = (int)ci.size(0);
  for (int i = 0; i < n_body; i++) {
    const std::string k = "body." + std::to_string(i) + ".in_conv.weight";
    if (w.has(k)) ch = out_ch(k);
    c.channels.push_back(ch);
  }
  return c;
}

}  // namespace

// ---- loading ----

T2IAdapter T2IAdapter::from_weights(const WeightStore& w, const T2IAdapterConfig& c, const std::string& path) {
  validate(c, path);
  T2IAdapter a;
  a.config = c;
  a.path = path;
  a.format = "diffusers";
  const int df = c.downscale_factor, R = c.num_res_blocks;
  const int64_t cin = (int64_t)c.in_channels * df * df;
  const std::vector<int>& ch = c.channels;
  auto load_resnets = [&](Block& b, const std::string& p, int64_t C, int k2) {
    for (int j = 0; j < R; j++) {
      ResBlock r;
      const std::string q = p + ".resnets." + std::to_string(j);
      r.block1.load(w, q + ".block1", C, C, 3);
      r.block2.load(w, q + ".block2", C, C, k2);
      b.resnets.push_back(std::move(r));
    }
  };
  if (c.adapter_type == "light_adapter") {
    // LightAdapterBlock(in, out): in_conv 1x1 to out/4, resnets (3x3, 3x3), out_conv 1x1 to out.
    std::vector<std::pair<int64_t, int64_t>> io = {{cin, ch[0]}};
    for (size_t i = 0; i + 1 < ch.size(); i++) io.push_back({ch[i], ch[i + 1]});
    io.push_back({ch.back(), ch.back()});
    for (size_t i = 0; i < io.size(); i++) {
      Block b;
      const std::string p = "body." + std::to_string(i);
      const int64_t mid = io[i].second / 4;
      b.down = i > 0;
      b.in_conv.emplace().load(w, p + ".in_conv", io[i].first, mid, 1);
      load_resnets(b, p, mid, 3);
      b.out_conv.emplace().load(w, p + ".out_conv", mid, io[i].second, 1);
      a.body.push_back(std::move(b));
    }
  } else {
    const bool xl = c.adapter_type == "full_adapter_xl";
    a.conv_in.emplace().load(w, "conv_in", cin, ch[0], 3);
    for (size_t i = 0; i < ch.size(); i++) {
      Block b;
      const std::string p = "body." + std::to_string(i);
      const int64_t in = i == 0 ? ch[0] : ch[i - 1];
      // FullAdapter pools in every block but the first; FullAdapterXL only in block 2.
      b.down = xl ? i == 2 : i > 0;
      if (in != ch[i]) b.in_conv.emplace().load(w, p + ".in_conv", in, ch[i], 1);
      load_resnets(b, p, ch[i], 1);
      a.body.push_back(std::move(b));
    }
  }
  std::vector<std::string> extra = w.unused();
  if (!extra.empty()) {
    std::string list;
    for (size_t i = 0; i < extra.size() && i < 5; i++) list += (i ? ", " : "") + extra[i];
    bad(path, std::to_string(extra.size()) + " unexpected tensor(s) for a " + c.adapter_type + " adapter: " + list +
                  (extra.size() > 5 ? ", ..." : ""));
  }
  return a;
}

T2IAdapter T2IAdapter::load(const std::string& path) {
  std::optional<T2IAdapterConfig> cfg;
  WeightStore raw;
  if (fs::is_directory(path)) {
    const std::string cj = (fs::path(path) / "config.json").string();
    if (!fs::exists(cj)) bad(path, "folder has no config.json (expected a diffusers T2IAdapter folder)");
    cfg = read_config(cj);
    raw = load_part_weights(path, {"diffusion_pytorch_model"});
  } else {
    if (!fs::exists(path)) bad(path, "file not found");
    raw = load_weights(path);  // a lone weights file: sizes from the shapes
  }
  // diffusers keys carry "adapter."; a TencentARC .pth may hold {"adapter": state_dict} too.
  WeightStore w;
  w.source = raw.source;
  w.metadata = raw.metadata;
  for (const auto& [k, t] : raw.tensors) {
    if (k.rfind("adapter.", 0) == 0) w.tensors[k.substr(8)] = t;
    else w.tensors[k] = t;
  }
  for (const auto& [k, t] : w.tensors) {
    if (k.rfind("style_embedding", 0) == 0 || k.rfind("ln_post", 0) == 0)
      bad(path, "a T2I style adapter (CLIP-vision tokens) is not supported");
    if (k.rfind("backbone.", 0) == 0) bad(path, "a Stable Cascade ControlNet is not a T2I-Adapter (not supported)");
    if (k.rfind("cross_attention_fuser", 0) == 0 || k.find("fuser.") != std::string::npos)
      bad(path, "a CoAdapter fuser is not supported");
  }
  bool diffusers_keys = false, light_original = false, any_body = false;
  static const std::regex light_re(R"(^body\.\d+\.body\.\d+\..+$)");
  for (const auto& [k, t] : w.tensors) {
    if (body_index(k) < 0) continue;
    any_body = true;
    if (k.find(".resnets.") != std::string::npos) diffusers_keys = true;
    if (std::regex_match(k, light_re)) light_original = true;
  }
  if (!any_body) bad(path, "not a T2I-Adapter: no 'body.*' / 'adapter.body.*' tensors" + not_adapter_hint(w));
  std::string format = "diffusers";
  if (!diffusers_keys) {
    format = "tencentarc";
    int R = 0;  // res blocks per level: the first flat block with an in_conv starts level 1
    if (!light_original) {
      for (int n = 1; n < 64 && !R; n++)
        if (w.has("body." + std::to_string(n) + ".in_conv.weight")) R = n;
      if (!R) R = 2;  // every released adapter
    }
    w = rename_tencentarc(w, light_original, R, path);
  }
  T2IAdapterConfig c = cfg ? *cfg : infer_config(w, path);
  T2IAdapter a = from_weights(w, c, path);
  a.format = format;
  return a;
}

int64_t T2IAdapter::total_downscale_factor() const {
  int64_t f = config.downscale_factor;
  for (const Block& b : body)
    if (b.down) f *= 2;
  return f;
}

// ---- forward ----

std::vector<Tensor> T2IAdapter::forward(const Tensor& guide) const {
  const int64_t df = config.downscale_factor;
  if (guide.dim() != 4 || guide.size(1) != config.in_channels)
    bad(path, "guide should be [N, " + std::to_string(config.in_channels) + ", H, W], got " + shape_str(guide.shape()));
  if (guide.size(2) % df || guide.size(3) % df)
    bad(path, "guide size " + std::to_string(guide.size(3)) + "x" + std::to_string(guide.size(2)) +
                  " is not a multiple of the adapter's downscale factor " + std::to_string(df));
  Tensor x = pixel_unshuffle(guide.to(DType::F32), df);  // [N, in*df^2, H/df, W/df]
  if (conv_in) x = (*conv_in)(x);
  std::vector<Tensor> features;
  for (const Block& b : body) {
    if (b.down) x = avg_pool2_ceil(x);
    if (b.in_conv) x = (*b.in_conv)(x);
    for (const ResBlock& r : b.resnets) {
      Tensor h = r.block1(x);
      relu_inplace(h);
      h = r.block2(h);
      ops::add_(h, x);
      x = std::move(h);
    }
    if (b.out_conv) x = (*b.out_conv)(x);
    features.push_back(x);
  }
  return features;
}

std::vector<Tensor> T2IAdapter::forward_rgb01(const Tensor& rgb01) const {
  if (rgb01.dim() != 4 || rgb01.size(1) != 3)
    bad(path, "guide should be an RGB tensor [N, 3, H, W], got " + shape_str(rgb01.shape()));
  if (config.in_channels == 3) return forward(rgb01);
  if (config.in_channels != 1) bad(path, "an adapter taking " + std::to_string(config.in_channels) + " channels");
  const Tensor x = rgb01.to(DType::F32);
  const int64_t N = x.size(0), hw = x.size(2) * x.size(3);
  Tensor g = Tensor::empty({N, 1, x.size(2), x.size(3)});
  const float* s = x.f32();
  float* d = g.f32();
  auto u8 = [](float v) { return (uint32_t)std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f); };
  for (int64_t n = 0; n < N; n++)
    for (int64_t i = 0; i < hw; i++) {
      const float* p = s + n * 3 * hw + i;
      const uint32_t l = (19595 * u8(p[0]) + 38470 * u8(p[hw]) + 7471 * u8(p[2 * hw]) + 0x8000) >> 16;
      d[n * hw + i] = (float)l / 255.0f;
    }
  return forward(g);
}

// ---- pipeline helpers ----

Tensor t2i_adapter_input(const Image& guide, int width, int height, int in_channels) {
  if (in_channels != 1 && in_channels != 3)
    fail(kWhere, "guide images have 1 or 3 channels; the adapter takes " + std::to_string(in_channels));
  if (width < 1 || height < 1) fail(kWhere, "invalid guide size");
  Image img = guide.channels == in_channels ? guide : convert_image(guide, in_channels);
  if (img.width != width || img.height != height) img = resize_image(img, width, height, ResizeFilter::Lanczos);
  Tensor t = Tensor::empty({1, in_channels, height, width});
  float* p = t.f32();
  const int64_t hw = (int64_t)width * height;
  for (int y = 0; y < height; y++) {
    const uint8_t* row = img.row(y);
    for (int x = 0; x < width; x++)
      for (int c = 0; c < in_channels; c++)
        p[c * hw + (int64_t)y * width + x] = (float)row[x * in_channels + c] / 255.0f;
  }
  return t;
}

void check_t2i_adapter(const T2IAdapter& a, const UNetConfig& unet, int height, int width, int vae_scale) {
  const std::string kind = a.config.adapter_type + (a.is_sdxl() ? ", SDXL" : ", SD1/SD2");
  const std::string model = unet.addition_embed_type == "text_time" ? "SDXL" : "SD1/SD2";
  const int64_t df = a.config.downscale_factor;
  if (height % df || width % df)
    bad(a.path, "image size " + std::to_string(width) + "x" + std::to_string(height) +
                    " is not a multiple of the adapter's downscale factor " + std::to_string(df));
  // The adapter's feature shapes.
  std::vector<Shape> feats;
  int64_t fh = height / df, fw = width / df;
  const size_t nch = a.config.channels.size();
  for (size_t i = 0; i < a.body.size(); i++) {
    if (a.body[i].down) fh = (fh + 1) / 2, fw = (fw + 1) / 2;
    feats.push_back({(int64_t)a.config.channels[std::min(i, nch - 1)], fh, fw});
  }
  // What the UNet adds them to (see UNetExtras::down_intrablock).
  std::vector<Shape> want;
  int64_t lh = height / vae_scale, lw = width / vae_scale;
  const size_t nb = unet.block_out_channels.size();
  for (size_t i = 0; i < nb; i++) {
    const int64_t c = unet.block_out_channels[i];
    const bool attn = unet.down_block_types[i] == "CrossAttnDownBlock2D";
    if (attn) want.push_back({c, lh, lw});
    if (i + 1 < nb) lh = (lh + 1) / 2, lw = (lw + 1) / 2;  // Downsample2D: 3x3 conv, stride 2, pad 1
    if (!attn) want.push_back({c, lh, lw});
  }
  const Shape mid = {(int64_t)unet.block_out_channels.back(), lh, lw};
  for (size_t i = 0; i < feats.size(); i++) {
    const Shape& need = i < want.size() ? want[i] : mid;
    if (feats[i] != need)
      bad(a.path, "this T2I-Adapter (" + kind + ") does not fit the " + model + " UNet: its feature " +
                      std::to_string(i) + " is " + shape_str(feats[i]) + ", " +
                      (i < want.size() ? "down block " + std::to_string(i) : std::string("the mid block")) +
                      " needs " + shape_str(need) + " at " + std::to_string(width) + "x" + std::to_string(height));
    if (i >= want.size() && i + 1 < feats.size())
      bad(a.path, "this T2I-Adapter (" + kind + ") has more features than the " + model + " UNet takes");
  }
}

std::vector<Tensor> t2i_adapter_state(const std::vector<std::vector<Tensor>>& features,
                                      const std::vector<float>& scales, int64_t copies) {
  if (features.empty() || features.size() != scales.size())
    fail(kWhere, "t2i_adapter_state: one scale per adapter needed");
  if (copies < 1) fail(kWhere, "t2i_adapter_state: copies must be >= 1");
  std::vector<Tensor> acc;
  for (size_t a = 0; a < features.size(); a++) {
    if (a > 0 && features[a].size() != acc.size())
      fail(kWhere, "T2I-Adapters combined must give the same number of features (" + std::to_string(acc.size()) +
                       " vs " + std::to_string(features[a].size()) + ")");
    for (size_t i = 0; i < features[a].size(); i++) {
      Tensor v = ops::scale(features[a][i].to(DType::F32), scales[a]);
      if (a == 0) {
        acc.push_back(std::move(v));
      } else {
        if (v.shape() != acc[i].shape())
          fail(kWhere, "T2I-Adapters combined must have the same downscaling: feature " + std::to_string(i) + " is " +
                           shape_str(v.shape()) + " vs " + shape_str(acc[i].shape()));
        ops::add_(acc[i], v);
      }
    }
  }
  if (copies > 1)
    for (Tensor& t : acc) t = ops::concat(std::vector<Tensor>((size_t)copies, t), 0);
  return acc;
}

}  // namespace easel
