// CLIP text transformer; see clip.h for the reference and key layout.
#include "models/clip.h"

#include <cstring>

#include "core/error.h"

namespace easel {

namespace {

int64_t id_at(const Tensor& ids, int64_t i) {
  return ids.dtype() == DType::I64 ? ids.data<int64_t>()[i] : ids.data<int32_t>()[i];
}

}  // namespace

Tensor CLIPEncoderLayer::forward(const Tensor& x, int heads, bool quick_gelu) const {
  // Pre-LN: x + attn(ln1(x)), then x + mlp(ln2(x)).
  Tensor h = layer_norm1(x);                                   // [B, L, C]
  Tensor a = ops::attention(self_attn.q_proj(h), self_attn.k_proj(h), self_attn.v_proj(h), heads,
                            /*causal=*/true);                  // [B, L, C]
  Tensor y = ops::add(x, self_attn.out_proj(a));
  Tensor m = mlp.fc1(layer_norm2(y));                          // [B, L, I]
  m = quick_gelu ? ops::quick_gelu(m) : ops::gelu(m);
  ops::add_(y, mlp.fc2(m));
  return y;
}

void CLIPTextModel::load(const WeightStore& w_in, const TextEncoderConfig& cfg) {
  const bool nested = w_in.has("text_model.embeddings.token_embedding.weight");
  WeightStore sub;
  if (nested) sub = w_in.sub("text_model.");
  const WeightStore& w = nested ? sub : w_in;
  config = cfg;
  if (cfg.hidden_act != "quick_gelu" && cfg.hidden_act != "gelu")
    fail("clip", w_in.source + ": unsupported hidden_act '" + cfg.hidden_act + "'");
  const int64_t C = cfg.hidden_size, I = cfg.intermediate_size;
  if (cfg.num_attention_heads <= 0 || C % cfg.num_attention_heads != 0)
    fail("clip", w_in.source + ": hidden_size " + std::to_string(C) + " not divisible by " +
                     std::to_string(cfg.num_attention_heads) + " heads");
  embeddings.token_embedding = w.get("embeddings.token_embedding.weight", {cfg.vocab_size, C});
  embeddings.position_embedding = w.get("embeddings.position_embedding.weight", {cfg.max_position_embeddings, C});
  layers.assign(cfg.num_hidden_layers, {});
  for (int i = 0; i < cfg.num_hidden_layers; i++) {
    std::string p = "encoder.layers." + std::to_string(i) + ".";
    CLIPEncoderLayer& L = layers[i];
    L.layer_norm1.load(w, p + "layer_norm1", C, cfg.layer_norm_eps);
    L.layer_norm2.load(w, p + "layer_norm2", C, cfg.layer_norm_eps);
    L.self_attn.q_proj.load(w, p + "self_attn.q_proj", C, C);
    L.self_attn.k_proj.load(w, p + "self_attn.k_proj", C, C);
    L.self_attn.v_proj.load(w, p + "self_attn.v_proj", C, C);
    L.self_attn.out_proj.load(w, p + "self_attn.out_proj", C, C);
    L.mlp.fc1.load(w, p + "mlp.fc1", C, I);
    L.mlp.fc2.load(w, p + "mlp.fc2", I, C);
  }
  final_layer_norm.load(w, "final_layer_norm", C, cfg.layer_norm_eps);
  // text_projection sits beside text_model (CLIPTextModelWithProjection), so look in the outer store.
  text_projection = Tensor();
  if (w_in.has("text_projection.weight"))
    text_projection = w_in.get("text_projection.weight", {w_in.get("text_projection.weight").size(0), C});
}

std::vector<Tensor> CLIPTextModel::hidden_states(const Tensor& ids, int n_layers) const {
  if (layers.empty()) fail("clip", "model not loaded");
  if (ids.dim() != 2 || (ids.dtype() != DType::I64 && ids.dtype() != DType::I32))
    fail("clip", "input ids must be i64/i32 [B, L], got " + ids.str());
  const int64_t B = ids.size(0), L = ids.size(1), C = config.hidden_size;
  if (L > config.max_position_embeddings)
    fail("clip", "sequence of " + std::to_string(L) + " ids exceeds max_position_embeddings " +
                     std::to_string(config.max_position_embeddings));
  if (n_layers < 0 || n_layers > (int)layers.size()) n_layers = (int)layers.size();

  Tensor x = ops::embedding(embeddings.token_embedding, ids);  // [B, L, C]
  Tensor pos = Tensor::empty({L, C});                          // rows 0..L-1 of the position table
  convert_to_f32(embeddings.position_embedding.raw(), embeddings.position_embedding.dtype(), pos.f32(), L * C);
  for (int64_t b = 0; b < B; b++) {
    float* xp = x.f32() + b * L * C;
    for (int64_t i = 0; i < L * C; i++) xp[i] += pos.f32()[i];
  }
  std::vector<Tensor> hs{x};
  const bool qg = config.hidden_act == "quick_gelu";
  for (int i = 0; i < n_layers; i++) hs.push_back(layers[i].forward(hs.back(), config.num_attention_heads, qg));
  return hs;
}

Tensor CLIPTextModel::forward(const Tensor& ids, int clip_skip) const {
  if (clip_skip < 1) clip_skip = 1;
  if (clip_skip > (int)layers.size())
    fail("clip", "clip_skip " + std::to_string(clip_skip) + " exceeds the " + std::to_string(layers.size()) + " layers");
  auto hs = hidden_states(ids, (int)layers.size() - (clip_skip - 1));
  return final_layer_norm(hs.back());
}

Tensor CLIPTextModel::hidden_layer(const Tensor& ids, int skip, Tensor* projected, int eos_id) const {
  const int n = (int)layers.size();
  if (skip < 1 || skip > n)
    fail("clip", "hidden_layer: skip " + std::to_string(skip) + " outside 1.." + std::to_string(n) + " layers");
  if (projected && !text_projection.defined())
    fail("clip", "hidden_layer: this text encoder has no text_projection.weight for the pooled output");
  auto hs = hidden_states(ids, projected ? n : n - skip);  // [0] embeddings, [i] layer i
  if (projected) *projected = project(pooled(final_layer_norm(hs.back()), ids, eos_id));  // [B, proj]
  return hs[n - skip];
}

Tensor CLIPTextModel::pooled(const Tensor& hidden, const Tensor& ids, int eos_id) {
  const int64_t B = hidden.size(0), L = hidden.size(1), C = hidden.size(2);
  if (ids.dim() != 2 || ids.size(0) != B || ids.size(1) != L)
    fail("clip", "pooled: ids " + ids.str() + " do not match hidden " + hidden.str());
  Tensor out = Tensor::empty({B, C});
  for (int64_t b = 0; b < B; b++) {
    int64_t at = -1, best = 0;
    for (int64_t i = 0; i < L && at < 0; i++)
      if (id_at(ids, b * L + i) == eos_id) at = i;
    if (at < 0)
      for (int64_t i = 0; i < L; i++)
        if (i == 0 || id_at(ids, b * L + i) > best) best = id_at(ids, b * L + i), at = i;
    std::memcpy(out.f32() + b * C, hidden.f32() + (b * L + at) * C, C * sizeof(float));
  }
  return out;
}

Tensor CLIPTextModel::project(const Tensor& pooled) const {
  if (!text_projection.defined()) fail("clip", "project: this text encoder has no text_projection.weight");
  return ops::linear(pooled, text_projection, Tensor());
}

}  // namespace easel
