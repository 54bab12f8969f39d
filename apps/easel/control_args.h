// `easel generate --control ...`: ControlNet / T2I-Adapter / Control-LoRA units from the command line.
//
//   --control KIND:MODEL:IMAGE[:strength[:start[:end]]]   (repeatable; KIND controlnet | t2i | control_lora)
//
// Per-unit flags apply to the closest --control before them; given before the first --control they
// set the default for every unit: --control-mode balanced|prompt|control, --resize-mode
// just_resize|crop_resize|resize_fill, --preprocess NAME[:key=value,...] (IMAGE is a photo to run it on),
// --preprocess-res N, --save-guide PATH (the guide as used, at the image size). --guess-mode and
// --annotator-dir DIR (the neural preprocessors' weight files) are global.
#pragma once
#include <CLI/CLI.hpp>

#include <string>
#include <utility>
#include <vector>

#include "pipeline/pipeline.h"

namespace easel {

struct ControlArgs {
  std::vector<std::string> control, control_mode, resize_mode, preprocess, preprocess_res, save_guide;
  std::string annotator_dir;  // --annotator-dir: weights of the neural preprocessors
  bool guess_mode = false;
  CLI::App* app = nullptr;
};

// Registers the flags on the generate subcommand.
void add_control_options(CLI::App* gen, ControlArgs& a);

// One --control value split: kind, model, image, strength, start, end (defaults 1, 0, 1).
struct ControlSpec {
  std::string kind, model, image;
  float strength = 1.0f;
  double start = 0.0, end = 1.0;
};
ControlSpec parse_control_spec(const std::string& v);

// Builds opt.control (models loaded against `pipe`, guides read and preprocessed) and the guide
// outputs (--save-guide); returns A1111 infotext entries ("ControlNet 0", ...). Errors name the file.
std::vector<std::pair<std::string, std::string>> build_control_units(const ControlArgs& a, const Pipeline& pipe,
                                                                     GenerateOptions& opt);

}  // namespace easel
