// Shared DPT blocks; see dpt.h for the references.
#include "preprocess/dpt.h"

#include <cstring>

#include "core/error.h"

namespace easel::pp::dpt {

namespace {

// x [B, L, C] *= g [C] (LayerScale), in place.
void scale_channels_(Tensor& x, const Tensor& g) {
  const int64_t C = g.numel(), n = x.numel() / C;
  float* p = x.f32();
  const float* s = g.f32();
  for (int64_t i = 0; i < n; i++, p += C)
    for (int64_t c = 0; c < C; c++) p[c] *= s[c];
}

}  // namespace

WeightStore to_f32(const WeightStore& w) {
  WeightStore out;
  out.source = w.source;
  out.metadata = w.metadata;
  for (auto& [k, t] : w.tensors) {
    const DType d = t.dtype();
    out.tensors[k] = (d == DType::F16 || d == DType::BF16) ? t.to(DType::F32) : t;
  }
  return out;
}

void VitBlock::load(const WeightStore& w, const std::string& p, int64_t C, float eps, bool layer_scale) {
  norm1.load(w, p + ".norm1", C, eps);
  norm2.load(w, p + ".norm2", C, eps);
  qkv.load(w, p + ".attn.qkv", C, 3 * C);
  proj.load(w, p + ".attn.proj", C, C);
  const int64_t hidden = w.get(p + ".mlp.fc1.weight").size(0);
  fc1.load(w, p + ".mlp.fc1", C, hidden);
  fc2.load(w, p + ".mlp.fc2", hidden, C);
  ls1 = layer_scale ? w.get(p + ".ls1.gamma", {C}) : Tensor();
  ls2 = layer_scale ? w.get(p + ".ls2.gamma", {C}) : Tensor();
}

Tensor VitBlock::forward(const Tensor& x, int heads) const {
  const int64_t B = x.size(0), L = x.size(1), C = x.size(2);
  Tensor t = qkv(norm1(x));  // [B, L, 3C]: q | k | v along the channels (timm's reshape(B, N, 3, H, D))
  Tensor q = Tensor::empty({B, L, C}), k = Tensor::empty({B, L, C}), v = Tensor::empty({B, L, C});
  for (int64_t r = 0; r < B * L; r++) {
    const float* s = t.f32() + r * 3 * C;
    std::memcpy(q.f32() + r * C, s, C * sizeof(float));
    std::memcpy(k.f32() + r * C, s + C, C * sizeof(float));
    std::memcpy(v.f32() + r * C, s + 2 * C, C * sizeof(float));
  }
  Tensor a = proj(ops::attention(q, k, v, heads));  // [B, L, C]
  if (ls1.defined()) scale_channels_(a, ls1);
  Tensor y = ops::add(x, a);
  Tensor m = fc2(ops::gelu(fc1(norm2(y))));
  if (ls2.defined()) scale_channels_(m, ls2);
  ops::add_(y, m);
  return y;
}

Tensor tokens_to_map(const Tensor& t, int64_t h, int64_t w) {
  const int64_t B = t.size(0), L = t.size(1), C = t.size(2);
  EASEL_CHECK(L == 1 + h * w, "dpt", "internal: " + t.str() + " is not 1 + " + std::to_string(h) + "x" +
                                         std::to_string(w) + " tokens");
  Tensor out = Tensor::empty({B, C, h, w});
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < h * w; i++) {
      const float* s = t.f32() + (b * L + 1 + i) * C;
      float* d = out.f32() + b * C * h * w + i;
      for (int64_t c = 0; c < C; c++) d[c * h * w] = s[c];
    }
  return out;
}

Tensor project_readout(const Tensor& t, const nn::Linear& project, int64_t h, int64_t w) {
  const int64_t B = t.size(0), L = t.size(1), C = t.size(2);
  EASEL_CHECK(L == 1 + h * w, "dpt", "internal: token count " + t.str());
  Tensor cat = Tensor::empty({B, h * w, 2 * C});  // [patch token, class token]
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < h * w; i++) {
      float* d = cat.f32() + (b * h * w + i) * 2 * C;
      std::memcpy(d, t.f32() + (b * L + 1 + i) * C, C * sizeof(float));
      std::memcpy(d + C, t.f32() + b * L * C, C * sizeof(float));
    }
  return ops::nlc_to_nchw(ops::gelu(project(cat)), h, w);  // [B, C, h, w]
}

void Reassemble::load(const WeightStore& w, const std::string& pk, const std::string& rk, int64_t in, int64_t out,
                      int factor) {
  project.load(w, pk, in, out, 1);
  up = factor > 1 ? factor : 0;
  if (up) {
    up_w = w.get(rk + ".weight", {out, out, up, up});
    up_b = w.get(rk + ".bias", {out});
  }
  down = nn::Conv2d();
  if (factor < 0) down.load(w, rk, out, out, 3, 2, 1);
}

Tensor Reassemble::forward(const Tensor& x) const {
  Tensor y = project(x);
  if (up) y = ops::conv_transpose2d(y, up_w, up_b, up, 0);
  if (down.weight.defined()) y = down(y);
  return y;
}

void Rcu::load(const WeightStore& w, const std::string& p, int64_t c) {
  conv1.load(w, p + ".conv1", c, c, 3);
  conv2.load(w, p + ".conv2", c, c, 3);
}

Tensor Rcu::forward(const Tensor& x) const {
  Tensor h = conv1(ops::relu(x));
  ops::relu_(h);
  Tensor y = conv2(h);
  ops::add_(y, x);
  return y;
}

void Fusion::load(const WeightStore& w, const std::string& p, int64_t c) {
  rcu1.load(w, p + ".resConfUnit1", c);
  rcu2.load(w, p + ".resConfUnit2", c);
  out_conv.load(w, p + ".out_conv", c, c, 1);
}

Tensor Fusion::forward(const Tensor& x, const Tensor* skip, int64_t oh, int64_t ow) const {
  Tensor y = x;
  if (skip) {
    if (skip->shape() != x.shape())
      fail("dpt", "fusion: feature maps " + x.str() + " and " + skip->str() +
                      " differ (the input size must be a multiple of the network's stride)");
    y = ops::add(x, rcu1.forward(*skip));
  }
  y = rcu2.forward(y);
  return out_conv(ops::interpolate_bilinear(y, oh, ow, /*align_corners=*/true));
}

void Neck::load(const WeightStore& w, const std::string& p, const std::array<int64_t, 4>& in, int64_t features) {
  for (int i = 0; i < 4; i++) {
    layer_rn[i].load(w, p + ".layer" + std::to_string(i + 1) + "_rn", in[i], features, 3, 1, 1, /*bias=*/false);
    refinenet[i].load(w, p + ".refinenet" + std::to_string(i + 1), features);
  }
}

Tensor Neck::forward(const std::array<Tensor, 4>& layers) const {
  std::array<Tensor, 4> rn;
  for (int i = 0; i < 4; i++) rn[i] = layer_rn[i](layers[i]);
  Tensor p = refinenet[3].forward(rn[3], nullptr, rn[2].size(2), rn[2].size(3));
  p = refinenet[2].forward(p, &rn[2], rn[1].size(2), rn[1].size(3));
  p = refinenet[1].forward(p, &rn[1], rn[0].size(2), rn[0].size(3));
  return refinenet[0].forward(p, &rn[0], 2 * rn[0].size(2), 2 * rn[0].size(3));
}

void Head::load(const WeightStore& w, const std::string& k1, const std::string& k2, const std::string& k3,
                int64_t features) {
  conv1.load(w, k1, features, features / 2, 3);
  const int64_t hidden = w.get(k2 + ".weight").size(0);  // 32 in every released model
  conv2.load(w, k2, features / 2, hidden, 3);
  conv3.load(w, k3, hidden, 1, 1);
}

Tensor Head::forward(const Tensor& x, int64_t oh, int64_t ow) const {
  Tensor y = ops::interpolate_bilinear(conv1(x), oh, ow, /*align_corners=*/true);
  y = conv2(y);
  ops::relu_(y);
  y = conv3(y);
  ops::relu_(y);
  return y.reshape({y.size(0), oh, ow});
}

}  // namespace easel::pp::dpt
