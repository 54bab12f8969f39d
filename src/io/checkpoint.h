// Opening a Stable Diffusion model: a single-file LDM checkpoint (.safetensors / .ckpt, as
// A1111/ComfyUI use) or a diffusers folder (model_index.json + one folder per part).
// Whatever the source, the result holds three WeightStores in diffusers/transformers
// naming and a ModelConfig (read from config.json, or detected from tensor shapes).
//   https://github.com/huggingface/diffusers/blob/main/src/diffusers/loaders/single_file_utils.py
#pragma once
#include <string>
#include <vector>

#include "io/weights.h"
#include "models/config.h"

namespace easel {

struct CheckpointOverrides {
  std::string family;           // "sd1" | "sd2" | "sdxl" | "sdxl_refiner"; "" = detect
  std::string prediction_type;  // "epsilon" | "v_prediction"; "" = detect
  int clip_skip = 0;            // recorded for the pipeline; 0 = model default
};

struct Checkpoint {
  std::string path;          // file or folder
  ModelConfig config;        // detected / read from config.json, after overrides
  WeightStore unet;          // diffusers UNet2DConditionModel naming: "down_blocks.0.resnets.0.conv1.weight"
  WeightStore vae;           // diffusers AutoencoderKL naming: "encoder.down_blocks.0...", "quant_conv.weight"
  WeightStore text_encoder;  // HF CLIPTextModel naming WITHOUT "text_model.":
                             // "embeddings.token_embedding.weight", "encoder.layers.0.self_attn.q_proj.weight",
                             // "final_layer_norm.weight"
                             // Empty for the SDXL refiner (it has only text_encoder_2).
  WeightStore text_encoder_2;  // SDXL: OpenCLIP bigG in the same naming, plus "text_projection.weight"
                               // [proj, C] (transformers CLIPTextModelWithProjection); all layers kept.
  std::string tokenizer_dir; // diffusers folder's tokenizer/ if present (else "": use the shipped vocab)
  std::string tokenizer_2_dir;  // diffusers folder's tokenizer_2/ if present (SDXL)
  std::vector<std::string> unknown_keys;  // keys that belong to no component (reported by `easel info`)
};

// Opens a file or diffusers folder. Throws easel::Error naming the file/key on any problem.
Checkpoint open_checkpoint(const std::string& path, const CheckpointOverrides& = {});

// Human-readable description for `easel info` (family, prediction type, parts, param counts,
// dtypes, config, metadata). Works on any safetensors/ckpt file (VAE, LoRA, ...) too.
std::string describe_checkpoint(const std::string& path);

}  // namespace easel
