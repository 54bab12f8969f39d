// Bypass mode: LoRA-family modules computed beside their layers at run time, the model's weights
// untouched (f16/bf16 weights stay compact; strengths change without touching any weight).
//   plain LoRA / LoCon (+ Tucker):  y += up_s(mid(down(x)))  with up_s = s·scale·up; several plain
//                                   LoRAs on one Linear run as one product of concatenated factors
//   LoHa, LoKr, full diffs, DoRA:   y += ΔW x (+ Δb), ΔW = W' - W computed once exactly as merging
//                                   computes W' (lora_apply.h merged_weights)
// The layers find their additions through nn::find_bypass (models/nn.h).
//   PEFT runs LoRA this way (unfused); ComfyUI's "bypass" weight adapters likewise.
#pragma once
#include <vector>

#include "lora/lora_apply.h"

namespace easel::lora {

class Bypasser {
 public:
  Bypasser() = default;
  Bypasser(const Bypasser&) = delete;
  Bypasser& operator=(const Bypasser&) = delete;
  ~Bypasser() { remove(); }
  // Registers every spec's modules on ck's layers, replacing what this Bypasser registered before.
  // Everything is computed first, so an exception leaves the previous state in place.
  void apply(const Checkpoint& ck, const std::vector<LoraSpec>& specs);
  void remove();
  bool active() const { return !weights_.empty(); }
  // Layers with a low-rank / dense addition (for reports and tests).
  size_t low_rank_layers() const { return n_low_rank_; }
  size_t dense_layers() const { return weights_.size() - n_low_rank_; }

 private:
  std::vector<Tensor> weights_;  // the layers' weights with a registered bypass (kept alive: address key)
  size_t n_low_rank_ = 0;
};

}  // namespace easel::lora
