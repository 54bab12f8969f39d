#include "lora/lora_apply.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <utility>

#include <openssl/evp.h>

#include "core/error.h"
#include "ops/ops.h"
#include "pipeline/params_text.h"

namespace easel::lora {

const WeightStore& store_of(const Checkpoint& ck, Target t) {
  switch (t) {
    case Target::UNet: return ck.unet;
    case Target::TextEncoder: return ck.text_encoder;
    default: return ck.text_encoder_2;
  }
}
WeightStore& store_of(Checkpoint& ck, Target t) { return const_cast<WeightStore&>(store_of(std::as_const(ck), t)); }

namespace {

Tensor to_f32_copy(const Tensor& t) { return t.dtype() == DType::F32 ? t.clone() : t.to(DType::F32); }

bool all_finite(const Tensor& t) {
  const float* p = t.f32();
  const int64_t n = t.numel();
  bool finite = true;
#pragma omp parallel for reduction(&& : finite) if (n > (1 << 20))
  for (int64_t i = 0; i < n; i++) finite = finite && std::isfinite(p[i]);
  return finite;
}

// acc += d (same numel, f32); false (acc unchanged from the first bad element on) when d has a NaN/Inf.
bool add_into(Tensor& acc, const Tensor& d) {
  float* a = acc.f32();
  const float* p = d.f32();
  const int64_t n = acc.numel();
  bool finite = true;
  for (int64_t i = 0; i < n; i++) finite &= std::isfinite(p[i]);
  if (!finite) return false;
  for (int64_t i = 0; i < n; i++) a[i] += p[i];
  return true;
}

bool parse_float(const std::string& s, float& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtof(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(v);
}
}  // namespace

void parse_lora_arg(const std::string& arg, std::string& path, float& unet, float& te) {
  path = arg;
  unet = te = 1.f;
  // Peel up to two trailing ":number" fields (paths may contain ':').
  std::vector<float> nums;
  std::string rest = arg;
  for (int k = 0; k < 2; k++) {
    size_t c = rest.rfind(':');
    if (c == std::string::npos) break;
    float v;
    std::string tail = rest.substr(c + 1);
    if (!parse_float(tail, v)) {
      if (k == 0 && !tail.empty() && (std::isdigit((unsigned char)tail[0]) || tail[0] == '-' || tail[0] == '.'))
        fail("lora", "--lora '" + arg + "': strength '" + tail + "' is not a number");
      break;
    }
    nums.insert(nums.begin(), v);
    rest = rest.substr(0, c);
  }
  if (rest.empty()) fail("lora", "--lora '" + arg + "': missing file name");
  path = rest;
  if (nums.size() >= 1) unet = te = nums[0];
  if (nums.size() == 2) te = nums[1];
}

std::string lora_short_hash(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("lora", path + ": cannot open");
  unsigned char hdr[8] = {};
  bool st = path.size() >= 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0;
  if (!st) return sha256_file(path).substr(0, 12);
  if (!f.read((char*)hdr, 8)) fail("lora", path + ": too short for a safetensors header");
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | hdr[i];
  f.seekg((std::streamoff)(8 + n));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) fail("lora", path + ": SHA-256 unavailable");
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), (std::streamsize)buf.size());
    if (f.gcount() > 0) EVP_DigestUpdate(ctx.get(), buf.data(), (size_t)f.gcount());
  }
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < 6 && i < len; i++) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

std::string summary(const LoraSpec& s) {
  size_t applied = 0;
  for (const Module& m : s.file.modules) applied += m.keys.size();
  char buf[160];
  std::snprintf(buf, sizeof buf, " (unet %g, te %g): applied %zu of %zu keys", s.unet_strength, s.te_strength,
                applied, s.file.n_keys);
  std::string out = "lora " + s.file.path + buf;
  if (!s.file.unmatched.empty()) {
    out += "; not applied: ";
    for (size_t i = 0; i < s.file.unmatched.size(); i++) {
      if (i == 8) {
        out += ", ... (" + std::to_string(s.file.unmatched.size() - 8) + " more)";
        break;
      }
      out += (i ? ", " : "") + s.file.unmatched[i];
    }
  }
  return out;
}

std::map<WeightId, Tensor> merged_weights(const Checkpoint& ck, const std::vector<LoraSpec>& specs,
                                          const std::function<const Tensor&(const WeightId&)>& original,
                                          const std::function<bool(const Module&)>& want) {
  std::map<WeightId, Tensor> merged;  // key -> W'
  for (const LoraSpec& spec : specs) {
    for (const Module& m : spec.file.modules) {
      if (want && !want(m)) continue;
      float s = m.target == Target::UNet ? spec.unet_strength : spec.te_strength;
      const WeightStore& st = store_of(ck, m.target);
      for (const char* suffix : {".weight", ".bias"}) {
        bool is_w = suffix[1] == 'w';
        std::string key = m.module + suffix;
        auto id = std::make_pair((int)m.target, key);
        Tensor* cur = nullptr;
        auto it = merged.find(id);
        if (it != merged.end()) cur = &it->second;
        Tensor d;
        if (is_w) {
          if (!st.has(key)) fail("lora", spec.file.path + ": model has no weight '" + key + "'");
          const Tensor& W = original(id);
          if (W.shape() != m.shape)
            fail("lora", spec.file.path + ": module '" + m.module + "' was read for another weight shape");
          if (s == 0 && !m.dora()) continue;
          if (!cur) cur = &(merged[id] = to_f32_copy(W));
          if (accumulate_delta(m, s, *cur)) {  // W' += ΔW in place (no ΔW temporary)
            if (!all_finite(*cur)) fail("lora", spec.file.path + ": non-finite delta for '" + key + "'");
            continue;
          }
          d = delta_weight(m, *cur, s);
        } else {
          d = delta_bias(m, s);
          if (!d.defined()) continue;
          if (!st.has(key)) fail("lora", spec.file.path + ": model has no bias '" + key + "'");
        }
        if (!cur) cur = &(merged[id] = to_f32_copy(original(id)));
        if (d.numel() != cur->numel()) fail("lora", spec.file.path + ": delta for '" + key + "' has the wrong size");
        if (!add_into(*cur, d)) fail("lora", spec.file.path + ": non-finite delta for '" + key + "'");
      }
    }
  }
  return merged;
}

void Merger::merge(Checkpoint& ck, const std::vector<LoraSpec>& specs) {
  // The weight before any merge: orig_ while LoRAs are merged, else the store's.
  auto original = [&](const WeightId& id) -> const Tensor& {
    auto o = orig_.find(id);
    return o != orig_.end() ? o->second : store_of(ck, (Target)id.first).get(id.second);
  };
  // Phase 1: compute every merged tensor from the originals (nothing in ck changes).
  std::map<WeightId, Tensor> merged = merged_weights(ck, specs, original);
  // Phase 2: restore, then swap in (no throwing operations beyond allocation of map nodes).
  unmerge(ck);
  for (auto& [id, w] : merged) {
    WeightStore& st = store_of(ck, (Target)id.first);
    Tensor& slot = st.tensors.at(id.second);
    orig_.emplace(id, slot);
    slot = w.reshape(slot.shape());
  }
  ops::clear_weight_cache();
}

void Merger::unmerge(Checkpoint& ck) {
  if (orig_.empty()) return;
  for (auto& [id, w] : orig_) store_of(ck, (Target)id.first).tensors.at(id.second) = w;
  orig_.clear();
  ops::clear_weight_cache();
}

}  // namespace easel::lora
