// Key tables: original LDM (CompVis / A1111 single-file) names -> diffusers names for the
// UNet and the VAE. Tables are generated from the model config (levels, layers per block,
// which levels have attention), following diffusers' convert_ldm_unet_checkpoint and
// convert_ldm_vae_checkpoint index arithmetic; keys are never matched by shape.
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/loaders/single_file_utils.py
//   https://github.com/huggingface/diffusers/blob/main/scripts/convert_diffusers_to_original_stable_diffusion.py
#pragma once
#include <string>
#include <vector>

#include "io/weights.h"
#include "models/config.h"

namespace easel::keys {

// How the part of a key after a module prefix is renamed.
enum class Rule {
  Same,          // a leaf module: "weight" / "bias" kept
  UNetAttention, // SpatialTransformer: suffix kept, same names in both layouts ("norm.weight",
                 // "proj_in.weight", "transformer_blocks.0.attn1.to_q.weight", "...ff.net.2.bias", ...)
  UNetResnet,    // in_layers.0 -> norm1, in_layers.2 -> conv1, emb_layers.1 -> time_emb_proj,
                 // out_layers.0 -> norm2, out_layers.3 -> conv2, skip_connection -> conv_shortcut
  VAEResnet,     // nin_shortcut -> conv_shortcut, the rest kept
  VAEAttention,  // norm -> group_norm, q/k/v -> to_q/to_k/to_v, proj_out -> to_out.0;
                 // 1x1 conv weights [C, C, 1, 1] become Linear [C, C] (a reshape view)
};

// One module: every key "from" + suffix becomes "to" + rule(suffix). Prefixes end with '.'.
struct PrefixMap {
  std::string from, to;
  Rule rule;
};

// LDM UNetModel (keys without "model.diffusion_model.") -> diffusers UNet2DConditionModel.
// With addition_embed_type "text_time" (SDXL): label_emb.0.0/0.2 -> add_embedding.linear_1/linear_2.
std::vector<PrefixMap> ldm_unet_table(const UNetConfig& c);
// LDM AutoencoderKL (keys without "first_stage_model.") -> diffusers AutoencoderKL.
std::vector<PrefixMap> ldm_vae_table(const VAEConfig& c);

// Renames every tensor of `src` through `table` (longest matching prefix). Tensors are shared,
// not copied. Keys no entry covers (or whose suffix the rule rejects) are appended to
// `unknown` as report_prefix + key.
WeightStore apply_table(const WeightStore& src, const std::vector<PrefixMap>& table,
                        std::vector<std::string>& unknown, const std::string& report_prefix);

// The suffix rename of one rule; "" when the rule does not know the suffix.
std::string rename_suffix(Rule rule, const std::string& suffix);

}  // namespace easel::keys
