// `easel generate --control ...`; see control_args.h.
#include "control_args.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include "control/control_lora.h"
#include "control/t2i_adapter.h"
#include "core/error.h"
#include "io/image.h"
#include "preprocess/preprocess.h"

namespace easel {

namespace fs = std::filesystem;

namespace {
const char* kWhere = "control";

bool parse_double(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return *end == 0;
}

// Per-unit settings, in the order given on the command line.
struct UnitFlags {
  std::string control_mode, resize_mode, preprocess, save_guide;
  int preprocess_res = 512;
};
}  // namespace

void add_control_options(CLI::App* gen, ControlArgs& a) {
  a.app = gen;
  auto all = CLI::MultiOptionPolicy::TakeAll;
  gen->add_option("--control", a.control,
                  "ControlNet / T2I-Adapter / Control-LoRA unit KIND:MODEL:IMAGE[:strength[:start[:end]]], KIND = "
                  "controlnet | t2i | control_lora; strength in [0, 2], start/end fractions of the steps (repeatable)")
      ->multi_option_policy(all);
  gen->add_option("--control-mode", a.control_mode,
                  "balanced | prompt (\"My prompt is more important\") | control (\"ControlNet is more important\"); "
                  "applies to the preceding --control (before any: to all)")
      ->multi_option_policy(all);
  gen->add_option("--resize-mode", a.resize_mode,
                  "guide of another size: just_resize | crop_resize (default) | resize_fill (A1111); per unit")
      ->multi_option_policy(all);
  gen->add_option("--preprocess", a.preprocess,
                  "NAME[:key=value,...]: run this preprocessor (easel preprocess --list) on the unit's IMAGE first; "
                  "per unit")
      ->multi_option_policy(all);
  gen->add_option("--preprocess-res", a.preprocess_res, "preprocessor resolution (default 512); per unit")
      ->multi_option_policy(all);
  gen->add_option("--save-guide", a.save_guide, "write the unit's guide as used (image size) to this PNG; per unit")
      ->multi_option_policy(all);
  gen->add_option("--annotator-dir", a.annotator_dir,
                  "folder (or file) with the neural preprocessors' weights (default: $EASEL_ANNOTATOR_DIR, "
                  "then models/annotators)");
  gen->add_flag("--guess-mode", a.guess_mode,
                "diffusers' guess mode: ControlNets on the conditional half only, outputs scaled by logspace(-1, 0)");
}

ControlSpec parse_control_spec(const std::string& v) {
  std::vector<std::string> parts;
  size_t p = 0;
  for (;;) {
    size_t q = v.find(':', p);
    parts.push_back(v.substr(p, q == std::string::npos ? std::string::npos : q - p));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  ControlSpec s;
  const std::string usage = "--control '" + v + "': expected KIND:MODEL:IMAGE[:strength[:start[:end]]]";
  if (parts.size() < 3) fail(kWhere, usage);
  s.kind = parts[0];
  if (s.kind != "controlnet" && s.kind != "t2i" && s.kind != "control_lora")
    fail(kWhere, usage + " with KIND controlnet, t2i or control_lora (got '" + s.kind + "')");
  // Trailing numbers are the options; the two fields before them are MODEL and IMAGE.
  size_t n_num = 0;
  double d;
  while (n_num < 3 && parts.size() - n_num > 3 && parse_double(parts[parts.size() - 1 - n_num], d)) n_num++;
  if (parts.size() - n_num != 3) fail(kWhere, usage + " (paths containing ':' are not supported)");
  s.model = parts[1];
  s.image = parts[2];
  if (s.model.empty() || s.image.empty()) fail(kWhere, usage);
  std::vector<double> nums;
  for (size_t i = 3; i < parts.size(); i++) {
    if (!parse_double(parts[i], d)) fail(kWhere, usage + ": '" + parts[i] + "' is not a number");
    nums.push_back(d);
  }
  if (nums.size() > 0) s.strength = (float)nums[0];
  if (nums.size() > 1) s.start = nums[1];
  if (nums.size() > 2) s.end = nums[2];
  return s;
}

std::vector<std::pair<std::string, std::string>> build_control_units(const ControlArgs& a, const Pipeline& pipe,
                                                                     GenerateOptions& opt) {
  std::vector<std::pair<std::string, std::string>> info;
  if (a.control.empty()) {
    for (auto* v : {&a.control_mode, &a.resize_mode, &a.preprocess, &a.preprocess_res, &a.save_guide})
      if (!v->empty()) fail(kWhere, "--control-mode/--resize-mode/--preprocess/--save-guide need a --control unit");
    if (a.guess_mode) fail(kWhere, "--guess-mode needs a --control unit");
    return info;
  }
  // Walk the flags in command-line order: a per-unit flag belongs to the last --control before it.
  UnitFlags defaults;
  std::vector<UnitFlags> flags(a.control.size());
  std::map<std::string, size_t> seen;
  int current = -1;
  for (const CLI::Option* o : a.app->parse_order()) {
    const std::string name = o->get_name();
    size_t k = seen[name]++;
    if (name == "--control") {
      current = (int)k;
      flags[k] = defaults;
      continue;
    }
    UnitFlags& f = current < 0 ? defaults : flags[current];
    auto value = [&](const std::vector<std::string>& v) -> const std::string& { return v.at(k); };
    if (name == "--control-mode") f.control_mode = value(a.control_mode);
    else if (name == "--resize-mode") f.resize_mode = value(a.resize_mode);
    else if (name == "--preprocess") f.preprocess = value(a.preprocess);
    else if (name == "--save-guide") f.save_guide = value(a.save_guide);
    else if (name == "--preprocess-res") {
      double r;
      if (!parse_double(value(a.preprocess_res), r) || r != (int)r)
        fail(kWhere, "--preprocess-res '" + value(a.preprocess_res) + "' is not an integer");
      f.preprocess_res = (int)r;
    }
  }
  const ModelConfig& cfg = pipe.config();
  const int W = pipe.width_for(opt), H = pipe.height_for(opt);
  std::vector<std::string> save(a.control.size());
  for (size_t i = 0; i < a.control.size(); i++) {
    const ControlSpec s = parse_control_spec(a.control[i]);
    const UnitFlags& f = flags[i];
    std::error_code ec;
    if (!fs::exists(s.model, ec)) fail(kWhere, s.model + ": file not found (--control " + a.control[i] + ")");
    ControlUnit u;
    u.name = s.model;
    u.strength = s.strength, u.start = s.start, u.end = s.end;
    if (!f.control_mode.empty()) u.control_mode = parse_control_mode(f.control_mode);
    if (!f.resize_mode.empty()) u.resize_mode = parse_resize_mode(f.resize_mode);
    // A photo to preprocess gets the preprocessors' budget (checked from the header, nothing decoded).
    Image photo = read_image(s.image, 3, true, f.preprocess.empty() ? kMaxImagePixels : kMaxPreprocessPixels);
    std::string module = f.preprocess;
    if (!f.preprocess.empty()) {
      // NAME[:key=value,key=value]
      std::map<std::string, double> params;
      if (size_t c = f.preprocess.find(':'); c != std::string::npos) {
        module = f.preprocess.substr(0, c);
        std::string rest = f.preprocess.substr(c + 1);
        size_t p = 0;
        while (p <= rest.size()) {
          size_t q = rest.find(',', p);
          std::string kv = rest.substr(p, q == std::string::npos ? std::string::npos : q - p);
          size_t eq = kv.find('=');
          double v;
          if (eq == std::string::npos || !parse_double(kv.substr(eq + 1), v))
            fail(kWhere, "--preprocess '" + f.preprocess + "': expected NAME[:key=value,...], got '" + kv + "'");
          params[kv.substr(0, eq)] = v;
          if (q == std::string::npos) break;
          p = q + 1;
        }
      }
      PreprocessRun run;
      run.seed = opt.seed;
      run.model_path = a.annotator_dir;
      u.guide = preprocess(module, photo, f.preprocess_res, params, run);
    } else {
      u.guide = std::move(photo);
    }
    std::string kind = s.kind;
    if (s.kind == "controlnet") {
      u.controlnet = std::make_shared<ControlNetModel>(load_controlnet(s.model, &cfg));
    } else if (s.kind == "control_lora") {
      u.controlnet = std::make_shared<ControlNetModel>(load_control_lora(s.model, pipe.checkpoint()));
    } else {
      auto ad = std::make_shared<T2IAdapter>(T2IAdapter::load(s.model));
      check_t2i_adapter(*ad, cfg.unet, H, W);
      u.adapter = [ad](const Tensor& g01) { return ad->forward_rgb01(g01); };
    }
    validate_unit(u, cfg);
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "Module: %s, Model: %s, Weight: %g, Resize Mode: %s, Guidance Start: %g, Guidance End: %g, "
                  "Control Mode: %s",
                  module.empty() ? "none" : module.c_str(), fs::path(s.model).stem().c_str(),
                  (double)u.strength, resize_mode_name(u.resize_mode), u.start, u.end,
                  control_mode_name(u.control_mode));
    info.push_back({"ControlNet " + std::to_string(i), buf});
    save[i] = f.save_guide;
    opt.control.push_back(std::move(u));
  }
  opt.control_guess_mode = a.guess_mode;
  bool any_save = false;
  for (auto& p : save) any_save |= !p.empty();
  if (any_save)
    opt.on_guides = [save](const std::vector<Image>& guides) {
      for (size_t i = 0; i < guides.size() && i < save.size(); i++)
        if (!save[i].empty()) {
          write_png(save[i], guides[i]);
          std::fprintf(stderr, "wrote guide %s\n", save[i].c_str());
        }
    };
  return info;
}

}  // namespace easel
