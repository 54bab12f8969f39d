// Model detection for single-file checkpoints, which carry no config: the family from the
// text encoder present, every size from tensor shapes, head counts and scheduler from the
// conventions every real model follows (like stable-diffusion.cpp's detection and
// diffusers' infer_diffusers_model_type / create_unet_diffusers_config_from_ldm).
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/loaders/single_file_utils.py
#pragma once
#include <string>

#include "io/weights.h"
#include "models/config.h"

namespace easel::detect {

// Where the SDXL (sgm) single files keep their text encoders.
inline constexpr const char* kSdxlClipL = "conditioner.embedders.0.transformer.";  // base: CLIP ViT-L (HF layout)
inline constexpr const char* kSdxlBigG = "conditioner.embedders.1.model.";         // base: OpenCLIP ViT-bigG
inline constexpr const char* kSdxlRefinerBigG = "conditioner.embedders.0.model.";  // refiner: bigG only

// The family of a whole LDM store, from its text encoders:
//   "sd1"          cond_stage_model.transformer.* (CLIP-L)
//   "sd2"          cond_stage_model.model.* (OpenCLIP ViT-H)
//   "sdxl"         conditioner.embedders.0.transformer.* (CLIP-L) + conditioner.embedders.1.model.* (bigG)
//   "sdxl_refiner" conditioner.embedders.0.model.* (bigG) alone
// Throws for anything else (no UNet, no text encoder, a partial SDXL, ...), naming the keys it
// looked for.
std::string family_from_ldm(const WeightStore& all);

// UNet config from LDM UNet keys (without "model.diffusion_model."). Heads: SD1 8 per level,
// SD2/SDXL 64-dim heads (channels/64 per level). sample_size and the SDXL added conditioning
// (see sdxl_added_conditioning) are left for the caller.
UNetConfig unet_from_ldm(const WeightStore& unet, const std::string& family);

// SDXL "text_time" added conditioning from label_emb.0.0 [T, in] / label_emb.0.2 [T, T]:
// in = pooled_dim + n_ids * addition_time_embed_dim, n_ids 6 for the base (original size,
// crop, target size) and 5 for the refiner (original size, crop, aesthetic score). Throws when
// label_emb is missing or `in` does not split exactly.
void sdxl_added_conditioning(UNetConfig& c, const WeightStore& unet, const std::string& family, int pooled_dim);
// Number of time ids of an SDXL family (6 base, 5 refiner).
int sdxl_time_ids(const std::string& family);
// VAE config from LDM VAE keys (without "first_stage_model.").
VAEConfig vae_from_ldm(const WeightStore& vae);
// CLIP text config from HF-named keys (without "text_model."): 64-dim heads; hidden_act
// quick_gelu for sd1 and sdxl (CLIP-L), gelu for sd2 (OpenCLIP).
TextEncoderConfig text_from_hf(const WeightStore& te, const std::string& family);
// SDXL's OpenCLIP bigG (text_encoder_2) in HF naming: as text_from_hf with gelu, plus
// projection_dim from "text_projection.weight" [proj, C] (required: the pooled output needs it).
TextEncoderConfig text_2_from_hf(const WeightStore& te);

// Prediction type of a single file, as diffusers decides it: SD2 is v_prediction except the
// inpainting model (9 input channels) and the 512-base (global_step 875000); SD1 is epsilon.
// A "v_pred" key (ComfyUI's marker) or modelspec.prediction_type metadata wins.
std::string prediction_from_ldm(const WeightStore& all, const std::string& family, int in_channels);

// The official repo's scheduler_config.json for the family (SD1.5: PNDM, SD2.1: DDIM, SDXL base
// and refiner: Euler with timestep_spacing "leading").
SchedulerConfig default_scheduler(const std::string& family, const std::string& prediction_type);

// Pad id of the family's (first) tokenizer: SD1 and SDXL's CLIP-L pad with <|endoftext|> (49407),
// SD2 with "!" (0). SDXL's tokenizer_2 pads with "!" (0, ModelConfig::pad_token_id_2).
int default_pad_token_id(const std::string& family);

}  // namespace easel::detect
