// A1111's generation-parameters text (the "parameters" PNG chunk), which A1111, Forge,
// ComfyUI, civitai and others read back. Written as modules/processing.py create_infotext
// (A1111 1.10) does; parsed as modules/infotext_utils.py parse_generation_parameters does:
//   prompt
//   Negative prompt: neg                       (only when non-empty)
//   Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512,
//   Model hash: 1234567890, Model: name, Denoising strength: 0.75, Clip skip: 2, RNG: CPU, Version: easel 0.1
// Values containing ',', ':' or a newline are written as JSON strings (infotext_utils.quote), and
// the whole text is stripped of surrounding whitespace, as A1111 does.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace easel {

inline constexpr const char* kEaselVersion = "easel 0.1";

struct GenParams {
  std::string prompt, negative_prompt;
  int steps = 20;
  std::string sampler = "euler_a";  // easel names (euler, euler_a, ddim, dpmpp_2m, ...)
  std::string scheduler = "normal"; // normal | karras
  float cfg_scale = 7;
  uint64_t seed = 0;
  int width = 512, height = 512;
  std::string model_name, model_hash;      // omitted when empty
  std::optional<float> denoising_strength;  // img2img
  int clip_skip = 0;                        // written when > 1, as A1111
  std::string rng = "torch-cpu";            // torch-cpu -> "RNG: CPU"; philox = A1111's default "GPU" (omitted)
  // More "Key: value" pairs (ControlNet units, LoRA hashes, ...), written before Version in this
  // order, as A1111's extra_generation_params.
  std::vector<std::pair<std::string, std::string>> extra;
  std::string version = kEaselVersion;  // omitted when empty
};

// The infotext for `p`. Throws easel::Error for a sampler A1111 has no name for.
std::string a1111_parameters(const GenParams& p);

// parse_generation_parameters without A1111's UI defaults: "Prompt", "Negative prompt", and every
// "Key: value" of the last line (JSON-quoted values unquoted), when that line has at least 3 pairs.
std::map<std::string, std::string> parse_a1111_parameters(const std::string& text);
// The same pairs in text order ("Prompt" and "Negative prompt" first).
std::vector<std::pair<std::string, std::string>> parse_a1111_pairs(const std::string& text);
// Parameters to reuse ("reuse parameters from PNG"): fields missing from the text keep `defaults`.
// Sampler names ("DPM++ 2M Karras", "Euler a" + "Schedule type: Karras") map to easel's; A1111's
// defaults apply (no RNG = GPU = philox; no Clip skip = 1). Keys easel has no field for go to
// `extra` in text order; "Version" is not taken over (it names the writer). Throws easel::Error on bad numbers
// or unsupported samplers, naming the key.
GenParams gen_params_from_a1111(const std::string& text, const GenParams& defaults = {});

// SHA-256 of a file, lowercase hex (streamed in 1 MiB blocks; a 2 GB model takes a few seconds).
std::string sha256_file(const std::string& path);
// A1111's "AutoV2" short model hash ("Model hash:"): the first 10 hex digits of the SHA-256.
std::string a1111_model_hash(const std::string& path);

// JSON string quoting as Python's json.dumps(s, ensure_ascii=False); exposed for tests.
std::string json_quote(const std::string& s);
// Python's repr of a float as A1111 prints it: shortest round-trip digits of the float32 value,
// integral values without ".0" (as the web UI's sliders give ints): 7 -> "7", 7.5 -> "7.5".
std::string a1111_number(float v);

}  // namespace easel
