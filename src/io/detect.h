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

// "sd1" (CLIP-L text encoder, cond_stage_model.transformer.*) or "sd2" (OpenCLIP,
// cond_stage_model.model.*), from the whole LDM store. Throws for stores that are not SD1/SD2
// (no UNet, no text encoder, SDXL, ...), naming the keys it looked for.
std::string family_from_ldm(const WeightStore& all);

// UNet config from LDM UNet keys (without "model.diffusion_model."). Heads: SD1 8 per level,
// SD2 64-dim heads (channels/64 per level). sample_size is left for the caller.
UNetConfig unet_from_ldm(const WeightStore& unet, const std::string& family);
// VAE config from LDM VAE keys (without "first_stage_model.").
VAEConfig vae_from_ldm(const WeightStore& vae);
// CLIP text config from HF-named keys (without "text_model."): 64-dim heads; hidden_act
// quick_gelu for sd1 (CLIP-L), gelu for sd2 (OpenCLIP).
TextEncoderConfig text_from_hf(const WeightStore& te, const std::string& family);

// Prediction type of a single file, as diffusers decides it: SD2 is v_prediction except the
// inpainting model (9 input channels) and the 512-base (global_step 875000); SD1 is epsilon.
// A "v_pred" key (ComfyUI's marker) or modelspec.prediction_type metadata wins.
std::string prediction_from_ldm(const WeightStore& all, const std::string& family, int in_channels);

// The official repo's scheduler_config.json for the family (SD1.5: PNDM, SD2.1: DDIM).
SchedulerConfig default_scheduler(const std::string& family, const std::string& prediction_type);

// Pad id of the family's tokenizer: SD1 pads with <|endoftext|> (49407), SD2 with "!" (0).
int default_pad_token_id(const std::string& family);

}  // namespace easel::detect
