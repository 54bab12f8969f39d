// Reading a LoRA-family file onto a model: grouping keys by module, checking factor shapes
// against each other and against the model weight, and the base-model check (see lora.h).
#include <cmath>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lora/lora.h"

namespace easel::lora {
namespace {

constexpr const char* kWhere = "lora";

bool has(const std::map<std::string, std::string>& p, const char* k) { return p.count(k) != 0; }

std::string sq(const Shape& s) {  // shape without trailing 1s past dim 2 (conv 1x1 == linear)
  Shape t = s;
  while (t.size() > 2 && t.back() == 1) t.pop_back();
  return shape_str(t);
}

// Finite check of every value of a float tensor.
bool finite(const Tensor& t) {
  if (t.dtype() != DType::F32 && t.dtype() != DType::F16 && t.dtype() != DType::BF16) return true;
  for (float x : t.to_vector())
    if (!std::isfinite(x)) return false;
  return true;
}

struct Group {
  std::map<std::string, std::string> params;  // param -> file key
  bool old_diffusers = false;
};

// Guess of the base model a file was made for, from names and real-model sizes.
std::string guess_base(const WeightStore& ws) {
  bool xl = false;
  int64_t ctx = 0, te = 0;
  for (auto& [k, t] : ws.tensors) {
    if (k.rfind("lora_te1_", 0) == 0 || k.rfind("lora_te2_", 0) == 0 || k.rfind("text_encoder_2.", 0) == 0 ||
        k.rfind("lora_unet_input_blocks_", 0) == 0 || k.rfind("lora_unet_middle_block_", 0) == 0 ||
        k.rfind("lora_unet_output_blocks_", 0) == 0 || k.find("add_embedding") != std::string::npos ||
        k.find("label_emb") != std::string::npos)
      xl = true;
    const bool down = k.find("lora_down") != std::string::npos || k.find("lora_A") != std::string::npos;
    if (down && t.dim() >= 2 && k.find("attn2") != std::string::npos &&
        (k.find("to_k") != std::string::npos || k.find("to_v") != std::string::npos))
      ctx = t.size(1);
    if (down && t.dim() >= 2 && (k.find("q_proj") != std::string::npos)) te = t.size(1);
  }
  if (xl || ctx == 2048) return "sdxl";
  if (ctx == 768 || te == 768) return "sd1";
  if (ctx == 1024 || te == 1024) return "sd2";
  return "";
}

// Checks the factors of `m` against each other and the model weight shape; sets kind, rank,
// scale. `key` is the module's key prefix in the file, `fam` the model family (for messages).
void check_module(Module& m, const std::string& file, const std::string& key, const std::string& fam) {
  auto T = [&](const char* n) -> const Tensor& { return m.t.at(n); };
  auto bad = [&](const std::string& what) {
    fail(kWhere, file + ": " + key + ": " + what + " (model weight " + m.module + ".weight is " +
                     shape_str(m.shape) + ")");
  };
  const int64_t out = m.shape[0], numel = shape_numel(m.shape), cols = numel / out;
  const bool conv = m.shape.size() == 4;
  Shape natural;  // ΔW's own shape; 2-D means "flattened columns" (compared by numel)
  auto need = [&](std::initializer_list<const char*> names) {
    for (auto n : names)
      if (!m.t.count(n)) bad(std::string("missing '") + n + "'");
  };
  auto dims = [&](const char* n, int64_t d) {
    if (T(n).dim() != d && !(d == 2 && T(n).dim() == 4 && T(n).size(2) * T(n).size(3) == 1))
      bad(std::string("'") + n + "' has shape " + shape_str(T(n).shape()));
  };
  if (m.t.count("diff")) {
    m.kind = Kind::Full;
    natural = T("diff").shape();
  } else if (m.t.count("hada_w1_a")) {
    m.kind = Kind::LoHa;
    need({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"});
    if (m.t.count("hada_t1")) {
      need({"hada_t2"});
      for (auto n : {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}) dims(n, 2);
      const Tensor &t1 = T("hada_t1"), &t2 = T("hada_t2");
      if (t1.dim() < 2 || t1.shape() != t2.shape() || T("hada_w1_a").size(0) != t1.size(0) ||
          T("hada_w1_b").size(0) != t1.size(1) || T("hada_w2_a").size(0) != t2.size(0) ||
          T("hada_w2_b").size(0) != t2.size(1) || T("hada_w1_a").shape() != T("hada_w2_a").shape() ||
          T("hada_w1_b").shape() != T("hada_w2_b").shape())
        bad("inconsistent Tucker LoHa factors");
      natural = {T("hada_w1_a").size(1), T("hada_w1_b").size(1)};
      for (int64_t i = 2; i < t1.dim(); i++) natural.push_back(t1.size(i));
    } else {
      const Tensor &a1 = T("hada_w1_a"), &b1 = T("hada_w1_b"), &a2 = T("hada_w2_a"), &b2 = T("hada_w2_b");
      if (a1.dim() != 2 || a2.dim() != 2 || b1.dim() < 2 || a1.size(1) != b1.size(0) || a2.size(1) != b2.size(0) ||
          a1.size(0) != a2.size(0) || b1.numel() / b1.size(0) != b2.numel() / b2.size(0))
        bad("inconsistent LoHa factors");
      natural = {a1.size(0), b1.numel() / b1.size(0)};
    }
    m.rank = (int)T("hada_w1_b").size(0);
  } else if (m.t.count("lokr_w1") || m.t.count("lokr_w1_a")) {
    m.kind = Kind::LoKr;
    int64_t a, c, b, x;
    if (m.t.count("lokr_w1")) {
      dims("lokr_w1", 2);
      a = T("lokr_w1").size(0), c = T("lokr_w1").size(1);
    } else {
      need({"lokr_w1_b"});
      dims("lokr_w1_a", 2), dims("lokr_w1_b", 2);
      if (T("lokr_w1_a").size(1) != T("lokr_w1_b").size(0)) bad("inconsistent lokr_w1_a/lokr_w1_b");
      a = T("lokr_w1_a").size(0), c = T("lokr_w1_b").size(1);
      m.rank = (int)T("lokr_w1_b").size(0);
    }
    Shape k;  // kernel of w2
    if (m.t.count("lokr_w2")) {
      const Tensor& w2 = T("lokr_w2");
      if (w2.dim() < 2) bad("'lokr_w2' has shape " + shape_str(w2.shape()));
      b = w2.size(0), x = w2.numel() / b;
      if (w2.dim() > 2) k.assign(w2.shape().begin() + 2, w2.shape().end());
      if (w2.dim() > 2) x = w2.size(1);
    } else {
      need({"lokr_w2_a", "lokr_w2_b"});
      const Tensor &wa = T("lokr_w2_a"), &wb = T("lokr_w2_b");
      if (m.t.count("lokr_t2")) {
        const Tensor& t = T("lokr_t2");
        if (wa.dim() != 2 || wb.dim() != 2 || t.dim() < 2 || t.size(0) != wa.size(0) || t.size(1) != wb.size(0))
          bad("inconsistent Tucker LoKr factors");
        b = wa.size(1), x = wb.size(1);
        k.assign(t.shape().begin() + 2, t.shape().end());
      } else {
        if (wa.dim() != 2 || wb.dim() < 2 || wa.size(1) != wb.size(0)) bad("inconsistent lokr_w2_a/lokr_w2_b");
        b = wa.size(0), x = wb.numel() / wb.size(0);
      }
      if (!m.rank) m.rank = (int)wb.size(0);
    }
    natural = {a * b, c * x};
    natural.insert(natural.end(), k.begin(), k.end());
  } else if (m.t.count("down") || m.t.count("up")) {
    m.kind = Kind::LoRA;
    need({"down", "up"});
    const Tensor &down = T("down"), &up = T("up");
    if (down.dim() < 2 || up.dim() < 2 || up.numel() != up.size(0) * up.size(1))
      bad("'up' " + shape_str(up.shape()) + " / 'down' " + shape_str(down.shape()) + " are not LoRA factors");
    m.rank = (int)down.size(0);
    if (m.t.count("mid")) {
      const Tensor& mid = T("mid");
      if (mid.dim() < 2 || mid.size(0) != up.size(1) || mid.size(1) != down.size(0) ||
          down.numel() != down.size(0) * down.size(1))
        bad("'mid' " + shape_str(mid.shape()) + " does not fit up " + shape_str(up.shape()) + " / down " +
            shape_str(down.shape()));
      natural = {up.size(0), down.size(1)};
      natural.insert(natural.end(), mid.shape().begin() + 2, mid.shape().end());
    } else {
      if (up.size(1) != down.size(0))
        bad("rank of 'up' " + shape_str(up.shape()) + " differs from 'down' " + shape_str(down.shape()));
      natural = down.shape();
      natural[0] = up.size(0);
    }
  } else {
    bad("no weight factors (only " + std::to_string(m.t.size()) + " scalar/scale tensors)");
  }
  // Against the model: same rows and numel; a 4-D ΔW must match W up to trailing 1s.
  const bool ok = natural[0] == out && shape_numel(natural) == numel &&
                  (natural.size() == 2 || sq(natural) == sq(m.shape));
  if (!ok) bad("delta shape " + shape_str(natural) + " does not fit the " + fam + " model (a LoRA for another base?)");
  (void)cols, (void)conv;
  if (m.t.count("diff_b")) {
    if (m.kind != Kind::Full) bad("'diff_b' without 'diff'");
    if (T("diff_b").numel() != out) bad("'diff_b' has shape " + shape_str(T("diff_b").shape()));
  }
  if (m.t.count("dora_scale")) {
    const Tensor& g = T("dora_scale");
    const int64_t in = m.shape.size() > 1 ? m.shape[1] : 1;
    const bool rows = g.size(0) == out && g.numel() == out, colsax = g.numel() == in && g.dim() >= 2 && g.size(1) == in;
    if (!rows && !colsax) bad("'dora_scale' has shape " + shape_str(g.shape()));
  }
  if (m.t.count("magnitude") && T("magnitude").numel() != out)
    bad("'lora_magnitude_vector' has shape " + shape_str(T("magnitude").shape()));
  // Scale: "scale" key, else alpha/rank; alpha absent (or 0, as LyCORIS) -> 1; full LoKr -> 1.
  if (m.t.count("scale")) {
    m.scale = T("scale").to_vector().at(0);
  } else if (m.alpha != 0 && m.rank > 0) {
    m.scale = m.alpha / (float)m.rank;
  } else {
    m.scale = 1;
  }
}

// PEFT alphas from safetensors metadata "lora_adapter_metadata" (diffusers save_lora_weights):
// flat keys "<part>.lora_alpha", "<part>.alpha_pattern" {module path suffix: alpha}, "<part>.use_rslora".
// A pattern key K matches module path P when P == K or P ends with "." + K (PEFT's regex
// "(.*\\.)?K$" for literal keys); the first match in file order wins, as in PEFT.
struct PeftAlphas {
  nlohmann::ordered_json j;
  bool ok = false;
  // False when the part has no metadata (then alpha = r, scale 1, as diffusers).
  bool alpha(const std::string& part, const std::string& path, float& a, bool& rslora) const {
    if (!ok || !j.contains(part + ".lora_alpha")) return false;
    a = j[part + ".lora_alpha"].get<float>();
    rslora = j.contains(part + ".use_rslora") && j[part + ".use_rslora"].is_boolean() && j[part + ".use_rslora"].get<bool>();
    auto pat = j.find(part + ".alpha_pattern");
    if (pat != j.end() && pat->is_object())
      for (auto it = pat->begin(); it != pat->end(); ++it) {
        const std::string& k = it.key();
        if (path == k || (path.size() > k.size() && path.compare(path.size() - k.size(), k.size(), k) == 0 &&
                          path[path.size() - k.size() - 1] == '.')) {
          a = it.value().get<float>();
          break;
        }
      }
    return true;
  }
};

}  // namespace

LoraFile read_lora(const std::string& path, const Checkpoint& ck) {
  LoraFile f;
  f.path = path;
  WeightStore ws = load_weights(path);
  f.metadata = ws.metadata;
  f.n_keys = ws.tensors.size();
  EASEL_CHECK(!ws.tensors.empty(), kWhere, path + ": no tensors");
  for (auto& [k, t] : ws.tensors)
    if (!finite(t)) fail(kWhere, path + ": tensor '" + k + "' has NaN/Inf values");
  f.base_guess = guess_base(ws);
  const std::string fam = ck.config.family;
  const bool model_xl = ck.config.is_sdxl();
  if (!f.base_guess.empty() && (f.base_guess == "sdxl") != model_xl)
    fail(kWhere, path + ": LoRA made for " + f.base_guess + ", the model is " + fam);

  std::map<std::string, Group> groups;  // module prefix -> params
  for (auto& [k, t] : ws.tensors) {
    std::string prefix, param;
    if (!detail::split_key(k, prefix, param)) {
      f.unmatched.push_back(k + " (unknown parameter name)");
      continue;
    }
    Group& g = groups[prefix];
    if (g.params.count(param))
      fail(kWhere, path + ": keys '" + g.params[param] + "' and '" + k + "' name the same tensor");
    g.params[param] = k;
    if (k.find("_lora.down.") != std::string::npos || k.find("_lora.up.") != std::string::npos) g.old_diffusers = true;
  }

  PeftAlphas peft;
  if (auto md = f.metadata.find("lora_adapter_metadata"); md != f.metadata.end()) {
    try {
      peft.j = nlohmann::ordered_json::parse(md->second);
      peft.ok = peft.j.is_object();
    } catch (const std::exception& e) {
      fail(kWhere, path + ": metadata 'lora_adapter_metadata' is not valid JSON: " + e.what());
    }
  }
  detail::Resolver res(ck);
  std::set<std::string> formats;
  std::vector<std::string> missing;  // first key of each group that names no module
  for (auto& [prefix, g] : groups) {
    Module m;
    std::string why, format;
    if (!res.resolve(prefix, m.target, m.module, why, format)) {
      if (m.target != Target::UNet && res.store(m.target)->tensors.empty() && fam != "sdxl_refiner")
        fail(kWhere, path + ": '" + g.params.begin()->second + "' targets " + target_name(m.target) +
                         " (a LoRA for SDXL); the model is " + fam);
      for (auto& [p, k] : g.params) f.unmatched.push_back(k + " (" + why + ")");
      missing.push_back(g.params.begin()->second);
      continue;
    }
    const bool lyco = has(g.params, "mid") || has(g.params, "hada_w1_a") || has(g.params, "lokr_w1") ||
                      has(g.params, "lokr_w1_a") || has(g.params, "dora_scale") || has(g.params, "diff");
    formats.insert(g.old_diffusers ? "diffusers_old" : format == "kohya" && lyco ? "lycoris" : format);
    m.shape = res.store(m.target)->tensors.at(m.module + ".weight").shape();
    for (auto& [p, k] : g.params) {
      const Tensor& t = ws.tensors.at(k);
      m.keys.push_back(k);
      if ((p == "alpha" || p == "scale") && t.numel() != 1)
        fail(kWhere, path + ": tensor '" + k + "' has shape " + shape_str(t.shape()) + ", expected a scalar");
      if (p == "alpha") {
        m.alpha = t.to_vector().at(0);
        continue;
      }
      if (t.numel() == 0) fail(kWhere, path + ": tensor '" + k + "' is empty");
      m.t[p] = t.to(DType::F32);
    }
    if (m.t.empty()) {  // only an alpha: reported, not applied
      for (auto& k : m.keys) f.unmatched.push_back(k + " (alpha without weights)");
      continue;
    }
    bool rslora = false;
    if (format == "peft" && !g.old_diffusers && !has(g.params, "alpha") && !has(g.params, "scale")) {
      const std::string part = prefix.rfind("text_encoder_2.", 0) == 0 ? "text_encoder_2"
                               : prefix.rfind("text_encoder.", 0) == 0 ? "text_encoder" : "unet";
      try {
        peft.alpha(part, m.module, m.alpha, rslora);
      } catch (const std::exception& e) {
        fail(kWhere, path + ": metadata 'lora_adapter_metadata': bad alpha for " + part + ": " + e.what());
      }
    }
    check_module(m, path, "module '" + prefix + "'", fam);
    if (rslora && m.rank > 0) m.scale = m.alpha / std::sqrt((float)m.rank);
    f.modules.push_back(std::move(m));
  }
  if (f.modules.empty())
    fail(kWhere, path + ": none of its " + std::to_string(f.n_keys) + " keys matches a module of the " + fam +
                     " model" + (f.base_guess.empty() ? "" : " (the LoRA looks made for " + f.base_guess + ")") +
                     (f.unmatched.empty() ? "" : "; first: " + f.unmatched.front()));
  // More modules missing than found: a LoRA for another base (e.g. SD1 names on SDXL).
  if (missing.size() > f.modules.size())
    fail(kWhere, path + ": " + std::to_string(missing.size()) + " of its " +
                     std::to_string(missing.size() + f.modules.size()) + " modules are not in the " + fam +
                     " model (a LoRA for another base model?); first: '" + missing.front() + "'");
  for (auto& s : formats) f.format += (f.format.empty() ? "" : "+") + s;
  return f;
}

std::string describe_lora(const std::string& path) {
  WeightStore ws = load_weights(path);
  std::map<std::string, Group> groups;
  std::vector<std::string> unknown;
  for (auto& [k, t] : ws.tensors) {
    std::string prefix, param;
    if (detail::split_key(k, prefix, param))
      groups[prefix].params[param] = k;
    else
      unknown.push_back(k);
  }
  std::map<std::string, int> kinds, targets, ranks, alphas;
  for (auto& [prefix, g] : groups) {
    auto& p = g.params;
    std::string kind = has(p, "hada_w1_a") ? "loha" : has(p, "lokr_w1") || has(p, "lokr_w1_a") ? "lokr"
                       : has(p, "diff") ? "full" : has(p, "down") ? (has(p, "mid") ? "locon-tucker" : "lora") : "";
    if (kind.empty()) continue;
    if (has(p, "dora_scale") || has(p, "magnitude")) kind += "+dora";
    kinds[kind]++;
    const std::string t = prefix.rfind("lora_te2_", 0) == 0 || prefix.rfind("text_encoder_2.", 0) == 0 ? "text_encoder_2"
                          : prefix.rfind("lora_te", 0) == 0 || prefix.rfind("text_encoder.", 0) == 0 ? "text_encoder"
                                                                                                    : "unet";
    targets[t]++;
    const char* rk = has(p, "down") ? "down" : has(p, "hada_w1_b") ? "hada_w1_b" : has(p, "lokr_w1_b") ? "lokr_w1_b"
                     : has(p, "lokr_w2_b") ? "lokr_w2_b" : nullptr;
    if (rk) ranks[std::to_string(ws.tensors.at(p.at(rk)).size(0))]++;
    if (has(p, "alpha") && ws.tensors.at(p.at("alpha")).numel() == 1) {
      std::ostringstream a;
      a << ws.tensors.at(p.at("alpha")).to_vector().at(0);
      alphas[a.str()]++;
    }
  }
  auto list = [](const std::map<std::string, int>& m) {
    std::string s;
    for (auto& [k, n] : m) s += (s.empty() ? "" : ", ") + k + " (" + std::to_string(n) + ")";
    return s.empty() ? std::string("-") : s;
  };
  std::ostringstream o;
  o << "LoRA file: " << path << "\n  tensors: " << ws.tensors.size() << ", modules: " << groups.size()
    << "\n  base guess: " << (guess_base(ws).empty() ? "unknown" : guess_base(ws)) << "\n  kinds: " << list(kinds)
    << "\n  targets: " << list(targets) << "\n  ranks: " << list(ranks) << "\n  alphas: " << list(alphas) << "\n";
  if (!unknown.empty()) o << "  unknown keys: " << unknown.size() << " (first: " << unknown.front() << ")\n";
  for (auto& [k, v] : ws.metadata)
    if (k.rfind("ss_", 0) == 0 || k == "modelspec.architecture" || k == "lora_adapter_metadata")
      o << "  " << k << ": " << (v.size() > 200 ? v.substr(0, 200) + "..." : v) << "\n";
  return o.str();
}

}  // namespace easel::lora
