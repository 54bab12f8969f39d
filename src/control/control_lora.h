// Control-LoRA (Stability AI, https://huggingface.co/stabilityai/control-lora): a ControlNet stored as
// low-rank deltas on the base UNet's encoder. The ControlNet is rebuilt from the loaded base model:
//   every encoder weight (conv_in, time/add embedding, down blocks, mid block) starts as the base UNet's;
//   a layer with "X.up" [out, r(, 1, 1)] / "X.down" [r, in(, kh, kw)] gets W = W_base + up @ down
//   (flattened, reshaped to W; scale 1 = alpha/rank with alpha = rank);
//   every "X.weight" / "X.bias" in the file replaces the base tensor (norms, biases, and the
//   ControlNet-only hint block, zero convs and middle_block_out, which are always full).
// Keys are in the LDM/lllyasviel layout without a prefix (input_blocks.*, middle_block.*, time_embed.*,
// label_emb.*, input_hint_block.*, zero_convs.N.0.*, middle_block_out.0.*), plus the marker "lora_controlnet".
//   https://github.com/comfyanonymous/ComfyUI/blob/master/comfy/controlnet.py  (ControlLora, ControlLoraOps)
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/utils/state_dict_utils.py
//     (convert_sai_sd_control_lora_state_dict_to_peft; ControlNetModel.from_unet + load_lora_adapter)
// Bias difference: diffusers 0.42 (peft 0.21) drops the file's biases of the layers that carry an
// up/down pair (the PEFT-wrapped layer expects "base_layer.bias"), so they stay the base UNet's;
// ComfyUI uses the file's. Both are available (ControlLoraOptions::biases).
#pragma once
#include <string>

#include "control/controlnet.h"
#include "io/checkpoint.h"

namespace easel {

struct ControlLoraOptions {
  enum class Biases {
    FromFile,  // ComfyUI / Stability: every bias in the file is used (default)
    Diffusers  // diffusers load_lora_adapter: LoRA'd layers keep the base UNet's bias
  };
  Biases biases = Biases::FromFile;
};

// True when the store is a Stability Control-LoRA (has the "lora_controlnet" marker).
bool is_control_lora(const WeightStore& w);

// Builds the ControlNet of a Control-LoRA file for `base` (its UNet weights and config). Throws
// easel::Error naming the file for: a file that is not a Control-LoRA, truncated/unreadable data,
// a Control-LoRA for another family (SDXL file on an SD1 model and the reverse: the layer shapes
// differ), keys that belong to no ControlNet layer, and factor shapes that do not match the layer.
ControlNetModel load_control_lora(const std::string& path, const Checkpoint& base,
                                  const ControlLoraOptions& opt = {});
// The same from already-read tensors: `file` (source names the file in messages), the base UNet
// store (diffusers naming) with its config, and the base family ("sd1" | "sd2" | "sdxl" | ...).
ControlNetModel build_control_lora(const WeightStore& file, const WeightStore& base_unet, const UNetConfig& base_cfg,
                                   const std::string& family, const ControlLoraOptions& opt = {});

}  // namespace easel
