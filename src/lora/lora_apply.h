// Merging LoRA-family files into a loaded model: W' = W + Σ_i s_i·ΔW_i in f32 (DoRA: delta_weight
// on the running W'), kept in f32 (as diffusers merges: rounding W' back to an f16 model's dtype
// moves the tiny fixtures' latents by 0.03), with the original tensors kept so that unmerge()
// restores them bit for bit.
// Works on a Checkpoint's WeightStores; the caller re-loads its modules from them (Pipeline does).
//   https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/master/extensions-builtin/Lora/networks.py
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "lora/lora.h"

namespace easel::lora {

struct LoraSpec {
  LoraFile file;
  float unet_strength = 1.f;
  float te_strength = 1.f;  // both text encoders (SDXL)
};

// "FILE[:unet[:te]]" -> path and strengths (te defaults to unet, unet to 1). A ':' followed by a
// non-number stays part of the path. Throws Error on a malformed number.
void parse_lora_arg(const std::string& arg, std::string& path, float& unet, float& te);

// A1111's short LoRA hash ("Lora hashes" infotext): the first 12 hex digits of the SHA-256 of a
// safetensors file's tensor data (after the header; sd-webui-additional-networks' hash), of the
// whole file for other formats.
std::string lora_short_hash(const std::string& path);

// One line per LoRA: "lora NAME (unet S, te S): applied N of M keys; not applied: k1 (why), ..."
std::string summary(const LoraSpec& s);

const WeightStore& store_of(const Checkpoint& ck, Target t);
WeightStore& store_of(Checkpoint& ck, Target t);

// (target, weight key) -> the merged weight W' = W + Σ s·ΔW (f32) for every weight the specs change,
// computed from original(id) (DoRA: on the running W'); only modules for which want(m) holds (all
// when want is empty). Throws (naming the file and key) on shape mismatches and non-finite deltas.
using WeightId = std::pair<int, std::string>;
std::map<WeightId, Tensor> merged_weights(const Checkpoint& ck, const std::vector<LoraSpec>& specs,
                                          const std::function<const Tensor&(const WeightId&)>& original,
                                          const std::function<bool(const Module&)>& want = {});

class Merger {
 public:
  // Merges every spec into ck's stores (UNet, text encoders), replacing LoRAs merged before. All
  // deltas are computed (from the original weights) before any store changes, so an exception
  // leaves ck as it was, previous LoRAs included.
  void merge(Checkpoint& ck, const std::vector<LoraSpec>& specs);
  // Puts the original tensors back (no-op when nothing is merged).
  void unmerge(Checkpoint& ck);
  bool merged() const { return !orig_.empty(); }

 private:
  // (target, weight key) -> the store's tensor before merging
  std::map<WeightId, Tensor> orig_;
};

}  // namespace easel::lora
