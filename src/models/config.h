// Model configuration, mirroring the diffusers config.json fields (same names) so a
// diffusers folder maps 1:1 and a single-file checkpoint gets the values detected
// from its tensor shapes (see io/checkpoint.h).
#pragma once
#include <string>
#include <vector>

namespace easel {

struct TextEncoderConfig {  // transformers CLIPTextConfig
  int vocab_size = 49408;
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int max_position_embeddings = 77;
  std::string hidden_act = "quick_gelu";  // "quick_gelu" (CLIP-L) or "gelu" (OpenCLIP)
  float layer_norm_eps = 1e-5f;
  int projection_dim = 0;  // text_projection (SDXL's bigG); 0 = none
};

struct UNetConfig {  // diffusers UNet2DConditionModel
  int in_channels = 4;
  int out_channels = 4;
  int sample_size = 64;
  std::vector<int> block_out_channels = {320, 640, 1280, 1280};
  std::vector<std::string> down_block_types = {"CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                               "CrossAttnDownBlock2D", "DownBlock2D"};
  std::vector<std::string> up_block_types = {"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                             "CrossAttnUpBlock2D"};
  int layers_per_block = 2;
  // diffusers' "attention_head_dim" is, for SD1/SD2, really the number of heads per level.
  std::vector<int> attention_head_dim = {8, 8, 8, 8};
  std::vector<int> num_attention_heads;  // when set, overrides attention_head_dim
  std::vector<int> transformer_layers_per_block = {1, 1, 1, 1};
  int cross_attention_dim = 768;
  bool use_linear_projection = false;
  int norm_num_groups = 32;
  float norm_eps = 1e-5f;
  bool flip_sin_to_cos = true;
  int freq_shift = 0;
  // SDXL added conditioning (diffusers addition_embed_type "text_time"): each time id goes through
  // a sinusoidal add_time_proj of addition_time_embed_dim channels; concat(text_embeds, those) ->
  // add_embedding (linear_1 -> SiLU -> linear_2, LDM "label_emb.0.0/2") is added to the time embedding.
  std::string addition_embed_type;                // "" (SD1/SD2) | "text_time" (SDXL)
  int addition_time_embed_dim = 0;                // 256 for SDXL
  int projection_class_embeddings_input_dim = 0;  // 2816 = 6*256 + 1280 (base), 2560 = 5*256 + 1280 (refiner)
  int heads_at(size_t level) const {
    return num_attention_heads.empty() ? attention_head_dim[level] : num_attention_heads[level];
  }
};

struct VAEConfig {  // diffusers AutoencoderKL
  int in_channels = 3;
  int out_channels = 3;
  int latent_channels = 4;
  std::vector<int> block_out_channels = {128, 256, 512, 512};
  int layers_per_block = 2;
  int norm_num_groups = 32;
  float scaling_factor = 0.18215f;  // SDXL: 0.13025
  int sample_size = 512;            // tiled decode/encode tile size in pixels (diffusers tile_sample_min_size)
  bool force_upcast = true;         // diffusers: run in f32 (easel always computes the VAE in f32)
  int downscale() const { return 1 << (block_out_channels.size() - 1); }
};

struct SchedulerConfig {  // diffusers scheduler_config.json
  int num_train_timesteps = 1000;
  float beta_start = 0.00085f;
  float beta_end = 0.012f;
  std::string beta_schedule = "scaled_linear";
  std::string prediction_type = "epsilon";  // or "v_prediction"
  // "leading" | "linspace" | "trailing"; "" = not in the config: each diffusers scheduler class then
  // uses its own default (Euler/DPM++/Heun/LMS "linspace", DDIM/PNDM "leading").
  std::string timestep_spacing;
  int steps_offset = 1;
  bool set_alpha_to_one = false;
  bool clip_sample = false;
  std::string interpolation_type = "linear";
  bool use_karras_sigmas = false;
  std::string final_sigmas_type = "zero";  // DPMSolverMultistep
  bool lower_order_final = true;
  bool euler_at_final = false;
};

struct ModelConfig {
  std::string family = "sd1";  // "sd1" | "sd2" | "sdxl" (base) | "sdxl_refiner"
  // sd1/sd2: the text encoder. sdxl: CLIP ViT-L (text_encoder); unused by the refiner (it has none).
  TextEncoderConfig text;
  // sdxl/sdxl_refiner: OpenCLIP ViT-bigG with its projection (text_encoder_2).
  TextEncoderConfig text_2;
  UNetConfig unet;
  VAEConfig vae;
  SchedulerConfig scheduler;
  // Tokenizer padding: SD1's CLIP pads with <|endoftext|> (49407); SD2's OpenCLIP tokenizer
  // config pads with "!" (id 0).
  int pad_token_id = 49407;
  int pad_token_id_2 = 0;  // tokenizer_2 (SDXL) pads with "!"
  // diffusers model_index.json flags: SDXL base true / refiner false; refiner only.
  bool force_zeros_for_empty_prompt = false;
  bool requires_aesthetics_score = false;
  bool is_sdxl() const { return family == "sdxl" || family == "sdxl_refiner"; }
  bool has_text_1() const { return family != "sdxl_refiner"; }
};

}  // namespace easel
