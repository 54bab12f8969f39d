// ConvNeXt backbone (transformers ConvNextBackbone). See convnext.h.
#include "preprocess/convnext.h"

#include "core/error.h"

namespace easel::pp {

namespace {
constexpr float kEps = 1e-6f;  // ConvNextLayerNorm default, used everywhere in the backbone
}

Tensor layer_norm_channels_first(const Tensor& x, const nn::LayerNorm& ln) {
  const int64_t H = x.size(2), W = x.size(3);
  return ops::nlc_to_nchw(ln(ops::nchw_to_nlc(x)), H, W);
}

void ConvNextLayer::load(const WeightStore& w, const std::string& prefix, int64_t c) {
  dwconv_weight = w.get(nn::join(prefix, "dwconv.weight"), {c, 1, 7, 7});
  dwconv_bias = w.get(nn::join(prefix, "dwconv.bias"), {c});
  layernorm.load(w, nn::join(prefix, "layernorm"), c, kEps);
  const int64_t hidden = w.get(nn::join(prefix, "pwconv1.weight")).size(0);  // 4C in every released model
  pwconv1.load(w, nn::join(prefix, "pwconv1"), c, hidden);
  pwconv2.load(w, nn::join(prefix, "pwconv2"), hidden, c);
  layer_scale_parameter = w.get_opt(nn::join(prefix, "layer_scale_parameter"), {c});
  if (layer_scale_parameter.defined()) layer_scale_parameter = layer_scale_parameter.to(DType::F32);
}

Tensor ConvNextLayer::operator()(const Tensor& x) const {
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor h = ops::conv2d_ex(x, dwconv_weight, dwconv_bias, ops::ConvParams::same(1, 3, (int)C));  // depthwise
  Tensor t = layernorm(ops::nchw_to_nlc(h));  // [N, HW, C]
  t = pwconv2(ops::gelu(pwconv1(t)));         // [N, HW, C]
  if (layer_scale_parameter.defined()) {
    const float* g = layer_scale_parameter.f32();
    float* p = t.f32();
    const int64_t rows = t.numel() / C;
#pragma omp parallel for if (rows > 4096)
    for (int64_t r = 0; r < rows; r++)
      for (int64_t c = 0; c < C; c++) p[r * C + c] *= g[c];
  }
  Tensor y = ops::nlc_to_nchw(t, H, W);
  ops::add_(y, x);  // residual (drop path is the identity at inference)
  return y;
}

void ConvNextBackbone::load(const WeightStore& w, const std::string& prefix) {
  auto key = [&](const std::string& k) { return nn::join(prefix, k); };
  const Tensor& pw = w.get(key("embeddings.patch_embeddings.weight"));
  if (pw.dim() != 4 || pw.size(1) != 3 || pw.size(2) != pw.size(3))
    fail("convnext", w.source + ": " + key("embeddings.patch_embeddings.weight") + " has shape " +
                         shape_str(pw.shape()) + ", expected [C, 3, p, p]");
  patch_size = (int)pw.size(2);
  hidden_sizes.clear(), depths.clear(), stages.clear(), out_norms.clear();
  for (int s = 0;; s++) {
    const std::string sp = key("encoder.stages." + std::to_string(s));
    if (!w.has(sp + ".layers.0.dwconv.weight")) break;
    const int64_t c = w.get(sp + ".layers.0.dwconv.weight").size(0);
    ConvNextStage st;
    if (s > 0) {
      const int64_t prev = hidden_sizes.back();
      st.down_norm.load(w, sp + ".downsampling_layer.0", prev, kEps);
      st.down_weight = w.get(sp + ".downsampling_layer.1.weight", {c, prev, 2, 2});
      st.down_bias = w.get(sp + ".downsampling_layer.1.bias", {c});
    }
    int n = 0;
    while (w.has(sp + ".layers." + std::to_string(n) + ".dwconv.weight")) n++;
    st.layers.resize(n);
    for (int i = 0; i < n; i++) st.layers[i].load(w, sp + ".layers." + std::to_string(i), c);
    hidden_sizes.push_back(c);
    depths.push_back(n);
    stages.push_back(std::move(st));
  }
  if (stages.empty())
    fail("convnext", w.source + ": no ConvNeXt stages (expected " + key("encoder.stages.0.layers.0.dwconv.weight") + ")");
  patch_weight = w.get(key("embeddings.patch_embeddings.weight"), {hidden_sizes[0], 3, patch_size, patch_size});
  patch_bias = w.get(key("embeddings.patch_embeddings.bias"), {hidden_sizes[0]});
  embed_norm.load(w, key("embeddings.layernorm"), hidden_sizes[0], kEps);
  out_norms.resize(stages.size());
  for (size_t s = 0; s < stages.size(); s++)
    out_norms[s].load(w, key("hidden_states_norms.stage" + std::to_string(s + 1)), hidden_sizes[s], kEps);
}

std::vector<Tensor> ConvNextBackbone::operator()(const Tensor& x) const {
  if (x.size(2) < patch_size * (1 << (stages.size() - 1)) || x.size(3) < patch_size * (1 << (stages.size() - 1)))
    fail("convnext", "input " + x.str() + " is smaller than the backbone's total stride");
  Tensor h = ops::conv2d_ex(x, patch_weight, patch_bias, ops::ConvParams::same(patch_size, 0));
  h = layer_norm_channels_first(h, embed_norm);
  std::vector<Tensor> out;
  for (size_t s = 0; s < stages.size(); s++) {
    const ConvNextStage& st = stages[s];
    if (s > 0) {
      h = layer_norm_channels_first(h, st.down_norm);
      h = ops::conv2d_ex(h, st.down_weight, st.down_bias, ops::ConvParams::same(2, 0));
    }
    for (auto& l : st.layers) h = l(h);
    out.push_back(layer_norm_channels_first(h, out_norms[s]));  // hidden_states_norms.stage{s+1}
  }
  return out;
}

}  // namespace easel::pp
