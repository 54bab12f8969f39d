// Diffusers folders: model_index.json, then one folder per part with its config.json and
// weights (unet/, vae/, text_encoder/, tokenizer/, scheduler/; SDXL adds text_encoder_2/ and
// tokenizer_2/, and the refiner has no text_encoder/). Configs are parsed with
// nlohmann-json into the structs of models/config.h; errors name the file and the field.
//   https://huggingface.co/docs/diffusers/main/en/api/pipelines/stable_diffusion/text2img
#pragma once
#include <string>

#include "io/weights.h"
#include "models/config.h"

namespace easel {

struct Checkpoint;

// True when `path` is a directory holding model_index.json.
bool is_diffusers_folder(const std::string& path);

// Per-part config parsers (`file` is used in messages). Fields absent or null keep defaults.
UNetConfig parse_unet_config(const std::string& file);
VAEConfig parse_vae_config(const std::string& file);
TextEncoderConfig parse_text_encoder_config(const std::string& file);
SchedulerConfig parse_scheduler_config(const std::string& file);

// Loads the weights of one part folder: <stem>.safetensors, <stem>.bin, fp16 variants, or a
// sharded <stem>.safetensors.index.json / .bin.index.json. `stems` in order of preference.
WeightStore load_part_weights(const std::string& dir, const std::vector<std::string>& stems);

// Fills ck.config, ck.unet/vae/text_encoder(_2) (text_model. stripped; text_encoder_2 keeps
// "text_projection.weight") and ck.tokenizer(_2)_dir from a diffusers folder. Family: "sdxl" /
// "sdxl_refiner" for StableDiffusionXL(Img2Img)Pipeline with / without a text_encoder (the
// model_index.json flags force_zeros_for_empty_prompt and requires_aesthetics_score are read);
// otherwise "sd2" for an OpenCLIP (gelu) text encoder or 1024-dim cross-attention, else "sd1".
void load_diffusers_folder(const std::string& dir, Checkpoint& ck);

}  // namespace easel
