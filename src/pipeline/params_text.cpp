#include "pipeline/params_text.h"

#include <openssl/evp.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/error.h"

namespace easel {

std::string a1111_sampler_name(const std::string& s) {
  if (s == "euler") return "Euler";
  if (s == "euler_a") return "Euler a";
  if (s == "ddim") return "DDIM";
  if (s == "dpmpp_2m") return "DPM++ 2M";
  return s;
}

// A1111 quotes values containing ',', ':' or '"' as JSON strings (infotext_utils.quote).
static std::string quote(const std::string& v) {
  if (v.find_first_of(",:\"\n") == std::string::npos) return v;
  std::string o = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o + "\"";
}

static std::string fmt_float(float v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

std::string a1111_parameters(const GenParams& p) {
  std::vector<std::pair<std::string, std::string>> kv = {
      {"Steps", std::to_string(p.steps)},
      {"Sampler", a1111_sampler_name(p.sampler)},
  };
  if (p.scheduler == "karras") kv.push_back({"Schedule type", "Karras"});
  kv.push_back({"CFG scale", fmt_float(p.cfg_scale)});
  kv.push_back({"Seed", std::to_string(p.seed)});
  kv.push_back({"Size", std::to_string(p.width) + "x" + std::to_string(p.height)});
  if (!p.model_hash.empty()) kv.push_back({"Model hash", p.model_hash});
  if (!p.model_name.empty()) kv.push_back({"Model", p.model_name});
  if (p.denoising_strength) kv.push_back({"Denoising strength", fmt_float(*p.denoising_strength)});
  if (p.clip_skip > 1) kv.push_back({"Clip skip", std::to_string(p.clip_skip)});
  // A1111's "RNG" option: "CPU" is torch's CPU generator, "GPU" its Philox noise.
  kv.push_back({"RNG", p.rng == "philox" ? "GPU" : "CPU"});
  kv.push_back({"Version", "easel 0.1"});
  std::string s = p.prompt;
  if (!p.negative_prompt.empty()) s += "\nNegative prompt: " + p.negative_prompt;
  s += "\n";
  for (size_t i = 0; i < kv.size(); i++) s += (i ? ", " : "") + kv[i].first + ": " + quote(kv[i].second);
  return s;
}

std::map<std::string, std::string> parse_a1111_parameters(const std::string& text) {
  std::map<std::string, std::string> out;
  std::vector<std::string> lines;
  std::stringstream ss(text);
  for (std::string l; std::getline(ss, l);) lines.push_back(l);
  if (lines.empty()) return out;
  std::string last = lines.back();
  bool has_kv = last.find("Steps: ") != std::string::npos;
  if (has_kv) lines.pop_back();
  std::string prompt, neg;
  bool in_neg = false;
  for (auto& l : lines) {
    if (l.rfind("Negative prompt: ", 0) == 0) {
      in_neg = true;
      neg = l.substr(17);
    } else if (in_neg) {
      neg += "\n" + l;
    } else {
      prompt += (prompt.empty() ? "" : "\n") + l;
    }
  }
  out["Prompt"] = prompt;
  out["Negative prompt"] = neg;
  if (!has_kv) return out;
  // key: value pairs separated by ", ", values possibly JSON-quoted.
  size_t i = 0;
  while (i < last.size()) {
    size_t colon = last.find(": ", i);
    if (colon == std::string::npos) break;
    std::string key = last.substr(i, colon - i);
    size_t v = colon + 2;
    std::string val;
    if (v < last.size() && last[v] == '"') {
      size_t j = v + 1;
      for (; j < last.size() && last[j] != '"'; j++) {
        if (last[j] == '\\' && j + 1 < last.size()) {
          j++;
          val += last[j] == 'n' ? '\n' : last[j];
        } else {
          val += last[j];
        }
      }
      i = j + 1;
    } else {
      size_t e = last.find(", ", v);
      val = last.substr(v, e == std::string::npos ? std::string::npos : e - v);
      i = e == std::string::npos ? last.size() : e;
    }
    out[key] = val;
    while (i < last.size() && (last[i] == ',' || last[i] == ' ')) i++;
  }
  return out;
}

std::string a1111_model_hash(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("hash", path + ": cannot open");
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<char> buf(1 << 20);
  while (f) {
    f.read(buf.data(), buf.size());
    if (f.gcount() > 0) EVP_DigestUpdate(ctx, buf.data(), (size_t)f.gcount());
  }
  unsigned char md[32];
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, md, &n);
  EVP_MD_CTX_free(ctx);
  char hex[65];
  for (int i = 0; i < 32; i++) std::snprintf(hex + 2 * i, 3, "%02x", md[i]);
  return std::string(hex, 10);
}

}  // namespace easel
