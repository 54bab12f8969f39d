// Diffusers folders: model_index.json, then one folder per part with its config.json and
// weights (unet/, vae/, text_encoder/, tokenizer/, scheduler/). Configs are parsed with
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

// Fills ck.config (family detected from the configs), ck.unet/vae/text_encoder (text_model.
// stripped) and ck.tokenizer_dir from a diffusers folder.
void load_diffusers_folder(const std::string& dir, Checkpoint& ck);

}  // namespace easel
