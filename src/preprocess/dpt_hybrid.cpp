// MiDaS DPT-Hybrid; see dpt_hybrid.h for the references.
#include "preprocess/dpt_hybrid.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "preprocess/depth_anything.h"

namespace easel::pp {

namespace {

const char* kProbe = "pretrained.model.patch_embed.backbone.stem.conv.weight";
const std::string kBackbone = "pretrained.model.patch_embed.backbone.";

// timm get_same_padding: total padding for TF "same"; split (total / 2, total - total / 2).
int same_pad(int64_t in, int k, int s) {
  const int64_t out = (in + s - 1) / s;
  return (int)std::max<int64_t>((out - 1) * s + k - in, 0);
}

// MaxPool2dSame(3, 2): -inf "same" padding, then a 3x3 stride-2 max.  x [N, C, H, W]
Tensor max_pool_same(const Tensor& x) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int ph = same_pad(H, 3, 2), pw = same_pad(W, 3, 2);
  const int64_t OH = (H + ph - 3) / 2 + 1, OW = (W + pw - 3) / 2 + 1, t = ph / 2, l = pw / 2;
  Tensor y = Tensor::empty({N, C, OH, OW});
  for (int64_t p = 0; p < N * C; p++) {
    const float* s = x.f32() + p * H * W;
    float* d = y.f32() + p * OH * OW;
    for (int64_t oy = 0; oy < OH; oy++)
      for (int64_t ox = 0; ox < OW; ox++) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t iy = oy * 2 - t; iy < oy * 2 - t + 3; iy++)
          for (int64_t ix = ox * 2 - l; ix < ox * 2 - l + 3; ix++)
            if (iy >= 0 && iy < H && ix >= 0 && ix < W) m = std::max(m, s[iy * W + ix]);
        d[oy * OW + ox] = m;
      }
  }
  return y;
}

void load_gn(nn::GroupNorm& g, const WeightStore& w, const std::string& key, int64_t c) {
  if (c % 32) fail("dpt_hybrid", w.source + ": " + key + " has " + std::to_string(c) + " channels (GroupNorm 32)");
  g.load(w, key, c, 32, 1e-5f);
}

}  // namespace

bool is_dpt_hybrid(const WeightStore& w) { return w.has(kProbe); }

void StdConvSame::load(const WeightStore& w, const std::string& key, int64_t in, int64_t out, int k_, int stride_) {
  k = k_, stride = stride_;
  const Tensor& src = w.get(key + ".weight", {out, in, k, k});
  weight = Tensor::empty(src.shape());
  const int64_t n = in * k * k;
  for (int64_t o = 0; o < out; o++) {  // F.batch_norm(training=True) over each output channel: biased variance
    const float* s = src.f32() + o * n;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++) mean += s[i];
    mean /= double(n);
    for (int64_t i = 0; i < n; i++) var += (s[i] - mean) * (s[i] - mean);
    var /= double(n);
    const double inv = 1.0 / std::sqrt(var + 1e-8);
    for (int64_t i = 0; i < n; i++) weight.f32()[o * n + i] = float((s[i] - mean) * inv);
  }
}

Tensor StdConvSame::operator()(const Tensor& x) const {
  const int ph = same_pad(x.size(2), k, stride), pw = same_pad(x.size(3), k, stride);
  ops::ConvParams p;
  p.stride_h = p.stride_w = stride;
  p.pad_t = ph / 2, p.pad_b = ph - ph / 2, p.pad_l = pw / 2, p.pad_r = pw - pw / 2;
  return ops::conv2d_ex(x, weight, Tensor(), p);
}

Tensor ResNetBottleneck::forward(const Tensor& x) const {
  Tensor sc = has_down ? down_norm(down_conv(x)) : x;
  Tensor h = norm1(conv1(x));
  ops::relu_(h);
  h = norm2(conv2(h));
  ops::relu_(h);
  h = norm3(conv3(h));
  ops::add_(h, sc);
  ops::relu_(h);
  return h;
}

DptHybrid DptHybrid::load(const std::string& path) {
  const WeightStore w = dpt::to_f32(load_weights(path));
  DptHybrid m;
  m.source = path;
  if (is_depth_anything(w))
    fail("dpt_hybrid", path + ": this is a Depth Anything V2 checkpoint, not MiDaS DPT-Hybrid (use depth_anything_v2)");
  if (!w.has(kProbe)) {
    if (w.has("pretrained.model.patch_embed.proj.weight") && w.has("scratch.refinenet1.out_conv.weight"))
      fail("dpt_hybrid", path + ": a ViT-only MiDaS DPT (dpt_large / dpt_base); only dpt_hybrid is supported");
    fail("dpt_hybrid", path + ": not a MiDaS DPT-Hybrid checkpoint (no '" + std::string(kProbe) + "')");
  }
  // ResNetV2 stem and stages.
  const Tensor& sw = w.get(kProbe);
  if (sw.dim() != 4 || sw.size(1) != 3 || sw.size(2) != 7)
    fail("dpt_hybrid", path + ": " + kProbe + " has shape " + shape_str(sw.shape()) + " (expected [c, 3, 7, 7])");
  int64_t ch = sw.size(0);
  m.stem_conv.load(w, kBackbone + "stem.conv", 3, ch, 7, 2);
  load_gn(m.stem_norm, w, kBackbone + "stem.norm", ch);
  for (int s = 0; w.has(kBackbone + "stages." + std::to_string(s) + ".blocks.0.conv1.weight"); s++) {
    std::vector<ResNetBottleneck> st;
    for (int b = 0;; b++) {
      const std::string p = kBackbone + "stages." + std::to_string(s) + ".blocks." + std::to_string(b) + ".";
      if (!w.has(p + "conv1.weight")) break;
      ResNetBottleneck r;
      const int64_t mid = w.get(p + "conv1.weight").size(0), out = w.get(p + "conv3.weight").size(0);
      const int stride = (b == 0 && s > 0) ? 2 : 1;
      r.conv1.load(w, p + "conv1", ch, mid, 1, 1);
      r.conv2.load(w, p + "conv2", mid, mid, 3, stride);
      r.conv3.load(w, p + "conv3", mid, out, 1, 1);
      load_gn(r.norm1, w, p + "norm1", mid);
      load_gn(r.norm2, w, p + "norm2", mid);
      load_gn(r.norm3, w, p + "norm3", out);
      r.has_down = w.has(p + "downsample.conv.weight");
      if (r.has_down) {
        r.down_conv.load(w, p + "downsample.conv", ch, out, 1, stride);
        load_gn(r.down_norm, w, p + "downsample.norm", out);
      } else if (ch != out || stride != 1) {
        fail("dpt_hybrid", path + ": " + p + "downsample.conv.weight missing");
      }
      ch = out;
      st.push_back(std::move(r));
    }
    m.stages.push_back(std::move(st));
  }
  if (m.stages.size() != 3)
    fail("dpt_hybrid", path + ": " + std::to_string(m.stages.size()) + " ResNet stages (expected 3)");
  const int64_t c1 = m.stages[0].back().conv3.weight.size(0), c2 = m.stages[1].back().conv3.weight.size(0);

  // ViT.
  m.cls_token = w.get("pretrained.model.cls_token");
  if (m.cls_token.dim() != 3) fail("dpt_hybrid", path + ": pretrained.model.cls_token is not [1, 1, C]");
  const int64_t C = m.C = m.cls_token.size(2);
  m.heads = (int)std::max<int64_t>(1, C / 64);  // ViT-B: 12 heads of 64
  m.patch_proj.load(w, "pretrained.model.patch_embed.proj", ch, C, 1, 1, 0);
  m.pos_embed = w.get("pretrained.model.pos_embed");
  const int64_t N = m.pos_embed.dim() == 3 ? m.pos_embed.size(1) - 1 : 0, g = (int64_t)std::llround(std::sqrt(double(N)));
  if (N <= 0 || g * g != N || m.pos_embed.size(2) != C)
    fail("dpt_hybrid", path + ": pretrained.model.pos_embed has shape " + shape_str(m.pos_embed.shape()));
  int L = 0;
  while (w.has("pretrained.model.blocks." + std::to_string(L) + ".attn.qkv.weight")) L++;
  if (L < 4) fail("dpt_hybrid", path + ": " + std::to_string(L) + " ViT blocks (at least 4 needed)");
  m.taps = {L - 4, L - 1};
  m.blocks.resize(L);
  for (int i = 0; i < L; i++) m.blocks[i].load(w, "pretrained.model.blocks." + std::to_string(i), C, 1e-6f, false);

  // Reassemble (layers 3, 4), neck, head.
  if (!w.has("pretrained.act_postprocess3.0.project.0.weight"))
    fail("dpt_hybrid", path + ": only the 'project' readout is supported (no pretrained.act_postprocess3.0.project.0)");
  const int64_t c3 = w.get("pretrained.act_postprocess3.3.weight").size(0);
  const int64_t c4 = w.get("pretrained.act_postprocess4.3.weight").size(0);
  for (int i = 0; i < 2; i++) {
    const std::string p = "pretrained.act_postprocess" + std::to_string(i + 3);
    m.readout[i].load(w, p + ".0.project.0", 2 * C, C);
    m.post[i].load(w, p + ".3", p + ".4", C, i ? c4 : c3, i ? -2 : 1);
  }
  const int64_t F = w.get("scratch.layer1_rn.weight").size(0);
  m.neck.load(w, "scratch", {c1, c2, c3, c4}, F);
  m.head.load(w, "scratch.output_conv.0", "scratch.output_conv.2", "scratch.output_conv.4", F);
  return m;
}

Tensor DptHybrid::forward(const Tensor& x) const {
  if (x.dim() != 4 || x.size(0) != 1 || x.size(1) != 3)
    fail("dpt_hybrid", "input must be [1, 3, H, W], got " + x.str());
  const int64_t H = x.size(2), W = x.size(3);
  if (H % 32 || W % 32)
    fail("dpt_hybrid", "input " + std::to_string(W) + "x" + std::to_string(H) + " is not a multiple of 32");
  // ResNet: stem, stages; stages 0 and 1 are DPT's layers 1 and 2.
  Tensor h = stem_norm(stem_conv(x));
  ops::relu_(h);
  h = max_pool_same(h);
  std::array<Tensor, 4> layers;
  for (size_t s = 0; s < stages.size(); s++) {
    for (auto& b : stages[s]) h = b.forward(h);
    if (s < 2) layers[s] = h;
  }
  // ViT on the stride-16 grid: [cls, proj(features)] + position embeddings resized bilinearly (align_corners=False).
  const int64_t gh = H / 16, gw = W / 16, n = gh * gw, N = pos_embed.size(1) - 1,
                g = (int64_t)std::llround(std::sqrt(double(N)));
  Tensor t = ops::nchw_to_nlc(patch_proj(h));  // [1, n, C]
  if (t.size(1) != n) fail("dpt_hybrid", "internal: token grid " + t.str());
  Tensor grid = Tensor::empty({1, C, g, g});
  for (int64_t i = 0; i < N; i++)
    for (int64_t c = 0; c < C; c++) grid.f32()[c * N + i] = pos_embed.f32()[(1 + i) * C + c];
  Tensor pg = ops::interpolate_bilinear(grid, gh, gw, false);  // [1, C, gh, gw]
  Tensor tok = Tensor::empty({1, 1 + n, C});
  for (int64_t c = 0; c < C; c++) tok.f32()[c] = cls_token.f32()[c] + pos_embed.f32()[c];
  for (int64_t i = 0; i < n; i++)
    for (int64_t c = 0; c < C; c++) tok.f32()[(1 + i) * C + c] = t.f32()[i * C + c] + pg.f32()[c * n + i];
  int k = 0;
  for (int i = 0; i < (int)blocks.size() && k < 2; i++) {
    tok = blocks[i].forward(tok, heads);
    if (i == taps[k]) {
      layers[2 + k] = post[k].forward(dpt::project_readout(tok, readout[k], gh, gw));
      k++;
    }
  }
  return head.forward(neck.forward(layers), H, W);  // [1, H, W]
}

}  // namespace easel::pp
