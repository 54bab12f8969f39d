// A1111's generation-parameters text ("parameters" PNG chunk), which A1111, ComfyUI,
// civitai and others read back. Format of modules/processing.py create_infotext:
//   prompt\nNegative prompt: neg\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1,
//   Size: 512x512, Model hash: 1234567890, Model: name, ...
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace easel {

struct GenParams {
  std::string prompt, negative_prompt;
  int steps = 20;
  std::string sampler = "euler_a";  // easel names; written as A1111's display names
  std::string scheduler = "normal";
  float cfg_scale = 7;
  uint64_t seed = 0;
  int width = 512, height = 512;
  std::string model_name, model_hash;
  std::optional<float> denoising_strength;
  int clip_skip = 0;  // written when > 1, as A1111
  std::string rng = "torch-cpu";
};

std::string a1111_parameters(const GenParams& p);
// Parses the text back into key/value pairs ("Prompt", "Negative prompt", "Steps", ...).
std::map<std::string, std::string> parse_a1111_parameters(const std::string& text);
// A1111's "AutoV2" short hash: first 10 hex digits of the file's SHA-256.
std::string a1111_model_hash(const std::string& path);
// A1111 sampler display name for an easel sampler ("euler_a" -> "Euler a").
std::string a1111_sampler_name(const std::string& sampler);

}  // namespace easel
