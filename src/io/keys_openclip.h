// Key table: OpenCLIP text tower (SD2's cond_stage_model.model.*, SDXL's bigG
// conditioner.embedders.{1,0}.model.*) -> transformers CLIPTextModel(WithProjection) names
// without the "text_model." level. The fused attention projection in_proj_weight [3C, C] is
// split into q/k/v_proj [C, C] each (copies).
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/loaders/single_file_utils.py
//   (convert_open_clip_checkpoint)
#pragma once
#include <string>
#include <vector>

#include "io/weights.h"

namespace easel::keys {

// Number of transformer.resblocks.N in an OpenCLIP store (keys without "cond_stage_model.model.").
int openclip_layers(const WeightStore& src);

// Converts the first `keep_layers` resblocks plus the embeddings and ln_final. Resblocks past
// keep_layers and logit_scale are dropped silently (SD2 conditions on the penultimate layer, so
// diffusers keeps 23 of 24 layers); other keys go to `unknown` as report_prefix + key.
// text_projection [C, proj] (applied as x @ P) is dropped, or with keep_projection (SDXL) becomes
// "text_projection.weight" = P^T [proj, C] (a copy), as diffusers' convert_open_clip_checkpoint.
WeightStore openclip_to_hf(const WeightStore& src, int keep_layers, std::vector<std::string>& unknown,
                           const std::string& report_prefix, bool keep_projection = false);

// True for a transformers CLIPTextModel weight name (without "text_model."):
// embeddings.{token,position}_embedding.weight, final_layer_norm.*, encoder.layers.N.{self_attn.
// {q,k,v,out}_proj, layer_norm1, layer_norm2, mlp.fc1, mlp.fc2}.{weight,bias}.
bool is_clip_text_key(const std::string& key);

}  // namespace easel::keys
