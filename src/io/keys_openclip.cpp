#include "io/keys_openclip.h"

#include <cstring>
#include <set>
#include <utility>

namespace easel::keys {
namespace {

const char* kBlocks = "transformer.resblocks.";

// Parses "transformer.resblocks.<i>.<rest>"; false when the key is not a resblock key.
bool parse_block(const std::string& key, int& index, std::string& rest) {
  const std::string p = kBlocks;
  if (key.compare(0, p.size(), p) != 0) return false;
  size_t dot = key.find('.', p.size());
  if (dot == std::string::npos || dot == p.size()) return false;
  for (size_t i = p.size(); i < dot; i++)
    if (key[i] < '0' || key[i] > '9') return false;
  index = std::stoi(key.substr(p.size(), dot - p.size()));
  rest = key.substr(dot + 1);
  return true;
}

// [R, C] -> [C, R], same dtype, bit-exact.
Tensor transpose2d(const Tensor& t) {
  const int64_t r = t.size(0), c = t.size(1);
  const size_t e = dtype_size(t.dtype());
  Tensor out = Tensor::empty({c, r}, t.dtype());
  const char* src = static_cast<const char*>(t.raw());
  char* dst = static_cast<char*>(out.raw());
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < c; j++) std::memcpy(dst + (j * r + i) * e, src + (i * c + j) * e, e);
  return out;
}

}  // namespace

int openclip_layers(const WeightStore& src) {
  std::set<int> seen;
  int idx;
  std::string rest;
  for (auto& k : src.keys_with_prefix(kBlocks))
    if (parse_block(k, idx, rest)) seen.insert(idx);
  int n = (int)seen.size();
  if (n && *seen.rbegin() != n - 1)
    fail("checkpoint", src.source + ": OpenCLIP resblocks are not numbered 0.." + std::to_string(n - 1));
  return n;
}

WeightStore openclip_to_hf(const WeightStore& src, int keep_layers, std::vector<std::string>& unknown,
                           const std::string& report_prefix, bool keep_projection) {
  static const std::vector<std::pair<std::string, std::string>> top = {
      {"token_embedding.weight", "embeddings.token_embedding.weight"},
      {"positional_embedding", "embeddings.position_embedding.weight"},
      {"ln_final.weight", "final_layer_norm.weight"},
      {"ln_final.bias", "final_layer_norm.bias"}};
  static const std::set<std::string> dropped = {"text_projection", "logit_scale", "attn_mask"};
  static const std::vector<std::pair<std::string, std::string>> in_block = {
      {"ln_1.weight", "layer_norm1.weight"},
      {"ln_1.bias", "layer_norm1.bias"},
      {"ln_2.weight", "layer_norm2.weight"},
      {"ln_2.bias", "layer_norm2.bias"},
      {"attn.out_proj.weight", "self_attn.out_proj.weight"},
      {"attn.out_proj.bias", "self_attn.out_proj.bias"},
      {"mlp.c_fc.weight", "mlp.fc1.weight"},
      {"mlp.c_fc.bias", "mlp.fc1.bias"},
      {"mlp.c_proj.weight", "mlp.fc2.weight"},
      {"mlp.c_proj.bias", "mlp.fc2.bias"}};

  WeightStore out;
  out.source = src.source;
  out.metadata = src.metadata;
  for (auto& [key, t] : src.tensors) {
    bool done = false;
    for (auto& [from, to] : top)
      if (key == from) out.tensors[to] = t, done = true;
    if (done) continue;
    if (key == "text_projection" && keep_projection) {
      if (t.dim() != 2)
        fail("checkpoint", src.source + ": tensor '" + report_prefix + key + "' has shape " + shape_str(t.shape()) +
                               ", expected [width, proj]");
      out.tensors["text_projection.weight"] = transpose2d(t);  // [proj, C]
      continue;
    }
    if (dropped.count(key)) continue;
    int i;
    std::string rest;
    if (!parse_block(key, i, rest)) {
      unknown.push_back(report_prefix + key);
      continue;
    }
    if (i >= keep_layers) continue;  // layers after the one SD2 conditions on
    const std::string p = "encoder.layers." + std::to_string(i) + ".";
    for (auto& [from, to] : in_block)
      if (rest == from) out.tensors[p + to] = t, done = true;
    if (done) continue;
    if (rest == "attn.in_proj_weight" || rest == "attn.in_proj_bias") {
      // [3C, C] (or [3C]) = q, k, v stacked along dim 0.
      if (t.size(0) % 3 != 0)
        fail("checkpoint", src.source + ": tensor '" + report_prefix + key + "' has shape " + shape_str(t.shape()) +
                               ", expected a first dimension divisible by 3");
      const int64_t c = t.size(0) / 3;
      const std::string kind = rest == "attn.in_proj_weight" ? "weight" : "bias";
      out.tensors[p + "self_attn.q_proj." + kind] = t.slice0(0, c);
      out.tensors[p + "self_attn.k_proj." + kind] = t.slice0(c, c);
      out.tensors[p + "self_attn.v_proj." + kind] = t.slice0(2 * c, c);
      continue;
    }
    unknown.push_back(report_prefix + key);
  }
  return out;
}

bool is_clip_text_key(const std::string& key) {
  static const std::set<std::string> top = {"embeddings.token_embedding.weight", "embeddings.position_embedding.weight",
                                            "final_layer_norm.weight", "final_layer_norm.bias"};
  if (top.count(key)) return true;
  const std::string p = "encoder.layers.";
  if (key.compare(0, p.size(), p) != 0) return false;
  size_t dot = key.find('.', p.size());
  if (dot == std::string::npos || dot == p.size() ||
      key.substr(p.size(), dot - p.size()).find_first_not_of("0123456789") != std::string::npos)
    return false;
  static const std::set<std::string> in_layer = {
      "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
      "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
      "layer_norm1.weight", "layer_norm1.bias", "layer_norm2.weight", "layer_norm2.bias",
      "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"};
  return in_layer.count(key.substr(dot + 1)) != 0;
}

}  // namespace easel::keys
