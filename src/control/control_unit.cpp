// Control units; see control_unit.h for the references.
#include "control/control_unit.h"

#include <algorithm>
#include <cmath>

namespace easel {

namespace {
const char* kWhere = "control";

std::string lower(std::string s) {
  for (auto& c : s) c = (char)std::tolower((unsigned char)c);
  return s;
}

// Tensor [B, ...] -> [2B, ...]: zeros then t (the unconditional half gets no control).
Tensor zeros_then(const Tensor& t) {
  Shape s = t.shape();
  s[0] *= 2;
  Tensor r = Tensor::zeros(s);
  std::copy_n(t.f32(), t.numel(), r.f32() + t.numel());
  return r;
}

// Tensor [1, ...] -> [B, ...] (the same features for every batch item).
Tensor repeat0(const Tensor& t, int64_t B) {
  if (B == 1) return t;
  Shape s = t.shape();
  s[0] = B;
  Tensor r = Tensor::empty(s);
  for (int64_t b = 0; b < B; b++) std::copy_n(t.f32(), t.numel(), r.f32() + b * t.numel());
  return r;
}

// [B, ...] scaled copy.
Tensor scaled(const Tensor& t, float s) { return s == 1.0f ? t : ops::scale(t, s); }

// Accumulates x into acc (acc = acc + x, in unit order as MultiControlNetModel).
void accumulate(Tensor& acc, const Tensor& x) {
  if (!acc.defined()) acc = x;
  else acc = ops::add(acc, x);
}
}  // namespace

ResizeMode parse_resize_mode(const std::string& s0) {
  std::string s = lower(s0);
  if (s == "just_resize" || s == "just resize" || s == "resize" || s == "0") return ResizeMode::JustResize;
  if (s == "crop_resize" || s == "crop and resize" || s == "crop" || s == "1") return ResizeMode::CropResize;
  if (s == "resize_fill" || s == "resize and fill" || s == "fill" || s == "2") return ResizeMode::ResizeFill;
  fail(kWhere, "unknown resize mode '" + s0 + "' (just_resize, crop_resize, resize_fill)");
}

ControlMode parse_control_mode(const std::string& s0) {
  std::string s = lower(s0);
  if (s == "balanced" || s == "0") return ControlMode::Balanced;
  if (s == "prompt" || s == "my prompt is more important" || s == "1") return ControlMode::Prompt;
  if (s == "control" || s == "controlnet is more important" || s == "2") return ControlMode::Control;
  fail(kWhere, "unknown control mode '" + s0 + "' (balanced, prompt, control)");
}

const char* resize_mode_name(ResizeMode m) {
  switch (m) {
    case ResizeMode::JustResize: return "Just Resize";
    case ResizeMode::CropResize: return "Crop and Resize";
    case ResizeMode::ResizeFill: return "Resize and Fill";
  }
  return "";
}

const char* control_mode_name(ControlMode m) {
  switch (m) {
    case ControlMode::Balanced: return "Balanced";
    case ControlMode::Prompt: return "My prompt is more important";
    case ControlMode::Control: return "ControlNet is more important";
  }
  return "";
}

Image resize_guide(const Image& guide0, int W, int H, ResizeMode mode) {
  if (guide0.width <= 0 || guide0.height <= 0) fail(kWhere, "empty guide image");
  if (W <= 0 || H <= 0) fail(kWhere, "invalid target size " + std::to_string(W) + "x" + std::to_string(H));
  Image g = convert_image(guide0, 3);
  if (g.width == W && g.height == H) return g;
  if (mode == ResizeMode::JustResize) return resize_image(g, W, H, ResizeFilter::Lanczos);
  const double k0 = (double)H / g.height, k1 = (double)W / g.width;
  const double k = mode == ResizeMode::CropResize ? std::max(k0, k1) : std::min(k0, k1);
  // np.round: half to even.
  const int nw = std::max(1, (int)std::nearbyint(g.width * k)), nh = std::max(1, (int)std::nearbyint(g.height * k));
  Image r = resize_image(g, nw, nh, ResizeFilter::Lanczos);
  Image out;
  out.width = W, out.height = H, out.channels = 3;
  out.pixels.assign((size_t)W * H * 3, 0);
  if (mode == ResizeMode::CropResize) {
    const int ph = std::max(0, (nh - H) / 2), pw = std::max(0, (nw - W) / 2);
    for (int y = 0; y < H; y++)
      for (int x = 0; x < W; x++) {
        const int sy = std::min(y + ph, nh - 1), sx = std::min(x + pw, nw - 1);  // rounding can leave one short
        std::copy_n(r.row(sy) + 3 * sx, 3, out.row(y) + 3 * x);
      }
    return out;
  }
  // Resize and fill: the border colour is np.median over the first/last rows and columns of the
  // original guide (corners counted twice), per channel, truncated to uint8.
  uint8_t fill[3];
  for (int c = 0; c < 3; c++) {
    std::vector<int> v;
    v.reserve(2 * (g.width + g.height));
    for (int x = 0; x < g.width; x++) v.push_back(g.row(0)[3 * x + c]), v.push_back(g.row(g.height - 1)[3 * x + c]);
    for (int y = 0; y < g.height; y++) v.push_back(g.row(y)[c]), v.push_back(g.row(y)[3 * (g.width - 1) + c]);
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    fill[c] = (uint8_t)(n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2);
  }
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++) std::copy_n(fill, 3, out.row(y) + 3 * x);
  const int ph = std::max(0, (H - nh) / 2), pw = std::max(0, (W - nw) / 2);
  for (int y = 0; y < nh && y + ph < H; y++)
    for (int x = 0; x < nw && x + pw < W; x++) std::copy_n(r.row(y) + 3 * x, 3, out.row(y + ph) + 3 * (x + pw));
  return out;
}

bool control_active(double start, double end, size_t i, size_t n) {
  // diffusers: 1.0 - float(i / len(timesteps) < s or (i + 1) / len(timesteps) > e), in Python floats.
  const double a = (double)i / (double)n, b = (double)(i + 1) / (double)n;
  return !(a < start || b > end);
}

std::vector<float> control_scales(size_t n, float strength, ControlMode mode, bool guess_mode, bool is_adapter) {
  std::vector<float> s(n, strength);
  if (is_adapter) {
    if (mode != ControlMode::Balanced) {
      static const float w[4] = {0.25f, 0.62f, 0.825f, 1.0f};
      for (size_t i = 0; i < n; i++) s[i] = strength * (i < 4 ? w[i] : 1.0f);
    }
    return s;
  }
  if (guess_mode) {
    // torch.logspace(-1, 0, n) (float32) * conditioning_scale
    for (size_t i = 0; i < n; i++) {
      double e = n > 1 ? -1.0 + (double)i / (double)(n - 1) : 0.0;
      s[i] = (float)std::pow(10.0, e) * strength;
    }
    return s;
  }
  if (mode != ControlMode::Balanced)  // A1111: [weight * (0.825 ** float(12 - i)) for i in range(13)]
    for (size_t i = 0; i < n; i++) s[i] = (float)(strength * std::pow(0.825, (double)(n - 1 - i)));
  return s;
}

void validate_unit(const ControlUnit& u, const ModelConfig& base) {
  const std::string who = u.name.empty() ? std::string("control unit") : u.name;
  if (!!u.controlnet == !!u.adapter) fail(kWhere, who + ": a unit needs exactly one model (ControlNet or adapter)");
  if (!std::isfinite(u.strength) || u.strength < 0 || u.strength > 2)
    fail(kWhere, who + ": strength " + std::to_string(u.strength) + " is outside [0, 2]");
  if (!std::isfinite(u.start) || !std::isfinite(u.end) || u.start < 0 || u.end > 1)
    fail(kWhere, who + ": start/end must be fractions in [0, 1], got " + std::to_string(u.start) + " / " +
                     std::to_string(u.end));
  if (u.start >= u.end)
    fail(kWhere, who + ": start " + std::to_string(u.start) + " is not before end " + std::to_string(u.end));
  if (u.guide.width <= 0 || u.guide.height <= 0) fail(kWhere, who + ": no guide image");
  if (u.controlnet) {
    const UNetConfig& c = u.controlnet->config.unet;
    const UNetConfig& b = base.unet;
    if (c.cross_attention_dim != b.cross_attention_dim || c.addition_embed_type != b.addition_embed_type ||
        c.block_out_channels != b.block_out_channels || c.layers_per_block != b.layers_per_block ||
        c.in_channels != b.in_channels)
      fail(kWhere, who + ": this ControlNet (" + u.controlnet->config.family + ", cross-attention " +
                       std::to_string(c.cross_attention_dim) + ") does not fit the " + base.family +
                       " model (cross-attention " + std::to_string(b.cross_attention_dim) + ")");
  }
}

ControlRunner::ControlRunner(const std::vector<ControlUnit>& units, int W, int H, bool cfg_on, bool guess_mode)
    : cfg_on_(cfg_on), guess_(guess_mode) {
  for (const ControlUnit& u : units) {
    Prepared p;
    p.unit = &u;
    guides_.push_back(resize_guide(u.guide, W, H, u.resize_mode));
    Tensor g01 = image_to_tensor01(guides_.back());  // [1, 3, H, W] in [0, 1]
    if (u.controlnet) {
      p.cond_embedding = u.controlnet->embed_condition(g01);
    } else {
      std::vector<Tensor> f = u.adapter(g01);
      std::vector<float> s = control_scales(f.size(), u.strength, u.control_mode, false, /*is_adapter=*/true);
      for (size_t k = 0; k < f.size(); k++) p.features.push_back(scaled(f[k].to(DType::F32), s[k]));
    }
    units_.push_back(std::move(p));
  }
}

void ControlRunner::step(size_t i, size_t n, const Tensor& model_in, float timestep, const Tensor& context,
                         const Tensor* text_embeds, const Tensor* time_ids, UNetExtras& ex) {
  ex.down_residuals = nullptr;
  ex.mid_residual = nullptr;
  ex.down_intrablock = nullptr;
  down_.clear();
  intra_.clear();
  mid_ = Tensor();
  const int64_t B = cfg_on_ ? 2 : 1;
  // The conditional half of the batch inputs (CFG order: uncond, cond).
  Tensor ctx_c, te_c, ids_c;
  auto cond_half = [&](const Tensor& t) { return cfg_on_ ? t.slice0(1, 1) : t; };
  for (const Prepared& p : units_) {
    const ControlUnit& u = *p.unit;
    if (!control_active(u.start, u.end, i, n)) continue;
    // Only the conditional half gets control: diffusers' guess mode, A1111's "ControlNet is more important",
    // and global-pooling ControlNets (shuffle: diffusers forces guess mode, A1111 conditions the cond half).
    const bool pooled = u.controlnet && u.controlnet->config.global_pool_conditions;
    const bool cond_only = cfg_on_ && (guess_ || pooled || u.control_mode == ControlMode::Control);
    if (u.controlnet) {
      const ControlNetModel& cn = *u.controlnet;
      ControlNetOutput o;
      if (cond_only) {
        if (!ctx_c.defined()) {
          ctx_c = cond_half(context);
          if (text_embeds) te_c = cond_half(*text_embeds), ids_c = cond_half(*time_ids);
        }
        o = cn.forward(model_in, {timestep}, ctx_c, p.cond_embedding, text_embeds ? &te_c : nullptr,
                       time_ids ? &ids_c : nullptr);
      } else {
        Tensor batch = B == 2 ? ops::concat({model_in, model_in}, 0) : model_in;
        o = cn.forward(batch, {timestep}, context, p.cond_embedding, text_embeds, time_ids);
      }
      // diffusers: guess-mode logspace scales only without global pooling.
      std::vector<float> s = control_scales(o.down.size() + 1, u.strength, u.control_mode, guess_ && !pooled);
      if (down_.empty()) down_.resize(o.down.size());
      if (down_.size() != o.down.size())
        fail(kWhere, u.name + ": " + std::to_string(o.down.size()) + " residuals where another unit gave " +
                         std::to_string(down_.size()));
      for (size_t k = 0; k < o.down.size(); k++) {
        Tensor r = scaled(o.down[k], s[k]);
        accumulate(down_[k], cond_only ? zeros_then(r) : r);
      }
      Tensor m = scaled(o.mid, s.back());
      accumulate(mid_, cond_only ? zeros_then(m) : m);
    } else {
      if (intra_.empty()) intra_.resize(p.features.size());
      if (intra_.size() != p.features.size())
        fail(kWhere, u.name + ": " + std::to_string(p.features.size()) + " adapter features where another gave " +
                         std::to_string(intra_.size()));
      // Guess mode is a ControlNet setting (diffusers' adapters have none).
      const bool adapter_cond_only = cfg_on_ && u.control_mode == ControlMode::Control;
      for (size_t k = 0; k < p.features.size(); k++)
        accumulate(intra_[k], adapter_cond_only ? zeros_then(p.features[k]) : repeat0(p.features[k], B));
    }
  }
  if (!down_.empty()) {
    ex.down_residuals = &down_;
    ex.mid_residual = &mid_;
  }
  if (!intra_.empty()) ex.down_intrablock = &intra_;
}

}  // namespace easel
