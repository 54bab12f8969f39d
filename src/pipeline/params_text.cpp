// A1111 infotext writer/parser and the AutoV2 model hash. See params_text.h.
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/processing.py (create_infotext)
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/modules/infotext_utils.py
#include "pipeline/params_text.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"
#include "sampling/schedulers.h"

namespace easel {

namespace {

// Python's str.strip() for the ASCII whitespace it knows.
std::string py_strip(const std::string& s) {
  const char* ws = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f";
  size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(ws);
  return s.substr(a, b - a + 1);
}

// infotext_utils.quote
std::string quote(const std::string& v) {
  if (v.find_first_of(",\n:") == std::string::npos) return v;
  return json_quote(v);
}

// A1111 1.9+ writes the sampler and its "Schedule type" apart. "Automatic" is the sampler's own
// default, which for DPM++ 2M is Karras and for DPM++ 2M SDE exponential.
const char* a1111_default_schedule(std::string sampler) {
  if (sampler.rfind("k_", 0) == 0) sampler = sampler.substr(2);  // k-diffusion ports
  if (sampler == "dpmpp_2m") return "karras";
  if (sampler == "dpmpp_2m_sde") return "exponential";
  return "normal";
}

}  // namespace

std::string json_quote(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string a1111_number(float v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15f) {
    char b[32];
    std::snprintf(b, sizeof b, "%.0f", (double)v);
    return b;
  }
  char b[32];
  for (int prec = 1; prec <= 9; prec++) {  // shortest digits that read back as the same float
    std::snprintf(b, sizeof b, "%.*g", prec, (double)v);
    if (std::strtof(b, nullptr) == v) break;
  }
  return b;
}

std::string a1111_parameters(const GenParams& p) {
  std::vector<std::pair<std::string, std::string>> kv;
  kv.push_back({"Steps", std::to_string(p.steps)});
  kv.push_back({"Sampler", a1111_sampler_name(p.sampler, "normal")});
  std::string schedule = p.scheduler.empty() ? "normal" : p.scheduler;
  std::string st = schedule == "karras" ? "Karras" : schedule == a1111_default_schedule(p.sampler) ? "Automatic" : "Uniform";
  kv.push_back({"Schedule type", st});
  kv.push_back({"CFG scale", a1111_number(p.cfg_scale)});
  kv.push_back({"Seed", std::to_string(p.seed)});
  kv.push_back({"Size", std::to_string(p.width) + "x" + std::to_string(p.height)});
  if (!p.model_hash.empty()) kv.push_back({"Model hash", p.model_hash});
  if (!p.model_name.empty()) kv.push_back({"Model", p.model_name});
  if (p.denoising_strength) kv.push_back({"Denoising strength", a1111_number(*p.denoising_strength)});
  if (p.clip_skip > 1) kv.push_back({"Clip skip", std::to_string(p.clip_skip)});
  // A1111's "RNG" setting: "CPU" is torch's CPU generator; its default "GPU" (= "NV" on NVIDIA
  // cards, easel's philox) is not written.
  if (p.rng != "philox" && p.rng != "nv") kv.push_back({"RNG", "CPU"});
  for (const auto& e : p.extra) kv.push_back(e);
  if (!p.version.empty()) kv.push_back({"Version", p.version});
  std::string params;
  for (size_t i = 0; i < kv.size(); i++) {
    if (i) params += ", ";
    params += kv[i].first == kv[i].second ? kv[i].first : kv[i].first + ": " + quote(kv[i].second);
  }
  std::string neg = p.negative_prompt.empty() ? "" : "\nNegative prompt: " + p.negative_prompt;
  return py_strip(p.prompt + neg + "\n" + params);
}

std::vector<std::pair<std::string, std::string>> parse_a1111_pairs(const std::string& text) {
  static const std::regex re_param(R"re(\s*(\w[\w /-]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$))re");
  std::vector<std::string> lines;
  std::string s = py_strip(text);
  for (size_t a = 0;;) {
    size_t b = s.find('\n', a);
    lines.push_back(s.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
    a = b + 1;
  }
  std::string last = lines.back();
  lines.pop_back();
  auto begin = std::sregex_iterator(last.begin(), last.end(), re_param), end = std::sregex_iterator();
  if (std::distance(begin, end) < 3) {
    lines.push_back(last);
    last.clear();
  }
  std::string prompt, negative;
  bool done_with_prompt = false;
  for (std::string line : lines) {
    line = py_strip(line);
    if (line.rfind("Negative prompt:", 0) == 0) {
      done_with_prompt = true;
      line = py_strip(line.substr(16));
    }
    std::string& dst = done_with_prompt ? negative : prompt;
    dst += (dst.empty() ? "" : "\n") + line;
  }
  std::vector<std::pair<std::string, std::string>> res = {{"Prompt", prompt}, {"Negative prompt", negative}};
  for (auto it = std::sregex_iterator(last.begin(), last.end(), re_param); it != end; ++it) {
    std::string k = (*it)[1].str(), v = (*it)[2].str();
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') {  // infotext_utils.unquote
      try {
        auto j = nlohmann::json::parse(v);
        if (j.is_string()) v = j.get<std::string>();
      } catch (const nlohmann::json::exception&) {
      }
    }
    bool found = false;  // a repeated key keeps its first place and its last value, as a dict
    for (auto& kv : res)
      if (kv.first == k) kv.second = v, found = true;
    if (!found) res.emplace_back(k, v);
  }
  return res;
}

std::map<std::string, std::string> parse_a1111_parameters(const std::string& text) {
  auto pairs = parse_a1111_pairs(text);
  return std::map<std::string, std::string>(pairs.begin(), pairs.end());
}

GenParams gen_params_from_a1111(const std::string& text, const GenParams& defaults) {
  auto pairs = parse_a1111_pairs(text);
  std::map<std::string, std::string> m(pairs.begin(), pairs.end());
  GenParams p = defaults;
  p.prompt = m["Prompt"];
  p.negative_prompt = m["Negative prompt"];
  auto get = [&](const char* key) -> const std::string* {
    auto it = m.find(key);
    return it == m.end() ? nullptr : &it->second;
  };
  auto to_int = [&](const char* key, const std::string& v) -> long long {
    try {
      size_t n = 0;
      long long x = std::stoll(v, &n);
      if (n == v.size()) return x;
    } catch (const std::exception&) {
    }
    fail("params", std::string("'") + key + ": " + v + "' is not an integer");
  };
  auto to_float = [&](const char* key, const std::string& v) -> float {
    try {
      size_t n = 0;
      float x = std::stof(v, &n);
      if (n == v.size() && std::isfinite(x)) return x;
    } catch (const std::exception&) {
    }
    fail("params", std::string("'") + key + ": " + v + "' is not a number");
  };
  if (auto v = get("Steps")) p.steps = (int)to_int("Steps", *v);
  if (auto v = get("CFG scale")) p.cfg_scale = to_float("CFG scale", *v);
  if (auto v = get("Seed")) {
    long long s = to_int("Seed", *v);
    if (s < 0) fail("params", "'Seed: " + *v + "' is negative");
    p.seed = (uint64_t)s;
  }
  if (auto v = get("Size")) {
    size_t x = v->find('x');
    if (x == std::string::npos) fail("params", "'Size: " + *v + "' is not WIDTHxHEIGHT");
    p.width = (int)to_int("Size", v->substr(0, x));
    p.height = (int)to_int("Size", v->substr(x + 1));
  }
  if (auto v = get("Model hash")) p.model_hash = *v;
  if (auto v = get("Model")) p.model_name = *v;
  if (auto v = get("Denoising strength")) p.denoising_strength = to_float("Denoising strength", *v);
  p.clip_skip = 1;  // A1111: missing means 1
  if (auto v = get("Clip skip")) p.clip_skip = (int)to_int("Clip skip", *v);
  // A1111: missing RNG means "GPU"; easel's philox reproduces it (and "NV").
  auto rng = get("RNG");
  p.rng = rng && *rng == "CPU" ? "torch-cpu" : "philox";
  if (rng && *rng != "CPU" && *rng != "GPU" && *rng != "NV") fail("params", "'RNG: " + *rng + "' is not CPU, GPU or NV");
  if (auto v = get("Sampler")) {
    auto st = get("Schedule type");
    std::string stype = st ? *st : "Automatic";
    std::string sampler, schedule;
    parse_a1111_sampler(*v, stype == "Automatic" ? "" : stype, &sampler, &schedule);
    bool named_karras = v->size() > 7 && v->compare(v->size() - 7, 7, " Karras") == 0;
    if (stype == "Automatic" && !named_karras) {
      std::string def = a1111_default_schedule(sampler);
      if (def == "exponential")
        fail("params", "'Sampler: " + *v + "' with 'Schedule type: Automatic' means the exponential schedule, which easel does not provide");
      schedule = def;
    }
    p.sampler = sampler;
    p.scheduler = schedule;
  }
  static const char* known[] = {"Prompt", "Negative prompt", "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size",
                                "Model hash", "Model", "Denoising strength", "Clip skip", "RNG", "Version"};
  p.extra.clear();
  for (const auto& [k, v] : pairs)
    if (std::find(std::begin(known), std::end(known), k) == std::end(known)) p.extra.emplace_back(k, v);
  return p;
}

std::string sha256_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("hash", path + ": cannot open: " + std::strerror(errno));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    ::close(fd);
    fail("hash", path + ": cannot initialise SHA-256");
  }
  std::vector<unsigned char> buf(1 << 20);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      fail("hash", path + ": read error: " + std::strerror(e));
    }
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buf.data(), (size_t)n);
  }
  ::close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; i++) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

std::string a1111_model_hash(const std::string& path) { return sha256_file(path).substr(0, 10); }

}  // namespace easel
