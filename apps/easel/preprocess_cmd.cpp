// `easel preprocess NAME IN.png -o OUT.png [--res 512] [--low 100] [--high 200]
//  [--param key=value ...] [--seed N]` and `easel preprocess --list`.
#include "preprocess_cmd.h"

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "io/image.h"
#include "preprocess/preprocess.h"

namespace easel {

namespace {

struct Args {
  std::string name, input, output;
  int res = 512;
  double low = 100, high = 200;
  CLI::Option *low_opt = nullptr, *high_opt = nullptr;
  std::vector<std::string> params;
  uint64_t seed = 0;
  std::string model, json;
  bool list = false;
} g_args;

void print_list() {
  for (auto& p : preprocessors()) {
    std::string a1111;
    for (auto& a : p.a1111_names) a1111 += (a1111.empty() ? "" : ", ") + a;
    std::printf("%-17s %s\n", p.name.c_str(), p.description.c_str());
    std::printf("%-17s A1111 module: %s; %s\n", "", a1111.empty() ? "(none)" : a1111.c_str(),
                p.uses_resolution ? "uses --res" : "input size (ignores --res)");
    if (!p.weight_files.empty()) {
      std::string files;
      for (auto& f : p.weight_files) files += (files.empty() ? "" : ", ") + f;
      std::printf("%-17s weights: %s%s\n", "", files.c_str(),
                  p.weights_origin.empty() ? "" : (" (" + p.weights_origin + ")").c_str());
    }
    for (auto& q : p.params)
      std::printf("%-17s   %s = %g  [%g, %g]  %s\n", "", q.name.c_str(), q.value, q.min, q.max, q.help.c_str());
  }
}

double parse_number(const std::string& key, const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end) fail("preprocess", "--param " + key + "=" + s + ": not a number");
  return v;
}

}  // namespace

CLI::App* add_preprocess_command(CLI::App& app) {
  Args& a = g_args;
  auto* c = app.add_subcommand("preprocess", "turn a photo into a ControlNet guide image (see --list)");
  c->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  c->add_option("name", a.name, "preprocessor (easel or A1111 module name)");
  c->add_option("input", a.input, "input image (PNG/JPEG)");
  c->add_option("-o,--output", a.output, "output PNG");
  c->add_option("--res", a.res, "processor resolution: the short side to process at")->capture_default_str();
  a.low_opt = c->add_option("--low", a.low, "canny low threshold (default 100)");
  a.high_opt = c->add_option("--high", a.high, "canny high threshold (default 200)");
  c->add_option("--param", a.params, "preprocessor parameter key=value (repeatable)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  c->add_option("--seed", a.seed, "seed (shuffle)")->capture_default_str();
  c->add_option("--model", a.model,
                 "neural preprocessors: weight file, or a directory holding the expected files "
                 "(default: $EASEL_ANNOTATOR_DIR, then models/annotators)");
  c->add_option("--json", a.json, "pose preprocessors: also write the keypoints as OpenPose JSON");
  c->add_flag("--list", a.list, "list the preprocessors with their parameters, defaults and ranges");
  return c;
}

int run_preprocess_command() {
  Args& a = g_args;
  if (a.list) {
    print_list();
    return 0;
  }
  if (a.name.empty() || a.input.empty() || a.output.empty())
    fail("preprocess", "usage: easel preprocess NAME IN.png -o OUT.png [--res 512] [--param key=value ...] (or --list)");
  const PreprocessorInfo& info = find_preprocessor(a.name);  // fails early, before reading the image
  std::map<std::string, double> params;
  if (*a.low_opt) params["low"] = a.low;
  if (*a.high_opt) params["high"] = a.high;
  for (auto& kv : a.params) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) fail("preprocess", "--param " + kv + ": expected key=value");
    std::string k = kv.substr(0, eq);
    params[k] = parse_number(k, kv.substr(eq + 1));
  }
  Image in = read_image(a.input, 0, true, kMaxPreprocessPixels);  // a 10000x10000 photo is refused undecoded
  PreprocessRun run;
  run.seed = a.seed;
  run.model_path = a.model;
  std::string json;
  if (!a.json.empty()) run.json_out = &json;
  Image out = preprocess(info.name, in, a.res, params, run);
  write_png(a.output, out);
  if (!a.json.empty()) {
    if (json.empty()) fail("preprocess", info.name + ": --json is only for pose preprocessors");
    write_text_file(a.json, json);
  }
  std::fprintf(stderr, "wrote %s (%dx%d, %s)\n", a.output.c_str(), out.width, out.height, info.name.c_str());
  return 0;
}

}  // namespace easel
