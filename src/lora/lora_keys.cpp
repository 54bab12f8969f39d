// LoRA key names -> easel modules (see lora.h for the formats).
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/loaders/lora_conversion_utils.py
//   https://github.com/kohya-ss/sd-scripts/blob/main/networks/lora.py (LORA_PREFIX_*, '.'->'_' names)
#include <algorithm>

#include "lora/lora.h"

namespace easel::lora {

const char* target_name(Target t) {
  switch (t) {
    case Target::UNet: return "unet";
    case Target::TextEncoder: return "text_encoder";
    case Target::TextEncoder2: return "text_encoder_2";
  }
  return "?";
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::LoRA: return "lora";
    case Kind::LoHa: return "loha";
    case Kind::LoKr: return "lokr";
    case Kind::Full: return "full";
  }
  return "?";
}

namespace detail {
namespace {

bool starts(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}
std::string flat(std::string s) {
  std::replace(s.begin(), s.end(), '.', '_');
  return s;
}

// Module name -> '.'->'_' name for every "<module>.weight" of a store; a name two modules
// flatten to is kept as "" (ambiguous, never matched).
std::map<std::string, std::string> flat_index(const WeightStore& ws) {
  std::map<std::string, std::string> m;
  for (auto& [k, t] : ws.tensors) {
    if (!ends(k, ".weight")) continue;
    std::string mod = k.substr(0, k.size() - 7);
    auto [it, fresh] = m.emplace(flat(mod), mod);
    if (!fresh && it->second != mod) it->second = "";
  }
  return m;
}

}  // namespace

bool split_key(const std::string& key, std::string& prefix, std::string& param) {
  // Longest suffixes first where one ends another.
  static const std::vector<std::pair<std::string, std::string>> suffixes = {
      {".lora_down.weight", "down"}, {".lora_up.weight", "up"}, {".lora_mid.weight", "mid"},
      {".lora_A.weight", "down"}, {".lora_B.weight", "up"},
      {".lora_linear_layer.down.weight", "down"}, {".lora_linear_layer.up.weight", "up"},
      {"_lora.down.weight", "down"}, {"_lora.up.weight", "up"},  // old attention processors
      {".lora.down.weight", "down"}, {".lora.up.weight", "up"},
      {".lora_magnitude_vector.weight", "magnitude"}, {".lora_magnitude_vector", "magnitude"},
      {".dora_scale", "dora_scale"}, {".alpha", "alpha"}, {".scale", "scale"},
      {".hada_w1_a", "hada_w1_a"}, {".hada_w1_b", "hada_w1_b"}, {".hada_w2_a", "hada_w2_a"},
      {".hada_w2_b", "hada_w2_b"}, {".hada_t1", "hada_t1"}, {".hada_t2", "hada_t2"},
      {".lokr_w1_a", "lokr_w1_a"}, {".lokr_w1_b", "lokr_w1_b"}, {".lokr_w2_a", "lokr_w2_a"},
      {".lokr_w2_b", "lokr_w2_b"}, {".lokr_w1", "lokr_w1"}, {".lokr_w2", "lokr_w2"},
      {".lokr_t1", "lokr_t1"}, {".lokr_t2", "lokr_t2"}, {".diff_b", "diff_b"}, {".diff", "diff"},
  };
  for (auto& [suf, p] : suffixes) {
    if (!ends(key, suf) || key.size() == suf.size()) continue;
    prefix = key.substr(0, key.size() - suf.size());
    param = p;
    if (suf[0] == '_') {  // "...attn1.processor.to_q" -> "...attn1.to_q"; to_out -> to_out.0
      size_t at = prefix.find(".processor.");
      if (at != std::string::npos) prefix.erase(at, 10);
      if (ends(prefix, ".to_out")) prefix += ".0";
    }
    return true;
  }
  return false;
}

Resolver::Resolver(const Checkpoint& ck) : ck_(ck) {
  unet_flat_ = flat_index(ck.unet);
  te_flat_ = flat_index(ck.text_encoder);
  te2_flat_ = flat_index(ck.text_encoder_2);
  ldm_ = keys::ldm_unet_table(ck.config.unet);
  for (auto& p : ldm_) p.from = flat(p.from);
}

const WeightStore* Resolver::store(Target t) const {
  switch (t) {
    case Target::UNet: return &ck_.unet;
    case Target::TextEncoder: return &ck_.text_encoder;
    case Target::TextEncoder2: return &ck_.text_encoder_2;
  }
  return nullptr;
}

// kohya UNet name (after "lora_unet_"): a diffusers path with '_' (SD1/SD2), else an LDM path
// (SDXL) renamed by the LDM table. The '_' vs '.' choice of the part after the table prefix is
// settled by trying each split against the model's weights (a handful of underscores).
bool Resolver::kohya_unet(const std::string& rest, std::string& module) const {
  auto it = unet_flat_.find(rest);
  if (it != unet_flat_.end() && !it->second.empty()) {
    module = it->second;
    return true;
  }
  const std::string r = rest + "_";
  for (auto& p : ldm_) {
    if (!starts(r, p.from)) continue;
    std::string tail = r.substr(p.from.size());
    if (!tail.empty()) tail.pop_back();
    std::vector<size_t> us;
    for (size_t i = 0; i < tail.size(); i++)
      if (tail[i] == '_') us.push_back(i);
    if (us.size() > 12) continue;
    for (uint32_t mask = 0; mask < (1u << us.size()); mask++) {
      std::string cand = tail;
      for (size_t b = 0; b < us.size(); b++)
        if (mask & (1u << b)) cand[us[b]] = '.';
      std::string suf = keys::rename_suffix(p.rule, cand.empty() ? "weight" : cand + ".weight");
      if (!suf.empty() && ck_.unet.has(p.to + suf)) {
        const std::string full = p.to + suf;  // "<module>.weight"
        module = full.substr(0, full.size() - 7);
        return true;
      }
    }
  }
  return false;
}

bool Resolver::resolve(const std::string& prefix, Target& target, std::string& module, std::string& why,
                       std::string& format) const {
  auto te_lookup = [&](Target t, std::string rest, bool flat_names) {
    target = t;
    const WeightStore& ws = *store(t);
    if (ws.tensors.empty()) {
      why = std::string("the model has no ") + target_name(t);
      return false;
    }
    if (flat_names) {
      if (starts(rest, "text_model_")) rest = rest.substr(11);
      auto& idx = t == Target::TextEncoder ? te_flat_ : te2_flat_;
      auto it = idx.find(rest);
      if (it != idx.end() && !it->second.empty()) {
        module = it->second;
        return true;
      }
    } else {
      if (starts(rest, "text_model.")) rest = rest.substr(11);
      // Old diffusers text-encoder attention processors: to_q/to_k/to_v/to_out.0.
      static const std::vector<std::pair<std::string, std::string>> old = {
          {".to_q", ".q_proj"}, {".to_k", ".k_proj"}, {".to_v", ".v_proj"}, {".to_out.0", ".out_proj"}};
      if (!ws.has(rest + ".weight"))
        for (auto& [a, b] : old)
          if (ends(rest, a)) rest = rest.substr(0, rest.size() - a.size()) + b;
      if (ws.has(rest + ".weight")) {
        module = rest;
        return true;
      }
    }
    why = std::string("no such module in the ") + target_name(t);
    return false;
  };
  if (starts(prefix, "lora_unet_")) {
    format = "kohya";
    target = Target::UNet;
    if (kohya_unet(prefix.substr(10), module)) return true;
    why = "no such module in the unet";
    return false;
  }
  if (starts(prefix, "lora_te1_")) return format = "kohya", te_lookup(Target::TextEncoder, prefix.substr(9), true);
  if (starts(prefix, "lora_te2_")) return format = "kohya", te_lookup(Target::TextEncoder2, prefix.substr(9), true);
  if (starts(prefix, "lora_te_")) return format = "kohya", te_lookup(Target::TextEncoder, prefix.substr(8), true);
  if (starts(prefix, "text_encoder_2.")) return format = "peft", te_lookup(Target::TextEncoder2, prefix.substr(15), false);
  if (starts(prefix, "text_encoder.")) return format = "peft", te_lookup(Target::TextEncoder, prefix.substr(13), false);
  format = "peft";
  target = Target::UNet;
  std::string rest = starts(prefix, "unet.") ? prefix.substr(5) : prefix;
  if (starts(rest, "base_model.model.")) rest = rest.substr(17);  // a raw PEFT state dict
  if (ck_.unet.has(rest + ".weight")) {
    module = rest;
    return true;
  }
  why = "no such module in the unet";
  return false;
}

}  // namespace detail
}  // namespace easel::lora
